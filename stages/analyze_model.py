"""Stage 7 (analyze_model): what the FiLM layers learned (paper §4.2-4.3, SPEC §6).

Reads the best checkpoint, the analyzed split's shards and encoded questions, the training
split's shards (for the training-set means of gamma and beta) and the original images; writes
`results/analysis/` (figures and the data behind each) and its headline numbers as a DVC metric.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--checkpoint", type=Path, required=True, help="best-validation checkpoint")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--clevr", type=Path, required=True, help="CLEVR release root (originals)")
    p.add_argument("--out", type=Path, required=True, help="analysis folder to write")
    p.add_argument("--metrics", type=Path, required=True, help="headline numbers (DVC metric)")
    args = p.parse_args()

    from filmclevr.analysis import analyze
    from filmclevr.fileio import atomic_path
    from filmclevr.params import load_params

    params = load_params(args.params)
    section = params["analyze_model"]
    analyze(
        args.checkpoint,
        args.shards,
        args.tokens,
        args.clevr,
        args.out,
        split=section["split"],
        train_split=params["get_data"]["splits"][0],
        examples=section["examples"],
        max_questions=section["max_questions"],
        tsne_questions=section["tsne_questions"],
        noise_levels=section["noise_levels"],
        batch_size=section["batch_size"],
        seed=section["seed"],
    )
    with atomic_path(args.metrics) as tmp:  # beside the folder: DVC outputs may not overlap
        shutil.copyfile(args.out / "metrics.json", tmp)


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
