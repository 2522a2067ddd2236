"""End to end: the six stages on a tiny mini-CLEVR, through Snakemake and through DVC.

Each engine runs in its own copy of the project, so the two runs are independent; both must
produce the same metrics, a second run must do nothing, and a parameter change must rerun only
the stages that depend on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from filmclevr import clevr
from tests.helpers import TINY_IMAGE_SIZE, TINY_MODEL_PARAMS

ROOT = Path(__file__).resolve().parents[1]
PROJECT_FILES = ["Snakefile", "dvc.yaml", "params.yaml", "pyproject.toml", "README.md"]
PROJECT_DIRS = ["filmclevr", "stages", "workflow", "config"]
STAGES = [
    "get_data",
    "resize_images",
    "tokenize_questions",
    "write_shards",
    "train_model",
    "evaluate_model",
    "submit_test",
    "analyze_model",
]

pytestmark = pytest.mark.slow


def tiny_params() -> dict:
    params = yaml.safe_load((ROOT / "config/demo.yaml").read_text())  # the demo
    params["profile"] = "tiny"
    params["get_data"]["mini"]["images"] = {"train": 24, "val": 8, "test": 4}
    params["get_data"]["mini"]["questions_per_image"] = 4
    params["resize_images"]["image_size"] = TINY_IMAGE_SIZE
    params["write_shards"]["images_per_shard"] = 10
    params["model"] = dict(TINY_MODEL_PARAMS)
    params["train_model"] = {"max_epochs": 2, "batch_size": 16, "num_threads": 1}
    return params


def make_project(path: Path) -> Path:
    path.mkdir()
    for name in PROJECT_FILES:
        shutil.copy2(ROOT / name, path / name)
    for name in PROJECT_DIRS:
        shutil.copytree(ROOT / name, path / name, ignore=shutil.ignore_patterns("__pycache__"))
    runs = "results/experiments/runs"  # in git (its README), as in every clone
    shutil.copytree(ROOT / runs, path / runs)
    (path / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return path


def run(command: list[str], cwd: Path) -> str:
    env = dict(os.environ, PYTHONPATH=str(cwd), FILMCLEVR_LOG="WARNING")
    # The stage commands call `python`: make it the interpreter running the tests.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output[-6000:]}"
    return output


def snakemake(project: Path, *args: str) -> str:
    return run([sys.executable, "-m", "snakemake", "--cores", "2", *args], project)


def dvc(project: Path, *args: str) -> str:
    return run([sys.executable, "-m", "dvc", *args], project)


def dvc_repro_in_a_new_repo(project: Path, *targets: str) -> str:
    """`dvc repro` in a fresh git and DVC repository at `project`, with the project's plot
    templates (.dvc/plots/, which a clone has; without one dvc.yaml names, no plot is drawn)."""
    run(["git", "init", "-q"], project)
    dvc(project, "init", "-q")
    dvc(project, "config", "core.analytics", "false")
    shutil.copytree(ROOT / ".dvc/plots", project / ".dvc/plots")
    return dvc(project, "repro", *targets)


def metrics_without_commit(project: Path) -> dict:
    metrics = json.loads((project / "results/metrics.json").read_text())
    metrics["context"].pop("commit", None)
    return metrics


def planned_snakemake_jobs(project: Path) -> set[str]:
    output = snakemake(project, "--dry-run", "--quiet", "rules")
    return {stage for stage in STAGES if re.search(rf"^\s*{stage}\s+\d+", output, re.M)}


def set_param(project: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    params[section][key] = value
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def snakemake_project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("engines") / "snakemake")
    snakemake(project)
    return project


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    project = make_project(tmp_path_factory.mktemp("engines") / "dvc")
    dvc_repro_in_a_new_repo(project)
    return project


def test_snakemake_runs_every_stage(snakemake_project):
    for path in [
        "data/clevr/questions/CLEVR_train_questions.json",
        "data/resized/val/CLEVR_val_000000.png",
        "data/tokens/vocab.json",
        "data/shards/index.json",
        "models/film.pt",
        "results/table.md",
        "results/accuracy.png",
        "results/learning_curves.png",
        "results/analysis/examples.png",
        "results/analysis/ablations.csv",
        "results/analysis.json",
        "results/submission/test_answers.txt",
        "results/submission/manifest.json",
    ]:
        assert (snakemake_project / path).is_file(), path
    metrics = json.loads((snakemake_project / "results/metrics.json").read_text())
    assert metrics["context"]["profile"] == "tiny"
    assert metrics["context"]["dataset"] == "mini-CLEVR (look clevr, language clevr)"  # the demo's
    assert 0 <= metrics["overall"] <= 100


def test_dvc_produces_the_same_table(snakemake_project, dvc_project):
    assert metrics_without_commit(dvc_project) == metrics_without_commit(snakemake_project)
    analyses = [
        json.loads((p / "results/analysis.json").read_text())
        for p in (dvc_project, snakemake_project)
    ]
    assert analyses[0] == analyses[1]


def test_snakemake_second_run_does_nothing_and_params_rerun_only_dependents(snakemake_project):
    assert planned_snakemake_jobs(snakemake_project) == set()
    set_param(snakemake_project, "train_model", "learning_rate", 1e-3)
    assert planned_snakemake_jobs(snakemake_project) == {
        "train_model",
        "evaluate_model",
        "submit_test",
        "analyze_model",
    }
    set_param(snakemake_project, "resize_images", "image_size", 24)  # the model's input too
    assert planned_snakemake_jobs(snakemake_project) == {
        "resize_images",
        "write_shards",
        "train_model",
        "evaluate_model",
        "submit_test",
        "analyze_model",
    }


def test_dvc_plots_draw_the_learning_curves(dvc_project):
    plots = json.loads(dvc(dvc_project, "plots", "show", "--json"))["data"]
    val_accuracy = plots["results/train/plots/metrics/val/accuracy.tsv"][0]["content"]
    epochs = [row["step"] for row in val_accuracy["data"]["values"]]
    assert epochs == ["1", "2"]  # one point per epoch of the tiny profile
    assert "results/train/plots/metrics/train/loss.tsv" in plots


def test_dvc_second_run_does_nothing_and_params_rerun_only_dependents(dvc_project):
    status = dvc(dvc_project, "status")
    assert "up to date" in status, status
    set_param(dvc_project, "evaluate_model", "batch_size", 7)
    output = dvc(dvc_project, "repro")
    ran = set(re.findall(r"Running stage '(\w+)'", output))
    assert ran == {"evaluate_model", "submit_test"}, output  # both predict in batches
    assert "up to date" in dvc(dvc_project, "status")


def test_one_engine_after_the_other_redoes_nothing(tmp_path):
    """DVC, then Snakemake: nothing to do. Snakemake remaking the data, then DVC: the data is
    byte-identical, so `dvc status` is clean (Snakemake's `.snakemake_timestamp` files in its
    directory outputs are in .dvcignore). A retraining is never byte-identical (its history
    holds its own speed), so only the data stages can be compared this way."""
    project = make_project(tmp_path / "both")
    shutil.copy2(ROOT / ".dvcignore", project / ".dvcignore")
    dvc_repro_in_a_new_repo(project)
    assert planned_snakemake_jobs(project) == set()
    for stage in ("clevr", "resized", "tokens", "shards"):  # the four data stages' outputs
        shutil.rmtree(project / "data" / stage)
    snakemake(project, "write_shards")  # get_data through write_shards
    assert list(project.glob("data/*/.snakemake_timestamp")), "Snakemake wrote none: test moot"
    status = dvc(project, "status")
    assert "up to date" in status, status


def test_no_stage_writes_a_file_git_tracks():
    """Running any profile must leave `git status` clean: no output of either engine is a
    tracked file, and the regression baseline lives where no stage writes."""
    tracked = set(
        subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outputs = set()
    for stage in stages.values():
        for entry in stage.get("outs", []) + stage.get("metrics", []):
            outputs.add(entry if isinstance(entry, str) else next(iter(entry)))
    written = {f for f in tracked if any(f == o or f.startswith(o + "/") for o in outputs)}
    assert written == set(), f"tracked files that a run overwrites: {sorted(written)}"
    assert "results/baseline/float32/metrics.json" in tracked


# --- The paper's experiments as a sweep, under both engines -------------------------------------
SWEEP = ["raw_pixels", "beta0", "no_film_block4"]  # the last fails: the tiny model has 1 block


def sweep_project(path: Path) -> Path:
    project = make_project(path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["experiments"] = {"names": SWEEP, "seeds": [0, 1], "train_model": {"max_epochs": 1}}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def check_sweep_table(project: Path) -> str:
    table = (project / "results/experiments/table.csv").read_text()
    rows = {line.split(",")[0]: line for line in table.splitlines()[1:]}
    assert set(rows) == set(SWEEP)
    assert ",2,2," in rows["raw_pixels"] and ",2,2," in rows["beta0"]  # seeds done / runs
    assert (
        "failed: seed 0: " in rows["no_film_block4"]
        and "condition_pattern" in rows["no_film_block4"]
    )
    for name in ("raw_pixels", "beta0"):
        for seed in (0, 1):
            run_dir = project / f"results/experiments/runs/{name}/seed{seed}"
            assert json.loads((run_dir / "result.json").read_text())["status"] == "ok"
            assert (run_dir / "film.pt").is_file()
    assert not (project / "results/metrics.json").exists()  # the default run is not touched
    return table


def test_sweep_under_both_engines(tmp_path):
    snake = sweep_project(tmp_path / "snakemake")
    snakemake(snake, "experiments")
    table = check_sweep_table(snake)
    assert (snake / "results/experiments/deltas.png").read_bytes()[:4] == b"\x89PNG"
    # A finished run is not redone when another experiment is added.
    params = yaml.safe_load((snake / "params.yaml").read_text())
    params["experiments"]["names"].append("gamma1")
    (snake / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = snakemake(snake, "experiments", "--dry-run", "--quiet", "rules")
    planned = dict(re.findall(r"^\s*(\w+)\s+(\d+)", output, re.M))
    assert planned.get("run_experiment") == "2" and planned.get("collect_experiments") == "1"

    dvc_side = sweep_project(tmp_path / "dvc")
    dvc_repro_in_a_new_repo(dvc_side, "collect_experiments")
    assert check_sweep_table(dvc_side) == table  # the same runs, the same numbers
    metrics = dvc(dvc_side, "status")
    assert "run_experiment" not in metrics, metrics


# --- CLEVR-CoGenT end to end, under both engines ------------------------------------------------
def cogent_project(path: Path) -> Path:
    project = make_project(path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profile"] = "tiny-cogent"
    params["get_data"]["splits"] = ["trainA", "valA", "valB", "testA", "testB"]
    params["get_data"]["mini"]["images"] = {
        "trainA": 24, "valA": 8, "valB": 16, "testA": 2, "testB": 2,
    }  # fmt: skip
    params["evaluate_model"]["split"] = params["analyze_model"]["split"] = "valA"
    params["cogent"]["transfer"] = ["valB"]
    params["cogent"]["finetune_questions"] = [16, 32]  # of valB's 64: 8 images held out
    params["cogent"]["train_model"] = {"max_epochs": 1, "trainable": "film_generator"}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def check_cogent(project: Path) -> dict:
    metrics = json.loads((project / "results/cogent/valB.json").read_text())
    assert set(metrics["train_A"]) == {"valA", "valB", "gap"}
    assert [r["questions"] for r in metrics["finetune"]] == [16, 32]
    for size in (16, 32):
        result = json.loads(
            (project / f"results/cogent/finetune/valB/{size}/result.json").read_text()
        )
        assert result["tune_questions"] == size and result["trainable"] == "film_generator"
        assert result["epochs"] == 32 // size  # the same number of steps for every size
        tokens = {
            split: json.loads((project / f"data/tokens/{split}.json").read_text())["questions"]
            for split in ("valA", "valB")
        }
        held_out = [q for q in tokens["valB"] if q["image_index"] >= result["pool_images"]]
        assert result["counts"] == {"valA": len(tokens["valA"]), "valB_heldout": len(held_out)}
        assert held_out  # the largest set (32 questions) leaves valB images to test on
    table = (project / "results/cogent/valB/table.md").read_text()
    assert "| Paper: CNN+GRU+FiLM | 98.3 | 75.6 | 80.8 | 96.9 |" in table
    assert "This run: CNN+GRU+FiLM (fine-tuned on 32 questions)" in table
    assert (project / "results/cogent/valB/sample_efficiency.png").read_bytes()[:4] == b"\x89PNG"
    covered = json.loads((project / "results/cogent/valB/zero_shot_questions.json").read_text())
    assert metrics["zero_shot"]["questions"] == len(covered["valB"])
    for row in covered["valB"]:
        assert row["combination"].split()[1] in ("cube", "cylinder")
    assert json.loads((project / "results/metrics.json").read_text())["context"]["dataset"] == (
        "mini-CoGenT (look clevr, language clevr)"  # the tiny profile keeps the demo's look
    )
    return metrics


def test_cogent_under_both_engines(tmp_path):
    snake = cogent_project(tmp_path / "snakemake")
    snakemake(snake)
    metrics = check_cogent(snake)
    dvc_side = cogent_project(tmp_path / "dvc")
    dvc_repro_in_a_new_repo(dvc_side)
    assert check_cogent(dvc_side) == metrics  # the same runs, the same numbers
    assert "finetune_cogent" not in dvc(dvc_side, "status")


# --- A curriculum end to end, under both engines -------------------------------------------------
def curriculum_project(path: Path) -> Path:
    """Compare Attribute questions about 2-object scenes (split "two") after the main training,
    then the main training split again (config/mini-clevr-size-curriculum-from-scratch.yaml)."""
    project = make_project(path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profile"] = "tiny-curriculum"
    params["get_data"]["splits"] = ["train", "val", "test", "two"]
    params["get_data"]["mini"]["images"]["two"] = 12
    params["get_data"]["mini"]["split_settings"] = {
        "two": {"min_objects": 2, "max_objects": 2, "question_mix": {"compare_attribute": 1}}
    }
    params["curriculum"] = [
        {"split": "two", "train_model": {"learning_rate": 1e-4}},
        {"split": "train", "train_model": {"max_epochs": 1}},
    ]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def check_curriculum(project: Path) -> dict:
    _, questions = clevr.read_question_file(clevr.questions_path(project / "data/clevr", "two"))
    assert {clevr.question_type(q["program"]) for q in questions} == {"compare_attribute"}
    scenes = clevr.read_scenes(clevr.scenes_path(project / "data/clevr", "two"))
    assert {len(s["objects"]) for s in scenes} == {2}
    assert json.loads((project / "data/shards/index.json").read_text())["two"]["images"] == 12
    sidecar = json.loads((project / "models/film.json").read_text())
    # train_model's 2 epochs on train, then 2 on two, then 1 on train again
    assert [row["split"] for row in sidecar["history"]] == ["train"] * 2 + ["two"] * 2 + ["train"]
    for phase in ("0-train", "1-two", "2-train"):
        assert (project / "models/curriculum" / phase / "last.pt").is_file(), phase
        assert (project / "results/train" / phase).is_dir(), phase
    metrics = metrics_without_commit(project)
    assert metrics["context"]["profile"] == "tiny-curriculum"
    return metrics


def test_curriculum_under_both_engines(tmp_path):
    snake = curriculum_project(tmp_path / "snakemake")
    snakemake(snake)
    metrics = check_curriculum(snake)
    dvc_side = curriculum_project(tmp_path / "dvc")
    dvc_repro_in_a_new_repo(dvc_side)
    assert check_curriculum(dvc_side) == metrics  # the same phases, the same numbers


# --- Training under torchrun, through an engine --------------------------------------------------
def test_snakemake_trains_under_torchrun_on_two_cpu_processes(tmp_path):
    """train_model.nproc_per_node: 2 makes the train_model job start itself under torchrun: two
    CPU processes in a gloo process group; the run then goes on through evaluation."""
    project = make_project(tmp_path / "torchrun")
    set_param(project, "train_model", "nproc_per_node", 2)
    snakemake(project, "results/metrics.json")  # evaluate_model's output

    sidecar = json.loads((project / "models/film.json").read_text())
    assert sidecar["world_size"] == 2  # the size of the process group training ran in
    # 96 training questions in batches of 16 on each of 2 ranks: 3 steps an epoch (6 on one
    # process), so both ranks took their share of every step.
    assert [row["step"] for row in sidecar["history"]] == [3, 6]
    metrics = metrics_without_commit(project)
    assert metrics["context"]["train_questions"] == 96 and metrics["context"]["questions"] == 32
    assert 0 <= metrics["overall"] <= 100
