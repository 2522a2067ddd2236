"""Stage 12 (get_humans): CLEVR-Humans' question files, downloaded (`--source clevr`: CLEVR-Humans
v1.0, about CLEVR v1.0's images) or a stand-in written about the mini-CLEVR tree's images
(`--source mini`: its own questions re-worded, not human data).

Either way `--out` gets CLEVR-Humans-{train,val,test}.json.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--source", choices=("mini", "clevr"), required=True, help="humans.sources")
    p.add_argument("--clevr", type=Path, required=True, help="release root (the stand-in's tree)")
    p.add_argument("--out", type=Path, required=True, help="folder of question files to write")
    args = p.parse_args()

    from filmclevr.params import load_params

    params = load_params(args.params)
    humans = params["humans"]
    if args.source == "mini":
        from filmclevr.mini.generate import generator_arguments
        from filmclevr.mini.humans import write_stand_in

        write_stand_in(
            args.clevr, args.out, generator_arguments(params["get_data"]), **humans["stand_in"]
        )
    else:
        from filmclevr.download import fetch_archive
        from filmclevr.humans_data import extract_humans

        download = humans["download"]
        archive = fetch_archive(
            download["url"],
            Path(download["archive"]),
            size=download["size"],
            sha256=download["sha256"],
            settings="humans.download",
        )
        extract_humans(archive, args.out)


if __name__ == "__main__":
    _common.run(main)
