"""Stage 5 (train_model): train FiLM on the shards; keep the best-validation checkpoint.

Trains on the first split of `get_data.splits` and validates on the second; then, if the
profile has a `curriculum`, each of its phases in turn (filmclevr/curriculum.py: their runs in
curriculum/ beside `--last`, their logs under the log folder), and `--out` is the last phase's.
The run is built as every training run is (filmclevr/runs.py).

Runs on a GPU when there is one and on the CPU otherwise. Several GPUs on one node: set
`train_model.nproc_per_node` and this stage starts itself under `torchrun --standalone`.
Several nodes: call torchrun yourself, e.g.
    torchrun --nnodes=2 --nproc_per_node=4 ... -m stages.train_model --params params.yaml ...
A killed run started again with the same parameters resumes from `--last`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--vocab", type=Path, required=True, help="vocab.json")
    p.add_argument("--out", type=Path, required=True, help="best-validation checkpoint to write")
    p.add_argument("--last", type=Path, required=True, help="resume checkpoint (kept on kill)")
    p.add_argument("--log-dir", type=Path, required=True, help="DVCLive folder (metrics, plots)")
    p.add_argument("--curves", type=Path, required=True, help="learning-curve PNG to write")
    args = p.parse_args()

    from filmclevr.distributed import torchrun_command, under_torchrun
    from filmclevr.params import ParamsError, check_input_files, load_params
    from filmclevr.runs import plan_run, train_run

    params = load_params(args.params)
    check_input_files(params, args.params)
    try:
        plan = plan_run(params)  # the model and every phase's recipe, checked before training
    except ValueError as e:  # a typo in the model, train_model or curriculum section
        raise ParamsError(f"{args.params}: {e}") from None
    if plan.train_config.nproc_per_node > 1 and not under_torchrun():
        command = torchrun_command(plan.train_config.nproc_per_node, __spec__.name, sys.argv[1:])
        sys.exit(subprocess.call(command))
    train_run(
        plan,
        shards_dir=args.shards,
        vocab_path=args.vocab,
        best_checkpoint=args.out,
        last_checkpoint=args.last,
        log_dir=args.log_dir,
        curves_png=args.curves,
    )


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
