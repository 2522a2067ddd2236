"""A training run (`runs`) trained and then scored as the evaluate_model stage scores the
workflow's model: what the sweep of the paper's Tables 2 and 3 and the studies compare.

Apart from `runs` so that the train_model stage, which only trains, does not depend on the
evaluation's code (both engines would retrain the model after an edit of `evaluate.py`).
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filmclevr import shards
from filmclevr.evaluate import Evaluation, evaluate
from filmclevr.runs import Changes, RunPlan, plan_run, train_run


def evaluate_run(
    plan: RunPlan, checkpoint: Path, *, shards_dir: Path, tokens_dir: Path
) -> Evaluation:
    """`evaluate.evaluate` of a run's checkpoint with the profile's `evaluate_model` section,
    as the evaluate_model stage scores the workflow's model."""
    params = plan.params
    return evaluate(
        checkpoint,
        shards_dir,
        tokens_dir,
        split=params["evaluate_model"]["split"],
        batch_size=params["evaluate_model"]["batch_size"],
        profile=params["profile"],
        source=params["get_data"]["source"],
        train_split=params["get_data"]["splits"][0],  # the Q-type prior counts its answers
    )


@dataclasses.dataclass(frozen=True)
class RunResult:
    """A trained and evaluated run."""

    summaries: list[dict[str, Any]]  # `train_run`'s, one per phase
    evaluation: Evaluation  # of the best checkpoint


def train_and_evaluate(
    plan: RunPlan,
    *,
    shards_dir: Path,
    tokens_dir: Path,
    best_checkpoint: Path,
    last_checkpoint: Path,
    log_dir: Path,
    progress: bool = False,
    batch_transform: shards.BatchTransform | None = None,
) -> RunResult:
    """Train the plan on the data stages' shards and tokens, then evaluate its best checkpoint.

    `batch_transform` breaks the data on purpose: every batch of the training, the validation
    and the evaluation passes through it (`shards.transformed_batches`).
    """
    with shards.transformed_batches(batch_transform):
        summaries = train_run(
            plan,
            shards_dir=shards_dir,
            vocab_path=Path(tokens_dir) / "vocab.json",
            best_checkpoint=best_checkpoint,
            last_checkpoint=last_checkpoint,
            log_dir=log_dir,
            progress=progress,
        )
        evaluation = evaluate_run(
            plan, best_checkpoint, shards_dir=shards_dir, tokens_dir=tokens_dir
        )
    return RunResult(summaries, evaluation)


def train_and_score(
    params: Mapping[str, Any],
    *,
    data_dir: Path,
    model: Changes | None = None,
    train: Changes | None = None,
    batch_transform: shards.BatchTransform | None = None,
    keep_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """One run of the profile with the changes (its main training only), trained and evaluated
    in a temporary folder: what the studies compare.

    Args:
        params: the profile.
        data_dir: holds the data stages' `shards/` and `tokens/` for the profile.
        model, train: the run's changes (`plan_run`); a fine-tuning run names its checkpoint
            as `train={"init_checkpoint": ...}`.
        batch_transform: breaks the data on purpose (`train_and_evaluate`).
        keep_checkpoint: where to copy the best checkpoint (e.g. the first step of a
            curriculum done by hand); nothing else is written outside the temporary folder.

    Returns:
        The run's metrics.json-like document (overall, columns, functions, counts, prior,
        context), its per-epoch `history`, the training's `samples_per_s` and the run's
        `seconds`.
    """
    plan = plan_run(params, model=model, train=train, curriculum=False)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        run = train_and_evaluate(
            plan,
            shards_dir=Path(data_dir) / "shards",
            tokens_dir=Path(data_dir) / "tokens",
            best_checkpoint=out / "film.pt",
            last_checkpoint=out / "last.pt",
            log_dir=out / "train",
            batch_transform=batch_transform,
        )
        if keep_checkpoint is not None:
            Path(keep_checkpoint).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "film.pt", keep_checkpoint)
    metrics = run.evaluation.metrics
    return {
        "overall": metrics["overall"],
        "columns": metrics["columns"],
        "functions": metrics["functions"],  # equal_color, equal_size, ... apart
        "counts": metrics["counts"],
        "prior": run.evaluation.prior,
        "context": run.evaluation.context,
        "history": run.evaluation.history,
        "samples_per_s": run.summaries[-1]["samples_per_s"],
        "seconds": time.perf_counter() - start,
    }
