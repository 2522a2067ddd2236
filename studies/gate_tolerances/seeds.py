"""How sensitive is the CI gate? The demo's spread over seeds, and the gate on broken runs.

Trains the profile's model and recipe (params.yaml: the demo) several times on the default
pipeline's data (data/shards, data/tokens; run `snakemake --cores all` first), each into a
temporary folder, evaluates each on the validation split, and prints:

1. the spread over seeds (`--seeds`, at least 3): per metric the number of questions, the mean,
   the standard deviation sigma and the range (max - min), the binomial error of that many
   questions, sqrt(p(1 - p) / n) (what a column of n questions can resolve at all), and the
   tolerance they imply: 3 standard deviations of the difference between two runs (the
   baseline and a run on another machine, which diverges like another seed), 3 * sqrt(2) *
   sigma, but at least 3 binomial errors, since a few seeds under-sample a small column (seed 0
   on another CPU once fell 6.15 points on 325 Compare Attribute questions, where 5 seeds had
   implied 6.0); rounded up to half a point;
2. the gate (`regression.check_regression`) of each run against the first seed's, at the
   profile's tolerance and at the implied one, and against the committed baseline of this
   numeric path (as CI gates) at the profile's, which must FAIL for each breakage and PASS for
   the seeds (the control):
   - control: another seed, nothing broken;
   - no FiLM: the model without FiLM in any ResBlock (model.ABLATIONS' no_film_blocks1_4);
   - blank images: every image all zeros, in training and evaluation;
   - shuffled questions: each question's words permuted (the same way every time), in
     training and evaluation.

The breakages are applied to the shard loader's batches (the batch_transform of
`filmclevr.scored_runs.train_and_score`), the one path training and evaluation share: the bug a
broken data stage would cause. The default run of this script is 5 seeds and 3 breakages, each
one demo training (`--no-breakages`: the seeds alone). `--json` keeps every run as it finishes
(`scored_runs.KeptRuns`): started again with the same file, parameters, data (`--data`) and
numeric path, the script trains only the runs the file lacks, so a measurement of hours may
span several sessions. `--summary` writes what it prints as JSON: each run's accuracies by
name, the spread, the implied tolerance and each gate's verdict (the file docs/gate.md's
tables are read from).

    python -m studies.gate_tolerances.seeds [--params params.yaml] [--seeds 0 1 2 3 4]
        [--json runs.json] [--summary summary.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import statistics
from pathlib import Path

from filmclevr import shards
from filmclevr.distributed import flush_denormals
from filmclevr.fileio import read_json, write_json_atomic
from filmclevr.model import ABLATIONS
from filmclevr.params import GATE_METRICS, load_params
from filmclevr.regression import check_regression, choose_baseline, tolerance_for
from filmclevr.scored_runs import KeptRuns, numeric_path


def blank_images(batch: shards.Batch) -> shards.Batch:
    """Every image all zeros."""
    return batch._replace(images=batch.images.new_zeros(batch.images.shape))


def shuffled_questions(batch: shards.Batch) -> shards.Batch:
    """Each question's words permuted, the same way every time (seeded by its index)."""
    questions = batch.questions.clone()
    for row, (length, index) in enumerate(zip(batch.lengths, batch.question_indices, strict=True)):
        words = questions[row, 1 : int(length) - 1].tolist()  # between <START> and <END>
        random.Random(int(index)).shuffle(words)
        questions[row, 1 : int(length) - 1] = questions.new_tensor(words)
    return batch._replace(questions=questions)


def _value(metrics: dict, name: str) -> float:
    return metrics["overall"] if name == "overall" else metrics["columns"][name]


def _count(metrics: dict, name: str) -> int:
    counts = metrics["counts"]
    return counts["overall"] if name == "overall" else counts["columns"][name]


def implied_tolerance(values: list[float], binomial: float) -> float:
    """3 standard deviations of the difference of two runs, at least 3 binomial errors,
    rounded up to half a point."""
    return math.ceil(2 * max(3 * math.sqrt(2) * statistics.stdev(values), 3 * binomial)) / 2


def binomial_error(accuracy: float, questions: int) -> float:
    return 100 * math.sqrt(accuracy / 100 * (1 - accuracy / 100) / questions)


def print_gate(runs: dict, first: str, tolerance, label: str) -> dict[str, dict]:
    """Print the gate of each run against `first` at `tolerance`; return each run's verdict."""
    print(f"\nThe gate at {label} against {first}:")
    print(f"{'run':<20} {'expected':>8} {'gate':>5}  overall  first failure")
    verdicts = {}
    for name, metrics in runs.items():
        if name == first:
            continue
        expected = "pass" if name.startswith("seed ") else "fail"
        failures = check_regression(runs[first], metrics, tolerance)
        gate = "fail" if failures else "pass"
        verdict = "" if gate == expected else "  <-- NOT AS IT MUST BE"
        print(f"{name:<20} {expected:>8} {gate:>5}  {metrics['overall']:6.2f}  "
              f"{failures[0] if failures else '-'}{verdict}")  # fmt: skip
        verdicts[name] = {"expected": expected, "gate": gate, "failures": failures}
    return verdicts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--data", type=Path, default=Path("data"), help="the profile's data stages'")
    p.add_argument("--json", type=Path, help="keep every run here; its runs are reused")
    p.add_argument("--summary", type=Path, help="write the printed tables here as JSON")
    p.add_argument("--no-breakages", action="store_true",
                   help="the seeds alone, before the breakages are trained")  # fmt: skip
    p.add_argument(
        "--baseline", type=Path, default=Path("results/baseline"),
        help="the gate's baselines, one per precision (which tolerance CI holds)",
    )  # fmt: skip
    args = p.parse_args(argv)
    if len(args.seeds) < 3:
        p.error("--seeds: give at least three, for a spread")
    if len(set(args.seeds)) < len(args.seeds):  # one run counted twice narrows the spread
        p.error(f"--seeds: each seed once, not {args.seeds}")
    logging.basicConfig(level=logging.WARNING)
    flush_denormals()  # as the pipeline's model stages do, so that a seed trains as it would there
    params = load_params(args.params)
    written = params["regression"]["tolerance"]
    cases = {f"seed {s}": (s, None, None) for s in args.seeds}  # (seed, model change, breakage)
    first_seed = args.seeds[0]
    if not args.no_breakages:
        cases.update({
            "no FiLM": (first_seed, ABLATIONS["no_film_blocks1_4"], None),
            "blank images": (first_seed, None, blank_images),
            "shuffled questions": (first_seed, None, shuffled_questions),
        })  # fmt: skip
    precision = numeric_path(params)  # this CPU's: its seeds spread as its own
    kept = KeptRuns(args.json, params, precision, args.data)
    runs = {}
    for name, (seed, model, breakage) in cases.items():
        runs[name] = kept.train_and_score(
            model=model, train={"seed": seed}, batch_transform=breakage
        )
        print(f"{name}: overall {runs[name]['overall']:.2f}% ({runs[name]['seconds']:.0f} s)",
              flush=True)  # fmt: skip
    seeds = [runs[f"seed {s}"] for s in args.seeds]

    # The tolerance CI would hold a run of this numeric path to, and the baseline it would
    # hold the run against.
    baseline_file, gated_as, _ = choose_baseline(args.baseline, precision)
    tolerance = tolerance_for(written, gated_as)
    label = f"{params['profile']}, {precision}, {len(seeds)} runs"
    print(f"\nSpread over seeds {args.seeds} ({label}):")
    print(f"{'metric':<18} {'n':>5} {'mean':>6} {'sigma':>5} {'range':>6} {'binom':>5} "
          f"{'tol':>5}  " + " ".join(f"{'seed ' + str(s):>7}" for s in args.seeds))  # fmt: skip
    implied, spread = {}, {}
    for name in GATE_METRICS:
        values, n = [_value(m, name) for m in seeds], _count(seeds[0], name)
        mean = statistics.mean(values)
        binomial = binomial_error(mean, n)
        implied[name] = implied_tolerance(values, binomial)
        row = spread[name] = {
            "questions": n, "mean": mean, "sigma": statistics.stdev(values),
            "range": max(values) - min(values), "binomial_error": binomial,
            "implied_tolerance": implied[name],
        }  # fmt: skip
        print(f"{name:<18} {n:5d} {mean:6.2f} {row['sigma']:5.2f} {row['range']:6.2f} "
              f"{binomial:5.2f} {implied[name]:5.1f}  "
              + " ".join(f"{v:7.2f}" for v in values))  # fmt: skip
    print(f"implied regression.tolerance.{precision}: " + json.dumps(implied))
    first_run = f"seed {first_seed}"
    at_profile = print_gate(
        runs, first_run, tolerance, f"the profile's tolerance {json.dumps(tolerance)}"
    )
    at_implied = print_gate(runs, first_run, implied, "the implied tolerance")
    at_baseline = print_gate(
        {"the baseline": read_json(baseline_file), **runs},
        "the baseline",
        tolerance,
        f"the profile's tolerance, as CI gates ({baseline_file}),",
    )
    if args.summary is not None:
        write_json_atomic(args.summary, {
            "profile": params["profile"], "precision": precision, "seeds": args.seeds,
            "runs": {name: {key: run[key] for key in ("overall", "columns", "counts", "context",
                                                      "history", "seconds")}
                     for name, run in runs.items()},
            "spread": spread,
            "implied_tolerance": implied,
            "gate": {"against": first_run,
                     "profile_tolerance": {"tolerance": tolerance, "runs": at_profile},
                     "implied_tolerance": {"tolerance": implied, "runs": at_implied},
                     "baseline": {"file": str(baseline_file), "tolerance": tolerance,
                                  "runs": at_baseline}},
        }, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
