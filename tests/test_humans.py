"""CLEVR-Humans: the stand-in, the vocabulary clevr-iep's way, the expanded checkpoint, the
release's files, the parameters; end to end under both engines (slow)."""

from __future__ import annotations

import copy
import io
import json
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from filmclevr import clevr
from filmclevr.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from filmclevr.humans import EMBEDDING, expand_checkpoint, model_of
from filmclevr.humans_data import (
    DATASET,
    SPLITS,
    STAND_IN,
    STAND_IN_DATASET,
    dataset_name,
    expand_vocab,
    extract_humans,
    prepare,
    question_file,
)
from filmclevr.humans_report import accuracy, paper_table4
from filmclevr.mini import generate_mini_clevr
from filmclevr.mini.generate import answered_questions, generator_arguments
from filmclevr.mini.humans import KEYS, SYNONYMS, reword, write_stand_in
from filmclevr.params import ParamsError, load_params, validate_params
from filmclevr.tokenize import UNK, load_vocab, read_encoded_split
from filmclevr.workflow_stages import STAGES, matrix_values, param_value
from tests.helpers import (
    TINY_IMAGE_SIZE,
    clevr_question_vocabulary,
    damage_deflate_stream,
    tiny_film_config,
    tiny_train_config,
    tiny_trained_run,
    write_random_images,
    write_vocab,
)

ROOT = Path(__file__).resolve().parents[1]


# --- The vocabulary, as clevr-iep expands it ----------------------------------------------------
def test_frequent_new_words_are_appended_after_clevrs_in_sorted_order_and_case_is_kept():
    base = {
        "question_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3},
        "program_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3},
        "answer_token_to_idx": {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "yes": 4},
    }
    base["question_token_to_idx"] |= {"How": 4, "many": 5, "cubes": 6}
    questions = [
        {"question": "How many grey boxes?"},
        {"question": "how many grey cubes?"},
        {"question": "How many Grey boxes, or cubes?"},
        {"question": "Count the grey ones."},
    ]
    vocab, added = expand_vocab(base, questions, unk_threshold=2)
    # grey 3x, boxes 2x, how/Grey/Count/the/ones/or/"," once: only the first two, sorted.
    assert added == {"boxes": 2, "grey": 3}
    words = vocab["question_token_to_idx"]
    assert list(words)[:7] == list(base["question_token_to_idx"])  # CLEVR's indices unchanged
    assert (words["boxes"], words["grey"]) == (7, 8)
    assert "how" not in words and "Grey" not in words  # nothing is lower-cased
    assert vocab["answer_token_to_idx"] == base["answer_token_to_idx"]
    assert expand_vocab(base, questions, unk_threshold=1)[1]["Grey"] == 1
    with pytest.raises(ValueError, match="unk_threshold"):
        expand_vocab(base, questions, unk_threshold=0)


def humans_file(root: Path, split: str, questions: list[tuple[str, str, int]]) -> None:
    """A CLEVR-Humans file: (question, answer, image index) each, no info, no question_index."""
    document = {
        "questions": [
            {
                "question": text,
                "answer": answer,
                "image_index": image,
                "image_filename": clevr.image_filename(split, image),
                "split": split,
            }
            for text, answer, image in questions
        ]
    }
    root.mkdir(exist_ok=True)
    question_file(root, split).write_text(json.dumps(document))


@pytest.fixture
def humans_data(tmp_path: Path) -> Path:
    """CLEVR's vocabulary (How, many, cubes, ...), 4 resized images per split and CLEVR-Humans
    files about some of them."""
    write_vocab(tmp_path / "clevr_tokens", ["?", "Are", "How", "any", "cubes", "many", "there"])
    rng = np.random.default_rng(0)
    for split in SPLITS:
        list(write_random_images(tmp_path, split, 4, 16, rng))
    humans = tmp_path / "humans"
    humans_file(
        humans,
        "train",
        [("How many grey cubes?", "2", 0), ("Are there any grey cubes?", "yes", 0),
         ("How many cubse?", "3", 2), ("How many grey things?", "1", 2)],
    )  # fmt: skip
    humans_file(humans, "val", [("How many grey cubes?", "0", 1), ("Any blue cubes?", "no", 1)])
    humans_file(humans, "test", [("How many grey cubes?", "1", 3)])
    return tmp_path


def test_prepare_expands_the_vocabulary_encodes_rare_words_as_unk_and_shards_asked_images(
    humans_data: Path,
):
    root = humans_data
    report = prepare(
        root / "humans",
        root / "clevr_tokens/vocab.json",
        root / "resized",
        root / "tokens",
        root / "shards",
        unk_threshold=2,
        images_per_shard=2,
        progress=False,
    )
    assert report["dataset"] == DATASET and report["added_words"] == {"grey": 3}
    vocab = load_vocab(root / "tokens/vocab.json")
    grey = vocab["question_token_to_idx"]["grey"]
    assert grey == len(load_vocab(root / "clevr_tokens/vocab.json")["question_token_to_idx"])
    train = read_encoded_split(root / "tokens/train.json", "train")
    assert [r["question_index"] for r in train] == [0, 1, 2, 3]  # positions in the file
    assert UNK in train[2]["tokens"]  # the typo "cubse", seen once
    assert UNK in train[3]["tokens"] and grey in train[3]["tokens"]  # "things": not CLEVR's
    val = read_encoded_split(root / "tokens/val.json", "val")
    assert val[1]["tokens"][1:3] == [UNK, UNK]  # "Any blue": val's own words are <UNK>
    assert report["splits"]["val"]["unknown_tokens"] == 2
    assert train[0]["answer"] == vocab["answer_token_to_idx"]["2"]
    index = json.loads((root / "shards/index.json").read_text())
    assert {split: index[split]["images"] for split in SPLITS} == {"train": 2, "val": 1, "test": 1}
    # An answer outside CLEVR's: refused, as clevr-iep's preprocessing stops on it.
    humans_file(root / "humans", "test", [("How many grey cubes?", "a few", 3)])
    with pytest.raises(clevr.ClevrFormatError, match=r"CLEVR-Humans-test\.json: .*'a few'"):
        prepare(
            root / "humans",
            root / "clevr_tokens/vocab.json",
            root / "resized",
            root / "tokens",
            root / "shards",
            unk_threshold=2,
            images_per_shard=2,
            progress=False,
        )


def test_the_release_archive_gives_its_three_files_byte_for_byte(tmp_path: Path):
    files = {}
    for split in SPLITS:
        humans_file(tmp_path / "src", split, [(f"Is it {split}?", "yes", 0)])
        files[split] = question_file(tmp_path / "src", split).read_bytes()
    archive = tmp_path / "CLEVR-Humans.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for split, data in files.items():
            zf.writestr(f"CLEVR-Humans/CLEVR-Humans-{split}.json", data)
    extract_humans(archive, tmp_path / "out")
    for split, data in files.items():
        assert question_file(tmp_path / "out", split).read_bytes() == data
    with zipfile.ZipFile(archive, "w") as zf:  # no val file
        zf.writestr("CLEVR-Humans/CLEVR-Humans-train.json", files["train"])
    with pytest.raises(clevr.ClevrFormatError, match=r"CLEVR-Humans\.zip: expected one .*val"):
        extract_humans(archive, tmp_path / "out")
    assert question_file(tmp_path / "out", "val").read_bytes() == files["val"]  # left as it was


def test_a_damaged_entry_of_the_archive_is_named(tmp_path: Path):
    """CLEVR-Humans publishes no checksum: a damaged deflate stream is first seen here, where
    zlib.error, neither ValueError nor OSError, was a raw traceback."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split in SPLITS:
            humans_file(tmp_path / "src", split, [(f"Is it {split}?", "yes", 0)])
            zf.write(question_file(tmp_path / "src", split), f"CLEVR-Humans-{split}.json")
    archive = tmp_path / "CLEVR-Humans.zip"
    archive.write_bytes(damage_deflate_stream(buf.getvalue(), "CLEVR-Humans-val.json"))
    message = (
        rf"{archive}: entry 'CLEVR-Humans-val\.json' is damaged \(.*\); delete {archive} and run"
    )
    with pytest.raises(clevr.ClevrFormatError, match=message):
        extract_humans(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_archive_that_fails_verification_names_the_humans_parameters(tmp_path: Path):
    from filmclevr.download import ChecksumError, fetch_archive

    archive = tmp_path / "CLEVR-Humans.zip"
    archive.write_bytes(b"not the archive")
    with pytest.raises(ChecksumError, match=r"expected 0{64} \(humans\.download\.sha256\)"):
        fetch_archive(
            "http://127.0.0.1:9/CLEVR-Humans.zip",  # never asked: the archive is there
            archive,
            size=None,
            sha256="0" * 64,
            settings="humans.download",
        )
    assert (tmp_path / "CLEVR-Humans.zip.corrupt").is_file() and not archive.exists()


# --- The model for the expanded vocabulary ------------------------------------------------------
@pytest.fixture(scope="module")
def clevr_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("clevr_model")
    tiny_trained_run(
        root,
        ["How", "cubes", "many"],
        {"train": 4, "val": 2},
        2,
        tiny_film_config(),
        tiny_train_config(max_epochs=1),
        image_size=TINY_IMAGE_SIZE,
    )
    return root / "film.pt"


def test_new_words_get_embeddings_near_zero_and_old_questions_the_same_answers(clevr_model):
    checkpoint = load_checkpoint(clevr_model)
    base = checkpoint["vocab"]
    vocab, _ = expand_vocab(base, [{"question": "grey box grey box"}], unk_threshold=2)
    expanded = expand_checkpoint(clevr_model, vocab, seed=0, std=0.01)
    old, new = checkpoint["model"][EMBEDDING], expanded["model"][EMBEDDING]
    assert new.shape == (old.shape[0] + 2, old.shape[1])
    assert torch.equal(new[: old.shape[0]], old)
    assert 0 < new[old.shape[0] :].abs().max() < 0.1  # N(0, 0.01^2)
    assert all(torch.equal(v, expanded["model"][k]) for k, v in checkpoint["model"].items()
               if k != EMBEDDING)  # fmt: skip
    again = expand_checkpoint(clevr_model, vocab, seed=0, std=0.01)
    assert (
        torch.equal(again["model"][EMBEDDING], new)
        and again["fingerprint"] == (expanded["fingerprint"])
    )
    other = expand_checkpoint(clevr_model, vocab, seed=1, std=0.01)
    assert not torch.equal(other["model"][EMBEDDING], new)
    assert other["fingerprint"] != expanded["fingerprint"]
    # Two starts without a fingerprint (imported before imports had one) are told apart by
    # their weights: their fine-tunes once shared one fingerprint, and one resumed the other.
    bare = {k: v for k, v in checkpoint.items() if k != "fingerprint"}
    nudged = {**bare, "model": {**bare["model"], EMBEDDING: old + 1}}
    fingerprints = set()
    for n, start in enumerate((bare, nudged)):
        save_checkpoint(clevr_model.with_name(f"bare{n}.pt"), start)
        fingerprints.add(expand_checkpoint(clevr_model.with_name(f"bare{n}.pt"), vocab,
                                           seed=0, std=0.01)["fingerprint"])  # fmt: skip
    assert len(fingerprints) == 2 and expanded["fingerprint"] not in fingerprints
    # A question in the old words gets the same logits from the expanded model.
    before, _ = model_from_checkpoint(clevr_model)
    after = model_of(expanded, "cpu")
    images = torch.rand(2, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE)
    questions, lengths = torch.tensor([[1, 4, 5, 6, 2], [1, 6, 2, 0, 0]]), torch.tensor([5, 3])
    with torch.inference_mode():
        assert torch.equal(before(images, questions, lengths), after(images, questions, lengths))
    assert expanded["parameters"]["total"] == sum(p.numel() for p in after.parameters())
    # A vocabulary built on another CLEVR vocabulary: refused, naming the checkpoint.
    moved = copy.deepcopy(vocab)
    words = moved["question_token_to_idx"]
    words["How"], words["many"] = words["many"], words["How"]
    with pytest.raises(ValueError, match=r"film\.pt: the expanded vocabulary does not extend"):
        expand_checkpoint(clevr_model, moved, seed=0, std=0.01)
    saved = clevr_model.parent / "expanded.pt"
    save_checkpoint(saved, expanded)
    assert load_checkpoint(saved)["vocab"] == vocab


# --- The stand-in -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    get_data = {
        "splits": ["train", "val", "test"],
        "mini": {
            "seed": 0,
            "images": {"train": 12, "val": 4, "test": 4},
            "questions_per_image": 6,
            "min_objects": 3,
            "max_objects": 6,
        },
    }
    root = tmp_path_factory.mktemp("tree") / "clevr"
    settings = generator_arguments(get_data)
    generate_mini_clevr(root, workers=1, **settings)
    return root, settings


def test_the_stand_in_rewords_the_trees_questions_keeps_their_answers_and_says_what_it_is(
    tree, tmp_path: Path
):
    root, settings = tree
    counts = write_stand_in(root, tmp_path / "a", settings, seed=0, questions_per_image=3)
    write_stand_in(root, tmp_path / "b", settings, seed=0, questions_per_image=3)
    assert counts == {"train": 36, "val": 12, "test": 12}
    clevr_words = set(clevr_question_vocabulary())
    new_words = lower_case = 0
    for split in SPLITS:
        path = question_file(tmp_path / "a", split)
        assert path.read_bytes() == question_file(tmp_path / "b", split).read_bytes()
        document = json.loads(path.read_text())
        assert document["info"]["generator"] == STAND_IN
        assert dataset_name(document["info"]) == STAND_IN_DATASET
        drawn = [q for q in answered_questions(split, **settings)]
        kept = {}
        for q in drawn:  # the first 3 of each image, in question order
            kept.setdefault(q["image_index"], [])
            if len(kept[q["image_index"]]) < 3:
                kept[q["image_index"]].append(q)
        expected = [q for image in sorted(kept) for q in kept[image]]
        questions = document["questions"]
        assert [set(q) for q in questions] == [set(KEYS)] * len(questions)
        for q, source in zip(questions, expected, strict=True):
            assert (q["answer"], q["image_index"], q["split"]) == (
                source["answer"], source["image_index"], split,
            )  # fmt: skip
            words = set(q["question"].replace("?", "").replace(";", " ").split())
            new_words += bool(words - clevr_words)
            lower_case += q["question"][0].islower()
    assert new_words > sum(counts.values()) // 2 and lower_case > 0
    assert write_stand_in(root, tmp_path / "c", settings, seed=1, questions_per_image=3) == counts
    assert question_file(tmp_path / "c", "val").read_bytes() != (
        question_file(tmp_path / "a", "val").read_bytes()
    )
    without_test = {**settings, "splits": {"train": 12, "val": 4}}
    with pytest.raises(ValueError, match="no test"):
        write_stand_in(root, tmp_path / "d", without_test, seed=0, questions_per_image=3)


def typo(word: str, was: str) -> bool:
    """Whether `word` is `was` with one letter, not the first, replaced."""
    differ = [i for i, (a, b) in enumerate(zip(word, was, strict=False)) if a != b]
    return len(word) == len(was) and len(differ) == 1 and differ[0] > 0


def test_rewording_only_swaps_an_opening_synonyms_case_and_one_letter():
    question = "Are there any large gray metal cubes behind the small sphere?"
    original = question.split()
    seen = {reword(question, random.Random(seed)) for seed in range(200)}
    assert len(seen) > 10
    assert any("grey" in t and "boxes" in t and "steel" in t for t in seen)
    assert any(t.startswith("Can you see any") for t in seen)
    assert any(t[0].islower() for t in seen)
    for text in seen:
        words = text.split()
        if words[0].lower() == "can":  # "Can you see any" for "Are there any"
            assert words[1:3] == ["you", "see"], text
            words = original[:2] + words[3:]
        assert len(words) == len(original) and words[0].lower() == "are", text
        for word, was in zip(words[1:], original[1:], strict=True):
            stem = was.rstrip("?")
            allowed = {was, SYNONYMS.get(stem, stem) + was[len(stem) :]}
            # else a typo: one letter of the word or of its synonym replaced, not the first
            assert word in allowed or any(typo(word, w) for w in allowed), text


# --- Parameters and the stage table -------------------------------------------------------------
def test_a_humans_source_must_match_the_images_it_asks_about():
    params = load_params(ROOT / "config/clevr-humans-mini.yaml")
    assert params["humans"]["sources"] == ["mini"]
    wrong = copy.deepcopy(params)
    wrong["humans"]["sources"] = ["clevr"]
    with pytest.raises(ParamsError, match=r"humans\.sources: 'clevr' asks about CLEVR v1\.0's"):
        validate_params(wrong)
    no_test = copy.deepcopy(params)
    no_test["get_data"]["splits"] = ["train", "val"]
    with pytest.raises(ParamsError, match="lacks test"):
        validate_params(no_test)
    bad = copy.deepcopy(params)
    bad["humans"]["train_model"]["frozen_batchnorm"] = "frozen"
    with pytest.raises(ParamsError, match=r"humans\.train_model: .*frozen_batchnorm"):
        validate_params(bad)
    assert load_params(ROOT / "config/clevr-humans.yaml")["humans"]["sources"] == ["clevr"]


def test_a_profile_without_the_humans_section_runs_no_humans_stage():
    params = load_params(ROOT / "config/demo.yaml")
    del params["humans"]
    assert validate_params(params) is params
    assert param_value(params, "humans.sources") == []
    assert param_value(params, "humans.train_model") is None
    for name in ("get_humans", "prepare_humans", "finetune_humans", "report_humans"):
        assert matrix_values(STAGES[name], params) == {"source": []}


# --- End to end, under both engines -------------------------------------------------------------
def humans_project(path: Path) -> Path:
    from tests.test_pipeline import make_project

    project = make_project(path)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["profile"] = "tiny-humans"
    params["humans"]["sources"] = ["mini"]
    params["humans"]["stand_in"]["questions_per_image"] = 2
    params["humans"]["unk_threshold"] = 2
    params["humans"]["train_model"] |= {"max_epochs": 2, "patience": 1, "learning_rate": 1e-3}
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return project


def check_humans(project: Path) -> dict:
    metrics = json.loads((project / "results/humans/mini/metrics.json").read_text())
    tokens = json.loads((project / "data/humans/mini/tokens/report.json").read_text())
    assert metrics["context"]["dataset"] == tokens["dataset"] == STAND_IN_DATASET
    assert metrics["context"]["profile"] == "tiny-humans"
    assert metrics["questions"] == {"val": 16, "test": 8}  # 2 of each image's questions
    assert metrics["vocabulary"]["added_words"] == len(tokens["added_words"]) > 0
    assert sum(metrics["vocabulary"]["unknown_tokens"].values()) > 0
    assert metrics["fine_tuning"]["trainable"] == "film_generator"
    assert metrics["fine_tuning"]["frozen_batchnorm"] == "train"
    for name in ("before", "after"):
        for split in ("val", "test"):
            assert 0 <= metrics[name][split] <= 100
    finetuned = load_checkpoint(project / "models/humans/mini/film.pt")
    assert finetuned["vocab"] == load_vocab(project / "data/humans/mini/tokens/vocab.json")
    assert 1 <= finetuned["epoch"] <= len(finetuned["history"]) <= 2
    start = load_checkpoint(project / "models/humans/mini/start.pt")
    assert start["expanded_from"]["new_words"] == len(tokens["added_words"])
    table = (project / "results/humans/mini/table.md").read_text()
    paper = paper_table4()
    assert "**A stand-in, not CLEVR-Humans**" in table
    assert f"| {paper['before']:.1f} | {paper['after']:.1f} |" in table
    png = project / "results/humans/mini/learning_curve.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    metrics["context"].pop("commit")
    return metrics


@pytest.mark.slow
def test_humans_under_both_engines(tmp_path: Path):
    from tests.test_pipeline import dvc, dvc_repro_in_a_new_repo, snakemake

    snake = humans_project(tmp_path / "snakemake")
    snakemake(snake)
    metrics = check_humans(snake)
    output = snakemake(snake, "--dry-run", "--quiet", "rules")
    assert "Nothing to be done" in output, output
    params = yaml.safe_load((snake / "params.yaml").read_text())
    params["humans"]["train_model"]["learning_rate"] = 2e-3
    (snake / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = snakemake(snake, "--dry-run", "--quiet", "rules")
    planned = set(re.findall(r"^\s*(\w+_humans)\s+\d+", output, re.M))
    assert planned == {"finetune_humans", "report_humans"}, output

    dvc_side = humans_project(tmp_path / "dvc")
    dvc_repro_in_a_new_repo(dvc_side)
    assert check_humans(dvc_side) == metrics  # the same runs, the same numbers
    assert "humans" not in dvc(dvc_side, "status")


def test_accuracy_counts_right_answers_and_names_the_file_of_an_unpredicted_question():
    records = [{"question_index": 0, "answer": 5}, {"question_index": 1, "answer": 6}]
    assert accuracy(records, {0: 5, 1: 7}) == {"accuracy": 50.0, "questions": 2}
    assert accuracy([], {}) == {"accuracy": None, "questions": 0}
    with pytest.raises(ValueError, match=r"val\.json: question 1 has no prediction"):
        accuracy(records, {0: 5}, Path("tokens/val.json"))
