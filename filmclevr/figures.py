"""Figures: learning curves and the accuracy bar chart beside the paper's FiLM rows.

matplotlib is imported lazily and drawn on an Agg canvas without pyplot, so no global backend
state is touched. PNGs are written atomically and without the "Software" metadata, so a rerun
with the same inputs and matplotlib gives the same bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    """Two panels over epochs: losses (train, val if logged) and accuracies (train, val).

    Args:
        history: rows with `epoch` and any of train_loss, val_loss, train_accuracy,
            val_accuracy (missing or None values are skipped).
        label: title, e.g. the dataset / split / profile of the run.
    """
    if not history:
        raise ValueError("no history rows to plot (has training run an epoch?)")
    if any("epoch" not in row for row in history):
        raise ValueError("every history row needs an 'epoch'")
    from matplotlib.ticker import MaxNLocator

    figure = _new_figure(10, 4)
    panels = (
        ("loss", ("train_loss", "val_loss")),
        ("accuracy", ("train_accuracy", "val_accuracy")),
    )
    for axes, (quantity, keys) in zip(figure.subplots(1, 2), panels, strict=True):
        plotted = False
        for key in keys:
            epochs, values = _series(history, key)
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


def plot_accuracy_bars(
    metrics: Mapping[str, Any], paper_rows: pandas.DataFrame, out_png: Path, label: str
) -> None:
    """Grouped bars: Overall and the five columns, this run beside the paper's FiLM rows.

    Args:
        metrics: metrics.json document (`overall`, `columns`, optional `prior`).
        paper_rows: the paper's Table 1 (rows whose model starts with "CNN+GRU+FiLM" are drawn).
        label: dataset / split of this run, e.g. "mini-CLEVR / val (profile mini)".
    """
    import numpy as np

    def scores(source: Mapping[str, Any]) -> list[float]:
        values = [source["overall"], *(source["columns"][c] for c in clevr.QUESTION_TYPES)]
        return [np.nan if v is None else float(v) for v in values]

    film = paper_rows[paper_rows["model"].astype(str).str.startswith(PAPER_FILM_PREFIX)]
    series = [
        (f"{row['model']} (paper, CLEVR v1.0 / test)", [float(row[c]) for c in BAR_COLUMNS])
        for _, row in film.iterrows()
    ]
    series.append((f"FiLM, this run ({label})", scores(metrics)))
    if metrics.get("prior"):
        series.append((f"Q-type prior, this run ({label})", scores(metrics["prior"])))

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
