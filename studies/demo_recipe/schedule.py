"""Does FiLM learn faster early with learning-rate warmup, a higher peak with decay, or another
batch size? One fixed budget of training questions, one table.

Trains the profile's model (params.yaml: the demo) on the default pipeline's data (run
`snakemake --cores all` first) once per recipe below, each for the same number of training
questions (the profile's epochs; a batch size change keeps the questions, not the steps), and
prints per recipe the validation accuracy after each epoch, the best, its gain over the paper's
constant 3e-4, the last train accuracy (memorization shows as train >> val) and the samples/s.
Each run takes about as long as the demo's training (5 minutes on 2 cores).

    python -m studies.demo_recipe.schedule [--params params.yaml] [--only constant-3e-4 ...]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from filmclevr.params import load_params
from filmclevr.scored_runs import train_and_score

RECIPES: dict[str, dict] = {  # TrainConfig changes on top of the profile's train_model
    "constant-3e-4 (paper)": {"learning_rate": 3e-4, "lr_schedule": "constant"},
    "constant-1e-3": {"learning_rate": 1e-3, "lr_schedule": "constant"},
    "warmup1-constant-1e-3": {"learning_rate": 1e-3, "warmup_epochs": 1},
    "warmup1-cosine-1e-3": {"learning_rate": 1e-3, "lr_schedule": "cosine", "warmup_epochs": 1},
    "warmup1-cosine-2e-3": {"learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_epochs": 1},
    "warmup1-cosine-3e-3": {"learning_rate": 3e-3, "lr_schedule": "cosine", "warmup_epochs": 1},
    "warmup1-cosine-2e-3-batch32": {
        "learning_rate": 2e-3, "lr_schedule": "cosine", "warmup_epochs": 1, "batch_size": 32,
    },
    "warmup1-cosine-3e-3-batch128": {
        "learning_rate": 3e-3, "lr_schedule": "cosine", "warmup_epochs": 1, "batch_size": 128,
    },
}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--only", nargs="+", choices=list(RECIPES), help="run these recipes only")
    p.add_argument("--json", type=Path, help="also write every run's metrics here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    runs = {}
    for name in args.only or RECIPES:
        runs[name] = train_and_score(params, data_dir=Path("data"), train=RECIPES[name])
        print(f"{name}: {runs[name]['overall']:.2f}% ({runs[name]['seconds']:.0f} s)", flush=True)
    prior = next(iter(runs.values()))["prior"]["overall"]
    base = runs.get("constant-3e-4 (paper)", {}).get("overall")
    epochs = max(len(r["history"]) for r in runs.values())
    print(f"\nValidation accuracy (%) of {params['profile']} after each epoch (prior {prior:.1f}):")
    header = " ".join(f"{'ep' + str(e + 1):>5}" for e in range(epochs))
    print(f"{'recipe':<30} {header} {'best':>6} {'gain':>5} {'train':>5} {'samples/s':>9}")
    for name, r in runs.items():
        vals = " ".join(f"{100 * h['val_accuracy']:5.1f}" for h in r["history"])
        gain = "" if base is None else f"{r['overall'] - base:+5.1f}"
        train = 100 * r["history"][-1]["train_accuracy"]
        print(f"{name:<30} {vals} {r['overall']:6.2f} {gain:>5} {train:5.1f} "
              f"{r['samples_per_s']:9.0f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
