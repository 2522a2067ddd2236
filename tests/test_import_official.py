"""filmclevr-import-official: a checkpoint of the official FiLM code, in this project's format.

The official checkpoints are built here in the layout of the official `scripts/train_model.py`
(argument dicts, state dicts, vocabulary, command line and statistics), from the official code's
own weights in `tests/data/official_golden/`, and written as PyTorch before 1.6 wrote them (the
legacy, non-zip serialization).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from filmclevr import ask, clevr, evaluate, official, submission
from filmclevr.fileio import read_json
from filmclevr.tokenize import load_vocab
from tests.helpers import write_random_images, write_tokens_and_shards
from tests.test_official_golden import EVAL_ULPS, golden, golden_eval, official_eval, rounding_units

# The clevr-iep vocabulary of CLEVR's train questions, as the official code's vocab.json: the
# golden ids' question and answer tables and the 44 program tokens (decoder_vocab_size).
CLEVR_VOCAB = Path(__file__).resolve().parent / "data" / "clevr_genuine" / "vocab.json"
INF = float("inf")


def official_checkpoint() -> dict[str, Any]:
    """A checkpoint as the official train_model.py saves it, holding the golden weights."""
    g = golden()
    vocab = json.loads(CLEVR_VOCAB.read_text())
    for kind in ("question", "program", "answer"):  # vr/utils.load_vocab adds the inverses
        vocab[f"{kind}_idx_to_token"] = {i: t for t, i in vocab[f"{kind}_token_to_idx"].items()}
    kwargs = g["json"]["official_kwargs"]
    network_kwargs = {
        **kwargs["filmed_net"],
        "vocab": vocab,
        "feature_dim": tuple(kwargs["filmed_net"]["feature_dim"]),  # parse_int_list: tuples
        "classifier_fc_layers": tuple(kwargs["filmed_net"]["classifier_fc_layers"]),
        "condition_pattern": tuple(kwargs["filmed_net"]["condition_pattern"]),
        "debug_every": INF,
        "print_verbose_every": INF,
    }
    return {
        "args": {
            "model_type": "FiLM",
            "feature_dim": "3,64,64",
            "batch_size": 64,
            "learning_rate": 3e-4,
            "weight_decay": 1e-5,
            "debug_every": INF,
            "num_val_samples": None,
        },
        "program_generator_kwargs": {**kwargs["film_gen"], "debug_every": INF},
        "program_generator_state": dict(g["state"]["film_gen"]),
        "execution_engine_kwargs": network_kwargs,
        "execution_engine_state": dict(g["state"]["filmed_net"]),
        "baseline_kwargs": None,
        "baseline_state": None,
        "baseline_type": None,
        "vocab": vocab,
        "train_losses": [3.47, 3.12],
        "train_losses_ts": [1, 2],
        "train_rewards": [],
        "train_accs": [0.25],
        "val_accs": [0.5],
        "val_accs_ts": [2],
        "best_val_acc": 0.5,
        "model_t": 2,
    }


def write_official(path: Path, checkpoint: dict[str, Any], location: str | None = None) -> Path:
    """`checkpoint` saved as the official code saved it; with `location` (e.g. "cuda:0"), every
    tensor tagged as stored there, as a checkpoint saved from a GPU is."""
    if location is None:
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
        return path
    _TAG_LOCATION.append(location)
    try:
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    finally:
        _TAG_LOCATION.pop()
    return path


# torch.save asks its registered taggers where each storage lives; this one, registered once,
# answers only while write_official asks it to (otherwise the CPU's own tagger answers).
_TAG_LOCATION: list[str] = []
torch.serialization.register_package(
    0,
    lambda storage: _TAG_LOCATION[-1] if _TAG_LOCATION else None,
    lambda storage, location: None,
)


def convert(tmp_path: Path, checkpoint: dict[str, Any], capsys) -> tuple[int, str]:
    """Run the command line on `checkpoint`; (exit status, its one line of output or error)."""
    source = write_official(tmp_path / "official.pt", checkpoint)
    status = official.main([str(source), str(tmp_path / "ours.pt")])
    out, err = capsys.readouterr()
    return status, (out + err).strip()


def golden_logits_of(path: Path) -> torch.Tensor:
    """The logits of the checkpoint at `path`, loaded as filmclevr-ask loads a model."""
    model, _ = ask.load(path)
    inputs = golden()["inputs"]
    with torch.no_grad():
        return model(inputs["images_uint8"], inputs["questions"], inputs["lengths"])


def test_the_vocabulary_is_the_golden_ids():
    vocab, ids = json.loads(CLEVR_VOCAB.read_text()), golden()["json"]["vocab"]
    for table in ("question_token_to_idx", "answer_token_to_idx"):
        assert vocab[table] == ids[table]
    program_tokens = golden()["json"]["official_kwargs"]["film_gen"]["decoder_vocab_size"]
    assert len(vocab["program_token_to_idx"]) == program_tokens


def test_an_official_checkpoint_converts_and_answers_as_the_official_model(tmp_path, capsys):
    status, output = convert(tmp_path, official_checkpoint(), capsys)
    assert status == 0, output
    assert "ours.pt: the official FiLM model of" in output and "4 ResBlocks of 16" in output
    logits = golden_logits_of(tmp_path / "ours.pt")
    # Bit for bit the official computation on this CPU, and so the golden file's logits
    # themselves wherever this CPU reproduces them (tests/test_official_golden.py).
    assert torch.equal(logits, official_eval()["logits"])
    assert rounding_units(logits, golden_eval()["logits"]) <= EVAL_ULPS

    _, checkpoint = ask.load(tmp_path / "ours.pt")
    assert checkpoint["official"]["sha256"] and checkpoint["step"] == 2
    assert checkpoint["model_config"]["image_size"] == 64
    questions = [q["text"] for q in golden()["json"]["questions"]]
    encoded = ask.encode(questions, checkpoint["vocab"]["question_token_to_idx"])
    inputs = golden()["inputs"]
    assert torch.equal(encoded.lengths, inputs["lengths"])
    width = encoded.indices.shape[1]
    assert torch.equal(encoded.indices, inputs["questions"][:, :width])
    assert not inputs["questions"][:, width:].any()


def test_state_dicts_of_pytorch_before_0_4_1_convert(tmp_path, capsys):
    """The official code was written for PyTorch 0.3, whose BatchNorm kept no batch counter."""
    checkpoint = official_checkpoint()
    for key in ("program_generator_state", "execution_engine_state"):
        state = checkpoint[key]
        checkpoint[key] = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    status, output = convert(tmp_path, checkpoint, capsys)
    assert status == 0, output
    assert torch.equal(golden_logits_of(tmp_path / "ours.pt"), official_eval()["logits"])


def test_each_conversion_has_a_fingerprint_of_its_weights(tmp_path, capsys):
    """A fine-tuning run knows its start by the checkpoint's fingerprint: two official runs
    stopped at the same iteration (model_t) must not look alike."""
    first, again = official_checkpoint(), official_checkpoint()
    other = official_checkpoint()
    state = other["execution_engine_state"]
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 0.01
    fingerprints = []
    for k, checkpoint in enumerate((first, again, other)):
        source = write_official(tmp_path / f"official{k}.pt", checkpoint)
        assert official.main([str(source), str(tmp_path / f"ours{k}.pt")]) == 0, capsys
        _, converted = ask.load(tmp_path / f"ours{k}.pt")
        assert converted["step"] == 2
        fingerprints.append(converted["fingerprint"])
    assert fingerprints[0].startswith("weights:") and len(fingerprints[0]) == 8 + 64
    assert fingerprints[0] == fingerprints[1] != fingerprints[2]


def test_vocab_out_writes_a_vocab_json_for_tokenize_questions(tmp_path):
    source = write_official(tmp_path / "official.pt", official_checkpoint())
    vocab_json = tmp_path / "vocab.json"
    argv = [str(source), str(tmp_path / "ours.pt"), "--vocab-out", str(vocab_json)]
    assert official.main(argv) == 0
    assert load_vocab(vocab_json) == load_vocab(CLEVR_VOCAB)


def test_no_output_overwrites_an_input_or_the_other_output(tmp_path, capsys):
    source = write_official(tmp_path / "official.pt", official_checkpoint())
    original = source.read_bytes()
    ours = tmp_path / "ours.pt"
    refused = {
        "official checkpoint it reads": [str(source), str(source)],
        f"--vocab-out {ours}: would overwrite the checkpoint {ours}": [
            str(source),
            str(ours),
            "--vocab-out",
            str(ours),
        ],
        "would overwrite the official checkpoint": [
            str(source),
            str(ours),
            "--vocab-out",
            str(tmp_path / "." / "official.pt"),  # the same file, spelled otherwise
        ],
        f"--vocab-out {tmp_path / 'ours.json'}: would overwrite the checkpoint's record": [
            str(source),
            str(ours),
            "--vocab-out",
            str(tmp_path / "ours.json"),
        ],
    }
    for message, argv in refused.items():
        assert official.main(argv) == 1
        assert message in capsys.readouterr().err
        assert source.read_bytes() == original
        assert not ours.exists()  # refused before converting
    assert official.main([str(source), str(tmp_path / "ours.json")]) == 1  # record == checkpoint
    assert "ours.json: the checkpoint's record would be written over it" in capsys.readouterr().err
    assert not (tmp_path / "ours.json").exists()
    # The record goes beside the checkpoint with .json: never over an official file so named.
    named_json = write_official(tmp_path / "run.json", official_checkpoint())
    assert official.main([str(named_json), str(tmp_path / "run.pt")]) == 1
    assert f"{tmp_path / 'run.json'}: would overwrite the official checkpoint" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "run.pt").exists()


@pytest.mark.parametrize(
    "where, option, value",
    [
        ("execution_engine_kwargs", "feature_dim", (1024, 14, 14)),  # FiLM on ResNet features
        ("execution_engine_kwargs", "condition_method", "concat"),
        ("execution_engine_kwargs", "use_coords", 2),
        ("execution_engine_kwargs", "module_batchnorm_affine", True),
        ("execution_engine_kwargs", "classifier_downsample", "maxpool2"),
        ("execution_engine_kwargs", "module_dropout", 0.1),  # classifier_dropout stays 0
        ("execution_engine_kwargs", "film_layers", 2),  # an option this converter does not know
        ("program_generator_kwargs", "encoder_type", "lstm"),
        ("program_generator_kwargs", "gamma_baseline", 0.0),
        ("program_generator_kwargs", "parameter_efficient", False),
        ("args", "model_type", "PG+EE"),
    ],
)
def test_a_configuration_outside_film_pixels_is_refused_naming_the_option(
    tmp_path, capsys, where, option, value
):
    checkpoint = official_checkpoint()
    checkpoint[where] = {**checkpoint[where], option: value}
    status, output = convert(tmp_path, checkpoint, capsys)
    assert status == 1
    assert output.startswith(f"error: {tmp_path / 'official.pt'}: {where}[{option!r}]"), output
    assert "film_pixels" in output
    assert not (tmp_path / "ours.pt").exists()


def test_weights_that_do_not_fit_the_configuration_are_refused(tmp_path, capsys):
    checkpoint = official_checkpoint()
    state = dict(checkpoint["execution_engine_state"])
    state["classifier.8.weight"] = state["classifier.8.weight"][:31]
    checkpoint["execution_engine_state"] = state
    status, output = convert(tmp_path, checkpoint, capsys)
    assert status == 1
    assert "FiLMedNet 'classifier.8.weight' is (31, 64), but its configuration gives (32, 64)" in (
        output
    )


def test_a_damaged_file_gives_a_clear_error_naming_it(tmp_path, capsys):
    whole = write_official(tmp_path / "whole.pt", official_checkpoint()).read_bytes()
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(whole[: len(whole) // 2])
    assert official.main([str(damaged), str(tmp_path / "ours.pt")]) == 1
    message = capsys.readouterr().err.strip()
    assert message.startswith(f"error: {damaged}: not a readable checkpoint, damaged or truncated")
    assert "\n" not in message

    assert official.main([str(tmp_path / "missing.pt"), str(tmp_path / "ours.pt")]) == 1
    assert "missing.pt: official checkpoint not found" in capsys.readouterr().err

    ours = tmp_path / "not_official.pt"
    torch.save({"model": {}}, ours)
    assert official.main([str(ours), str(tmp_path / "ours.pt")]) == 1
    err = capsys.readouterr().err
    assert "not_official.pt: not a checkpoint of the official FiLM code (no program_" in err


class _RunsCodeWhenUnpickled:
    """What an unsafe load would do: create a folder (any call could be made instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_objects_are_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    checkpoint = official_checkpoint()
    checkpoint["args"] = {**checkpoint["args"], "hook": _RunsCodeWhenUnpickled(marker)}
    status, output = convert(tmp_path, checkpoint, capsys)
    assert status == 1 and not marker.exists()
    assert "holds an object of type posix.mkdir besides tensors and plain data" in output
    assert "weights_only=False" in output  # what the user can do with a file they trust

    checkpoint = official_checkpoint()
    checkpoint["best_val_acc"] = np.float64(0.5)  # numpy scalars are objects too
    status, output = convert(tmp_path, checkpoint, capsys)
    assert status == 1 and "holds an object of type numpy" in output


def test_the_stages_take_a_converted_checkpoint_as_one_of_ours(tmp_path, capsys):
    """evaluate_model (its metrics, and the official run's validation checks from the record
    beside the paper's curve) and submit_test, as their stages call them, on tiny data encoded
    with the model's own vocabulary."""
    status, output = convert(tmp_path, official_checkpoint(), capsys)
    assert status == 0, output
    ours = tmp_path / "ours.pt"
    assert f"its record: {official.record_path(ours)}" in output
    _, checkpoint = ask.load(ours)
    data = tmp_path / "data"
    (data / "tokens").mkdir(parents=True)
    (data / "tokens" / "vocab.json").write_text(json.dumps(checkpoint["vocab"]))
    answers = [checkpoint["vocab"]["answer_token_to_idx"][a] for a in clevr.ANSWERS]
    types = list(clevr.QUESTION_TYPES)
    rng = np.random.default_rng(0)
    questions: dict[str, list[dict[str, Any]]] = {}
    image_size = checkpoint["model_config"]["image_size"]
    for split, n_images in {"train": 4, "val": 3, "test": 2}.items():
        records = questions[split] = []
        for i, name, _ in write_random_images(data, split, n_images, image_size, rng):
            for _ in range(3):
                kind = types[int(rng.integers(len(types)))]
                words = rng.integers(4, checkpoint["vocab_size"], int(rng.integers(3, 9)))
                records.append(
                    {
                        "question_index": len(records),
                        "image_index": i,
                        "image_filename": name,
                        "tokens": [1, *words.tolist(), 2],
                        "answer": answers[int(rng.integers(len(answers)))],
                        "type": kind,
                        "function": clevr.QUESTION_TYPES[kind][0],
                        "family": 0,
                    }
                )
    shards_dir = write_tokens_and_shards(data, questions, images_per_shard=4)

    result = evaluate.evaluate(
        ours, shards_dir, data / "tokens", split="val", batch_size=4, device="cpu",
        profile="official", source="mini", predictions_dir=tmp_path / "predictions",
    )  # fmt: skip
    assert result.metrics["counts"]["overall"] == 9
    beside = evaluate.write_learning_curve(
        read_json(official.record_path(ours)),
        prior=result.prior["overall"],
        context=result.context,
        out_csv=tmp_path / "curve.csv",
        out_png=tmp_path / "curve.png",
    )
    assert beside  # the official run started from the paper's init: beside the paper's curve
    curve = (tmp_path / "curve.csv").read_text().splitlines()
    header, row = (
        curve[0].split(","),
        dict(zip(curve[0].split(","), curve[1].split(","), strict=True)),
    )
    assert len(curve) == 2 and "questions_seen" in header
    assert (int(row["questions_seen"]), float(row["val_accuracy"])) == (2 * 64, 50.0)

    manifest = submission.write_submission(
        ours, shards_dir, data / "tokens", tmp_path / "submission",
        batch_size=4, profile="official", source="mini", device="cpu",
    )  # fmt: skip
    lines = (tmp_path / "submission" / submission.answers_file("test")).read_text().splitlines()
    assert len(lines) == 6 and set(lines) <= set(clevr.ANSWERS)
    assert manifest["model"]["fingerprint"] == checkpoint["fingerprint"]


def test_options_the_golden_files_do_not_check_convert_with_a_warning(tmp_path, capsys, caplog):
    def with_pattern(pattern: tuple[int, ...]) -> dict[str, Any]:
        checkpoint = official_checkpoint()
        network = checkpoint["execution_engine_kwargs"]
        checkpoint["execution_engine_kwargs"] = {**network, "condition_pattern": pattern}
        return checkpoint

    restricted = official_checkpoint()  # gamma = sigmoid(delta gamma), as in the paper's Table 2
    generator = restricted["program_generator_kwargs"]
    restricted["program_generator_kwargs"] = {
        **generator, "gamma_option": "sigmoid", "gamma_baseline": 0
    }  # fmt: skip
    status, output = convert(tmp_path, restricted, capsys)
    assert status == 0, output
    unverified = {"gamma_option": "sigmoid"}
    assert ask.load(tmp_path / "ours.pt")[1]["official"]["unverified_options"] == unverified
    record = read_json(official.record_path(tmp_path / "ours.pt"))
    assert record["official"]["unverified_options"] == unverified
    assert "gamma_option='sigmoid': the official code's own outputs check none" in caplog.text

    caplog.clear()  # FiLM in every block, however it is spelled, is what the golden files check
    for checked in (with_pattern((1, 1, 1, 1)), official_checkpoint()):
        status, output = convert(tmp_path, checked, capsys)
        assert status == 0, output
        assert ask.load(tmp_path / "ours.pt")[1]["official"]["unverified_options"] == {}
    assert "check none" not in caplog.text


def test_a_checkpoint_saved_from_a_gpu_converts_on_a_cpu(tmp_path, capsys):
    """The official code trained on GPUs: its tensors are tagged cuda:0 in the file."""
    source = write_official(tmp_path / "official.pt", official_checkpoint(), location="cuda:0")
    assert b"cuda:0" in source.read_bytes()
    assert official.main([str(source), str(tmp_path / "ours.pt")]) == 0, capsys.readouterr().err
    assert torch.equal(golden_logits_of(tmp_path / "ours.pt"), official_eval()["logits"])


def test_official_statistics_that_do_not_line_up_give_no_history():
    stats = {"val_accs": [0.5, 0.6], "val_accs_ts": [100, 200], "train_accs": [0.4, 0.7]}
    assert official.official_history(stats, 64) == [
        {"epoch": None, "step": 100, "questions_seen": 6400, "val_accuracy": 0.5,
         "train_accuracy": 0.4},
        {"epoch": None, "step": 200, "questions_seen": 12800, "val_accuracy": 0.6,
         "train_accuracy": 0.7},
    ]  # fmt: skip
    assert official.official_history({**stats, "train_accs": [0.4]}, 64) == []
    assert official.official_history({**stats, "val_accs": [None, "n/a"]}, 64) == []
    assert official.official_history({}, 64) == []
