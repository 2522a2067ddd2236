"""Faults met through the workflow engines (issue 26): a bad profile stops both engines before any
stage does work, naming the file, the key and the problem.

Each test runs an engine in its own copy of the project (tests/test_pipeline.py's make_project),
on the tiny profile there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
