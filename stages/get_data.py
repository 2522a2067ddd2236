"""Stage 1 (get_data): generate the embedded mini-CLEVR, or fetch CLEVR v1.0.

Either way `--out` becomes a CLEVR release root (images/, questions/, scenes/). Killed, either
resumes: the download from its partial archive, the generation with the images it rendered.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--out", type=Path, required=True, help="CLEVR release root to write")
    p.add_argument("--workers", type=int, default=0, help="processes (0: all cores)")
    args = p.parse_args()

    from filmclevr.params import check_input_files, load_params

    profile = load_params(args.params)
    check_input_files(profile, args.params)  # the first stage: before any data work
    params = profile["get_data"]
    if params["source"] == "mini":
        from filmclevr.mini import generate_mini_clevr
        from filmclevr.mini.generate import generator_arguments

        generate_mini_clevr(
            args.out, **generator_arguments(params), workers=_common.workers(args.workers)
        )
    else:
        from filmclevr.download import fetch_clevr

        clevr = params["clevr"]
        fetch_clevr(
            clevr["url"],
            Path(clevr["archive"]),
            args.out,
            size=clevr["size"],
            sha256=clevr["sha256"],
        )


if __name__ == "__main__":
    _common.run(main)
