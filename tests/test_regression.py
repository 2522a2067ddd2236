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


PER_METRIC = {"overall": 1.0, "count": 2.0, "exist": 2.0, "compare_numbers": 3.0,
              "query_attribute": 2.0, "compare_attribute": 8.0}  # fmt: skip


def test_per_metric_tolerance_holds_each_metric_to_its_own():
    current = metrics(89.5, column=78.5)  # every column 1.5 below: only compare_numbers' 3 allows
    current["columns"]["compare_numbers"] = 77.5
    current["columns"]["compare_attribute"] = 72.5
    assert regression.check_regression(metrics(90.0), current, PER_METRIC) == []
    current["columns"]["compare_attribute"] = 71.5  # 8.5 below its 8
    failures = regression.check_regression(metrics(90.0), current, PER_METRIC)
    assert failures == ["compare_attribute: 71.50 is 8.50 points below the baseline 80.00 "
                        "(tolerance 8)"]  # fmt: skip
    failures = regression.check_regression(metrics(90.0), metrics(88.5), PER_METRIC)
    assert [f.split(":")[0] for f in failures] == ["overall"]  # 1.5 below its 1


@pytest.mark.parametrize(
    ("tolerance", "problem"),
    [
        ({k: v for k, v in PER_METRIC.items() if k != "exist"}, "must name exactly"),
        ({**PER_METRIC, "colour": 1.0}, "must name exactly"),
        ({**PER_METRIC, "count": -0.5}, ">= 0"),
    ],
)
def test_per_metric_tolerance_refuses_bad_mappings(tolerance, problem):
    with pytest.raises(ValueError, match=problem):
        regression.check_regression(metrics(90.0), metrics(90.0), tolerance)


def test_cli_reads_the_tolerance_from_a_params_file(tmp_path, capsys):
    import yaml

    from filmclevr.params import load_params

    params = load_params(Path(regression.__file__).resolve().parents[1] / "params.yaml")
    params["regression"]["tolerance"] = PER_METRIC
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    for name, document in (("b.json", metrics(90.0)), ("c.json", metrics(89.5, column=78.5))):
        (tmp_path / name).write_text(json.dumps(document))
    argv = ["--baseline", str(tmp_path / "b.json"), "--current", str(tmp_path / "c.json")]
    assert regression.main([*argv, "--params", str(tmp_path / "params.yaml")]) == 0
    assert "compare_attribute" in capsys.readouterr().out
    assert regression.main([*argv, "--tolerance", "1"]) == 1  # the columns' 1.5 is too much
    params["regression"]["tolerance"] = {"overall": 1.0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit):  # the schema refuses a mapping without every metric
        regression.main([*argv, "--params", str(tmp_path / "params.yaml")])
    assert "params.yaml" in capsys.readouterr().err


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
    assert lines[0].split() == ["metric", "baseline", "current", "delta", "tolerance", "status"]
    assert lines[1].split() == ["overall", "90.00", "91.00", "+1.00", "2", "ok"]
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
