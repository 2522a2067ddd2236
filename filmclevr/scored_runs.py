"""A training run (`runs`) trained and then scored as the evaluate_model stage scores the
workflow's model: what the sweep of the paper's Tables 2 and 3 and the studies compare.

Apart from `runs` so that the train_model stage, which only trains, does not depend on the
evaluation's code (both engines would retrain the model after an edit of `evaluate.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filmclevr import shards
from filmclevr.evaluate import Evaluation, evaluate, precision_name
from filmclevr.fileio import exclusive_lock, file_sha256, read_json, write_json_atomic
from filmclevr.runs import Changes, RunPlan, plan_run, train_run

log = logging.getLogger(__name__)


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


def numeric_path(params: Mapping[str, Any]) -> str:
    """The precision a run of the profile trains in here: "bf16" where its recipe asks for bf16
    and this machine computes it natively, else "float32" (as `train.bf16_to_use` decides)."""
    from filmclevr.distributed import resolve_device
    from filmclevr.train import TrainConfig, bf16_to_use

    recipe = TrainConfig.from_dict(params["train_model"])
    device = resolve_device(recipe.device, setting="train_model.device")
    return precision_name(bf16_to_use(device, recipe.bf16))


class KeptRuns:
    """The runs of a long measurement, kept in a JSON file as each finishes, so that a killed
    measurement started again (another session, another day) trains only the runs it lacks.

    The file records what its runs are comparable under: the digest of the parameters that make
    a run (RUN_SECTIONS: its data, model, recipe and scoring; not the profile's name or its
    other stages), the digest of the data they trained and were scored on (`data_digest`: the
    same parameters can be run on other data, e.g. after another profile's pipeline filled
    data/), and the numeric path (`numeric_path`; seeds spread differently in bf16 and
    float32). A file of other parameters, data or path is refused, never mixed in. Without a
    path nothing is kept. Two measurements may share one file (the gate and data-order studies
    share the default recipe's seeds): each run is added under a lock, merged with what the
    file holds then (the lock file, `<file>.lock`, stays beside it).
    """

    RUN_SECTIONS = (
        "get_data",
        "resize_images",
        "tokenize_questions",
        "write_shards",
        "model",
        "train_model",
        "evaluate_model",
    )

    def __init__(
        self, path: Path | None, params: Mapping[str, Any], precision: str, data_dir: Path
    ) -> None:
        """`data_dir` holds the data stages' `shards/` and `tokens/` for the profile."""
        self.path = path
        self.params = params
        self.data_dir = Path(data_dir)
        making = {section: params.get(section) for section in self.RUN_SECTIONS}
        digest = hashlib.sha256(json.dumps(making, sort_keys=True).encode()).hexdigest()
        self.under = {"params_sha256": digest, "precision": precision}
        if path is not None:  # what is kept must be comparable; hashing CLEVR's data takes time
            self.under["data_sha256"] = data_digest(self.data_dir)
        self.runs: dict[str, Any] = self._read()
        if self.runs:
            log.warning("%s: %d runs kept by an earlier start are reused", path, len(self.runs))

    def _read(self) -> dict[str, Any]:
        """The runs the file holds ({} without one), refused when made under other conditions."""
        if self.path is None or not self.path.exists():
            return {}
        document = read_json(self.path)
        if not isinstance(document, dict) or not isinstance(document.get("runs"), dict):
            raise ValueError(f"{self.path}: not a file of kept runs (needs 'under' and 'runs')")
        if document.get("under") != self.under:
            raise ValueError(
                f"{self.path}: its runs were made under {document.get('under')}, this "
                f"measurement is under {self.under}; name another file to start afresh"
            )
        return document["runs"]

    @staticmethod
    def key(
        params: Mapping[str, Any],
        *,
        model: Changes | None = None,
        train: Changes | None = None,
        breakage: str | None = None,
    ) -> str:
        """What a run is: its model and recipe as resolved (`plan_run`) and the name of the
        breakage injected, if any. Two studies asking for the same run share it."""
        plan = plan_run(params, model=model, train=train, curriculum=False)
        what = {
            "model": dataclasses.asdict(plan.model),
            "train": dataclasses.asdict(plan.train_config),
            "breakage": breakage,
        }
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.runs.get(key)

    def train_and_score(
        self,
        *,
        model: Changes | None = None,
        train: Changes | None = None,
        batch_transform: shards.BatchTransform | None = None,
    ) -> dict[str, Any]:
        """The kept run of the profile with these changes, or `train_and_score` of it, kept;
        a breakage is known by its function's name."""
        breakage = None if batch_transform is None else _breakage_name(batch_transform)
        key = self.key(self.params, model=model, train=train, breakage=breakage)
        if self.get(key) is None:
            run = train_and_score(
                self.params, data_dir=self.data_dir, model=model, train=train,
                batch_transform=batch_transform,
            )  # fmt: skip
            self.add(key, run)
        return self.runs[key]

    def add(self, key: str, run: Mapping[str, Any]) -> None:
        self.runs[key] = dict(run)
        if self.path is None:
            return
        lock = self.path.with_name(self.path.name + ".lock")
        with exclusive_lock(lock, f"a measurement adding a run to {self.path}", wait=True):
            self.runs = {**self._read(), **self.runs}  # another measurement's runs stay
            write_json_atomic(self.path, {"under": self.under, "runs": self.runs}, indent=1)


def _breakage_name(transform: shards.BatchTransform) -> str:
    """A breakage's name in the kept file: a module-level function's own. A lambda, a partial
    or a closure is refused: two of them may share a name and not what they do."""
    qualname = getattr(transform, "__qualname__", "<no name>")
    if "<" in qualname or not isinstance(getattr(transform, "__name__", None), str):
        raise ValueError(
            f"a kept run's breakage must be a module-level function, known by its name; "
            f"{transform!r} is not one (a lambda, partial or closure)"
        )
    return transform.__name__


def data_digest(data_dir: Path) -> str:
    """SHA-256 over the bytes of the data a run trains and is scored on: the shards, their
    index and the tokens (vocabulary and encoded splits), with their paths.

    Raises:
        ValueError: `data_dir` holds no shards index (the data stages have not run there).
    """
    data_dir = Path(data_dir)
    index = data_dir / "shards" / "index.json"
    if not index.is_file():
        raise ValueError(
            f"{index}: not found; run the data stages first (snakemake --until write_shards)"
        )
    files = sorted(
        [index, *(data_dir / "shards").rglob("*.tar"), *(data_dir / "tokens").glob("*.json")]
    )
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.relative_to(data_dir)}:{file_sha256(file)}\n".encode())
    return digest.hexdigest()
