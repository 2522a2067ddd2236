"""The data-order study, restarted on kept runs: it trains nothing, and its --summary holds each
variant's mean and spread over seeds and its difference from the defaults with a standard error."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from filmclevr import clevr
from filmclevr.params import load_params
from filmclevr.scored_runs import KeptRuns, numeric_path
from studies.data_order import compare as study
from tests.test_study_gate_tolerances import _data, _params, _run

ROOT = Path(__file__).resolve().parents[1]


def _scored(overall: float, first_epoch: float) -> dict:
    run = _run(overall, shift=overall - 50.0)
    run["history"] = [{"epoch": 1, "val_accuracy": first_epoch / 100}]
    return run


def test_a_restart_on_kept_runs_trains_nothing_and_summarises_the_variants(
    tmp_path, monkeypatch, capsys
):
    params, params_file = _params(tmp_path)
    data = _data(tmp_path)
    overall = {"shards, ones": [50.0, 51.0, 49.0], "official, ones": [52.0, 53.0, 54.0]}
    kept = KeptRuns(tmp_path / "runs.json", params, numeric_path(params), data)
    for name, values in overall.items():
        train, model = study.VARIANTS[name]
        for seed, value in enumerate(values):
            key = KeptRuns.key(params, model=model, train={**train, "seed": seed})
            kept.add(key, _scored(value, first_epoch=value - 10))

    def no_training(*args, **kwargs):
        raise AssertionError("a run the kept file lacks was trained")

    monkeypatch.setattr("filmclevr.scored_runs.train_and_score", no_training)
    summary_path = tmp_path / "summary.json"
    study.main(["--params", str(params_file), "--data", str(data), "--json", str(kept.path),
                "--seeds", "0", "1", "2", "--only", *overall,
                "--summary", str(summary_path),
                "--plot", str(tmp_path / "curves.png")])  # fmt: skip
    summary = json.loads(summary_path.read_text())

    assert summary["compared_with"] == "shards, ones"
    assert summary["seeds"] == [0, 1, 2]
    assert set(summary["variants"]) == set(overall)  # the file sorts its keys
    assert set(summary["variants"]["official, ones"]) == set(study.METRICS)
    default = summary["variants"]["shards, ones"]["overall"]
    assert default == {"seeds": 3, "mean": 50.0, "std": pytest.approx(1.0)}
    official = summary["variants"]["official, ones"]["overall"]
    assert official["mean"] == pytest.approx(53.0)
    assert official["difference"] == pytest.approx(3.0)
    assert official["standard_error"] == pytest.approx(math.sqrt(1 / 3 + 1 / 3))
    first_epoch = summary["variants"]["official, ones"]["first epoch"]
    assert first_epoch["difference"] == pytest.approx(3.0)
    column = next(iter(clevr.QUESTION_TYPES))
    assert summary["variants"]["official, ones"][column]["mean"] == pytest.approx(53.0)
    assert summary["runs"]["official, ones"]["seed 2"]["overall"] == 54.0
    assert statistics.mean(r["overall"] for r in summary["runs"]["shards, ones"].values()) == 50
    assert "+3.00" in capsys.readouterr().out
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_one_seed_a_variant_gives_a_difference_with_no_error_claimed():
    table = study.compare(
        {
            "shards, ones": [dict.fromkeys(study.METRICS, 50.0)],
            "official, ones": [dict.fromkeys(study.METRICS, 52.0)],
        }
    )
    assert table["shards, ones"]["overall"] == {"seeds": 1, "mean": 50.0, "std": None}
    official = table["official, ones"]["overall"]
    assert official["difference"] == 2.0 and official["standard_error"] is None


def test_each_seed_and_variant_is_given_once(tmp_path, capsys):
    _, params_file = _params(tmp_path)
    with pytest.raises(SystemExit):
        study.main(["--params", str(params_file), "--only", "shards, ones", "shards, ones"])
    assert "--only: each once" in capsys.readouterr().err


def test_the_variants_differ_from_the_defaults_in_what_they_name_only():
    """Each variant is the demo with its data order and BatchNorm start, nothing else: their
    kept runs are four distinct runs, and the defaults' is the plain profile's run."""
    params = load_params(ROOT / "params.yaml")
    keys = {
        name: KeptRuns.key(params, model=model, train={**train, "seed": 0})
        for name, (train, model) in study.VARIANTS.items()
    }
    assert len(set(keys.values())) == len(study.VARIANTS)
    assert keys["shards, ones"] == KeptRuns.key(params, train={"seed": 0})
