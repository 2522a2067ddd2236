"""Tests of filmclevr.regression: the CI gate and its CLI exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filmclevr import clevr, regression


def metrics(overall: float, column: float = 80.0, **context) -> dict:
    return {
        "context": {"dataset": "mini-CLEVR", "split": "val", "profile": "mini", **context},
        "overall": overall,
        "columns": dict.fromkeys(clevr.QUESTION_TYPES, column),
    }


def test_passes_within_tolerance_and_on_improvement():
    assert regression.check_regression(metrics(90.0), metrics(88.5), tolerance=2.0) == []
    assert regression.check_regression(metrics(90.0), metrics(88.0), tolerance=2.0) == []
    assert regression.check_regression(metrics(90.0), metrics(99.0, 99.0), tolerance=0.0) == []


def test_fails_beyond_tolerance_naming_the_metric():
    failures = regression.check_regression(metrics(90.0), metrics(87.9), tolerance=2.0)
    assert len(failures) == 1 and failures[0].startswith("overall:")

    current = metrics(90.0)
    current["columns"]["compare_numbers"] = 70.0
    failures = regression.check_regression(metrics(90.0), current, tolerance=2.0)
    assert len(failures) == 1 and "compare_numbers" in failures[0] and "10.00" in failures[0]


def test_fails_when_a_column_disappears():
    current = metrics(90.0)
    current["columns"]["exist"] = None
    failures = regression.check_regression(metrics(90.0), current, tolerance=2.0)
    assert failures == ["exist: missing in the current metrics (baseline 80.00)"]


@pytest.mark.parametrize("key", ["dataset", "profile", "split"])
def test_fails_on_context_mismatch(key):
    current = metrics(95.0, 95.0, **{key: "other"})
    failures = regression.check_regression(metrics(90.0), current, tolerance=2.0)
    assert len(failures) == 1 and key in failures[0]


def test_negative_tolerance_refused():
    with pytest.raises(ValueError, match="tolerance"):
        regression.check_regression(metrics(90.0), metrics(90.0), tolerance=-1.0)


def _cli(tmp_path, baseline, current, tolerance="2.0") -> int:
    paths = []
    for name, document in (("baseline.json", baseline), ("current.json", current)):
        path = tmp_path / name
        if isinstance(document, str):
            path.write_text(document)
        elif document is not None:
            path.write_text(json.dumps(document))
        paths.append(str(path))
    return regression.main(
        ["--baseline", paths[0], "--current", paths[1], "--tolerance", tolerance]
    )


def test_cli_pass_prints_side_by_side_table(tmp_path, capsys):
    assert _cli(tmp_path, metrics(90.0), metrics(91.0)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["metric", "baseline", "current", "delta", "status"]
    assert lines[1].split() == ["overall", "90.00", "91.00", "+1.00", "ok"]
    assert "passed" in out


def test_cli_regression_exits_1(tmp_path, capsys):
    assert _cli(tmp_path, metrics(90.0), metrics(80.0)) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "FAIL: overall" in out
    assert _cli(tmp_path, metrics(90.0), metrics(90.0, profile="paper")) == 1
    assert "MISMATCH" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("baseline", "current", "named"),
    [
        (None, metrics(90.0), "baseline.json"),
        (metrics(90.0), "{broken", "current.json"),
        (metrics(90.0), json.dumps([1, 2]), "current.json"),
        ({"overall": 1.0, "columns": "x"}, metrics(90.0), "baseline.json"),
    ],
)
def test_cli_unreadable_input_exits_2_naming_file(tmp_path, capsys, baseline, current, named):
    assert _cli(tmp_path, baseline, current) == 2
    assert named in capsys.readouterr().err


def test_cli_runs_as_module(tmp_path):
    import subprocess
    import sys

    (tmp_path / "a.json").write_text(json.dumps(metrics(90.0)))
    (tmp_path / "b.json").write_text(json.dumps(metrics(50.0)))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "filmclevr.regression",
            "--baseline",
            str(tmp_path / "a.json"),
            "--current",
            str(tmp_path / "b.json"),
            "--tolerance",
            "2",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(regression.__file__).resolve().parents[1],
    )
    assert result.returncode == 1, result.stderr
    assert "REGRESSION" in result.stdout


def test_report_names_both_machines_without_failing_on_them():
    amd = {"processor": "AMD EPYC 9B14", "torch": "2.14.1+cu130"}
    intel = {"processor": "Intel(R) Xeon(R) Platinum 8488C", "torch": "2.14.1+cu130"}
    baseline, current = metrics(44.0, machine=amd), metrics(43.5, machine=intel)
    table = regression.comparison_table(baseline, current, tolerance=3.0)
    row = next(line for line in table.splitlines() if line.startswith("machine.processor"))
    assert "AMD EPYC 9B14" in row and "Intel(R) Xeon(R)" in row and row.endswith("differs")
    assert "machine.torch" in table and "same" in table
    assert regression.check_regression(baseline, current, tolerance=3.0) == []
    assert "processor" in regression.machine_note(baseline, current)
    assert regression.machine_note(baseline, metrics(40.0, machine=amd)) is None
    # A baseline from before machines were recorded says so.
    assert "unknown" in regression.comparison_table(metrics(44.0), current, tolerance=3.0)
