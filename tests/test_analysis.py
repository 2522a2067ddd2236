"""The paper's analysis (SPEC §6) on tiny models with known weights and known feature maps."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from filmclevr import analysis, clevr
from filmclevr.model import FiLMedNet, build_model
from filmclevr.shards import write_shards
from tests.helpers import (
    permute_question_words,
    tiny_film_config,
    tiny_train_config,
    tiny_trained_run,
)

CONFIG = tiny_film_config(image_size=16, num_blocks=2)


@pytest.fixture
def model() -> FiLMedNet:
    torch.manual_seed(0)
    return build_model(CONFIG, vocab_size=12, num_answers=6).eval()


def batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 16, 16), generator=g, dtype=torch.uint8)
    questions = torch.randint(4, 12, (n, 6), generator=g)
    questions[:, 0], questions[:, -1] = 1, 2
    return images, questions, torch.full((n,), 6)


# --- tracing ------------------------------------------------------------------------------------
def test_trace_is_the_models_own_forward_pass(model: FiLMedNet) -> None:
    images, questions, lengths = batch()
    with torch.inference_mode():
        t = analysis.trace(model, images, questions, lengths)
        expected = model(images, questions, lengths)
        # The classifier map is its 1x1 conv -> BN -> ReLU, recomputed by hand from the blocks.
        features = torch.cat([t.last_block, analysis_coords(t.last_block)], dim=1)
        by_hand = model.filmed_net.classifier[:3](features)
    assert torch.equal(t.logits, expected)
    assert t.gammas.shape == t.betas.shape == (4, 2, CONFIG.module_channels)
    assert torch.allclose(t.classifier_map, by_hand)
    assert t.classifier_map.shape[1] == CONFIG.classifier_proj_dim


def analysis_coords(x: torch.Tensor) -> torch.Tensor:
    from filmclevr.model import coord_map

    return coord_map(x)


# --- 1. where the classifier looks --------------------------------------------------------------
def test_max_location_counts_marks_each_channels_maximum() -> None:
    features = torch.zeros(1, 4, 3, 3)
    features[0, 0, 0, 0] = 5.0  # channel 0 peaks top left
    features[0, 1, 0, 0] = 2.0  # channel 1 too
    features[0, 2, 2, 1] = 1.0  # channel 2 peaks bottom middle
    features[0, 2, 1, 1] = 1.0  # ... and ties in the centre: both marked
    # channel 3 is constant (a dead ReLU): no location
    counts = analysis.max_location_counts(features)
    expected = torch.zeros(1, 3, 3)
    expected[0, 0, 0], expected[0, 2, 1], expected[0, 1, 1] = 2, 1, 1
    assert torch.equal(counts, expected)


def test_overlay_lights_the_region_of_the_maps_peak() -> None:
    grid = torch.zeros(4, 4)
    grid[3, 0] = 7.0  # bottom left
    image = np.full((40, 60, 3), 200, dtype=np.uint8)
    lit = analysis.overlay(image, grid)
    assert lit.shape == image.shape and lit.dtype == np.uint8
    assert lit[-1, 0].mean() > 190 and lit[0, -1].mean() < 40  # peak bright, far corner dark
    up = analysis.upsample(grid, 40, 60)
    assert up.min() == 0.0 and up.max() == pytest.approx(1.0)
    assert np.unravel_index(up.argmax(), up.shape)[0] >= 30  # in the bottom rows


# --- 2. gamma and beta statistics ---------------------------------------------------------------
def test_film_statistics_of_known_values() -> None:
    values = torch.tensor([[-2.0, -0.05], [0.0, 0.09], [3.0, 1.0]])
    stats = analysis.film_statistics(values)
    assert (stats["min"], stats["max"]) == (-2.0, 3.0)
    assert stats["negative_percent"] == pytest.approx(100 * 2 / 6)
    assert stats["near_zero_percent"] == pytest.approx(100 * 3 / 6)  # -0.05, 0, 0.09
    with pytest.raises(ValueError):
        analysis.film_statistics(torch.zeros(0))


def test_paper_statistics_come_from_the_papers_csv() -> None:
    paper = analysis.read_paper_analysis()
    gamma = analysis.paper_statistics(paper, "gamma")
    assert (gamma["min"], gamma["max"], gamma["negative_percent"]) == (-15, 19, 36)
    assert paper["gamma_to_train_mean_drop"] == 65.4 and paper["beta_to_train_mean_drop"] == 1.0


# --- 3. t-SNE -------------------------------------------------------------------------------------
def test_tsne_is_seeded() -> None:
    vectors = np.random.default_rng(0).normal(size=(40, 8))
    a, b = analysis.tsne_embedding(vectors, seed=3), analysis.tsne_embedding(vectors, seed=3)
    assert a.shape == (40, 2) and np.array_equal(a, b)


# --- 4. test-time ablations ---------------------------------------------------------------------
def test_ablations_list_the_papers_figure7() -> None:
    runs = analysis.ablations([0.5, 1.0])
    assert [r.name for r in runs] == [
        "none", "beta_train_mean", "gamma_train_mean",
        "gamma_noise_0.5", "beta_noise_0.5", "gamma_noise_1", "beta_noise_1",
    ]  # fmt: skip


def test_train_mean_replaces_exactly_its_target() -> None:
    gammas, betas = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    means = (torch.full((2, 4), 1.5), torch.full((2, 4), -0.5))
    g = torch.Generator().manual_seed(0)
    gamma_run = analysis.Ablation("gamma_train_mean", "gamma", "train_mean")
    new_g, new_b = analysis.ablate(gammas, betas, gamma_run, means, g)
    assert torch.equal(new_g, torch.full((3, 2, 4), 1.5)) and torch.equal(new_b, betas)
    noise = analysis.Ablation("beta_noise_2", "beta", "noise", 2.0)
    once = analysis.ablate(gammas, betas, noise, means, torch.Generator().manual_seed(1))
    again = analysis.ablate(gammas, betas, noise, means, torch.Generator().manual_seed(1))
    assert torch.equal(once[1], again[1]) and torch.equal(once[0], gammas)
    assert 1.0 < float((once[1] - betas).std()) < 3.0


def test_film_means_remove_the_questions_influence(model: FiLMedNet) -> None:
    """With gamma and beta both at their means, two different questions about one image get
    the same answer; with the question's own FiLM parameters they do not."""
    images, questions, lengths = batch(2)
    images[1] = images[0]
    with torch.inference_mode():
        gammas, betas = analysis.film_parameters(model, questions, lengths)
        own = analysis.answer_with(model, images, gammas, betas)[0]
        means = (gammas.mean(dim=0), betas.mean(dim=0))
        g = torch.Generator()
        both = analysis.Ablation("x", "gamma", "train_mean")
        mg, _ = analysis.ablate(gammas, betas, both, means, g)
        _, mb = analysis.ablate(
            gammas, betas, analysis.Ablation("y", "beta", "train_mean"), means, g
        )
        at_means = analysis.answer_with(model, images, mg, mb)[0]
    assert not torch.allclose(own[0], own[1])
    assert torch.allclose(at_means[0], at_means[1])


def test_ablation_accuracies_count_right_answers(model: FiLMedNet) -> None:
    images, questions, lengths = batch(6)
    with torch.inference_mode():
        predicted = model(images, questions, lengths).argmax(dim=1)
        answers = predicted.clone()
        answers[:2] = (predicted[:2] + 1) % 6  # two wrong
        answers[5] = -1  # a test question: not counted
        batches = [(images, questions, lengths, answers, torch.arange(6))]
        means = analysis.train_means(model, batches)
        accuracy = analysis.ablation_accuracies(
            model, batches, analysis.ablations([1.0]), means, seed=0
        )
    assert accuracy["none"] == pytest.approx(100 * 3 / 5)
    assert set(accuracy) == {r.name for r in analysis.ablations([1.0])}


# --- the Figure 4 examples ------------------------------------------------------------------------
def test_examples_cover_every_type_right_and_wrong_deterministically() -> None:
    rows = [
        {"question_index": i, "type": kind, "correct": i % 3 == 0}
        for i, kind in enumerate(list(clevr.QUESTION_TYPES) * 8)
    ]
    picked = analysis.pick_examples(rows, 12, seed=0)
    assert len(picked) == 12 and picked == analysis.pick_examples(rows, 12, seed=0)
    assert [r["question_index"] for r in picked] == sorted(r["question_index"] for r in picked)
    for kind in clevr.QUESTION_TYPES:
        assert {r["correct"] for r in picked if r["type"] == kind} == {True, False}
    assert analysis.pick_examples(rows, 12, seed=1) != picked


# --- analyze() refuses data the checkpoint's model was not made for -------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tokens, shards (train, val) and a one-epoch checkpoint of a tiny model on 16-pixel images."""
    root = tmp_path_factory.mktemp("tiny")
    words = ["Is", "a", "cube", "there"]
    config, recipe = tiny_film_config(image_size=16), tiny_train_config(max_epochs=1)
    tiny_trained_run(root, words, {"train": 6, "val": 3}, 3, config, recipe)
    return root


def analyze(root: Path, out: Path, *, shards: Path | None = None, tokens: Path | None = None):
    """`analysis.analyze` of the tiny run's val split."""
    return analysis.analyze(
        root / "film.pt",
        shards or root / "shards",
        tokens or root / "tokens",
        root,
        out,
        split="val",
        train_split="train",
        examples=0,
        max_questions=None,
        tsne_questions=4,
        noise_levels=[0.5],
        batch_size=8,
        device="cpu",
    )


def test_analyze_refuses_tokens_of_another_vocabulary(tiny_run: Path, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    shutil.copytree(tiny_run / "tokens", tokens)
    permute_question_words(tokens / "vocab.json")
    message = rf"{tokens / 'vocab.json'}: .* of {tiny_run / 'film.pt'} was trained on"
    with pytest.raises(ValueError, match=message):
        analyze(tiny_run, tmp_path / "out", tokens=tokens)
    assert not (tmp_path / "out").exists()


def tiny_shards(resized: Path, tokens: Path, shards: Path) -> None:
    """Shards of the tiny run's train and val splits from these images and tokens."""
    write_shards(
        resized, tokens, shards, splits=["train", "val"], images_per_shard=3, progress=False
    )


def test_analyze_refuses_shards_of_another_image_size(tiny_run: Path, tmp_path: Path) -> None:
    """The model was trained on 16-pixel images; 32-pixel shards were analysed without a word."""
    shards = tmp_path / "shards"
    rng = np.random.default_rng(0)
    for image in sorted((tiny_run / "resized").rglob("*.png")):
        bigger = tmp_path / "resized" / image.relative_to(tiny_run / "resized")
        bigger.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(bigger)
    tiny_shards(tmp_path / "resized", tiny_run / "tokens", shards)
    with pytest.raises(ValueError, match=r"a 32x32 image, expected 16x16"):
        analyze(tiny_run, tmp_path / "out", shards=shards)
    assert not (tmp_path / "out").exists()


def test_analyze_refuses_an_answer_outside_the_models(tiny_run: Path, tmp_path: Path) -> None:
    """No prediction can match such an answer: the accuracies would count it as simply wrong."""
    tokens = tmp_path / "tokens"
    shutil.copytree(tiny_run / "tokens", tokens)
    document = json.loads((tokens / "val.json").read_text())
    outside = len(json.loads((tokens / "vocab.json").read_text())["answer_token_to_idx"])
    document["questions"][0]["answer"] = outside
    (tokens / "val.json").write_text(json.dumps(document))
    shards = tmp_path / "shards"
    tiny_shards(tiny_run / "resized", tokens, shards)
    with pytest.raises(ValueError, match=rf"answer index {outside}, outside the vocabulary's"):
        analyze(tiny_run, tmp_path / "out", shards=shards)


def test_analyze_refuses_shards_holding_a_question_the_tokens_lack(
    tiny_run: Path, tmp_path: Path
) -> None:
    """It failed with a bare KeyError on the question's index."""
    tokens = tmp_path / "tokens"
    shutil.copytree(tiny_run / "tokens", tokens)
    document = json.loads((tokens / "val.json").read_text())
    document["questions"] = document["questions"][:-1]
    (tokens / "val.json").write_text(json.dumps(document))
    shards = tiny_run / "shards"
    message = rf"{shards}: the shards hold 1 questions that {tokens / 'val.json'} does not"
    with pytest.raises(ValueError, match=message):
        analyze(tiny_run, tmp_path / "out", tokens=tokens)
    assert not (tmp_path / "out").exists()
