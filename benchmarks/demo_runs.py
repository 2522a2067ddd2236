"""Shared by the benchmarks that train the demo several times: one run, trained and evaluated
in a temporary folder on the default pipeline's data (data/shards, data/tokens), optionally with
a breakage injected into the shard loader's batches, the one path training and evaluation
share. Nothing is written outside the temporary folder."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from filmclevr import shards  # noqa: E402
from filmclevr.evaluate import evaluate  # noqa: E402
from filmclevr.model import FiLMConfig  # noqa: E402
from filmclevr.train import TrainConfig, train  # noqa: E402

Breakage = Callable[[shards.Batch], shards.Batch]


@contextlib.contextmanager
def broken_loader(breakage: Breakage | None) -> Iterator[None]:
    original = shards._collate
    if breakage is not None:
        shards._collate = lambda samples: breakage(original(samples))
    try:
        yield
    finally:
        shards._collate = original


def train_and_score(
    params: Mapping[str, Any],
    *,
    model: Mapping[str, Any],
    train_changes: Mapping[str, Any] | None = None,
    breakage: Breakage | None = None,
    init_checkpoint: Path | None = None,
    data: Path = REPO / "data",
    keep_checkpoint: Path | None = None,
) -> dict[str, Any]:
    """One run: its metrics.json-like document, plus `seconds` and the per-epoch `history`;
    from `init_checkpoint`'s weights if given (fine-tuning: same model and vocabulary).
    `data` holds the pipeline's `shards/` and `tokens/`; the best checkpoint is copied to
    `keep_checkpoint` if given (e.g. the first step of a curriculum)."""
    splits = params["get_data"]["splits"]
    init = {} if init_checkpoint is None else {"init_checkpoint": str(init_checkpoint)}
    config = TrainConfig.from_dict({**params["train_model"], **(train_changes or {}), **init})
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, broken_loader(breakage):
        out = Path(tmp)
        summary = train(
            FiLMConfig.from_dict(model), config,
            shards_dir=data / "shards", vocab_path=data / "tokens/vocab.json",
            best_checkpoint=out / "film.pt", last_checkpoint=out / "last.pt",
            log_dir=out / "train", progress=False, train_split=splits[0], val_split=splits[1],
        )  # fmt: skip
        result = evaluate(
            out / "film.pt", data / "shards", data / "tokens",
            split=params["evaluate_model"]["split"],
            batch_size=params["evaluate_model"]["batch_size"], profile=params["profile"],
            train_split=splits[0],
        )  # fmt: skip
        if keep_checkpoint is not None:
            keep_checkpoint.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / "film.pt", keep_checkpoint)
    return {
        "overall": result.metrics["overall"],
        "columns": result.metrics["columns"],
        "functions": result.metrics["functions"],  # equal_color, equal_size, ... apart
        "counts": result.metrics["counts"],
        "prior": result.prior,
        "context": result.context,
        "history": result.history,
        "samples_per_s": summary["samples_per_s"],
        "seconds": time.perf_counter() - start,
    }
