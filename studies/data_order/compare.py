"""Does the paper's data order, or its BatchNorm start, change what FiLM learns?

Trains the profile's model and recipe (params.yaml: the demo) on the default pipeline's data
(data/shards, data/tokens; run `snakemake --cores all` first) once per variant and seed, each
into a temporary folder, evaluates each on the validation split, and prints per variant the
mean and standard deviation over the seeds of the first epoch's and the best validation
accuracy, overall and per column, and the difference of each mean from the first variant's with
its standard error (sqrt(s1^2/n1 + s2^2/n2)):

- shards, ones: `train_model.data_order: shards`, `model.batchnorm_init: ones`, the defaults
  every committed result was trained with;
- official, ones: every question permuted afresh each epoch, the last partial batch kept;
- shards, uniform: BatchNorm weights started from U(0, 1), as PyTorch 0.3's;
- official, uniform: both, as the paper's runs (config/paper.yaml).

A difference smaller than about two of its standard errors is not told apart from the seeds'
spread. Each run takes about as long as the profile's training (the demo's reference run's time
is in its benchmarks/train_model.tsv), so the default, 4 variants x 5 seeds, is 20 trainings.
`--epochs N` trains N epochs instead of the profile's `max_epochs` (a CLEVR-sized profile's
first epochs); a decaying learning rate then decays over those N, so compare such runs with one
another, not with the profile's.
`--json` keeps every run as it finishes (`scored_runs.KeptRuns`): started again with the same
file, the script trains only what it lacks, and a file shared with
`studies.gate_tolerances.seeds` lends it the default recipe's seeds it already trained.

    python -m studies.data_order.compare [--params params.yaml] [--seeds 0 1 2 3 4]
        [--only "shards, ones" "official, ones"] [--epochs N] [--data data] [--json runs.json]
        [--summary summary.json] [--plot curves.png]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
from pathlib import Path

from filmclevr import clevr
from filmclevr.figures import plot_variant_curves
from filmclevr.fileio import write_json_atomic
from filmclevr.params import load_params
from filmclevr.scored_runs import KeptRuns, numeric_path

# name -> (train_model changes, model changes), on top of the profile's sections
VARIANTS: dict[str, tuple[dict, dict]] = {
    "shards, ones": ({"data_order": "shards"}, {"batchnorm_init": "ones"}),
    "official, ones": ({"data_order": "official"}, {"batchnorm_init": "ones"}),
    "shards, uniform": ({"data_order": "shards"}, {"batchnorm_init": "uniform"}),
    "official, uniform": ({"data_order": "official"}, {"batchnorm_init": "uniform"}),
}
METRICS = ("first epoch", "overall", *clevr.QUESTION_TYPES)


def measures(run: dict) -> dict[str, float]:
    """A run's accuracies (%): validation after the first epoch, then the best checkpoint's."""
    return {
        "first epoch": 100 * run["history"][0]["val_accuracy"],
        "overall": run["overall"],
        **run["columns"],
    }


def summary(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value: its spread is not measured)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def compare(results: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict]]:
    """Per variant and metric: seeds, mean, std, and (but for the first variant) the difference
    of its mean from the first variant's with its standard error (None where either has one
    seed: a difference of two single runs has no measured error, not an error of 0)."""
    first = next(iter(results))
    base = {m: summary([r[m] for r in results[first]]) for m in METRICS}
    table: dict[str, dict[str, dict]] = {}
    for name, runs in results.items():
        for metric in METRICS:
            mean, std = summary([r[metric] for r in runs])
            row = {"seeds": len(runs), "mean": mean, "std": std}
            table.setdefault(name, {})[metric] = row
            if name != first:
                base_mean, base_std = base[metric]
                row["difference"] = mean - base_mean
                row["standard_error"] = None
                if base_std is not None and std is not None:
                    row["standard_error"] = math.sqrt(
                        base_std**2 / len(results[first]) + std**2 / len(runs)
                    )
    return table


def print_table(table: dict[str, dict[str, dict]]) -> None:
    first = next(iter(table))
    print(f"\nValidation accuracy (%), mean +- std over seeds; the difference from {first!r}:")
    print(f"{'variant':<18} {'metric':<18} {'mean':>6} {'std':>5} {'diff':>6} {'+-se':>5}")
    for name, rows in table.items():
        for metric, row in rows.items():
            diff = ""
            if "difference" in row:
                diff = f"{row['difference']:+6.2f} {_or_dash(row['standard_error'])}"
            print(f"{name:<18} {metric:<18} {row['mean']:6.2f} {_or_dash(row['std'])} {diff}")


def _or_dash(value: float | None) -> str:
    return f"{value:5.2f}" if value is not None else f"{'-':>5}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--only", nargs="+", choices=list(VARIANTS), help="run these variants only")
    p.add_argument("--epochs", type=int, help="train this many epochs (default: the profile's)")
    p.add_argument("--data", type=Path, default=Path("data"), help="the profile's data stages'")
    p.add_argument("--json", type=Path, help="keep every run here; its runs are reused")
    p.add_argument("--summary", type=Path, help="write the table and each run's accuracies here")
    p.add_argument("--plot", type=Path, help="draw each variant's validation curves here")
    args = p.parse_args(argv)
    for option, given in (("--seeds", args.seeds), ("--only", args.only or [])):
        if len(set(given)) < len(given):  # one run counted twice narrows the spread
            p.error(f"{option}: each once, not {given}")
    logging.basicConfig(level=logging.WARNING)
    params = load_params(args.params)
    precision = numeric_path(params)  # asked once: it warns each time bf16 falls back
    kept = KeptRuns(args.json, params, precision, args.data)
    results: dict[str, list[dict[str, float]]] = {}
    runs: dict[str, dict[str, dict]] = {}
    for name in args.only or VARIANTS:
        changes, model = VARIANTS[name]
        if args.epochs is not None:
            changes = {**changes, "max_epochs": args.epochs}
        for seed in args.seeds:
            train = {**changes, "seed": seed}
            run = kept.train_and_score(model=model, train=train)
            results.setdefault(name, []).append(measures(run))
            runs.setdefault(name, {})[f"seed {seed}"] = {
                key: run[key] for key in ("overall", "columns", "counts", "context", "history",
                                          "seconds")
            }  # fmt: skip
            print(
                f"{name}, seed {seed}: {run['overall']:.2f}% ({run['seconds']:.0f} s)", flush=True
            )
    table = compare(results)
    print_table(table)
    if args.summary is not None:
        write_json_atomic(args.summary, {
            "profile": params["profile"], "precision": precision,
            "seeds": args.seeds, "epochs": args.epochs, "compared_with": next(iter(table)),
            "variants": table, "runs": runs,
        }, indent=1)  # fmt: skip
    if args.plot is not None:
        histories = {name: [run["history"] for run in seeds.values()]
                     for name, seeds in runs.items()}  # fmt: skip
        title = (f"{params['profile']} profile, {precision}: validation accuracy "
                 "per data order and BatchNorm start")  # fmt: skip
        plot_variant_curves(histories, args.plot, title=title)


if __name__ == "__main__":
    main()
