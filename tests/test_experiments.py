"""The paper's experiments (Tables 2 and 3): the list, the runs' configurations, the table's
aggregation, and agreement of the two engines on the jobs of a sweep."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from filmclevr import experiments
from filmclevr.model import ABLATIONS, FiLMConfig, FiLMedNet, count_parameters
from filmclevr.params import load_params, write_profile

ROOT = Path(__file__).resolve().parents[1]
SWEEP_CPU = ROOT / "config/sweep-cpu.yaml"


def test_unknown_experiments_are_refused_naming_the_presets() -> None:
    assert experiments.check_names(["beta0", "resblocks_12"]) == ["beta0", "resblocks_12"]
    with pytest.raises(ValueError, match=r"unknown experiments gamma2 .*raw_pixels, beta0"):
        experiments.check_names(["beta0", "gamma2"])


def test_paper_values_come_from_the_papers_tables() -> None:
    assert experiments.paper_base() == 97.4
    assert experiments.paper_value("beta0") == 96.9  # Table 2
    assert experiments.paper_value("resblocks_6") == 97.7  # Table 3
    assert experiments.paper_value("no_film_blocks1_4") == 21.4
    assert all(experiments.paper_value(name) is not None for name in ABLATIONS)


def test_a_run_is_the_profile_with_the_experiments_change_and_its_seed() -> None:
    params = load_params(SWEEP_CPU)
    model, train = experiments.run_configs(params, "gamma_tanh", seed=3)
    assert model["gamma_option"] == "tanh" and model["image_size"] == 64
    assert model["stem_channels"] == params["model"]["stem_channels"]
    assert train["seed"] == 3 and train["max_epochs"] == 3


def test_every_swept_experiment_validates_and_builds_a_model() -> None:
    """The sweep profiles name every preset; each builds (and 1x1 convolutions cost fewer
    parameters, more blocks more)."""
    for profile in ("sweep-cpu", "sweep-paper"):
        assert load_params(ROOT / f"config/{profile}.yaml")["experiments"]["names"] == list(
            ABLATIONS
        )
    params = load_params(SWEEP_CPU)
    counts = {}
    for name in ABLATIONS:
        model, _ = experiments.run_configs(params, name, seed=0)
        if name == "film_before_conv1":  # FiLM on the stem output needs stem == module width
            with pytest.raises(ValueError, match="stem_channels .32. must equal module_channels"):
                FiLMConfig.from_dict(model)
            continue  # the sweep reports this run as failed, with that reason
        counts[name] = count_parameters(FiLMedNet(FiLMConfig.from_dict(model), 93, 32))["total"]
    assert counts["1x1_no_coords"] < counts["raw_pixels"] < counts["resblocks_12"]
    assert counts["resblocks_4"] == counts["raw_pixels"]  # the profile has 4 ResBlocks


def result(name: str, seed: int, overall: float | None, status: str = "ok") -> dict:
    if status != "ok":
        return {"name": name, "seed": seed, "status": "failed", "reason": "boom"}
    columns = {c: overall for c in experiments.COLUMNS}
    context = {"dataset": "mini-CLEVR", "split": "val", "profile": "t", "train_questions": 100}
    return {"name": name, "seed": seed, "status": "ok", "accuracy": columns, "epochs": 2,
            "parameters": 1000, "context": context}  # fmt: skip


def test_the_table_aggregates_seeds_and_reports_failures() -> None:
    results = [
        result("raw_pixels", 0, 50.0), result("raw_pixels", 1, 54.0),
        result("beta0", 0, 47.0), result("beta0", 1, 49.0),
        result("gamma1", 0, 60.0), result("gamma1", 1, None, status="failed"),
        result("no_residual", 0, None, "failed"),
    ]  # fmt: skip
    rows = {r["experiment"]: r for r in experiments.summarize(results, list(dict.fromkeys(
        r["name"] for r in results)))}  # fmt: skip
    base = rows["raw_pixels"]
    assert base["overall_mean"] == 52.0 and base["overall_std"] == pytest.approx(2.8284, 1e-4)
    assert base["delta"] == 0.0 and base["status"] == "ok" and base["seeds"] == 2
    assert rows["beta0"]["delta"] == pytest.approx(-4.0)
    assert rows["beta0"]["paper_delta"] == pytest.approx(96.9 - 97.4)
    assert rows["gamma1"]["seeds"] == 1 and rows["gamma1"]["overall_std"] is None
    assert rows["gamma1"]["status"] == "failed: seed 1: boom"
    assert rows["no_residual"]["overall_mean"] is None and rows["no_residual"]["delta"] is None
    table = experiments.markdown(list(rows.values()))
    assert "| beta0 | FiLM with beta := 0 | 48.00 ± 1.41 | -4.00 | 96.9 | -0.50 | 2/2 |" in table
    assert "mini-CLEVR / val (profile t)" in table and "not a CLEVR number" in table


def test_a_missing_run_is_a_failed_row(tmp_path: Path) -> None:
    results = experiments.read_results(tmp_path, ["beta0"], [0])
    assert results[0]["status"] == "failed" and "result.json: missing" in results[0]["reason"]


def test_both_engines_expand_the_sweep_into_the_same_jobs(tmp_path: Path) -> None:
    """Snakemake's jobs for `experiments` and DVC's matrix stages, for the CPU sweep profile."""
    from dvc.repo import Repo
    from snakemake.api import SnakemakeApi

    from tests.test_workflow import snakemake_workflow

    params = load_params(SWEEP_CPU)
    expected = {
        (n, s) for n in params["experiments"]["names"] for s in params["experiments"]["seeds"]
    }
    with SnakemakeApi() as api:
        workflow = snakemake_workflow(api, SWEEP_CPU)
        collect = next(r for r in workflow.rules if r.name == "collect_experiments")
        found = [re.search(r"experiments/runs/(.+)/seed(\d+)$", str(f)) for f in collect.input]
    assert {(m.group(1), int(m.group(2))) for m in found if m} == expected
    project = tmp_path / "dvc"  # DVC reads params.yaml: the sweep profile in its place
    project.mkdir()
    shutil.copy2(ROOT / "dvc.yaml", project / "dvc.yaml")
    write_profile(SWEEP_CPU, project / "params.yaml")  # resolved: complete, as DVC reads it
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=project, check=True)
    names = {stage.name for stage in Repo(str(project)).index.stages}
    matrix = {tuple(n.removeprefix("run_experiment@").rsplit("-", 1)) for n in names
              if n.startswith("run_experiment@")}  # fmt: skip
    assert {(n, int(s)) for n, s in matrix} == expected
    assert "collect_experiments" in names


def test_a_diverged_run_is_recorded_as_failed_and_the_sweep_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN loss in one run: result.json says failed, with the reason; nothing is raised."""
    import filmclevr.train

    def diverge(*args, **kwargs):
        raise FloatingPointError("training diverged: the loss is nan at step 3")

    monkeypatch.setattr(filmclevr.train, "train", diverge)
    params = load_params(SWEEP_CPU)
    out = tmp_path / "runs/beta0/seed0"
    result = experiments.run_experiment(
        params, "beta0", 0, shards_dir=tmp_path, tokens_dir=tmp_path, out_dir=out,
        last_checkpoint=tmp_path / "last.pt",
    )  # fmt: skip
    assert result["status"] == "failed" and "loss is nan" in result["reason"]
    written = experiments.read_results(tmp_path / "runs", ["beta0"], [0])[0]
    assert written == result
    row = experiments.summarize([written], ["beta0"])[0]
    assert row["status"].startswith("failed: seed 0: training diverged")


def test_damaged_shards_fail_the_run_instead_of_being_recorded_as_its_result(
    tmp_path: Path,
) -> None:
    """A data fault is no property of the experiment: recorded as the run's "failed" result, it
    left the stage done (exit 0) and the table row standing after the data was repaired."""
    import tarfile

    from tests.helpers import TINY_IMAGE_SIZE, TINY_MODEL_PARAMS, write_random_question_data

    data = write_random_question_data(tmp_path, {"train": 12, "val": 6}, ["a", "red", "cube"])
    shard = data["shards"] / "train" / "train-000000.tar"
    with tarfile.open(shard) as tar:
        third_image = tar.getmembers()[4].offset
    shard.write_bytes(shard.read_bytes()[:third_image])  # a copy that stopped part-way
    params = load_params(SWEEP_CPU)
    params["model"] = dict(TINY_MODEL_PARAMS)
    params["resize_images"]["image_size"] = TINY_IMAGE_SIZE
    params["train_model"] = {"batch_size": 8, "num_threads": 1, "device": "cpu"}
    params["get_data"]["splits"] = ["train", "val"]
    out = tmp_path / "runs/beta0/seed0"
    with pytest.raises(ValueError, match=r"train-000000\.tar: holds 2 images"):
        experiments.run_experiment(
            params, "beta0", 0, shards_dir=data["shards"], tokens_dir=tmp_path / "tokens",
            out_dir=out, last_checkpoint=tmp_path / "last.pt",
        )  # fmt: skip
    assert not (out / "result.json").exists()


def test_a_result_in_another_run_s_folder_is_refused(tmp_path: Path) -> None:
    """A copied folder (beta0's seed 0 as seed 1) counted one run twice in the mean and std."""
    folder = tmp_path / "beta0/seed1"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text('{"name": "beta0", "seed": 0, "status": "ok"}')
    with pytest.raises(ValueError, match=r"seed1/result\.json: the result of 'beta0' seed 0, not"):
        experiments.read_results(tmp_path, ["beta0"], [1])
