"""CLEVR-Humans (paper Table 4, SPEC §6): a CLEVR model fine-tuned on people's questions.

The CLEVR model is the workflow's own (`train_model`). Its question vocabulary grows by the
words CLEVR-Humans train brings (`humans_data.expand_vocab`); `expand_checkpoint` gives the new
words embedding rows drawn near zero, N(0, `humans.embedding_std`^2), as clevr-iep's
`expand_embedding_vocab` (std 0.01) does when a CLEVR model meets the human vocabulary, in
training and in `run_model.py --vocab_json`. That expanded model is both the "before
fine-tuning" model of the table and the start of the fine-tuning.

The fine-tuning (`finetune`) is a run of `runs` with `humans.train_model`'s changes over
`train_model`: the paper trains only the FiLM generator (`trainable: film_generator`), with
Adam at 3e-4, keeping the epoch best on CLEVR-Humans val (early stopping: `patience`). In the
official code the frozen visual network stays in train mode, so its BatchNorm layers normalize
each batch by its own statistics and their running statistics drift toward CLEVR-Humans'
images; `frozen_batchnorm: train` (TrainConfig's default) does the same, `eval` freezes them
too. The report (`humans_report`) scores both models, the start and the fine-tuned, on val and
test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from filmclevr.checkpoint import load_checkpoint, save_checkpoint, start_identity
from filmclevr.configs import FiLMConfig, TrainConfig
from filmclevr.humans_data import SPLITS
from filmclevr.model import FiLMedNet, build_model
from filmclevr.tokenize import load_vocab

log = logging.getLogger(__name__)

EMBEDDING = "film_generator.encoder_embed.weight"  # the word embeddings (SPEC §3)


def recipe(params: Mapping[str, Any]) -> TrainConfig:
    """The fine-tuning's recipe: `train_model` with `humans.train_model`'s changes (without the
    checkpoint it starts from, which `finetune` adds)."""
    return TrainConfig.from_dict({**params["train_model"], **params["humans"]["train_model"]})


def expand_checkpoint(
    path: str | Path, vocab: Mapping[str, Mapping[str, int]], *, seed: int, std: float
) -> dict[str, Any]:
    """The CLEVR checkpoint at `path` for the expanded vocabulary `vocab`: every weight as it
    is, the word embeddings grown by one row per new word, drawn from N(0, std^2) by a
    generator seeded with `seed` (the same arguments give the same weights).

    Returns:
        A checkpoint (`checkpoint.CHECKPOINT_FORMAT`) with `vocab`, its `fingerprint` a hash of
        the CLEVR checkpoint's, the new words, `seed` and `std`, and `expanded_from` saying so.

    Raises:
        ValueError: `vocab` does not extend the checkpoint's own (each CLEVR word at its index,
            the same answers), naming the checkpoint.
    """
    checkpoint = load_checkpoint(path)
    old = checkpoint["vocab"]["question_token_to_idx"]
    new = vocab["question_token_to_idx"]
    moved = [w for w, i in old.items() if new.get(w) != i]
    if moved or len(new) < len(old):
        raise ValueError(
            f"{path}: the expanded vocabulary does not extend this checkpoint's ({len(moved)} of "
            f"its words elsewhere or missing, e.g. {moved[:3]}); was the CLEVR-Humans vocabulary "
            "built on another CLEVR vocabulary? rerun prepare_humans"
        )
    if vocab["answer_token_to_idx"] != checkpoint["vocab"]["answer_token_to_idx"]:
        raise ValueError(f"{path}: its answers differ from the CLEVR-Humans vocabulary's")
    weights = dict(checkpoint["model"])
    embedding = weights[EMBEDDING]
    if embedding.shape[0] != len(old):
        raise ValueError(
            f"{path}: {embedding.shape[0]} word embeddings for a vocabulary of {len(old)}"
        )
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(len(new) - len(old), embedding.shape[1], generator=generator) * std
    weights[EMBEDDING] = torch.cat([embedding, rows.to(embedding.dtype)])
    added = len(new) - len(old)
    parameters = dict(checkpoint["parameters"])
    for part in ("generator", "total"):
        parameters[part] += added * embedding.shape[1]
    blob = {"from": start_identity(checkpoint), "vocab": vocab, "seed": seed, "std": std}
    return {
        **checkpoint,
        "vocab": {k: dict(v) for k, v in vocab.items()},
        "vocab_size": len(new),
        "model": weights,
        "parameters": parameters,
        "fingerprint": hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest(),
        "expanded_from": {"checkpoint": str(path), "new_words": added, "seed": seed, "std": std},
    }


def model_of(checkpoint: Mapping[str, Any], device: torch.device | str) -> FiLMedNet:
    """The model a checkpoint dict holds, in eval mode."""
    config = FiLMConfig.from_dict(checkpoint["model_config"])
    model = build_model(config, checkpoint["vocab_size"], checkpoint["num_answers"])
    model.load_state_dict(checkpoint["model"])
    return model.to(device).eval()


def start_checkpoint(
    params: Mapping[str, Any], clevr_checkpoint: str | Path, tokens_dir: str | Path
) -> dict[str, Any]:
    """The CLEVR model for CLEVR-Humans' vocabulary: the model before fine-tuning, and the
    fine-tuning's start (seeded by the fine-tuning's seed)."""
    vocab = load_vocab(Path(tokens_dir) / "vocab.json")
    std = params["humans"]["embedding_std"]
    return expand_checkpoint(clevr_checkpoint, vocab, seed=recipe(params).seed, std=std)


def finetune(
    params: Mapping[str, Any],
    *,
    clevr_checkpoint: Path,
    tokens_dir: Path,
    shards_dir: Path,
    start: Path,
    best_checkpoint: Path,
    last_checkpoint: Path,
    log_dir: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Fine-tune the CLEVR model on CLEVR-Humans train, validating on its val split.

    The run starts from `start_checkpoint`, written to `start` (the model before fine-tuning,
    which the report scores), with the CLEVR model's own configuration and `recipe(params)`;
    `best_checkpoint` gets the epoch best on val (with its `.json` sidecar). A killed run
    resumes from `last_checkpoint`.

    Returns:
        The training's summary (`train.train`'s).
    """
    from filmclevr.runs import plan_run, train_run

    start = Path(start)
    save_checkpoint(start, start_checkpoint(params, clevr_checkpoint, tokens_dir))
    training = plan_run(
        params,
        model=load_checkpoint(clevr_checkpoint)["model_config"],  # every field: the CLEVR model's
        train={**params["humans"]["train_model"], "init_checkpoint": str(start)},
        train_split=SPLITS[0],
        curriculum=False,
    )
    training = dataclasses.replace(training, val_split=SPLITS[1])  # early stopping on Humans val
    (summary,) = train_run(
        training,
        shards_dir=Path(shards_dir),
        vocab_path=Path(tokens_dir) / "vocab.json",
        best_checkpoint=Path(best_checkpoint),
        last_checkpoint=Path(last_checkpoint),
        log_dir=Path(log_dir),
        progress=progress,
    )
    config = training.train_config
    log.info(
        "fine-tuned %s (BatchNorm of the frozen part: %s) for %d epochs: best %s accuracy "
        "%.4f at epoch %d",
        config.trainable,
        config.frozen_batchnorm,
        summary["epochs"],
        SPLITS[1],
        summary["best_val_accuracy"],
        summary["best_epoch"],
    )
    return summary
