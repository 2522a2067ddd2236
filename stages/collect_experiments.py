"""Stage 9 (collect_experiments): the sweep's table beside the paper's Tables 2 and 3.

Reads every run's result.json under `--runs` (a missing or failed run is a row saying so) and
writes the Markdown and CSV tables (mean +- std over seeds, our delta from our base row, the
paper's value and delta) and the figure of the deltas.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--runs", type=Path, required=True, help="folder of the runs")
    p.add_argument("--table-md", type=Path, required=True, help="table (Markdown)")
    p.add_argument("--table-csv", type=Path, required=True, help="table (CSV, per column)")
    p.add_argument("--figure", type=Path, required=True, help="deltas figure (PNG)")
    args = p.parse_args()

    from filmclevr.experiments import collect
    from filmclevr.params import load_params

    section = load_params(args.params)["experiments"]
    collect(
        args.runs,
        section["names"],
        section["seeds"],
        out_md=args.table_md,
        out_csv=args.table_csv,
        out_png=args.figure,
    )


if __name__ == "__main__":
    _common.run(main)
