"""Checkpoints: the file format, saving and loading, and rebuilding a model from one alone.

`train` writes two kinds (SPEC §4 keeps the best-validation model):

- **best** (`models/film.pt`): the model of the best epoch, its `FiLMConfig`, the vocabulary,
  the training recipe and the whole run's history; no optimizer state.
- **last** (`models/last.pt`): everything a killed run needs to go on exactly (model,
  optimizer, random states, position in the epoch, the best model so far).

Both are plain dicts of tensors, numbers, strings and lists, tagged `format`, so they load with
`torch.load(weights_only=True)`: loading a checkpoint never unpickles code. Evaluation, analysis
and the command-line tools load models through this module, never through the training loop,
and refuse questions encoded with another vocabulary than the model's (`check_tokens_vocab`).
"""

from __future__ import annotations

import hashlib
import json
import pickle  # only for the exception type torch.load(weights_only=True) raises
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from filmclevr.fileio import atomic_path
from filmclevr.model import FiLMConfig, FiLMedNet, build_model
from filmclevr.tokenize import load_vocab

CHECKPOINT_FORMAT = "filmclevr-checkpoint/1"


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write `checkpoint` to `path` atomically: after a crash it is the old file or the new one."""
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict: each tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def start_identity(checkpoint: Mapping[str, Any]) -> str:
    """What a run started from `checkpoint` knows its start by: the fingerprint of the run that
    made it, or, for one made by no training run here (converted from the official code, some
    before conversions recorded one), `weights:<weights_sha256>`."""
    return checkpoint.get("fingerprint") or f"weights:{weights_sha256(checkpoint['model'])}"


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


# The tables that give the model's token ids and outputs their meaning; the program vocabulary
# is not the model's.
MODEL_VOCAB_KEYS = ("question_token_to_idx", "answer_token_to_idx")


def vocab_differences(
    checkpoint: Mapping[str, Any],
    vocab: Mapping[str, Any],
    keys: tuple[str, ...] = MODEL_VOCAB_KEYS,
) -> list[str]:
    """The tables of `vocab` (by default the question and answer tables, what the model's inputs
    and outputs mean) that differ from the vocabulary `checkpoint` was trained with."""
    own = checkpoint.get("vocab") or {}
    return [key for key in keys if own.get(key) != vocab.get(key)]


def check_tokens_vocab(
    checkpoint: Mapping[str, Any],
    checkpoint_path: str | Path,
    vocab_path: str | Path,
    advice: str = "tokenize with the checkpoint's vocabulary (tokenize_questions.vocab) or use "
    "a checkpoint trained on these tokens",
) -> None:
    """Refuse questions encoded with another vocabulary than the checkpoint's model was trained
    on: their token ids would stand for other words (a larger vocabulary's, past the model's
    embedding), and the model's answers would be scored without a word of warning.

    Raises:
        ValueError: `vocab_path` is not a valid vocabulary, or its question or answer vocabulary
            differs from the checkpoint's (names both files).
    """
    differ = vocab_differences(checkpoint, load_vocab(Path(vocab_path)))
    if differ:
        raise ValueError(
            f"{vocab_path}: the questions were encoded with another vocabulary than the model "
            f"of {checkpoint_path} was trained on (another {' and '.join(differ)}); {advice}"
        )
