"""The training loop on a tiny model and tiny shards, on the CPU: determinism, resumption (at an
epoch boundary and mid-epoch), divergence, checkpoints, DVCLive output, and DDP over gloo."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from filmclevr import clevr, distributed, shards
from filmclevr import train as train_mod
from filmclevr.checkpoint import load_checkpoint, model_from_checkpoint
from filmclevr.model import build_model
from filmclevr.train import TrainConfig, evaluate_accuracy
from tests.helpers import (
    tiny_film_config,
    tiny_train_config,
    train_into,
    write_random_question_data,
)

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = tiny_film_config(image_size=32)
# 24 train images x 4 questions = 96 questions: 12 steps of 8 per epoch on one process.
TINY_TRAIN = tiny_train_config(max_epochs=2, patience=5)
IMAGES = {"train": 24, "val": 8}
QUESTIONS_PER_IMAGE = 4
WORDS = ["Is", "there", "a", "red", "cube", "How", "many", "spheres", "are"]
TIMING = ("samples_per_s",)  # the only history fields that differ between identical runs


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny shards (6 images each, 4 train and 2 val) written by the real shard writer."""
    return write_random_question_data(
        tmp_path_factory.mktemp("data"), IMAGES, WORDS, QUESTIONS_PER_IMAGE
    )


def run(
    data: dict[str, Path], out: Path, config: TrainConfig = TINY_TRAIN, progress: bool = False
) -> dict[str, object]:
    return train_into(
        out,
        TINY_MODEL,
        config,
        data["shards"],
        data["vocab"],
        curves_png=out / "curves.png",
        progress=progress,
    )


def without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def assert_same_run(a: Path, b: Path) -> None:
    """Same final weights, optimizer state, history and best checkpoint."""
    last_a, last_b = load_checkpoint(a / "last.pt"), load_checkpoint(b / "last.pt")
    assert last_a["step"] == last_b["step"]
    assert without_timing(last_a["history"]) == without_timing(last_b["history"])
    for key, value in last_a["model"].items():
        assert torch.equal(value, last_b["model"][key]), key
    state_a, state_b = last_a["optimizer"]["state"], last_b["optimizer"]["state"]
    for p in state_a:
        assert torch.equal(state_a[p]["exp_avg_sq"], state_b[p]["exp_avg_sq"]), p
    best_a, best_b = load_checkpoint(a / "film.pt"), load_checkpoint(b / "film.pt")
    assert best_a["epoch"] == best_b["epoch"]
    for key, value in best_a["model"].items():
        assert torch.equal(value, best_b["model"][key]), key


@pytest.fixture(scope="module")
def reference(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run, shared by the comparisons."""
    out = tmp_path_factory.mktemp("reference")
    summary = run(data, out)
    (out / "summary.json").write_text(json.dumps(summary))
    return out


# --- TrainConfig --------------------------------------------------------------------------------
def test_train_config_defaults_are_the_paper_recipe() -> None:
    c = TrainConfig()
    assert (c.batch_size, c.learning_rate, c.weight_decay, c.max_epochs) == (64, 3e-4, 1e-5, 80)
    assert c.patience is None  # SPEC §4: all 80 epochs, keep the best; no early stopping
    # Not the official code's order (a fresh permutation of every question each epoch): every
    # result so far trained on the shard order; the paper profile sets "official".
    assert c.data_order == "shards"
    assert (c.seed, c.device, c.bf16, c.compile, c.checkpoint_every_steps) == (
        0,
        "auto",
        False,
        False,
        0,
    )


def test_train_config_from_dict_rejects_unknown_and_bad_values() -> None:
    assert TrainConfig.from_dict({"max_epochs": 3}).max_epochs == 3
    assert TrainConfig.from_dict({"learning_rate": "3e-4"}).learning_rate == 3e-4  # YAML 1.1
    with pytest.raises(ValueError, match="epochz, lr"):
        TrainConfig.from_dict({"epochz": 3, "lr": 1.0})
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig.from_dict({"batch_size": 0})
    with pytest.raises(ValueError, match="bf16"):
        TrainConfig.from_dict({"bf16": 1})
    with pytest.raises(ValueError, match="data_order must be one of shards, official, got 'iep'"):
        TrainConfig.from_dict({"data_order": "iep"})
    assert TrainConfig.from_dict({"patience": None}).patience is None  # YAML null: disabled
    assert TrainConfig.from_dict({"patience": 3}).patience == 3
    for bad in (0, 2.5, "3"):
        with pytest.raises(ValueError, match="patience"):
            TrainConfig.from_dict({"patience": bad})
    with pytest.raises(ValueError, match="device"):
        TrainConfig.from_dict({"device": None})  # only Optional fields take null
    # Split names are data layout, passed to train(), not part of the recipe.
    with pytest.raises(ValueError, match="unknown TrainConfig keys: val_split"):
        TrainConfig.from_dict({"val_split": "val"})


# --- Devices ------------------------------------------------------------------------------------
@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> list[torch.device]:
    """Two fake CUDA devices; returns the devices `torch.cuda.set_device` was called with.

    The fake `set_device` rejects a device without an index, as the real one does.
    """
    from torch._utils import _get_device_index

    chosen: list[torch.device] = []

    def set_device(device: torch.device) -> None:
        _get_device_index(device, optional=False)  # raises for torch.device("cuda")
        chosen.append(device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", set_device)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    return chosen


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_one_process_on_a_gpu_gets_an_indexed_device(
    fake_cuda: list[torch.device], name: str
) -> None:
    ctx, device = distributed.init_distributed(name)
    assert device == torch.device("cuda", 0) and fake_cuda == [device]
    assert (ctx.rank, ctx.world_size, ctx.created) == (0, 1, False)


def test_explicit_gpu_index_is_kept_and_checked(fake_cuda: list[torch.device]) -> None:
    assert distributed.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        distributed.resolve_device("cuda:2")


def test_each_ddp_process_gets_its_local_rank_gpu(
    fake_cuda: list[torch.device], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    backends: list[str] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda backend: backends.append(backend)
    )
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    for name in ("auto", "cuda", "cuda:0"):  # one GPU per process, whatever the index asked
        fake_cuda.clear()
        ctx, device = distributed.init_distributed(name)
        assert device == torch.device("cuda", 1) and fake_cuda == [device]
        assert (ctx.rank, ctx.world_size, ctx.created) == (1, 2, True)
    assert backends == ["nccl"] * 3


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert distributed.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="CUDA is not available"):
        distributed.resolve_device("cuda")


# --- One run ------------------------------------------------------------------------------------
def test_run_writes_checkpoints_sidecar_logs_and_curves(
    reference: Path, data: dict[str, Path]
) -> None:
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["epochs"] == 2 and summary["steps"] == 2 * 96 // 8
    last = load_checkpoint(reference / "last.pt")
    assert [row["epoch"] for row in last["history"]] == [1, 2]
    assert [row["step"] for row in last["history"]] == [12, 24]
    assert summary["best_val_accuracy"] == max(r["val_accuracy"] for r in last["history"])

    # The best checkpoint rebuilds the model alone, and scores what the history says.
    model, best = model_from_checkpoint(reference / "film.pt", "cpu")
    assert "optimizer" not in best and best["vocab"]["answer_token_to_idx"]["yes"] == 4
    assert best["step"] == 12 * best["epoch"] and best["history"] == last["history"]
    val = shards.question_loader(
        shards.shard_paths(data["shards"], "val"), batch_size=8, shuffle=False
    )
    assert evaluate_accuracy(model, val, "cpu") == summary["best_val_accuracy"]
    # ...and per paper column: each question's type, scored here one question at a time.
    right: dict[str, list[bool]] = {}
    with torch.no_grad():
        for batch in val:
            predicted = model(batch.images, batch.questions, batch.lengths).argmax(dim=1)
            correct = (predicted == batch.answers).tolist()
            for kind, ok in zip(batch.types.tolist(), correct, strict=True):
                right.setdefault(list(clevr.QUESTION_TYPES)[kind], []).append(ok)
    best_row = last["history"][best["epoch"] - 1]
    assert best_row["val_columns"] == pytest.approx({k: np.mean(v) for k, v in right.items()})
    sidecar = json.loads((reference / "film.json").read_text())
    assert sidecar["epoch"] == summary["best_epoch"]
    assert sidecar["val_accuracy"] == summary["best_val_accuracy"]
    assert sidecar["parameters"]["total"] == sum(p.numel() for p in model.parameters())

    # DVCLive: one row per epoch, no dvc.yaml written, and the curves figure.
    rows = (reference / "train" / "plots" / "metrics" / "val" / "accuracy.tsv").read_text()
    assert len(rows.splitlines()) == 1 + 2
    logged = reference / "train" / "plots" / "metrics" / "val" / "columns"
    assert {f.stem for f in logged.glob("*.tsv")} == set(best_row["val_columns"])
    metrics = json.loads((reference / "train" / "metrics.json").read_text())
    assert metrics["step"] == 2 and metrics["best_val_accuracy"] == summary["best_val_accuracy"]
    assert not list(reference.rglob("dvc.yaml"))
    assert (reference / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_two_runs_are_identical(reference: Path, data: dict[str, Path], tmp_path: Path) -> None:
    run(data, tmp_path)
    assert_same_run(reference, tmp_path)


# --- Resumption ---------------------------------------------------------------------------------
class Killed(Exception):
    """Stands in for the process being killed right after a checkpoint was written."""


def kill_after_saves(monkeypatch: pytest.MonkeyPatch, path_name: str, saves: int) -> None:
    real_save, count = train_mod.save_checkpoint, {"n": 0}

    def save(path: Path, checkpoint: dict) -> None:
        real_save(path, checkpoint)
        if path.name == path_name:
            count["n"] += 1
            if count["n"] == saves:
                raise Killed

    monkeypatch.setattr(train_mod, "save_checkpoint", save)


def test_resume_after_epoch_gives_the_same_run(
    reference: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:
        kill_after_saves(m, "last.pt", 1)
        with pytest.raises(Killed):
            run(data, tmp_path)
    assert load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    summary = run(data, tmp_path)
    assert summary["epochs"] == 2
    assert_same_run(reference, tmp_path)
    # DVCLive's files hold each epoch once, as in the uninterrupted run.
    tsv = Path("train/plots/metrics/train/loss.tsv")
    assert (tmp_path / tsv).read_text() == (reference / tsv).read_text()


def test_keep_epoch_checkpoints_keeps_each_epochs_resume_point(
    reference: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    config = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "keep_epoch_checkpoints": True})
    run(data, tmp_path, config)
    assert_same_run(reference, tmp_path)  # keeping them changes nothing of the run
    assert not list(reference.glob("epoch-*.pt"))  # and off by default
    last = load_checkpoint(tmp_path / "last.pt")
    epochs = last["epoch"]
    assert epochs > 1
    kept = sorted(p.name for p in tmp_path.glob("epoch-*.pt"))
    assert kept == sorted(f"epoch-{n}.pt" for n in range(1, epochs + 1))
    for n in range(1, epochs + 1):
        checkpoint = load_checkpoint(train_mod.epoch_checkpoint(tmp_path / "last.pt", n))
        assert (checkpoint["epoch"], checkpoint["epoch_step"]) == (n, 0)
        assert checkpoint["history"] == last["history"][:n]
        assert checkpoint["step"] == last["history"][n - 1]["step"]
    final = load_checkpoint(tmp_path / f"epoch-{epochs}.pt")
    for key, value in last["model"].items():
        assert torch.equal(value, final["model"][key]), key


def test_a_fresh_start_removes_the_earlier_runs_epoch_checkpoints(
    data: dict[str, Path], tmp_path: Path
) -> None:
    kept = {**TINY_TRAIN.asdict(), "keep_epoch_checkpoints": True}
    run(data, tmp_path, TrainConfig.from_dict(kept))
    assert (tmp_path / "epoch-2.pt").is_file()
    (tmp_path / "epoch-notes.pt").write_text("not a checkpoint of the trainer's")
    # Another seed is another run: it starts fresh, for one epoch.
    run(data, tmp_path, TrainConfig.from_dict({**kept, "seed": 7, "max_epochs": 1}))
    assert sorted(p.name for p in tmp_path.glob("epoch-*.pt")) == ["epoch-1.pt", "epoch-notes.pt"]
    fresh = load_checkpoint(tmp_path / "last.pt")
    assert load_checkpoint(tmp_path / "epoch-1.pt")["fingerprint"] == fresh["fingerprint"]


def test_resume_mid_epoch_gives_the_same_run(
    reference: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Saves at steps 5 and 10 (mid-epoch 1), 12 (end of epoch 1), 15, ...: killed after step 15.
    config = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "checkpoint_every_steps": 5})
    with monkeypatch.context() as m:
        kill_after_saves(m, "last.pt", 4)
        with pytest.raises(Killed):
            run(data, tmp_path, config)
    killed = load_checkpoint(tmp_path / "last.pt")
    assert (killed["epoch"], killed["step"], killed["epoch_step"]) == (1, 15, 3)
    run(data, tmp_path, config)  # checkpoint_every_steps does not change the trajectory
    assert_same_run(reference, tmp_path)


def test_resume_mid_epoch_with_loader_workers_and_dropout_gives_the_same_run(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DataLoader with workers draws its base seed from torch's generator as it starts: on a
    resume that draw must not move the dropout masks of the steps after it."""
    model = tiny_film_config(image_size=32, dropout=0.3)
    config = TrainConfig.from_dict(
        {**TINY_TRAIN.asdict(), "max_epochs": 1, "num_workers": 1, "checkpoint_every_steps": 5}
    )

    def train(out: Path) -> None:
        train_into(out, model, config, data["shards"], data["vocab"], progress=False)

    train(tmp_path / "whole")
    with monkeypatch.context() as m:
        kill_after_saves(m, "last.pt", 1)
        with pytest.raises(Killed):
            train(tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["epoch_step"] == 5
    train(tmp_path / "resumed")
    assert_same_run(tmp_path / "whole", tmp_path / "resumed")


def test_learning_rate_schedules() -> None:
    paper = TrainConfig(learning_rate=3e-4)
    assert {train_mod.learning_rate_at(paper, s, 10) for s in range(100)} == {3e-4}
    cosine = TrainConfig(learning_rate=2e-3, lr_schedule="cosine", warmup_epochs=1, max_epochs=3)
    lrs = [train_mod.learning_rate_at(cosine, s, 10) for s in range(30)]
    assert lrs[:10] == pytest.approx([2e-3 * (s + 1) / 10 for s in range(10)])  # linear warmup
    assert lrs[10] == pytest.approx(2e-3)  # the peak, then down to 0 at the last step
    assert all(a > b for a, b in zip(lrs[10:-1], lrs[11:], strict=True))
    assert lrs[20] == pytest.approx(1e-3)  # half way through the decay, half the peak
    assert train_mod.learning_rate_at(cosine, 30, 10) == 0.0
    warm_constant = TrainConfig(learning_rate=1e-3, warmup_epochs=0.5)
    assert train_mod.learning_rate_at(warm_constant, 1, 10) == pytest.approx(4e-4)
    assert train_mod.learning_rate_at(warm_constant, 50, 10) == 1e-3
    linear = TrainConfig(learning_rate=2e-3, lr_schedule="linear", warmup_epochs=1, max_epochs=3)
    lrs = [train_mod.learning_rate_at(linear, s, 10) for s in range(31)]
    assert lrs[:10] == pytest.approx([2e-3 * (s + 1) / 10 for s in range(10)])  # same warmup
    assert lrs[10:] == pytest.approx([2e-3 * (1 - s / 20) for s in range(21)])  # a straight line
    assert lrs[15] < [train_mod.learning_rate_at(cosine, s, 10) for s in range(30)][15]
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine, linear"):
        TrainConfig(lr_schedule="step")
    with pytest.raises(ValueError, match="warmup_epochs must be >= 0"):
        TrainConfig(warmup_epochs=-1)


def test_scheduled_run_follows_the_schedule_and_resumes_exactly(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = TrainConfig.from_dict(
        {
            **TINY_TRAIN.asdict(),
            "lr_schedule": "cosine",
            "warmup_epochs": 0.5,
            "learning_rate": 1e-3,
            "checkpoint_every_steps": 5,
        }
    )
    run(data, tmp_path / "whole", config)
    history = load_checkpoint(tmp_path / "whole" / "last.pt")["history"]
    # The lr of each epoch's last step (12 steps per epoch): 6 of warmup, then cosine to 0.
    assert [row["lr"] for row in history] == pytest.approx(
        [train_mod.learning_rate_at(config, 11, 12), train_mod.learning_rate_at(config, 23, 12)]
    )
    assert history[-1]["lr"] < history[0]["lr"] < 1e-3
    with monkeypatch.context() as m:
        kill_after_saves(m, "last.pt", 2)  # killed at step 10, inside the cosine decay
        with pytest.raises(Killed):
            run(data, tmp_path / "resumed", config)
    run(data, tmp_path / "resumed", config)
    assert_same_run(tmp_path / "whole", tmp_path / "resumed")
    # The decay spans max_epochs, so a cosine run of other length is another trajectory.
    longer = TrainConfig.from_dict({**config.asdict(), "max_epochs": 3})
    assert train_mod.learning_rate_at(longer, 23, 12) != train_mod.learning_rate_at(config, 23, 12)


def test_fine_tuning_starts_from_a_checkpoint_and_changes_only_what_it_trains(
    reference: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    start = load_checkpoint(reference / "film.pt")["model"]
    tune = {**TINY_TRAIN.asdict(), "max_epochs": 1}
    tune["init_checkpoint"] = str(reference / "film.pt")
    strict = {**tune, "trainable": "film_generator", "frozen_batchnorm": "eval"}
    train_into(
        tmp_path / "g",
        TINY_MODEL,
        TrainConfig.from_dict(strict),
        data["shards"],
        data["vocab"],
    )
    tuned = load_checkpoint(tmp_path / "g" / "last.pt")["model"]
    assert set(tuned) == set(start)
    for key, value in tuned.items():  # BatchNorm statistics of the visual pipeline included
        if key.startswith("filmed_net."):
            assert torch.equal(value, start[key]), key
    changed = [
        k for k in tuned if k.startswith("film_generator.") and not torch.equal(tuned[k], start[k])
    ]
    assert changed and all(k.startswith("film_generator.") for k in changed)
    assert len(changed) == sum(1 for k in tuned if k.startswith("film_generator."))
    # As the official code (the default): the frozen visual pipeline stays in train mode, so its
    # weights stay but its BatchNorm statistics drift toward the new data.
    drifting = {**tune, "trainable": "film_generator"}
    train_into(
        tmp_path / "d", TINY_MODEL, TrainConfig.from_dict(drifting), data["shards"], data["vocab"]
    )
    drifted = load_checkpoint(tmp_path / "d" / "last.pt")["model"]
    statistics = [k for k in drifted if k.startswith("filmed_net.") and "running_" in k]
    assert statistics and all(not torch.equal(drifted[k], start[k]) for k in statistics)
    weights = dict(model_from_checkpoint(reference / "film.pt", "cpu")[0].named_parameters())
    for key in weights:
        if key.startswith("filmed_net."):
            assert torch.equal(drifted[key], start[key]), key
    # All weights, at a learning rate too small to move them: the run starts from the checkpoint.
    still = TrainConfig.from_dict({**tune, "learning_rate": 1e-12})
    train_into(
        tmp_path / "a",
        TINY_MODEL,
        still,
        data["shards"],
        data["vocab"],
    )
    params = dict(model_from_checkpoint(reference / "film.pt", "cpu")[0].named_parameters())
    moved = load_checkpoint(tmp_path / "a" / "last.pt")["model"]
    for key in params:
        assert torch.allclose(moved[key], start[key], atol=1e-6), key
    missing = TrainConfig.from_dict({**tune, "init_checkpoint": str(tmp_path / "missing.pt")})
    with pytest.raises(FileNotFoundError, match="missing.pt: no such checkpoint to start from"):
        train_into(tmp_path / "m", TINY_MODEL, missing, data["shards"], data["vocab"])
    assert not (tmp_path / "m" / "last.pt").exists()
    other = dataclasses.replace(TINY_MODEL, module_channels=TINY_MODEL.module_channels * 2)
    with pytest.raises(ValueError, match="film.pt: its model configuration differs"):
        train_into(
            tmp_path / "b",
            other,
            still,
            data["shards"],
            data["vocab"],
        )


def test_a_fine_tuning_knows_its_start_by_the_starting_run_or_else_by_its_weights(
    reference: Path, data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Checkpoints converted from the official code used to carry no fingerprint: two of the
    same step looked alike, and a fine-tuning from one resumed the other's last.pt."""
    start = load_checkpoint(reference / "film.pt")
    unnamed = {k: v for k, v in start.items() if k != "fingerprint"}
    nudged = {**unnamed, "model": {k: v + 0.01 for k, v in start["model"].items()}}
    for name, checkpoint in (("a.pt", unnamed), ("b.pt", nudged)):
        torch.save(checkpoint, tmp_path / name)
    tune = {**TINY_TRAIN.asdict(), "max_epochs": 1, "init_checkpoint": str(tmp_path / "a.pt")}
    run(data, tmp_path / "run", TrainConfig.from_dict(tune))
    tune["init_checkpoint"] = str(tmp_path / "b.pt")
    with caplog.at_level("WARNING", logger="filmclevr.train"):
        summary = run(data, tmp_path / "run", TrainConfig.from_dict(tune))
    assert "another configuration or other data" in caplog.text  # a.pt's run is not b.pt's
    assert summary["steps"] == 12
    run(data, tmp_path / "clean", TrainConfig.from_dict(tune))
    assert_same_run(tmp_path / "clean", tmp_path / "run")
    # A checkpoint of this project is known by its run, as ever (runs in progress resume).
    assert train_mod._init_sample(start) == f"init:{start['fingerprint']}@{start['step']}"


def test_last_checkpoint_of_another_config_is_not_resumed(
    reference: Path,
    data: dict[str, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    (tmp_path / "last.pt").write_bytes((reference / "last.pt").read_bytes())
    other = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "learning_rate": 1e-3, "max_epochs": 1})
    with caplog.at_level("WARNING", logger="filmclevr.train"):
        summary = run(data, tmp_path, other)
    assert "another configuration" in caplog.text
    assert summary["steps"] == 12  # trained from scratch, not continued from step 24
    assert load_checkpoint(tmp_path / "last.pt")["train_config"]["learning_rate"] == 1e-3


def test_fewer_epochs_start_fresh_and_more_go_on(
    reference: Path, data: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At a constant learning rate max_epochs is outside the fingerprint: a finished run asked
    for more epochs goes on, but one asked for fewer starts again (its best epoch could lie
    past them)."""
    finished = (reference / "last.pt").read_bytes()
    (tmp_path / "fewer").mkdir()
    (tmp_path / "fewer" / "last.pt").write_bytes(finished)
    fewer = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "max_epochs": 1})
    with caplog.at_level("WARNING", logger="filmclevr.train"):
        summary = run(data, tmp_path / "fewer", fewer)
    assert "past this run's max_epochs 1" in caplog.text
    assert (summary["epochs"], summary["steps"]) == (1, 12)
    sidecar = json.loads((tmp_path / "fewer" / "film.json").read_text())
    assert [row["epoch"] for row in sidecar["history"]] == [1]
    assert sidecar["train_config"]["max_epochs"] == 1

    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "last.pt").write_bytes(finished)
    more = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "max_epochs": 3})
    summary = run(data, tmp_path / "more", more)
    assert (summary["epochs"], summary["steps"]) == (3, 36)
    history = load_checkpoint(tmp_path / "more" / "last.pt")["history"]
    # Timings included: the first two epochs are the reference's own rows, not trained again.
    assert history[:2] == load_checkpoint(reference / "last.pt")["history"]


def test_finished_run_restores_a_missing_best_checkpoint(
    reference: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    # A workflow engine may delete the best checkpoint (an output) but keep `last`.
    (tmp_path / "last.pt").write_bytes((reference / "last.pt").read_bytes())
    summary = run(data, tmp_path)
    assert summary["steps"] == 24  # nothing left to train
    best, expected = load_checkpoint(tmp_path / "film.pt"), load_checkpoint(reference / "film.pt")
    assert best["epoch"] == expected["epoch"]
    for key, value in expected["model"].items():
        assert torch.equal(best["model"][key], value), key


HALF_RIGHT = train_mod.Scores(16.0, 32.0, 20.0, (16.0, 0, 0, 0, 0), (32.0, 0, 0, 0, 0))


def test_early_stopping(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation accuracy frozen at 50%: no epoch after the first improves on it.
    monkeypatch.setattr(train_mod, "_validate", lambda *args: HALF_RIGHT)
    config = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "max_epochs": 5, "patience": 2})
    summary = run(data, tmp_path, config, progress=True)  # the progress bar's path too
    assert summary["stopped_early"] and summary["epochs"] == 3 and summary["best_epoch"] == 1
    assert summary["best_val_accuracy"] == 0.5


def test_no_early_stopping_by_default(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The paper's recipe runs every epoch and keeps the best, however flat validation is.
    monkeypatch.setattr(train_mod, "_validate", lambda *args: HALF_RIGHT)
    config = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "max_epochs": 3, "patience": None})
    summary = run(data, tmp_path, config)
    assert not summary["stopped_early"] and summary["epochs"] == 3 and summary["best_epoch"] == 1


def test_epoch_loader_is_closed_before_validation_and_on_errors(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_batches, real_validate = train_mod._train_batches, train_mod._validate

    def batches(*args: object):
        try:
            yield from real_batches(*args)
        finally:
            events.append("closed")

    def validate(*args: object):
        events.append("validate")
        return real_validate(*args)

    monkeypatch.setattr(train_mod, "_train_batches", batches)
    monkeypatch.setattr(train_mod, "_validate", validate)
    run(data, tmp_path)
    assert events == ["closed", "validate"] * TINY_TRAIN.max_epochs

    # A failing step: the loader is released at once, not when the traceback is freed.
    events.clear()
    real_step, calls = train_mod.train_step, {"n": 0}

    def failing_step(*args: object, **kwargs: object):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("step failed")
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_step", failing_step)
    with pytest.raises(RuntimeError, match="step failed") as failure:
        run(data, tmp_path / "failing")
    assert failure.traceback and events == ["closed"]


def test_split_names_are_arguments(data: dict[str, Path], tmp_path: Path) -> None:
    # Any two splits of the index: here trained on the 32 "val" questions, validated on "train".
    config = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "max_epochs": 1})
    summary = train_into(
        tmp_path,
        TINY_MODEL,
        config,
        data["shards"],
        data["vocab"],
        train_split="val",
        val_split="train",
    )
    assert summary["steps"] == 32 // 8
    sidecar = json.loads((tmp_path / "film.json").read_text())
    assert (sidecar["train_split"], sidecar["val_split"]) == ("val", "train")
    with pytest.raises(ValueError, match="no split 'trainA' \\(has train, val\\)"):
        train_into(
            tmp_path, TINY_MODEL, config, data["shards"], data["vocab"], train_split="trainA"
        )


@pytest.mark.parametrize(("switch", "rel"), [("channels_last", 1e-3), ("bf16", 2e-2)])
def test_speed_switches_keep_the_math(
    reference: Path, data: dict[str, Path], tmp_path: Path, switch: str, rel: float
) -> None:
    config = TrainConfig.from_dict({**TINY_TRAIN.asdict(), switch: True, "max_epochs": 1})
    run(data, tmp_path, config)
    got = load_checkpoint(tmp_path / "last.pt")["history"][0]
    expected = load_checkpoint(reference / "last.pt")["history"][0]
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=rel)
    assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=rel)


# --- Failures -----------------------------------------------------------------------------------
def test_non_finite_loss_stops_with_a_clear_error(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}

    def poisoned(*args: object) -> torch.nn.Module:
        model = build_model(*args)

        def hook(module: torch.nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            return output * float("nan") if calls["n"] == 3 else output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(train_mod, "build_model", poisoned)
    with pytest.raises(FloatingPointError, match=r"nan at step 3 \(step 3 of epoch 1\).*lear"):
        run(data, tmp_path)
    assert not (tmp_path / "last.pt").exists()


def test_bad_inputs_raise_clear_errors(data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab.json: file not found"):
        train_into(tmp_path, TINY_MODEL, TINY_TRAIN, data["shards"], tmp_path / "vocab.json")
    big = TrainConfig.from_dict({**TINY_TRAIN.asdict(), "batch_size": 97})
    with pytest.raises(ValueError, match="96 training questions, fewer than one global batch"):
        run(data, tmp_path, big)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


# --- The official data order --------------------------------------------------------------------
# 96 questions in batches of 10: 9 full and the last 6 kept (the shard order: 9 steps, 6 left out).
OFFICIAL = TrainConfig.from_dict(
    {**TINY_TRAIN.asdict(), "data_order": "official", "batch_size": 10}
)


@pytest.fixture(scope="module")
def official_reference(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("official")
    run(data, out, OFFICIAL)
    return out


def test_official_order_trains_on_every_question_once_per_epoch(
    data: dict[str, Path], official_reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[list[int]] = []  # the question indices of each training batch
    real_batch = shards.InMemorySplit.batch

    def batch(self: shards.InMemorySplit, rows: np.ndarray) -> shards.Batch:
        made = real_batch(self, rows)
        trained.append(made.question_indices.tolist())
        return made

    monkeypatch.setattr(shards.InMemorySplit, "batch", batch)
    summary = run(data, tmp_path, OFFICIAL)
    assert summary["steps"] == 2 * 10
    assert [len(b) for b in trained] == ([10] * 9 + [6]) * 2
    epochs = [sum(trained[:10], []), sum(trained[10:], [])]
    for epoch in epochs:
        assert sorted(epoch) == list(range(96))
    assert epochs[0] != epochs[1]  # permuted afresh
    assert_same_run(official_reference, tmp_path)  # and the same again for the same seed


def test_official_order_resumes_mid_epoch_exactly(
    data: dict[str, Path], official_reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Saves at steps 3, 6, 9, 10 (the end of epoch 1), 12: killed 2 steps into epoch 2.
    config = TrainConfig.from_dict({**OFFICIAL.asdict(), "checkpoint_every_steps": 3})
    with monkeypatch.context() as m:
        kill_after_saves(m, "last.pt", 5)
        with pytest.raises(Killed):
            run(data, tmp_path, config)
    killed = load_checkpoint(tmp_path / "last.pt")
    assert (killed["epoch"], killed["step"], killed["epoch_step"]) == (1, 12, 2)
    run(data, tmp_path, config)
    assert_same_run(official_reference, tmp_path)


def test_official_order_that_would_not_fit_in_memory_is_refused(
    data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_mod, "available_memory", lambda: 100_000)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    # 24 images of 3 x 32 x 32 bytes and 96 questions of 512: 0.12 MB per process.
    message = (
        r"data_order 'official' holds the training split in memory: 24 images decoded at "
        r"32x32 and 96 questions, 0\.12 MB per process x 2 process\(es\) on this machine = "
        r"0\.25 MB, more than 80% of the 0\.10 MB available; set train_model\.data_order: shards"
    )
    with pytest.raises(ValueError, match=message):
        run(data, tmp_path, OFFICIAL)
    assert not (tmp_path / "last.pt").exists()


# --- Several processes --------------------------------------------------------------------------
DDP_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from filmclevr.model import FiLMConfig
    from filmclevr.train import TrainConfig, train

    model, config, shards, vocab, out = sys.argv[1:]
    summary = train(
        FiLMConfig.from_dict(json.loads(model)),
        TrainConfig.from_dict(json.loads(config)),
        shards_dir=Path(shards),
        vocab_path=Path(vocab),
        best_checkpoint=Path(out) / "film.pt",
        last_checkpoint=Path(out) / "last.pt",
        log_dir=Path(out) / "train",
        progress=False,
    )
    print("SUMMARY", json.dumps(summary))
    """
)


@pytest.mark.parametrize(
    ("data_order", "batch_size", "steps_per_epoch"),
    [
        ("shards", 8, 6),  # 96 questions // (8 per rank x 2 ranks)
        ("official", 10, 5),  # 48 questions per rank: 4 batches of 10 and the last 8
    ],
)
def test_ddp_on_two_cpu_processes(
    data: dict[str, Path], tmp_path: Path, data_order: str, batch_size: int, steps_per_epoch: int
) -> None:
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    config = {**TINY_TRAIN.asdict(), "data_order": data_order, "batch_size": batch_size}
    args = [json.dumps(TINY_MODEL.asdict()), json.dumps(config)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = subprocess.run(
        [*command, str(script), *args, str(data["shards"]), str(data["vocab"]), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = [json.loads(line[8:]) for line in result.stdout.splitlines() if "SUMMARY" in line]
    assert len(summaries) == 2
    for summary in summaries:
        summary.pop("samples_per_s")  # each rank's own clock
    assert summaries[0] == summaries[1]  # the ranks agree
    assert summaries[0]["steps"] == 2 * steps_per_epoch and summaries[0]["world_size"] == 2

    # The all-reduced validation accuracy is the best model's accuracy on all of val.
    model, best = model_from_checkpoint(tmp_path / "film.pt", "cpu")
    assert best["world_size"] == 2
    val = shards.question_loader(
        shards.shard_paths(data["shards"], "val"), batch_size=8, shuffle=False
    )
    assert evaluate_accuracy(model, val, "cpu") == pytest.approx(
        summaries[0]["best_val_accuracy"],
        abs=1 / 32 + 1e-9,  # 32 val questions: allow one flip
    )


def test_stage_starts_nproc_per_node_processes(data: dict[str, Path], tmp_path: Path) -> None:
    """`train_model.nproc_per_node: 2` makes the stage start itself under torchrun, 2 ranks."""
    params = yaml.safe_load((REPO / "config/demo.yaml").read_text())  # the demo
    params["get_data"]["splits"] = list(IMAGES)
    params["get_data"]["mini"]["images"] = dict(IMAGES)
    params["resize_images"]["image_size"] = TINY_MODEL.image_size
    params["model"] = {k: v for k, v in TINY_MODEL.asdict().items() if k != "image_size"}
    # One epoch: test_ddp_on_two_cpu_processes already checks the DDP run itself.
    params["train_model"] = {**TINY_TRAIN.asdict(), "nproc_per_node": 2, "max_epochs": 1}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = {name: tmp_path / name for name in ("film.pt", "last.pt", "train", "curves.png")}
    result = subprocess.run(
        [sys.executable, "-m", "stages.train_model", "--params", str(tmp_path / "params.yaml")]
        + ["--shards", str(data["shards"]), "--vocab", str(data["vocab"])]
        + ["--out", str(out["film.pt"]), "--last", str(out["last.pt"])]
        + ["--log-dir", str(out["train"]), "--curves", str(out["curves.png"])],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = load_checkpoint(out["film.pt"])
    assert checkpoint["world_size"] == 2
    # 96 questions // (8 per rank x 2 ranks) = 6 steps per epoch (12 on one process).
    assert checkpoint["history"][-1]["step"] == 6


def test_nproc_per_node_must_be_positive() -> None:
    with pytest.raises(ValueError, match="nproc_per_node must be > 0"):
        TrainConfig(nproc_per_node=0)


def test_bf16_on_a_cpu_without_it_warns_and_falls_back_to_float32(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cpu = torch.device("cpu")
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, probe, lambda: False, raising=False)
    assert train_mod.bf16_to_use(cpu, bf16=False) is False
    assert not caplog.records
    assert train_mod.bf16_to_use(cpu, bf16=True) is False
    assert "float32" in caplog.text
    caplog.clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert train_mod.bf16_to_use(cpu, bf16=True) is True
    assert not caplog.records


def test_fields_added_later_keep_earlier_runs_resumable():
    """batchnorm_init (model) and data_order (recipe) came after runs were started: at the
    value they all had ("ones", "shards") each is left out of the fingerprint, so their
    last.pt still matches; another value is another run."""
    import hashlib

    cfg, recipe = tiny_film_config(), tiny_train_config()
    args = (1, ("train", "val"), {"shards": []}, ["1:abc"], {"question_token_to_idx": {}})
    # The fingerprint as it was computed before the fields existed.
    model = {k: v for k, v in cfg.asdict().items() if k != "batchnorm_init"}
    trajectory = {
        k: v
        for k, v in recipe.asdict().items()
        if k not in train_mod._EXECUTION_FIELDS and k not in ("data_order", "frozen_batchnorm")
    }
    del trajectory["init_checkpoint"]  # did not exist then either
    blob = {"model": model, "train": trajectory, "world_size": 1, "splits": ["train", "val"]}
    blob |= {"index": args[2], "shards": args[3], "vocab": args[4]}
    earlier = hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()
    assert train_mod._fingerprint(cfg, recipe, *args) == earlier
    uniform = dataclasses.replace(cfg, batchnorm_init="uniform")
    assert train_mod._fingerprint(uniform, recipe, *args) != earlier
    official = dataclasses.replace(recipe, data_order="official")
    assert train_mod._fingerprint(cfg, official, *args) != earlier
    # frozen_batchnorm changes nothing when everything trains, and a run when a part is frozen.
    strict = dataclasses.replace(recipe, frozen_batchnorm="eval")
    assert train_mod._fingerprint(cfg, strict, *args) == earlier
    frozen = dataclasses.replace(recipe, trainable="film_generator")
    assert train_mod._fingerprint(cfg, frozen, *args) != train_mod._fingerprint(
        cfg, dataclasses.replace(frozen, frozen_batchnorm="eval"), *args
    )


def test_a_checkpoint_from_before_a_model_field_starts_a_fine_tuning(tmp_path):
    """A checkpoint written before batchnorm_init existed holds no such key: it reads as the
    default its model was built with, so fine-tuning from it is allowed (and only for that)."""
    vocab = {"question_token_to_idx": {"<NULL>": 0}, "answer_token_to_idx": {"yes": 4}}
    config = {k: v for k, v in TINY_MODEL.asdict().items() if k != "batchnorm_init"}
    path = tmp_path / "old.pt"
    from filmclevr.checkpoint import CHECKPOINT_FORMAT

    torch.save({"format": CHECKPOINT_FORMAT, "model_config": config, "vocab": vocab}, path)
    assert train_mod._initial_weights(str(path), TINY_MODEL, vocab)["vocab"] == vocab
    uniform = dataclasses.replace(TINY_MODEL, batchnorm_init="uniform")
    with pytest.raises(ValueError, match="old.pt: its model configuration differs"):
        train_mod._initial_weights(str(path), uniform, vocab)


def test_a_fine_tuning_start_of_another_vocabulary_is_refused_naming_the_table(tmp_path):
    """Any table differing refuses the start, program tokens too, and the message says which."""
    from filmclevr.checkpoint import CHECKPOINT_FORMAT

    vocab = {
        "question_token_to_idx": {"<NULL>": 0},
        "program_token_to_idx": {"<NULL>": 0},
        "answer_token_to_idx": {"yes": 4},
    }
    path = tmp_path / "start.pt"
    torch.save(
        {"format": CHECKPOINT_FORMAT, "model_config": TINY_MODEL.asdict(), "vocab": vocab}, path
    )
    other_programs = {**vocab, "program_token_to_idx": {"<NULL>": 0, "scene": 1}}
    with pytest.raises(ValueError, match=r"start.pt: .*another program_token_to_idx\)"):
        train_mod._initial_weights(str(path), TINY_MODEL, other_programs)
    other_answers = {**vocab, "answer_token_to_idx": {"no": 4}}
    with pytest.raises(ValueError, match=r"another answer_token_to_idx\)"):
        train_mod._initial_weights(str(path), TINY_MODEL, other_answers)
