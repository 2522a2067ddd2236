"""The paper's experiments: the ablations of Table 2 and the depths of Table 3, with seeds.

One list, one home: every experiment is a preset of `filmclevr.model.ABLATIONS` (a named change
of the `model` section), with its paper value through `ABLATION_PAPER_ROW`. A profile chooses
which to run (`experiments.names`), with which seeds (`experiments.seeds`) and what it changes
in the training recipe for the sweep (`experiments.train_model`); both engines expand that one
list into run jobs on the same data stages (Snakemake wildcards, DVC matrix stages).

Each run trains and evaluates into its own folder (`results/experiments/runs/<name>/seed<k>/`,
resuming from `models/experiments/<name>/seed<k>/last.pt`) and writes `result.json`; a run
that fails (bad configuration, NaN) records the reason there instead of stopping the sweep.
`collect` then builds the table (mean +- std over seeds, our delta from our base row beside the
paper's delta from its 97.4) and the figure of the deltas.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from filmclevr import clevr
from filmclevr.fileio import read_json, write_json_atomic, write_text_atomic
from filmclevr.model import ABLATION_PAPER_ROW, ABLATIONS

log = logging.getLogger(__name__)

BASE = "raw_pixels"  # our base row: the profile's model unchanged (no override)
PAPER_DIR = Path(__file__).resolve().parent / "paper"
PAPER_BASE_ROW = "Best architecture (mean of 5 runs; std 0.4)"  # Table 2's reference, 97.4
COLUMNS = ("overall", *clevr.QUESTION_TYPES)
TABLE_FIELDS = (
    "experiment", "seeds", "runs",
    *(f"{c}_{stat}" for c in COLUMNS for stat in ("mean", "std")),
    "epochs", "parameters", "data", "status", "paper", "paper_delta", "paper_row", "delta",
)  # fmt: skip


def check_names(names: Iterable[str]) -> list[str]:
    """The experiment names, each a preset of `model.ABLATIONS`.

    Raises:
        ValueError: naming the unknown ones and the known presets.
    """
    names = list(names)
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(
            f"unknown experiments {', '.join(unknown)} (presets of filmclevr.model.ABLATIONS: "
            f"{', '.join(ABLATIONS)})"
        )
    return names


def paper_value(name: str) -> float | None:
    """The paper's validation accuracy for the experiment (Table 2 or 3), read from its CSV."""
    if name not in ABLATION_PAPER_ROW:
        return None
    table, row = ABLATION_PAPER_ROW[name]
    return _paper_table(table).get(row)


def paper_base() -> float:
    """The paper's reference value for Table 2's deltas: its best architecture, 97.4."""
    return _paper_table("table2_ablations_val")[PAPER_BASE_ROW]


def _paper_table(name: str) -> dict[str, float]:
    import pandas as pd

    table = pd.read_csv(PAPER_DIR / f"{name}.csv")
    labels = table.iloc[:, 0].astype(str)
    return dict(zip(labels, table["val_accuracy"].astype(float), strict=True))


def run_changes(params: Mapping[str, Any], name: str, seed: int) -> tuple[dict, dict]:
    """(model changes, train_model changes) of one run: the experiment's preset, and the
    sweep's changes of the recipe with the run's seed."""
    check_names([name])
    return dict(ABLATIONS[name]), {**params["experiments"]["train_model"], "seed": seed}


def run_configs(params: Mapping[str, Any], name: str, seed: int) -> tuple[dict, dict]:
    """(FiLMConfig fields, TrainConfig fields) of one run: the profile's model with the
    experiment's change, and its recipe with the sweep's changes and the run's seed."""
    from filmclevr.runs import model_fields, train_fields

    model, train = run_changes(params, name, seed)
    return model_fields(params, model), train_fields(params, train)


def run_experiment(
    params: Mapping[str, Any],
    name: str,
    seed: int,
    *,
    shards_dir: Path,
    tokens_dir: Path,
    out_dir: Path,
    last_checkpoint: Path,
    progress: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one run into `out_dir` and write its `result.json`.

    The run is the profile's main training (not its curriculum) with the run's changes
    (`run_changes`). A failure of the run itself (a configuration the model refuses, a diverged
    loss) is recorded as `{"status": "failed", "reason": ...}` rather than raised, so a sweep
    goes on. Anything else (damaged shards, a missing file) is raised: it is no property of the
    experiment, and a table row "failed" would outlive the repaired data.
    """
    from filmclevr.runs import model_fields, plan_run
    from filmclevr.scored_runs import train_and_evaluate

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"name": name, "seed": seed, "profile": params["profile"]}
    try:
        model, train = run_changes(params, name, seed)
        result["model"] = model_fields(params, model)
        plan = plan_run(params, model=model, train=train, curriculum=False)
    except ValueError as e:  # the preset does not fit this profile's model
        return _failed(out_dir, result, e)
    try:
        run = train_and_evaluate(
            plan,
            shards_dir=shards_dir,
            tokens_dir=tokens_dir,
            best_checkpoint=out_dir / "film.pt",
            last_checkpoint=last_checkpoint,
            log_dir=out_dir / "train",
            progress=progress,
        )
    except FloatingPointError as e:  # the loss diverged
        return _failed(out_dir, result, e)
    metrics = run.evaluation.metrics
    (summary,) = run.summaries
    result.update(
        status="ok",
        accuracy={
            c: metrics["overall"] if c == "overall" else metrics["columns"][c] for c in COLUMNS
        },  # fmt: skip
        epochs=summary["epochs"],
        best_epoch=summary["best_epoch"],
        parameters=run.evaluation.context["parameters"],
        context=run.evaluation.context,
    )
    write_json_atomic(out_dir / "result.json", result)
    return result


def _failed(out_dir: Path, result: dict[str, Any], error: Exception) -> dict[str, Any]:
    """Record a run that failed by itself in its result.json, so the sweep goes on."""
    log.error("experiment %s seed %d failed: %s", result["name"], result["seed"], error)
    result.update(status="failed", reason=str(error))
    write_json_atomic(out_dir / "result.json", result)
    return result


def read_results(runs_dir: Path, names: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """Every run's result.json (a missing one is reported as a run that did not finish).

    Raises:
        ValueError: a result.json holds another run than its folder's (a moved or copied
            folder would put its numbers in another row), naming the file.
    """
    results = []
    for name in names:
        for seed in seeds:
            path = Path(runs_dir) / name / f"seed{seed}" / "result.json"
            if path.is_file():
                result = read_json(path)
                if (result.get("name"), result.get("seed")) != (name, seed):
                    raise ValueError(
                        f"{path}: the result of {result.get('name')!r} seed "
                        f"{result.get('seed')!r}, not of {name!r} seed {seed} (a moved or "
                        "copied run folder; remove it and rerun run_experiment)"
                    )
                results.append(result)
            else:
                results.append(
                    {"name": name, "seed": seed, "status": "failed", "reason": f"{path}: missing"}
                )
    return results


def summarize(results: list[dict[str, Any]], names: list[str]) -> list[dict[str, Any]]:
    """One row per experiment: mean and std over its successful seeds, deltas, paper values."""
    rows = []
    for name in names:
        runs = [r for r in results if r["name"] == name]
        done = [r for r in runs if r["status"] == "ok"]
        failed = [r for r in runs if r["status"] != "ok"]
        row: dict[str, Any] = {"experiment": name, "seeds": len(done), "runs": len(runs)}
        for column in COLUMNS:
            values = [r["accuracy"][column] for r in done if r["accuracy"][column] is not None]
            row[f"{column}_mean"] = statistics.fmean(values) if values else None
            row[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else None
        row["epochs"] = max((r["epochs"] for r in done), default=None)
        row["parameters"] = done[0]["parameters"] if done else None
        row["data"] = _data_label(done[0]["context"]) if done else None
        row["status"] = (
            "ok"
            if not failed
            else "failed: " + "; ".join(f"seed {r['seed']}: {r.get('reason', '?')}" for r in failed)
        )
        paper = paper_value(name)
        row["paper"] = paper
        row["paper_delta"] = None if paper is None else paper - paper_base()
        paper_table, paper_row = ABLATION_PAPER_ROW.get(name, (None, None))
        if paper_table == "table3_resblocks_val":  # its rows are bare depths: say what they are
            paper_row = f"{paper_row} ResBlocks (Table 3)"
        row["paper_row"] = paper_row
        rows.append(row)
    base = next((r for r in rows if r["experiment"] == BASE), None)
    for row in rows:
        have = base is not None and None not in (base["overall_mean"], row["overall_mean"])
        row["delta"] = row["overall_mean"] - base["overall_mean"] if have else None
    return rows


def _data_label(context: Mapping[str, Any]) -> str:
    return (
        f"{context['dataset']} / {context['split']} (profile {context['profile']}), "
        f"{context['train_questions']:,} training questions"
    )


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown, with its data label stated above it."""
    labels = sorted({r["data"] for r in rows if r["data"]})
    lines = [
        "# FiLM's experiments (paper Tables 2 and 3): validation accuracy (%)",
        "",
        "Ours: " + ("; ".join(labels) if labels else "no finished run") + ". The paper's: "
        f"CLEVR v1.0 / val, deltas from its best architecture ({paper_base():g}). A mini-CLEVR "
        "number is not a CLEVR number: compare the deltas, not the values.",
        "",
        "| experiment | paper row | ours (mean ± std) | ours Δ base | paper | paper Δ | seeds |"
        " epochs | parameters | status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        paper = "-" if r["paper"] is None else f"{r['paper']:.1f}"
        parameters = "-" if r["parameters"] is None else f"{r['parameters']:,}"
        lines.append(
            f"| {r['experiment']} | {r['paper_row'] or '-'} | "
            f"{_cell(r['overall_mean'], r['overall_std'])} | {_signed(r['delta'])} | "
            f"{paper} | {_signed(r['paper_delta'])} | {r['seeds']}/{r['runs']} | "
            f"{r['epochs'] or '-'} | {parameters} | {r['status']} |"
        )
    return "\n".join(lines) + "\n"


def collect(
    runs_dir: Path,
    names: list[str],
    seeds: list[int],
    *,
    out_md: Path,
    out_csv: Path,
    out_png: Path,
) -> list[dict[str, Any]]:
    """Write the sweep's table (Markdown, CSV with the per-column accuracies) and figure."""
    import pandas as pd

    from filmclevr.figures import plot_experiment_deltas

    rows = summarize(read_results(runs_dir, check_names(names), list(seeds)), names)
    write_text_atomic(out_md, markdown(rows))
    table = pd.DataFrame(rows, columns=TABLE_FIELDS)  # the columns also when no experiment ran
    write_text_atomic(out_csv, table.to_csv(index=False))
    plot_experiment_deltas(table, out_png)
    failed = [r["experiment"] for r in rows if r["status"] != "ok"]
    log.info("%d experiments, %d with failed runs %s", len(rows), len(failed), failed or "")
    return rows
