"""The parameter-count command reports the model's real per-part counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filmclevr import count_params
from filmclevr.model import FiLMConfig, FiLMedNet, count_parameters

ROOT = Path(__file__).resolve().parents[1]


def test_paper_profile_counts_match_the_model(capsys):
    assert (
        count_params.main(["--params", str(ROOT / "config/paper.yaml"), "--question-tokens", "93"])
        == 0
    )
    out = capsys.readouterr().out
    expected = count_parameters(FiLMedNet(FiLMConfig(), 93, 32))
    for part, n in expected.items():
        assert f"{part}" in out and f"{n:,}" in out
    assert "2,079,776" in out  # the FiLMed network of SPEC §3 with 32 answers


def test_vocab_file_gives_the_sizes(tmp_path, capsys):
    specials = ["<NULL>", "<START>", "<END>", "<UNK>"]

    def table(n):
        return {token: i for i, token in enumerate(specials + [f"t{i}" for i in range(n - 4)])}

    vocab = tmp_path / "vocab.json"
    vocab.write_text(
        json.dumps(
            {
                "question_token_to_idx": table(10),
                "program_token_to_idx": table(5),
                "answer_token_to_idx": table(7),
            }
        )
    )
    assert (
        count_params.main(["--params", str(ROOT / "config/demo.yaml"), "--vocab", str(vocab)]) == 0
    )
    assert "question vocabulary 10, answers 7" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"answer_token_to_idx": {}}', "'question_token_to_idx' missing"),
        ("[1, 2]", "expected a JSON object with keys"),
        (None, "file not found"),  # no file at all
    ],
)
def test_bad_vocab_file_is_named(tmp_path, capsys, content, message):
    bad = tmp_path / "my_vocab.json"
    if content is not None:
        bad.write_text(content)
    assert count_params.main(["--params", str(ROOT / "config/demo.yaml"), "--vocab", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: {message}")
