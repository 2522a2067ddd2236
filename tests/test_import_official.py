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

from filmclevr import ask, official
from filmclevr.tokenize import load_vocab
from tests.test_official_golden import ULPS, golden, golden_eval, official_eval, rounding_units

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


def write_official(path: Path, checkpoint: dict[str, Any]) -> Path:
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return path


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
    assert rounding_units(logits, golden_eval()["logits"]) <= ULPS

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
    }
    for message, argv in refused.items():
        assert official.main(argv) == 1
        assert message in capsys.readouterr().err
        assert source.read_bytes() == original
        assert not ours.exists()  # refused before converting


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
