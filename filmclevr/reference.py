"""Keep a finished run as a reference result: `results/reference/<name>/`, committed to git.

A reference result is what the pipeline produced, never edited: the best checkpoint (so a new
user can ask the model questions without training it), its metrics, results table, learning
curves, analysis, CoGenT and CLEVR-Humans reports, Snakemake's per-stage wall time and peak
memory, the parameters that ran (params.yaml: the parameters file as it is, or, for a profile
that names a base, the profile resolved and complete, as filmclevr-params writes it),
PROVENANCE.json (the commit of the code, the dvc.lock stage hashes when DVC ran it, the
machine, the date), its learning curve beside the official one (learning_curve.csv,
learning_curve_vs_paper.png, as the evaluate_model stage drew it), and training_time.json: the
training's own time summed over its epochs, which stays right when training resumed, where
Snakemake's benchmark of train_model times only the last invocation.
Refused when the working tree has uncommitted changes to the code, since the commit would then
not name the code that ran.

    filmclevr-reference --name demo [--params params.yaml] [--measurements-only]

`--measurements-only` keeps what the run measured and nothing it made: metrics, results table,
learning curve, per-stage times and memory, parameters and provenance, no checkpoint,
vocabulary, figures or analysis: a profile already kept, run again on another machine (its
time and accuracy there).

    filmclevr-reference --in-progress [--params config/<profile>.yaml]

`--in-progress` keeps an unfinished training instead: its resume point (`models/last.pt`) in
`results/in-progress/<profile>/` with `progress.json` (how far it got, each finished epoch's
accuracy, its fingerprint, the commit and the machine), so that a run longer than its machine
is lent goes on elsewhere (results/in-progress/README.md).
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filmclevr import params as params_mod
from filmclevr.evaluate import CODE_PATHSPECS, questions_seen
from filmclevr.fileio import atomic_dir, read_json, relative_name, write_json_atomic

# What a reference keeps of a run, relative to the project root: (source, required).
FILES: tuple[tuple[str, bool], ...] = (
    ("models/film.pt", True),
    ("models/film.json", True),
    ("data/tokens/vocab.json", False),  # what the checkpoint was trained on: fine-tune from it
    ("results/metrics.json", True),
    ("results/table.md", True),
    ("results/table.csv", True),
    ("results/accuracy.png", False),
    ("results/learning_curves.png", False),
    ("results/learning_curve.csv", True),
    ("results/learning_curve_vs_paper.png", True),
    ("results/analysis.json", False),
)
# What `measurements_only` keeps of FILES: numbers and tables, no model and no figure.
MEASUREMENTS: tuple[str, ...] = (
    "results/metrics.json",
    "results/table.md",
    "results/table.csv",
    "results/learning_curve.csv",
)
ANALYSIS_FILES: tuple[str, ...] = (
    "examples.png",
    "examples.csv",
    "examples.json",
    "film_histograms.png",
    "film_statistics.json",
    "tsne.png",
    "ablations.png",
    "ablations.csv",
    "metrics.json",
)
# CoGenT profiles: the report of each transfer split (results/cogent/<split>/ and <split>.json).
COGENT_FILES: tuple[str, ...] = (
    "table.md",
    "breakdown.csv",
    "zero_shot_questions.json",
    "sample_efficiency.png",
)
# CLEVR-Humans profiles: the report of each source (results/humans/<source>/) and the
# fine-tuning's sidecar (its history; the fine-tuned weights are not kept).
HUMANS_FILES: tuple[str, ...] = ("table.md", "learning_curve.png", "metrics.json")


def _git(root: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def keep_reference(root: Path, name: str, params: Path, *, measurements_only: bool = False) -> Path:
    """Copy the run's outputs into `root/results/reference/name/` (replaced atomically);
    with `measurements_only`, only MEASUREMENTS, the per-stage times, parameters and provenance.

    Raises:
        ValueError: `name` is not one plain folder name, the code has uncommitted changes or
            changed since the evaluated commit, a required output is missing, the parameters
            file is not valid, or it names another profile than the one evaluated.
    """
    root = Path(root)
    # The folder is replaced whole: a name such as "" or "/some/dir" would replace another.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ValueError(
            f"reference name {name!r}: give one folder name of letters, digits, '.', '_' and "
            "'-' (the result is kept in results/reference/<name>/)"
        )
    _check_code_committed(root)
    missing = [src for src, required in FILES if required and not (root / src).is_file()]
    if missing:
        raise ValueError(f"{root / missing[0]}: missing; run the pipeline first")
    metrics = read_json(root / "results/metrics.json")
    evaluated = evaluated_commit(metrics, root / "results/metrics.json")
    # --end-of-options as well: a value read from a file never reaches git as an option.
    changed = subprocess.run(
        ["git", "diff", "--quiet", "--end-of-options", evaluated, "HEAD", "--", *CODE_PATHSPECS],
        cwd=root,
        check=False,
    ).returncode
    if changed:
        raise ValueError(
            f"the code changed since commit {evaluated}, where results/metrics.json was made "
            "(or that commit is unknown): rerun the pipeline first"
        )
    _check_same_profile(Path(params), metrics, root / "results/metrics.json")
    out = root / "results" / "reference" / name
    with atomic_dir(out) as tmp:
        for src in MEASUREMENTS if measurements_only else [src for src, _ in FILES]:
            if (root / src).is_file():
                shutil.copyfile(root / src, tmp / Path(src).name)
        analysis = root / "results" / "analysis"
        if analysis.is_dir() and not measurements_only:
            (tmp / "analysis").mkdir()
            for file in ANALYSIS_FILES:
                if (analysis / file).is_file():
                    shutil.copyfile(analysis / file, tmp / "analysis" / file)
        if not measurements_only:
            _keep_cogent(root / "results" / "cogent", tmp / "cogent")
            _keep_humans(root, tmp / "humans")
        # Snakemake's per-job wall time and peak memory (logs/benchmarks/<stage>.tsv), if any.
        for tsv in sorted((root / "logs" / "benchmarks").glob("*.tsv")):
            (tmp / "benchmarks").mkdir(exist_ok=True)
            shutil.copyfile(tsv, tmp / "benchmarks" / tsv.name)
        _keep_params(Path(params), tmp / "params.yaml")
        write_json_atomic(tmp / "PROVENANCE.json", _provenance(root, metrics, params))
        sidecar = read_json(root / "models/film.json")
        if sidecar.get("history"):
            write_json_atomic(tmp / "training_time.json", training_time(sidecar))
    return out


def training_time(sidecar: dict[str, Any]) -> dict[str, Any]:
    """The training's own time from its checkpoint's sidecar (models/film.json): each epoch's
    training questions over its samples per second, summed (validation excluded). It holds for a
    run that resumed (after a kill or a session's end), where Snakemake's benchmark of
    train_model times only the last invocation; a curriculum's history counts every phase."""
    history = sidecar["history"]
    seen = questions_seen(sidecar)
    per_epoch = [b - a for a, b in zip([0, *seen], seen, strict=False)]
    seconds = sum(q / row["samples_per_s"] for q, row in zip(per_epoch, history, strict=True))
    return {
        "seconds": round(seconds, 1),
        "epochs": len(history),
        "questions": seen[-1],
        "how": (
            "each epoch's training questions / its samples_per_s (film.json's history), "
            "summed; validation and start-up excluded"
        ),
    }


def _keep_params(params: Path, out: Path) -> None:
    """The parameters that ran, at `out`: a profile that names a base is written resolved and
    complete (its base may change later: the record must not), any other file is copied as it
    is, its comments with it."""
    if params_mod.bases(params):
        params_mod.write_profile(params, out)
    else:
        shutil.copyfile(params, out)


def _check_same_profile(params: Path, metrics: dict[str, Any], metrics_path: Path) -> None:
    """Refuse parameters of another profile than the evaluated run's: after a run of another
    profile, ./params.yaml may still hold the demo's, and the reference would then describe its
    model by the wrong parameters."""
    ran = params_mod.load_params(params)["profile"]  # a ParamsError (ValueError) names the file
    context = metrics.get("context")
    evaluated = context.get("profile") if isinstance(context, dict) else None
    if evaluated != ran:
        raise ValueError(
            f"{params}: profile {ran!r}, but {metrics_path} was made by profile {evaluated!r}: "
            "give --params the profile that ran (for example config/<profile>.yaml)"
        )


def evaluated_commit(metrics: Any, path: Path) -> str:
    """The commit id that `metrics` (the document of `path`) was made at.

    Raises:
        ValueError: naming `path`, unless `context.commit` is a commit id of 7 to 40 hexadecimal
            digits: read from a file, it could otherwise be anything, an option of git
            (`--output=FILE` truncates FILE) or a revision that is no commit (`HEAD`).
    """
    context = metrics.get("context") if isinstance(metrics, dict) else None
    commit = context.get("commit") if isinstance(context, dict) else None
    if isinstance(commit, str) and re.fullmatch(r"[0-9a-fA-F]{7,40}-dirty", commit):
        raise ValueError(
            f"{path}: context.commit {commit!r}: the run was made with uncommitted code changes, "
            "so no commit holds its code: commit them and rerun the pipeline"
        )
    if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-fA-F]{7,40}", commit):
        raise ValueError(
            f"{path}: context.commit {commit!r} is not a commit id (7 to 40 hexadecimal digits): "
            "rerun the pipeline in this git repository"
        )
    return commit.lower()


def _keep_cogent(results: Path, out: Path) -> None:
    """The CoGenT report of every transfer split, when the run made one."""
    for metrics in sorted(results.glob("*.json")) if results.is_dir() else []:
        split = metrics.stem
        (out / split).mkdir(parents=True)
        shutil.copyfile(metrics, out / metrics.name)
        for file in COGENT_FILES:
            if (results / split / file).is_file():
                shutil.copyfile(results / split / file, out / split / file)


def _keep_humans(root: Path, out: Path) -> None:
    """The CLEVR-Humans report of every source, when the run made one."""
    results = root / "results" / "humans"
    for source in sorted(p.name for p in results.iterdir()) if results.is_dir() else []:
        (out / source).mkdir(parents=True)
        for file in HUMANS_FILES:
            if (results / source / file).is_file():
                shutil.copyfile(results / source / file, out / source / file)
        sidecar = root / "models" / "humans" / source / "film.json"
        if sidecar.is_file():
            shutil.copyfile(sidecar, out / source / "film.json")


def _lock_of_this_run(root: Path) -> str | None:
    """dvc.lock's text when it records this run's results/metrics.json, else None: after a
    Snakemake run the tree's dvc.lock may describe some other, earlier run."""
    import hashlib

    import yaml

    lock, metrics = root / "dvc.lock", root / "results/metrics.json"
    if not lock.is_file() or not metrics.is_file():
        return None
    text = lock.read_text(encoding="utf-8")
    stages = (yaml.safe_load(text) or {}).get("stages", {})
    recorded = {
        out.get("md5")
        for stage in stages.values()
        for out in stage.get("outs", [])
        if out.get("path") == "results/metrics.json"
    }
    return text if hashlib.md5(metrics.read_bytes()).hexdigest() in recorded else None


def keep_in_progress(root: Path, params: Path) -> Path:
    """Copy the unfinished run's resume point (`root/models/last.pt`) and its `progress.json`
    into `root/results/in-progress/<profile>/` (replaced atomically).

    Raises:
        ValueError: the code has uncommitted changes, the profile has a curriculum (each phase
            resumes from its own folder), the parameters file is not valid, or the resume point
            is missing or another profile's.
    """
    from filmclevr.checkpoint import load_checkpoint

    root = Path(root)
    _check_code_committed(root)
    profile = params_mod.load_params(params)
    name = profile["profile"]
    if profile.get("curriculum"):
        raise ValueError(
            f"{params}: a curriculum resumes phase by phase (models/curriculum/<k>-<split>/); "
            "keep its run when it is finished"
        )
    last = root / "models" / "last.pt"
    if not last.is_file():
        raise ValueError(f"{last}: missing; no training to keep")
    checkpoint = load_checkpoint(last)
    if checkpoint.get("profile") != name:
        raise ValueError(
            f"{last}: written by profile {checkpoint.get('profile')!r}, not by {name!r} ({params})"
        )
    progress = {
        "profile": name,
        "epochs_done": checkpoint["epoch"],
        "steps_into_next_epoch": checkpoint["epoch_step"],
        "step": checkpoint["step"],
        "max_epochs": checkpoint["train_config"]["max_epochs"],
        "init_checkpoint": checkpoint["train_config"].get("init_checkpoint"),
        "fingerprint": checkpoint["fingerprint"],
        "epochs": [_epoch_progress(row) for row in checkpoint.get("history") or []],
        "commit": _git(root, "rev-parse", "HEAD"),
        "machine": checkpoint.get("machine"),
        "how": "filmclevr-reference --in-progress: read from last.pt, train_model's resume point",
    }
    out = root / "results" / "in-progress" / name
    with atomic_dir(out) as tmp:
        shutil.copyfile(last, tmp / "last.pt")
        write_json_atomic(tmp / "progress.json", progress)
    return out


def _epoch_progress(row: dict[str, Any]) -> dict[str, Any]:
    """A finished epoch of the history, its accuracies in percent."""
    return {
        "epoch": row["epoch"],
        "val_percent": round(100 * row["val_accuracy"], 2),
        "val_columns_percent": {
            column: round(100 * value, 2)
            for column, value in (row.get("val_columns") or {}).items()
        },
        "train_percent": round(100 * row["train_accuracy"], 2),
        "samples_per_s": round(row["samples_per_s"], 1),
    }


def _check_code_committed(root: Path) -> None:
    """Refuse a tree with uncommitted changes to the code: the commit kept would not name it."""
    dirty = _git(root, "status", "--porcelain", "--", *CODE_PATHSPECS)
    if dirty:
        raise ValueError(
            f"uncommitted changes to the code ({dirty.splitlines()[0].strip()} ...): commit "
            "them and rerun the pipeline, so the reference names the code that made it"
        )


def _provenance(root: Path, metrics: dict[str, Any], params: Path) -> dict[str, Any]:
    lock = _lock_of_this_run(root)
    return {
        "commit": _git(root, "rev-parse", "HEAD"),
        "commit_of_the_evaluation": metrics.get("context", {}).get("commit"),
        "parameters": relative_name(params, root),
        "dvc_lock": lock,  # None when the tree's dvc.lock records another run (or none)
        "machine": metrics.get("context", {}).get("machine"),
        "kept": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "how": "filmclevr-reference after the pipeline ran these parameters at this commit",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="filmclevr-reference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--name", help="folder under results/reference/")
    parser.add_argument(
        "--params", type=Path, help="the profile that ran (default: the project's params.yaml)"
    )
    parser.add_argument("--root", type=Path, default=Path("."), help="project root")
    parser.add_argument(
        "--measurements-only",
        action="store_true",
        help="keep the numbers and times, not the model, figures or analysis",
    )
    parser.add_argument(
        "--in-progress",
        action="store_true",
        help="keep an unfinished training's resume point in results/in-progress/<profile>/",
    )
    args = parser.parse_args(argv)
    if args.in_progress == (args.name is not None):
        parser.error("give --name (a finished run) or --in-progress (an unfinished one)")
    params = args.params or args.root / "params.yaml"
    try:
        if args.in_progress:
            out = keep_in_progress(args.root, params)
        else:
            out = keep_reference(
                args.root, args.name, params, measurements_only=args.measurements_only
            )
    except (ValueError, OSError, subprocess.CalledProcessError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{'resume point' if args.in_progress else 'reference result'} kept in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
