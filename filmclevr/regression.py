"""The CI regression gate: compare a run's metrics.json against the committed baseline.

Overall and each of the paper's five columns may fall at most `tolerance` accuracy points below
the baseline: one number for all six, or one per metric (params.yaml's `regression.tolerance`:
the columns differ in size, so their seed-to-seed spread differs too). Runs on different data
cannot be compared, so a mismatch fails the gate too: the context's dataset, split and profile,
the data's counts (questions and images scored and trained on, the training split), and the
number of questions behind each accuracy. Accuracies must be numbers from 0 to 100, the
baseline must give each one (a column without questions aside), and tolerances must be finite:
a NaN compares false with everything, and a missing baseline holds nothing, so either would
pass any drop. The
report also names the machine (CPU or GPU, torch build) of both runs: training is bitwise
repeatable on one machine, not across CPU models, so a small drop between two machines can be
the machine, not the code.

Each numeric path has its own baseline and tolerances: a run trained in bf16 (CPUs with native
bfloat16, GPUs) and one trained in float32 (CPUs without it) spread differently over seeds. Given
a folder, the gate takes the baseline of the current run's precision, `<folder>/<precision>/
metrics.json`, and its tolerance (`regression.tolerance` written per precision,
`{bf16: ..., float32: ...}`). A precision with no baseline of its own is compared with the other
one's, at that one's tolerances, and the report says so: the gate is then only as fair as the
two paths are alike.

    filmclevr-regression --baseline results/baseline \
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

from filmclevr.fileio import read_json
from filmclevr.params import (
    GATE_METRICS,
    PRECISIONS,
    ParamsError,
    load_params,
    per_precision,
    tolerances,
)

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
BASELINE_FILE = "metrics.json"  # in <baseline folder>/<precision>/
Tolerance = float | Mapping[str, float]  # one number for every metric, or one per metric


def tolerance_for(tolerance: Any, precision: str | None) -> Tolerance:
    """The tolerance of one precision: `tolerance` itself, unless it is written per precision
    (a mapping whose keys are PRECISIONS), then its entry for `precision`.

    Raises:
        ValueError: it is written per precision and names none for `precision`.
    """
    if per_precision(tolerance):
        if precision not in tolerance:
            raise ValueError(
                f"tolerance is written per precision ({', '.join(sorted(tolerance))}) and has "
                f"none for {precision!r}"
            )
        return tolerance[precision]
    return tolerance


def precision_of(metrics: Mapping[str, Any]) -> str | None:
    """The precision a metrics.json's model was trained in (None for runs that did not say)."""
    return metrics.get("context", {}).get("precision")


def choose_baseline(baseline: Path, precision: str | None) -> tuple[Path, str | None, str | None]:
    """The baseline file for a run of `precision`: `baseline` itself when it is a file, else
    `baseline/<precision>/metrics.json`, else another precision's with a note saying so.

    Returns:
        (the file, the precision it is the baseline of (None for a file given as such), a note
        for the report or None).

    Raises:
        ValueError: `baseline` is a folder with no baseline of any precision, or the current
            run records no precision to choose by.
    """
    if not baseline.is_dir():
        return baseline, None, None
    if precision not in PRECISIONS:
        raise ValueError(
            f"the current run records no precision ({precision!r}), so no baseline of "
            f"{baseline} can be chosen for it; name a baseline file instead"
        )
    own = baseline / precision / BASELINE_FILE
    if own.is_file():
        return own, precision, None
    for other in PRECISIONS:
        if (baseline / other / BASELINE_FILE).is_file():
            note = (
                f"note: {baseline} has no {precision} baseline; this {precision} run is compared "
                f"with the {other} baseline at the {other} tolerances, whose seed spread is not "
                f"this path's (docs/gate.md)"
            )
            return baseline / other / BASELINE_FILE, other, note
    raise ValueError(
        f"{baseline} holds no baseline: expected "
        + " or ".join(f"{p}/{BASELINE_FILE}" for p in PRECISIONS)
    )


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


def _baseline_value(baseline: Mapping[str, Any], name: str, role: str = "baseline") -> float | None:
    """The baseline's accuracy `name`: None only for a column its run had no questions of
    (`counts` says 0; evaluate writes such a column as null).

    Raises:
        ValueError: naming `role`, where the baseline gives no accuracy for a metric that had
            questions, or does not say it had none: a missing baseline would pass any run.
    """
    value = _value(baseline, name, role)
    if value is None and not (name != "overall" and _no_questions(baseline, name)):
        raise ValueError(
            f"{role}: {name} accuracy is missing; a baseline gives a number from 0 to 100 for "
            "overall and every column (null only for a column whose counts say 0 questions)"
        )
    return value


def _no_questions(metrics: Mapping[str, Any], name: str) -> bool:
    questions = _questions(metrics, name)
    return isinstance(questions, int) and not isinstance(questions, bool) and questions == 0


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
    for name in GATE_METRICS:
        base, cur = _questions(baseline, name), _questions(current, name)
        if base != cur:
            failures.append(
                f"questions of {name} differ: baseline {base}, current {cur} (the runs cannot "
                "be compared)"
            )
    return failures


def _status(base: float | None, cur: float | None, tolerance: float) -> str:
    if base is None:
        return "no questions"  # the baseline had none here (_baseline_value refuses the rest)
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
        ValueError: a tolerance is not a finite number >= 0, an accuracy not a number from
            0 to 100 (naming the baseline or the current run), or the baseline gives none for
            a metric (`_baseline_value`).
    """
    allowed = tolerances(tolerance)
    failures = _mismatches(baseline, current)
    for name in GATE_METRICS:
        base, cur = _baseline_value(baseline, name), _value(current, name, "current")
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
    for name in GATE_METRICS:
        base, cur = _baseline_value(baseline, name), _value(current, name, "current")
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
    for name in GATE_METRICS:
        b, c = _questions(baseline, name), _questions(current, name)
        rows.append((f"questions.{name}", str(b), str(c), "", "", "ok" if b == c else "MISMATCH"))
    for key in MACHINE_KEYS:
        b, c = _machine(baseline, key), _machine(current, key)
        rows.append((f"machine.{key}", b, c, "", "", "same" if b == c else "differs"))
    b, c = str(precision_of(baseline) or "unknown"), str(precision_of(current) or "unknown")
    rows.append(("precision", b, c, "", "", "same" if b == c else "differs"))
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


def _load(path: Path, as_baseline: bool = False) -> dict[str, Any]:
    """A metrics.json document, its accuracies checked here so that a refusal names the file;
    a baseline (`as_baseline`) must give every accuracy (`_baseline_value`).

    Raises:
        ValueError: naming `path`.
    """
    document = read_json(path)
    if (
        not isinstance(document, dict)
        or "overall" not in document
        or not isinstance(document.get("columns"), dict)
        or not isinstance(document.get("context", {}), dict)
    ):
        raise ValueError(
            f"{path}: not a metrics.json document (needs 'overall', 'columns', 'context')"
        )
    machine = document.get("context", {}).get("machine")
    if machine is not None and not isinstance(machine, dict):  # None: a run that did not say
        raise ValueError(
            f"{path}: context.machine is {machine!r}, not a mapping (processor, torch)"
        )
    for name in GATE_METRICS:
        if as_baseline:
            _baseline_value(document, name, str(path))
        else:
            _value(document, name, str(path))
    return document


def _check_baseline_precision(
    document: Mapping[str, Any], precision: str | None, path: Path
) -> None:
    """A baseline filed under one precision must not record another (a misplaced file)."""
    recorded = precision_of(document)
    if recorded is not None and precision is not None and recorded != precision:
        raise ValueError(f"{path} records precision {recorded!r} but is the {precision} baseline")


def _naming(error: Exception, path: Path) -> str:
    """The error's message, with `path` in front unless it names it (or a file in it) already."""
    return str(error) if str(path) in str(error) else f"{path}: {error}"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the comparison; return 0 pass, 1 regression, 2 unreadable input."""
    parser = argparse.ArgumentParser(
        prog="filmclevr-regression",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        required=True,
        help="committed metrics.json, or a folder of them per precision (results/baseline)",
    )
    parser.add_argument("--current", type=Path, required=True, help="metrics.json of this run")
    allowed = parser.add_mutually_exclusive_group(required=True)
    allowed.add_argument("--tolerance", type=float, help="accuracy points allowed, every metric")
    allowed.add_argument(
        "--params", type=Path, help="a params file: its regression.tolerance (number or per metric)"
    )
    args = parser.parse_args(argv)
    try:
        # Every precision's tolerance, checked before any file is read.
        if args.params is not None:  # load_params checks it (params.tolerances)
            written = load_params(args.params)["regression"]["tolerance"]
        else:
            written = args.tolerance
            tolerances(written)
    except ParamsError as e:  # it names the file
        parser.error(str(e))
    except (ValueError, OSError) as e:
        parser.error(f"{args.params or '--tolerance'}: {e}")
    documents = {}
    try:
        documents["current"] = _load(args.current)
    except (ValueError, OSError) as e:  # read_json turns OSError and bad JSON into ValueError
        print(
            f"error: cannot read the current metrics: {_naming(e, args.current)}", file=sys.stderr
        )
        return 2
    try:
        baseline, baseline_precision, choice_note = choose_baseline(
            args.baseline, precision_of(documents["current"])
        )
        documents["baseline"] = _load(baseline, as_baseline=True)
        baseline_precision = baseline_precision or precision_of(documents["baseline"])
        tolerance = tolerance_for(written, baseline_precision)
        _check_baseline_precision(documents["baseline"], baseline_precision, baseline)
        if baseline_precision:  # a baseline older than the key: its folder says it
            documents["baseline"].setdefault("context", {})["precision"] = baseline_precision
    except (ValueError, OSError) as e:  # OSError: a folder that cannot be listed
        why = _naming(e, args.baseline)
        print(f"error: cannot read the baseline metrics: {why}", file=sys.stderr)
        return 2
    print(comparison_table(documents["baseline"], documents["current"], tolerance))
    print(f"baseline: {baseline}")
    for note in (choice_note, machine_note(documents["baseline"], documents["current"])):
        if note:
            print(note)
    failures = check_regression(documents["baseline"], documents["current"], tolerance)
    for message in failures:
        print(f"FAIL: {message}")
    print("regression gate: " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
