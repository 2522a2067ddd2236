"""Tests of filmclevr.evaluate: metrics, the Q-type prior, tables, answers and predict."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest
import torch

from filmclevr import clevr, evaluate
from filmclevr.checkpoint import load_checkpoint
from filmclevr.tokenize import read_encoded_split
from tests.helpers import (
    permute_question_words,
    tiny_film_config,
    tiny_train_config,
    tiny_trained_run,
)

PAPER_CSV = evaluate.PAPER_TABLE1


def rec(question_index: int, function: str, answer: int, family: int = 0) -> dict:
    """A tokens-file record (docs/ARCHITECTURE.md) with only the fields evaluation reads."""
    return {
        "question_index": question_index,
        "answer": answer,
        "type": clevr.TYPE_OF_FUNCTION[function],
        "function": function,
        "family": family,
    }


# --- compute_metrics ----------------------------------------------------------------------------
def test_compute_metrics_pools_columns_over_functions():
    # compare_numbers: equal_integer 1/1 right, less_than 0/3 right. Pooled: 1/4 = 25%;
    # the mean of the two function accuracies would be 50%.
    records = [
        rec(0, "equal_integer", 0, family=1),
        rec(1, "less_than", 0, family=2),
        rec(2, "less_than", 0, family=2),
        rec(3, "less_than", 0, family=2),
        rec(4, "count", 5, family=3),
        rec(5, "count", 6, family=3),
        rec(6, "query_color", 20, family=4),
    ]
    predictions = {0: 0, 1: 1, 2: 1, 3: 1, 4: 5, 5: 7, 6: 20}
    m = evaluate.compute_metrics(records, predictions)

    assert m["columns"]["compare_numbers"] == 25.0
    assert m["functions"]["equal_integer"] == 100.0
    assert m["functions"]["less_than"] == 0.0
    assert m["columns"]["count"] == 50.0
    assert m["columns"]["query_attribute"] == 100.0
    assert m["columns"]["exist"] is None  # no exist questions
    assert m["overall"] == round(100 * 3 / 7, 2)  # questions 0, 4 and 6
    assert m["families"] == {"1": 100.0, "2": 0.0, "3": 50.0, "4": 100.0}
    assert m["counts"]["overall"] == 7
    assert m["counts"]["columns"] == {
        "count": 2,
        "exist": 0,
        "compare_numbers": 4,
        "query_attribute": 1,
        "compare_attribute": 0,
    }
    assert m["counts"]["functions"]["less_than"] == 3
    assert m["counts"]["families"] == {"1": 1, "2": 3, "3": 2, "4": 1}
    assert set(m["functions"]) == set(clevr.TERMINAL_FUNCTIONS) and len(m["functions"]) == 13
    assert list(m["columns"]) == list(clevr.QUESTION_TYPES)


def test_compute_metrics_families_sorted_numerically():
    records = [rec(i, "exist", 0, family=f) for i, f in enumerate([10, 2, 89, 0])]
    m = evaluate.compute_metrics(records, {i: 0 for i in range(4)})
    assert list(m["families"]) == ["0", "2", "10", "89"]


def test_compute_metrics_missing_predictions_names_count():
    records = [rec(i, "exist", 0) for i in range(5)]
    with pytest.raises(ValueError, match=r"2 of 5 questions have no prediction"):
        evaluate.compute_metrics(records, {0: 0, 1: 0, 2: 0})


def test_compute_metrics_refuses_unanswered_and_inconsistent_records():
    unanswered = rec(0, "exist", 0)
    unanswered["answer"] = None
    with pytest.raises(ValueError, match="no answer"):
        evaluate.compute_metrics([unanswered], {0: 0})
    wrong_type = rec(0, "exist", 0)
    wrong_type["type"] = "count"
    with pytest.raises(ValueError, match="disagrees"):
        evaluate.compute_metrics([wrong_type], {0: 0})
    with pytest.raises(ValueError, match="no questions"):
        evaluate.compute_metrics([], {})


# --- question_type_prior ------------------------------------------------------------------------
def test_prior_predicts_train_majority_per_family():
    train = (
        [rec(i, "exist", 0, family=1) for i in range(3)]  # family 1: "yes"(0) x3
        + [rec(10 + i, "exist", 1, family=1) for i in range(2)]  # "no"(1) x2
        + [rec(20 + i, "count", 7, family=2) for i in range(2)]  # family 2: 7 x2
        + [rec(30, "count", 8, family=2)]
    )
    evaluation = [
        rec(0, "exist", 0, family=1),  # majority 0: right
        rec(1, "exist", 1, family=1),  # wrong
        rec(2, "count", 7, family=2),  # majority 7: right
        rec(3, "count", 8, family=2),  # wrong
        rec(4, "count", 7, family=2),  # right
    ]
    prior = evaluate.question_type_prior(train, evaluation)
    assert prior["columns"]["exist"] == 50.0
    assert prior["columns"]["count"] == round(100 * 2 / 3, 2)
    assert prior["overall"] == 60.0
    assert prior["families"] == {"1": 50.0, "2": round(100 * 2 / 3, 2)}


def test_prior_breaks_ties_to_smaller_index_and_falls_back_for_unseen_family():
    train = [rec(0, "count", 9, family=5), rec(1, "count", 4, family=5)]
    train += [rec(2 + i, "exist", 0, family=6) for i in range(3)]  # overall majority: 0
    evaluation = [rec(0, "count", 4, family=5), rec(1, "count", 4, family=77)]
    prior = evaluate.question_type_prior(train, evaluation)
    # Family 5 ties 9/4 -> 4; family 77 is unseen -> the majority of its function, count (4),
    # not the overall majority (0).
    assert prior["overall"] == 100.0


# --- write_results ------------------------------------------------------------------------------
def _context(dataset: str = "mini-CLEVR") -> dict:
    return {
        "dataset": dataset,
        "split": "val",
        "profile": "mini",
        "parameters": 1234567,
        "commit": "abc1234",
        "questions": 7,
        "images": 3,
        "train_split": "train",
        "train_questions": 70,
        "train_images": 20,
        "checkpoint_epoch": 3,
        "machine": {"processor": "AMD EPYC", "torch": "2.14.1"},
        "precision": "bf16",
    }


def _scores(overall: float, columns: list[float | None]) -> dict:
    return {
        "overall": overall,
        "columns": dict(zip(clevr.QUESTION_TYPES, columns, strict=True)),
        "functions": {f: 50.0 for f in clevr.TERMINAL_FUNCTIONS},
        "families": {"0": 50.0},
        "counts": {"overall": 7, "columns": {}, "functions": {}, "families": {}},
    }


def _md_rows(text: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split(" | ") for line in text.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows[1:]}  # skip header


def _write(tmp_path: Path, context: dict) -> tuple[dict, dict, dict]:
    metrics = _scores(61.25, [40.0, 75.5, 55.0, 62.12, None])
    prior = _scores(30.1, [10.0, 50.0, 50.0, 12.5, 50.0])
    document = evaluate.write_results(
        metrics,
        prior,
        paper_csv=PAPER_CSV,
        out_metrics=tmp_path / "metrics.json",
        out_table_md=tmp_path / "table.md",
        out_table_csv=tmp_path / "table.csv",
        out_table_html=tmp_path / "table.html",
        out_bar_png=tmp_path / "bars.png",
        out_bar_csv=tmp_path / "bars.csv",
        context=context,
    )
    return metrics, prior, document


def test_write_results_metrics_json(tmp_path):
    metrics, prior, document = _write(tmp_path, _context())
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk == document
    assert on_disk["context"] == _context()
    assert on_disk["overall"] == 61.25
    assert on_disk["columns"] == metrics["columns"]
    assert on_disk["functions"] == metrics["functions"]
    assert on_disk["prior"] == {"overall": 30.1, "columns": prior["columns"]}
    assert (tmp_path / "bars.png").stat().st_size > 0


def test_write_results_tables_hold_every_paper_row_and_ours(tmp_path):
    _write(tmp_path, _context())
    paper = pd.read_csv(PAPER_CSV)
    numbers = ["overall", *clevr.QUESTION_TYPES]
    table = pd.read_csv(tmp_path / "table.csv")
    assert len(table) == len(paper) + 2

    paper_part = table.iloc[: len(paper)]
    assert list(paper_part["model"]) == list(paper["model"])
    assert (paper_part["data"] == "CLEVR v1.0 / test").all()
    pd.testing.assert_frame_equal(
        paper_part[numbers].reset_index(drop=True), paper[numbers], check_dtype=False
    )

    ours = table.set_index("model").loc[evaluate.RUN_MODEL]
    assert ours["data"] == "mini-CLEVR / val (profile mini)"
    assert ours["overall"] == 61.25 and ours["exist"] == 75.5 and ours["query_attribute"] == 62.12
    assert pd.isna(ours["compare_attribute"])
    prior = table.set_index("model").loc[evaluate.RUN_PRIOR]
    assert prior["data"] == "mini-CLEVR / val (profile mini)" and prior["overall"] == 30.1

    text = (tmp_path / "table.md").read_text()
    md = _md_rows(text)
    paper_text = pd.read_csv(PAPER_CSV, dtype=str, keep_default_na=False)
    for _, row in paper_text.iterrows():
        cells = md[row["model"]]
        assert cells[1] == "CLEVR v1.0 / test"
        assert cells[2:8] == [row[c] for c in numbers]
    assert md[evaluate.RUN_MODEL][1:8] == [
        "mini-CLEVR / val (profile mini)",
        "61.25",
        "40.00",
        "75.50",
        "55.00",
        "62.12",
        "",
    ]
    assert evaluate.RUN_PRIOR in md
    assert "1,234,567 parameters" in text and "abc1234" in text and "epoch 3" in text
    assert "Warning" in text and "not CLEVR v1.0" in text


def test_write_results_no_warning_on_clevr(tmp_path):
    _write(tmp_path, _context("CLEVR v1.0"))
    text = (tmp_path / "table.md").read_text()
    assert "Warning" not in text
    assert "CLEVR v1.0 / val (profile mini)" in text


def test_write_results_requires_context(tmp_path):
    context = _context()
    del context["commit"]
    with pytest.raises(ValueError, match="commit"):
        _write(tmp_path, context)
    assert not (tmp_path / "metrics.json").exists()


class _TableCells(HTMLParser):
    """The text of every cell of an HTML page's table, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def test_write_results_html_page_shows_the_markdown_table(tmp_path):
    """What Snakemake's report shows (it shows no Markdown): the same rows and notes."""
    _write(tmp_path, _context())
    page = (tmp_path / "table.html").read_text()
    parser = _TableCells()
    parser.feed(page)
    md = _md_rows((tmp_path / "table.md").read_text())
    header, *rows = parser.rows
    assert header[:3] == ["model", "data", "Overall"] and len(header) == len(evaluate.TABLE_COLUMNS)
    assert {row[0]: row for row in rows} == md
    assert "<strong>mini-CLEVR / val (profile mini)</strong>" in page
    assert "<code>abc1234</code>" in page
    assert "<blockquote><strong>Warning:</strong> this run is on mini-CLEVR" in page


def test_write_results_bar_data_is_a_row_per_bar_of_the_figure(tmp_path):
    _write(tmp_path, _context())
    bars = pd.read_csv(tmp_path / "bars.csv")
    paper_film = [m for m in pd.read_csv(PAPER_CSV)["model"] if m.startswith("CNN+GRU+FiLM")]
    series = [f"paper {m}" for m in paper_film] + ["this run", "this run's Q-type prior"]
    assert list(dict.fromkeys(bars["series"])) == series
    assert len(bars) == len(series) * 6  # Overall and the five columns
    ours = bars[bars["series"] == "this run"].set_index("column")
    assert ours.loc["Overall", "accuracy"] == 61.25 and ours.loc["Exist", "accuracy"] == 75.5
    assert pd.isna(ours.loc["Compare Attribute", "accuracy"])  # no questions: no bar
    assert ours.loc["Count", "bar"] == "Count | this run"
    assert ours.loc["Count", "data"] == "mini-CLEVR / val (profile mini)"
    assert set(bars.loc[bars["series"].str.startswith("paper"), "data"]) == {"CLEVR v1.0 / test"}


# --- The learning curve beside the official one --------------------------------------------------
def _run_record(**train_config) -> dict:
    history = [  # the first epoch from a version that logged no columns
        {"epoch": 1, "step": 10, "val_accuracy": 0.41, "train_accuracy": 0.40},
        {"epoch": 2, "step": 20, "val_accuracy": 0.47, "train_accuracy": 0.50,
         "val_columns": {"count": 0.25, "exist": 0.5}},
    ]  # fmt: skip
    return {"train_config": {"batch_size": 32, **train_config}, "world_size": 2, "history": history}


def _curve(tmp_path: Path, run: dict) -> bool:
    return evaluate.write_learning_curve(
        run,
        prior=40.0,
        context=_context(),
        out_csv=tmp_path / "curve.csv",
        out_png=tmp_path / "curve.png",
    )


def test_a_record_without_history_gives_an_empty_curve_and_a_figure(tmp_path):
    """An imported official checkpoint's record may hold no validation checks."""
    assert _curve(tmp_path, {"train_config": {"batch_size": 64}, "history": []}) is True
    assert (tmp_path / "curve.csv").read_text().splitlines() == [
        "epoch,questions_seen,val_accuracy,train_accuracy,prior"
    ]
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_learning_curve_counts_questions_seen_and_is_drawn_beside_the_official(tmp_path):
    assert _curve(tmp_path, _run_record()) is True
    # questions seen: steps x 32 per process x 2 processes
    assert (tmp_path / "curve.csv").read_text().splitlines() == [
        "epoch,questions_seen,val_accuracy,train_accuracy,prior,val_count,val_exist",
        "1,640,41.0,40.0,40.0,,",
        "2,1280,47.0,50.0,40.0,25.0,50.0",
    ]
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


def test_a_run_from_a_checkpoint_is_not_drawn_beside_the_official_curve(tmp_path):
    """Its history counts only its own questions, not those of the model it started from."""
    assert _curve(tmp_path, _run_record(init_checkpoint="results/reference/x/step2.pt")) is False
    assert (tmp_path / "curve.csv").read_text().splitlines()[1] == "1,640,41.0,40.0,40.0,,"
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    curriculum = {**_run_record(), "curriculum": [{"init_checkpoint": "a.pt"}, {}]}
    curriculum["history"] = [{**row, "split": "train"} for row in curriculum["history"]]
    assert _curve(tmp_path, curriculum) is False  # its first phase's start counts


# --- write_test_answers, records, commit --------------------------------------------------------
def test_write_test_answers_order_and_format(tmp_path):
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "yes": 4, "no": 5, "3": 6}
    records = [{"question_index": q, "answer": None} for q in (2, 0, 1)]
    out = tmp_path / "test_answers.txt"
    evaluate.write_test_answers(records, {0: 4, 1: 6, 2: 5}, vocab, out)
    assert out.read_text() == "yes\n3\nno\n"

    with pytest.raises(ValueError, match="test.json: 1 of 3 test questions have no prediction"):
        evaluate.write_test_answers(
            records, {0: 4, 1: 6}, vocab, out, records_path=tmp_path / "test.json"
        )
    with pytest.raises(ValueError, match=r"\[99\]"):
        evaluate.write_test_answers(records, {0: 4, 1: 6, 2: 99}, vocab, out)
    # Line i answers question i: indices with a gap have no line numbers to match.
    gap = [{"question_index": q, "answer": None} for q in (0, 2)]
    with pytest.raises(ValueError, match=r"not 0\.\.1"):
        evaluate.write_test_answers(gap, {0: 4, 2: 5}, vocab, out)
    assert out.read_text() == "yes\n3\nno\n"  # the refused calls left the file as it was


def test_read_encoded_split_names_file(tmp_path):
    path = tmp_path / "val.json"
    path.write_text(json.dumps({"split": "val", "questions": [rec(0, "exist", 0)]}))
    assert read_encoded_split(path) == [rec(0, "exist", 0)]
    path.write_text("{not json")
    with pytest.raises(clevr.ClevrFormatError, match="val.json"):
        read_encoded_split(path)
    with pytest.raises(clevr.ClevrFormatError, match="not found"):
        read_encoded_split(tmp_path / "missing.json")


def test_git_commit_outside_a_repo_is_unknown(tmp_path):
    assert evaluate.git_commit(tmp_path) == "unknown"


def test_git_commit_is_marked_dirty_by_uncommitted_code_only(tmp_path):
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    git("init", "-q")
    (tmp_path / "filmclevr").mkdir()
    (tmp_path / "filmclevr" / "model.py").write_text("WIDTH = 1\n")
    (tmp_path / "README.md").write_text("about\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "code")
    commit = git("rev-parse", "--short", "HEAD")
    assert evaluate.git_commit(tmp_path) == commit
    (tmp_path / "README.md").write_text("about, edited\n")  # documentation: still that code
    (tmp_path / "notes.py").write_text("untracked = True\n")  # never committed: not the code
    assert evaluate.git_commit(tmp_path) == commit
    (tmp_path / "filmclevr" / "model.py").write_text("WIDTH = 2\n")
    assert evaluate.git_commit(tmp_path / "filmclevr") == f"{commit}-dirty"  # from any folder


def test_is_clevr_labels():
    assert evaluate.is_clevr("CLEVR v1.0")
    assert not evaluate.is_clevr("mini-CLEVR")


# --- predict ------------------------------------------------------------------------------------
class FakeBatch(NamedTuple):
    """The fields of shards.Batch that predict reads."""

    images: torch.Tensor
    questions: torch.Tensor
    lengths: torch.Tensor
    answers: torch.Tensor
    types: torch.Tensor
    question_indices: torch.Tensor


class EchoModel(torch.nn.Module):
    """Answers the question's second token; records the mode and grad state it ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, images, questions, lengths):
        self.seen.append((self.training, torch.is_grad_enabled()))
        return torch.nn.functional.one_hot(questions[:, 1], 10).float() * self.scale


def _batch(indices: list[int], answers: list[int]) -> FakeBatch:
    n = len(indices)
    return FakeBatch(
        images=torch.zeros(n, 3, 4, 4, dtype=torch.uint8),
        questions=torch.tensor([[1, a, 2] for a in answers]),
        lengths=torch.full((n,), 3),
        answers=torch.tensor(answers),
        types=torch.zeros(n, dtype=torch.int64),
        question_indices=torch.tensor(indices),
    )


def test_predict_maps_question_index_to_argmax_in_eval_mode():
    model = EchoModel().train()
    loader = [_batch([5, 3], [7, 2]), _batch([9], [4])]
    assert evaluate.predict(model, loader, "cpu") == {5: 7, 3: 2, 9: 4}
    assert model.seen == [(False, False), (False, False)]


def test_predict_refuses_repeated_questions():
    with pytest.raises(ValueError, match="question 5 twice"):
        evaluate.predict(EchoModel(), [_batch([5], [1]), _batch([5], [1])], "cpu")


# --- evaluate() on a tiny trained checkpoint ----------------------------------------------------
TINY_MODEL = tiny_film_config(image_size=16)
TINY_TRAIN = tiny_train_config(max_epochs=1)
IMAGES = {"train": 8, "val": 4, "test": 3, "testB": 2}  # testB: a CoGenT test split
QUESTIONS_PER_IMAGE = 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tokens, shards (train, val, test) and a one-epoch checkpoint of a tiny model."""
    root = tmp_path_factory.mktemp("tiny")
    words = ["How", "Is", "a", "cube", "many", "there"]
    tiny_trained_run(root, words, IMAGES, QUESTIONS_PER_IMAGE, TINY_MODEL, TINY_TRAIN)
    return {"root": root, "shards": root / "shards", "tokens": root / "tokens"}


def test_evaluate_tiny_checkpoint(tiny_run, tmp_path):
    checkpoint = load_checkpoint(tiny_run["root"] / "film.pt")
    result = evaluate.evaluate(
        tiny_run["root"] / "film.pt",
        tiny_run["shards"],
        tiny_run["tokens"],
        split="val",
        batch_size=TINY_TRAIN.batch_size,
        device="cpu",
        profile="tiny",
        source="mini",
        predictions_dir=tmp_path / "predictions",
    )
    n_val = IMAGES["val"] * QUESTIONS_PER_IMAGE
    assert sorted(result.predictions) == list(range(n_val))
    # The same model on the same questions: the training loop's own validation agrees.
    best = result.history[checkpoint["epoch"] - 1]
    assert result.metrics["overall"] == round(100 * best["val_accuracy"], 2)
    assert result.metrics["counts"]["overall"] == n_val
    assert result.context == {
        "dataset": "mini-CLEVR",  # from the tokens' report, i.e. the data's own info
        "split": "val",
        "profile": "tiny",
        "parameters": checkpoint["parameters"]["total"],
        "commit": evaluate.git_commit(),
        "questions": n_val,
        "images": IMAGES["val"],
        "train_split": "train",
        "train_questions": IMAGES["train"] * QUESTIONS_PER_IMAGE,
        "train_images": IMAGES["train"],
        "checkpoint_epoch": checkpoint["epoch"],
        "machine": checkpoint["machine"],
        "precision": "float32",  # the tiny recipe trains without bf16
    }
    assert set(checkpoint["machine"]) == {"processor", "torch"}

    answers = {i: a for a, i in checkpoint["vocab"]["answer_token_to_idx"].items()}
    val = json.loads((tmp_path / "predictions" / "val_predictions.json").read_text())
    assert [row["question_index"] for row in val["predictions"]] == list(range(n_val))
    assert all(
        row["predicted"] == answers[result.predictions[row["question_index"]]]
        for row in val["predictions"]
    )
    # The test splits' answers are the submission's (tests/test_submission.py), not here.
    assert [p.name for p in (tmp_path / "predictions").iterdir()] == ["val_predictions.json"]

    document = evaluate.write_results(
        result.metrics,
        result.prior,
        paper_csv=PAPER_CSV,
        out_metrics=tmp_path / "metrics.json",
        out_table_md=tmp_path / "table.md",
        out_table_csv=tmp_path / "table.csv",
        out_table_html=tmp_path / "table.html",
        out_bar_png=tmp_path / "bars.png",
        out_bar_csv=tmp_path / "bars.csv",
        context=result.context,
    )
    assert document["context"]["profile"] == "tiny"
    table = (tmp_path / "table.md").read_text()
    assert "mini-CLEVR / val (profile tiny)" in table
    assert f"{n_val} questions on {IMAGES['val']} images; trained on train (24 questions" in table
    assert f"with torch {checkpoint['machine']['torch']} in float32." in table


@pytest.mark.parametrize("split", ["test", "testB"])
def test_evaluate_refuses_a_test_split(tiny_run, split):
    with pytest.raises(ValueError, match=f"the {split} split has no answers"):
        evaluate.evaluate(
            tiny_run["root"] / "film.pt",
            tiny_run["shards"],
            tiny_run["tokens"],
            split=split,
            batch_size=8,
            device="cpu",
        )


def test_prior_counts_the_named_training_split(tiny_run):
    tokens = tiny_run["tokens"]
    val = read_encoded_split(tokens / "val.json")
    kwargs = dict(split="val", batch_size=8, device="cpu")
    default = evaluate.evaluate(tiny_run["root"] / "film.pt", tiny_run["shards"], tokens, **kwargs)
    train_records = read_encoded_split(tokens / "train.json")
    assert default.prior == evaluate.question_type_prior(train_records, val)
    # CoGenT-style layouts name their training split; the prior must count that one.
    on_val = evaluate.evaluate(
        tiny_run["root"] / "film.pt", tiny_run["shards"], tokens, train_split="val", **kwargs
    )
    assert on_val.prior == evaluate.question_type_prior(val, val)
    assert on_val.prior != default.prior
    with pytest.raises(ValueError, match=r"trainA\.json"):
        evaluate.evaluate(
            tiny_run["root"] / "film.pt", tiny_run["shards"], tokens, train_split="trainA", **kwargs
        )


def test_results_label_the_data_they_come_from_not_the_parameters(tiny_run, tmp_path):
    """A run on mini-CLEVR with get_data.source: clevr (or the other way round) is refused."""
    kwargs = dict(split="val", batch_size=8, device="cpu")
    film = tiny_run["root"] / "film.pt"
    with pytest.raises(ValueError, match=r"report\.json: the questions are mini-CLEVR, but "):
        evaluate.evaluate(film, tiny_run["shards"], tiny_run["tokens"], source="clevr", **kwargs)
    evaluate.check_source("CLEVR v1.0", "clevr", Path("report.json"))
    evaluate.check_source("CLEVR-CoGenT v1.0", "clevr", Path("report.json"))
    with pytest.raises(ValueError, match="CLEVR v1.0, but get_data.source is 'mini'"):
        evaluate.check_source("CLEVR v1.0", "mini", Path("report.json"))
    # Tokens written before reports named their data cannot label a result.
    old = tmp_path / "tokens"
    shutil.copytree(tiny_run["tokens"], old)
    (old / "report.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(ValueError, match="rerun tokenize_questions"):
        evaluate.evaluate(film, tiny_run["shards"], old, **kwargs)


def test_tokens_of_another_vocabulary_are_refused(tiny_run, tmp_path):
    """Questions encoded with another vocabulary than the model's would be scored as other
    words, without a word of warning."""
    tokens = tmp_path / "tokens"
    shutil.copytree(tiny_run["tokens"], tokens)
    permute_question_words(tokens / "vocab.json")
    film = tiny_run["root"] / "film.pt"
    with pytest.raises(ValueError, match=rf"{tokens / 'vocab.json'}: .* of {film} was trained on"):
        evaluate.evaluate(film, tiny_run["shards"], tokens, split="val", batch_size=8, device="cpu")


def test_the_checked_loader_holds_every_question_to_the_model(tiny_run):
    """The one loader of evaluation, CoGenT's report and CLEVR-Humans': each image, token and
    answer checked against what the model reads, not only the forward pass's image size."""
    import dataclasses

    from filmclevr.checkpoint import model_from_checkpoint
    from filmclevr.model import build_model

    model, _ = model_from_checkpoint(tiny_run["root"] / "film.pt")
    batches = list(evaluate.checked_loader(model, tiny_run["shards"], "val", 8))
    assert sum(len(b.answers) for b in batches) == IMAGES["val"] * QUESTIONS_PER_IMAGE
    config, words, answers = model.config, model.vocab_size, model.num_answers
    for other, refused in [
        (build_model(config, 3, answers), r"has token index \d+, outside the vocabulary's 3"),
        (build_model(dataclasses.replace(config, image_size=2 * config.image_size), words,
                     answers), rf"expected {2 * config.image_size}x{2 * config.image_size}"),
        (build_model(config, words, 1), "answer"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=refused):
            list(evaluate.checked_loader(other, tiny_run["shards"], "val", 8))


@pytest.mark.parametrize(
    ("train_config", "precision"),
    [({"bf16": True}, "bf16"), ({"bf16": False}, "float32"), ({}, None), (None, None)],
)
def test_training_precision_is_the_recipe_as_the_run_resolved_it(train_config, precision):
    checkpoint = {} if train_config is None else {"train_config": train_config}
    assert evaluate.training_precision(checkpoint) == precision
