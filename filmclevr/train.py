"""The training loop: FiLM on CLEVR shards on a CPU, a GPU, or several through torchrun (DDP).

A plain loop in the manner of nanoGPT's `train.py`, kept in the library so tests run it on a
tiny CPU config. The recipe is the paper's (SPEC §4): Adam, learning rate 3e-4, plain L2 weight
decay 1e-5 on every parameter, batch 64, no schedule, no gradient clipping, no augmentation;
validate once an epoch, keep the best-validation checkpoint, at most 80 epochs.

Resumption: `last_checkpoint` holds everything the run needs to go on (model, optimizer, RNG
states, history, position in the epoch), and the data order depends only on (seed, epoch),
so a run killed and started again ends with the same weights and history as one that never
stopped. A `last` checkpoint of a different configuration or data, or one past max_epochs, is
ignored, not resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from filmclevr import clevr, shards
from filmclevr.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    save_checkpoint,
    start_identity,
    vocab_differences,
)
from filmclevr.configs import TrainConfig
from filmclevr.distributed import (
    DistContext,
    all_reduce,
    available_memory,
    determinism,
    init_distributed,
    machine_description,
    processes_on_this_machine,
    rng_state,
    set_rng_state,
    set_seed,
)
from filmclevr.fileio import exclusive_lock, write_json_atomic
from filmclevr.model import FiLMConfig, build_model, count_parameters
from filmclevr.tokenize import load_vocab

log = logging.getLogger(__name__)

_SYNC_EVERY = 10  # steps between host syncs (loss check, progress bar): a sync per step stalls GPUs
# A rank's p-th extra pass over its shards in an epoch uses loader epoch epoch + p * this: a
# fresh order that no real epoch has.
_PASS_STRIDE = 1_000_000


def learning_rate_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The learning rate of optimizer step `step` (0-based): a pure function of the step, so a
    resumed run continues the schedule exactly without any scheduler state."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    if cfg.lr_schedule == "constant":
        return cfg.learning_rate
    total = cfg.max_epochs * steps_per_epoch
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    if cfg.lr_schedule == "linear":
        return cfg.learning_rate * (1.0 - progress)
    return cfg.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def _has_schedule(cfg: TrainConfig) -> bool:
    return cfg.lr_schedule != "constant" or cfg.warmup_epochs > 0


# Fields that decide only when to stop, save or how fast to run, not the trajectory: a `last`
# checkpoint is resumed across changes to these (e.g. more epochs, another GPU model).
_EXECUTION_FIELDS = frozenset(
    {
        "max_epochs",
        "patience",
        "checkpoint_every_steps",
        "keep_epoch_checkpoints",
        "device",
        "channels_last",
        "compile",
        "num_threads",
        "nproc_per_node",  # the world size itself is in the fingerprint
    }
)

# Fields added after runs were made, with the value every earlier run had: left out of the
# fingerprint at that value, so that a run started before the field existed still resumes.
_MODEL_FIELDS_ADDED_LATER = {"batchnorm_init": "ones"}
_TRAIN_FIELDS_ADDED_LATER = {"data_order": "shards"}


def _without_earlier_defaults(config: Mapping[str, Any], added: Mapping[str, Any]) -> dict:
    """`config` without the fields of `added` that hold the value runs had before them."""
    return {k: v for k, v in config.items() if k not in added or v != added[k]}


# --- Resumption: what decides whether `last` belongs to this run -----------------------------
def _sample_shards(paths: list[str], block: int = 1 << 16) -> list[str]:
    """Per shard: size and SHA-256 of its first and last 64 KiB, a cheap content check.

    Regenerated data with the same counts (another generator seed, say) changes the index not at
    all but every shard's bytes; hashing all of CLEVR's 18 GB at every start would cost minutes.
    """
    digests = []
    for path in paths:
        with open(path, "rb") as f:
            head = f.read(block)
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - block, 0))
            tail = f.read(block)
        digests.append(f"{size}:{hashlib.sha256(head + tail).hexdigest()}")
    return digests


def _fingerprint(
    model_config: FiLMConfig,
    train_config: TrainConfig,
    world_size: int,
    splits: tuple[str, str],
    index: Mapping[str, Any],
    shard_samples: list[str],
    vocab: Mapping[str, Any],
) -> str:
    """SHA-256 of everything that shapes the training trajectory: configs, world size, the
    (train, val) split names, data."""
    recipe = _without_earlier_defaults(train_config.asdict(), _TRAIN_FIELDS_ADDED_LATER)
    trajectory = {k: v for k, v in recipe.items() if k not in _EXECUTION_FIELDS}
    del trajectory["init_checkpoint"]  # where it lies does not matter; its weights do (samples)
    if train_config.trainable == "all":  # nothing is frozen: it changes nothing (and runs made
        del trajectory["frozen_batchnorm"]  # before the field existed keep their fingerprint)
    if train_config.lr_schedule != "constant":  # the decay is spread over all the epochs
        trajectory["max_epochs"] = train_config.max_epochs
    model = _without_earlier_defaults(model_config.asdict(), _MODEL_FIELDS_ADDED_LATER)
    blob = {
        "model": model,
        "train": trajectory,
        "world_size": world_size,
        "splits": list(splits),
        "index": index,
        "shards": shard_samples,
        "vocab": vocab,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()


# --- Data -------------------------------------------------------------------------------------
def _train_batches(
    paths: list[str], cfg: TrainConfig, epoch: int, image_size: int, num_answers: int
) -> Iterator[shards.Batch]:
    """This rank's batches of `epoch`, cycling over its shards if they run out; every image
    `image_size` square and every answer below `num_answers` (checked by the loader).

    With shards split over the ranks, a rank may hold fewer questions than the steps an epoch
    takes (the same on every rank, so that DDP never waits for a rank that stopped); it then
    starts another pass, shuffled differently but just as deterministically.
    """
    for extra_pass in itertools.count():
        loader = shards.question_loader(
            paths,
            batch_size=cfg.batch_size,
            shuffle=True,
            seed=cfg.seed,
            epoch=epoch + extra_pass * _PASS_STRIDE,
            shuffle_buffer=cfg.shuffle_buffer,
            num_workers=cfg.num_workers,
            split_by_node=True,
            image_size=image_size,
            num_answers=num_answers,
        )
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"training shards yielded no questions: {paths[:3]} ...")


def _epoch_batches(run: _Run, skip: int) -> Iterator[shards.Batch]:
    """This rank's batches of the current epoch from its step `skip` on (a resume mid-epoch):
    in the official order straight from memory, in the shard order replayed and dropped."""
    cfg, epoch = run.cfg, run.state.epoch
    if run.train_questions is not None:
        yield from run.train_questions.epoch_batches(
            batch_size=cfg.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            rank=run.ctx.rank,
            world_size=run.ctx.world_size,
            first_batch=skip,
        )
        return
    image_size, num_answers = run.model_config.image_size, run.meta["num_answers"]
    batches = _train_batches(run.train_paths, cfg, epoch, image_size, num_answers)
    try:
        if skip:
            _replay(batches, skip)
        yield from batches
    finally:
        batches.close()


def _replay(batches: Iterator[shards.Batch], skip: int) -> None:
    """Drop the first `skip` batches, leaving the random states as they were: a DataLoader with
    workers draws its base seed from torch's generator as it starts, a draw that the resumed
    checkpoint's states already hold (the uninterrupted run made it before them)."""
    state = rng_state()
    for _ in itertools.islice(batches, skip):
        pass
    set_rng_state(state)


def _training_split_in_memory(
    run: _Run, split_index: Mapping[str, Any]
) -> shards.InMemorySplit | None:
    """The training split in memory for the official order (None for the shard order); refused,
    saying what it would need, where it would not fit beside every process of this machine."""
    if run.cfg.data_order != "official":
        return None
    image_size = run.model_config.image_size
    need = shards.in_memory_bytes(split_index["images"], split_index["questions"], image_size)
    processes = processes_on_this_machine()
    available = available_memory()
    what = (
        f"train_model.data_order 'official' holds the training split in memory: "
        f"{split_index['images']:,} images decoded at {image_size}x{image_size} and "
        f"{split_index['questions']:,} questions, {_size(need)} per process x {processes} "
        f"process(es) on this machine = {_size(need * processes)}"
    )
    # A fifth left over for the model, the CUDA context and the validation loader's workers.
    if available is not None and need * processes > 0.8 * available:
        raise ValueError(
            f"{what}, more than 80% of the {_size(available)} available; set "
            "train_model.data_order: shards (a stream that needs only its shuffle buffer), or "
            "fewer processes per machine"
        )
    log.info("%s (available: %s)", what, "unknown" if available is None else _size(available))
    start = time.perf_counter()
    split = shards.InMemorySplit.read(
        run.train_paths,
        image_size=image_size,
        num_answers=run.meta["num_answers"],
        progress=run.progress and run.ctx.main,
    )
    log.info(
        "read %d images and %d questions into memory (%s) in %.0f s",
        len(split.images),
        len(split),
        _size(split.nbytes),
        time.perf_counter() - start,
    )
    return split


def _size(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.2f} MB"


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX; ARM's is not probed)."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def bf16_to_use(device: torch.device, bf16: bool) -> bool:
    """Whether to train in bf16: False, with a warning, where a CPU would emulate it: emulated
    bfloat16 is many times slower than float32."""
    if bf16 and device.type == "cpu" and not native_cpu_bf16():
        log.warning(
            "train_model.bf16 is true but this CPU has no native bfloat16 (AVX512-BF16, AMX): "
            "emulated, it is many times slower, so this run trains in float32 "
            "(set train_model.bf16: false to silence this)"
        )
        return False
    return bf16


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    # bfloat16 needs no loss scaling (float32's exponent range), unlike float16.
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(batch: shards.Batch, device: torch.device, channels_last: bool) -> tuple:
    images = batch.images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return (
        images,
        batch.questions.to(device, non_blocking=True),
        batch.lengths.to(device, non_blocking=True),
        batch.answers.to(device, non_blocking=True),
    )


def freeze_untrained(model: nn.Module, config: TrainConfig) -> None:
    """Turn off the gradients of what `config.trainable` leaves as it is."""
    if config.trainable == "all":
        return
    trained = getattr(model, config.trainable)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in trained.parameters():
        p.requires_grad_(True)


def set_train_mode(model: nn.Module, raw_model: nn.Module, config: TrainConfig) -> None:
    """Train mode for what is trained; for the rest, train mode as in the official code
    (`frozen_batchnorm: train`: BatchNorm normalizes by each batch and its running statistics
    drift) or eval mode (`eval`: running statistics used and kept).

    `model` is what the steps call (maybe wrapped by DDP or torch.compile), `raw_model` the
    FiLMedNet inside it.
    """
    model.train()
    if config.trainable != "all" and config.frozen_batchnorm == "eval":
        for name, child in raw_model.named_children():
            if name != config.trainable:
                child.eval()


def build_optimizer(
    model: nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam with plain L2 weight decay on every trained parameter (SPEC §4; not AdamW's)."""
    return torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",  # one kernel for the whole update
    )


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    questions: Tensor,
    lengths: Tensor,
    answers: Tensor,
    *,
    bf16: bool = False,
) -> tuple[Tensor, Tensor]:
    """One optimizer step on a batch already on the model's device.

    Returns:
        (mean cross-entropy loss, number of correct answers), as device tensors (no sync).
    """
    with _autocast(images.device, bf16):
        logits = model(images, questions, lengths)  # (B, num_answers)
    loss = F.cross_entropy(logits.float(), answers)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == answers).sum()


COLUMNS: tuple[str, ...] = tuple(clevr.QUESTION_TYPES)  # Batch.types indexes these


@dataclass(frozen=True)
class Scores:
    """Summed results over questions with a known answer, in total and per paper column."""

    correct: float
    counted: float
    loss: float
    column_correct: tuple[float, ...]
    column_counted: tuple[float, ...]

    @classmethod
    def zero(cls) -> Scores:
        """Nothing scored yet (a rank without validation shards contributes this)."""
        return cls(0.0, 0.0, 0.0, (0.0,) * len(COLUMNS), (0.0,) * len(COLUMNS))

    def as_list(self) -> list[float]:
        return [self.correct, self.counted, self.loss, *self.column_correct, *self.column_counted]

    @classmethod
    def from_list(cls, values: list[float]) -> Scores:
        n = len(COLUMNS)
        return cls(*values[:3], tuple(values[3 : 3 + n]), tuple(values[3 + n :]))

    def all_reduced(self, ctx: DistContext, device: torch.device) -> Scores:
        """The scores summed over every rank (a collective: every rank must call it)."""
        return Scores.from_list(all_reduce(self.as_list(), ctx, device))

    def column_accuracies(self) -> dict[str, float]:
        """Accuracy per column that has questions."""
        pairs = zip(COLUMNS, self.column_correct, self.column_counted, strict=True)
        return {name: c / n for name, c, n in pairs if n > 0}


def _score(
    model: nn.Module,
    loader: Iterable[shards.Batch],
    device: torch.device,
    *,
    bf16: bool = False,
    channels_last: bool = False,
) -> Scores:
    """Scores over the questions with a known answer, in eval mode."""
    was_training = model.training
    model.eval()
    correct = counted = loss_sum = 0.0
    column_correct = torch.zeros(len(COLUMNS), dtype=torch.float64)
    column_counted = torch.zeros(len(COLUMNS), dtype=torch.float64)
    try:
        with torch.inference_mode():
            for batch in loader:
                images, questions, lengths, answers = _to_device(batch, device, channels_last)
                with _autocast(device, bf16):
                    logits = model(images, questions, lengths)
                known = answers >= 0
                logits, answers = logits[known].float(), answers[known]
                right = (logits.argmax(dim=1) == answers).cpu().double()
                correct += float(right.sum())
                counted += float(answers.numel())
                loss_sum += float(F.cross_entropy(logits, answers, reduction="sum"))
                types = batch.types[known.cpu()]
                typed = types >= 0  # -1: a question whose type is unknown
                column_correct.index_add_(0, types[typed], right[typed])
                column_counted.index_add_(0, types[typed], torch.ones_like(right[typed]))
    finally:
        model.train(was_training)
    return Scores(
        correct, counted, loss_sum, tuple(column_correct.tolist()), tuple(column_counted.tolist())
    )


def evaluate_accuracy(
    model: nn.Module, loader: Iterable[shards.Batch], device: torch.device | str
) -> float:
    """Fraction of the loader's questions (with a known answer) answered correctly."""
    scores = _score(model, loader, torch.device(device))
    if scores.counted == 0:
        raise ValueError("evaluate_accuracy: the loader yielded no question with a known answer")
    return scores.correct / scores.counted


# --- Logging ---------------------------------------------------------------------------------
class _Logger:
    """Per-epoch metrics through DVCLive (imported lazily); rank 0 only.

    On every start the folder is rewritten from the checkpoint's history, then appended to: a
    resumed run's files then equal an uninterrupted run's even if the kill fell between a
    DVCLive write and the checkpoint.
    """

    NAMES = {  # history key -> DVCLive metric (plots/metrics/<name>.tsv)
        "train_loss": "train/loss",
        "train_accuracy": "train/accuracy",
        "val_loss": "val/loss",
        "val_accuracy": "val/accuracy",
        "lr": "lr",
        "samples_per_s": "samples_per_s",
    }

    def __init__(self, log_dir: Path, params: dict[str, Any], history: list[dict]) -> None:
        from dvclive import Live

        class FilesOnlyLive(Live):
            def _init_dvc(self) -> None:
                # DVCLive 3.x looks for the DVC repo around the working directory: it runs
                # `dvc init` in a git repo without one and fails in a git repo without commits.
                # Only the files are wanted (dvc.yaml declares them), so skip the lookup.
                self._dvc_file = "dvc.yaml"

        # No dvc.yaml rewrite and no git experiment refs: the pipeline's dvc.yaml declares the
        # metrics and plots, and runs are recorded by dvc.lock, not `dvc exp`.
        self.live = FilesOnlyLive(dir=str(log_dir), resume=False, save_dvc_exp=False, dvcyaml=False)
        self.live.log_params(params)
        for row in history:
            self.log(row)

    def log(self, row: Mapping[str, Any]) -> None:
        self.live.step = int(row["epoch"])
        for key, name in self.NAMES.items():
            self.live.log_metric(name, row[key])
        for column, accuracy in row.get("val_columns", {}).items():  # absent before 2026-12
            self.live.log_metric(f"val/columns/{column}", accuracy)
        self.live.sync()

    def end(self, summary: Mapping[str, Any]) -> None:
        self.live.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float)})
        self.live.end()


# --- Run state --------------------------------------------------------------------------------
@dataclass
class Sums:
    """Summed (loss, correct answers, questions) of part of an epoch."""

    loss: float = 0.0
    correct: float = 0.0
    questions: float = 0.0

    def __add__(self, other: Sums) -> Sums:
        return Sums(
            self.loss + other.loss,
            self.correct + other.correct,
            self.questions + other.questions,
        )

    def as_list(self) -> list[float]:
        return [self.loss, self.correct, self.questions]

    def all_reduced(self, ctx: DistContext, device: torch.device) -> Sums:
        """The sums over every rank (a collective: every rank must call it)."""
        return Sums(*all_reduce(self.as_list(), ctx, device))


@dataclass
class TrainState:
    """Where a run stands; the `last` checkpoint stores it to resume exactly."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps over all epochs
    epoch_step: int = 0  # steps taken in the current, unfinished epoch
    partial: Sums = field(default_factory=Sums)  # that epoch's sums up to the resume, all ranks
    best_val_accuracy: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch

    def as_checkpoint(self) -> dict[str, Any]:
        """The checkpoint fields of this state (`partial` as a list, for weights_only)."""
        return {**dataclasses.asdict(self), "partial": self.partial.as_list()}

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> TrainState:
        names = [f.name for f in dataclasses.fields(cls)]
        state = cls(**{name: checkpoint[name] for name in names})
        state.partial = Sums(*checkpoint["partial"])
        return state


@dataclass
class _Run:
    """What `train` set up: fixed for the run, except `state` and `best_model`."""

    model_config: FiLMConfig
    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    shards_dir: Path
    train_split: str
    val_split: str
    train_paths: list[str]
    val_paths: list[str]
    steps_per_epoch: int
    raw_model: nn.Module  # the model itself, whose state_dict goes into checkpoints
    model: nn.Module  # what the steps call: raw_model, wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    meta: dict[str, Any]  # what every checkpoint says about the run (configs, vocab, ...)
    best_checkpoint: Path
    last_checkpoint: Path
    curves_png: Path | None
    progress: bool
    state: TrainState = field(default_factory=TrainState)
    best_model: dict[str, Tensor] | None = None  # weights of the best epoch so far (rank 0)
    logger: _Logger | None = None  # rank 0
    # The training split in memory for the official order (data_order); None: the shard order.
    train_questions: shards.InMemorySplit | None = None


@dataclass
class _EpochResult:
    totals: Sums  # the whole epoch, all ranks
    samples: int  # trained this session (all ranks)
    seconds: float


# --- The loop ---------------------------------------------------------------------------------
def train(
    model_config: FiLMConfig,
    train_config: TrainConfig,
    *,
    shards_dir: Path,
    vocab_path: Path,
    best_checkpoint: Path,
    last_checkpoint: Path,
    log_dir: Path,
    curves_png: Path | None = None,
    progress: bool = True,
    train_split: str = "train",
    val_split: str = "val",
    val_shards_dir: Path | None = None,
    profile: str | None = None,
) -> dict[str, Any]:
    """Train FiLM on `shards_dir` (SPEC §4), resuming from `last_checkpoint` when it matches.

    Every epoch is `train questions // (batch_size * world size)` steps, then the validation
    accuracy; training stops after `max_epochs`, or after `patience` epochs without a better
    validation accuracy (when `patience` is set). Under torchrun (WORLD_SIZE > 1) each process
    trains on its slice of the shards through DDP; only rank 0 writes and shows progress.

    Args:
        model_config, train_config: the model and the recipe.
        shards_dir: holds `index.json` and the `train_split` and `val_split` shards.
        vocab_path: the tokenizer's `vocab.json` (stored in the checkpoints).
        best_checkpoint: the best-validation checkpoint (no optimizer state) and its `.json`.
        last_checkpoint: the resume point, rewritten every epoch (and checkpoint_every_steps).
        log_dir, curves_png, progress: DVCLive folder (per-epoch metrics), learning curves at
            the end, a tqdm bar (rank 0).
        train_split, val_split: the split trained on and the one validated every epoch (all
            its questions); the workflow passes `get_data.splits`' first two (CoGenT: trainA, valA).
        val_shards_dir: the `val_split` shards' folder if not `shards_dir` (CoGenT).
        profile: the run's profile name, kept in every checkpoint (not in the fingerprint).

    Returns:
        Summary: best_val_accuracy, best_epoch, epochs, steps, samples_per_s, stopped_early,
        world_size, device.

    Raises:
        ValueError: missing or malformed inputs, or too few questions for one global batch.
        FloatingPointError: the loss became NaN or infinite (the message says where).
    """
    ctx, device = init_distributed(train_config.device)
    try:
        with (
            _sole_training(ctx, Path(last_checkpoint), Path(log_dir)),
            determinism(device, train_config.num_threads),
        ):
            run = _setup(
                model_config,
                train_config,
                ctx,
                device,
                shards_dir=Path(shards_dir),
                vocab_path=Path(vocab_path),
                best_checkpoint=Path(best_checkpoint),
                last_checkpoint=Path(last_checkpoint),
                log_dir=Path(log_dir),
                curves_png=None if curves_png is None else Path(curves_png),
                progress=progress,
                train_split=train_split,
                val_split=val_split,
                val_shards_dir=Path(val_shards_dir or shards_dir),
                profile=profile,
            )
            samples, seconds, stopped_early = 0, 0.0, False
            while run.state.epoch < train_config.max_epochs:
                if _patience_ran_out(run):
                    stopped_early = True
                    break
                result = _train_epoch(run)
                samples, seconds = samples + result.samples, seconds + result.seconds
                _end_epoch(run, result)
            return _finish(run, samples, seconds, stopped_early)
    finally:
        if ctx.created:
            dist.destroy_process_group()


def _sole_training(
    ctx: DistContext, last_checkpoint: Path, log_dir: Path
) -> contextlib.AbstractContextManager:
    """Rank 0's lock beside the resume point, held while it trains: a second training with the
    same resume point (the same command, run by hand or by the other engine) would interleave
    its checkpoints and `log_dir` with this one's."""
    if not ctx.main:
        return contextlib.nullcontext()
    return exclusive_lock(
        last_checkpoint.with_name(last_checkpoint.name + ".lock"),
        f"a training writing {log_dir} and {last_checkpoint}",
    )


def _check_one_global_batch(
    train_index: Mapping[str, Any], global_batch: int, shards_dir: Path, train_split: str
) -> None:
    if train_index["questions"] < global_batch:
        raise ValueError(
            f"{shards_dir / 'index.json'}: split {train_split!r}: "
            f"{train_index['questions']} training questions, fewer than one global batch "
            f"of {global_batch}"
        )


def _setup(
    model_config: FiLMConfig,
    cfg: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    *,
    shards_dir: Path,
    vocab_path: Path,
    log_dir: Path,
    train_split: str,
    val_split: str,
    val_shards_dir: Path,
    profile: str | None,
    **outputs: Any,
) -> _Run:
    """Read the data's index and vocabulary, build model and optimizer, resume if `last` fits."""
    cfg = dataclasses.replace(cfg, bf16=bf16_to_use(device, cfg.bf16))  # before the fingerprint
    vocab = load_vocab(vocab_path)
    index = shards.load_index(shards_dir)
    train_paths = shards.shard_paths(shards_dir, train_split)  # raises naming a missing split
    val_paths = shards.shard_paths(val_shards_dir, val_split)
    train_index = index[train_split]
    global_batch = cfg.batch_size * ctx.world_size
    _check_one_global_batch(train_index, global_batch, shards_dir, train_split)
    steps_per_epoch = _steps_per_epoch(train_index, cfg, ctx.world_size)
    samples = _sample_shards(train_paths + val_paths)
    splits = (train_split, val_split)
    init = _initial_weights(cfg.init_checkpoint, model_config, vocab)
    if init is not None:  # a fine-tuning run: what it starts from shapes its trajectory, the
        # run and how far it had trained (a curriculum phase resumed after an earlier one grew)
        samples = [*samples, _init_sample(init)]
    if val_shards_dir != shards_dir:  # both folders' indexes shape the run
        index = {"train": index, "val": shards.load_index(val_shards_dir)}
    fingerprint = _fingerprint(model_config, cfg, ctx.world_size, splits, index, samples, vocab)

    raw_model = _build(model_config, cfg, vocab, init, device)
    meta = _checkpoint_meta(model_config, cfg, ctx, device, raw_model, vocab, fingerprint)
    if profile is not None:
        meta["profile"] = profile
    run = _Run(
        model_config=model_config,
        cfg=cfg,
        ctx=ctx,
        device=device,
        shards_dir=shards_dir,
        train_split=train_split,
        val_split=val_split,
        train_paths=train_paths,
        val_paths=val_paths,
        steps_per_epoch=steps_per_epoch,
        raw_model=raw_model,
        model=raw_model,
        optimizer=build_optimizer(raw_model, cfg, device),
        meta=meta,
        **outputs,
    )
    run.train_questions = _training_split_in_memory(run, train_index)
    _resume(run)
    if ctx.world_size > 1:
        run.model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        run.model = torch.compile(run.model)
    if ctx.main:
        params = {"model": meta["model_config"], "train": meta["train_config"]}
        params["splits"] = {"train": train_split, "val": val_split}
        run.logger = _Logger(log_dir, params, run.state.history)
    log.info(
        "training on %s x %d: %d steps per epoch of %d questions, %d parameters",
        device,
        ctx.world_size,
        steps_per_epoch,
        global_batch,
        meta["parameters"]["total"],
    )
    return run


def _build(
    model_config: FiLMConfig,
    cfg: TrainConfig,
    vocab: dict[str, Any],
    init: dict[str, Any] | None,
    device: torch.device,
) -> nn.Module:
    """The seeded model, from `init`'s weights when fine-tuning, with what is not trained frozen."""
    set_seed(cfg.seed)
    vocab_size, num_answers = len(vocab["question_token_to_idx"]), len(vocab["answer_token_to_idx"])
    raw_model = build_model(model_config, vocab_size, num_answers).to(device)
    if init is not None:
        raw_model.load_state_dict(init["model"])
    freeze_untrained(raw_model, cfg)
    if cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    return raw_model


def _initial_weights(
    init_checkpoint: str | None, model_config: FiLMConfig, vocab: dict
) -> dict[str, Any] | None:
    """The checkpoint a fine-tuning run starts from, checked against this run's model; None
    for a run from scratch."""
    if init_checkpoint is None:
        return None
    path = Path(init_checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint to start from (init_checkpoint)")
    checkpoint = load_checkpoint(path)
    # Through FiLMConfig, so that a field added since the checkpoint was written reads as its
    # default, as the checkpoint's model was built.
    if FiLMConfig.from_dict(checkpoint.get("model_config") or {}) != model_config:
        raise ValueError(f"{path}: its model configuration differs from this run's")
    # Every table, program tokens too (stricter than scoring needs), so that a fine-tune's
    # checkpoints and the one it started from describe one vocabulary.
    tables = tuple(sorted({*vocab, *(checkpoint.get("vocab") or {})}))
    differ = vocab_differences(checkpoint, vocab, keys=tables)
    if differ:
        raise ValueError(
            f"{path}: its vocabulary differs from this run's vocab.json "
            f"(another {' and '.join(differ)})"
        )
    return checkpoint


def _init_sample(init: Mapping[str, Any]) -> str:
    """What a fine-tuning run knows its start by: the run that made it (its fingerprint) and
    the step it had reached; for a checkpoint without a fingerprint (converted from the
    official code before they had one) a digest of its weights stands for the run."""
    return f"init:{start_identity(init)}@{init.get('step')}"


def _steps_per_epoch(split_index: Mapping[str, Any], cfg: TrainConfig, world_size: int) -> int:
    """Steps in an epoch. The shard order: whole global batches, the tail of fewer questions
    left out. The official order: every question, the last partial batch kept."""
    questions = int(split_index["questions"])
    if cfg.data_order == "official":
        return shards.permuted_steps_per_epoch(questions, cfg.batch_size, world_size)
    return questions // (cfg.batch_size * world_size)


def _checkpoint_meta(
    model_config: FiLMConfig,
    cfg: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    raw_model: nn.Module,
    vocab: dict[str, Any],
    fingerprint: str,
) -> dict[str, Any]:
    """What every checkpoint of the run says about it: enough to rebuild and label the model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_config": model_config.asdict(),
        "train_config": cfg.asdict(),
        "vocab": vocab,
        "vocab_size": len(vocab["question_token_to_idx"]),
        "num_answers": len(vocab["answer_token_to_idx"]),
        "world_size": ctx.world_size,
        "fingerprint": fingerprint,
        "parameters": count_parameters(raw_model),
        "torch_version": str(torch.__version__),
        "machine": machine_description(device),  # the results' label: where it was trained
    }


def _resume(run: _Run) -> None:
    """Continue from `last` when it was written by this very run (same fingerprint)."""
    checkpoint = _matching_last_checkpoint(
        run.last_checkpoint, run.meta["fingerprint"], run.cfg.max_epochs
    )
    if checkpoint is None and run.ctx.main:
        _remove_epoch_checkpoints(run.last_checkpoint)
    if checkpoint is not None:
        run.raw_model.load_state_dict(checkpoint["model"])
        run.optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"])
        run.state = TrainState.from_checkpoint(checkpoint)
        run.best_model = checkpoint["best_model"]
        log.info(
            "resuming from %s: epoch %d done, step %d",
            run.last_checkpoint,
            run.state.epoch,
            run.state.step,
        )
    if run.ctx.world_size > 1:
        # Every rank reads `last` itself (a shared file system); make sure they all agree:
        # sum(s)^2 == n * sum(s^2) holds only when every rank's step s is the same.
        step = run.state.step
        total, squares = all_reduce([step, step**2], run.ctx, run.device)
        if total**2 != run.ctx.world_size * squares:
            raise ValueError(
                f"ranks resumed from different steps of {run.last_checkpoint}; is it on a file "
                "system every node sees?"
            )
    if run.ctx.main and run.best_model is not None:
        try:  # `best` is an output the workflow engine may have removed before rerunning
            written = load_checkpoint(run.best_checkpoint).get("fingerprint")
        except (FileNotFoundError, ValueError):
            written = None
        intact = written == run.meta["fingerprint"]
        if not intact:
            log.info("rewriting %s from the resume checkpoint", run.best_checkpoint)
            _write_best(run)


def _matching_last_checkpoint(
    path: Path, fingerprint: str, max_epochs: int
) -> dict[str, Any] | None:
    """The checkpoint at `path` if this run wrote it and trained no further than `max_epochs`,
    else None to start fresh (logged).

    max_epochs is outside the fingerprint of a constant learning rate, so that asking for more
    epochs goes on; a checkpoint past fewer epochs holds a longer run, whose best epoch may lie
    beyond them.
    """
    if not path.exists():
        return None
    try:
        checkpoint = load_checkpoint(path)
    except ValueError as e:
        log.warning("not resuming: %s", e)
        return None
    if checkpoint.get("fingerprint") != fingerprint:
        log.warning(
            "not resuming from %s: it was written with another configuration or other data "
            "(fingerprint %.12s, this run %.12s); starting fresh",
            path,
            checkpoint.get("fingerprint"),
            fingerprint,
        )
        return None
    if (checkpoint["epoch"], checkpoint["epoch_step"]) > (max_epochs, 0):
        log.warning(
            "not resuming from %s: it has trained %d epochs and %d steps, past this run's "
            "max_epochs %d; starting fresh",
            path,
            checkpoint["epoch"],
            checkpoint["epoch_step"],
            max_epochs,
        )
        return None
    return checkpoint


def _patience_ran_out(run: _Run) -> bool:
    """Early stopping: `patience` epochs without a better validation accuracy (logged)."""
    state, patience = run.state, run.cfg.patience
    if patience is None or state.epoch - state.best_epoch < patience:
        return False
    log.info(
        "early stop: no better %s accuracy for %d epochs (best %.4f at epoch %d)",
        run.val_split,
        patience,
        state.best_val_accuracy,
        state.best_epoch,
    )
    return True


def _train_epoch(run: _Run) -> _EpochResult:
    """Train the rest of the current epoch (all of it, unless resumed mid-epoch)."""
    state, cfg, ctx = run.state, run.cfg, run.ctx
    skip = state.epoch_step
    # Mid-epoch resume: the epoch's deterministic order from where it stopped. Closed after
    # the epoch, so that its loader (workers, shuffle buffer) is gone before validation starts
    # another.
    epoch_batches = _epoch_batches(run, skip)
    local = Sums()  # this rank's own sums; `state.partial` holds all ranks' up to the resume
    window: list[tuple[Tensor, Tensor, int]] = []
    bar = tqdm(
        total=run.steps_per_epoch,
        initial=skip,
        desc=f"epoch {state.epoch + 1}/{cfg.max_epochs}",
        unit="step",
        disable=not (run.progress and ctx.main),
        dynamic_ncols=True,
    )
    set_train_mode(run.model, run.raw_model, cfg)
    start = time.perf_counter()
    samples = 0
    try:
        for batch in itertools.islice(epoch_batches, run.steps_per_epoch - skip):
            inputs = _to_device(batch, run.device, cfg.channels_last)
            if _has_schedule(cfg):
                lr = learning_rate_at(cfg, state.step, run.steps_per_epoch)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr
            loss, correct = train_step(run.model, run.optimizer, *inputs, bf16=cfg.bf16)
            state.step += 1
            state.epoch_step += 1
            samples += len(batch.answers) * ctx.world_size
            window.append((loss, correct, len(batch.answers)))
            every = cfg.checkpoint_every_steps
            save_now = every > 0 and state.step % every == 0
            if len(window) == _SYNC_EVERY or save_now or state.epoch_step == run.steps_per_epoch:
                local = local + _flush(window, state, ctx, run.device, cfg)
                window.clear()
                bar.update(state.epoch_step - bar.n)
                bar.set_postfix(
                    loss=f"{local.loss / max(local.questions, 1):.4f}",
                    acc=f"{local.correct / max(local.questions, 1):.4f}",
                    samples_s=f"{samples / max(time.perf_counter() - start, 1e-9):.0f}",
                )
            if save_now and state.epoch_step < run.steps_per_epoch:
                partial = state.partial + local.all_reduced(ctx, run.device)
                if ctx.main:
                    save_checkpoint(run.last_checkpoint, _last_checkpoint(run, partial))
    finally:
        epoch_batches.close()
    bar.close()
    totals = state.partial + local.all_reduced(ctx, run.device)
    return _EpochResult(totals, samples, time.perf_counter() - start)


def _end_epoch(run: _Run, result: _EpochResult) -> None:
    """Validate, append the epoch to the history, keep the best model, save `last`."""
    state, ctx = run.state, run.ctx
    val = _validate(
        run.raw_model,
        run.val_paths,
        ctx,
        run.device,
        run.cfg,
        run.model_config.image_size,
        run.meta["num_answers"],
    )
    if val.counted == 0:
        raise ValueError(f"{run.shards_dir}: split {run.val_split!r} has no answered questions")
    row = {
        "epoch": state.epoch + 1,
        "step": state.step,
        "train_loss": result.totals.loss / result.totals.questions,
        "train_accuracy": result.totals.correct / result.totals.questions,
        "val_loss": val.loss / val.counted,
        "val_accuracy": val.correct / val.counted,
        "val_columns": val.column_accuracies(),  # per paper column: which reasoning it learns
        "lr": run.optimizer.param_groups[0]["lr"],
        "samples_per_s": result.samples / max(result.seconds, 1e-9),
    }
    state.history.append(row)
    state.epoch += 1
    state.epoch_step = 0
    state.partial = Sums()
    log.info(
        "epoch %d: train loss %.4f acc %.4f, %s acc %.4f, %.0f samples/s",
        row["epoch"],
        row["train_loss"],
        row["train_accuracy"],
        run.val_split,
        row["val_accuracy"],
        row["samples_per_s"],
    )
    if row["val_accuracy"] > state.best_val_accuracy:
        state.best_val_accuracy = row["val_accuracy"]
        state.best_epoch = row["epoch"]
        if ctx.main:  # the only rank that writes checkpoints
            weights = run.raw_model.state_dict().items()
            run.best_model = {k: v.detach().to("cpu", copy=True) for k, v in weights}
            _write_best(run)
    if ctx.main:
        last = _last_checkpoint(run, state.partial)
        save_checkpoint(run.last_checkpoint, last)
        if run.cfg.keep_epoch_checkpoints:
            save_checkpoint(epoch_checkpoint(run.last_checkpoint, row["epoch"]), last)
        run.logger.log(row)


def _finish(run: _Run, samples: int, seconds: float, stopped_early: bool) -> dict[str, Any]:
    """The run's summary; rank 0 rewrites `best` with the whole history and closes the logs."""
    history = run.state.history
    if seconds > 0:
        samples_per_s = samples / seconds
    else:  # nothing left to train this session: report the run's own speed
        samples_per_s = float(np.mean([r["samples_per_s"] for r in history])) if history else 0.0
    summary = {
        "best_val_accuracy": run.state.best_val_accuracy,
        "best_epoch": run.state.best_epoch,
        "epochs": run.state.epoch,
        "steps": run.state.step,
        "samples_per_s": samples_per_s,
        "stopped_early": stopped_early,
        "world_size": run.ctx.world_size,
        "device": str(run.device),
    }
    if run.ctx.main:
        if run.best_model is not None:
            _write_best(run)  # again, so that its history and sidecar cover the whole run
        run.logger.end(summary)
        if run.curves_png is not None and history:
            from filmclevr.figures import plot_learning_curves

            plot_learning_curves(history, run.curves_png)
    return summary


# --- Checkpoints of a run ---------------------------------------------------------------------
def epoch_checkpoint(last_checkpoint: Path, epoch: int) -> Path:
    """Where `keep_epoch_checkpoints` keeps the resume point of the end of `epoch` (1-based)."""
    return last_checkpoint.with_name(f"epoch-{epoch}.pt")


def _remove_epoch_checkpoints(last_checkpoint: Path) -> None:
    """A fresh start replaces the run whose `last` lay here: that run's epoch-<N>.pt go with
    it, so that the folder never holds two runs' epochs as if they were one's."""
    stale = [
        path
        for path in last_checkpoint.parent.glob("epoch-*.pt")
        if re.fullmatch(r"epoch-[0-9]+\.pt", path.name)
    ]
    for path in stale:
        path.unlink()
    if stale:
        log.info(
            "removed %d epoch checkpoints of an earlier run from %s",
            len(stale),
            last_checkpoint.parent,
        )


def _last_checkpoint(run: _Run, partial: Sums) -> dict[str, Any]:
    """The resume point: everything to go on exactly, `partial` the unfinished epoch's sums."""
    return {
        **run.meta,
        **run.state.as_checkpoint(),
        "partial": partial.as_list(),
        "model": run.raw_model.state_dict(),
        "best_model": run.best_model,  # so `best` can be rewritten if it went missing
        "optimizer": run.optimizer.state_dict(),
        "rng": rng_state(),
    }


def _write_best(run: _Run) -> None:
    """The model of the best epoch, with the history of the whole run, and its JSON sidecar."""
    state = run.state
    checkpoint = {**run.meta, **state.as_checkpoint()}
    del checkpoint["partial"], checkpoint["epoch_step"]
    best_step = state.history[state.best_epoch - 1]["step"]
    checkpoint.update(model=run.best_model, epoch=state.best_epoch, step=best_step)
    save_checkpoint(run.best_checkpoint, checkpoint)
    sidecar = {
        "model_config": run.meta["model_config"],
        "train_config": run.meta["train_config"],
        "epoch": state.best_epoch,
        "train_split": run.train_split,
        "val_split": run.val_split,
        "val_accuracy": state.best_val_accuracy,
        "parameters": run.meta["parameters"],
        "world_size": run.ctx.world_size,
        "fingerprint": run.meta["fingerprint"],
        "history": state.history,
    }
    write_json_atomic(run.best_checkpoint.with_suffix(".json"), sidecar)


def _flush(
    window: list[tuple[Tensor, Tensor, int]],
    state: TrainState,
    ctx: DistContext,
    device: torch.device,
    cfg: TrainConfig,
) -> Sums:
    """Move the window's per-step losses to the host (one sync), stop on a non-finite one."""
    losses = torch.stack([w[0] for w in window]).double().cpu()
    corrects = torch.stack([w[1] for w in window]).double().cpu()
    sizes = [w[2] for w in window]
    finite = torch.isfinite(losses)
    # Collective, so that every rank stops together rather than some waiting in the next step.
    bad_ranks = all_reduce([0.0 if bool(finite.all()) else 1.0], ctx, device)[0]
    if bad_ranks:
        if bool(finite.all()):
            where, value = "on another rank", "non-finite"
        else:
            first = int((~finite).int().argmax())  # the window's first non-finite step
            back = len(window) - first - 1
            where = (
                f"at step {state.step - back} (step {state.epoch_step - back} of epoch "
                f"{state.epoch + 1})"
            )
            value = str(losses[first].item())
        raise FloatingPointError(
            f"training diverged: the loss is {value} {where}; lower learning_rate "
            f"(now {cfg.learning_rate:g}) and start again"
        )
    return Sums(
        float((losses * torch.tensor(sizes, dtype=torch.float64)).sum()),
        float(corrects.sum()),
        float(sum(sizes)),
    )


def _validate(
    raw_model: nn.Module,
    val_paths: list[str],
    ctx: DistContext,
    device: torch.device,
    cfg: TrainConfig,
    image_size: int,
    num_answers: int,
) -> Scores:
    """The validation split's scores, summed over the ranks (the loader checks every image is
    `image_size` square and every answer below `num_answers`).

    Each rank scores its slice of the shards (rank 0 all of them when there are fewer shards
    than ranks); rank 0's BatchNorm statistics are broadcast first, so all ranks score the
    model that goes into the checkpoint.
    """
    if ctx.world_size > 1:
        for buffer in raw_model.buffers():
            dist.broadcast(buffer, src=0)
    split = ctx.world_size > 1 and len(val_paths) >= ctx.world_size
    scores = Scores.zero()
    if split or ctx.main:
        loader = shards.question_loader(
            val_paths,
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            split_by_node=split,
            image_size=image_size,
            num_answers=num_answers,
        )
        scores = _score(raw_model, loader, device, bf16=cfg.bf16, channels_last=cfg.channels_last)
    return scores.all_reduced(ctx, device)
