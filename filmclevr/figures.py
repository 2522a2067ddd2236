"""Figures: learning curves and the accuracy bar chart beside the paper's FiLM rows.

matplotlib is imported lazily and drawn on an Agg canvas without pyplot, so no global backend
state is touched. PNGs are written atomically and without the "Software" metadata, so a rerun
with the same inputs and matplotlib gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from filmclevr import clevr
from filmclevr.fileio import atomic_path

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

COLUMN_TITLES: dict[str, str] = {
    "overall": "Overall",
    "count": "Count",
    "exist": "Exist",
    "compare_numbers": "Compare\nNumbers",
    "query_attribute": "Query\nAttribute",
    "compare_attribute": "Compare\nAttribute",
}
BAR_COLUMNS: tuple[str, ...] = ("overall", *clevr.QUESTION_TYPES)
PAPER_FILM_PREFIX = "CNN+GRU+FiLM"


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out_png: Path) -> None:
    with atomic_path(out_png) as tmp:
        figure.savefig(tmp, format="png", metadata={"Software": None})


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list, list]:
    points = [(row["epoch"], row[key]) for row in history if row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]], out_png: Path, *, label: str = ""
) -> None:
    """Panels over epochs: losses (train, val if logged), accuracies (train, val) and, when
    the history has them, validation accuracy per paper column (`val_columns`).

    Args:
        history: rows with `epoch` and any of train_loss, val_loss, train_accuracy,
            val_accuracy, val_columns (missing or None values are skipped).
        label: title, e.g. the dataset / split / profile of the run.
    """
    if not history:
        raise ValueError("no history rows to plot (has training run an epoch?)")
    if any("epoch" not in row for row in history):
        raise ValueError("every history row needs an 'epoch'")
    from matplotlib.ticker import MaxNLocator

    columns = [
        c for c in clevr.QUESTION_TYPES if any(c in r.get("val_columns", {}) for r in history)
    ]
    rows = [{**row, **{f"val {c}": row.get("val_columns", {}).get(c) for c in columns}}
            for row in history]  # fmt: skip
    panels = [
        ("loss", ("train_loss", "val_loss")),
        ("accuracy", ("train_accuracy", "val_accuracy")),
    ]
    if columns:
        panels.append(("val accuracy per column", tuple(f"val {c}" for c in columns)))
    figure = _new_figure(5 * len(panels), 4)
    for axes, (quantity, keys) in zip(figure.subplots(1, len(panels)), panels, strict=True):
        plotted = False
        for key in keys:
            epochs, values = _series(rows, key)
            if values:
                axes.plot(epochs, values, marker="o", markersize=3, label=key.replace("_", " "))
                plotted = True
        if plotted:
            axes.legend()
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(quantity)
        axes.set_title(quantity.capitalize())
        axes.grid(alpha=0.3)
    if label:
        figure.suptitle(label)
    _save(figure, out_png)


class BarSeries(NamedTuple):
    """One series of the accuracy bar chart: `name` in the legend, `short` in its data's rows
    (results/accuracy.csv, DVC's bar chart), `data` the dataset / split its numbers are on, and
    one value per entry of BAR_COLUMNS (NaN where a column has no questions)."""

    name: str
    short: str
    data: str
    values: list[float]


def accuracy_bar_series(
    metrics: Mapping[str, Any], paper_rows: pandas.DataFrame, label: str
) -> list[BarSeries]:
    """The series of `plot_accuracy_bars`: the paper's FiLM rows, this run and, when the metrics
    hold it, this run's Q-type prior.

    Args:
        metrics: metrics.json document (`overall`, `columns`, optional `prior`).
        paper_rows: the paper's Table 1 (rows whose model starts with "CNN+GRU+FiLM" are drawn).
        label: dataset / split of this run, e.g. "mini-CLEVR / val (profile mini)".
    """
    import numpy as np

    def scores(source: Mapping[str, Any]) -> list[float]:
        values = [source["overall"], *(source["columns"][c] for c in clevr.QUESTION_TYPES)]
        return [np.nan if v is None else float(v) for v in values]

    paper_data = "CLEVR v1.0 / test"
    film = paper_rows[paper_rows["model"].astype(str).str.startswith(PAPER_FILM_PREFIX)]
    series = [
        BarSeries(
            f"{row['model']} (paper, {paper_data})",
            f"paper {row['model']}",
            paper_data,
            [float(row[c]) for c in BAR_COLUMNS],
        )
        for _, row in film.iterrows()
    ]
    series.append(BarSeries(f"FiLM, this run ({label})", "this run", label, scores(metrics)))
    if metrics.get("prior"):
        series.append(
            BarSeries(
                f"Q-type prior, this run ({label})",
                "this run's Q-type prior",
                label,
                scores(metrics["prior"]),
            )
        )
    return series


def plot_accuracy_bars(
    metrics: Mapping[str, Any], paper_rows: pandas.DataFrame, out_png: Path, label: str
) -> None:
    """Grouped bars: Overall and the five columns, this run beside the paper's FiLM rows
    (`accuracy_bar_series`; its arguments)."""
    import numpy as np

    series = [(s.name, s.values) for s in accuracy_bar_series(metrics, paper_rows, label)]
    figure = _new_figure(11, 5.5)
    axes = figure.subplots()
    x = np.arange(len(BAR_COLUMNS))
    width = 0.8 / len(series)
    for i, (name, values) in enumerate(series):
        bars = axes.bar(x + (i - (len(series) - 1) / 2) * width, values, width, label=name)
        texts = ["" if np.isnan(v) else f"{v:.1f}" for v in values]
        axes.bar_label(bars, labels=texts, fontsize=7, padding=1)
    axes.set_xticks(x, [COLUMN_TITLES[c] for c in BAR_COLUMNS])
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 110)
    axes.set_title(f"FiLM accuracy: this run on {label} vs the paper on CLEVR v1.0 / test")
    figure.legend(loc="outside lower center", ncols=2, fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    _save(figure, out_png)


# --- The paper's analysis (filmclevr.analysis) ------------------------------------------------
def plot_example_maps(
    examples: Sequence[Mapping[str, Any]], out_png: Path, *, label: str = "", columns: int = 4
) -> None:
    """Figure 4 as a grid: each example's original image lit where the classifier's max-pooled
    features come from, titled with the question, the answer and the prediction.

    Args:
        examples: rows with `overlay` (H, W, 3 uint8), `question`, `answer` (None when not
            known), `predicted`, `probability` (and optionally `mean_overlay`, drawn beside it).
    """
    views = 2 if examples and "mean_overlay" in examples[0] else 1
    rows = -(-len(examples) // columns)
    figure = _new_figure(3.2 * columns * views, 2.6 * rows + 0.4)
    for k, example in enumerate(examples):
        for v, key in enumerate(("overlay", "mean_overlay")[:views]):
            axis = figure.add_subplot(rows, columns * views, k * views + v + 1)
            axis.imshow(example[key])
            axis.set_xticks([])
            axis.set_yticks([])
            if v == 0:
                axis.set_title(example_title(example), fontsize=7, loc="left")
            else:
                axis.set_title("last ResBlock, mean activation", fontsize=7, loc="left")
    if label:
        figure.suptitle(label, fontsize=9)
    _save(figure, out_png)


def plot_example_map(example: Mapping[str, Any], out_png: Path) -> None:
    """One example of `plot_example_maps`, both views side by side."""
    plot_example_maps([example], out_png, columns=1)


def example_title(example: Mapping[str, Any]) -> str:
    """The question, the prediction with its probability and, when the true answer is known
    (`answer` not None), that answer and whether the prediction is right."""
    import textwrap

    question = "\n".join(textwrap.wrap(str(example["question"]), 48))
    predicted = f"predicted {example['predicted']} (p={example['probability']:.2f}"
    if example.get("answer") is None:  # a user's image: no true answer
        return f"{question}\n{predicted})"
    verdict = "right" if example["predicted"] == example["answer"] else "wrong"
    return f"{question}\nanswer {example['answer']}; {predicted}, {verdict})"


def plot_film_histograms(
    values: Mapping[str, Any], out_png: Path, *, bins: int = 100, label: str = ""
) -> None:
    """Figures 5, 16 and 17: gamma and beta over all questions, pooled and per ResBlock.

    Args:
        values: {"gamma": array (N, blocks, C), "beta": array (N, blocks, C)}.
    """
    import numpy as np

    blocks = values["gamma"].shape[1]
    figure = _new_figure(3.0 * (blocks + 1), 5.0)
    for r, name in enumerate(("gamma", "beta")):
        data = np.asarray(values[name])
        panels = [("all ResBlocks", data.ravel())]
        panels += [(f"ResBlock {b + 1}", data[:, b].ravel()) for b in range(blocks)]
        for c, (title, flat) in enumerate(panels):
            axis = figure.add_subplot(2, blocks + 1, r * (blocks + 1) + c + 1)
            axis.hist(flat, bins=bins, color="tab:blue" if name == "gamma" else "tab:orange")
            axis.set_title(f"{name}: {title}", fontsize=8)
            axis.axvline(0, color="black", linewidth=0.5)
            axis.tick_params(labelsize=7)
    if label:
        figure.suptitle(label, fontsize=9)
    _save(figure, out_png)


def plot_tsne(points: pandas.DataFrame, out_png: Path, *, label: str = "") -> None:
    """Figure 6: t-SNE of the first and the last ResBlock's (gamma, beta), coloured by the
    question's last program function (one colour per terminal function, a legend).

    Args:
        points: rows `layer` ("first"/"last"), `function`, `x`, `y`.
    """
    from matplotlib import colormaps

    colours = colormaps["tab20"]
    figure = _new_figure(12.0, 5.5)
    for k, layer in enumerate(("first", "last")):
        axis = figure.add_subplot(1, 2, k + 1)
        part = points[points["layer"] == layer]
        for i, function in enumerate(clevr.TERMINAL_FUNCTIONS):
            mine = part[part["function"] == function]
            if len(mine):
                axis.scatter(mine["x"], mine["y"], s=4, color=colours(i), label=function)
        axis.set_title(f"{layer} ResBlock's (gamma, beta)", fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])
    handles, names = figure.axes[0].get_legend_handles_labels()
    figure.legend(handles, names, loc="outside right center", fontsize=7, markerscale=3)
    if label:
        figure.suptitle(label, fontsize=9)
    _save(figure, out_png)


def plot_ablations(
    table: pandas.DataFrame, paper: Mapping[str, float], out_png: Path, *, label: str = ""
) -> None:
    """Figure 7: accuracy against the standard deviation of noise added to gamma or to beta,
    with the train-mean replacements as points, beside the paper's drops."""
    figure = _new_figure(7.0, 4.2)
    axis = figure.add_subplot(1, 1, 1)
    base = float(table.loc[table["kind"] == "none", "accuracy"].iloc[0])
    for target, colour in (("gamma", "tab:blue"), ("beta", "tab:orange")):
        noise = table[(table["target"] == target) & (table["kind"] == "noise")]
        stds = [0.0, *noise["std"]]
        axis.plot(stds, [base, *noise["accuracy"]], "o-", color=colour, label=f"noise on {target}")
        mean = table[(table["target"] == target) & (table["kind"] == "train_mean")]
        axis.axhline(
            float(mean["accuracy"].iloc[0]), color=colour, linestyle="--",
            label=f"{target} := its training-set mean (ours)",
        )  # fmt: skip
        drop = paper.get(f"{target}_to_train_mean_drop")
        if drop is not None:
            axis.axhline(
                base - drop, color=colour, linestyle=":",
                label=f"paper: {target} := mean, -{drop:g} points (from our accuracy)",
            )  # fmt: skip
    axis.set_xscale("symlog", linthresh=0.1)
    axis.set_xlim(left=0)
    axis.set_ylim(0, 100)  # a paper line below 0 (a drop larger than our accuracy) is off the plot
    axis.set_xlabel("standard deviation of the added noise")
    axis.set_ylabel("accuracy (%)")
    axis.legend(fontsize=7)
    axis.set_title(label or "test-time ablations", fontsize=9)
    _save(figure, out_png)


# --- The paper's experiments (filmclevr.experiments) ------------------------------------------
def plot_experiment_deltas(table: pandas.DataFrame, out_png: Path) -> None:
    """Each experiment's change in validation accuracy: ours from our base row, the paper's
    from its best architecture, side by side (a run that failed shows no bar of ours)."""
    import numpy as np

    figure = _new_figure(max(6.0, 0.45 * len(table) + 2), 4.5)
    axis = figure.add_subplot(1, 1, 1)
    x = np.arange(len(table))
    ours = table["delta"].astype(float).to_numpy()
    paper = table["paper_delta"].astype(float).to_numpy()
    axis.bar(x - 0.2, np.nan_to_num(ours), width=0.4, label="ours (from our base row)")
    axis.bar(x + 0.2, np.nan_to_num(paper), width=0.4, label="paper (from its 97.4)")
    for i in np.flatnonzero(np.isnan(ours)):
        axis.text(x[i] - 0.2, 0, "n/a", rotation=90, fontsize=6, ha="center", va="bottom")
    if not len(table):
        axis.text(0.5, 0.5, "no experiment in this profile", ha="center", transform=axis.transAxes)
    axis.axhline(0, color="black", linewidth=0.5)
    axis.set_xticks(x, table["experiment"], rotation=60, ha="right", fontsize=7)
    axis.set_ylabel("change in val accuracy (points)")
    axis.legend(fontsize=8)
    axis.set_title(
        "FiLM's experiments (Tables 2 and 3): deltas, ours beside the paper's", fontsize=9
    )
    _save(figure, out_png)


# --- CLEVR-CoGenT (filmclevr.cogent) -----------------------------------------------------------
def plot_sample_efficiency(
    points: Sequence[Mapping[str, Any]],
    paper: Mapping[str, float],
    out_png: Path,
    *,
    a_split: str,
    b_split: str,
) -> None:
    """Accuracy on B's held-out questions and on A against the fine-tuning questions (0: the A
    model), beside the paper's fine-tuned FiLM on 30K valB questions."""
    figure = _new_figure(6.5, 4.0)
    axis = figure.add_subplot(1, 1, 1)
    xs = [p["questions"] for p in points]
    for split, colour, what in ((b_split, "tab:orange", "held-out"), (a_split, "tab:blue", "")):
        ys = [p.get(split) for p in points]
        axis.plot(xs, [float("nan") if y is None else y for y in ys], "o-", color=colour,
                  label=f"ours: {split} {what}".strip())  # fmt: skip
    for key, colour, split in (
        ("finetune_B_on_B", "tab:orange", "B"),
        ("finetune_B_on_A", "tab:blue", "A"),
    ):
        axis.plot([30_000], [paper[key]], "*", markersize=11, color=colour,
                  label=f"paper: fine-tuned on 30K valB, on {split} ({paper[key]:g})")  # fmt: skip
    axis.set_xscale("symlog", linthresh=max(min((x for x in xs if x > 0), default=100), 1))
    axis.set_xlim(left=0)
    axis.set_ylim(0, 100)
    axis.set_xlabel("fine-tuning questions of condition B")
    axis.set_ylabel("accuracy (%)")
    axis.legend(fontsize=7)
    axis.set_title("CoGenT: fine-tuning on B, sample efficiency and forgetting", fontsize=9)
    _save(figure, out_png)


# --- A run's learning curve beside the official one ---------------------------------------------
def plot_curve_vs_paper(
    ours: pandas.DataFrame, paper: pandas.DataFrame | None, out_png: Path, *, label: str = ""
) -> None:
    """Validation accuracy against training questions seen: this run's epochs beside the
    official model's (the paper's appendix Figure 11), both from their CSVs; with `paper`
    None, this run's alone, titled as not comparable (a run that started from a checkpoint)."""
    figure = _new_figure(7.0, 4.2)
    axis = figure.add_subplot(1, 1, 1)
    axis.plot(ours["questions_seen"] / 1e6, ours["val_accuracy"], "o-", label=label or "this run")
    if "train_accuracy" in ours:
        axis.plot(ours["questions_seen"] / 1e6, ours["train_accuracy"], ".:", color="tab:blue",
                  alpha=0.6, label="this run, train")  # fmt: skip
    if paper is not None:
        axis.plot(paper["questions_seen"] / 1e6, paper["val_accuracy"], "s--", color="black",
                  label="official FiLM on CLEVR (paper Fig. 11, read off the plot)")  # fmt: skip
    if "prior" in ours and len(ours):
        axis.axhline(float(ours["prior"].iloc[0]), color="gray", linewidth=0.8, linestyle=":",
                     label="this run's Q-type prior")  # fmt: skip
    if len(ours):
        right = max(float(ours["questions_seen"].max()) * 1.15, 1.0) / 1e6
    else:  # a record without a history (an imported checkpoint's may have none)
        right = float(paper["questions_seen"].max()) * 1.05 / 1e6 if paper is not None else 1.0
    axis.set_xlim(0, right)
    axis.set_ylim(0, 100)
    axis.set_xlabel("training questions seen (millions)")
    axis.set_ylabel("validation accuracy (%)")
    axis.legend(fontsize=7, loc="lower right")
    if not len(ours):
        axis.set_title("no validation history in this checkpoint's record", fontsize=9)
    elif paper is not None:
        axis.set_title("learning curve beside the official one", fontsize=9)
    else:
        axis.set_title(
            "learning curve; not beside the official one: this run started from a checkpoint,\n"
            "whose questions seen its history does not count",
            fontsize=9,
        )
    _save(figure, out_png)


# --- CLEVR-Humans: the fine-tuning's learning curve ---------------------------------------------
def plot_humans_curve(
    history: Sequence[Mapping[str, Any]],
    before_val: float,
    paper: Mapping[str, float],
    out_png: Path,
    *,
    best_epoch: int,
    label: str = "",
) -> None:
    """CLEVR-Humans val and train accuracy over the fine-tuning's epochs (epoch 0: the CLEVR
    model before fine-tuning), the kept epoch marked, beside the paper's Table 4 (test).

    Args:
        history: the fine-tuning's rows (`epoch`, `val_accuracy`, `train_accuracy`, fractions).
        before_val: val accuracy (%) of the model before fine-tuning.
        paper: the paper's "before" and "after" (%, CLEVR-Humans test).
        best_epoch: the epoch kept (best on val).
        label: the dataset, for the title.
    """
    if not history:
        raise ValueError("no history rows to plot (has the fine-tuning run an epoch?)")
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(6.5, 4.0)
    axis = figure.add_subplot(1, 1, 1)
    epochs = [0] + [row["epoch"] for row in history]
    val = [before_val] + [100 * row["val_accuracy"] for row in history]
    axis.plot(epochs, val, "o-", color="tab:orange", label="this run: val")
    axis.plot([row["epoch"] for row in history], [100 * r["train_accuracy"] for r in history],
              ".:", color="tab:blue", label="this run: train")  # fmt: skip
    kept = [v for e, v in zip(epochs, val, strict=True) if e == best_epoch]
    axis.plot([best_epoch] * len(kept), kept, "*", markersize=13, color="tab:red",
              label=f"kept (best val, epoch {best_epoch})")  # fmt: skip
    for key, style in (("before", ":"), ("after", "--")):
        what = f"paper, CLEVR-Humans test, {key} fine-tuning ({paper[key]:g})"
        axis.axhline(paper[key], color="black", linewidth=0.9, linestyle=style, label=what)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_ylim(0, 100)
    axis.set_xlabel("fine-tuning epoch (0: the CLEVR model)")
    axis.set_ylabel("accuracy (%)")
    axis.legend(fontsize=7, loc="lower right")
    axis.set_title(f"CLEVR-Humans fine-tuning{': ' + label if label else ''}", fontsize=9)
    _save(figure, out_png)


# --- sim-to-real over training ------------------------------------------------------------------
SIM_TO_REAL_SERIES: tuple[tuple[str, str, str], ...] = (
    ("genuine", "o-", "genuine CLEVR images"),
    ("mini_clevr", "s-", "as many of its own mini-CLEVR val images"),
    ("prior", "--", "Q-type prior (genuine)"),
)


def plot_sim_to_real_over_training(rows: Sequence[Mapping[str, Any]], out_png: Path) -> None:
    """Overall and each column over a run's checkpoints (rows in training order, each with a
    `label` and, per entry of SIM_TO_REAL_SERIES, accuracies keyed as BAR_COLUMNS; the
    overall panel adds `validation_split`, the whole split's, where not None)."""
    if not rows:
        raise ValueError("no checkpoints to plot")
    figure = _new_figure(13.0, 7.0)
    panels = figure.subplots(2, 3, sharex=True)
    x = list(range(len(rows)))
    for axis, metric in zip(panels.flat, BAR_COLUMNS, strict=True):
        for key, style, name in SIM_TO_REAL_SERIES:
            values = [row[key][metric] for row in rows]
            color = "gray" if key == "prior" else None
            axis.plot(x, values, style, color=color, markersize=4, label=name)
        if metric == "overall":
            whole = [(i, r["validation_split"]) for i, r in enumerate(rows)
                     if r.get("validation_split") is not None]  # fmt: skip
            if whole:
                axis.plot(*zip(*whole, strict=True), "x:", color="black",
                          label="its whole val split (training's own)")  # fmt: skip
            axis.legend(fontsize=7)
        axis.set_title(COLUMN_TITLES[metric].replace("\n", " "))
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
    for axis in panels[-1]:
        axis.set_xticks(x, [row["label"] for row in rows], rotation=45, ha="right", fontsize=8)
    figure.suptitle(
        f"One harness over training (filmclevr-sim-to-real): {rows[0]['questions']:,} "
        "questions a side"
    )
    _save(figure, out_png)


# --- Training variants over seeds ---------------------------------------------------------------
def plot_variant_curves(
    histories: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], out_png: Path, *, title: str
) -> None:
    """Validation accuracy over epochs per variant: each seed's run thin, their mean bold.

    Args:
        histories: variant name -> one training history per seed (rows with `epoch` and
            `val_accuracy`, a fraction).
    """
    if not any(histories.values()):
        raise ValueError("no runs to plot")
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(6.5, 4.2)
    axis = figure.add_subplot(1, 1, 1)
    for i, (name, runs) in enumerate(histories.items()):
        colour = f"C{i}"  # the colour cycle's i-th: one colour per variant, seeds and mean
        if not runs:  # a variant not trained yet: nothing to draw, its colour kept
            continue
        curves = [dict(zip(*_series(history, "val_accuracy"), strict=True)) for history in runs]
        for curve in curves:
            axis.plot(list(curve), [100 * v for v in curve.values()], "-", color=colour,
                      alpha=0.35, linewidth=0.8)  # fmt: skip
        epochs = sorted(set.intersection(*(set(c) for c in curves)))
        mean = [100 * sum(c[e] for c in curves) / len(curves) for e in epochs]
        axis.plot(epochs, mean, "o-", color=colour, label=f"{name} (mean of {len(curves)})")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy (%)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="lower right")
    axis.set_title(title, fontsize=9)
    _save(figure, out_png)
