"""Stage 8 (run_experiment): one experiment x seed of the paper's Tables 2 and 3.

Trains the profile's model with the experiment's change (a preset of filmclevr.model.ABLATIONS)
on the data stages' shards, evaluates it, and writes `--out` (best checkpoint, DVCLive logs,
result.json). A run that fails by itself (a configuration the model refuses, a diverged loss)
records why in result.json and exits 0, so the rest of the sweep goes on. A killed run resumes
from `--last`.
"""

from __future__ import annotations

from pathlib import Path

from stages import _common


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--name", required=True, help="experiment (a preset of model.ABLATIONS)")
    p.add_argument("--seed", type=int, required=True, help="training seed of this run")
    p.add_argument("--shards", type=Path, required=True, help="shard folder (with index.json)")
    p.add_argument("--tokens", type=Path, required=True, help="folder of encoded questions")
    p.add_argument("--out", type=Path, required=True, help="this run's folder")
    p.add_argument("--last", type=Path, required=True, help="resume checkpoint (kept on kill)")
    args = p.parse_args()

    from filmclevr.experiments import run_experiment
    from filmclevr.params import check_input_files, load_params

    params = load_params(args.params)
    check_input_files(params, args.params)
    run_experiment(
        params,
        args.name,
        args.seed,
        shards_dir=args.shards,
        tokens_dir=args.tokens,
        out_dir=args.out,
        last_checkpoint=args.last,
        progress=True,
    )


if __name__ == "__main__":
    from filmclevr.distributed import flush_denormals

    _common.run(main, first=flush_denormals)
