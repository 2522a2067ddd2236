"""CLEVR-Humans' results beside the paper's Table 4: the CLEVR model before and after
fine-tuning, scored on CLEVR-Humans val and test (overall accuracy: the questions have no
programs), the fine-tuning's learning curve, the headline numbers.

"Before" is the CLEVR model with the expanded vocabulary, the fine-tuning's start
(`humans.start_checkpoint`), as clevr-iep's `run_model.py --vocab_json` runs a CLEVR model on
CLEVR-Humans; "after" is the fine-tuning's checkpoint best on val. Both are also scored on two
halves of each split: questions written in CLEVR's words alone, and those with a word CLEVR's
vocabulary lacks (a word the expansion added, or <UNK>).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from filmclevr.analysis import read_paper_analysis
from filmclevr.checkpoint import check_tokens_vocab, model_from_checkpoint
from filmclevr.configs import TrainConfig
from filmclevr.evaluate import checked_loader, git_commit, predict, read_tokens_report
from filmclevr.fileio import write_json_atomic, write_text_atomic
from filmclevr.humans_data import SPLITS, STAND_IN_DATASET
from filmclevr.tokenize import read_encoded_split

log = logging.getLogger(__name__)

SCORED = SPLITS[1:]  # val and test: CLEVR-Humans' test answers are public
PAPER_MODEL = "CNN+GRU+FiLM"
SUBSETS = ("all", "clevr_words", "new_words")


def paper_table4() -> dict[str, float]:
    """The paper's Table 4 for FiLM (CLEVR-Humans test), from its CSV."""
    paper = read_paper_analysis()
    return {
        "before": paper["clevr_humans_before_finetune"],
        "after": paper["clevr_humans_after_finetune"],
    }


def accuracy(
    records: Iterable[Mapping[str, Any]],
    predictions: Mapping[int, int],
    records_path: str | Path = "the records",
) -> dict[str, Any]:
    """{"accuracy": percent correct (2 decimals; None without questions), "questions": n}.
    `records_path`, the file the records came from, is named by the error."""
    total = correct = 0
    for r in records:
        if r["question_index"] not in predictions:
            raise ValueError(
                f"{records_path}: question {r['question_index']} has no prediction (the shards "
                "lack it: rerun prepare_humans)"
            )
        total += 1
        correct += int(predictions[r["question_index"]] == r["answer"])
    return {"accuracy": round(100 * correct / total, 2) if total else None, "questions": total}


def subsets(
    records: Sequence[Mapping[str, Any]], clevr_words: int
) -> dict[str, list[Mapping[str, Any]]]:
    """The records of each of SUBSETS: all; those whose every token is one of CLEVR's
    `clevr_words` (which include <UNK>'s index, so <UNK> is checked apart); the rest."""
    from filmclevr.tokenize import UNK

    def clevr_only(r: Mapping[str, Any]) -> bool:
        return all(t < clevr_words and t != UNK for t in r["tokens"])

    return {
        "all": list(records),
        "clevr_words": [r for r in records if clevr_only(r)],
        "new_words": [r for r in records if not clevr_only(r)],
    }


def report(
    params: Mapping[str, Any],
    *,
    start_checkpoint: Path,
    finetuned_checkpoint: Path,
    tokens_dir: Path,
    shards_dir: Path,
    out_table: Path,
    out_figure: Path,
    out_metrics: Path,
) -> dict[str, Any]:
    """Score the models before and after fine-tuning; write the table (markdown), the learning
    curve (PNG) and the headline numbers (JSON).

    Raises:
        ValueError: a checkpoint not made for this vocabulary (a stale output), naming it.
    """
    from filmclevr.distributed import machine_description, resolve_device
    from filmclevr.figures import plot_humans_curve

    tokens_dir, shards_dir = Path(tokens_dir), Path(shards_dir)
    device = resolve_device(params["train_model"].get("device", "auto"))
    before, start = model_from_checkpoint(start_checkpoint, device)
    after, state = model_from_checkpoint(finetuned_checkpoint, device)
    for path, checkpoint in ((start_checkpoint, start), (finetuned_checkpoint, state)):
        check_tokens_vocab(
            checkpoint,
            path,
            tokens_dir / "vocab.json",
            advice="a stale output: rerun finetune_humans",
        )
    tokens = read_tokens_report(tokens_dir)
    batch_size = params["evaluate_model"]["batch_size"]
    scores: dict[str, dict[str, dict[str, Any]]] = {}
    for split in SCORED:
        records_path = tokens_dir / f"{split}.json"
        records = read_encoded_split(records_path, split)
        groups = subsets(records, tokens["clevr_words"])
        for name, model in (("before", before), ("after", after)):
            loader = checked_loader(model, shards_dir, split, batch_size)
            predictions = predict(model, loader, device)
            scores.setdefault(name, {})[split] = {
                subset: accuracy(groups[subset], predictions, records_path) for subset in SUBSETS
            }
    config = TrainConfig.from_dict(state["train_config"])  # what the fine-tuning ran
    metrics = {
        **{
            name: {split: scores[name][split]["all"]["accuracy"] for split in SCORED}
            for name in ("before", "after")
        },
        "questions": {split: scores["after"][split]["all"]["questions"] for split in SCORED},
        "subsets": scores,
        "fine_tuning": {
            "trainable": config.trainable,
            "frozen_batchnorm": config.frozen_batchnorm,
            "learning_rate": config.learning_rate,
            "patience": config.patience,
            "max_epochs": config.max_epochs,
            "best_epoch": state["epoch"],
            "epochs": len(state["history"]),
            "train_questions": tokens["splits"][SPLITS[0]]["questions"],
        },
        "vocabulary": {
            "clevr_words": tokens["clevr_words"],
            "added_words": len(tokens["added_words"]),
            "unk_threshold": tokens["unk_threshold"],
            "unknown_tokens": {s: tokens["splits"][s]["unknown_tokens"] for s in SPLITS},
        },
        "paper": paper_table4(),
        "context": {
            "dataset": tokens["dataset"],
            "profile": params["profile"],
            "parameters": state["parameters"]["total"],
            "machine": machine_description(device),
            "commit": git_commit(),
        },
    }
    write_text_atomic(out_table, markdown(metrics))
    plot_humans_curve(
        state["history"],
        metrics["before"][SPLITS[1]],
        metrics["paper"],
        Path(out_figure),
        best_epoch=state["epoch"],
        label=metrics["context"]["dataset"],
    )
    write_json_atomic(out_metrics, metrics)
    log.info(
        "%s test: %.2f%% before, %.2f%% after fine-tuning (paper: %.1f, %.1f)",
        tokens["dataset"],
        metrics["before"]["test"],
        metrics["after"]["test"],
        metrics["paper"]["before"],
        metrics["paper"]["after"],
    )
    return metrics


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def markdown(metrics: Mapping[str, Any]) -> str:
    """table.md: the paper's Table 4 row for FiLM with this run's rows, then the details."""
    context, tuning, words = metrics["context"], metrics["fine_tuning"], metrics["vocabulary"]
    dataset = context["dataset"]
    lines = [f"# CLEVR-Humans: {dataset}, profile {context['profile']}", ""]
    if dataset == STAND_IN_DATASET:
        lines += [
            "**A stand-in, not CLEVR-Humans**: mini-CLEVR's own questions re-worded by fixed "
            "rules (`filmclevr.mini.humans`), so that the CLEVR-Humans stages run on a CPU. The "
            "paper's numbers are CLEVR-Humans' and are not comparable with this run's.",
            "",
        ]
    lines += [
        "| Model | questions | Train CLEVR | Train CLEVR, fine-tune human |",
        "|---|---|---|---|",
        f"| Paper: {PAPER_MODEL} (CLEVR-Humans test, Table 4) | — | "
        f"{_cell(metrics['paper']['before'])} | {_cell(metrics['paper']['after'])} |",
    ]
    for split in SCORED:
        lines.append(
            f"| This run: {PAPER_MODEL} ({split}) | {metrics['questions'][split]:,} | "
            f"{_cell(metrics['before'][split])} | {_cell(metrics['after'][split])} |"
        )
    lines += [
        "",
        f"Fine-tuned: {tuning['trainable']} only (`frozen_batchnorm: "
        f"{tuning['frozen_batchnorm']}`), Adam at {tuning['learning_rate']:g}, "
        f"{tuning['train_questions']:,} training questions; the epoch best on val "
        f"({tuning['best_epoch']} of {tuning['epochs']}; patience {tuning['patience']}, at "
        f"most {tuning['max_epochs']}). Vocabulary: CLEVR's {words['clevr_words']} entries + "
        f"{words['added_words']} words seen at least {words['unk_threshold']} times in train; "
        "<UNK> tokens per split: "
        + ", ".join(f"{s} {n:,}" for s, n in words["unknown_tokens"].items())
        + f". {context['parameters']:,} parameters, commit {context['commit']}.",
        "",
        "## By wording",
        "",
        "Questions in CLEVR's words alone, and those with a word CLEVR's vocabulary lacks (one "
        "the expansion added, or <UNK>).",
        "",
        "| wording | split | questions | before | after |",
        "|---|---|---|---|---|",
    ]
    names = {"clevr_words": "CLEVR's words only", "new_words": "with a new word"}
    for subset, name in names.items():
        for split in SCORED:
            before = metrics["subsets"]["before"][split][subset]
            after = metrics["subsets"]["after"][split][subset]
            lines.append(
                f"| {name} | {split} | {after['questions']:,} | {_cell(before['accuracy'])} | "
                f"{_cell(after['accuracy'])} |"
            )
    return "\n".join(lines) + "\n"
