"""Stage 10 (finetune_cogent): fine-tune the condition-A model on B's first questions (CoGenT).

Continues from `--checkpoint` (the workflow's model, trained on trainA) on the first
`--questions` questions of `--split` (valB), validating on valA, and scores the last weights on
valA and on the split's held-out images (those after the largest fine-tuning set) into
`--out/result.json`. One run per entry of `cogent.finetune_questions`: the sample-efficiency
curve. A killed run resumes from `--last`.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--split", required=True, help="CoGenT's B split to fine-tune on (valB)")
    p.add_argument("--questions", type=int, required=True, help="fine-tuning questions")
    p.add_argument("--checkpoint", type=Path, required=True, help="the condition-A model")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--out", type=Path, required=True, help="this run's results folder")
    p.add_argument("--last", type=Path, required=True, help="resume checkpoint (kept on kill)")
    args = p.parse_args()

    from filmclevr.cogent import finetune
    from filmclevr.params import load_params

    finetune(
        load_params(args.params),
        args.split,
        args.questions,
        a_checkpoint=args.checkpoint,
        shards_dir=args.shards,
        tokens_dir=args.tokens,
        out_dir=args.out,
        last_checkpoint=args.last,
        progress=True,
    )


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
