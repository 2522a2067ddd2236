"""The run builder (filmclevr/runs.py) on a tiny model and tiny shards, on the CPU: a run is the
profile plus its changes, trains exactly as the loop trains it by hand, and is scored without
leaving files behind; the shard loader's hook breaks the data of every loader made under it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import pytest
import torch

from filmclevr import shards
from filmclevr.checkpoint import load_checkpoint
from filmclevr.runs import plan_run, train_run
from filmclevr.scored_runs import train_and_score
from tests.helpers import (
    TINY_IMAGE_SIZE,
    TINY_MODEL_PARAMS,
    tiny_film_config,
    tiny_train_config,
    train_into,
    write_random_question_data,
)

IMAGES = {"train": 24, "val": 8, "two": 12}
WORDS = ["Is", "there", "a", "red", "cube", "How", "many", "spheres", "are"]
YES = 4  # the answer index of "yes" in tests.helpers.write_vocab's answer vocabulary
TRAIN = {"batch_size": 8, "shuffle_buffer": 16, "num_threads": 1, "device": "cpu", "max_epochs": 2}
PARAMS = {
    "profile": "tiny",
    "get_data": {"source": "mini", "splits": ["train", "val", "two"]},
    "resize_images": {"image_size": TINY_IMAGE_SIZE},
    "model": TINY_MODEL_PARAMS,
    "train_model": TRAIN,
    "curriculum": [{"split": "two", "train_model": {"learning_rate": 1e-3}}],
    "evaluate_model": {"split": "val", "batch_size": 16},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny shards and tokens under one folder, as the data stages leave them under data/."""
    root = tmp_path_factory.mktemp("data")
    return {"root": root, **write_random_question_data(root, IMAGES, WORDS)}


def test_a_plan_is_the_profile_with_the_run_s_changes() -> None:
    plan = plan_run(PARAMS, model={"num_blocks": 2}, train={"seed": 3, "learning_rate": 2e-3})
    assert plan.model == tiny_film_config(num_blocks=2)  # image_size from resize_images
    assert [p.split for p in plan.phases] == ["train", "two"] and plan.val_split == "val"
    main, phase = (p.config for p in plan.phases)
    assert main == tiny_train_config(max_epochs=2, seed=3, learning_rate=2e-3)
    # a phase's own changes go over the run's, which go over train_model
    assert (phase.seed, phase.learning_rate, phase.max_epochs) == (3, 1e-3, 2)
    assert plan_run(PARAMS).model == tiny_film_config()
    assert plan_run(PARAMS).train_config == tiny_train_config(max_epochs=2)
    alone = plan_run(PARAMS, curriculum=False, train_split="two")
    assert [(p.split, p.config) for p in alone.phases] == [("two", plan_run(PARAMS).train_config)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"train": {"learning_rat": 1e-3}}, "unknown TrainConfig keys: learning_rat"),
        ({"model": {"num_block": 2}}, "unknown FiLMConfig keys: num_block"),
    ],
)
def test_a_bad_change_is_refused_before_anything_trains(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_run(PARAMS, **changes)


def test_a_built_run_is_the_run_the_loop_trains_by_hand(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """Nothing in the building changes a result: same weights, history and files as
    `train.train` given the same configurations."""
    (summary,) = train_run(
        plan_run(PARAMS, curriculum=False),
        shards_dir=data["shards"],
        vocab_path=data["vocab"],
        best_checkpoint=tmp_path / "built/film.pt",
        last_checkpoint=tmp_path / "built/last.pt",
        log_dir=tmp_path / "built/train",
        progress=False,
    )
    by_hand = train_into(
        tmp_path / "hand", tiny_film_config(), tiny_train_config(max_epochs=2), data["shards"],
        data["vocab"],
    )  # fmt: skip
    assert summary["steps"] == by_hand["steps"] == 2 * 96 // 8
    built, hand = (load_checkpoint(tmp_path / d / "last.pt") for d in ("built", "hand"))
    for key, value in hand["model"].items():
        assert torch.equal(built["model"][key], value), key
    timing = "samples_per_s"
    assert [{k: v for k, v in r.items() if k != timing} for r in built["history"]] == [
        {k: v for k, v in r.items() if k != timing} for r in hand["history"]
    ]
    assert built["fingerprint"] == hand["fingerprint"]
    # The profile is recorded (sim-to-real refuses another's data), outside the fingerprint.
    assert built["profile"] == PARAMS["profile"] and "profile" not in hand
    assert sorted(p.name for p in (tmp_path / "built").iterdir()) == sorted(
        p.name for p in (tmp_path / "hand").iterdir()
    )


def test_a_scored_run_returns_its_numbers_and_leaves_only_the_kept_checkpoint(
    data: dict[str, Path], tmp_path: Path
) -> None:
    keep = tmp_path / "kept/film.pt"
    result = train_and_score(PARAMS, data_dir=data["root"], keep_checkpoint=keep)
    assert [p.name for p in tmp_path.rglob("*")] == ["kept", "film.pt"]
    checkpoint = load_checkpoint(keep)
    assert checkpoint["train_config"]["learning_rate"] == 3e-4  # the main training alone
    assert len(result["history"]) == 2 and result["history"] == checkpoint["history"]
    assert result["counts"]["overall"] == IMAGES["val"] * 4  # every val question scored
    assert 0 <= result["overall"] <= 100 and result["context"]["profile"] == "tiny"
    assert result["prior"]["overall"] > 0 and result["seconds"] > 0


# --- The breakage hook --------------------------------------------------------------------------
def blank_images(batch: shards.Batch) -> shards.Batch:
    return batch._replace(images=batch.images.new_zeros(batch.images.shape))


def always_yes(batch: shards.Batch) -> shards.Batch:
    return batch._replace(answers=torch.full_like(batch.answers, YES))


@pytest.mark.parametrize("workers", [0, 1])
def test_loaders_made_under_the_hook_yield_transformed_batches(
    data: dict[str, Path], workers: int
) -> None:
    paths = shards.shard_paths(data["shards"], "val")

    def loader() -> Iterable[shards.Batch]:
        return shards.question_loader(paths, batch_size=32, shuffle=False, num_workers=workers)

    before = loader()
    with shards.transformed_batches(blank_images):
        broken = loader()
        with shards.transformed_batches(None):  # an inner block replaces the outer one
            inner = loader()
    after = loader()
    made = {"before": before, "broken": broken, "inner": inner, "after": after}
    images = {name: torch.cat([b.images for b in batches]) for name, batches in made.items()}
    assert images["before"].any() and not images["broken"].any()  # iterated after the block
    assert torch.equal(images["inner"], images["before"])
    assert torch.equal(images["after"], images["before"])


def test_a_run_under_the_hook_trains_validates_and_scores_on_the_broken_data(
    data: dict[str, Path],
) -> None:
    """Every answer "yes" in training and validation: the model learns to say yes, validation
    (on the broken answers) finds it perfect, and the evaluation, which scores against the
    tokens file, finds it right exactly on the questions whose answer is yes."""
    changes = {"learning_rate": 1e-2}
    clean = train_and_score(PARAMS, data_dir=data["root"], train=changes)
    broken = train_and_score(
        PARAMS, data_dir=data["root"], train=changes, batch_transform=always_yes
    )
    assert clean["history"][-1]["val_accuracy"] < 1.0
    assert broken["history"][-1]["val_accuracy"] == 1.0
    records = json.loads((data["root"] / "tokens/val.json").read_text())["questions"]
    yes = sum(r["answer"] == YES for r in records) / len(records)
    assert 0 < yes < 1 and broken["overall"] == pytest.approx(100 * yes, abs=0.01)


# --- Runs of a long measurement kept as they finish ----------------------------------------------
def test_a_run_is_known_by_what_it_trains_whatever_changes_name_it() -> None:
    from filmclevr.scored_runs import KeptRuns

    same = KeptRuns.key(PARAMS, train={"seed": 1, "shuffle_buffer": TRAIN["shuffle_buffer"]})
    assert same == KeptRuns.key(PARAMS, train={"seed": 1})  # a change to what it already is
    assert KeptRuns.key(PARAMS, train={"seed": 5}) != same
    assert KeptRuns.key(PARAMS, train={"seed": 1}, breakage="blank_images") != same
    assert KeptRuns.key(PARAMS, model={"num_blocks": 2}, train={"seed": 1}) != same


def test_kept_runs_are_reused_after_a_restart_and_never_mixed_with_others(
    data: dict[str, Path], tmp_path: Path
) -> None:
    from filmclevr.scored_runs import KeptRuns

    path, on = tmp_path / "runs.json", data["root"]
    kept = KeptRuns(path, PARAMS, "float32", on)
    kept.add("a", {"overall": 51.0})
    again = KeptRuns(path, PARAMS, "float32", on)  # another start: the run is there
    assert again.get("a") == {"overall": 51.0} and again.get("b") is None
    again.add("b", {"overall": 49.0})
    assert json.loads(path.read_text())["runs"] == {"a": {"overall": 51.0}, "b": {"overall": 49.0}}
    with pytest.raises(ValueError, match="runs.json: its runs were made under"):
        KeptRuns(path, PARAMS, "bf16", on)  # seeds of another numeric path spread otherwise
    with pytest.raises(ValueError, match="runs.json: its runs were made under"):
        KeptRuns(path, {**PARAMS, "train_model": {**TRAIN, "max_epochs": 3}}, "float32", on)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a file of kept runs"):
        KeptRuns(path, PARAMS, "float32", on)
    assert KeptRuns(None, PARAMS, "float32", on).get("a") is None  # no file: nothing kept
    path.unlink()
    KeptRuns(path, PARAMS, "float32", on).add("a", {"overall": 51.0})
    renamed = {**PARAMS, "profile": "other", "regression": {"tolerance": 1}}
    assert KeptRuns(path, renamed, "float32", on).get("a") == {"overall": 51.0}  # the same runs


def test_kept_runs_of_other_data_are_refused(data: dict[str, Path], tmp_path: Path) -> None:
    """The same parameters on other data (another profile's pipeline refilled data/, the same
    counts): its runs were once reused beside new ones, one spread of two datasets."""
    from filmclevr.scored_runs import KeptRuns

    other = tmp_path / "other"
    shutil.copytree(data["root"], other)
    path = tmp_path / "runs.json"
    KeptRuns(path, PARAMS, "float32", other).add("a", {"overall": 51.0})
    shard = next((other / "shards").rglob("*.tar"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")  # regenerated: other bytes, same counts
    with pytest.raises(ValueError, match="runs.json: its runs were made under"):
        KeptRuns(path, PARAMS, "float32", other)
    with pytest.raises(ValueError, match=r"shards/index\.json: not found; run the data stages"):
        KeptRuns(path, PARAMS, "float32", tmp_path / "nowhere")


def test_a_kept_breakage_is_a_function_known_by_its_name(data: dict[str, Path], tmp_path) -> None:
    """Two closures of one name (noise(0.1), noise(5.0)) once shared one kept run."""
    import functools

    from filmclevr.scored_runs import KeptRuns

    def noise(scale: float):
        def add_noise(batch):
            return batch

        return add_noise

    kept = KeptRuns(tmp_path / "runs.json", PARAMS, "float32", data["root"])
    for transform in (noise(0.1), lambda batch: batch, functools.partial(blank_images)):
        with pytest.raises(ValueError, match="must be a module-level function"):
            kept.train_and_score(train={"seed": 1}, batch_transform=transform)
    assert kept.runs == {}


def test_two_measurements_sharing_a_file_keep_each_others_runs(
    data: dict[str, Path], tmp_path: Path
) -> None:
    """The gate and data-order studies may share one file: the last writer once won."""
    from filmclevr.scored_runs import KeptRuns

    path = tmp_path / "runs.json"
    gate, order = (KeptRuns(path, PARAMS, "float32", data["root"]) for _ in range(2))
    gate.add("seed 1", {"overall": 51.0})
    order.add("official order", {"overall": 50.0})
    assert sorted(json.loads(path.read_text())["runs"]) == ["official order", "seed 1"]


def test_a_kept_run_is_trained_once_and_read_back_after_a_restart(
    data: dict[str, Path], tmp_path: Path
) -> None:
    from filmclevr.scored_runs import KeptRuns

    path = tmp_path / "runs.json"
    first = KeptRuns(path, PARAMS, "float32", data["root"]).train_and_score(
        train={"seed": 1}, batch_transform=blank_images
    )
    again = KeptRuns(path, PARAMS, "float32", data["root"])
    # The same run (its own timing included, so not trained again), known with its breakage.
    assert again.train_and_score(train={"seed": 1}, batch_transform=blank_images) == json.loads(
        json.dumps(first)
    )
    key = KeptRuns.key(PARAMS, train={"seed": 1}, breakage="blank_images")
    assert list(again.runs) == [key]
