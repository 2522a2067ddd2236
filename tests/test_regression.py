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

    params = load_params(Path(regression.__file__).resolve().parents[1] / "config" / "demo.yaml")
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


@pytest.mark.parametrize("role", ["baseline", "current"])
def test_a_machine_that_is_no_mapping_is_unreadable_input(tmp_path, capsys, role):
    """A string context.machine once ended the gate with a traceback (exit 1: "regression")."""
    documents = {"baseline": metrics(90.0), "current": metrics(90.0)}
    documents[role]["context"]["machine"] = "AMD EPYC"
    assert _cli(tmp_path, documents["baseline"], documents["current"]) == 2
    assert f"{role}.json: context.machine is 'AMD EPYC', not a mapping" in capsys.readouterr().err


# --- Refused: non-finite numbers, runs that cannot be compared ------------------------------------
NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "tolerance", [NAN, INF, -INF, {**PER_METRIC, "count": NAN}, {**PER_METRIC, "exist": INF}]
)
def test_non_finite_tolerance_refused(tolerance):
    """A NaN tolerance let every drop pass (no comparison with NaN is true)."""
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0"):
        regression.check_regression(metrics(90.0), metrics(10.0), tolerance)


@pytest.mark.parametrize("value", [NAN, INF, -1.0, 100.5, "90", True])
@pytest.mark.parametrize("role", ["baseline", "current"])
def test_accuracy_that_is_no_percentage_is_refused(role, value):
    documents = {"baseline": metrics(90.0), "current": metrics(90.0)}
    documents[role]["columns"]["count"] = value
    with pytest.raises(ValueError, match=rf"{role}: count accuracy .* is not a number from 0 to"):
        regression.check_regression(documents["baseline"], documents["current"], 2.0)


def test_cli_refuses_non_finite_numbers_naming_the_file(tmp_path, capsys):
    assert _cli(tmp_path, metrics(90.0), metrics(NAN)) == 2
    assert "current.json" in capsys.readouterr().err
    assert _cli(tmp_path, metrics(INF), metrics(90.0)) == 2
    assert "baseline.json" in capsys.readouterr().err
    for tolerance in ("nan", "inf"):
        with pytest.raises(SystemExit) as exit_info:
            _cli(tmp_path, metrics(90.0), metrics(10.0), tolerance=tolerance)
        assert exit_info.value.code == 2
        assert "--tolerance: tolerance must be a finite number" in capsys.readouterr().err


def test_cli_refuses_a_nan_tolerance_from_a_params_file(tmp_path, capsys):
    import yaml

    from filmclevr.params import load_params

    params = load_params(Path(regression.__file__).resolve().parents[1] / "config" / "demo.yaml")
    params["regression"]["tolerance"] = NAN  # YAML's .nan, which the schema's minimum lets pass
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "b.json").write_text(json.dumps(metrics(90.0)))
    (tmp_path / "c.json").write_text(json.dumps(metrics(10.0)))
    argv = ["--baseline", str(tmp_path / "b.json"), "--current", str(tmp_path / "c.json")]
    with pytest.raises(SystemExit):
        regression.main([*argv, "--params", str(tmp_path / "params.yaml")])
    err = capsys.readouterr().err  # refused when the params file is loaded, naming the key
    assert "params.yaml: invalid parameters" in err
    assert "regression.tolerance: tolerance must be a finite number" in err


def test_cli_refuses_a_params_file_it_cannot_read_naming_it(tmp_path, capsys):
    """A folder given as --params ended in an IsADirectoryError traceback (exit 1, "regression")."""
    (tmp_path / "b.json").write_text(json.dumps(metrics(90.0)))
    argv = ["--baseline", str(tmp_path / "b.json"), "--current", str(tmp_path / "b.json")]
    with pytest.raises(SystemExit) as exit_info:
        regression.main([*argv, "--params", str(tmp_path)])
    assert exit_info.value.code == 2
    assert f"{tmp_path}: cannot read the parameters file" in capsys.readouterr().err


def full_metrics(overall: float, questions: int = 5000, **context) -> dict:
    """A metrics.json document as evaluate writes it: its data's counts in context and counts."""
    shares = dict(zip(clevr.QUESTION_TYPES, (0.26, 0.18, 0.12, 0.38, 0.06), strict=True))
    columns = {c: round(questions * share) for c, share in shares.items()}
    document = metrics(overall)
    data = {"questions": questions, "images": questions // 20, "train_split": "train",
            "train_questions": 120000, "train_images": 6000}  # fmt: skip
    document["context"].update({**data, **context})
    document["counts"] = {"overall": sum(columns.values()), "columns": columns}
    return document


def test_a_run_on_fewer_questions_cannot_pass_against_the_baseline():
    """A 100-question run once passed against the 5,000-question baseline: only the labels of
    the two contexts were compared."""
    assert regression.check_regression(full_metrics(50.0), full_metrics(50.0), 2.0) == []
    failures = regression.check_regression(full_metrics(50.0), full_metrics(60.0, 100), 2.0)
    assert failures and all("cannot be compared" in f for f in failures)
    assert any(
        f.startswith("context questions differs: baseline 5000, current 100") for f in failures
    )
    assert any(
        f.startswith("questions of count differ: baseline 1300, current 26") for f in failures
    )
    table = regression.comparison_table(full_metrics(50.0), full_metrics(60.0, 100), 2.0)
    assert any(line.split()[:3] == ["questions.count", "1300", "26"] for line in table.splitlines())


@pytest.mark.parametrize(
    ("key", "value"),
    [("images", 7), ("train_split", "trainA"), ("train_questions", 10), ("train_images", 1)],
)
def test_runs_on_other_data_cannot_be_compared(key, value):
    failures = regression.check_regression(
        full_metrics(50.0), full_metrics(60.0, **{key: value}), 2
    )
    assert len(failures) == 1 and failures[0].startswith(f"context {key} differs")


def test_runs_whose_columns_hold_other_questions_cannot_be_compared():
    current = full_metrics(60.0)
    current["counts"]["columns"]["exist"] += 5  # same total: another mix of questions
    current["counts"]["columns"]["count"] -= 5
    failures = regression.check_regression(full_metrics(50.0), current, 2.0)
    assert sorted(f.split(":")[0] for f in failures) == [
        "questions of count differ", "questions of exist differ"
    ]  # fmt: skip


# --- A baseline gives every accuracy --------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "absent"), [("overall", False), ("overall", True), ("exist", False), ("exist", True)]
)
def test_a_baseline_without_an_accuracy_is_refused_naming_it(tmp_path, capsys, name, absent):
    """A baseline whose overall was null passed a run at 10%: "no baseline" never failed."""
    baseline = full_metrics(50.0)
    values = baseline if name == "overall" else baseline["columns"]
    if absent:
        del values[name]
    else:
        values[name] = None
    with pytest.raises(ValueError, match=f"^baseline: {name} accuracy is missing"):
        regression.check_regression(baseline, full_metrics(10.0), 1.0)
    assert _cli(tmp_path, baseline, full_metrics(10.0), tolerance="1") == 2
    err = capsys.readouterr().err
    assert "baseline.json" in err and ("accuracy is missing" in err or "'overall'" in err)


def test_a_baseline_column_may_be_null_only_where_it_had_no_questions(tmp_path, capsys):
    """evaluate writes a column without questions as null, its count 0: nothing to compare."""
    baseline, current = full_metrics(50.0), full_metrics(50.0)
    for document in (baseline, current):
        document["columns"]["exist"] = None
        document["counts"]["columns"]["exist"] = 0
    assert _cli(tmp_path, baseline, current) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("exist"))
    assert row.split() == ["exist", "-", "-", "-", "2", "no", "questions"]
    baseline["counts"]["columns"]["exist"] = 673  # it had questions: its accuracy is missing
    with pytest.raises(ValueError, match="^baseline: exist accuracy is missing"):
        regression.check_regression(baseline, current, 2.0)


# --- One baseline and tolerance per numeric path ----------------------------------------------
def _baselines(tmp_path, **per_precision) -> Path:
    """A baseline folder holding <precision>/metrics.json for each given document."""
    folder = tmp_path / "baseline"
    for precision, document in per_precision.items():
        (folder / precision).mkdir(parents=True)
        (folder / precision / "metrics.json").write_text(json.dumps(document))
    return folder


def test_a_run_is_held_to_the_baseline_and_tolerance_of_its_own_precision(tmp_path, capsys):
    folder = _baselines(
        tmp_path, bf16=metrics(90.0, precision="bf16"), float32=metrics(80.0, precision="float32")
    )
    tolerance = {"bf16": 1.0, "float32": 5.0}
    params = tmp_path / "params.yaml"
    import yaml

    from filmclevr.params import load_params

    document = load_params(Path(regression.__file__).resolve().parents[1] / "config" / "demo.yaml")
    document["regression"]["tolerance"] = tolerance
    params.write_text(yaml.safe_dump(document))

    def gate(current: dict) -> int:
        (tmp_path / "current.json").write_text(json.dumps(current))
        argv = ["--baseline", str(folder), "--current", str(tmp_path / "current.json")]
        return regression.main([*argv, "--params", str(params)])

    # 76 is within float32's 5 points of its 80, far below bf16's 90.
    assert gate(metrics(76.0, precision="float32")) == 0
    out = capsys.readouterr().out
    assert f"baseline: {folder / 'float32' / 'metrics.json'}" in out and "note: " not in out
    assert gate(metrics(88.5, precision="bf16")) == 1  # 1.5 below 90 at bf16's 1 point
    assert "bf16" in capsys.readouterr().out


def test_a_precision_without_its_baseline_is_compared_with_the_other_and_says_so(tmp_path):
    folder = _baselines(tmp_path, bf16=metrics(90.0, precision="bf16"))
    path, precision, note = regression.choose_baseline(folder, "float32")
    assert path == folder / "bf16" / "metrics.json" and precision == "bf16"
    assert "no float32 baseline" in note and "bf16 tolerances" in note
    assert regression.choose_baseline(folder, "bf16") == (path, "bf16", None)
    # A file is the baseline as named, whatever the run's precision.
    assert regression.choose_baseline(path, "float32") == (path, None, None)


@pytest.mark.parametrize(
    ("present", "precision", "problem"),
    [({}, "bf16", "holds no baseline"), ({"bf16": 1}, None, "records no precision")],
)
def test_a_baseline_folder_that_cannot_serve_the_run_is_refused(
    tmp_path, present, precision, problem
):
    folder = _baselines(tmp_path, **{p: metrics(90.0) for p in present})
    folder.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=problem):
        regression.choose_baseline(folder, precision)


def test_a_misplaced_baseline_is_refused_naming_it(tmp_path, capsys):
    folder = _baselines(tmp_path, float32=metrics(90.0, precision="bf16"))
    (tmp_path / "current.json").write_text(json.dumps(metrics(90.0, precision="float32")))
    argv = ["--baseline", str(folder), "--current", str(tmp_path / "current.json")]
    assert regression.main([*argv, "--tolerance", "2"]) == 2
    err = capsys.readouterr().err
    assert "records precision 'bf16' but is the float32 baseline" in err


def test_tolerance_written_per_precision():
    assert regression.tolerance_for({"bf16": 1.0, "float32": PER_METRIC}, "float32") == PER_METRIC
    assert regression.tolerance_for(PER_METRIC, "bf16") == PER_METRIC  # not per precision
    assert regression.tolerance_for(2.0, None) == 2.0
    with pytest.raises(ValueError, match="none for 'float32'"):
        regression.tolerance_for({"bf16": 1.0}, "float32")


def test_report_names_both_precisions():
    table = regression.comparison_table(
        metrics(90.0, precision="bf16"), metrics(90.0, precision="float32"), tolerance=1.0
    )
    row = next(line for line in table.splitlines() if line.startswith("precision"))
    assert row.split() == ["precision", "bf16", "float32", "differs"]
