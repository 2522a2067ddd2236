"""Tokenizer, vocabularies and encoded question files (SPEC §5, docs/ARCHITECTURE.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filmclevr import clevr, fileio
from filmclevr.tokenize import (
    build_vocab,
    encode_split,
    iter_encoded_split,
    load_vocab,
    program_to_prefix,
    read_encoded_split,
    tokenize,
    tokenize_questions,
)
from tests.helpers import clevr_question_vocabulary


def node(function: str, inputs: list[int], value: str | None = None) -> dict:
    return {"function": function, "inputs": inputs, "value_inputs": [value] if value else []}


COUNT_RED = [node("scene", []), node("filter_color", [0], "red"), node("count", [1])]
COMPARE_COUNTS = [
    node("scene", []),
    node("filter_shape", [0], "cube"),
    node("count", [1]),
    node("scene", []),
    node("filter_shape", [3], "cylinder"),
    node("count", [4]),
    node("equal_integer", [2, 5]),
]
QUERY_COLOR = [
    node("scene", []),
    node("filter_size", [0], "large"),
    node("filter_shape", [1], "sphere"),
    node("unique", [2]),
    node("query_color", [3]),
]


def question(index: int, image: int, split: str, text: str, answer: str, program: list) -> dict:
    """A question in the generator's dialect (`type`, JSON answers), as clevr.read_questions
    accepts it."""
    return {
        "image_index": image,
        "image_filename": clevr.image_filename(split, image),
        "split": split,
        "question_index": index,
        "question": text,
        "answer": int(answer) if answer.isdigit() else answer,
        "question_family_index": index % 3,
        "program": [
            {"type": n["function"], "inputs": n["inputs"], "value_inputs": n["value_inputs"]}
            for n in program
        ],
    }


def write_release(root: Path) -> None:
    """Question files of a tiny release: train, val (with an unseen word), test (no answers)."""
    splits = {
        "train": [
            question(0, 0, "train", "How many red things are there?", "2", COUNT_RED),
            question(1, 0, "train", "What color is the large sphere; is it big?", "cyan",
                     QUERY_COLOR),
            question(2, 1, "train", "Are there as many cubes as cylinders?", "no",
                     COMPARE_COUNTS),
        ],
        "val": [
            question(0, 0, "val", "How many red gizmos are there?", "0", COUNT_RED),
            question(1, 0, "val", "What color is the large sphere?", "red", QUERY_COLOR),
        ],
    }  # fmt: skip
    for split, questions in splits.items():
        path = clevr.questions_path(root, split)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"info": {}, "questions": questions}))
    test = [
        {"image_index": 0, "image_filename": "CLEVR_test_000000.png", "split": "test",
         "question_index": 0, "question": "Is there a red thing?"}
    ]  # fmt: skip
    clevr.questions_path(root, "test").write_text(json.dumps({"info": {}, "questions": test}))


def test_tokenize_punctuation_rules():
    assert tokenize("What color is the large sphere; is it shiny?") == [
        "What", "color", "is", "the", "large", "sphere", ";", "is", "it", "shiny",
    ]  # fmt: skip
    assert tokenize("Is it red, or blue.") == ["Is", "it", "red", ",", "or", "blue"]
    assert tokenize("Big BALL") == ["Big", "BALL"]  # case kept


def test_program_prefix_order_matches_clevr_iep():
    assert program_to_prefix(COUNT_RED) == ["count", "filter_color[red]", "scene"]
    assert program_to_prefix(COMPARE_COUNTS) == [
        "equal_integer", "count", "filter_shape[cube]", "scene",
        "count", "filter_shape[cylinder]", "scene",
    ]  # fmt: skip


def test_build_vocab_specials_then_sorted(tmp_path):
    write_release(tmp_path)
    vocab = build_vocab(clevr.read_questions(clevr.questions_path(tmp_path, "train")))
    specials = ["<NULL>", "<START>", "<END>", "<UNK>"]
    for table in vocab.values():
        ordered = sorted(table, key=table.get)
        assert ordered[:4] == specials
        assert ordered[4:] == sorted(ordered[4:])
        assert sorted(table.values()) == list(range(len(table)))
    words = vocab["question_token_to_idx"]
    # Uppercase sorts before lowercase, as Python's sorted() in clevr-iep.
    assert list(words)[4:7] == [";", "Are", "How"]
    assert "gizmos" not in words and "?" not in words
    assert "filter_shape[cylinder]" in vocab["program_token_to_idx"]
    answers = vocab["answer_token_to_idx"]
    assert len(answers) == 32  # 4 specials + the 28 CLEVR answers, even if train misses some
    assert list(answers)[4:8] == ["0", "1", "10", "2"]


def test_encode_split_records_and_unknown_words(tmp_path):
    write_release(tmp_path)
    vocab = build_vocab(clevr.read_questions(clevr.questions_path(tmp_path, "train")))
    val = encode_split(clevr.read_questions(clevr.questions_path(tmp_path, "val")), vocab, "val")
    assert val["split"] == "val"
    assert val["unknown_tokens"] == 1  # "gizmos"
    first = val["questions"][0]
    words = vocab["question_token_to_idx"]
    expected = ["<START>", "How", "many", "red", "<UNK>", "are", "there", "<END>"]
    assert first["tokens"] == [words[w] for w in expected]
    assert first["answer"] == vocab["answer_token_to_idx"]["0"]
    assert (first["type"], first["function"], first["family"]) == ("count", "count", 0)
    assert (first["image_filename"], first["image_index"]) == ("CLEVR_val_000000.png", 0)
    assert val["questions"][1]["type"] == "query_attribute"


def test_tokenize_questions_writes_files(tmp_path):
    root, out = tmp_path / "clevr", tmp_path / "tokens"
    write_release(root)
    report = tokenize_questions(root, out, splits=["train", "val", "test"])
    assert sorted(p.name for p in out.iterdir()) == [
        "report.json", "test.json", "train.json", "val.json", "vocab.json",
    ]  # fmt: skip
    assert report["splits"]["val"]["unknown_tokens"] == 1
    assert report["splits"]["val"]["unknown_words"] == {"gizmos": 1}
    assert report["dataset"] == "CLEVR (version unknown)"  # its info is empty
    assert report["splits"]["train"]["unknown_tokens"] == 0
    assert report["splits"]["train"]["questions"] == 3
    assert json.loads((out / "report.json").read_text()) == report
    test = json.loads((out / "test.json").read_text())["questions"][0]
    assert [test[k] for k in ("answer", "type", "function", "family")] == [None] * 4
    train = json.loads((out / "train.json").read_text())["questions"]
    assert train[2]["type"] == "compare_numbers"
    assert train[1]["answer"] == load_vocab(out / "vocab.json")["answer_token_to_idx"]["cyan"]


def test_streamed_split_files_hold_the_bytes_of_the_whole_document(tmp_path):
    # tokenize_questions reads and writes a split one question at a time; what it writes is
    # the document encode_split makes of the whole split.
    root, out = tmp_path / "clevr", tmp_path / "tokens"
    write_release(root)
    tokenize_questions(root, out, splits=["train", "val", "test"])
    vocab = load_vocab(out / "vocab.json")
    for split in ("train", "val", "test"):
        whole = encode_split(clevr.read_questions(clevr.questions_path(root, split)), vocab, split)
        fileio.write_json_atomic(tmp_path / "whole.json", whole, indent=None)
        assert (out / f"{split}.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
        assert read_encoded_split(out / f"{split}.json", split) == whole["questions"]
    with pytest.raises(clevr.ClevrFormatError, match=r"val\.json: holds split 'val', expected 'tr"):
        next(iter_encoded_split(out / "val.json", "train"))


def test_a_bad_question_late_in_a_split_leaves_no_tokens(tmp_path):
    # Streamed: the split's file is already half-written when its last question turns out bad.
    root, out = tmp_path / "clevr", tmp_path / "tokens"
    write_release(root)
    tokenize_questions(root, out, splits=["train", "val"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    path = clevr.questions_path(root, "val")
    document = json.loads(path.read_text())
    document["questions"][-1]["answer"] = "maybe"
    path.write_text(json.dumps(document))
    with pytest.raises(clevr.ClevrFormatError, match=r"val_questions\.json: question 1 of val"):
        tokenize_questions(root, out, splits=["train", "val"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clevr", "tokens"]  # no temporary left


def test_vocab_reuse_and_stale_files_removed(tmp_path):
    root, out = tmp_path / "clevr", tmp_path / "tokens"
    write_release(root)
    tokenize_questions(root, out, splits=["train", "val", "test"])
    vocab = json.loads((out / "vocab.json").read_text())
    # Give "gizmos" an index: reusing this vocabulary must encode val without an <UNK>.
    vocab["question_token_to_idx"]["gizmos"] = len(vocab["question_token_to_idx"])
    saved = tmp_path / "vocab.json"
    saved.write_text(json.dumps(vocab))
    report = tokenize_questions(root, out, splits=["val"], vocab_path=saved)
    assert report["splits"]["val"]["unknown_tokens"] == 0
    assert json.loads((out / "vocab.json").read_text()) == vocab
    assert not (out / "train.json").exists()  # the folder was replaced as a whole


def test_vocab_is_built_on_the_named_training_split(tmp_path):
    root, out = tmp_path / "clevr", tmp_path / "tokens"
    write_release(root)
    report = tokenize_questions(root, out, splits=["train", "val"], train_split="val")
    assert report["vocab"] == "built on val"
    assert "gizmos" in load_vocab(out / "vocab.json")["question_token_to_idx"]  # a val-only word
    assert report["splits"]["val"]["unknown_tokens"] == 0
    with pytest.raises(clevr.ClevrFormatError, match=r"CLEVR_trainA_questions\.json"):
        tokenize_questions(root, out, splits=["val"], train_split="trainA")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda v: v["question_token_to_idx"].update({"<UNK>": 9, "x": 3}), "<UNK> at 9"),
        (lambda v: v.pop("answer_token_to_idx"), "answer_token_to_idx"),
        (lambda v: v["program_token_to_idx"].update({"x": 7}), "indices"),
    ],
)
def test_bad_vocab_file_names_it(tmp_path, mutate, message):
    root = tmp_path / "clevr"
    write_release(root)
    vocab = build_vocab(clevr.read_questions(clevr.questions_path(root, "train")))
    mutate(vocab)
    bad = tmp_path / "bad_vocab.json"
    bad.write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match=rf"bad_vocab\.json.*{message}"):
        tokenize_questions(root, tmp_path / "tokens", splits=["val"], vocab_path=bad)
    assert not (tmp_path / "tokens").exists()


def test_unknown_answer_names_the_file(tmp_path):
    root = tmp_path / "clevr"
    write_release(root)
    path = clevr.questions_path(root, "val")
    document = json.loads(path.read_text())
    document["questions"][0]["answer"] = "maybe"
    path.write_text(json.dumps(document))
    with pytest.raises(clevr.ClevrFormatError, match=r"CLEVR_val_questions\.json.*'maybe'"):
        tokenize_questions(root, tmp_path / "tokens", splits=["train", "val"])


def test_clevrs_own_vocabulary_encodes_mini_clevr(tmp_path):
    """A vocab.json of exactly CLEVR's 93 question tokens, in clevr-iep's order (SPEC §5),
    encodes generated mini-CLEVR with no <UNK> and with CLEVR's own ids."""
    from filmclevr.mini import generate_mini_clevr

    words = clevr_question_vocabulary()
    assert len(words) == 93 and words[:4] == ["<NULL>", "<START>", "<END>", "<UNK>"]
    root, out = tmp_path / "clevr", tmp_path / "tokens"
    generate_mini_clevr(root, splits={"train": 12, "val": 6}, seed=3, questions_per_image=10)
    built = build_vocab(clevr.read_questions(clevr.questions_path(root, "train")))
    vocab = {**built, "question_token_to_idx": {w: i for i, w in enumerate(words)}}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    report = tokenize_questions(
        root, out, splits=["train", "val"], vocab_path=tmp_path / "vocab.json"
    )
    assert {s: r["unknown_tokens"] for s, r in report["splits"].items()} == {"train": 0, "val": 0}
    first = clevr.read_questions(clevr.questions_path(root, "val"))[0]["question"]
    encoded = json.loads((out / "val.json").read_text())["questions"][0]["tokens"]
    assert encoded == [1, *(words.index(w) for w in tokenize(first)), 2]


def test_report_names_the_dataset_from_the_files_own_info(tmp_path):
    root = tmp_path / "clevr"
    write_release(root)
    for split in ("train", "val", "test"):
        path = clevr.questions_path(root, split)
        document = json.loads(path.read_text())
        document["info"] = {"split": split, "version": "1.0", "license": "CC BY 4.0"}
        path.write_text(json.dumps(document))
    report = tokenize_questions(root, tmp_path / "tokens", splits=["train", "val", "test"])
    assert report["dataset"] == "CLEVR v1.0"
    # A split from another dataset is refused, naming its file.
    path = clevr.questions_path(root, "val")
    document = json.loads(path.read_text())
    document["info"]["generator"] = clevr.MINI_GENERATOR
    path.write_text(json.dumps(document))
    with pytest.raises(clevr.ClevrFormatError, match=r"CLEVR_val_questions\.json: its info says "
                       r"mini-CLEVR, the splits before it CLEVR v1\.0"):  # fmt: skip
        tokenize_questions(root, tmp_path / "tokens", splits=["train", "val"])


def test_dataset_names():
    assert clevr.dataset_name({"generator": clevr.MINI_GENERATOR}, "train") == "mini-CLEVR"
    clevr_look = {"generator": clevr.MINI_GENERATOR, "look": "clevr", "language": "clevr"}
    assert clevr.dataset_name(clevr_look, "val") == "mini-CLEVR (look clevr, language clevr)"
    clevr_words = {**clevr_look, "look": "mini"}
    assert clevr.dataset_name(clevr_words, "trainA") == "mini-CoGenT (look mini, language clevr)"
    assert clevr.dataset_name({"generator": clevr.MINI_GENERATOR}, "valB") == "mini-CoGenT"
    assert clevr.dataset_name({"version": "1.0"}, "val") == "CLEVR v1.0"
    assert clevr.dataset_name({"version": "1.0"}, "trainA") == "CLEVR-CoGenT v1.0"
    assert clevr.dataset_name({"generator": "someone's CLEVR"}, "val") == "someone's CLEVR"
