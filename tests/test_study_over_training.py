"""Tests of studies.genuine_clevr.over_training: a run's checkpoints through the sim-to-real
harness, one row each, kept by digest. Genuine images: tests/data/clevr_genuine/ (CLEVR, Johnson
et al. 2017, CC BY 4.0). Models: tiny, randomly initialised (the harness is tested, not them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from filmclevr import sim_to_real
from filmclevr.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from filmclevr.model import build_model
from studies.genuine_clevr import over_training
from tests.helpers import (
    SIM_TO_REAL_IMAGE_SIZE,
    sim_to_real_params,
    tiny_film_config,
    write_vocab,
)

GENUINE = Path(__file__).parent / "data" / "clevr_genuine"
IMAGE_SIZE = SIM_TO_REAL_IMAGE_SIZE
HARNESS = ["--questions-per-image", "2", "--prior-train-images", "3", "--no-progress"]


def checkpoint(folder: Path, seed: int, history: list[dict], step: int) -> Path:
    """A tiny checkpoint whose vocabulary knows every word the harness may ask (CLEVR's)."""
    words = json.loads((GENUINE / "vocab.json").read_text())["question_token_to_idx"]
    tokens = folder / f"tokens{seed}"
    vocab = json.loads(
        write_vocab(tokens, sorted(w for w in words if not w.startswith("<"))).read_text()
    )
    torch.manual_seed(seed)
    config = tiny_film_config(image_size=IMAGE_SIZE)
    sizes = len(vocab["question_token_to_idx"]), len(vocab["answer_token_to_idx"])
    path = folder / f"model{seed}.pt"
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "model_config": config.asdict(),
            "vocab": vocab,
            "vocab_size": sizes[0],
            "num_answers": sizes[1],
            "epoch": len(history),
            "step": step,
            "history": history,
            "model": build_model(config, *sizes).state_dict(),
        },
    )
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("over_training")
    at_epoch_end = checkpoint(root, 0, [{"step": 10, "val_accuracy": 0.4321}], step=10)
    mid_epoch = checkpoint(root, 1, [{"step": 10, "val_accuracy": 0.4321}], step=12)
    params = sim_to_real_params(root)
    out = root / "out"
    argv = ["--params", str(params), "--genuine", str(GENUINE), "--out", str(out), *HARNESS]
    status = over_training.main([*argv, f"epoch 1={at_epoch_end}", str(mid_epoch)])
    report = json.loads((out / over_training.OUTPUT_JSON).read_text())
    return {"root": root, "argv": argv, "status": status, "report": report, "out": out,
            "paths": (at_epoch_end, mid_epoch), "params": params}  # fmt: skip


def test_a_row_per_checkpoint_in_order_with_its_label(run):
    assert run["status"] == 0
    rows = run["report"]["rows"]
    assert [r["label"] for r in rows] == ["epoch 1", "model1"]
    assert [r["step"] for r in rows] == [10, 12]
    assert (run["out"] / over_training.OUTPUT_PNG).stat().st_size > 0


def test_the_whole_split_accuracy_only_for_a_checkpoint_written_as_its_epoch_ended(run):
    assert [r["validation_split"] for r in run["report"]["rows"]] == [43.21, None]


def test_each_row_is_the_harness_measurement_of_that_checkpoint(run):
    profile = sim_to_real.profile_from_params(run["params"])
    for path, row in zip(run["paths"], run["report"]["rows"], strict=True):
        report = sim_to_real.measure(
            path, GENUINE, profile, questions_per_image=2, prior_train_images=3, progress=False
        ).report
        genuine, mini = report["sides"]["genuine"], report["sides"]["mini-CLEVR"]
        assert row["genuine"]["overall"] == genuine["model"]["overall"]
        assert row["mini_clevr"]["count"] == mini["model"]["columns"]["count"]
        assert row["prior"]["exist"] == genuine["prior"]["columns"]["exist"]
        assert row["questions"] == genuine["questions"] == 2 * genuine["images"]


def test_a_rerun_measures_only_what_it_lacks_and_relabels(run, monkeypatch, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / over_training.OUTPUT_JSON).write_text(json.dumps(run["report"]))
    measured = []
    original = sim_to_real.measure

    def counting(path, *args, **kwargs):
        measured.append(Path(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(sim_to_real, "measure", counting)
    third = checkpoint(run["root"], 2, [], step=20)
    argv = [*run["argv"][: -len(HARNESS) - 2], "--out", str(out), *HARNESS]
    assert over_training.main([*argv, f"first={run['paths'][0]}", str(third)]) == 0
    rows = json.loads((out / over_training.OUTPUT_JSON).read_text())["rows"]
    assert measured == [third]
    assert [r["label"] for r in rows] == ["first", "model2"]
    assert rows[0]["genuine"] == run["report"]["rows"][0]["genuine"]
    # Other settings: every checkpoint is measured again.
    measured.clear()
    other = [a if a != "2" else "3" for a in argv]
    assert over_training.main([*other, str(third)]) == 0
    assert measured == [third]


def test_a_missing_checkpoint_is_one_line_naming_it(run, tmp_path, capsys):
    argv = [*run["argv"][: -len(HARNESS) - 2], "--out", str(tmp_path), *HARNESS]
    assert over_training.main([*argv, str(tmp_path / "nothing.pt")]) == 1
    assert "nothing.pt" in capsys.readouterr().err
    assert not (tmp_path / over_training.OUTPUT_JSON).exists()


def test_labels():
    assert over_training.parse_checkpoint("a=b=c.pt") == ("a=b", Path("c.pt"))
    assert over_training.parse_checkpoint("dir/last.pt") == ("last", Path("dir/last.pt"))


def test_an_interrupted_run_keeps_what_it_measured(run, monkeypatch, tmp_path):
    original = sim_to_real.measure
    measured = []

    def failing_second(path, *args, **kwargs):
        measured.append(Path(path))
        if len(measured) == 2:
            raise KeyboardInterrupt
        return original(path, *args, **kwargs)

    monkeypatch.setattr(sim_to_real, "measure", failing_second)
    argv = [*run["argv"][: -len(HARNESS) - 2], "--out", str(tmp_path), *HARNESS]
    with pytest.raises(KeyboardInterrupt):
        over_training.main([*argv, *map(str, run["paths"])])
    kept = json.loads((tmp_path / over_training.OUTPUT_JSON).read_text())["rows"]
    assert [row["checkpoint"] for row in kept] == [str(run["paths"][0])]
    measured.clear()
    assert over_training.main([*argv, *map(str, run["paths"])]) == 0
    assert measured == [run["paths"][1]]


def test_an_image_list_narrows_the_genuine_side(run, tmp_path):
    names = sorted(p.name for p in (GENUINE / "images" / "train").glob("*.png"))
    image_list = tmp_path / "images.txt"
    image_list.write_text(f"{names[0]}\n")
    out = tmp_path / "out"
    argv = [*run["argv"][: -len(HARNESS) - 2], "--out", str(out), *HARNESS]
    assert over_training.main([*argv, "--images", str(image_list), str(run["paths"][0])]) == 0
    report = json.loads((out / over_training.OUTPUT_JSON).read_text())
    assert report["settings"]["image_list"] == str(image_list)
    full = run["report"]["rows"][0]["questions"]
    assert report["rows"][0]["questions"] == full // len(names)  # one image of the three
