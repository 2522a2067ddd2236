"""A curriculum (filmclevr/curriculum.py) on a tiny model and tiny shards, on the CPU: phases in
turn, each from the previous one's last weights, one history, exact resume across phases. The
runs are built as the train_model stage builds them (filmclevr/runs.py)."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import torch

from filmclevr.checkpoint import load_checkpoint
from filmclevr.curriculum import phases
from filmclevr.runs import plan_run, train_run
from tests.helpers import TINY_IMAGE_SIZE, TINY_MODEL_PARAMS, write_random_question_data

# 24 train images x 4 questions: 12 steps of 8; the phase split "two": 16 x 4, 8 steps.
IMAGES = {"train": 24, "val": 8, "two": 16}
WORDS = ["Is", "there", "a", "red", "cube", "same", "color", "as", "the"]
TRAIN = {"batch_size": 8, "shuffle_buffer": 16, "num_threads": 1, "device": "cpu", "max_epochs": 1}
PARAMS = {
    "get_data": {"splits": ["train", "val", "two"]},
    "resize_images": {"image_size": TINY_IMAGE_SIZE},
    "model": TINY_MODEL_PARAMS,
    "train_model": {**TRAIN, "learning_rate": 1e-2},
    "curriculum": [
        # so small a step that the weights stay where the phase before left them
        {"split": "two", "train_model": {"learning_rate": 1e-12}},
        {"split": "train", "train_model": {"max_epochs": 2}},
    ],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_random_question_data(tmp_path_factory.mktemp("data"), IMAGES, WORDS)


def run(data: dict[str, Path], out: Path, params: dict = PARAMS) -> list[dict]:
    """The train_model stage's run: the phases' runs in out/curriculum/, beside out/last.pt."""
    return train_run(
        plan_run(params),
        shards_dir=data["shards"],
        vocab_path=data["vocab"],
        best_checkpoint=out / "film.pt",
        last_checkpoint=out / "last.pt",
        log_dir=out / "train",
        curves_png=out / "curves.png",
        progress=False,
    )


@pytest.fixture(scope="module")
def whole(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("whole")
    run(data, out)
    return out


def test_phases_are_the_main_training_then_each_phase_over_it() -> None:
    plan = phases(PARAMS)
    assert [p.split for p in plan] == ["train", "two", "train"]
    assert [p.config.learning_rate for p in plan] == [1e-2, 1e-12, 1e-2]
    assert [p.config.max_epochs for p in plan] == [1, 1, 2]
    assert [p.name(k) for k, p in enumerate(plan)] == ["0-train", "1-two", "2-train"]
    assert len(phases({**PARAMS, "curriculum": []})) == 1


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ({"split": "val"}, r"curriculum\[0\].split: 'val' is not a training split"),
        ({"split": "three"}, r"curriculum\[0\].split: 'three'"),
        ({"split": "two", "train_model": {"learning_rat": 1}}, r"curriculum\[0\].train_model"),
    ],
)
def test_a_bad_phase_is_refused_before_any_training(phase: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        phases({**PARAMS, "curriculum": [phase]})


def test_each_phase_starts_from_the_last_weights_of_the_one_before(whole: Path) -> None:
    runs = whole / "curriculum"
    assert sorted(p.name for p in runs.iterdir()) == ["0-train", "1-two", "2-train"]
    first, second = (
        load_checkpoint(runs / "0-train/last.pt"),
        load_checkpoint(runs / "1-two/last.pt"),
    )
    assert second["train_config"]["init_checkpoint"] == str(runs / "0-train/last.pt")
    for key, value in first["model"].items():  # learning rate 1e-12: no weight moved
        if "running_" not in key and "num_batches" not in key:  # BatchNorm statistics do
            assert torch.allclose(second["model"][key], value, atol=1e-6), key
    third = load_checkpoint(runs / "2-train/last.pt")
    assert third["train_config"]["init_checkpoint"] == str(runs / "1-two/last.pt")
    assert any(not torch.equal(third["model"][k], v) for k, v in first["model"].items())


def test_the_result_is_the_last_phase_best_with_every_phase_in_its_history(whole: Path) -> None:
    best, last_phase = (
        load_checkpoint(whole / "film.pt"),
        load_checkpoint(whole / "curriculum/2-train/film.pt"),
    )
    for key, value in last_phase["model"].items():
        assert torch.equal(best["model"][key], value), key
    history = best["history"]
    assert [(r["epoch"], r["phase"], r["split"]) for r in history] == [
        (1, 0, "train"), (2, 1, "two"), (3, 2, "train"), (4, 2, "train")
    ]  # fmt: skip
    # 96 questions an epoch of train (12 steps of 8), 64 of two (8 steps)
    assert [r["questions_seen"] for r in history] == [96, 160, 256, 352]
    sidecar = json.loads((whole / "film.json").read_text())
    assert sidecar["history"] == history
    assert [p["init_checkpoint"] for p in sidecar["curriculum"]] == [
        None, str(whole / "curriculum/0-train/last.pt"), str(whole / "curriculum/1-two/last.pt")
    ]  # fmt: skip
    assert (whole / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (whole / "train").iterdir()) == ["0-train", "1-two", "2-train"]


def test_a_killed_curriculum_resumes_where_it_was(
    data: dict[str, Path], whole: Path, tmp_path: Path
) -> None:
    """Killed during the last phase: the finished phases are not trained again, and the result
    is the uninterrupted run's."""
    out = tmp_path / "resumed"
    shutil.copytree(whole / "curriculum", out / "curriculum")
    shutil.rmtree(out / "curriculum/2-train")
    short = copy.deepcopy(PARAMS)  # the last phase as far as its first epoch only
    short["curriculum"][1]["train_model"]["max_epochs"] = 1
    done = {p.name: (p / "last.pt").stat().st_mtime_ns for p in (out / "curriculum").iterdir()}
    run(data, tmp_path / "partial", short)
    # killed after the last phase's first epoch: its resume point is there, its result not
    shutil.copytree(tmp_path / "partial/curriculum/2-train", out / "curriculum/2-train")
    summaries = run(data, out)
    assert [s["epochs"] for s in summaries] == [1, 1, 2]
    for name, mtime in done.items():  # a finished phase's resume point is left as it was
        assert (out / "curriculum" / name / "last.pt").stat().st_mtime_ns == mtime, name
    a, b = load_checkpoint(whole / "film.pt"), load_checkpoint(out / "film.pt")
    for key, value in a["model"].items():
        assert torch.equal(b["model"][key], value), key
    # its first epoch was not trained again: the speed it logged then is still there
    partial = load_checkpoint(tmp_path / "partial/film.pt")["history"]
    assert b["history"][2]["samples_per_s"] == partial[2]["samples_per_s"]
    strip = lambda h: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in h]  # noqa: E731
    assert strip(b["history"]) == strip(a["history"])


def test_a_phase_is_trained_again_when_the_one_before_it_trained_further(
    data: dict[str, Path], whole: Path, tmp_path: Path
) -> None:
    """Phase 0 given a second epoch (the constant schedule resumes it): phase 1 must start over
    from its new last weights, not resume from the weights it had before."""
    out = tmp_path / "grown"
    shutil.copytree(whole / "curriculum", out / "curriculum")
    grown = copy.deepcopy(PARAMS)
    grown["train_model"]["max_epochs"] = 2
    grown["curriculum"][0]["train_model"]["max_epochs"] = 1  # the phases as they were
    run(data, out, grown)
    history = load_checkpoint(out / "film.pt")["history"]
    assert [r["split"] for r in history] == ["train", "train", "two", "train", "train"]
    first = load_checkpoint(out / "curriculum/0-train/last.pt")["model"]
    second = load_checkpoint(out / "curriculum/1-two/last.pt")["model"]
    old_second = load_checkpoint(whole / "curriculum/1-two/last.pt")["model"]
    weights = [k for k in first if "running_" not in k and "num_batches" not in k]
    assert all(torch.allclose(second[k], first[k], atol=1e-6) for k in weights)
    assert not all(torch.allclose(second[k], old_second[k], atol=1e-6) for k in weights)


def test_a_phase_its_split_cannot_feed_stops_the_run_before_phase_0(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """It stopped after the main training (hours on CLEVR), naming neither phase nor key."""
    params = copy.deepcopy(PARAMS)
    params["curriculum"][0]["train_model"]["batch_size"] = 65  # "two" holds 64 questions
    message = (
        r"index\.json: split 'two' \(curriculum phase 1\) holds 64 questions, fewer than one "
        r"global batch of 65 x 1 process\(es\): lower curriculum\[0\]\.train_model\.batch_size"
    )
    with pytest.raises(ValueError, match=message):
        run(data, tmp_path, params)
    assert not (tmp_path / "curriculum").exists() and not (tmp_path / "train").exists()
