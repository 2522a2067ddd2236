"""Checkpoints: the file format, saving and loading, and rebuilding a model from one alone.

`train` writes two kinds (SPEC §4 keeps the best-validation model):

- **best** (`models/film.pt`): the model of the best epoch, its `FiLMConfig`, the vocabulary,
  the training recipe and the whole run's history; no optimizer state.
- **last** (`models/last.pt`): everything a killed run needs to go on exactly (model,
  optimizer, random states, position in the epoch, the best model so far).

Both are plain dicts of tensors, numbers, strings and lists, tagged `format`, so they load with
`torch.load(weights_only=True)`: loading a checkpoint never unpickles code. Evaluation, analysis
and the command-line tools load models through this module, never through the training loop.
"""

from __future__ import annotations

import pickle  # only for the exception type torch.load(weights_only=True) raises
from pathlib import Path
from typing import Any

import torch

from filmclevr.fileio import atomic_path
from filmclevr.model import FiLMConfig, FiLMedNet, build_model

CHECKPOINT_FORMAT = "filmclevr-checkpoint/1"


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically: after a crash it is the old file or the new one."""
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
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{path}: not a readable checkpoint, corrupt or truncated ({first})"
        ) from None
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
