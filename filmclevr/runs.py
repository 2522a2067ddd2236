"""One training run: the parameters plus the run's changes, planned, trained and evaluated.

Every training goes through here (the loop itself is `train.train`):

- the train_model stage: the profile as it is, with its curriculum's phases if it has any;
- the sweep of the paper's Tables 2 and 3 (`experiments`): a preset's change of the model, the
  sweep's changes of the recipe and the run's seed;
- CoGenT's fine-tuning runs (`cogent`): the A model's own configuration, from its weights, on
  the first images of the B split;
- the studies (`studies/`): a lever, a recipe, a seed, or data broken on purpose, each trained
  and scored in a temporary folder (`scored_runs.train_and_score`).

A run is planned first (`plan_run`: the model and every phase's recipe, each checked before
anything trains), then trained (`train_run`: one `train.train`, or the curriculum's phases in
turn) and, where the caller wants its numbers, evaluated as the evaluate_model stage evaluates
(`scored_runs`: apart, so that the training stage's code does not include the evaluation's).

The changes are merged key by key: `model` changes over the profile's model (its `model` section
and `resize_images.image_size`, the input size), `train` changes over `train_model`; a
curriculum phase's own changes go over those.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filmclevr import train as training  # the module: `train` also names a run's recipe changes
from filmclevr.configs import FiLMConfig, TrainConfig
from filmclevr.curriculum import Phase, phases, train_phases
from filmclevr.params import model_overrides

Changes = Mapping[str, Any]  # keys of one section (FiLMConfig or TrainConfig fields) -> values


def model_fields(params: Mapping[str, Any], changes: Changes | None = None) -> dict[str, Any]:
    """The FiLMConfig fields of a run: the profile's model with `changes` over it."""
    return {**model_overrides(params), **(changes or {})}


def train_fields(params: Mapping[str, Any], changes: Changes | None = None) -> dict[str, Any]:
    """The TrainConfig fields of a run's main training: `train_model` with `changes` over it."""
    return {**params["train_model"], **(changes or {})}


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """What a run trains, checked: its model, its phases and the split every phase validates on."""

    params: Mapping[str, Any]  # the profile the run was planned from (without the changes)
    model: FiLMConfig
    phases: tuple[Phase, ...]  # the main training, then the curriculum's phases
    val_split: str

    @property
    def train_config(self) -> TrainConfig:
        """The main training's recipe (phase 0's)."""
        return self.phases[0].config


def plan_run(
    params: Mapping[str, Any],
    *,
    model: Changes | None = None,
    train: Changes | None = None,
    train_split: str | None = None,
    curriculum: bool = True,
) -> RunPlan:
    """The run that `params` (a loaded, validated profile) describes, with the run's changes.

    Args:
        params: the profile.
        model: FiLMConfig fields that differ from the profile's model.
        train: TrainConfig fields that differ from `train_model` (the main training's and,
            under their own changes, every curriculum phase's recipe).
        train_split: the main training's split, if not the first of `get_data.splits`.
        curriculum: False to train the main training only, as the sweep, CoGenT's fine-tuning
            and the studies do even when the profile has a curriculum.

    Raises:
        ValueError: a field the configurations refuse (an unknown key, a bad value, a
            combination the model cannot build), or a curriculum phase that cannot train; the
            message is the configuration's own.
    """
    splits = params["get_data"]["splits"]  # the schema asks for a training and a validation split
    model_config = FiLMConfig.from_dict(model_fields(params, model))
    recipe = train_fields(params, train)
    if curriculum:
        planned = phases({**params, "train_model": recipe})
    else:
        planned = [Phase(splits[0], TrainConfig.from_dict(recipe))]
    if train_split is not None:
        planned[0] = dataclasses.replace(planned[0], split=train_split)
    return RunPlan(params, model_config, tuple(planned), splits[1])


def train_run(
    plan: RunPlan,
    *,
    shards_dir: Path,
    vocab_path: Path,
    best_checkpoint: Path,
    last_checkpoint: Path,
    log_dir: Path,
    curves_png: Path | None = None,
    progress: bool = True,
    val_shards_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Train the plan; it resumes from `last_checkpoint` when that was written by this run.

    Args:
        plan: from `plan_run`.
        shards_dir: holds `index.json` and the shards of every split the run trains on.
        vocab_path: the tokenizer's `vocab.json`.
        best_checkpoint: the best-validation checkpoint to write, with its `.json` sidecar; of
            a curriculum, the last phase's best with the history of every phase.
        last_checkpoint: the resume point. A curriculum keeps one per phase instead, in
            `curriculum/<k>-<split>/` beside it (with each phase's best).
        log_dir: DVCLive folder (a curriculum: one subfolder per phase).
        curves_png: learning curves to draw at the end.
        progress: show a progress bar.
        val_shards_dir: the validation split's shards' folder if not `shards_dir` (CoGenT).

    Returns:
        Each phase's summary (`train.train`'s), the main training's first.
    """
    common = {"shards_dir": shards_dir, "vocab_path": vocab_path, "log_dir": log_dir}
    common |= {"curves_png": curves_png, "progress": progress, "val_shards_dir": val_shards_dir}
    common["profile"] = plan.params.get("profile")  # recorded in the checkpoints
    if len(plan.phases) > 1:
        return train_phases(
            plan.model,
            plan.phases,
            plan.val_split,
            best_checkpoint=best_checkpoint,
            runs_dir=Path(last_checkpoint).parent / "curriculum",
            **common,
        )
    (phase,) = plan.phases
    summary = training.train(
        plan.model,
        phase.config,
        best_checkpoint=best_checkpoint,
        last_checkpoint=last_checkpoint,
        train_split=phase.split,
        val_split=plan.val_split,
        **common,
    )
    return [summary]
