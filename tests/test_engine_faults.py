"""Faults met through the workflow engines (issue 26): a bad profile, or an input file it names
that is missing, stops both engines before any stage does work, naming the file, the key and the
problem.

Each test runs an engine in its own copy of the project (tests/test_pipeline.py's make_project),
on the tiny profile there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from filmclevr.workflow_stages import STAGES
from tests.test_pipeline import make_project

pytestmark = pytest.mark.slow


def engine(project: Path, *command: str) -> subprocess.CompletedProcess:
    """`python -m <command>` in `project`, its output in .stdout (stderr merged), not checked."""
    env = dict(os.environ, PYTHONPATH=str(project), FILMCLEVR_LOG="WARNING")
    # The stage commands call `python`: make it the interpreter running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [sys.executable, "-m", *command],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def new_dvc_repo(project: Path) -> None:
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    for command in (["init", "-q"], ["config", "core.analytics", "false"]):
        assert engine(project, "dvc", *command).returncode == 0


def edit_params(project: Path, section: str, **values) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# --- Case 6: a bad profile is refused before the data stages ------------------------------------
def test_a_typo_in_the_recipe_stops_snakemake_at_parse_time_and_dvc_at_its_first_stage(
    tmp_path: Path,
) -> None:
    project = make_project(tmp_path / "project")
    edit_params(project, "train_model", lr_schedule="cosin")
    problem = "train_model: TrainConfig.lr_schedule must be one of constant, cosine, linear"

    dry_run = engine(project, "snakemake", "--cores", "1", "--dry-run")
    assert dry_run.returncode != 0 and "params.yaml: invalid parameters" in dry_run.stdout
    assert problem in dry_run.stdout, dry_run.stdout[-3000:]

    new_dvc_repo(project)
    repro = engine(project, "dvc", "repro")
    assert repro.returncode != 0 and "Running stage 'get_data'" in repro.stdout
    assert problem in repro.stdout, repro.stdout[-3000:]
    assert "resize_images" not in repro.stdout
    assert not (project / "data").exists()


def test_a_key_given_twice_stops_both_engines(tmp_path: Path) -> None:
    """Snakemake would read the second value silently; it now refuses as DVC does."""
    project = make_project(tmp_path / "project")
    lines = (project / "params.yaml").read_text().splitlines()
    at = lines.index("train_model:") + 1
    lines.insert(at, "  max_epochs: 5")  # before the section's own max_epochs
    (project / "params.yaml").write_text("\n".join(lines) + "\n")

    dry_run = engine(project, "snakemake", "--cores", "1", "--dry-run")
    assert dry_run.returncode != 0
    assert f"params.yaml: line {at + 2}: key train_model.max_epochs is given twice" in (
        dry_run.stdout
    ), dry_run.stdout[-3000:]

    new_dvc_repo(project)
    repro = engine(project, "dvc", "repro")
    assert repro.returncode != 0 and "params.yaml" in repro.stdout
    assert "Running stage" not in repro.stdout


# --- Case 2: a missing input the profile names stops the run -------------------------------------
# The default target's outputs (the tiny profile has a test split: submit_test's too), upstream
# first (stage by stage, as the engines would write them); folders end in "/".
DEFAULT_STAGES = (
    "get_data", "resize_images", "tokenize_questions", "write_shards", "train_model",
    "evaluate_model", "submit_test", "analyze_model",
)  # fmt: skip
DEFAULT_OUTPUTS = [
    out.path + "/" * out.directory
    for out in (STAGES[name].out(key) for name in DEFAULT_STAGES for key in STAGES[name].outputs)
]
MISSING = "results/reference/nowhere/film.pt"


def pretend_the_pipeline_ran(project: Path) -> None:
    """Every output of the default target in place, each newer than what it is made from."""
    for i, name in enumerate(DEFAULT_OUTPUTS):
        path = project / name
        if name.endswith("/"):
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("made earlier")
        stamp = time.time() + i  # ahead of every input's, in the outputs' order
        os.utime(path, (stamp, stamp))


def test_a_missing_checkpoint_to_start_from_stops_snakemake_with_a_model_in_place(tmp_path):
    """It said "Nothing to be done" and kept the old model as the result of this run."""
    project = make_project(tmp_path / "project")
    pretend_the_pipeline_ran(project)
    before = engine(project, "snakemake", "--cores", "1")
    assert before.returncode == 0 and "Nothing to be done" in before.stdout, before.stdout
    edit_params(project, "train_model", init_checkpoint=MISSING)
    after = engine(project, "snakemake", "--cores", "1")
    assert after.returncode != 0
    assert "params.yaml: missing input files" in after.stdout, after.stdout[-3000:]
    assert f"train_model.init_checkpoint: {MISSING} does not exist" in after.stdout


def test_a_missing_checkpoint_to_start_from_stops_dvc_at_its_first_stage_and_at_training(
    tmp_path: Path,
) -> None:
    """From scratch DVC runs get_data first; with the data in place, train_model alone."""
    project = make_project(tmp_path / "project")
    edit_params(project, "train_model", init_checkpoint=MISSING)
    message = f"train_model.init_checkpoint: {MISSING} does not exist"
    new_dvc_repo(project)
    repro = engine(project, "dvc", "repro", "get_data")
    assert repro.returncode != 0 and message in repro.stdout, repro.stdout[-3000:]
    assert not (project / "data").exists()
    command = ["--params", "params.yaml", "--shards", "data/shards", "--vocab", "v.json"]
    command += ["--out", "m/film.pt", "--last", "m/last.pt", "--log-dir", "r", "--curves", "c.png"]
    training = engine(project, "stages.train_model", *command)
    assert training.returncode == 1 and message in training.stdout, training.stdout[-3000:]
    assert not (project / "m").exists() and not (project / "r").exists()


def test_a_missing_vocabulary_is_refused_as_the_profile_is_read(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    edit_params(project, "tokenize_questions", vocab="models/nowhere/vocab.json")
    dry_run = engine(project, "snakemake", "--cores", "1", "--dry-run")
    assert dry_run.returncode != 0
    assert "tokenize_questions.vocab: models/nowhere/vocab.json does not exist" in dry_run.stdout


# --- Case 4: a hard kill of Snakemake itself, and the documented recovery ------------------------
def test_snakemake_unlocks_without_cores(tmp_path: Path) -> None:
    """`snakemake --unlock`, as Snakemake's lock message says, failed: "Workflow requires a total
    number of cores" (rules read workflow.cores when parsed)."""
    project = make_project(tmp_path / "project")
    unlock = engine(project, "snakemake", "--unlock")
    assert unlock.returncode == 0, unlock.stdout[-3000:]


def wait_for(path: Path, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, f"ended before {path} appeared: {process.stdout.read()}"
        assert time.monotonic() < deadline, f"no {path} after {timeout_s} s"
        time.sleep(0.2)


def test_a_hard_kill_of_snakemake_mid_training_recovers_with_the_readme_commands(tmp_path):
    """SIGKILL to Snakemake and its jobs at once (power loss, the OOM killer) during training,
    then the README's two commands: the run finishes, training resumed from models/last.pt."""
    project = make_project(tmp_path / "project")
    edit_params(project, "train_model", max_epochs=3, checkpoint_every_steps=1)
    env = dict(os.environ, PYTHONPATH=str(project), FILMCLEVR_LOG="WARNING")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    run = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "2", "train_model"],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill takes the jobs with it
    )
    try:
        wait_for(project / "models/last.pt", run, timeout_s=240)
    finally:
        os.killpg(run.pid, 9)
        run.communicate()
    assert not (project / "models/film.json").exists(), "training ended before the kill"
    assert list((project / ".snakemake/locks").iterdir()), "no lock left: the kill came too late"
    # What Snakemake says after the kill: training's outputs are incomplete, the folder locked.
    blocked = engine(project, "snakemake", "--cores", "2", "train_model")
    assert blocked.returncode != 0 and "--rerun-incomplete" in blocked.stdout
    rerun_command = ["snakemake", "--cores", "2", "--rerun-incomplete", "train_model"]
    locked = engine(project, *rerun_command)
    assert locked.returncode != 0 and "--unlock" in locked.stdout, locked.stdout[-3000:]

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`snakemake --unlock`" in readme and "--rerun-incomplete" in readme
    unlock = engine(project, "snakemake", "--unlock")
    assert unlock.returncode == 0, unlock.stdout[-3000:]
    rerun = engine(project, *rerun_command)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    history = yaml.safe_load((project / "models/film.json").read_text())["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]
