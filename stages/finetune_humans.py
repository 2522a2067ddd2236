"""Stage 14 (finetune_humans): the CLEVR model fine-tuned on CLEVR-Humans (paper Table 4).

Starts from `--checkpoint` (the workflow's CLEVR model) with its word embeddings grown for
CLEVR-Humans' vocabulary (written to `--start`: the model before fine-tuning), trains with
`humans.train_model`'s changes over `train_model` (the paper: the FiLM generator only, Adam
3e-4) on CLEVR-Humans train and keeps the epoch best on its val split (`--out`, with its .json
sidecar). A killed run resumes from `--last`.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="the CLEVR model")
    p.add_argument("--tokens", type=Path, required=True, help="CLEVR-Humans' encoded questions")
    p.add_argument("--shards", type=Path, required=True, help="CLEVR-Humans' shards")
    p.add_argument("--start", type=Path, required=True, help="the start: vocabulary expanded")
    p.add_argument("--out", type=Path, required=True, help="the fine-tuned checkpoint")
    p.add_argument("--last", type=Path, required=True, help="resume checkpoint (kept on kill)")
    p.add_argument("--log-dir", type=Path, required=True, help="DVCLive folder")
    args = p.parse_args()

    from filmclevr.humans import finetune
    from filmclevr.params import load_params

    finetune(
        load_params(args.params),
        clevr_checkpoint=args.checkpoint,
        tokens_dir=args.tokens,
        shards_dir=args.shards,
        start=args.start,
        best_checkpoint=args.out,
        last_checkpoint=args.last,
        log_dir=args.log_dir,
        progress=True,
    )


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
