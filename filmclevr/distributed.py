"""Devices, seeds, determinism and DDP: what a training or inference process sets up first.

Kept apart from the training loop (as torchvision's reference scripts keep `utils.py` beside
`train.py`), so that evaluation, analysis and the command-line tools pick a device without
importing the loop.
"""

from __future__ import annotations

import contextlib
import os
import platform
import random
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


def flush_denormals() -> bool:
    """Treat denormal floats as zero on the CPU (x86 FTZ and DAZ) in this thread and in every
    thread it starts later, torch's intra-op pool among them: a model trained long with weight
    decay holds thousands of weights below float32's normal range (1.2e-38), and an x86 CPU
    computes with such numbers many times more slowly (`benchmarks/bench_denormals.py`). A
    process calls it before its first parallel torch operation, since the pool's threads copy
    the floating-point mode of the thread that starts them. Returns whether the CPU supports
    it."""
    return torch.set_flush_denormal(True)


# --- Seeds and determinism ------------------------------------------------------------------------
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


# RNG states as tensors and lists, so that checkpoints load with weights_only=True.
def rng_state() -> dict[str, Any]:
    """Every generator's state (Python, NumPy, torch, the current CUDA device)."""
    version, internal, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), cached],
        "torch": torch.get_rng_state(),
        # Only the current device's: reading every GPU's would open a context on each.
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"][0])  # every rank continues rank 0's stream


# --- Devices --------------------------------------------------------------------------------------
def resolve_device(name: str, local_rank: int = 0, *, setting: str = "device") -> torch.device:
    """The torch device of `name`: "auto" is cuda when available, else cpu. `setting` is what
    errors call the value (e.g. "TrainConfig.device", "--device").

    A CUDA device always gets an index (`torch.cuda.set_device` needs one): "cuda" is
    cuda:`local_rank`, and under DDP (WORLD_SIZE > 1) every CUDA device is cuda:LOCAL_RANK, one
    GPU per process. An explicit "cuda:N" is kept on one process.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"{setting} {name!r} is not a torch device") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{setting} is {name!r} but CUDA is not available")
        if device.index is None or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            device = torch.device("cuda", local_rank)
        count = torch.cuda.device_count()
        if device.index >= count:
            raise ValueError(f"device {device} requested but only {count} CUDA device(s) seen")
    return device


# --- DDP ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank, world size, whether it made the process group."""

    rank: int = 0
    world_size: int = 1
    created: bool = False  # this call initialised the process group (and destroys it)

    @property
    def main(self) -> bool:
        """Rank 0: the only process that writes files and shows progress."""
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


def init_distributed(device_name: str) -> tuple[DistContext, torch.device]:
    """One process: no-op. Under torchrun (WORLD_SIZE > 1): join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, setting="TrainConfig.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)  # the current device: its RNG state goes into checkpoints
    if world_size <= 1:
        return DistContext(), device
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), created), device


def all_reduce(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Sum `values` over the ranks (identity on one process)."""
    if ctx.world_size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# --- The machine --------------------------------------------------------------------------------
def machine_description(device: torch.device) -> dict[str, str]:
    """What ran a job: the processor (the GPU's name, else the CPU model) and the torch build.

    Training is bitwise repeatable on one machine but not across CPU models, so results carry
    this beside their numbers (the regression gate prints it for both runs it compares).
    """
    if device.type == "cuda":
        processor = torch.cuda.get_device_name(device)
    else:
        processor = _cpu_model() or platform.processor() or platform.machine() or "unknown"
    return {"processor": processor, "torch": str(torch.__version__)}


def cpu_identity() -> dict[str, object]:
    """Which CPU kind this is: the model name alone can be the same for several generations
    (a virtual machine's "AMD EPYC"), so also its family and model numbers and whether it has
    the instruction sets that set the training's numeric path."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return {}
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_family": fields.get("cpu family"),
        "cpu_model": fields.get("model"),
        "cores": os.cpu_count(),
        "instruction_sets": [
            f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags
        ],
    }


def cpu_machine() -> dict[str, object]:
    """The CPU a benchmark ran on: `machine_description`'s processor and torch build, with
    `cpu_identity`'s family, model and instruction sets."""
    return machine_description(torch.device("cpu")) | cpu_identity()


def _cpu_model() -> str | None:
    """The CPU's model name as Linux reports it (None elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def available_memory() -> int | None:
    """Bytes this process may still allocate: Linux's MemAvailable, or less where its cgroup
    (a container, a SLURM job) sets a lower limit; None where neither can be read."""
    known = []
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    known.append(int(line.split()[1]) * 1024)  # in kB
    except (OSError, ValueError, IndexError):
        pass
    try:  # cgroup v2: this process's group, named in /proc/self/cgroup as "0::/path"
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            group = next(line[3:].strip() for line in f if line.startswith("0::"))
        folder = Path("/sys/fs/cgroup") / group.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit != "max":
            known.append(int(limit) - int((folder / "memory.current").read_text()))
    except (OSError, ValueError, StopIteration):
        pass
    return min(known) if known else None


def processes_on_this_machine() -> int:
    """Training processes on this machine: torchrun's LOCAL_WORLD_SIZE, else 1."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
