"""CLEVR-CoGenT (paper §4.5; SPEC §1, §6): train on condition A, test on A and B, fine-tune on
B, and answer B's unseen combinations zero-shot by FiLM arithmetic.

The A model is the workflow's own (`train_model` on trainA, validated on valA). On top of it:

- `finetune`: continue from the A model on the first questions of the transfer split (valB),
  then score the final weights on valA (forgetting) and on valB's held-out images, those after
  the largest fine-tuning set. One run per size of `cogent.finetune_questions`: the
  sample-efficiency curve. Every size trains the same number of steps (the largest set's
  `cogent.train_model.max_epochs` epochs), so the curve compares data, not compute. No epoch is
  picked on held-out data: the reported model is the last.
- `rewrite` / `zero_shot_predict`: the paper's zero-shot method. A question about a colour and
  shape combination never seen in A (say "cyan cube") gets the FiLM parameters
  q(cyan sphere) + q(brown cube) - q(brown sphere), each q the question itself with one or two
  words swapped; see `rewrite` for exactly which questions that covers.
- `report`: the table beside the paper's (cogent.csv), the per-column breakdowns, the
  zero-shot numbers and the sample-efficiency figure.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from filmclevr import clevr
from filmclevr.analysis import answer_with, film_parameters, read_paper_analysis
from filmclevr.evaluate import checked_loader, compute_metrics, predict
from filmclevr.fileio import read_json, write_json_atomic, write_text_atomic
from filmclevr.model import FiLMedNet
from filmclevr.params import transfer_split_problem
from filmclevr.shards import Batch, write_first_images
from filmclevr.tokenize import END, START, read_encoded_split, tokenize

log = logging.getLogger(__name__)

PAPER_COGENT = Path(__file__).resolve().parent / "paper" / "cogent.csv"
PAPER_MODEL_ROW = "CNN+GRU+FiLM"
PAPER_ZERO_SHOT_ROW = "CNN+GRU+FiLM 0-Shot"
COLUMNS = ("overall", *clevr.QUESTION_TYPES)
UNSEEN_SHAPES = ("cube", "cylinder")  # spheres take every colour in both conditions
# Singular and plural question words of each shape (SPEC §1's synonyms: cube/block, sphere/ball).
SHAPE_WORDS = {
    shape: {w + s for w in clevr.SYNONYMS[shape] for s in ("", "s")} for shape in clevr.SHAPES
}


# --- Which split is which -------------------------------------------------------------------
def condition_a_split(params: Mapping[str, Any]) -> str:
    """The A validation split: the workflow's second split (valA), which the A model validated."""
    return params["get_data"]["splits"][1]


def check_transfer_split(params: Mapping[str, Any], split: str) -> None:
    """A transfer split is a CoGenT split of condition B with answers (valB); the rule is
    params.transfer_split_problem's, which also checks every profile before any stage runs."""
    if problem := transfer_split_problem(params, split):
        raise ValueError(problem)


# --- Fine-tuning on B -------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FinetunePlan:
    """One fine-tuning run: its first `images` images of the split hold `tune_questions`."""

    questions: int  # asked for (an entry of cogent.finetune_questions)
    images: int
    tune_questions: int
    pool_images: int  # images of the largest set: the held-out images come after them
    epochs: int


def first_images_holding(records: Sequence[Mapping[str, Any]], questions: int) -> int:
    """The fewest first images (by image_index) whose questions number at least `questions`."""
    per_image: dict[int, int] = {}
    for r in records:
        per_image[r["image_index"]] = per_image.get(r["image_index"], 0) + 1
    total = 0
    for image in range(max(per_image, default=-1) + 1):
        total += per_image.get(image, 0)
        if total >= questions:
            return image + 1
    raise ValueError(f"the split holds {total} questions, fewer than the {questions} asked for")


def finetune_plan(
    records: Sequence[Mapping[str, Any]], sizes: Sequence[int], questions: int, max_epochs: int
) -> FinetunePlan:
    """The plan of the run with `questions` of `sizes`, all sizes training equally many steps."""
    if questions not in sizes:
        raise ValueError(f"{questions} is not one of cogent.finetune_questions {list(sizes)}")
    pool_images = first_images_holding(records, max(sizes))
    if pool_images >= 1 + max(r["image_index"] for r in records):
        raise ValueError(
            f"the largest fine-tuning set ({max(sizes)} questions) takes every image of the "
            "split: none is left to test on"
        )
    images = first_images_holding(records, questions)

    def held(n: int) -> int:
        return sum(1 for r in records if r["image_index"] < n)

    tune, pool = held(images), held(pool_images)
    epochs = max(1, round(max_epochs * pool / tune))
    return FinetunePlan(questions, images, tune, pool_images, epochs)


def finetune(
    params: Mapping[str, Any],
    split: str,
    questions: int,
    *,
    a_checkpoint: Path,
    shards_dir: Path,
    tokens_dir: Path,
    out_dir: Path,
    last_checkpoint: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the A model on the first `questions` of `split`; write `out_dir/result.json`.

    The run is the A model's own configuration from its weights, with the A recipe plus
    `cogent.train_model`'s changes, the plan's epochs and no early stopping (the last weights
    are the result). Its own shards (its images of `split`) and its best-on-valA checkpoint are
    kept beside `last_checkpoint`; it resumes from there like any training run.
    """
    from filmclevr.checkpoint import load_checkpoint, model_from_checkpoint
    from filmclevr.distributed import resolve_device
    from filmclevr.runs import plan_run, train_run

    check_transfer_split(params, split)
    cogent = params["cogent"]
    tokens_path = Path(tokens_dir) / f"{split}.json"
    records = read_encoded_split(tokens_path)
    try:
        plan = finetune_plan(
            records, cogent["finetune_questions"], questions, cogent["train_model"]["max_epochs"]
        )
    except ValueError as e:  # sizes the split cannot hold: name the file and the parameter
        raise ValueError(f"{tokens_path}: cogent.finetune_questions: {e}") from None
    changes = {
        **cogent["train_model"],
        "max_epochs": plan.epochs,
        "patience": None,
        "init_checkpoint": str(a_checkpoint),
    }
    training = plan_run(
        params,
        model=load_checkpoint(a_checkpoint)["model_config"],  # every field: the A model's
        train=changes,
        train_split=split,
        curriculum=False,
    )
    config = training.train_config
    run_dir = Path(last_checkpoint).parent
    tune_dir = run_dir / "shards"
    write_first_images(shards_dir, split, plan.images, tune_dir)
    val_split = condition_a_split(params)
    (summary,) = train_run(
        training,
        shards_dir=tune_dir,
        vocab_path=Path(tokens_dir) / "vocab.json",
        best_checkpoint=run_dir / f"best_{val_split}.pt",
        last_checkpoint=last_checkpoint,
        log_dir=Path(out_dir) / "train",
        curves_png=Path(out_dir) / "curves.png",
        progress=progress,
        val_shards_dir=shards_dir,
    )
    device = resolve_device(config.device)
    model, state = model_from_checkpoint(last_checkpoint, device)  # the last weights
    batch_size = params["evaluate_model"]["batch_size"]
    accuracy = {
        val_split: score(model, shards_dir, tokens_dir, val_split, batch_size, device),
        f"{split}_heldout": score(
            model, shards_dir, tokens_dir, split, batch_size, device, first_image=plan.pool_images
        ),
    }
    result = {
        "split": split,
        **dataclasses.asdict(plan),
        "steps": summary["steps"],
        "trainable": config.trainable,
        "learning_rate": config.learning_rate,
        "accuracy": {name: columns(m) for name, m in accuracy.items()},
        "counts": {name: m["counts"]["overall"] for name, m in accuracy.items()},
        "history": state["history"],
    }
    write_json_atomic(Path(out_dir) / "result.json", result)
    log.info(
        "fine-tuned on %d questions of %s: %s %.2f%%, held-out %s %.2f%%",
        plan.tune_questions,
        split,
        val_split,
        accuracy[val_split]["overall"],
        split,
        accuracy[f"{split}_heldout"]["overall"],
    )
    return result


# --- Scoring ----------------------------------------------------------------------------------
def columns(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    return {c: metrics["overall"] if c == "overall" else metrics["columns"][c] for c in COLUMNS}


def score(
    model: FiLMedNet,
    shards_dir: Path,
    tokens_dir: Path,
    split: str,
    batch_size: int,
    device: torch.device,
    *,
    first_image: int = 0,
) -> dict[str, Any]:
    """`evaluate.compute_metrics` of `model` on `split`'s images from `first_image` on."""
    records = [
        r
        for r in read_encoded_split(Path(tokens_dir) / f"{split}.json")
        if r["image_index"] >= first_image
    ]
    predictions = predict(model, checked_loader(model, shards_dir, split, batch_size), device)
    return compute_metrics(records, predictions)


# --- Zero-shot FiLM arithmetic ----------------------------------------------------------------
def object_descriptions(program: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """The object descriptions of a program: each chain of filter nodes (filter_color ->
    filter_shape ...) as {attribute: value}, e.g. [{"color": "cyan", "shape": "cube"}]."""
    chain_of: dict[int, int] = {}
    chains: list[dict[str, str]] = []
    for i, node in enumerate(program):
        function = node["function"]
        if not function.startswith("filter_"):
            continue
        source = node["inputs"][0] if node["inputs"] else None
        if source in chain_of:
            chain_of[i] = chain_of[source]
        else:
            chain_of[i] = len(chains)
            chains.append({})
        chains[chain_of[i]][function.removeprefix("filter_")] = node["value_inputs"][0]
    return chains


def unseen_in_a(color: str, shape: str) -> bool:
    """Whether condition A never shows this colour on this shape (cyan cubes, gray cylinders)."""
    return color not in clevr.COGENT_COLORS["A"][shape]


@dataclasses.dataclass(frozen=True)
class Rewrite:
    """A question about one unseen combination and the three questions its FiLM parameters
    are computed from: q(color sphere) + q(reference shape) - q(reference sphere)."""

    question_index: int
    color: str
    shape: str
    reference: str  # the colour condition A shows on `shape` that stands in for `color`
    words: tuple[str, ...]  # the question's clevr-iep tokens
    color_at: int  # position of the colour word in `words`
    shape_at: int  # position of the shape word

    def variants(self) -> tuple[list[str], list[str], list[str]]:
        """(color sphere, reference shape, reference sphere) versions of the question."""

        def swap(color: str, sphere: bool) -> list[str]:
            words = list(self.words)
            words[self.color_at] = _same_case(words[self.color_at], color)
            if sphere:
                plural = words[self.shape_at].lower().endswith("s")
                words[self.shape_at] = _same_case(
                    words[self.shape_at], "spheres" if plural else "sphere"
                )
            return words

        return swap(self.color, True), swap(self.reference, False), swap(self.reference, True)


def _same_case(old: str, new: str) -> str:
    return new[:1].upper() + new[1:] if old[:1].isupper() else new


def rewrite(question: Mapping[str, Any], reference_colors: Mapping[str, str]) -> Rewrite | None:
    """The zero-shot rewrite of a question, or None when it does not apply.

    It applies to a question (with a program) exactly when:
    1. exactly one of its object descriptions names a colour and a cube or cylinder that
       condition A never combines (`unseen_in_a`); other descriptions may be anything;
    2. its text holds that colour word exactly once and that shape's words (cube/block,
       cylinder, singular or plural) exactly once, so the words to swap are unambiguous.
    The colour standing in is `reference_colors[shape]` (the paper: brown for cubes).
    """
    if "program" not in question:
        return None
    unseen = [
        d
        for d in object_descriptions(question["program"])
        if d.get("shape") in UNSEEN_SHAPES and "color" in d and unseen_in_a(d["color"], d["shape"])
    ]
    if len(unseen) != 1:
        return None
    color, shape = unseen[0]["color"], unseen[0]["shape"]
    words = tuple(tokenize(question["question"]))
    color_at = [i for i, w in enumerate(words) if w.lower() == color]
    shape_at = [i for i, w in enumerate(words) if w.lower() in SHAPE_WORDS[shape]]
    if len(color_at) != 1 or len(shape_at) != 1:
        return None
    reference = reference_colors[shape]
    if unseen_in_a(reference, shape):
        raise ValueError(f"cogent.zero_shot_reference: {reference} {shape}s are not seen in A")
    return Rewrite(question["question_index"], color, shape, reference, words, *color_at, *shape_at)


def encode_variants(rewrite: Rewrite, vocab: Mapping[str, Any]) -> list[list[int]] | None:
    """The three variants as token ids (<START> ... <END>); None if a word is not in `vocab`."""
    word_to_idx = vocab["question_token_to_idx"]
    encoded = []
    for words in rewrite.variants():
        if any(w not in word_to_idx for w in words):
            return None
        encoded.append([START, *(word_to_idx[w] for w in words), END])
    return encoded


@torch.inference_mode()
def zero_shot_predict(
    model: FiLMedNet,
    batches: Iterable[Batch],
    variants: Mapping[int, Sequence[Sequence[int]]],
    device: torch.device,
) -> dict[int, int]:
    """Predicted answers, with the arithmetic (gamma, beta) for the questions in `variants`.

    Every other question is answered as `evaluate.predict` answers it.
    """
    model.eval()
    predictions: dict[int, int] = {}
    for batch in batches:
        images = batch.images.to(device)
        questions, lengths = batch.questions.to(device), batch.lengths.to(device)
        gammas, betas = film_parameters(model, questions, lengths)
        indices = batch.question_indices.tolist()
        rows = [r for r, q in enumerate(indices) if q in variants]
        if rows:
            combined = combine(model, [variants[indices[r]] for r in rows], device)
            gammas[rows], betas[rows] = combined
        logits = answer_with(model, images, gammas, betas)[0]
        predictions.update(zip(indices, logits.argmax(dim=1).tolist(), strict=True))
    return predictions


def combine(
    model: FiLMedNet, variants: Sequence[Sequence[Sequence[int]]], device: torch.device
) -> tuple[Tensor, Tensor]:
    """(gamma, beta) = q(first) + q(second) - q(third) for each question's three variants."""
    parameters = []
    for k in range(3):
        tokens = [v[k] for v in variants]
        lengths = torch.tensor([len(t) for t in tokens], device=device)
        padded = torch.zeros(len(tokens), int(lengths.max()), dtype=torch.long, device=device)
        for row, t in enumerate(tokens):
            padded[row, : len(t)] = torch.tensor(t, device=device)
        parameters.append(film_parameters(model, padded, lengths))
    (g1, b1), (g2, b2), (g3, b3) = parameters
    return g1 + g2 - g3, b1 + b2 - b3


def zero_shot(
    model: FiLMedNet,
    questions: Sequence[Mapping[str, Any]],
    vocab: Mapping[str, Any],
    batches: Iterable[Batch],
    reference_colors: Mapping[str, str],
    device: torch.device,
) -> tuple[dict[int, int], list[dict[str, Any]]]:
    """(predictions with zero-shot answers, one row per covered question with its variants)."""
    covered: dict[int, list[list[int]]] = {}
    rows = []
    for q in questions:
        found = rewrite(q, reference_colors)
        encoded = None if found is None else encode_variants(found, vocab)
        if encoded is None:
            continue
        covered[q["question_index"]] = encoded
        rows.append(
            {
                "question_index": q["question_index"],
                "question": q["question"],
                "combination": f"{found.color} {found.shape}",
                "variants": [" ".join(v) for v in found.variants()],
            }
        )
    return zero_shot_predict(model, batches, covered, device), rows


# --- The report -------------------------------------------------------------------------------
def read_paper_cogent(path: Path = PAPER_COGENT) -> dict[str, dict[str, float]]:
    import pandas as pd

    table = pd.read_csv(path).set_index("method")
    return {method: row.to_dict() for method, row in table.iterrows()}


def accuracy_on(
    records: Sequence[Mapping[str, Any]], predictions: Mapping[int, int], keep: set[int] | None
) -> dict[str, Any]:
    """compute_metrics on the records whose question_index is in `keep` (all when None)."""
    chosen = [r for r in records if keep is None or r["question_index"] in keep]
    return compute_metrics(chosen, predictions)


def read_finetune_runs(finetune_dir: Path, split: str, sizes: Iterable[int]) -> list[dict]:
    """Each size's result.json under `finetune_dir/<size>/`, smallest first, checked to be that
    run: a stale or moved folder would otherwise put another size's numbers on the curve.

    Raises:
        ValueError: naming the file, when it holds another split or size, or when the runs
            disagree on the held-out images (they were planned from other sizes).
    """
    runs = []
    for size in sorted(sizes):
        path = Path(finetune_dir) / str(size) / "result.json"
        run = read_json(path)
        if (run.get("split"), run.get("questions")) != (split, size):
            raise ValueError(
                f"{path}: the run of {run.get('questions')!r} questions of "
                f"{run.get('split')!r}, not of {size} of {split!r} (a stale or moved run folder; "
                "rerun finetune_cogent for it)"
            )
        if runs and run.get("pool_images") != runs[0].get("pool_images"):
            raise ValueError(
                f"{path}: held out the images after {run.get('pool_images')!r}, the "
                f"{sorted(sizes)[0]}-question run those after {runs[0].get('pool_images')!r}: "
                "the runs were planned from other cogent.finetune_questions; rerun "
                "finetune_cogent for every size"
            )
        runs.append(run)
    return runs


def report(
    params: Mapping[str, Any],
    split: str,
    *,
    a_checkpoint: Path,
    shards_dir: Path,
    tokens_dir: Path,
    clevr_root: Path,
    finetune_dir: Path,
    out_dir: Path,
    out_metrics: Path,
) -> dict[str, Any]:
    """The CoGenT results of `split` into `out_dir` (table.md, breakdown.csv,
    zero_shot_questions.json, sample_efficiency.png) and the headline numbers `out_metrics`."""
    from filmclevr.checkpoint import check_tokens_vocab, model_from_checkpoint
    from filmclevr.distributed import resolve_device
    from filmclevr.figures import plot_sample_efficiency

    check_transfer_split(params, split)
    cogent = params["cogent"]
    val_a = condition_a_split(params)
    device = resolve_device(params["train_model"].get("device", "auto"))
    model, state = model_from_checkpoint(a_checkpoint, device)
    check_tokens_vocab(state, a_checkpoint, Path(tokens_dir) / "vocab.json")
    batch_size = params["evaluate_model"]["batch_size"]
    records = {s: read_encoded_split(Path(tokens_dir) / f"{s}.json") for s in (val_a, split)}
    plain, zero, covered = {}, {}, {}
    for s in (val_a, split):
        plain[s] = predict(model, checked_loader(model, shards_dir, s, batch_size), device)
        released = clevr.read_questions(clevr.questions_path(clevr_root, s))
        zero[s], rows = zero_shot(
            model,
            released,
            state["vocab"],
            checked_loader(model, shards_dir, s, batch_size),
            cogent["zero_shot_reference"],
            device,
        )
        covered[s] = rows
    runs = read_finetune_runs(finetune_dir, split, cogent["finetune_questions"])
    pool = runs[-1]["pool_images"] if runs else None
    heldout = None if pool is None else {
        r["question_index"] for r in records[split] if r["image_index"] >= pool
    }  # fmt: skip
    keep = {s: {r["question_index"] for r in covered[s]} for s in covered}
    sets = {  # name -> metrics, each a row of the breakdown
        f"train A -> {val_a}": accuracy_on(records[val_a], plain[val_a], None),
        f"train A -> {split}": accuracy_on(records[split], plain[split], None),
        f"0-shot -> {val_a}": accuracy_on(records[val_a], zero[val_a], None),
        f"0-shot -> {split}": accuracy_on(records[split], zero[split], None),
    }
    if keep[split]:
        sets[f"train A -> {split}, 0-shot's questions"] = accuracy_on(
            records[split], plain[split], keep[split]
        )
        sets[f"0-shot -> {split}, 0-shot's questions"] = accuracy_on(
            records[split], zero[split], keep[split]
        )
    if heldout:
        sets[f"train A -> {split} held-out"] = accuracy_on(records[split], plain[split], heldout)
    metrics = _headline(sets, runs, covered, records, val_a, split)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    context = {"profile": params["profile"], "dataset": _dataset(tokens_dir), "split": split}
    write_text_atomic(out_dir / "table.md", markdown(metrics, sets, runs, context, val_a, split))
    _write_breakdown(out_dir / "breakdown.csv", sets, runs, val_a, split)
    write_json_atomic(out_dir / "zero_shot_questions.json", {s: covered[s] for s in covered})
    plot_sample_efficiency(
        [{"questions": 0, **_point(sets, val_a, split)}]
        + [
            {
                "questions": r["tune_questions"],
                val_a: r["accuracy"][val_a]["overall"],
                split: r["accuracy"][f"{split}_heldout"]["overall"],
            }
            for r in runs
        ],
        read_paper_cogent()[PAPER_MODEL_ROW],
        out_dir / "sample_efficiency.png",
        a_split=val_a,
        b_split=split,
    )
    write_json_atomic(out_metrics, metrics)
    log.info(
        "CoGenT: A %.2f%%, B %.2f%% (gap %.2f); 0-shot on %d questions of %s: %.2f%% -> %.2f%%",
        metrics["train_A"][val_a],
        metrics["train_A"][split],
        metrics["train_A"]["gap"],
        metrics["zero_shot"]["questions"],
        split,
        metrics["zero_shot"]["covered_before"] or math.nan,
        metrics["zero_shot"]["covered_after"] or math.nan,
    )
    return metrics


def _point(sets: Mapping[str, Any], val_a: str, split: str) -> dict[str, float | None]:
    """The A model before fine-tuning: the curve's point at 0 questions."""
    heldout = sets.get(f"train A -> {split} held-out")
    return {
        val_a: sets[f"train A -> {val_a}"]["overall"],
        split: None if heldout is None else heldout["overall"],
    }


def _dataset(tokens_dir: Path) -> str:
    from filmclevr.evaluate import read_tokens_report

    return read_tokens_report(Path(tokens_dir))["dataset"]


def _headline(
    sets: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    covered: Mapping[str, list],
    records: Mapping[str, list],
    val_a: str,
    split: str,
) -> dict[str, Any]:
    a, b = (sets[f"train A -> {s}"]["overall"] for s in (val_a, split))
    before = sets.get(f"train A -> {split}, 0-shot's questions")
    after = sets.get(f"0-shot -> {split}, 0-shot's questions")
    paper = read_paper_cogent()
    analysis = read_paper_analysis()
    largest = runs[-1] if runs else None
    return {
        "train_A": {val_a: a, split: b, "gap": round(a - b, 2)},
        "zero_shot": {
            "questions": len(covered[split]),
            "fraction": round(len(covered[split]) / len(records[split]), 4),
            "covered_before": None if before is None else before["overall"],
            "covered_after": None if after is None else after["overall"],
            "overall_before": b,
            "overall_after": sets[f"0-shot -> {split}"]["overall"],
            f"{val_a}_after": sets[f"0-shot -> {val_a}"]["overall"],
        },
        "finetune": [
            {
                "questions": r["tune_questions"],
                val_a: r["accuracy"][val_a]["overall"],
                f"{split}_heldout": r["accuracy"][f"{split}_heldout"]["overall"],
            }
            for r in runs
        ],
        "finetune_largest": None
        if largest is None
        else {
            val_a: largest["accuracy"][val_a]["overall"],
            f"{split}_heldout": largest["accuracy"][f"{split}_heldout"]["overall"],
        },
        "paper": {
            "train_A_on_A": paper[PAPER_MODEL_ROW]["train_A_on_A"],
            "train_A_on_B": paper[PAPER_MODEL_ROW]["train_A_on_B"],
            "finetune_B_on_A": paper[PAPER_MODEL_ROW]["finetune_B_on_A"],
            "finetune_B_on_B": paper[PAPER_MODEL_ROW]["finetune_B_on_B"],
            "zero_shot_on_B": paper[PAPER_ZERO_SHOT_ROW]["train_A_on_B"],
            "zero_shot_covered_before": analysis.get("zero_shot_covered_before"),
            "zero_shot_covered_after": analysis.get("zero_shot_covered_after"),
        },
    }


def _cell(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def markdown(
    metrics: Mapping[str, Any],
    sets: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    val_a: str,
    split: str,
) -> str:
    """table.md: the paper's CoGenT table with this run's rows, then the breakdowns."""
    paper = read_paper_cogent()
    largest = metrics["finetune_largest"] or {}
    lines = [
        f"# CLEVR-CoGenT: {context['dataset']}, profile {context['profile']}",
        "",
        f"Train on A (trainA), test on A ({val_a}) and B ({split}); fine-tune on B's first "
        f"questions and test on A and on {split}'s held-out images (paper: all of valB but "
        "the 30K fine-tuning questions). The paper's numbers are CLEVR-CoGenT's (cogent.csv).",
        "",
        "| Method | Train A: A | Train A: B | Fine-tune B: A | Fine-tune B: B |",
        "|---|---|---|---|---|",
    ]
    for method, row in paper.items():
        cells = [
            row[k] for k in ("train_A_on_A", "train_A_on_B", "finetune_B_on_A", "finetune_B_on_B")
        ]
        lines.append(f"| Paper: {method} | " + " | ".join(_cell(c) for c in cells) + " |")
    tuned = f"fine-tuned on {runs[-1]['tune_questions']:,} questions" if runs else "no fine-tuning"
    lines.append(
        f"| This run: CNN+GRU+FiLM ({tuned}) | {_cell(metrics['train_A'][val_a])} | "
        f"{_cell(metrics['train_A'][split])} | {_cell(largest.get(val_a))} | "
        f"{_cell(largest.get(f'{split}_heldout'))} |"
    )
    zs = metrics["zero_shot"]
    lines.append(
        f"| This run: CNN+GRU+FiLM 0-Shot | {_cell(zs[f'{val_a}_after'])} | "
        f"{_cell(zs['overall_after'])} | — | — |"
    )
    lines += [
        "",
        f"**Gap A − B: {metrics['train_A']['gap']:.1f} points** (paper: "
        f"{paper[PAPER_MODEL_ROW]['train_A_on_A'] - paper[PAPER_MODEL_ROW]['train_A_on_B']:.1f}).",
        "",
        "## Zero-shot FiLM arithmetic",
        "",
        f"Applies to {zs['questions']:,} of {split}'s questions ({100 * zs['fraction']:.1f}%): "
        "those with exactly one object description that combines a colour and a cube or "
        "cylinder A never shows, whose colour word and shape word each occur once "
        "(`filmclevr.cogent.rewrite`; listed in zero_shot_questions.json).",
        "",
        "| | covered questions: before | after | all of B: before | after |",
        "|---|---|---|---|---|",
        f"| This run | {_cell(zs['covered_before'])} | {_cell(zs['covered_after'])} | "
        f"{_cell(zs['overall_before'])} | {_cell(zs['overall_after'])} |",
        f"| Paper | {_cell(metrics['paper']['zero_shot_covered_before'])} | "
        f"{_cell(metrics['paper']['zero_shot_covered_after'])} | "
        f"{_cell(metrics['paper']['train_A_on_B'])} | "
        f"{_cell(metrics['paper']['zero_shot_on_B'])} |",
        "",
        "## Per column",
        "",
        "| Model -> questions | questions | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---|" * len(COLUMNS),
    ]
    for name, m in _breakdown_rows(sets, runs, val_a, split):
        values = columns(m)
        lines.append(
            f"| {name} | {m['counts']['overall']:,} | "
            + " | ".join(_cell(values[c]) for c in COLUMNS)
            + " |"
        )
    if runs:
        lines += [
            "",
            "## Sample efficiency (sample_efficiency.png)",
            "",
            f"| fine-tuning questions | epochs | steps | {val_a} | {split} held-out |",
            "|---|---|---|---|---|",
        ]
        point = _point(sets, val_a, split)
        lines.append(f"| 0 (the A model) | — | — | {_cell(point[val_a])} | {_cell(point[split])} |")
        for r in runs:
            acc = r["accuracy"]
            lines.append(
                f"| {r['tune_questions']:,} | {r['epochs']} | {r['steps']} | "
                f"{_cell(acc[val_a]['overall'])} | {_cell(acc[f'{split}_heldout']['overall'])} |"
            )
    return "\n".join(lines) + "\n"


def _breakdown_rows(
    sets: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], val_a: str, split: str
) -> list[tuple[str, dict[str, Any]]]:
    rows = list(sets.items())
    for r in runs:
        for name in (val_a, f"{split}_heldout"):
            m = {
                "overall": r["accuracy"][name]["overall"],
                "columns": r["accuracy"][name],
                "counts": {"overall": r["counts"][name]},
            }
            label = name.replace("_heldout", " held-out")
            rows.append((f"fine-tuned on {r['tune_questions']:,} -> {label}", m))
    return rows


def _write_breakdown(
    path: Path, sets: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], val_a: str, split: str
) -> None:
    import pandas as pd

    table = pd.DataFrame(
        [
            {"set": name, "questions": m["counts"]["overall"], **columns(m)}
            for name, m in _breakdown_rows(sets, runs, val_a, split)
        ]
    )
    write_text_atomic(path, table.to_csv(index=False))
