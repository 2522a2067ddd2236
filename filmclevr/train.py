"""The training loop: FiLM on CLEVR shards on a CPU, a GPU, or several through torchrun (DDP).

A plain loop in the manner of nanoGPT's `train.py`, kept in the library so tests run it on a
tiny CPU config. The recipe is the paper's (SPEC §4): Adam, learning rate 3e-4, plain L2 weight
decay 1e-5 on every parameter, batch 64, no schedule, no gradient clipping, no augmentation;
validate once an epoch, keep the best-validation checkpoint, at most 80 epochs.

Resumption: `last_checkpoint` holds everything the run needs to go on (model, optimizer, RNG
states, history, position in the epoch), and the loader's order depends only on (seed, epoch),
so a run killed and started again ends with the same weights and history as one that never
stopped. A `last` checkpoint of a different configuration or data is ignored, not resumed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import pickle  # only for the exception type torch.load(weights_only=True) raises
import random
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from filmclevr import shards
from filmclevr.io import atomic_path, write_json_atomic
from filmclevr.model import FiLMConfig, FiLMedNet, build_model, count_parameters
from filmclevr.tokenize import load_vocab

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "filmclevr-checkpoint/1"
_SYNC_EVERY = 10  # steps between host syncs (loss check, progress bar): a sync per step stalls GPUs
# A rank's p-th extra pass over its shards in an epoch uses loader epoch epoch + p * this: a
# fresh order that no real epoch has.
_PASS_STRIDE = 1_000_000


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are the paper's recipe (SPEC §4) on one process.

    `batch_size` is per process: with DDP the global batch is `batch_size * world size`, so keep
    the paper's 64 on 4 GPUs with `batch_size: 16`.
    """

    seed: int = 0  # model init and data order; the same seed gives the same run on a CPU
    batch_size: int = 64  # SPEC §4
    learning_rate: float = 3e-4  # SPEC §4: Adam, constant (no schedule)
    weight_decay: float = 1e-5  # SPEC §4: Adam's plain L2 on every parameter (not AdamW)
    max_epochs: int = 80  # SPEC §4: the official run stops at 80 epochs
    # Stop after this many epochs without a better validation accuracy; None (the default)
    # never stops early, as the paper's recipe: all 80 epochs, keep the best (SPEC §4). The
    # official curve still gains 0.8 points between epochs 30 and 80, so stopping early is a
    # budget choice of a profile, not the recipe.
    patience: int | None = None
    device: str = "auto"  # cuda if available, else cpu; or e.g. "cpu", "cuda", "cuda:1"
    bf16: bool = False  # bfloat16 autocast, a speed switch (the paper trained in float32)
    channels_last: bool = False  # NHWC memory format for the convolutions (a GPU speed switch)
    compile: bool = False  # torch.compile the training model (optional speed-up)
    num_workers: int = 0  # loader worker processes; 0 decodes in this process (deterministic)
    # clevr-iep permutes all questions each epoch; the loader shuffles its shards and keeps a
    # buffer of this many questions (up to ~150 kB of 224x224 image each, so ~750 MB at most).
    shuffle_buffer: int = 5000
    checkpoint_every_steps: int = 0  # also save `last` every this many steps; 0: at epoch end
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    # Processes on this node, one per GPU: the train_model stage starts itself under
    # `torchrun --standalone` when this is > 1 (several nodes: call torchrun yourself).
    nproc_per_node: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.type.removesuffix(" | None")  # the annotations are strings (__future__)
            if value is None and kind != f.type:
                continue
            if kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"TrainConfig.{f.name} must be true or false, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise ValueError(f"TrainConfig.{f.name} must be a string, got {value!r}")
            if kind in ("int", "float"):
                types = int if kind == "int" else (int, float)
                if isinstance(value, bool) or not isinstance(value, types):
                    raise ValueError(f"TrainConfig.{f.name} must be a {f.type}, got {value!r}")
        positive = (
            "batch_size",
            "learning_rate",
            "max_epochs",
            "patience",
            "shuffle_buffer",
            "nproc_per_node",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("weight_decay", "num_workers", "checkpoint_every_steps", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping (a params.yaml section); unknown keys are errors.

        Float fields also take numeric strings: YAML 1.1 readers (PyYAML's safe_load) give `3e-4`
        (no dot) as a string; `params.load_params` itself reads it as a number.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise ValueError(
                f"unknown TrainConfig keys: {', '.join(unknown)} (known: {', '.join(fields)})"
            )
        values = dict(d)
        for name, value in d.items():
            if fields[name].type == "float" and isinstance(value, str):
                try:
                    values[name] = float(value)
                except ValueError:
                    raise ValueError(f"TrainConfig.{name} must be a float, got {value!r}") from None
        return cls(**values)

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Fields that decide only when to stop, save or how fast to run, not the trajectory: a `last`
# checkpoint is resumed across changes to these (e.g. more epochs, another GPU model).
_EXECUTION_FIELDS = frozenset(
    {
        "max_epochs",
        "patience",
        "checkpoint_every_steps",
        "device",
        "channels_last",
        "compile",
        "num_threads",
        "nproc_per_node",  # the world size itself is in the fingerprint
    }
)


# --- Determinism and devices ------------------------------------------------------------------
def set_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch seeds every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def determinism(device: torch.device, num_threads: int = 0) -> Iterator[None]:
    """Within the block: `num_threads` CPU threads (0: unchanged) and, on the CPU, deterministic
    algorithms; on CUDA, cuDNN autotuning instead (fast, not bitwise reproducible). Restores the
    global torch settings afterwards."""
    saved = (
        torch.get_num_threads(),
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    try:
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        if device.type == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)  # cheap on the CPU
        else:
            torch.backends.cudnn.benchmark = True  # fixed input shapes: tune the convs once
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.benchmark = saved[3]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device of `name`: "auto" is cuda when available, else cpu.

    A CUDA device always gets an index (`torch.cuda.set_device` needs one): "cuda" is
    cuda:`local_rank`, and under DDP (WORLD_SIZE > 1) every CUDA device is cuda:LOCAL_RANK, one
    GPU per process. An explicit "cuda:N" is kept on one process.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"TrainConfig.device {name!r} is not a torch device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"TrainConfig.device is {name!r} but CUDA is not available")
        if device.index is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            device = torch.device("cuda", local_rank)
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ValueError(f"device {device} requested but only {count} CUDA device(s) seen")
    return device


@dataclass(frozen=True)
class _Dist:
    rank: int = 0
    world_size: int = 1
    created: bool = False  # this call initialised the process group (and destroys it)

    @property
    def main(self) -> bool:
        return self.rank == 0


def torchrun_command(nproc_per_node: int, module: str, argv: list[str]) -> list[str]:
    """The command that runs `python -m module argv...` as `nproc_per_node` DDP processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        module,
        *argv,
    ]


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (which sets LOCAL_RANK for every worker)."""
    return "LOCAL_RANK" in os.environ


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    """One process: no-op. Under torchrun (WORLD_SIZE > 1): join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the current device: its RNG state goes into checkpoints
    if world_size <= 1:
        return _Dist(), device
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), created), device


def _all_reduce(values: list[float], ctx: _Dist, device: torch.device) -> list[float]:
    """Sum `values` over the ranks (identity on one process)."""
    if ctx.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _plus(a: list[float], b: list[float]) -> list[float]:
    return [x + y for x, y in zip(a, b, strict=True)]


# --- RNG states as tensors and lists, so that checkpoints load with weights_only=True ---------
def _rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), cached],
        "torch": torch.get_rng_state(),
        # Only the current device's: reading every GPU's would open a context on each.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])  # every rank continues rank 0's stream


# --- Checkpoints ------------------------------------------------------------------------------
def _save(path: Path, checkpoint: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `train` (on the CPU, with `weights_only=True`).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a filmclevr checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: not a readable checkpoint ({e})") from None
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    return checkpoint


def model_from_checkpoint(
    path: str | Path, device: torch.device | str = "cpu"
) -> tuple[FiLMedNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint alone (its config, vocab and weights), in eval mode.

    Returns:
        (model on `device`, the checkpoint dict).
    """
    checkpoint = load_checkpoint(path)
    config = FiLMConfig.from_dict(checkpoint["model_config"])
    model = build_model(config, checkpoint["vocab_size"], checkpoint["num_answers"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval(), checkpoint


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
    trajectory = {k: v for k, v in train_config.asdict().items() if k not in _EXECUTION_FIELDS}
    blob = {
        "model": model_config.asdict(),
        "train": trajectory,
        "world_size": world_size,
        "splits": list(splits),
        "index": index,
        "shards": shard_samples,
        "vocab": vocab,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()


# --- Data -------------------------------------------------------------------------------------
def _train_batches(paths: list[str], cfg: TrainConfig, epoch: int) -> Iterator[shards.Batch]:
    """This rank's batches of `epoch`, cycling over its shards if they run out.

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
        )
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise ValueError(f"training shards yielded no questions: {paths[:3]} ...")


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


def build_optimizer(
    model: nn.Module, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """Adam with plain L2 weight decay on every parameter (SPEC §4; not AdamW's decoupled)."""
    return torch.optim.Adam(
        model.parameters(),
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


def _score(
    model: nn.Module,
    loader: Iterable[shards.Batch],
    device: torch.device,
    *,
    bf16: bool = False,
    channels_last: bool = False,
) -> tuple[float, float, float]:
    """(correct, counted, summed loss) over the questions with a known answer, in eval mode."""
    was_training = model.training
    model.eval()
    correct = counted = loss_sum = 0.0
    try:
        with torch.inference_mode():
            for batch in loader:
                images, questions, lengths, answers = _to_device(batch, device, channels_last)
                with _autocast(device, bf16):
                    logits = model(images, questions, lengths)
                known = answers >= 0
                logits, answers = logits[known].float(), answers[known]
                correct += float((logits.argmax(dim=1) == answers).sum())
                counted += float(answers.numel())
                loss_sum += float(F.cross_entropy(logits, answers, reduction="sum"))
    finally:
        model.train(was_training)
    return correct, counted, loss_sum


def evaluate_accuracy(
    model: nn.Module, loader: Iterable[shards.Batch], device: torch.device | str
) -> float:
    """Fraction of the loader's questions (with a known answer) answered correctly."""
    correct, counted, _ = _score(model, loader, torch.device(device))
    if counted == 0:
        raise ValueError("evaluate_accuracy: the loader yielded no question with a known answer")
    return correct / counted


# --- The loop ---------------------------------------------------------------------------------
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
        self.live.sync()

    def end(self, summary: Mapping[str, Any]) -> None:
        self.live.summary.update({k: v for k, v in summary.items() if isinstance(v, int | float)})
        self.live.end()


def _new_state() -> dict[str, Any]:
    return {
        "epoch": 0,  # completed epochs
        "step": 0,  # optimizer steps over all epochs
        "epoch_step": 0,  # steps taken in the current, unfinished epoch
        "partial": [0.0, 0.0, 0.0],  # that epoch's (loss sum, correct, questions), all ranks
        "best_val_accuracy": -1.0,
        "best_epoch": 0,
        "history": [],
    }


def _try_resume(
    path: Path, fingerprint: str, raw_model: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any] | None:
    """The state of `path` loaded into model and optimizer, or None to start fresh (logged)."""
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
    raw_model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    _set_rng_state(checkpoint["rng"])
    log.info(
        "resuming from %s: epoch %d done, step %d", path, checkpoint["epoch"], checkpoint["step"]
    )
    return checkpoint


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
) -> dict[str, Any]:
    """Train FiLM on `shards_dir` (SPEC §4), resuming from `last_checkpoint` when it matches.

    Every epoch is `train questions // (batch_size * world size)` steps, then the validation
    accuracy; training stops after `max_epochs`, or after `patience` epochs without a better
    validation accuracy (when `patience` is set). Started by torchrun with WORLD_SIZE > 1, each
    process trains on its slice of the shards through DistributedDataParallel; only rank 0
    writes files and shows progress.

    Args:
        model_config, train_config: the model and the recipe.
        shards_dir: holds `index.json` and the `train_split` and `val_split` shards.
        vocab_path: the tokenizer's `vocab.json` (stored in the checkpoints).
        best_checkpoint: the best-validation checkpoint (no optimizer state), plus a JSON
            sidecar with the same name and suffix `.json`.
        last_checkpoint: the resume point, rewritten every epoch (and every
            `checkpoint_every_steps`).
        log_dir: DVCLive folder (per-epoch metrics, params).
        curves_png: learning-curve figure, written at the end.
        progress: show a tqdm bar (rank 0).
        train_split, val_split: the split trained on and the one validated every epoch
            (accuracy over all its questions). The workflow passes the first and the second
            entry of `get_data.splits` (CoGenT: trainA, valA).

    Returns:
        Summary: best_val_accuracy, best_epoch, epochs, steps, samples_per_s, stopped_early,
        world_size, device.

    Raises:
        ValueError: missing or malformed inputs, or too few questions for one global batch.
        FloatingPointError: the loss became NaN or infinite (the message says where).
    """
    ctx, device = _init_distributed(train_config.device)
    try:
        with determinism(device, train_config.num_threads):
            return _train(
                model_config,
                train_config,
                ctx=ctx,
                device=device,
                shards_dir=Path(shards_dir),
                vocab_path=Path(vocab_path),
                best_checkpoint=Path(best_checkpoint),
                last_checkpoint=Path(last_checkpoint),
                log_dir=Path(log_dir),
                curves_png=None if curves_png is None else Path(curves_png),
                progress=progress,
                train_split=train_split,
                val_split=val_split,
            )
    finally:
        if ctx.created:
            dist.destroy_process_group()


def _train(
    model_config: FiLMConfig,
    cfg: TrainConfig,
    *,
    ctx: _Dist,
    device: torch.device,
    shards_dir: Path,
    vocab_path: Path,
    best_checkpoint: Path,
    last_checkpoint: Path,
    log_dir: Path,
    curves_png: Path | None,
    progress: bool,
    train_split: str,
    val_split: str,
) -> dict[str, Any]:
    vocab = load_vocab(vocab_path)
    index = shards.load_index(shards_dir)
    train_paths = shards.shard_paths(shards_dir, train_split)  # raises naming a missing split
    val_paths = shards.shard_paths(shards_dir, val_split)
    global_batch = cfg.batch_size * ctx.world_size
    steps_per_epoch = int(index[train_split]["questions"]) // global_batch
    if steps_per_epoch == 0:
        raise ValueError(
            f"{shards_dir / 'index.json'}: split {train_split!r}: "
            f"{index[train_split]['questions']} training questions, fewer than one global batch "
            f"of {global_batch}"
        )
    vocab_size = len(vocab["question_token_to_idx"])
    num_answers = len(vocab["answer_token_to_idx"])
    samples = _sample_shards(train_paths + val_paths)
    splits = (train_split, val_split)
    fingerprint = _fingerprint(model_config, cfg, ctx.world_size, splits, index, samples, vocab)

    set_seed(cfg.seed)
    raw_model = build_model(model_config, vocab_size, num_answers).to(device)
    if cfg.channels_last:
        raw_model = raw_model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(raw_model, cfg, device)
    parameters = count_parameters(raw_model)
    state = _new_state()
    best_state: dict[str, Tensor] | None = None
    checkpoint = _try_resume(last_checkpoint, fingerprint, raw_model, optimizer)
    if checkpoint is not None:
        state = {k: checkpoint[k] for k in _new_state()}
        best_state = checkpoint["best_model"]
    if ctx.world_size > 1:
        # Every rank reads `last` itself (a shared file system); make sure they all agree:
        # sum(s)^2 == n * sum(s^2) holds only when every rank's step s is the same.
        total, squares = _all_reduce([state["step"], state["step"] ** 2], ctx, device)
        if total**2 != ctx.world_size * squares:
            raise ValueError(
                f"ranks resumed from different steps of {last_checkpoint}; is it on a file "
                "system every node sees?"
            )

    model: nn.Module = raw_model
    if ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.compile:
        model = torch.compile(model)

    def make_checkpoint(kind: str) -> dict[str, Any]:
        """The resume point (`last`) or the best-validation model (`best`)."""
        common = {
            "format": CHECKPOINT_FORMAT,
            "model_config": model_config.asdict(),
            "train_config": cfg.asdict(),
            "vocab": vocab,
            "vocab_size": vocab_size,
            "num_answers": num_answers,
            "world_size": ctx.world_size,
            "fingerprint": fingerprint,
            "parameters": parameters,
            "torch_version": str(torch.__version__),
            **{k: v for k, v in state.items() if k != "partial"},
        }
        if kind == "best":  # the model of the best epoch, with the history of the whole run
            best_step = state["history"][state["best_epoch"] - 1]["step"]
            del common["epoch_step"]
            return {**common, "model": best_state, "epoch": state["best_epoch"], "step": best_step}
        return {
            **common,
            "partial": list(state["partial"]),
            "model": raw_model.state_dict(),
            "best_model": best_state,  # so `best` can be rewritten if it went missing
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(),
        }

    def write_best() -> None:
        _save(best_checkpoint, make_checkpoint("best"))
        sidecar = {
            "model_config": model_config.asdict(),
            "train_config": cfg.asdict(),
            "epoch": state["best_epoch"],
            "train_split": train_split,
            "val_split": val_split,
            "val_accuracy": state["best_val_accuracy"],
            "parameters": parameters,
            "world_size": ctx.world_size,
            "fingerprint": fingerprint,
            "history": state["history"],
        }
        write_json_atomic(best_checkpoint.with_suffix(".json"), sidecar)

    if ctx.main and best_state is not None:
        try:  # `best` is an output the workflow engine may have removed before rerunning
            intact = load_checkpoint(best_checkpoint).get("fingerprint") == fingerprint
        except (FileNotFoundError, ValueError):
            intact = False
        if not intact:
            log.info("rewriting %s from the resume checkpoint", best_checkpoint)
            write_best()

    logger = None
    if ctx.main:
        params = {
            "model": model_config.asdict(),
            "train": cfg.asdict(),
            "splits": {"train": train_split, "val": val_split},
        }
        logger = _Logger(log_dir, params, state["history"])
    log.info(
        "training on %s x %d: %d steps per epoch of %d questions, %d parameters",
        device,
        ctx.world_size,
        steps_per_epoch,
        global_batch,
        parameters["total"],
    )

    session_samples, session_seconds = 0, 0.0
    stopped_early = False
    while state["epoch"] < cfg.max_epochs:
        if cfg.patience is not None and state["epoch"] - state["best_epoch"] >= cfg.patience:
            stopped_early = True
            log.info(
                "early stop: no better %s accuracy for %d epochs (best %.4f at epoch %d)",
                val_split,
                cfg.patience,
                state["best_val_accuracy"],
                state["best_epoch"],
            )
            break
        epoch = state["epoch"]  # 0-based index of the epoch being trained
        skip = state["epoch_step"]
        # Mid-epoch resume: replay the epoch's deterministic order and drop what was consumed.
        # Closed after the epoch, so that its loader (workers, shuffle buffer) is gone before
        # validation starts another.
        epoch_batches = _train_batches(train_paths, cfg, epoch)
        # This rank's own sums; `state["partial"]` holds the all-rank sums up to the resume.
        local = [0.0, 0.0, 0.0]
        window: list[tuple[Tensor, Tensor, int]] = []
        bar = tqdm(
            total=steps_per_epoch,
            initial=skip,
            desc=f"epoch {epoch + 1}/{cfg.max_epochs}",
            unit="step",
            disable=not (progress and ctx.main),
            dynamic_ncols=True,
        )
        model.train()
        start = time.perf_counter()
        epoch_samples = 0
        try:
            for batch in itertools.islice(epoch_batches, skip, steps_per_epoch):
                inputs = _to_device(batch, device, cfg.channels_last)
                loss, correct = train_step(model, optimizer, *inputs, bf16=cfg.bf16)
                state["step"] += 1
                state["epoch_step"] += 1
                epoch_samples += len(batch.answers) * ctx.world_size
                window.append((loss, correct, len(batch.answers)))
                save_now = (
                    cfg.checkpoint_every_steps and state["step"] % cfg.checkpoint_every_steps == 0
                )
                if len(window) == _SYNC_EVERY or save_now or state["epoch_step"] == steps_per_epoch:
                    _flush(window, local, state, ctx, device, cfg)
                    window.clear()
                    seconds = time.perf_counter() - start
                    bar.update(state["epoch_step"] - bar.n)
                    bar.set_postfix(
                        loss=f"{local[0] / max(local[2], 1):.4f}",
                        acc=f"{local[1] / max(local[2], 1):.4f}",
                        samples_s=f"{epoch_samples / max(seconds, 1e-9):.0f}",
                    )
                if save_now and state["epoch_step"] < steps_per_epoch:
                    partial = state["partial"]
                    state["partial"] = _plus(partial, _all_reduce(local, ctx, device))
                    if ctx.main:
                        _save(last_checkpoint, make_checkpoint("last"))
                    state["partial"] = partial
        finally:
            epoch_batches.close()
        bar.close()
        seconds = time.perf_counter() - start
        session_samples += epoch_samples
        session_seconds += seconds

        totals = _plus(state["partial"], _all_reduce(local, ctx, device))
        val_correct, val_counted, val_loss = _validate(raw_model, val_paths, ctx, device, cfg)
        if val_counted == 0:
            raise ValueError(f"{shards_dir}: split {val_split!r} has no answered questions")
        row = {
            "epoch": epoch + 1,
            "step": state["step"],
            "train_loss": totals[0] / totals[2],
            "train_accuracy": totals[1] / totals[2],
            "val_loss": val_loss / val_counted,
            "val_accuracy": val_correct / val_counted,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": epoch_samples / max(seconds, 1e-9),
        }
        state["history"].append(row)
        state["epoch"] += 1
        state["epoch_step"] = 0
        state["partial"] = [0.0, 0.0, 0.0]
        log.info(
            "epoch %d: train loss %.4f acc %.4f, %s acc %.4f, %.0f samples/s",
            epoch + 1,
            row["train_loss"],
            row["train_accuracy"],
            val_split,
            row["val_accuracy"],
            row["samples_per_s"],
        )
        if row["val_accuracy"] > state["best_val_accuracy"]:
            state["best_val_accuracy"] = row["val_accuracy"]
            state["best_epoch"] = epoch + 1
            if ctx.main:  # the only rank that writes checkpoints
                best_state = {
                    k: v.detach().to("cpu", copy=True) for k, v in raw_model.state_dict().items()
                }
                write_best()
        if ctx.main:
            _save(last_checkpoint, make_checkpoint("last"))
            logger.log(row)

    history = state["history"]
    summary = {
        "best_val_accuracy": state["best_val_accuracy"],
        "best_epoch": state["best_epoch"],
        "epochs": state["epoch"],
        "steps": state["step"],
        "samples_per_s": session_samples / session_seconds
        if session_seconds > 0
        else (float(np.mean([r["samples_per_s"] for r in history])) if history else 0.0),
        "stopped_early": stopped_early,
        "world_size": ctx.world_size,
        "device": str(device),
    }
    if ctx.main:
        if best_state is not None:
            write_best()  # again, so that its history and sidecar cover the whole run
        logger.end(summary)
        if curves_png is not None and history:
            from filmclevr.figures import plot_learning_curves

            plot_learning_curves(history, curves_png)
    return summary


def _flush(
    window: list[tuple[Tensor, Tensor, int]],
    local: list[float],
    state: dict[str, Any],
    ctx: _Dist,
    device: torch.device,
    cfg: TrainConfig,
) -> None:
    """Move the window's per-step losses to the host (one sync), stop on a non-finite one."""
    losses = torch.stack([w[0] for w in window]).double().cpu()
    corrects = torch.stack([w[1] for w in window]).double().cpu()
    sizes = [w[2] for w in window]
    finite = torch.isfinite(losses)
    # Collective, so that every rank stops together rather than some waiting in the next step.
    bad_ranks = _all_reduce([0.0 if bool(finite.all()) else 1.0], ctx, device)[0]
    if bad_ranks:
        if bool(finite.all()):
            where, value = "on another rank", "non-finite"
        else:
            first = int((~finite).int().argmax())  # the window's first non-finite step
            back = len(window) - first - 1
            where = (
                f"at step {state['step'] - back} (step {state['epoch_step'] - back} of epoch "
                f"{state['epoch'] + 1})"
            )
            value = str(losses[first].item())
        raise FloatingPointError(
            f"training diverged: the loss is {value} {where}; lower learning_rate "
            f"(now {cfg.learning_rate:g}) and start again"
        )
    local[0] += float((losses * torch.tensor(sizes, dtype=torch.float64)).sum())
    local[1] += float(corrects.sum())
    local[2] += float(sum(sizes))


def _validate(
    raw_model: nn.Module, val_paths: list[str], ctx: _Dist, device: torch.device, cfg: TrainConfig
) -> tuple[float, float, float]:
    """(correct, counted, summed loss) on the validation split, summed over the ranks.

    Each rank scores its slice of the shards (rank 0 all of them when there are fewer shards
    than ranks); rank 0's BatchNorm statistics are broadcast first, so all ranks score the
    model that goes into the checkpoint.
    """
    if ctx.world_size > 1:
        for buffer in raw_model.buffers():
            dist.broadcast(buffer, src=0)
    split = ctx.world_size > 1 and len(val_paths) >= ctx.world_size
    counts = (0.0, 0.0, 0.0)
    if split or ctx.main:
        loader = shards.question_loader(
            val_paths,
            batch_size=cfg.batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
            split_by_node=split,
        )
        counts = _score(raw_model, loader, device, bf16=cfg.bf16, channels_last=cfg.channels_last)
    correct, counted, loss = _all_reduce(list(counts), ctx, device)
    return correct, counted, loss
