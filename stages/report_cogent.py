"""Stage 11 (report_cogent): CLEVR-CoGenT's results beside the paper's (§4.5, Figure 9).

Scores the condition-A model on valA and valB, answers valB's unseen combinations zero-shot by
FiLM arithmetic, and gathers the fine-tuning runs: `--out` gets table.md (the paper's table
with this run's rows, per-column breakdowns), breakdown.csv, zero_shot_questions.json and
sample_efficiency.png; `--metrics` the headline numbers (a DVC metric).
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--split", required=True, help="CoGenT's B split (valB)")
    p.add_argument("--checkpoint", type=Path, required=True, help="the condition-A model")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--clevr", type=Path, required=True, help="release root (question programs)")
    p.add_argument("--finetune", type=Path, required=True, help="folder of fine-tuning runs")
    p.add_argument("--out", type=Path, required=True, help="results folder to write")
    p.add_argument("--metrics", type=Path, required=True, help="headline metrics JSON")
    args = p.parse_args()

    from filmclevr.cogent import report
    from filmclevr.params import load_params

    report(
        load_params(args.params),
        args.split,
        a_checkpoint=args.checkpoint,
        shards_dir=args.shards,
        tokens_dir=args.tokens,
        clevr_root=args.clevr,
        finetune_dir=args.finetune,
        out_dir=args.out,
        out_metrics=args.metrics,
    )


if __name__ == "__main__":
    _common.run(main)
