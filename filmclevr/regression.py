"""The CI regression gate: compare a run's metrics.json against the committed baseline.

Overall and each of the paper's five columns may fall at most `tolerance` accuracy points below
the baseline: one number for all six, or one per metric (params.yaml's `regression.tolerance`:
the columns differ in size, so their seed-to-seed spread differs too). Runs on different data
cannot be compared, so a mismatch fails the gate too: the context's dataset, split and profile,
the data's counts (questions and images scored and trained on, the training split), and the
number of questions behind each accuracy. Accuracies must be numbers from 0 to 100 and
tolerances finite: a NaN compares false with everything, so it would pass any drop. The
report also names the machine (CPU or GPU, torch build) of both runs: training is bitwise
repeatable on one machine, not across CPU models, so a small drop between two machines can be
the machine, not the code.

    filmclevr-regression --baseline results/baseline/metrics.json \
        --current results/metrics.json --params params.yaml   # or: --tolerance 3

Exit status: 0 pass, 1 regression or context mismatch, 2 unreadable input.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filmclevr import clevr
from filmclevr.fileio import read_json
from filmclevr.params import load_params

METRICS: tuple[str, ...] = ("overall", *clevr.QUESTION_TYPES)
# What makes two runs comparable: the data they were scored and trained on.
CONTEXT_MATCH: tuple[str, ...] = (
    "dataset",
    "split",
    "profile",
    "questions",
    "images",
    "train_split",
    "train_questions",
    "train_images",
)
# Reported beside the numbers, never failing the gate: where each run was made.
MACHINE_KEYS: tuple[str, ...] = ("processor", "torch")
Tolerance = float | Mapping[str, float]  # one number for every metric, or one per metric


def tolerances(tolerance: Tolerance) -> dict[str, float]:
    """Each metric's tolerance; a mapping must name exactly METRICS, every value finite and
    >= 0 (a NaN tolerance would let every drop pass)."""
    if isinstance(tolerance, Mapping):
        if set(tolerance) != set(METRICS):
            raise ValueError(
                f"tolerance names {sorted(tolerance)}; it must name exactly {list(METRICS)}"
            )
        values = {name: float(tolerance[name]) for name in METRICS}
    else:
        values = dict.fromkeys(METRICS, float(tolerance))
    bad = {name: v for name, v in values.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"tolerance must be a finite number >= 0, got {bad}")
    return values


def _value(metrics: Mapping[str, Any], name: str, role: str = "metrics") -> float | None:
    """The accuracy `name` of `metrics` (None where it has none).

    Raises:
        ValueError: naming `role`, unless it is a number from 0 to 100: a NaN would pass the
            gate whatever the baseline, as no comparison with NaN is true.
    """
    value = metrics.get("overall") if name == "overall" else metrics.get("columns", {}).get(name)
    if value is None:
        return None
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not (math.isfinite(value) and 0 <= value <= 100)
    ):
        raise ValueError(f"{role}: {name} accuracy {value!r} is not a number from 0 to 100")
    return float(value)


def _questions(metrics: Mapping[str, Any], name: str) -> Any:
    """The number of questions behind accuracy `name` (`counts`; None where not recorded)."""
    counts = metrics.get("counts")
    if not isinstance(counts, Mapping):
        return None
    if name == "overall":
        return counts.get("overall")
    columns = counts.get("columns")
    return columns.get(name) if isinstance(columns, Mapping) else None


def _mismatches(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Why the two runs cannot be compared: their data differs (context, question counts)."""
    failures = []
    base_context, cur_context = baseline.get("context", {}), current.get("context", {})
    for key in CONTEXT_MATCH:
        if base_context.get(key) != cur_context.get(key):
            failures.append(
                f"context {key} differs: baseline {base_context.get(key)!r}, "
                f"current {cur_context.get(key)!r} (the runs cannot be compared)"
            )
    for name in METRICS:
        base, cur = _questions(baseline, name), _questions(current, name)
        if base != cur:
            failures.append(
                f"questions of {name} differ: baseline {base}, current {cur} (the runs cannot "
                "be compared)"
            )
    return failures


def _status(base: float | None, cur: float | None, tolerance: float) -> str:
    if base is None:
        return "no baseline"  # nothing to hold the current run to
    if cur is None:
        return "MISSING"
    return "REGRESSION" if cur < base - tolerance else "ok"


def check_regression(
    baseline: Mapping[str, Any], current: Mapping[str, Any], tolerance: Tolerance
) -> list[str]:
    """Messages for every way `current` regresses from `baseline`; empty when it passes.

    Args:
        baseline, current: metrics.json documents (`context`, `overall`, `columns`).
        tolerance: accuracy points a metric may fall below the baseline (see `tolerances`).

    Raises:
        ValueError: a tolerance is not a finite number >= 0, or an accuracy not a number
            from 0 to 100 (naming the baseline or the current run).
    """
    allowed = tolerances(tolerance)
    failures = _mismatches(baseline, current)
    for name in METRICS:
        base, cur = _value(baseline, name, "baseline"), _value(current, name, "current")
        status = _status(base, cur, allowed[name])
        if status == "MISSING":
            failures.append(f"{name}: missing in the current metrics (baseline {base:.2f})")
        elif status == "REGRESSION":
            failures.append(
                f"{name}: {cur:.2f} is {base - cur:.2f} points below the baseline {base:.2f} "
                f"(tolerance {allowed[name]:g})"
            )
    return failures


def comparison_table(
    baseline: Mapping[str, Any], current: Mapping[str, Any], tolerance: Tolerance
) -> str:
    """Side-by-side text table: metric, baseline, current, delta, tolerance, status."""
    allowed = tolerances(tolerance)
    rows = [("metric", "baseline", "current", "delta", "tolerance", "status")]
    for name in METRICS:
        base, cur = _value(baseline, name, "baseline"), _value(current, name, "current")
        status = _status(base, cur, allowed[name])
        delta = f"{cur - base:+.2f}" if base is not None and cur is not None else "-"
        rows.append(
            (
                name,
                "-" if base is None else f"{base:.2f}",
                "-" if cur is None else f"{cur:.2f}",
                delta,
                f"{allowed[name]:g}",
                status,
            )
        )
    for key in CONTEXT_MATCH:
        b, c = baseline.get("context", {}).get(key), current.get("context", {}).get(key)
        rows.append((f"context.{key}", str(b), str(c), "", "", "ok" if b == c else "MISMATCH"))
    for name in METRICS:
        b, c = _questions(baseline, name), _questions(current, name)
        rows.append((f"questions.{name}", str(b), str(c), "", "", "ok" if b == c else "MISMATCH"))
    for key in MACHINE_KEYS:
        b, c = _machine(baseline, key), _machine(current, key)
        rows.append((f"machine.{key}", b, c, "", "", "same" if b == c else "differs"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _machine(metrics: Mapping[str, Any], key: str) -> str:
    """What the run's context says of its machine ("unknown" for runs that did not record it)."""
    machine = metrics.get("context", {}).get("machine") or {}
    return str(machine.get(key, "unknown"))


def machine_note(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """A line saying the two runs were made on different machines, or None if they were not."""
    differ = [k for k in MACHINE_KEYS if _machine(baseline, k) != _machine(current, k)]
    if not differ:
        return None
    return (
        f"note: the runs differ in {' and '.join(differ)}; training is bitwise repeatable on "
        "one machine only, so part of any difference may be the machine"
    )


def _load(path: Path) -> dict[str, Any]:
    document = read_json(path)
    if (
        not isinstance(document, dict)
        or "overall" not in document
        or not isinstance(document.get("columns"), dict)
        or not isinstance(document.get("context", {}), dict)
    ):
        raise ValueError("not a metrics.json document (needs 'overall', 'columns', 'context')")
    for name in METRICS:
        _value(document, name, "metrics.json")  # refused here, so the message names the file
    return document


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the comparison; return 0 pass, 1 regression, 2 unreadable input."""
    parser = argparse.ArgumentParser(
        prog="filmclevr-regression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--baseline", type=Path, required=True, help="committed metrics.json")
    parser.add_argument("--current", type=Path, required=True, help="metrics.json of this run")
    allowed = parser.add_mutually_exclusive_group(required=True)
    allowed.add_argument("--tolerance", type=float, help="accuracy points allowed, every metric")
    allowed.add_argument(
        "--params", type=Path, help="a params file: its regression.tolerance (number or per metric)"
    )
    args = parser.parse_args(argv)
    try:
        tolerance = args.tolerance
        if args.params is not None:
            tolerance = load_params(args.params)["regression"]["tolerance"]
        tolerances(tolerance)
    except ValueError as e:
        parser.error(f"{args.params or '--tolerance'}: {e}")
    documents = {}
    for role in ("baseline", "current"):
        path = getattr(args, role)
        try:
            documents[role] = _load(path)
        except ValueError as e:  # read_json turns OSError and bad JSON into ValueError
            print(f"error: cannot read the {role} metrics {path}: {e}", file=sys.stderr)
            return 2
    print(comparison_table(documents["baseline"], documents["current"], tolerance))
    note = machine_note(documents["baseline"], documents["current"])
    if note:
        print(note)
    failures = check_regression(documents["baseline"], documents["current"], tolerance)
    for message in failures:
        print(f"FAIL: {message}")
    print("regression gate: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
