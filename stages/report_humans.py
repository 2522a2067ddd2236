"""Stage 15 (report_humans): CLEVR-Humans' results beside the paper's Table 4.

Scores the CLEVR model before fine-tuning (`--start`, its vocabulary expanded) and after
(`--finetuned`) on CLEVR-Humans val and test: `--table` gets the table, `--figure` the
fine-tuning's learning curve, `--metrics` the headline numbers (a DVC metric).
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--start", type=Path, required=True, help="the CLEVR model, expanded")
    p.add_argument("--finetuned", type=Path, required=True, help="the fine-tuned model")
    p.add_argument("--tokens", type=Path, required=True, help="CLEVR-Humans' encoded questions")
    p.add_argument("--shards", type=Path, required=True, help="CLEVR-Humans' shards")
    p.add_argument("--table", type=Path, required=True, help="markdown table to write")
    p.add_argument("--figure", type=Path, required=True, help="learning curve PNG to write")
    p.add_argument("--metrics", type=Path, required=True, help="headline metrics JSON")
    args = p.parse_args()

    from filmclevr.humans_report import report
    from filmclevr.params import load_params

    report(
        load_params(args.params),
        start_checkpoint=args.start,
        finetuned_checkpoint=args.finetuned,
        tokens_dir=args.tokens,
        shards_dir=args.shards,
        out_table=args.table,
        out_figure=args.figure,
        out_metrics=args.metrics,
    )


if __name__ == "__main__":
    _common.run(main)
