"""Sim-to-real over training: checkpoints of one run, each on the genuine CLEVR images beside as
many of its own mini-CLEVR val images (`filmclevr.sim_to_real`'s harness), as a table and a
figure. Does what the model learns carry over at every stage, or only at the end?

    python -m studies.genuine_clevr.over_training --params config/<profile>.yaml \\
        --genuine ../shared/clevr_genuine \\
        --out results/reference/<name>/sim_to_real_over_training \\
        "epoch 1=models/epoch-1.pt" "epoch 2=models/epoch-2.pt" ...

Each checkpoint is `LABEL=PATH` (or a PATH, labelled by its file name), in training order:
a `film.pt`, or a resume point kept as an epoch ended (`train_model.keep_epoch_checkpoints`
keeps them as `epoch-<N>.pt` beside `last.pt`: its `model` is that epoch's weights, its
history's last entry that epoch's accuracy on the whole validation split, which the table shows
beside the harness's sample). Writes `over_training.json` (one row per checkpoint, keyed by
its SHA-256: a rerun measures only the checkpoints it lacks) and `over_training.png`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from filmclevr import ask, sim_to_real
from filmclevr.checkpoint import load_checkpoint
from filmclevr.figures import BAR_COLUMNS, plot_sim_to_real_over_training
from filmclevr.fileio import file_sha256, read_json, write_json_atomic

OUTPUT_JSON = "over_training.json"
OUTPUT_PNG = "over_training.png"

log = logging.getLogger(__name__)


def parse_checkpoint(argument: str) -> tuple[str, Path]:
    """`LABEL=PATH` or `PATH` (labelled by its file name without the suffix)."""
    label, sep, path = argument.rpartition("=")
    return (label, Path(path)) if sep and label else (Path(argument).stem, Path(argument))


def epoch_end_validation(checkpoint: Mapping[str, Any]) -> float | None:
    """The accuracy (%) on the whole validation split that training measured as the checkpoint's
    epoch ended; None when the checkpoint was written elsewhere in an epoch."""
    history = checkpoint.get("history") or []
    if not history or history[-1].get("step") != checkpoint.get("step"):
        return None
    value = history[-1].get("val_accuracy")
    return None if value is None else round(100 * float(value), 2)


def row_of(label: str, path: Path, digest: str, report: Mapping[str, Any]) -> dict[str, Any]:
    """One checkpoint's row: the harness's accuracy on each side and the prior, per metric."""
    checkpoint = load_checkpoint(path)
    sides = report["sides"]

    def accuracies(scores: Mapping[str, Any]) -> dict[str, float | None]:
        return {
            m: scores["overall"] if m == "overall" else scores["columns"][m] for m in BAR_COLUMNS
        }

    return {
        "label": label,
        "checkpoint": str(path),
        "sha256": digest,
        "step": checkpoint.get("step"),
        "epoch": checkpoint.get("epoch"),
        "validation_split": epoch_end_validation(checkpoint),
        "genuine": accuracies(sides[sim_to_real.GENUINE]["model"]),
        "mini_clevr": accuracies(sides[sim_to_real.MINI]["model"]),
        "prior": accuracies(sides[sim_to_real.GENUINE]["prior"]),
        "questions": sides[sim_to_real.GENUINE]["questions"],
        "commit": report["commit"],
        "machine": report["machine"],
    }


def measure_all(
    checkpoints: list[tuple[str, Path]],
    genuine_root: Path,
    profile: sim_to_real.MiniProfile,
    kept: Mapping[str, Mapping[str, Any]],
    *,
    device: str = "cpu",
    progress: bool = True,
    measured: Callable[[list[dict[str, Any]]], None] = lambda rows: None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """One row per checkpoint, in the order given; a checkpoint whose digest `kept` holds (a
    row of an earlier run with the same settings) is not measured again, only relabelled.
    `measured(rows)` is called after each new measurement with the rows so far (to keep them:
    a measurement takes about a minute on a CPU)."""
    rows = []
    for label, path in checkpoints:
        digest = file_sha256(path)
        if digest in kept:
            rows.append({**kept[digest], "label": label, "checkpoint": str(path)})
            continue
        log.info("measuring %s (%s)", label, path)
        report = sim_to_real.measure(
            path, genuine_root, profile, device=device, progress=progress, **settings
        ).report
        rows.append(row_of(label, path, digest, report))
        measured(rows)
    return rows


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m studies.genuine_clevr.over_training",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoints", nargs="+", type=parse_checkpoint, help="LABEL=PATH or PATH")
    p.add_argument("--params", required=True, type=Path, help="the run's parameters file")
    p.add_argument("--genuine", required=True, type=Path, help="genuine CLEVR sample")
    p.add_argument(
        "--images", type=Path, metavar="LIST", help="as filmclevr-sim-to-real's: only these images"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--questions-per-image",
        type=ask.positive_int,
        default=sim_to_real.DEFAULT_QUESTIONS_PER_IMAGE,
        help=f"as filmclevr-sim-to-real's (default {sim_to_real.DEFAULT_QUESTIONS_PER_IMAGE})",
    )
    p.add_argument(
        "--prior-train-images",
        type=ask.positive_int,
        default=sim_to_real.DEFAULT_PRIOR_TRAIN_IMAGES,
        help=f"as filmclevr-sim-to-real's (default {sim_to_real.DEFAULT_PRIOR_TRAIN_IMAGES})",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    def run() -> int:
        profile = sim_to_real.profile_from_params(args.params)
        out_json = args.out / OUTPUT_JSON
        previous = read_json(out_json) if out_json.is_file() else {"rows": []}
        harness = {
            "questions_per_image": args.questions_per_image,
            "prior_train_images": args.prior_train_images,
            # only when given: the rows kept by runs before the option are still theirs
            **({"image_list": str(args.images)} if args.images is not None else {}),
        }
        # What the rows depend on (not where the parameters file lies): rows of other
        # settings are measured again.
        mini = {k: v for k, v in profile.as_dict().items() if k != "source"}
        settings = {"profile": mini, "genuine": str(args.genuine), **harness}
        kept = {}
        if previous.get("settings") == settings:
            kept = {row["sha256"]: row for row in previous["rows"]}
        args.out.mkdir(parents=True, exist_ok=True)

        def keep(rows: list[dict[str, Any]]) -> None:
            done = {row["sha256"] for row in rows}  # with the kept rows not asked for this time
            earlier = [row for row in kept.values() if row["sha256"] not in done]
            write_json_atomic(out_json, {"settings": settings, "rows": [*rows, *earlier]})

        rows = measure_all(
            args.checkpoints,
            args.genuine,
            profile,
            kept,
            device=args.device,
            progress=not args.no_progress,
            measured=keep,
            **harness,
        )
        plot_sim_to_real_over_training(rows, args.out / OUTPUT_PNG)
        write_json_atomic(out_json, {"settings": settings, "rows": rows})
        for row in rows:
            print(
                f"{row['label']:>16}: genuine {row['genuine']['overall']:.2f}, mini-CLEVR "
                f"{row['mini_clevr']['overall']:.2f}, whole val {row['validation_split']}"
            )
        print(f"wrote {out_json}, {args.out / OUTPUT_PNG}")
        return 0

    return ask.exit_status(run)


if __name__ == "__main__":
    sys.exit(main())
