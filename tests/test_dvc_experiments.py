"""DVC's own views on a tiny run: a profile written by filmclevr-params, `dvc exp run` and
`dvc exp run -S` on it, `dvc exp show` listing the runs with their metrics, filmclevr-params
writing the profile back afterwards, and `dvc plots diff` drawing each run's learning curve
beside the official one and its accuracy per question type."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TINY_IMAGE_SIZE, TINY_MODEL_PARAMS
from tests.test_pipeline import ROOT, dvc, make_project, run

pytestmark = pytest.mark.slow

# config/tiny.yaml: the tiny run as a profile, differences from the demo (config/demo.yaml).
TINY_PROFILE = {
    "base": "demo.yaml",
    "profile": "tiny",
    "get_data": {"mini": {"images": {"train": 24, "val": 8, "test": 4}, "questions_per_image": 4}},
    "resize_images": {"image_size": TINY_IMAGE_SIZE},
    "write_shards": {"images_per_shard": 10},
    "model": dict(TINY_MODEL_PARAMS),
    "train_model": {"max_epochs": 2, "batch_size": 16, "num_threads": 1, "learning_rate": 0.003},
}
STAGES_AFTER_TRAINING = {"train_model", "evaluate_model", "submit_test", "analyze_model"}


def git(project: Path, *args: str) -> subprocess.CompletedProcess:
    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    return subprocess.run(["git", *identity, *args], cwd=project, capture_output=True, text=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A git and DVC repository of the project on the tiny profile, with two experiments: the
    profile as written (`baseline`) and a learning rate set on the command line (`lr`)."""
    project = make_project(tmp_path_factory.mktemp("dvc-exp") / "project")
    (project / "config/tiny.yaml").write_text(yaml.safe_dump(TINY_PROFILE, sort_keys=False))
    for name in (".gitignore", ".dvcignore"):
        shutil.copy2(ROOT / name, project / name)
    # make_project wrote a params.yaml of its own, which git does not hold: --force
    run([sys.executable, "-m", "filmclevr.params", "config/tiny.yaml", "--force"], project)
    git(project, "init", "-q")
    dvc(project, "init", "-q")
    dvc(project, "config", "core.analytics", "false")
    shutil.copytree(ROOT / ".dvc/plots", project / ".dvc/plots")  # the project's plot templates
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "the project on the tiny profile")
    dvc(project, "exp", "run", "--name", "baseline")
    output = dvc(project, "exp", "run", "--name", "lr", "-S", "train_model.learning_rate=0.01")
    assert set(re.findall(r"Running stage '(\w+)'", output)) == STAGES_AFTER_TRAINING, output
    return project


def test_exp_show_lists_each_run_with_its_parameters_and_metrics(project):
    shown = json.loads(dvc(project, "exp", "show", "--json"))
    runs = {
        experiment["name"]: experiment["revs"][0]["data"]
        for baseline in shown
        for experiment in baseline.get("experiments") or []
    }
    assert set(runs) == {"baseline", "lr"}
    for name, rate in (("baseline", 0.003), ("lr", 0.01)):
        params = runs[name]["params"]["params.yaml"]["data"]
        assert params["train_model"]["learning_rate"] == rate, name
        metrics = runs[name]["metrics"]["results/metrics.json"]["data"]
        assert 0 <= metrics["overall"] <= 100 and set(metrics["columns"]) >= {"count", "exist"}
        assert metrics["context"]["profile"] == "tiny"
        assert "results/analysis.json" in runs[name]["metrics"], name


def test_filmclevr_params_writes_the_profile_back_after_an_experiment(project):
    """`dvc exp run -S` leaves params.yaml with the experiment's values, which the experiment
    keeps: writing the profile again needs no --force and restores the committed file."""
    assert git(project, "diff", "--quiet", "params.yaml").returncode == 1  # the lr run's
    run([sys.executable, "-m", "filmclevr.params", "config/tiny.yaml"], project)
    assert git(project, "diff", "--quiet", "params.yaml").returncode == 0
    assert dvc(project, "params", "diff").strip() == ""


def test_plots_diff_draws_each_run_beside_the_official_curve(project):
    plots = json.loads(dvc(project, "plots", "diff", "baseline", "lr", "--json"))
    assert not plots.get("errors"), plots["errors"]
    data = plots["data"]
    official = (ROOT / "filmclevr/paper/learning_curve.csv").read_text().splitlines()[1:]

    def values(plot: str) -> list[dict]:
        return data[plot][0]["content"]["data"]["values"]

    curve = values("learning_curve_vs_paper")
    for rev in ("baseline", "lr"):
        mine = [v for v in curve if v["rev"] == rev]
        ours = [v["epoch"] for v in mine if v["filename"] == "results/learning_curve.csv"]
        assert ours == ["1", "2"], rev
        paper = [v for v in mine if v["filename"] == "filmclevr/paper/learning_curve.csv"]
        assert [v["val_accuracy"] for v in paper] == [line.split(",")[2] for line in official]
    columns = values("val_accuracy_per_column")
    assert {v["field"] for v in columns} == {
        "val_count", "val_exist", "val_compare_numbers", "val_query_attribute",
        "val_compare_attribute",
    }  # fmt: skip
    bars = data["results/accuracy.csv"][0]["content"]
    ours = [v for v in bars["data"]["values"] if v["series"] == "this run"]
    assert sorted(v["rev"] for v in ours) == ["baseline"] * 6 + ["lr"] * 6
    assert "scale" not in bars["encoding"]["x"]  # bars start at 0 (the project's template)
