"""Training phases after the main training (the `curriculum` section of params.yaml).

The CLEVR-sized run learns every question type but Compare Attribute. Taught first to compare
the two objects of 2-object scenes, then to pick the two described objects out of three, then
CLEVR's mix again, the same model learns all five. A curriculum says that in one profile:

    get_data:  splits: [train, val, compare2, compare3]    # split_settings make the phase data
    curriculum:
      - {split: compare2, train_model: {max_epochs: 4, learning_rate: 5.0e-4}}
      - {split: compare3, train_model: {max_epochs: 4, learning_rate: 5.0e-4}}
      - {split: train, train_model: {max_epochs: 4, learning_rate: 1.0e-3}}

Phase 0 is the main training (`train_model` on the first split). Each later phase trains on its
own split with `train_model` plus its changes, from the previous phase's last weights (a phase
on one question type forgets the others, so its best epoch on the validation split would be its
first), and validates on the same validation split as the main training, so the whole run is one
learning curve. Every phase keeps its own resume point: a killed run started again skips the
finished phases and resumes the one it was in. The result is the last phase's best checkpoint,
its history the whole curriculum's.

`phases` reads the plan and `train_phases` trains it; a run reaches both through
`filmclevr.runs`, which builds every training run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filmclevr.checkpoint import load_checkpoint, save_checkpoint
from filmclevr.fileio import read_json, write_json_atomic
from filmclevr.model import FiLMConfig
from filmclevr.params import training_split_problem
from filmclevr.shards import load_index
from filmclevr.train import TrainConfig, train


@dataclasses.dataclass(frozen=True)
class Phase:
    """One training run of the curriculum: its training split and recipe."""

    split: str
    config: TrainConfig

    def name(self, index: int) -> str:
        """Its folder under the curriculum's models and logs, e.g. "1-compare2"."""
        return f"{index}-{self.split}"


def phases(params: Mapping[str, Any]) -> list[Phase]:
    """The main training, then each phase of `curriculum`, checked before any training.

    Raises:
        ValueError: a phase names a split that is not in get_data.splits (or the validation
            split), or a train_model change that TrainConfig refuses.
    """
    splits = params["get_data"]["splits"]
    main = dict(params["train_model"])
    plan = [Phase(splits[0], TrainConfig.from_dict(main))]
    for i, entry in enumerate(params.get("curriculum") or [], start=1):
        if problem := training_split_problem(splits, entry["split"]):
            raise ValueError(f"curriculum[{i - 1}].split: {problem}")
        try:
            config = TrainConfig.from_dict({**main, **entry.get("train_model", {})})
        except ValueError as e:
            raise ValueError(f"curriculum[{i - 1}].train_model: {e}") from None
        plan.append(Phase(entry["split"], config))
    return plan


def check_phase_data(plan: Sequence[Phase], shards_dir: Path) -> None:
    """Every phase's split is in the shards and fills one global batch, checked before phase 0
    trains: a later phase that cannot start would stop the run after hours of the earlier ones.

    Raises:
        ValueError: naming index.json, the split and the parameter to change.
    """
    index_path = Path(shards_dir) / "index.json"
    index = load_index(shards_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    for k, phase in enumerate(plan):
        key = "train_model" if k == 0 else f"curriculum[{k - 1}].train_model"
        if phase.split not in index:
            raise ValueError(f"{index_path}: no split {phase.split!r} for curriculum phase {k}")
        questions = index[phase.split]["questions"]
        if questions < phase.config.batch_size * world_size:
            raise ValueError(
                f"{index_path}: split {phase.split!r} (curriculum phase {k}) holds {questions} "
                f"questions, fewer than one global batch of {phase.config.batch_size} x "
                f"{world_size} process(es): lower {key}.batch_size"
            )


def train_phases(
    model_config: FiLMConfig,
    plan: Sequence[Phase],
    val_split: str,
    *,
    shards_dir: Path,
    vocab_path: Path,
    best_checkpoint: Path,
    runs_dir: Path,
    log_dir: Path,
    curves_png: Path | None = None,
    progress: bool = True,
    val_shards_dir: Path | None = None,
    profile: str | None = None,
) -> list[dict[str, Any]]:
    """Train every phase of `plan` in turn, validating each on `val_split`; write
    `best_checkpoint` (the last phase's best, with the history of every phase) and its sidecar.
    Each phase's checkpoints lie in `runs_dir/<k>-<split>/` (film.pt, last.pt: its resume
    point), its DVCLive logs in `log_dir/<k>-<split>/`. Returns each phase's summary (as
    `train` returns it)."""
    check_phase_data(plan, shards_dir)
    summaries, starts = [], []
    previous: Path | None = None
    for k, phase in enumerate(plan):
        run_dir = Path(runs_dir) / phase.name(k)
        config = phase.config
        if previous is not None:
            config = dataclasses.replace(config, init_checkpoint=str(previous))
        starts.append(config.init_checkpoint)
        summaries.append(
            train(
                model_config,
                config,
                shards_dir=shards_dir,
                vocab_path=vocab_path,
                best_checkpoint=run_dir / "film.pt",
                last_checkpoint=run_dir / "last.pt",
                log_dir=Path(log_dir) / phase.name(k),
                progress=progress,
                train_split=phase.split,
                val_split=val_split,
                val_shards_dir=val_shards_dir,
                profile=profile,
            )
        )
        previous = run_dir / "last.pt"
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 writes the result
        return summaries
    runs = [Path(runs_dir) / phase.name(k) for k, phase in enumerate(plan)]
    sidecars = [read_json(run / "film.json") for run in runs]  # each with its phase's history
    history = merged_history(
        [sidecar["history"] for sidecar in sidecars],
        [phase.config.batch_size * summaries[k]["world_size"] for k, phase in enumerate(plan)],
        [phase.split for phase in plan],
    )
    record = [
        {"phase": k, "split": p.split, "epochs": s["epochs"], "init_checkpoint": start}
        for k, (p, s, start) in enumerate(zip(plan, summaries, starts, strict=True))
    ]
    best = load_checkpoint(runs[-1] / "film.pt")
    save_checkpoint(best_checkpoint, {**best, "history": history, "curriculum": record})
    write_json_atomic(
        Path(best_checkpoint).with_suffix(".json"),
        {**sidecars[-1], "history": history, "curriculum": record},
    )
    if curves_png is not None:
        from filmclevr.figures import plot_learning_curves

        plot_learning_curves(history, curves_png)
    return summaries


def merged_history(
    histories: list[list[dict[str, Any]]], global_batches: list[int], splits: list[str]
) -> list[dict[str, Any]]:
    """The phases' histories as one: epochs and questions seen counted from the first phase's
    start, each row marked with its phase and training split."""
    merged: list[dict[str, Any]] = []
    epochs = questions = 0
    runs = zip(histories, global_batches, splits, strict=True)
    for k, (history, batch, split) in enumerate(runs):
        for row in history:
            merged.append(
                {
                    **row,
                    "epoch": epochs + row["epoch"],
                    "questions_seen": questions + row["step"] * batch,
                    "phase": k,
                    "split": split,
                }
            )
        if history:
            epochs += history[-1]["epoch"]
            questions += history[-1]["step"] * batch
    return merged
