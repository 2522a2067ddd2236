"""Evaluation: predictions, accuracy per paper column / function / family, metrics and tables.

The paper's Table 1 (Perez et al., AAAI 2018) reports accuracy on CLEVR's test split in five
columns; a column pools the questions of its member functions (SPEC §2). The test answers are
private, so reproductions score val (`filmclevr.submission` writes the test predictions a
dataset's authors score); every number written here carries its context (dataset, split,
profile, parameter count, commit, checkpoint epoch) so a mini-CLEVR result cannot pass for a
CLEVR one.

The core (`compute_metrics`, `question_type_prior`, `write_results`, `write_test_answers`) is
pure data in, files out; only `predict`, `split_predictions` (and its checked form) and
`evaluate` touch torch.
"""

from __future__ import annotations

import dataclasses
import html
import logging
import re
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filmclevr import clevr
from filmclevr.figures import (
    BAR_COLUMNS,
    COLUMN_TITLES,
    BarSeries,
    accuracy_bar_series,
    plot_accuracy_bars,
    plot_curve_vs_paper,
)
from filmclevr.fileio import atomic_dir, read_json, write_json_atomic, write_text_atomic
from filmclevr.tokenize import iter_encoded_split, read_encoded_split

if TYPE_CHECKING:
    import pandas
    import torch

    from filmclevr.model import FiLMedNet
    from filmclevr.shards import Batch

log = logging.getLogger(__name__)

COLUMNS: tuple[str, ...] = tuple(clevr.QUESTION_TYPES)
PAPER_TABLE1 = clevr.PAPER_TABLE1
# The official model's validation accuracy per epoch (the paper's appendix Figure 11).
PAPER_CURVE = PAPER_TABLE1.with_name("learning_curve.csv")
PAPER_SOURCE = "CLEVR v1.0 / test"  # the split of every row of the paper's Table 1
TABLE_COLUMNS: tuple[str, ...] = ("model", "data", "overall", *COLUMNS, "notes")
CONTEXT_KEYS: tuple[str, ...] = (
    "dataset",
    "split",
    "profile",
    "parameters",
    "commit",
    "questions",
    "images",
    "train_split",
    "train_questions",
    "train_images",
    "checkpoint_epoch",
    "machine",
    "precision",
)
RUN_MODEL = "This run: CNN+GRU+FiLM (raw pixels)"
RUN_PRIOR = "This run: Q-type prior (train majority per family)"


def training_precision(checkpoint: Mapping[str, Any]) -> str | None:
    """The numeric path a checkpoint was trained on, "bf16" or "float32" (None where its
    checkpoint does not say): its recipe's `bf16` as the run resolved it, false on a CPU that
    would emulate bfloat16. Runs of one path spread alike over seeds, the two paths apart."""
    recipe = checkpoint.get("train_config") or {}
    return precision_name(recipe["bf16"]) if "bf16" in recipe else None


def precision_name(bf16: bool) -> str:
    """What results call a numeric path: "bf16" or "float32"."""
    return "bf16" if bf16 else "float32"


# --- Metrics ------------------------------------------------------------------------------------
def _percent(correct: int, total: int) -> float | None:
    """Accuracy in percent, 2 decimals; None when there is nothing to score."""
    return round(100.0 * correct / total, 2) if total else None


def compute_metrics(records: list[dict[str, Any]], predictions: Mapping[int, int]) -> dict:
    """Accuracy overall, per paper column, per terminal function and per family (SPEC §2).

    A column pools its questions: correct / total over all its member functions, not the mean of
    the functions' accuracies. Accuracies are percentages (2 decimals), None where a group has no
    questions; `counts` holds the number of questions behind each accuracy.

    Args:
        records: encoded-question records (`data/tokens/{split}.json`) with `question_index`,
            `answer`, `type`, `function` and `family`.
        predictions: question_index -> predicted answer index; one per record.

    Returns:
        {"overall", "columns", "functions", "families", "counts": {"overall", "columns",
        "functions", "families"}}; family keys are strings (JSON object keys).

    Raises:
        ValueError: a record lacks its prediction or its answer, or has an unknown function.
    """
    if not records:
        raise ValueError("no questions to score")
    missing = [r["question_index"] for r in records if r["question_index"] not in predictions]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(records)} questions have no prediction "
            f"(first question_index: {missing[0]})"
        )
    total: Counter[tuple[str, Any]] = Counter()
    correct: Counter[tuple[str, Any]] = Counter()
    for r in records:
        if r.get("answer") is None:
            raise ValueError(f"question {r['question_index']} has no answer (a test split?)")
        function = r.get("function")
        if function not in clevr.TYPE_OF_FUNCTION:
            raise ValueError(
                f"question {r['question_index']}: {function!r} is not a terminal function"
            )
        column = clevr.TYPE_OF_FUNCTION[function]
        if r.get("type") is not None and r["type"] != column:
            raise ValueError(
                f"question {r['question_index']}: type {r['type']!r} disagrees with its "
                f"function {function!r} ({column})"
            )
        hit = int(predictions[r["question_index"]] == r["answer"])
        for key in (
            ("overall", None),
            ("columns", column),
            ("functions", function),
            ("families", str(r["family"])),
        ):
            total[key] += 1
            correct[key] += hit

    families = sorted({k for g, k in total if g == "families"}, key=int)
    groups = {"columns": COLUMNS, "functions": clevr.TERMINAL_FUNCTIONS, "families": families}
    metrics: dict[str, Any] = {
        "overall": _percent(correct["overall", None], total["overall", None])
    }
    counts: dict[str, Any] = {"overall": total["overall", None]}
    for group, keys in groups.items():
        metrics[group] = {k: _percent(correct[group, k], total[group, k]) for k in keys}
        counts[group] = {k: total[group, k] for k in keys}
    metrics["counts"] = counts
    return metrics


def question_type_prior(
    train_records: Iterable[dict[str, Any]], eval_records: list[dict[str, Any]]
) -> dict:
    """Score the paper's "Q-type baseline" (`clevr.majority_answer_by_family`) on `eval_records`.

    Returns:
        `compute_metrics` of those predictions on `eval_records` (same breakdown).
    """
    answered = (r for r in train_records if r.get("answer") is not None)
    predict = clevr.majority_answer_by_family(
        (r["family"], r["function"], r["answer"]) for r in answered
    )
    predictions = {r["question_index"]: predict(r["family"], r["function"]) for r in eval_records}
    return compute_metrics(eval_records, predictions)


def check_answers(records: Iterable[Mapping[str, Any]], num_answers: int, path: Path) -> None:
    """Refuse answers that do not index the model's answer vocabulary: no prediction could
    match them, so they would be scored as simply wrong.

    Raises:
        ValueError: naming `path` (the records' tokens file) and the question.
    """
    for r in records:
        answer = r.get("answer")
        if answer is not None and (
            not isinstance(answer, int) or isinstance(answer, bool) or not 0 <= answer < num_answers
        ):
            raise ValueError(
                f"{path}: question {r['question_index']} has answer index {answer!r}, outside "
                f"the checkpoint's {num_answers} answers; were the tokens made with another "
                "vocabulary? rerun tokenize_questions"
            )


def check_predicted_questions(
    records: Iterable[Mapping[str, Any]], predictions: Mapping[int, int], path: Path, shards: Path
) -> None:
    """Refuse shards that hold questions the tokens file `path` does not: they would be
    predicted and silently left out of the scores."""
    extra = predictions.keys() - {r["question_index"] for r in records}
    if extra:
        raise ValueError(
            f"{shards}: the shards hold {len(extra)} questions that {path} does not (first "
            f"question_index: {min(extra)}); rerun write_shards"
        )


# --- Context and labels -----------------------------------------------------------------------
# What a result can depend on, as git pathspecs: the package (its data files included), the
# stages, the workflow of each engine and the scripts of the studies and benchmarks. Tests and
# documentation are not; filmclevr-reference holds a kept run to the same paths.
CODE_PATHSPECS = (
    ":(top)filmclevr",
    ":(top)stages",
    ":(top)workflow",
    ":(top)Snakefile",
    ":(top)dvc.yaml",
    ":(top,glob)studies/**/*.py",
    ":(top,glob)benchmarks/**/*.py",
)


def git_commit(cwd: str | Path | None = None) -> str:
    """Short commit hash of the code (`git rev-parse --short HEAD`), with "-dirty" when the code
    (CODE_PATHSPECS) has uncommitted changes, as `git describe --dirty` marks them, so that a
    result never names a commit whose code could not have produced it; "unknown" outside a
    repo."""
    where = cwd if cwd is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = git(
            "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--",
            *CODE_PATHSPECS,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not commit:
        return "unknown"
    return f"{commit}-dirty" if changed else commit


def is_clevr(dataset: str) -> bool:
    """Whether a dataset name (`clevr.dataset_name`) is CLEVR's own data (CoGenT included)."""
    return dataset.strip().lower().startswith("clevr")


def check_source(dataset: str, source: str, tokens_report: Path) -> None:
    """Refuse results whose data is not what the parameters' `get_data.source` says.

    Raises:
        ValueError: naming the tokens report that says which data it was.
    """
    expected = {"mini": "the mini-CLEVR generator", "clevr": "CLEVR's release"}[source]
    if is_clevr(dataset) != (source == "clevr"):
        raise ValueError(
            f"{tokens_report}: the questions are {dataset}, but get_data.source is {source!r} "
            f"({expected}); rerun the pipeline from get_data so results label their own data"
        )


def read_tokens_report(tokens_dir: Path) -> dict[str, Any]:
    """`tokenize_questions`' report.json: the dataset and per-split counts.

    Raises:
        ValueError: missing, malformed, or written before reports named their dataset.
    """
    path = tokens_dir / "report.json"
    report = read_json(path, clevr.ClevrFormatError)
    if not isinstance(report, dict) or "dataset" not in report or "splits" not in report:
        raise clevr.ClevrFormatError(
            f"{path}: no dataset name and split counts; rerun tokenize_questions"
        )
    return report


def run_label(context: Mapping[str, Any]) -> str:
    """Dataset / split (profile) label of a run, e.g. "mini-CLEVR / val (profile mini)"."""
    return f"{context['dataset']} / {context['split']} (profile {context['profile']})"


# --- Files -------------------------------------------------------------------------------------
def read_paper_table(path: str | Path) -> pandas.DataFrame:
    """The paper's Table 1 as written in its CSV, numbers kept as the CSV's text."""
    import pandas as pd

    path = Path(path)
    try:
        # Text, not floats: the table shows the paper's numbers exactly as transcribed.
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError) as e:
        raise ValueError(f"{path}: cannot read the paper table ({e})") from None
    expected = ["model", "overall", *COLUMNS, "notes"]
    if list(table.columns) != expected:
        raise ValueError(f"{path}: expected columns {expected}, found {list(table.columns)}")
    return table


def _format(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def results_table(
    metrics: Mapping[str, Any],
    prior: Mapping[str, Any],
    paper: pandas.DataFrame,
    context: Mapping[str, Any],
) -> pandas.DataFrame:
    """Paper rows (labelled CLEVR v1.0 / test) followed by this run's model and prior rows."""
    import pandas as pd

    label = run_label(context)
    rows = paper.assign(data=PAPER_SOURCE)[list(TABLE_COLUMNS)].to_dict("records")
    notes = (
        f"{context['parameters']:,} parameters; epoch {context['checkpoint_epoch']}; "
        f"commit {context['commit']}"
    )
    for model, scores, note in ((RUN_MODEL, metrics, notes), (RUN_PRIOR, prior, "no model")):
        rows.append(
            {
                "model": model,
                "data": label,
                "overall": _format(scores["overall"]),
                **{c: _format(scores["columns"][c]) for c in COLUMNS},
                "notes": note,
            }
        )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _notes(context: Mapping[str, Any]) -> list[str]:
    """The paragraphs above the table (Markdown: **bold**, `code`, > quote): the run, and
    what its numbers may be compared with."""
    notes = [
        f"This run: **{run_label(context)}**, {context['questions']:,} questions on "
        f"{context['images']:,} images; trained on {context['train_split']} "
        f"({_count(context['train_questions'])} questions on {_count(context['train_images'])} "
        f"images); {context['parameters']:,} parameters; checkpoint epoch "
        f"{context['checkpoint_epoch']}; commit `{context['commit']}`; trained on "
        f"{context['machine'].get('processor', 'unknown')} with torch "
        f"{context['machine'].get('torch', 'unknown')}"
        + (f" in {context['precision']}." if context.get("precision") else ".")
    ]
    if not is_clevr(str(context["dataset"])):
        notes.append(
            f"> **Warning:** this run is on {context['dataset']}, not CLEVR v1.0. Its numbers are "
            "not comparable to the paper's rows."
        )
    if context["split"] != "test":
        notes.append(
            f"The paper's rows are CLEVR v1.0 test; this run scores {context['split']} "
            "(CLEVR's test answers are private)."
        )
    return notes


TABLE_TITLE = "FiLM on CLEVR: accuracy (%)"


def _header() -> list[str]:
    return [COLUMN_TITLES.get(c, c).replace("\n", " ") for c in TABLE_COLUMNS]


def _markdown(table: pandas.DataFrame, context: Mapping[str, Any]) -> str:
    lines = [f"# {TABLE_TITLE}", ""]
    for note in _notes(context):
        lines += [note, ""]
    header = _header()
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
    return "\n".join(lines) + "\n"


def _inline_html(markdown: str) -> str:
    """A note's Markdown (`_notes`: **bold** and `code` only) as HTML."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(markdown, quote=False))
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def _html(table: pandas.DataFrame, context: Mapping[str, Any]) -> str:
    """The Markdown table's content as a page (what Snakemake's report shows; it shows no
    Markdown)."""
    paragraphs = []
    for note in _notes(context):
        if note.startswith("> "):
            paragraphs.append(f"<blockquote>{_inline_html(note[2:])}</blockquote>")
        else:
            paragraphs.append(f"<p>{_inline_html(note)}</p>")
    rows = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
        for row in table.itertuples(index=False)
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in _header())
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{TABLE_TITLE}</title>\n<style>"
        "body{font-family:sans-serif;font-size:14px} table{border-collapse:collapse}"
        " th,td{border:1px solid #ccc;padding:3px 6px} td{text-align:right}"
        " td:first-child,td:nth-child(2),td:last-child{text-align:left}"
        " tr:nth-last-child(-n+2){font-weight:bold}</style></head>\n<body>\n"
        f"<h1>{TABLE_TITLE}</h1>\n" + "\n".join(paragraphs) + "\n"
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>\n"
        "</body></html>\n"
    )


def _bar_rows(series: list[BarSeries]) -> str:
    """The accuracy bar chart's data, one row per bar (results/accuracy.csv): `bar` names it
    for DVC's bar chart ("Count | this run"); `accuracy` is empty for a column without
    questions."""
    import pandas as pd

    titles = {column: COLUMN_TITLES[column].replace("\n", " ") for column in BAR_COLUMNS}
    rows = [
        {
            "column": titles[column],
            "series": s.short,
            "data": s.data,
            "accuracy": value,
            "bar": f"{titles[column]} | {s.short}",
        }
        for s in series
        for column, value in zip(BAR_COLUMNS, s.values, strict=True)
    ]
    return pd.DataFrame(rows).to_csv(index=False, lineterminator="\n")


def write_results(
    metrics: Mapping[str, Any],
    prior: Mapping[str, Any],
    *,
    paper_csv: Path,
    out_metrics: Path,
    out_table_md: Path,
    out_table_csv: Path,
    out_table_html: Path,
    out_bar_png: Path,
    out_bar_csv: Path,
    context: Mapping[str, Any],
) -> dict:
    """Write metrics.json (a DVC metric), the results table (md, csv and html) and the bar
    chart with its data (one row per bar).

    Args:
        metrics: `compute_metrics` of the model's predictions.
        prior: `question_type_prior` on the same questions.
        paper_csv: `filmclevr/paper/table1_clevr_test.csv` (its numbers are never retyped).
        context: dataset, split, profile, parameters, commit, questions, checkpoint_epoch.

    Returns:
        The metrics.json document.
    """
    missing = [k for k in CONTEXT_KEYS if k not in context]
    if missing:
        raise ValueError(f"context lacks {', '.join(missing)}")
    document = {
        "context": {k: context[k] for k in CONTEXT_KEYS},
        "overall": metrics["overall"],
        "columns": dict(metrics["columns"]),
        "functions": dict(metrics["functions"]),
        "families": dict(metrics["families"]),
        "counts": dict(metrics["counts"]),
        "prior": {"overall": prior["overall"], "columns": dict(prior["columns"])},
    }
    paper = read_paper_table(paper_csv)
    table = results_table(metrics, prior, paper, context)
    label = run_label(context)
    plot_accuracy_bars(document, paper, out_bar_png, label=label)
    write_text_atomic(out_bar_csv, _bar_rows(accuracy_bar_series(document, paper, label)))
    write_text_atomic(out_table_csv, table.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(out_table_md, _markdown(table, context))
    write_text_atomic(out_table_html, _html(table, context))
    write_json_atomic(out_metrics, document)  # last: the DVC metric marks a complete run
    log.info("overall accuracy %s%% on %s", document["overall"], run_label(context))
    return document


def started_from_checkpoint(run: Mapping[str, Any]) -> bool:
    """Whether a trained run (its checkpoint's record: models/film.json) started from another
    checkpoint's weights (`init_checkpoint`) rather than the paper's init."""
    first = run["curriculum"][0] if "curriculum" in run else run["train_config"]
    return bool(first.get("init_checkpoint"))


def questions_seen(run: Mapping[str, Any]) -> list[int]:
    """Training questions seen by the end of each epoch of a run's record (models/film.json);
    a curriculum's history counts them over its phases (filmclevr/curriculum.py)."""
    batch = run["train_config"]["batch_size"] * run.get("world_size", 1)
    return [row.get("questions_seen", row["step"] * batch) for row in run["history"]]


def learning_curve(run: Mapping[str, Any], prior: float | None) -> pandas.DataFrame:
    """Accuracy per epoch (%) against training questions seen, from a run's record
    (models/film.json: its history, recipe and processes), with the Q-type prior's overall
    accuracy on every row; a column per paper column the history logged, and for a curriculum
    the split each epoch trained on."""
    import pandas as pd

    history = run["history"]
    curve = pd.DataFrame(
        {
            "epoch": [row["epoch"] for row in history],
            "questions_seen": questions_seen(run),
            "val_accuracy": [100 * row["val_accuracy"] for row in history],
            "train_accuracy": [100 * row["train_accuracy"] for row in history],
            "prior": prior,
        }
    )
    for column in clevr.QUESTION_TYPES:  # per paper column, for runs that logged them
        values = [row.get("val_columns", {}).get(column) for row in history]
        if any(v is not None for v in values):
            curve[f"val_{column}"] = [None if v is None else 100 * v for v in values]
    if "curriculum" in run:  # each row's phase: the split it trained on
        curve.insert(1, "trained_on", [row["split"] for row in history])
    return curve


def write_learning_curve(
    run: Mapping[str, Any],
    *,
    prior: float | None,
    context: Mapping[str, Any],
    out_csv: Path,
    out_png: Path,
) -> bool:
    """The learning curve (`learning_curve`) as a CSV, and drawn beside the official one (the
    paper's appendix Figure 11, PAPER_CURVE) against training questions seen.

    A run that started from a checkpoint is drawn alone: its history counts its own questions
    only, not those its starting model had seen, so beside the official curve it would sit
    misleadingly far above it. A curriculum from scratch is drawn beside it: its history counts
    the questions of all its phases.

    Args:
        run: the checkpoint's record, models/film.json.
        prior: the Q-type prior's overall accuracy (%), drawn as a line; None: none drawn.
        context: the evaluation's context (its dataset and profile name the curve).

    Returns:
        Whether the official curve was drawn beside this run's.
    """
    import pandas as pd

    curve = learning_curve(run, prior)
    write_text_atomic(out_csv, curve.to_csv(index=False, lineterminator="\n"))
    beside = not started_from_checkpoint(run)
    label = f"this run: {context.get('dataset')}, profile {context.get('profile')}"
    if "official" in run:  # an imported checkpoint's record: the official run's own checks
        label = f"the official code's run of this model ({run['official'].get('source')})"
    paper = pd.read_csv(PAPER_CURVE) if beside else None
    plot_curve_vs_paper(curve, paper, out_png, label=label)
    return beside


def write_test_answers(
    records_in_question_order: Iterable[Mapping[str, Any]],
    predictions: Mapping[int, int],
    answer_vocab: Mapping[str, int],
    out_txt: Path,
    *,
    records_path: str | Path = "the test records",
) -> None:
    """Write one predicted answer word per line, in question-index order (CLEVR's test format).

    Args:
        records_in_question_order: the split's records; sorted here by question_index anyway,
            which must run 0..N-1, as in CLEVR's question files.
        predictions: question_index -> answer index.
        answer_vocab: `answer_token_to_idx` of vocab.json.
        records_path: the file the records came from, named by every error.
    """
    words = {index: token for token, index in answer_vocab.items()}
    if len(words) != len(answer_vocab):
        raise ValueError(f"{records_path}: the answer vocabulary maps two answers to one index")
    indices = sorted(r["question_index"] for r in records_in_question_order)
    if len(set(indices)) != len(indices):
        raise ValueError(f"{records_path}: question indices repeat")
    if indices != list(range(len(indices))):  # line i must answer question i
        raise ValueError(
            f"{records_path}: the question indices are not 0..{len(indices) - 1}: line numbers "
            "would not be question indices"
        )
    missing = [q for q in indices if q not in predictions]
    if missing:
        raise ValueError(
            f"{records_path}: {len(missing)} of {len(indices)} test questions have no prediction"
        )
    unknown = sorted({predictions[q] for q in indices} - words.keys())
    if unknown:
        raise ValueError(
            f"{records_path}: predicted answer indices {unknown} are not in the answer vocabulary"
        )
    write_text_atomic(out_txt, "".join(f"{words[predictions[q]]}\n" for q in indices))


# --- Model side ---------------------------------------------------------------------------------
def predict(model: torch.nn.Module, loader: Iterable, device: torch.device | str) -> dict[int, int]:
    """Predicted answer index per question_index, in eval mode without gradients.

    Args:
        model: a `FiLMedNet` (images, questions, lengths) -> logits.
        loader: yields `shards.Batch`es.
    """
    import torch

    model.eval()
    predictions: dict[int, int] = {}
    with torch.inference_mode():
        for batch in loader:
            logits = model(
                batch.images.to(device, non_blocking=True),
                batch.questions.to(device, non_blocking=True),
                batch.lengths.to(device, non_blocking=True),
            )
            answers = logits.argmax(dim=1).cpu().tolist()
            for q, a in zip(batch.question_indices.tolist(), answers, strict=True):
                if q in predictions:
                    raise ValueError(f"the loader yielded question {q} twice")
                predictions[q] = a
    return predictions


def split_predictions(
    model: torch.nn.Module,
    shards_dir: Path,
    split: str,
    *,
    batch_size: int,
    num_answers: int,
    device: torch.device | str,
) -> dict[int, int]:
    """`predict` on every question of `split` in `shards_dir`: each exactly once, in shard
    order, even under torch.distributed; every shard checked against its index, every image
    and answer against the model (`num_answers`: its answer vocabulary's size), every token
    against its embedding."""
    return predict(model, checked_loader(model, shards_dir, split, batch_size, num_answers), device)


def checked_loader(
    model: FiLMedNet, shards_dir: Path, split: str, batch_size: int, num_answers: int | None = None
) -> Iterable[Batch]:
    """Every question of `split` in `shards_dir` once, in shard order, each image, token and
    answer checked against what `model` reads (`num_answers`: its answer vocabulary's size,
    by default its output's)."""
    from filmclevr.shards import question_loader, shard_paths

    return question_loader(
        shard_paths(shards_dir, split),
        batch_size=batch_size,
        shuffle=False,
        split_by_node=False,
        image_size=model.config.image_size,
        vocab_size=model.vocab_size,
        num_answers=model.num_answers if num_answers is None else num_answers,
    )


def checked_split_predictions(
    model: torch.nn.Module,
    shards_dir: Path,
    split: str,
    records: list[dict[str, Any]],
    records_path: Path,
    *,
    batch_size: int,
    num_answers: int,
    device: torch.device | str,
) -> dict[int, int]:
    """`split_predictions` of the questions `records` (read from `records_path`) hold, refusing
    shards that hold others (`check_predicted_questions`)."""
    predictions = split_predictions(
        model, shards_dir, split, batch_size=batch_size, num_answers=num_answers, device=device
    )
    check_predicted_questions(records, predictions, records_path, shards_dir)
    return predictions


@dataclasses.dataclass
class Evaluation:
    """What `evaluate` computed; `write_results` turns it into files."""

    metrics: dict
    prior: dict
    context: dict
    predictions: dict[int, int]
    history: list[dict]


def evaluate(
    checkpoint: Path,
    shards_dir: Path,
    tokens_dir: Path,
    *,
    split: str,
    batch_size: int,
    device: str = "auto",
    profile: str = "unknown",
    source: str | None = None,
    predictions_dir: Path | None = None,
    train_split: str = "train",
) -> Evaluation:
    """Score a checkpoint on `split` and build the Q-type prior from the training split.

    With `predictions_dir`, that folder is replaced by one holding `{split}_predictions.json`
    (question_index, predicted and correct answer words, function, family). The test splits,
    whose answers are private, are predicted by `filmclevr.submission` (the submit_test stage).

    Args:
        checkpoint: `models/film.pt`.
        shards_dir: holds `index.json` and the shards.
        tokens_dir: holds `vocab.json` (the checkpoint's; another is refused) and
            `{split}.json` (and `{train_split}.json`).
        profile: the parameter profile's name, carried into the context. What the context
            says about the data (dataset, question and image counts) comes from the data
            itself: the tokenizer's report of the question files' own `info`.
        source: `get_data.source` ("mini" or "clevr"); when given, data of the other kind is
            refused, so a result cannot carry a label its data contradicts.
        train_split: the split whose answers the Q-type prior counts; the workflow passes the
            first entry of `get_data.splits` (CoGenT: trainA).
    """
    from filmclevr.checkpoint import check_tokens_vocab, model_from_checkpoint
    from filmclevr.distributed import machine_description, resolve_device
    from filmclevr.model import count_parameters

    if clevr.is_test_split(split):
        raise ValueError(
            f"the {split} split has no answers to score; evaluate val (the submit_test stage "
            "writes the test splits' predictions, to be scored by whoever holds the answers)"
        )
    shards_dir, tokens_dir = Path(shards_dir), Path(tokens_dir)
    report = read_tokens_report(tokens_dir)
    if source is not None:
        check_source(report["dataset"], source, tokens_dir / "report.json")
    torch_device = resolve_device(device)
    model, state = model_from_checkpoint(checkpoint, torch_device)
    check_tokens_vocab(state, checkpoint, tokens_dir / "vocab.json")
    answer_vocab = state["vocab"]["answer_token_to_idx"]
    words = {index: token for token, index in answer_vocab.items()}

    records_path = tokens_dir / f"{split}.json"
    records = read_encoded_split(records_path)
    check_answers(records, len(answer_vocab), records_path)
    predictions = checked_split_predictions(
        model,
        shards_dir,
        split,
        records,
        records_path,
        batch_size=batch_size,
        num_answers=len(answer_vocab),
        device=torch_device,
    )
    try:
        metrics = compute_metrics(records, predictions)
    except ValueError as e:  # a record without its answer, function or type: name its file
        raise ValueError(f"{records_path}: {e}; rerun tokenize_questions") from None
    # Streamed: CLEVR's 700,000 training questions are counted, never held.
    prior = question_type_prior(iter_encoded_split(tokens_dir / f"{train_split}.json"), records)
    counts = report["splits"]
    context = {
        "dataset": report["dataset"],
        "split": split,
        "profile": profile,
        "parameters": count_parameters(model)["total"],
        "commit": git_commit(),
        "questions": len(records),
        "images": len({r["image_index"] for r in records}),
        "train_split": train_split,
        "train_questions": counts.get(train_split, {}).get("questions"),
        "train_images": counts.get(train_split, {}).get("images"),
        "checkpoint_epoch": state.get("epoch"),
        # Where the model was trained (older checkpoints: where it is evaluated).
        "machine": state.get("machine") or machine_description(torch_device),
        "precision": training_precision(state),
    }
    if predictions_dir is not None:
        rows = [
            {
                "question_index": r["question_index"],
                "predicted": words.get(predictions[r["question_index"]]),
                "answer": words.get(r["answer"]),
                "function": r["function"],
                "family": r["family"],
            }
            for r in sorted(records, key=lambda r: r["question_index"])
        ]
        # One folder swap, so the folder never mixes this run's files with an older run's.
        with atomic_dir(predictions_dir) as tmp:
            write_json_atomic(
                tmp / f"{split}_predictions.json",
                {"context": context, "predictions": rows},
                indent=None,
            )
    log.info("%s: overall %.2f%% on %d questions", split, metrics["overall"], len(records))
    return Evaluation(
        metrics=metrics,
        prior=prior,
        context=context,
        predictions=predictions,
        history=list(state.get("history") or []),
    )
