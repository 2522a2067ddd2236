"""The gate-tolerance study, restarted on kept runs: it trains nothing, and what it prints and
writes (--summary) is the spread, the implied tolerance and each gate's verdict."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from filmclevr.params import GATE_METRICS, load_params
from filmclevr.scored_runs import KeptRuns, numeric_path
from studies.gate_tolerances import seeds as study

ROOT = Path(__file__).resolve().parents[1]
COUNTS = {"overall": 1000, "count": 250, "exist": 150, "compare_numbers": 100,
          "query_attribute": 350, "compare_attribute": 150}  # fmt: skip


def _run(overall: float, shift: float = 0.0) -> dict:
    columns = {name: 50.0 + shift for name in GATE_METRICS if name != "overall"}
    return {
        "overall": overall,
        "columns": columns,
        "counts": {
            "overall": COUNTS["overall"],
            "columns": {k: v for k, v in COUNTS.items() if k != "overall"},
        },  # fmt: skip
        "context": {"dataset": "mini-CLEVR", "split": "val", "profile": "mini"},
        "history": [],
        "seconds": 1.0,
    }


def _data(tmp_path: Path) -> Path:
    """A data folder as the data stages leave it, as far as the kept runs' digest reads it."""
    data = tmp_path / "data"
    (data / "shards" / "val").mkdir(parents=True, exist_ok=True)
    (data / "tokens").mkdir(exist_ok=True)
    (data / "shards" / "index.json").write_text('{"val": {}}')
    (data / "shards" / "val" / "val-000000.tar").write_bytes(b"shard")
    (data / "tokens" / "vocab.json").write_text("{}")
    return data


def _kept_file(tmp_path: Path, params: dict, seeds: dict[int, dict], broken: list) -> Path:
    """A --json file holding every run the study asks for, as an earlier start left it."""
    kept = KeptRuns(tmp_path / "runs.json", params, numeric_path(params), _data(tmp_path))
    for seed, run in seeds.items():
        kept.add(KeptRuns.key(params, train={"seed": seed}), run)
    first = min(seeds)
    for model, breakage, run in broken:
        kept.add(KeptRuns.key(params, model=model, train={"seed": first}, breakage=breakage), run)
    return kept.path


def _params(tmp_path: Path) -> tuple[dict, Path]:
    """The demo's parameters with one tolerance for every metric and precision, as a file."""
    params = load_params(ROOT / "params.yaml")
    params["regression"]["tolerance"] = 2.0
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    return params, params_file


def _study_without_training(
    tmp_path, monkeypatch, params_file, kept, *args, baseline: float = 50.0
) -> dict:
    """The study on kept runs alone (training fails the test), against a baseline folder of
    one precision (`baseline` overall and in every column); its --summary."""

    def no_training(*args, **kwargs):
        raise AssertionError("a run the kept file lacks was trained")

    monkeypatch.setattr("filmclevr.scored_runs.train_and_score", no_training)
    baselines = tmp_path / "baseline"
    (baselines / "bf16").mkdir(parents=True)
    (baselines / "bf16" / "metrics.json").write_text(
        json.dumps(_run(baseline, shift=baseline - 50.0))
    )
    summary_path = tmp_path / "summary.json"
    study.main(["--params", str(params_file), "--data", str(_data(tmp_path)), "--json", str(kept),
                "--summary", str(summary_path), "--baseline", str(baselines), *args])  # fmt: skip
    return json.loads(summary_path.read_text())


def test_each_seed_is_given_once(tmp_path, capsys):
    """Seeds 0 0 1 trained two runs and counted three: a narrower spread, tighter tolerances."""
    _, params_file = _params(tmp_path)
    with pytest.raises(SystemExit):
        study.main(["--params", str(params_file), "--seeds", "0", "0", "1"])
    assert "--seeds: each seed once, not [0, 0, 1]" in capsys.readouterr().err


def test_a_restart_on_kept_runs_trains_nothing_and_summarises_them(tmp_path, capsys, monkeypatch):
    params, params_file = _params(tmp_path)
    seed_overall = {0: 50.0, 1: 50.4, 2: 49.8}
    seeds = {s: _run(v, shift=v - 50.0) for s, v in seed_overall.items()}
    broken = [  # (model change, breakage, run)
        (study.ABLATIONS["no_film_blocks1_4"], None, _run(20.0, shift=-30)),
        (None, "blank_images", _run(40.0, shift=-10)),
        (None, "shuffled_questions", _run(42.0, shift=-8)),
    ]
    kept = _kept_file(tmp_path, params, seeds, broken)
    summary = _study_without_training(
        tmp_path, monkeypatch, params_file, kept, "--seeds", "0", "1", "2"
    )

    assert summary["seeds"] == [0, 1, 2]
    assert summary["runs"]["seed 1"]["overall"] == 50.4
    overall = summary["spread"]["overall"]
    values = list(seed_overall.values())
    assert overall["mean"] == pytest.approx(statistics.mean(values))
    assert overall["sigma"] == pytest.approx(statistics.stdev(values))
    assert overall["range"] == pytest.approx(0.6)
    binomial = 100 * math.sqrt(0.5007 * 0.4993 / 1000)
    assert overall["binomial_error"] == pytest.approx(binomial, rel=1e-3)
    # 3 binomial errors (4.74) outweigh 3 x sqrt(2) x sigma (1.30); rounded up to half a point
    assert summary["implied_tolerance"]["overall"] == 5.0
    verdicts = summary["gate"]["implied_tolerance"]["runs"]
    assert {name: v["gate"] for name, v in verdicts.items()} == {
        "seed 1": "pass", "seed 2": "pass",
        "no FiLM": "fail", "blank images": "fail", "shuffled questions": "fail",
    }  # fmt: skip
    assert all(v["gate"] == v["expected"] for v in verdicts.values())
    at_profile = summary["gate"]["profile_tolerance"]
    assert at_profile["tolerance"] == 2.0
    assert at_profile["runs"]["seed 2"]["gate"] == "pass"  # 0.2 below seed 0, and columns 0.2
    assert at_profile["runs"]["blank images"]["failures"]
    # CI's gate: every run against the committed baseline (50.0), at the profile's tolerance.
    against_baseline = summary["gate"]["baseline"]
    assert against_baseline["file"].endswith("metrics.json")
    assert {name: v["gate"] for name, v in against_baseline["runs"].items()} == {
        "seed 0": "pass", "seed 1": "pass", "seed 2": "pass",
        "no FiLM": "fail", "blank images": "fail", "shuffled questions": "fail",
    }  # fmt: skip
    printed = capsys.readouterr().out
    assert "NOT AS IT MUST BE" not in printed
    assert "implied regression.tolerance." in printed


def test_a_seed_the_baseline_gate_would_fail_is_marked(tmp_path, capsys, monkeypatch):
    """A baseline above the seeds' spread: CI would fail a sound run, and the study says so."""
    params, params_file = _params(tmp_path)
    seeds = {s: _run(v, shift=v - 50.0) for s, v in {0: 50.0, 1: 50.4, 2: 49.8}.items()}
    kept = _kept_file(tmp_path, params, seeds, [])
    summary = _study_without_training(
        tmp_path, monkeypatch, params_file, kept, "--seeds", "0", "1", "2", "--no-breakages",
        baseline=52.1,
    )  # fmt: skip
    verdicts = summary["gate"]["baseline"]["runs"]
    assert {name: v["gate"] for name, v in verdicts.items()} == {
        "seed 0": "fail",
        "seed 1": "pass",
        "seed 2": "fail",
    }
    assert "NOT AS IT MUST BE" in capsys.readouterr().out


def test_without_breakages_only_the_seeds_are_asked_for(tmp_path, monkeypatch):
    params, params_file = _params(tmp_path)
    kept = _kept_file(tmp_path, params, {s: _run(50.0 + s / 10) for s in (1, 2, 3)}, [])
    summary = _study_without_training(
        tmp_path, monkeypatch, params_file, kept, "--seeds", "1", "2", "3", "--no-breakages"
    )
    assert list(summary["runs"]) == ["seed 1", "seed 2", "seed 3"]
    assert set(summary["gate"]["implied_tolerance"]["runs"]) == {"seed 2", "seed 3"}


def test_the_default_profile_holds_float32_runs_to_its_committed_measurement():
    """config/demo.yaml's float32 tolerance is the one the committed summary gated its runs at,
    no metric's is below what the summary's seeds imply, and at it every kept run's verdict is
    the one it must be: a new seed or breakage that changes the rule's answer fails here until
    the profile and the summary are brought up to date together."""
    summary = json.loads((ROOT / "results/reference/gate-tolerances/float32.json").read_text())
    written = load_params(ROOT / "config/demo.yaml")["regression"]["tolerance"]["float32"]
    assert summary["precision"] == "float32"
    assert summary["gate"]["profile_tolerance"]["tolerance"] == written
    for name in GATE_METRICS:
        assert written[name] >= summary["implied_tolerance"][name], name
    for gate in ("profile_tolerance", "baseline"):
        verdicts = summary["gate"][gate]["runs"]
        assert verdicts, gate
        assert {run: v["gate"] for run, v in verdicts.items()} == {
            run: v["expected"] for run, v in verdicts.items()
        }, gate
