"""Tests of filmclevr.figures: the PNGs exist, open as PNGs and are byte-stable."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from filmclevr import clevr, figures

PAPER_CSV = Path(figures.__file__).parent / "paper" / "table1_clevr_test.csv"

HISTORY = [
    {"epoch": 1, "train_loss": 2.1, "train_accuracy": 30.0, "val_accuracy": 35.0, "val_loss": 2.0},
    {"epoch": 2, "train_loss": 1.5, "train_accuracy": 45.0, "val_accuracy": 47.5, "val_loss": None},
    {"epoch": 3, "train_loss": 1.1, "train_accuracy": 60.0, "val_accuracy": 58.0},
]


def _open_png(path: Path) -> tuple[int, int]:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def test_learning_curves_png_is_stable(tmp_path):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    figures.plot_learning_curves(HISTORY, first, label="mini-CLEVR / val (profile mini)")
    figures.plot_learning_curves(HISTORY, second, label="mini-CLEVR / val (profile mini)")
    width, height = _open_png(first)
    assert width > height  # two panels side by side
    assert first.read_bytes() == second.read_bytes()
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_learning_curves_add_a_panel_per_column_when_logged(tmp_path):
    plain, columns = tmp_path / "plain.png", tmp_path / "columns.png"
    figures.plot_learning_curves(HISTORY, plain)
    with_columns = [
        {**row, "val_columns": {"count": 0.3 + 0.1 * i, "exist": 0.5}}
        for i, row in enumerate(HISTORY)
    ]
    with_columns[0]["val_columns"] = {}  # an epoch without them (a run resumed across versions)
    figures.plot_learning_curves(with_columns, columns)
    (w2, h2), (w3, h3) = _open_png(plain), _open_png(columns)
    assert h2 == h3 and w3 == pytest.approx(1.5 * w2, rel=0.02)  # a third panel as wide


def test_learning_curves_refuse_empty_history(tmp_path):
    with pytest.raises(ValueError, match="no history"):
        figures.plot_learning_curves([], tmp_path / "c.png")
    with pytest.raises(ValueError, match="epoch"):
        figures.plot_learning_curves([{"train_loss": 1.0}], tmp_path / "c.png")
    assert not (tmp_path / "c.png").exists()


def test_accuracy_bars_png(tmp_path):
    paper = pd.read_csv(PAPER_CSV)
    metrics = {
        "overall": 61.0,
        "columns": dict(zip(clevr.QUESTION_TYPES, [40.0, 75.0, 55.0, 62.0, None], strict=True)),
        "prior": {"overall": 30.0, "columns": dict.fromkeys(clevr.QUESTION_TYPES, 40.0)},
    }
    out = tmp_path / "bars.png"
    figures.plot_accuracy_bars(metrics, paper, out, label="mini-CLEVR / val (profile mini)")
    _open_png(out)
    again = tmp_path / "bars2.png"
    figures.plot_accuracy_bars(metrics, paper, again, label="mini-CLEVR / val (profile mini)")
    assert out.read_bytes() == again.read_bytes()


def test_variant_curves_draw_seeds_of_unequal_length_and_refuse_no_runs(tmp_path):
    histories = {
        "shards, ones": [HISTORY, HISTORY[:2]],  # a seed that stopped early: the mean is over 2
        "official, ones": [[{**row, "val_accuracy": 0.6} for row in HISTORY]],
        "shards, uniform": [],  # not trained yet: drawn as nothing
    }
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    figures.plot_variant_curves(histories, first, title="demo")
    figures.plot_variant_curves(histories, second, title="demo")
    _open_png(first)
    assert first.read_bytes() == second.read_bytes()
    with pytest.raises(ValueError, match="no runs"):
        figures.plot_variant_curves({"shards, ones": []}, tmp_path / "c.png", title="none")
    assert not (tmp_path / "c.png").exists()
