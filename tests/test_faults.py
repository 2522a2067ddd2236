"""Faults and bad input that once gave a silent wrong result (issue 26), run through training and
evaluation: each now fails loudly, naming the file and the problem, and writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from filmclevr import evaluate
from tests.helpers import (
    tiny_film_config,
    tiny_train_config,
    tiny_trained_run,
    train_into,
    write_random_question_data,
)

WORDS = ["Is", "there", "a", "red", "cube", "How", "many"]


def cut_after_two_images(shard: Path) -> None:
    """Cut `shard` where its third image's first member starts: a copy that stopped there."""
    with tarfile.open(shard) as tar:
        third = tar.getmembers()[4].offset
    shard.write_bytes(shard.read_bytes()[:third])


# --- Damaged shards -------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val"])
def test_training_on_a_damaged_shard_fails_naming_it(tmp_path: Path, split: str) -> None:
    data = write_random_question_data(tmp_path, {"train": 12, "val": 6}, WORDS)
    cut_after_two_images(data["shards"] / split / f"{split}-000000.tar")
    out = tmp_path / "run"
    message = rf"{split}-000000\.tar: holds 2 images and 8 questions, but .*index\.json records 6"
    with pytest.raises(ValueError, match=message):
        recipe = tiny_train_config(max_epochs=1)
        train_into(out, tiny_film_config(), recipe, data["shards"], data["vocab"])
    assert not (out / "film.pt").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokens, shards and a one-epoch checkpoint (film.pt) of a tiny model, to be copied."""
    root = tmp_path_factory.mktemp("tiny")
    model, recipe = tiny_film_config(image_size=16), tiny_train_config(max_epochs=1)
    tiny_trained_run(root, WORDS, {"train": 6, "val": 6}, 4, model, recipe)
    return root


@pytest.fixture
def run_copy(tiny_run: Path, tmp_path: Path) -> Path:
    """A copy of the tiny run's data that a test may damage (the checkpoint stays shared)."""
    for folder in ("tokens", "shards"):
        shutil.copytree(tiny_run / folder, tmp_path / folder)
    return tmp_path


def evaluate_val(tiny_run: Path, data: Path) -> evaluate.Evaluation:
    return evaluate.evaluate(
        tiny_run / "film.pt", data / "shards", data / "tokens", split="val", batch_size=8,
        device="cpu",
    )  # fmt: skip


def test_evaluating_a_damaged_shard_fails_naming_it(tiny_run: Path, run_copy: Path) -> None:
    assert evaluate_val(tiny_run, run_copy).metrics["counts"]["overall"] == 24
    cut_after_two_images(run_copy / "shards" / "val" / "val-000000.tar")
    with pytest.raises(ValueError, match=r"val-000000\.tar: holds 2 images and 8 questions"):
        evaluate_val(tiny_run, run_copy)


def test_evaluating_an_answer_outside_the_vocabulary_fails(tiny_run: Path, run_copy: Path) -> None:
    """No prediction can match such an answer: it would be scored as simply wrong."""
    path = run_copy / "tokens" / "val.json"
    document = json.loads(path.read_text())
    vocab = json.loads((run_copy / "tokens" / "vocab.json").read_text())
    size = len(vocab["answer_token_to_idx"])
    document["questions"][5]["answer"] = size
    path.write_text(json.dumps(document))
    question = document["questions"][5]["question_index"]
    message = rf"val\.json: question {question} has answer index {size}, outside the checkpoint's"
    with pytest.raises(ValueError, match=message):
        evaluate_val(tiny_run, run_copy)


def test_evaluating_a_question_without_its_answer_names_the_tokens_file(
    tiny_run: Path, run_copy: Path
) -> None:
    """It said only "question 3 has no answer (a test split?)"."""
    path = run_copy / "tokens" / "val.json"
    document = json.loads(path.read_text())
    document["questions"][3]["answer"] = None
    path.write_text(json.dumps(document))
    question = document["questions"][3]["question_index"]
    with pytest.raises(ValueError, match=rf"val\.json: question {question} has no answer"):
        evaluate_val(tiny_run, run_copy)


# --- Two trainings in one folder ------------------------------------------------------------------
# A long training of the tiny model that saves its resume point every step.
LONG_TRAINING = """
import sys
from pathlib import Path
from tests.helpers import tiny_film_config, tiny_train_config, train_into
root = Path(sys.argv[1])
recipe = tiny_train_config(max_epochs=10_000, checkpoint_every_steps=1)
train_into(root / "run", tiny_film_config(), recipe, root / "shards", root / "tokens/vocab.json")
"""


def test_a_second_training_in_the_same_folder_is_refused(tmp_path: Path) -> None:
    """Both wrote results/train and the checkpoints, each one's atomic writes removing the
    other's temporaries; the second now stops at once, naming the folder, and writes nothing."""
    data = write_random_question_data(tmp_path, {"train": 12, "val": 6}, WORDS)
    out = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-c", LONG_TRAINING, str(tmp_path)],
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, "FILMCLEVR_LOG": "WARNING"},
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists():
            assert first.poll() is None and time.monotonic() < deadline, "no first training"
            time.sleep(0.1)
        logs_before = {p.name for p in (out / "train").rglob("*")}
        message = rf"a training writing {out / 'train'} and {out / 'last.pt'} is already running"
        with pytest.raises(OSError, match=message):  # AlreadyRunningError: a stage's one line
            recipe = tiny_train_config(max_epochs=1)
            train_into(out, tiny_film_config(), recipe, data["shards"], data["vocab"])
        assert first.poll() is None  # the first one goes on undisturbed
        # The refused training wrote no best checkpoint: one there is the first training's,
        # written as its first epoch ended (tiny epochs may end before this line runs).
        if (out / "film.json").exists():
            sidecar = json.loads((out / "film.json").read_text())
            assert sidecar["train_config"]["max_epochs"] == 10_000
        assert logs_before <= {p.name for p in (out / "train").rglob("*")}  # none removed
    finally:
        first.kill()
        first.wait()
    # Killed, the first one holds nothing: a training there runs (and resumes from its point).
    recipe = tiny_train_config(max_epochs=1)
    train_into(out, tiny_film_config(), recipe, data["shards"], data["vocab"])
    assert (out / "film.json").exists()
