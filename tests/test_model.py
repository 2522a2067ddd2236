"""Tests for filmclevr.model: the raw-pixel FiLM model of SPEC §3."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from filmclevr import clevr
from filmclevr.model import (
    ABLATION_PAPER_ROW,
    ABLATIONS,
    FILM_PLACEMENTS,
    FiLM,
    FiLMConfig,
    FiLMedNet,
    ablation_config,
    build_model,
    count_parameters,
)
from tests.helpers import tiny_film_config

# clevr-iep's vocab.json for CLEVR v1.0: 93 question tokens (4 special + 89 words); the answer
# vocabulary is the 4 special tokens + the 28 answers.
V = 93
A = 4 + len(clevr.ANSWERS)
PAPER_DIR = Path(__file__).resolve().parents[1] / "filmclevr" / "paper"

# A tiny config for fast tests: 32x32 images, 2 stem layers -> 8x8 grid, 4 blocks like the paper.
TINY = tiny_film_config(
    image_size=32,
    num_blocks=4,
    stem_channels=16,
    module_channels=16,
    rnn_hidden_dim=32,
    classifier_fc_dim=32,
)
TINY_V, TINY_A = 12, 5


def batch(config: FiLMConfig, b: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random uint8 images and <START> w... <END> questions padded with <NULL>."""
    g = torch.Generator().manual_seed(seed)
    s = config.image_size
    images = torch.randint(0, 256, (b, 3, s, s), generator=g, dtype=torch.uint8)
    lengths = torch.tensor([5, 3, 6, 4, 5, 6][:b])
    questions = torch.zeros(b, 7, dtype=torch.int64)
    for i, n in enumerate(lengths.tolist()):
        questions[i, 0], questions[i, n - 1] = 1, 2
        questions[i, 1 : n - 1] = torch.randint(4, TINY_V, (n - 2,), generator=g)
    return images, questions, lengths


def tiny_model(config: FiLMConfig = TINY, seed: int = 0) -> FiLMedNet:
    torch.manual_seed(seed)
    return FiLMedNet(config, TINY_V, TINY_A)


@pytest.fixture(scope="module")
def paper_model() -> FiLMedNet:
    """The full 59M-parameter model, built once."""
    torch.manual_seed(0)
    return build_model(FiLMConfig(), V, A)


# --- config ----------------------------------------------------------------------------------


def test_defaults_are_the_paper_recipe():
    assert FiLMConfig().asdict() == {
        "image_size": 224,
        "word_embedding_dim": 200,
        "rnn_hidden_dim": 4096,
        "rnn_num_layers": 1,
        "stem_num_layers": 4,
        "stem_channels": 128,
        "stem_kernel_size": 4,
        "stem_stride": 2,
        "stem_padding": 1,
        "stem_batchnorm": True,
        "num_blocks": 4,
        "module_channels": 128,
        "module_kernel_size": 3,
        "use_coords": True,
        "use_gamma": True,
        "use_beta": True,
        "gamma_option": "linear",
        "film_placement": "after_bn",
        "condition_pattern": None,
        "residual": True,
        "module_batchnorm": True,
        "classifier_proj_dim": 512,
        "classifier_fc_dim": 1024,
        "classifier_batchnorm": True,
        "dropout": 0.0,
        # Today's PyTorch, not the paper's 0.3 (U(0, 1)): every result so far started so; the
        # paper profile sets "uniform".
        "batchnorm_init": "ones",
    }
    assert FiLMConfig().conditioned_blocks == (True, True, True, True)
    assert FiLMConfig().feature_grid_size == 14  # SPEC §3: 224 -> 14


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"gamma_option": "cubic"}, "cubic"),
        ({"film_placement": "middle"}, "middle"),
        ({"condition_pattern": [1, 1, 0]}, "3 entries but num_blocks is 4"),
        ({"condition_pattern": [1, 2, 1, 1]}, "[1, 2, 1, 1]"),
        ({"condition_pattern": "1110"}, "'1110'"),
        ({"module_kernel_size": 2}, "odd, got 2"),
        ({"num_blocks": 0}, "num_blocks must be an integer >= 1, got 0"),
        ({"rnn_hidden_dim": 12.5}, "12.5"),
        ({"stem_padding": -1}, "got -1"),
        ({"use_coords": "yes"}, "'yes'"),
        ({"residual": 1}, "residual must be true or false, got 1"),
        ({"dropout": 1.0}, "got 1.0"),
        ({"image_size": 8}, "image_size 8 is too small"),
        ({"film_placement": "before_conv1", "stem_channels": 64}, "(64)"),
        ({"batchnorm_init": "zeros"}, "batchnorm_init 'zeros' is not one of"),
    ],
)
def test_bad_config_values_raise_naming_the_value(overrides, needle):
    with pytest.raises(ValueError) as err:
        FiLMConfig(**overrides)
    assert needle in str(err.value)


def test_from_dict_rejects_unknown_keys_and_roundtrips_yaml():
    with pytest.raises(ValueError, match="gru_size, lr"):
        FiLMConfig.from_dict({"num_blocks": 4, "lr": 3e-4, "gru_size": 5})
    # YAML gives lists; they become tuples, and asdict gives lists back (yaml.safe_dump-able).
    c = FiLMConfig.from_dict(yaml.safe_load("num_blocks: 3\ncondition_pattern: [1, 0, 1]\n"))
    assert c.condition_pattern == (True, False, True)
    d = c.asdict()
    assert d["condition_pattern"] == [True, False, True]
    assert FiLMConfig.from_dict(yaml.safe_load(yaml.safe_dump(d))) == c
    assert FiLMConfig.from_dict(FiLMConfig().asdict()) == FiLMConfig()


# --- parameter count -------------------------------------------------------------------------


def test_parameter_count_is_pinned_to_the_hand_count(paper_model):
    # Worked out from the layer shapes of SPEC §3, weights + biases (BN: gamma + beta).
    embed = V * 200
    gru = 3 * (4096 * 200 + 4096 * 4096 + 2 * 4096)  # update, reset, new gates; b_ih + b_hh
    decoder = 4096 * (4 * 2 * 128) + 4 * 2 * 128  # per block (gamma, beta) over 128 channels
    stem = (3 * 16 * 128 + 128 + 2 * 128) + 3 * (128 * 16 * 128 + 128 + 2 * 128)  # 4x4 convs + BN
    block = (130 * 128 + 128) + (128 * 9 * 128 + 128)  # 1x1 conv, 3x3 conv; BN without affine
    classifier = (130 * 512 + 512 + 2 * 512) + (512 * 1024 + 1024 + 2 * 1024) + (1024 * A + A)
    counts = count_parameters(paper_model)
    assert counts == {
        "generator": embed + gru + decoder,
        "stem": stem,
        "res_blocks": 4 * block,
        "classifier": classifier,
        "filmed_net": stem + 4 * block + classifier,
        "total": embed + gru + decoder + stem + 4 * block + classifier,
    }
    # The paper's sizes (SPEC §3): about 57M in the generator and 2.1M in the FiLM-ed network.
    assert counts["filmed_net"] == 2_079_776
    assert counts["generator"] == 57_027_752
    assert counts["total"] == 59_107_528


def test_official_submodule_names(paper_model):
    names = {name for name, _ in paper_model.named_parameters()}
    for expected in [
        "film_generator.encoder_embed.weight",
        "film_generator.encoder_rnn.weight_hh_l0",
        "film_generator.decoder_linear.weight",
        "filmed_net.stem.0.weight",
        "filmed_net.res_blocks.3.input_proj.weight",
        "filmed_net.res_blocks.3.conv1.weight",
        "filmed_net.classifier.0.weight",
        "filmed_net.classifier.8.weight",
    ]:
        assert expected in names
    assert not any(".bn1." in n for n in names)  # FiLMed blocks' BN has no affine parameters


# --- forward ---------------------------------------------------------------------------------


def test_paper_model_forward_at_224(paper_model):
    images, questions, lengths = batch(FiLMConfig(), b=2)
    paper_model.eval()
    with torch.no_grad():
        logits = paper_model(images, questions, lengths)
    assert logits.shape == (2, A)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


def test_smaller_images_with_fewer_stem_layers():
    config = dataclasses.replace(TINY, image_size=64, stem_num_layers=3)
    assert config.feature_grid_size == 8
    model = tiny_model(config)
    logits = model(*batch(config))
    assert logits.shape == (3, TINY_A)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\), got \(3, 3, 32, 32\)"):
        model(*batch(TINY))


def test_uint8_images_are_scaled_to_unit_range():
    model = tiny_model().eval()
    images, questions, lengths = batch(TINY)
    with torch.no_grad():
        from_uint8 = model(images, questions, lengths)
        from_float = model(images.float() / 255, questions, lengths)
        from_raw = model(images.float(), questions, lengths)
    torch.testing.assert_close(from_uint8, from_float)
    assert not torch.allclose(from_uint8, from_raw)


def test_question_vector_is_taken_at_end_token():
    model = tiny_model().eval()
    images, questions, lengths = batch(TINY)
    with torch.no_grad():
        logits = model(images, questions, lengths)
        # More padding, and garbage after <END>, cannot change the answer...
        longer = torch.cat([questions, torch.zeros(3, 4, dtype=torch.int64)], dim=1)
        torch.testing.assert_close(model(images, longer, lengths), logits)
        garbage = longer.clone()
        for i, n in enumerate(lengths.tolist()):
            garbage[i, n:] = 7
        torch.testing.assert_close(model(images, garbage, lengths), logits)
        # ...but a word before <END> does.
        changed = questions.clone()
        changed[:, 1] = torch.where(changed[:, 1] == 5, 6, 5)
        assert not torch.allclose(model(images, changed, lengths), logits)


def test_bad_lengths_raise():
    model = tiny_model()
    images, questions, lengths = batch(TINY)
    with pytest.raises(ValueError, match=r"lengths must be in \[1, 7\], got 0\.\.6"):
        model(images, questions, torch.tensor([0, 3, 6]))
    with pytest.raises(ValueError, match="3 images but 2 questions"):
        model(images, questions[:2], lengths[:2])


def test_channels_last_matches_contiguous():
    model = tiny_model().eval()
    images, questions, lengths = batch(TINY)
    with torch.no_grad():
        expected = model(images, questions, lengths)
        model = model.to(memory_format=torch.channels_last)
        got = model(images.contiguous(memory_format=torch.channels_last), questions, lengths)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


# --- FiLM behaviour --------------------------------------------------------------------------


def test_film_layer_is_feature_wise_affine():
    x = torch.randn(2, 3, 4, 5)
    gammas, betas = torch.randn(2, 3), torch.randn(2, 3)
    out = FiLM()(x, gammas, betas)
    torch.testing.assert_close(out[1, 2], gammas[1, 2] * x[1, 2] + betas[1, 2])
    torch.testing.assert_close(FiLM()(x, torch.ones(2, 3), torch.zeros(2, 3)), x)


@pytest.mark.parametrize(
    ("option", "low", "high"),
    [("sigmoid", 0.0, 1.0), ("tanh", -1.0, 1.0), ("exp", 0.0, math.inf)],
)
def test_gamma_options(option, low, high):
    _, questions, lengths = batch(TINY)
    linear = tiny_model(TINY).film_generator
    restricted = tiny_model(dataclasses.replace(TINY, gamma_option=option)).film_generator
    with torch.no_grad():
        gammas, betas = linear(questions, lengths)
        raw = gammas - 1  # linear: gamma = 1 + delta_gamma
        got, got_betas = restricted(questions, lengths)  # same seed -> same raw outputs
    fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp}[option]
    torch.testing.assert_close(got, fn(raw))
    torch.testing.assert_close(got_betas, betas)
    assert ((got > low) & (got < high)).all()
    assert gammas.shape == (3, 4, 16)


def test_beta0_and_gamma1_really_disable():
    _, questions, lengths = batch(TINY)
    gen_beta0 = tiny_model(ablation_config("beta0", TINY)).film_generator
    gen_gamma1 = tiny_model(ablation_config("gamma1", TINY)).film_generator
    with torch.no_grad():
        gammas, betas = gen_beta0(questions, lengths)
        assert torch.equal(betas, torch.zeros_like(betas)) and gammas.std() > 0
        gammas, betas = gen_gamma1(questions, lengths)
        assert torch.equal(gammas, torch.ones_like(gammas)) and betas.std() > 0
    # Both off: the block's FiLM output is its plain (affine-free) BatchNorm output, so the
    # question no longer matters.
    config = dataclasses.replace(TINY, use_gamma=False, use_beta=False)
    model = tiny_model(config).eval()
    block = model.filmed_net.res_blocks[0]
    x, coords = torch.randn(2, 16, 8, 8), torch.zeros(2, 2, 8, 8)
    with torch.no_grad():
        gammas, betas = model.film_generator(questions[:2], lengths[:2])
        h = torch.relu(block.input_proj(torch.cat([x, coords], 1)))
        expected = h + torch.relu(block.bn1(block.conv1(h)))
        torch.testing.assert_close(block(x, coords, gammas[:, 0], betas[:, 0]), expected)
    assert_question_has_no_influence(model, expect_influence=False)


def assert_question_has_no_influence(model: FiLMedNet, expect_influence: bool) -> None:
    images, questions, lengths = batch(model.config)
    other = questions.clone()
    other[:, 1] = torch.where(other[:, 1] == 4, 9, 4)
    model.eval()
    with torch.no_grad():
        a, b = model(images, questions, lengths), model(images, other, lengths)
    assert torch.allclose(a, b) != expect_influence


def test_condition_pattern_all_zero_cuts_the_question_off():
    assert_question_has_no_influence(tiny_model(TINY), expect_influence=True)
    model = tiny_model(ablation_config("no_film_blocks1_4", TINY))
    assert all(block.film is None for block in model.filmed_net.res_blocks)
    assert all(block.bn1.affine for block in model.filmed_net.res_blocks)  # as official code
    assert_question_has_no_influence(model, expect_influence=False)


def test_condition_pattern_drops_film_only_where_zero():
    model = tiny_model(ablation_config("no_film_block4", TINY))
    blocks = model.filmed_net.res_blocks
    assert [block.film is not None for block in blocks] == [True, True, True, False]
    # the unconditioned block keeps an affine BN: 2 * 16 more parameters than a FiLMed one
    sizes = [sum(p.numel() for p in block.parameters()) for block in blocks]
    assert sizes[3] - sizes[0] == 2 * 16


@pytest.mark.parametrize("placement", sorted(FILM_PLACEMENTS))
def test_every_placement_changes_the_output(placement):
    config = dataclasses.replace(TINY, film_placement=placement)
    assert_question_has_no_influence(tiny_model(config), expect_influence=True)


# --- ablations -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_every_ablation_builds_and_trains(name):
    config = ablation_config(name, TINY)
    for key, value in ABLATIONS[name].items():
        expected = tuple(bool(v) for v in value) if isinstance(value, list) else value
        assert getattr(config, key) == expected
    model = tiny_model(config).train()
    images, questions, lengths = batch(config, b=4)
    logits = model(images, questions, lengths)
    assert logits.shape == (4, TINY_A)
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    grads = [p.grad for p in model.filmed_net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert len(model.filmed_net.res_blocks) == config.num_blocks


def test_ablation_parameter_changes_match_the_paper():
    c = ablation_config("1x1_no_coords")
    assert (c.module_kernel_size, c.use_coords) == (1, False)
    assert ablation_config("resblocks_6").num_blocks == 6
    assert ablation_config("raw_pixels") == FiLMConfig()
    with pytest.raises(ValueError, match="'nope'"):
        ablation_config("nope")
    model = FiLMedNet(ablation_config("1x1_no_coords", TINY), TINY_V, TINY_A)
    block = model.filmed_net.res_blocks[1]
    assert block.conv1.kernel_size == (1, 1) and block.input_proj.in_channels == 16


def read_rows(table: str) -> list[str]:
    with open(PAPER_DIR / f"{table}.csv", newline="") as f:
        return [row[0] for row in list(csv.reader(f))[1:]]


def test_every_ablation_maps_to_a_paper_row():
    assert set(ABLATION_PAPER_ROW) == set(ABLATIONS)
    used = {}
    for name, (table, label) in ABLATION_PAPER_ROW.items():
        assert label in read_rows(table), (name, table, label)
        used.setdefault(table, set()).add(label)
    # every row of both tables has a preset, except the image-feature model's own summary row
    assert set(read_rows("table3_resblocks_val")) == used["table3_resblocks_val"]
    missing = set(read_rows("table2_ablations_val")) - used["table2_ablations_val"]
    assert missing == {"Best architecture (mean of 5 runs; std 0.4)"}


# --- init ------------------------------------------------------------------------------------


def test_init_is_kaiming_uniform_on_convs_and_linears():
    model = tiny_model()
    checked = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            w = module.weight.detach()
            fan_in = w[0].numel()
            bound = math.sqrt(6 / fan_in)  # kaiming_uniform_, a=0: gain sqrt(2) * sqrt(3/fan_in)
            assert w.abs().max() <= bound
            # PyTorch's default (a=sqrt(5)) stays within 1/sqrt(fan_in); Kaiming goes past it.
            assert w.abs().max() > 1.5 / math.sqrt(fan_in)
            if module.bias is not None:  # PyTorch default bias init, as the official code
                assert module.bias.abs().max() <= 1 / math.sqrt(fan_in)
            checked += 1
    assert checked == 2 + 4 * 2 + 1 + 2 + 1  # stem, blocks, classifier conv + 2 FC, decoder
    # The GRU keeps PyTorch's U(-1/sqrt(H), 1/sqrt(H)) (the official FiLMGen does not re-init it).
    gru = model.film_generator.encoder_rnn
    assert gru.weight_hh_l0.abs().max() <= 1 / math.sqrt(TINY.rnn_hidden_dim)


def test_kaiming_variance_on_the_paper_model(paper_model):
    w = paper_model.film_generator.decoder_linear.weight.detach()
    torch.testing.assert_close(w.std().item(), math.sqrt(2 / 4096), rtol=0.01, atol=0)
    w = paper_model.filmed_net.res_blocks[0].conv1.weight.detach()
    torch.testing.assert_close(w.std().item(), math.sqrt(2 / (128 * 9)), rtol=0.02, atol=0)


def _affine_batchnorms(model: nn.Module) -> list[nn.Module]:
    return [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
    ]


def test_uniform_batchnorm_init_draws_every_affine_weight_and_nothing_else():
    """The paper's PyTorch 0.3 start: U(0, 1) BatchNorm weights; every other tensor as today's."""
    torch.manual_seed(0)
    ones = FiLMedNet(tiny_film_config(), vocab_size=20, num_answers=10)
    torch.manual_seed(0)
    uniform = FiLMedNet(tiny_film_config(batchnorm_init="uniform"), vocab_size=20, num_answers=10)
    # The stem's and the classifier's; a FiLMed block's BatchNorm has no weight to start.
    stem_layers = tiny_film_config().stem_num_layers
    assert len(_affine_batchnorms(uniform)) == stem_layers + 2
    for bn in _affine_batchnorms(ones):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
    for bn in _affine_batchnorms(uniform):
        assert 0 <= bn.weight.min() and bn.weight.max() < 1 and bn.weight.std() > 0.1
    drawn = {
        f"{name}.weight"
        for name, m in uniform.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine
    }
    before, after = ones.state_dict(), uniform.state_dict()
    assert drawn < set(after)
    for name in set(after) - drawn:
        assert torch.equal(before[name], after[name]), name
