"""Stage 6 (evaluate_model): accuracy per question type beside the paper's Table 1.

Writes the DVC metric (metrics.json), the results table (md + csv), the bar chart, and the
per-question predictions of the split it scores (a test split's answers: submit_test). The Q-type
prior counts the training split: the first of `get_data.splits`. What the results say about the
data comes from the data itself; data that contradicts `get_data.source` is refused.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="best-validation checkpoint")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    p.add_argument("--table-md", type=Path, required=True, help="results table (Markdown)")
    p.add_argument("--table-csv", type=Path, required=True, help="results table (CSV)")
    p.add_argument("--figure", type=Path, required=True, help="bar chart PNG")
    p.add_argument("--predictions", type=Path, required=True, help="folder of predictions")
    args = p.parse_args()

    from filmclevr.evaluate import PAPER_TABLE1, evaluate, write_results
    from filmclevr.params import load_params

    params = load_params(args.params)
    section = params["evaluate_model"]
    result = evaluate(
        args.checkpoint,
        args.shards,
        args.tokens,
        split=section["split"],
        batch_size=section["batch_size"],
        profile=params["profile"],
        source=params["get_data"]["source"],
        predictions_dir=args.predictions,
        train_split=params["get_data"]["splits"][0],
    )
    write_results(
        result.metrics,
        result.prior,
        paper_csv=PAPER_TABLE1,
        out_metrics=args.metrics,
        out_table_md=args.table_md,
        out_table_csv=args.table_csv,
        out_bar_png=args.figure,
        context=result.context,
    )


if __name__ == "__main__":
    _common.run(main)
