"""Tests of filmclevr.submission (the test splits' answers to submit, and scoring them) and of
filmclevr.mini.answer_key (mini-CLEVR's hidden test answers, drawn again)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from filmclevr import clevr, evaluate, submission
from filmclevr.checkpoint import load_checkpoint, model_from_checkpoint
from filmclevr.executor import execute
from filmclevr.mini import answer_key, generate
from filmclevr.params import load_params
from filmclevr.resize import resize_images
from filmclevr.shards import write_shards
from filmclevr.tokenize import tokenize_questions
from tests.helpers import (
    permute_question_words,
    tiny_film_config,
    tiny_train_config,
    tiny_trained_run,
    train_into,
)

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = tiny_film_config(image_size=16)
TINY_TRAIN = tiny_train_config(max_epochs=1)
BATCH = TINY_TRAIN.batch_size


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# --- The submission of every test split the shards hold -----------------------------------------
IMAGES = {"train": 8, "val": 4, "test": 3, "testB": 2}  # testB: a CoGenT test split
QUESTIONS_PER_IMAGE = 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokens, shards (train, val, test, testB) and a one-epoch checkpoint of a tiny model."""
    root = tmp_path_factory.mktemp("tiny")
    words = ["How", "Is", "a", "cube", "many", "there"]
    tiny_trained_run(root, words, IMAGES, QUESTIONS_PER_IMAGE, TINY_MODEL, TINY_TRAIN)
    return root


def submit(root: Path, out: Path, shards: Path | None = None, **kwargs) -> dict:
    return submission.write_submission(
        root / "film.pt",
        shards or root / "shards",
        root / "tokens",
        out,
        batch_size=BATCH,
        profile="tiny",
        device="cpu",
        **kwargs,
    )


def test_every_test_split_is_written_one_answer_per_line_in_question_order(tiny_run, tmp_path):
    out = tmp_path / "submission"
    manifest = submit(tiny_run, out, source="mini")
    # Every test split the shards hold, CoGenT's testB as well as test, and nothing else.
    assert sorted(manifest["splits"]) == ["test", "testB"]
    assert {p.name for p in out.iterdir()} == {
        "manifest.json",
        "test_answers.txt",
        "testB_answers.txt",
    }
    assert json.loads((out / "manifest.json").read_text()) == manifest

    model, checkpoint = model_from_checkpoint(tiny_run / "film.pt")
    answers = {i: a for a, i in checkpoint["vocab"]["answer_token_to_idx"].items()}
    for name in ("test", "testB"):
        predicted = evaluate.split_predictions(
            model,
            tiny_run / "shards",
            name,
            batch_size=BATCH,
            num_answers=len(answers),
            device="cpu",
        )
        n = IMAGES[name] * QUESTIONS_PER_IMAGE
        assert sorted(predicted) == list(range(n))  # each question once
        path = out / f"{name}_answers.txt"
        lines = path.read_text().splitlines()
        assert lines == [answers[predicted[q]] for q in range(n)]
        entry = manifest["splits"][name]
        assert entry["file"] == path.name and entry["sha256"] == sha256(path)
        assert (entry["answers"], entry["questions"], entry["images"]) == (n, n, IMAGES[name])
        # mini-CLEVR's answers are the generator's: how to score, not where to send.
        assert "python -m filmclevr.mini.answer_key" in entry["submit"]
        assert f"score {path.name} KEY.json" in entry["submit"]


def test_the_manifest_names_the_model_and_data_it_came_from(tiny_run, tmp_path):
    manifest = submit(tiny_run, tmp_path / "submission")
    checkpoint = load_checkpoint(tiny_run / "film.pt")
    assert manifest["model"] == {
        "checkpoint": (tiny_run / "film.pt").as_posix(),
        "sha256": sha256(tiny_run / "film.pt"),
        "fingerprint": checkpoint["fingerprint"],
        "epoch": checkpoint["epoch"],
        "parameters": checkpoint["parameters"]["total"],
    }
    assert len(manifest["model"]["fingerprint"]) == 64
    assert manifest["data"] == {
        "dataset": "mini-CLEVR",  # the tokenizer's report of the data's own info
        "shards_index": (tiny_run / "shards" / "index.json").as_posix(),
        "shards_index_sha256": sha256(tiny_run / "shards" / "index.json"),
    }
    assert manifest["profile"] == "tiny" and manifest["commit"] == evaluate.git_commit()
    assert manifest["format"] == submission.FORMAT


def test_tokens_of_another_vocabulary_are_refused_before_any_file(tiny_run, tmp_path):
    """Answers predicted from token ids that mean other words are no file to send."""
    root = tmp_path / "run"
    root.mkdir()
    shutil.copytree(tiny_run / "tokens", root / "tokens")
    permute_question_words(root / "tokens" / "vocab.json")
    (root / "film.pt").symlink_to(tiny_run / "film.pt")
    out = tmp_path / "submission"
    message = rf"{root / 'tokens' / 'vocab.json'}: .* of {root / 'film.pt'} was trained on"
    with pytest.raises(ValueError, match=message):
        submit(root, out, shards=tiny_run / "shards")
    assert not out.exists()


def test_clevrs_own_data_is_to_be_sent_to_its_authors():
    text = submission.how_to_submit("CLEVR v1.0", "test")
    assert "private" in text and "send test_answers.txt" in text and submission.CLEVR_PAGE in text
    text = submission.how_to_submit("CLEVR-CoGenT v1.0", "testA")
    assert "send testA_answers.txt" in text


def test_without_a_test_split_the_folder_holds_a_manifest_listing_none(tiny_run, tmp_path):
    shards = tmp_path / "shards"
    write_shards(
        tiny_run / "resized",
        tiny_run / "tokens",
        shards,
        splits=["train", "val"],
        images_per_shard=3,
        progress=False,
    )
    out = tmp_path / "submission"
    out.mkdir()
    (out / "test_answers.txt").write_text("an older run's\n")
    manifest = submit(tiny_run, out, shards=shards)
    assert manifest["splits"] == {}
    assert [p.name for p in out.iterdir()] == ["manifest.json"]  # the older file is gone


def test_data_of_the_other_source_is_refused(tiny_run, tmp_path):
    with pytest.raises(ValueError, match=r"report\.json: the questions are mini-CLEVR"):
        submit(tiny_run, tmp_path / "submission", source="clevr")
    assert not (tmp_path / "submission").exists()


# --- mini-CLEVR: the submission scores what evaluation on the hidden answers says --------------
MINI = {"splits": {"train": 8, "val": 3, "test": 6}, "seed": 7, "questions_per_image": 4}
MINI_SETTINGS = {**MINI, "max_objects": 5}
# Enough steps for the model's answers to differ between questions (answers all alike would
# score the same whatever the order of the file's lines).
MINI_TRAIN = tiny_train_config(max_epochs=4, learning_rate=3e-3)


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mini-CLEVR release through the data stages, a one-epoch model on it, and its
    submission."""
    root = tmp_path_factory.mktemp("mini")
    splits = list(MINI["splits"])
    generate.generate_mini_clevr(root / "clevr", **MINI_SETTINGS)
    resize_images(root / "clevr", root / "resized", splits=splits, image_size=16, progress=False)
    tokenize_questions(root / "clevr", root / "tokens", splits=splits)
    write_shards(
        root / "resized", root / "tokens", root / "shards", splits=splits, images_per_shard=3
    )
    train_into(root, TINY_MODEL, MINI_TRAIN, root / "shards", root / "tokens" / "vocab.json")
    submit(root, root / "submission", source="mini")
    return root


def answered_copy(root: Path, key: Path, dest: Path, split: str = "heldout") -> None:
    """The test split's images, tokens and shards again as a split with answers (`split`), as
    the data stages write them: tokens from the key's questions (answers included) with the
    model's vocabulary, the very resized images, shards of the same size, and the training
    split beside it for evaluate's Q-type prior."""
    key_document = json.loads(key.read_text())
    questions = [
        {**q, "split": split, "image_filename": clevr.image_filename(split, q["image_index"])}
        for q in key_document["questions"]
    ]
    release = dest / "clevr"
    clevr.questions_path(release, split).parent.mkdir(parents=True)
    clevr.questions_path(release, split).write_text(
        json.dumps({"info": {**key_document["info"], "split": split}, "questions": questions})
    )
    shutil.copy2(
        clevr.questions_path(root / "clevr", "train"), clevr.questions_path(release, "train")
    )
    (dest / "resized" / split).mkdir(parents=True)
    for i in range(MINI["splits"]["test"]):
        shutil.copy2(
            root / "resized" / "test" / clevr.image_filename("test", i),
            dest / "resized" / split / clevr.image_filename(split, i),
        )
    tokenize_questions(
        release, dest / "tokens", splits=["train", split], vocab_path=root / "tokens" / "vocab.json"
    )
    write_shards(
        dest / "resized", dest / "tokens", dest / "shards", splits=[split], images_per_shard=3
    )


def test_the_submission_scores_what_evaluation_on_the_hidden_answers_says(mini_run, tmp_path):
    key = tmp_path / "keys" / "CLEVR_test_questions.json"
    assert answer_key.write_answer_key(mini_run / "clevr", "test", key, MINI_SETTINGS) > 0
    answers_txt = mini_run / "submission" / "test_answers.txt"
    score = submission.score_submission(answers_txt, key)

    answered_copy(mini_run, key, tmp_path / "answered")
    evaluated = evaluate.evaluate(
        mini_run / "film.pt",
        tmp_path / "answered" / "shards",
        tmp_path / "answered" / "tokens",
        split="heldout",
        batch_size=BATCH,
        device="cpu",
        source="mini",
    )
    lines = answers_txt.read_text().splitlines()
    total = len(lines)
    # Line i is the answer evaluate predicts for question i.
    words = {
        i: a
        for a, i in load_checkpoint(mini_run / "film.pt")["vocab"]["answer_token_to_idx"].items()
    }
    assert lines == [words[evaluated.predictions[q]] for q in range(total)]
    assert len(set(lines)) > 1  # else the order of the lines would not matter
    assert evaluated.metrics["counts"]["overall"] == score["counts"]["overall"] == total
    for group in ("overall", "columns", "functions", "families", "counts"):
        assert score[group] == evaluated.metrics[group], group
    assert score["overall"] == round(100 * score["correct"] / total, 2)
    assert (score["dataset"], score["split"]) == ("mini-CLEVR", "test")
    assert score["sha256"] == sha256(answers_txt)

    # The score follows the file line by line: the last line made right (or wrong) moves it
    # by one question.
    answer = submission.read_answer_key(key)[1][-1]["answer"]
    right = lines[-1] == answer
    lines[-1] = next(a for a in clevr.ANSWERS if a != answer) if right else answer
    edited = tmp_path / "edited.txt"
    edited.write_text("".join(f"{line}\n" for line in lines))
    moved = submission.score_submission(edited, key)["correct"] - score["correct"]
    assert moved == (-1 if right else 1)


# --- mini-CLEVR's answer key ---------------------------------------------------------------------
def test_the_answer_key_is_the_released_questions_with_their_answers(mini_run, tmp_path):
    release = mini_run / "clevr"
    before = tree_bytes(release)
    # A split released with its answers: the key is exactly the released questions.
    val_key = tmp_path / "val.json"
    answer_key.write_answer_key(release, "val", val_key, MINI_SETTINGS)
    assert (
        json.loads(val_key.read_text())["questions"]
        == json.loads(clevr.questions_path(release, "val").read_text())["questions"]
    )
    # The test split: its released questions, with the answers their scenes give.
    test_key = tmp_path / "test.json"
    count = answer_key.write_answer_key(release, "test", test_key, MINI_SETTINGS)
    document = json.loads(test_key.read_text())
    released = json.loads(clevr.questions_path(release, "test").read_text())
    assert document["info"]["split"] == "test" and "answer_key" in document["info"]
    assert count == len(document["questions"]) == len(released["questions"])
    for full, public in zip(document["questions"], released["questions"], strict=True):
        assert {k: full[k] for k in public} == public
        assert set(public) == set(generate.PUBLIC_KEYS)  # the release still hides them
        scene = generate.make_scene(7, "test", full["image_index"], max_objects=5)
        assert execute(full["program"], scene) == full["answer"]
    assert tree_bytes(release) == before  # the release tree is only read


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"seed": 8}, "generated with seed 7, the profile says 8"),
        ({"look": "clevr"}, "generated with look 'mini', the profile says 'clevr'"),
        ({"questions_per_image": 3}, r"question #\d+ has (image_index|question) .*, the settings"),
        ({"splits": {**MINI["splits"], "test": 3}}, "holds more questions than the settings"),
    ],
)
def test_settings_that_did_not_make_the_tree_are_refused(mini_run, tmp_path, change, message):
    out = tmp_path / "key.json"
    with pytest.raises(ValueError, match=message):
        answer_key.write_answer_key(mini_run / "clevr", "test", out, {**MINI_SETTINGS, **change})
    assert not out.exists()


def test_the_key_is_never_written_into_the_release_tree(mini_run):
    inside = mini_run / "clevr" / "questions" / "key.json"
    with pytest.raises(ValueError, match="inside the release tree"):
        answer_key.write_answer_key(mini_run / "clevr", "test", inside, MINI_SETTINGS)
    assert not inside.exists()


def test_the_generator_arguments_of_a_profile():
    """The profile's splits only (their image counts), and its optional settings only where it
    sets them (else the generator's defaults)."""
    mini = {
        "seed": 3,
        "images": {"train": 5, "val": 2, "test": 9},
        "questions_per_image": 4,
        "min_objects": 2,
        "max_objects": 6,
        "look": "clevr",
    }
    get_data = {"source": "mini", "splits": ["train", "val"], "mini": mini}
    assert generate.generator_arguments(get_data) == {
        "splits": {"train": 5, "val": 2},
        "seed": 3,
        "questions_per_image": 4,
        "min_objects": 2,
        "max_objects": 6,
        "look": "clevr",
    }


def test_the_answer_key_command(mini_run, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    profile = load_params(ROOT / "params.yaml")
    profile["get_data"]["mini"].update(  # the tree's settings; the generator's own look
        seed=MINI["seed"], questions_per_image=MINI["questions_per_image"], max_objects=5,
        look="mini", language="mini",
    )  # fmt: skip
    profile["get_data"]["mini"]["images"] = dict(MINI["splits"])
    params.write_text(json.dumps(profile))  # JSON is YAML
    key = tmp_path / "key.json"
    argv = ["--params", str(params), "--clevr", str(mini_run / "clevr"), "--out", str(key)]
    assert answer_key.main(argv) == 0
    assert f"{key}: the answers of" in capsys.readouterr().out
    reference = tmp_path / "reference.json"
    answer_key.write_answer_key(mini_run / "clevr", "test", reference, MINI_SETTINGS)
    assert key.read_bytes() == reference.read_bytes()  # the profile's settings made the tree

    profile["get_data"]["source"] = "clevr"
    params.write_text(json.dumps(profile))
    assert answer_key.main(argv) == 1
    assert "CLEVR's test answers are private" in capsys.readouterr().err


# --- Scoring: the file the authors would score -------------------------------------------------
def test_a_file_with_the_wrong_number_of_lines_is_refused(mini_run, tmp_path):
    key = tmp_path / "key.json"
    n = answer_key.write_answer_key(mini_run / "clevr", "test", key, MINI_SETTINGS)
    short = tmp_path / "short.txt"
    short.write_text("yes\n" * (n - 1))
    with pytest.raises(ValueError, match=rf"short\.txt: {n - 1} lines, but the answer key has {n}"):
        submission.score_submission(short, key)


def test_a_word_outside_the_answer_vocabulary_is_refused(mini_run, tmp_path):
    key = tmp_path / "key.json"
    n = answer_key.write_answer_key(mini_run / "clevr", "test", key, MINI_SETTINGS)
    bad = tmp_path / "bad.txt"
    bad.write_text("yes\nmaybe\n" + "no\n" * (n - 2))
    with pytest.raises(
        ValueError,
        match=r"bad\.txt: line 2 is 'maybe', not a word of the answer vocabulary \(CLEVR's 28",
    ):
        submission.score_submission(bad, key)
    bad.write_text("yes \n" + "no\n" * (n - 1))  # a word is the whole line
    with pytest.raises(ValueError, match=r"line 1 is 'yes '"):
        submission.score_submission(bad, key)


def test_a_released_test_file_is_no_answer_key(mini_run, tmp_path):
    released = clevr.questions_path(mini_run / "clevr", "test")
    with pytest.raises(ValueError, match="has no answer: not an answer key"):
        submission.score_submission(mini_run / "submission" / "test_answers.txt", released)


def test_the_score_command(mini_run, tmp_path, capsys):
    key = tmp_path / "key.json"
    answer_key.write_answer_key(mini_run / "clevr", "test", key, MINI_SETTINGS)
    answers_txt = mini_run / "submission" / "test_answers.txt"
    out = tmp_path / "score.json"
    assert submission.main(["score", str(answers_txt), str(key), "--json", str(out)]) == 0
    score = json.loads(out.read_text())
    assert score == submission.score_submission(answers_txt, key)
    printed = capsys.readouterr().out
    assert f"overall {score['overall']:.2f}% ({score['correct']:,} of" in printed
    assert all(column in printed for column in clevr.QUESTION_TYPES)

    assert submission.main(["score", str(tmp_path / "missing.txt"), str(key)]) == 1
    assert "missing.txt" in capsys.readouterr().err
