"""Stage 6 (evaluate_model): accuracy per question type beside the paper's Table 1.

Writes the DVC metric (metrics.json), the results table (md, csv, html), the bar chart and its
data, the learning curve beside the official one (from the checkpoint's record, --sidecar) and
the per-question predictions of the split it scores (a test split's answers: submit_test). The
Q-type prior counts the training split: the first of `get_data.splits`. What the results say
about the data comes from the data itself; data that contradicts `get_data.source` is refused.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="best-validation checkpoint")
    p.add_argument("--sidecar", type=Path, required=True, help="its record (film.json)")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--metrics", type=Path, required=True, help="metrics.json to write")
    p.add_argument("--table-md", type=Path, required=True, help="results table (Markdown)")
    p.add_argument("--table-csv", type=Path, required=True, help="results table (CSV)")
    p.add_argument("--table-html", type=Path, required=True, help="results table (HTML)")
    p.add_argument("--figure", type=Path, required=True, help="bar chart PNG")
    p.add_argument("--figure-csv", type=Path, required=True, help="its data, a row per bar")
    p.add_argument("--curve-csv", type=Path, required=True, help="learning curve (CSV)")
    p.add_argument("--curve-figure", type=Path, required=True, help="it beside the official")
    p.add_argument("--predictions", type=Path, required=True, help="folder of predictions")
    args = p.parse_args()

    from filmclevr.evaluate import PAPER_TABLE1, evaluate, write_learning_curve, write_results
    from filmclevr.fileio import read_json
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
    write_learning_curve(
        read_json(args.sidecar),
        prior=result.prior["overall"],
        context=result.context,
        out_csv=args.curve_csv,
        out_png=args.curve_figure,
    )
    write_results(
        result.metrics,
        result.prior,
        paper_csv=PAPER_TABLE1,
        out_metrics=args.metrics,
        out_table_md=args.table_md,
        out_table_csv=args.table_csv,
        out_table_html=args.table_html,
        out_bar_png=args.figure,
        out_bar_csv=args.figure_csv,
        context=result.context,
    )


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
