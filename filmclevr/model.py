"""FiLM from raw pixels: Perez et al., "FiLM: Visual Reasoning with a General Conditioning Layer"
(AAAI 2018, arXiv 1709.07871), the official `film_pixels` configuration of SPEC §3.

In paper order (Figure 3): the FiLM layer, the FiLMed residual block, the convolutional stem with
coordinate maps, the classifier, the GRU FiLM generator, and the full model. The reference code is
github.com/ethanjperez/film (`vr/models/filmed_net.py`, `film_gen.py`, `layers.py`); submodule names
follow it (`film_generator.encoder_embed/encoder_rnn/decoder_linear`, `stem`, `input_proj`, `conv1`,
`bn1`, `classifier`) so the structure maps onto it. Every difference from the paper or that code is
marked "Deviation:" at its line.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from filmclevr.configs import ABLATIONS, FILM_PLACEMENTS, GAMMA_OPTIONS, FiLMConfig

__all__ = [
    "ABLATIONS",
    "ABLATION_PAPER_ROW",
    "FILM_PLACEMENTS",
    "GAMMA_OPTIONS",
    "FiLM",
    "FiLMConfig",
    "FiLMGenerator",
    "FiLMedCNN",
    "FiLMedNet",
    "FiLMedResBlock",
    "ablation_config",
    "build_model",
    "count_parameters",
    "unit_range",
]

log = logging.getLogger(__name__)

# The model's configuration, FILM_PLACEMENTS, GAMMA_OPTIONS and the presets in ABLATIONS live in
# configs.py (torch-free, so that parameters are checked before any stage runs).
_T2, _T3 = "table2_ablations_val", "table3_resblocks_val"
# Preset -> (paper table file in filmclevr/paper/ without .csv, row label in its first column).
ABLATION_PAPER_ROW: dict[str, tuple[str, str]] = {
    "raw_pixels": (_T2, "Replace image features with raw pixels"),
    "beta0": (_T2, "FiLM with beta := 0"),
    "gamma1": (_T2, "FiLM with gamma := 1"),
    "gamma_sigmoid": (_T2, "gamma := sigmoid(gamma)"),
    "gamma_tanh": (_T2, "gamma := tanh(gamma)"),
    "gamma_exp": (_T2, "gamma := exp(gamma)"),
    "film_after_residual": (_T2, "FiLM after residual connection"),
    "film_after_relu": (_T2, "FiLM after ResBlock ReLU-2 (best)"),
    "film_after_conv2": (_T2, "FiLM after ResBlock Conv-2"),
    "film_before_conv1": (_T2, "FiLM before ResBlock Conv-1"),
    "no_film_block4": (_T2, "No FiLM in ResBlock 4"),
    "no_film_blocks3_4": (_T2, "No FiLM in ResBlocks 3-4"),
    "no_film_blocks2_4": (_T2, "No FiLM in ResBlocks 2-4"),
    "no_film_blocks1_4": (_T2, "No FiLM in ResBlocks 1-4"),
    "1x1_no_coords": (_T2, "1x1 conv only with no coordinate maps"),
    "no_residual": (_T2, "No residual connection"),
    "no_batchnorm": (_T2, "No batch normalization"),
    **{f"resblocks_{n}": (_T3, str(n)) for n in (1, 2, 3, 4, 5, 6, 7, 8, 12)},
}


def ablation_config(name: str, base: FiLMConfig | None = None) -> FiLMConfig:
    """`base` (default: the paper's config) with the overrides of the named ablation applied."""
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation {name!r}; known: {', '.join(ABLATIONS)}")
    return dataclasses.replace(base or FiLMConfig(), **ABLATIONS[name])


class FiLM(nn.Module):
    """Feature-wise linear modulation, paper Eq. 1-2: FiLM(F | gamma, beta) = gamma * F + beta."""

    def forward(self, x: Tensor, gammas: Tensor, betas: Tensor) -> Tensor:
        # x (B, C, H, W); gammas, betas (B, C): one scale and shift per feature map
        return gammas[:, :, None, None] * x + betas[:, :, None, None]


def coord_map(x: Tensor) -> Tensor:
    """Two channels (x, y), each linspace(-1, 1) over the grid of `x` (B, C, H, W): (B, 2, H, W)."""
    batch, _, height, width = x.shape
    xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
    ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
    coords = torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)])
    return coords.expand(batch, 2, height, width)


class FiLMedResBlock(nn.Module):
    """Paper Figure 3: x' = ReLU(Conv-1 [x; coords]); out = x' + ReLU(FiLM(BN(Conv-2 x')))."""

    def __init__(self, in_channels: int, config: FiLMConfig, conditioned: bool) -> None:
        super().__init__()
        channels, k = config.module_channels, config.module_kernel_size
        self.placement = config.film_placement if conditioned else None
        self.residual = config.residual
        extra = 2 if config.use_coords else 0
        self.input_proj = nn.Conv2d(in_channels + extra, channels, kernel_size=1)  # Conv-1
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=k, padding=k // 2)  # Conv-2
        # As in the official code, a FiLMed block's BN has no affine parameters (FiLM takes their
        # place) while an unconditioned block (condition_pattern 0) keeps them.
        affine = not conditioned
        self.bn1 = nn.BatchNorm2d(channels, affine=affine) if config.module_batchnorm else None
        self.film = FiLM() if conditioned else None
        self.drop = nn.Dropout2d(config.dropout) if config.dropout > 0 else None

    def forward(self, x: Tensor, coords: Tensor | None, gammas: Tensor, betas: Tensor) -> Tensor:
        if self.placement == "before_conv1":
            x = self.film(x, gammas, betas)
        if coords is not None:
            x = torch.cat([x, coords], dim=1)  # (B, C_in + 2, H, W)
        x = F.relu(self.input_proj(x))  # (B, C, H, W); the residual branch starts here
        out = self.conv1(x)  # (B, C, H, W)
        if self.placement == "after_conv2":
            out = self.film(out, gammas, betas)
        if self.bn1 is not None:
            out = self.bn1(out)
        if self.placement == "after_bn":
            out = self.film(out, gammas, betas)
        if self.drop is not None:
            out = self.drop(out)
        out = F.relu(out)
        if self.placement == "after_relu":
            out = self.film(out, gammas, betas)
        if self.residual:
            out = x + out
        if self.placement == "after_residual":
            out = self.film(out, gammas, betas)
        return out


def build_stem(config: FiLMConfig) -> nn.Sequential:
    """stem_num_layers x [conv k x k, stride s -> BatchNorm -> ReLU] (official `build_stem`)."""
    layers: list[nn.Module] = []
    in_channels = 3  # RGB; no coordinate maps on the stem input (official: only if stride is 1)
    for _ in range(config.stem_num_layers):
        layers.append(
            nn.Conv2d(
                in_channels,
                config.stem_channels,
                kernel_size=config.stem_kernel_size,
                stride=config.stem_stride,
                padding=config.stem_padding,
            )
        )
        if config.stem_batchnorm:
            layers.append(nn.BatchNorm2d(config.stem_channels))
        layers.append(nn.ReLU(inplace=True))
        in_channels = config.stem_channels
    return nn.Sequential(*layers)


def build_classifier(config: FiLMConfig, num_answers: int) -> nn.Sequential:
    """[x; coords] -> 1x1 conv -> BN -> ReLU -> global max pool -> FC -> BN -> ReLU -> FC.

    Layer order and indices match the official `build_classifier` with `maxpoolfull`.
    """
    in_channels = config.module_channels + (2 if config.use_coords else 0)
    proj, hidden = config.classifier_proj_dim, config.classifier_fc_dim
    layers: list[nn.Module] = [nn.Conv2d(in_channels, proj, kernel_size=1)]
    if config.classifier_batchnorm:
        layers.append(nn.BatchNorm2d(proj))
    # Deviation: adaptive pooling instead of MaxPool2d(kernel=grid); identical on the square grid,
    # and it follows whatever grid the stem produces.
    layers += [nn.ReLU(inplace=True), nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    layers.append(nn.Linear(proj, hidden))
    if config.classifier_batchnorm:
        layers.append(nn.BatchNorm1d(hidden))
    layers.append(nn.ReLU(inplace=True))
    if config.dropout > 0:  # Deviation: one `dropout` for blocks and classifier (official: two)
        layers.append(nn.Dropout(config.dropout))
    layers.append(nn.Linear(hidden, num_answers))
    return nn.Sequential(*layers)


class FiLMedCNN(nn.Module):
    """The FiLM-ed visual pipeline (official `FiLMedNet`): stem, FiLMed ResBlocks, classifier."""

    def __init__(self, config: FiLMConfig, num_answers: int) -> None:
        super().__init__()
        self.config = config
        self.stem = build_stem(config)
        in_channels = [config.stem_channels] + [config.module_channels] * (config.num_blocks - 1)
        self.res_blocks = nn.ModuleList(
            FiLMedResBlock(c, config, cond)
            for c, cond in zip(in_channels, config.conditioned_blocks, strict=True)
        )
        self.classifier = build_classifier(config, num_answers)

    def forward(self, images: Tensor, gammas: Tensor, betas: Tensor) -> Tensor:
        # images (B, 3, S, S) in [0, 1]; gammas, betas (B, num_blocks, C)
        x = self.stem(images)  # (B, C, S', S'); 224 -> 14
        # Deviation: coordinate maps are built for the grid at hand (official: fixed at __init__).
        coords = coord_map(x) if self.config.use_coords else None  # (B, 2, S', S')
        for i, block in enumerate(self.res_blocks):
            x = block(x, coords, gammas[:, i], betas[:, i])  # (B, C, S', S')
        if coords is not None:
            x = torch.cat([x, coords], dim=1)  # (B, C + 2, S', S')
        return self.classifier(x)  # (B, num_answers)


class FiLMGenerator(nn.Module):
    """Question -> per-block (gamma, beta): embedding -> GRU -> linear (official `FiLMGen`)."""

    def __init__(self, config: FiLMConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.encoder_embed = nn.Embedding(vocab_size, config.word_embedding_dim)
        self.encoder_rnn = nn.GRU(
            config.word_embedding_dim,
            config.rnn_hidden_dim,
            config.rnn_num_layers,
            batch_first=True,
        )
        self.decoder_linear = nn.Linear(
            config.rnn_hidden_dim, config.num_blocks * 2 * config.module_channels
        )

    def forward(self, questions: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        cfg = self.config
        batch = questions.shape[0]
        embedded = self.encoder_embed(questions)  # (B, L, D)
        outputs, _ = self.encoder_rnn(embedded)  # (B, L, H)
        # The question vector is the GRU output at <END>, the last non-padding token. The GRU is
        # unidirectional, so the padding after it cannot reach this output.
        # Deviation: indexed by lengths - 1 (official: a Python scan for the last non-NULL token).
        index = (lengths - 1).to(outputs.device)
        question = outputs[torch.arange(batch, device=outputs.device), index]  # (B, H)
        film = self.decoder_linear(question)  # (B, num_blocks * 2 * C), per block [gamma; beta]
        film = film.reshape(batch, cfg.num_blocks, 2, cfg.module_channels)
        raw_gammas, betas = film[:, :, 0], film[:, :, 1]  # (B, num_blocks, C) each
        if cfg.gamma_option == "linear":
            gammas = 1 + raw_gammas  # SPEC §3: gamma = 1 + delta_gamma (official gamma_baseline 1)
        else:
            # Deviation: the restricted options give gamma = f(delta_gamma), the ranges the paper
            # names ((0,1), (-1,1), (0,inf)); the official code would add its gamma_baseline (1).
            fn = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp}
            gammas = fn[cfg.gamma_option](raw_gammas)
        if not cfg.use_gamma:  # Table 2 "gamma := 1"
            gammas = torch.ones_like(gammas)
        if not cfg.use_beta:  # Table 2 "beta := 0"
            betas = torch.zeros_like(betas)
        return gammas, betas


def init_modules(modules: Any) -> None:
    """Kaiming-uniform (He et al. 2015; a=0, fan_in) on every conv and linear weight.

    As the official `layers.init_modules`; biases, BatchNorm, the embedding and the GRU keep
    PyTorch's defaults (the official code does not re-initialize them either).
    """
    for m in modules:
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.kaiming_uniform_(m.weight)


def init_batchnorm_uniform(modules: Any) -> None:
    """U(0, 1) on every affine BatchNorm weight, in module order: what PyTorch 0.3, which the
    paper's code ran on, did (from 1.2 on they start at 1). In the paper's model these are the
    stem's and the classifier's; a FiLMed block's BatchNorm has no weight."""
    for m in modules:
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.uniform_(m.weight, 0.0, 1.0)


def unit_range(images: Tensor) -> Tensor:
    """uint8 pixels -> float in [0, 1] (SPEC §3: no mean/std normalization); floats unchanged."""
    if images.dtype == torch.uint8:
        return images.float() / 255
    if not images.is_floating_point():
        raise ValueError(f"images must be uint8 or float, got {images.dtype}")
    return images


class FiLMedNet(nn.Module):
    """The full model: FiLM generator (question) + FiLM-ed network (image) -> answer logits."""

    def __init__(self, config: FiLMConfig, vocab_size: int, num_answers: int) -> None:
        super().__init__()
        if vocab_size < 1 or num_answers < 1:
            raise ValueError(f"vocab_size {vocab_size} and num_answers {num_answers} must be >= 1")
        self.config = config
        self.vocab_size, self.num_answers = vocab_size, num_answers  # what its inputs may hold
        self.film_generator = FiLMGenerator(config, vocab_size)
        self.filmed_net = FiLMedCNN(config, num_answers)
        init_modules(self.modules())
        if config.batchnorm_init == "uniform":
            init_batchnorm_uniform(self.modules())

    def forward(self, images: Tensor, questions: Tensor, lengths: Tensor) -> Tensor:
        """Answer logits.

        Args:
            images: uint8 (B, 3, S, S), or float already in [0, 1]; S = config.image_size.
            questions: int64 (B, L), <START> ... <END> padded with <NULL>=0.
            lengths: int64 (B,), <START> and <END> included.
        Returns:
            float logits (B, num_answers).
        """
        size = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images must be (B, 3, {size}, {size}), got {tuple(images.shape)}")
        if questions.dim() != 2 or lengths.shape != (questions.shape[0],):
            raise ValueError(
                f"questions must be (B, L) and lengths (B,), got {tuple(questions.shape)} "
                f"and {tuple(lengths.shape)}"
            )
        if images.shape[0] != questions.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {questions.shape[0]} questions")
        if lengths.device.type == "cpu":  # checked only where it costs no device sync
            low, high = int(lengths.min()), int(lengths.max())
            if low < 1 or high > questions.shape[1]:
                raise ValueError(f"lengths must be in [1, {questions.shape[1]}], got {low}..{high}")
        gammas, betas = self.film_generator(questions, lengths)  # (B, num_blocks, C) each
        return self.filmed_net(unit_range(images), gammas, betas)  # (B, num_answers)


def build_model(config: FiLMConfig, vocab_size: int, num_answers: int) -> FiLMedNet:
    """Build the model and log its size per part."""
    model = FiLMedNet(config, vocab_size, num_answers)
    log.info("FiLM model parameters: %s", count_parameters(model))
    return model


def count_parameters(model: FiLMedNet) -> dict[str, int]:
    """Trainable parameter count per part; `filmed_net` = stem + res_blocks + classifier."""

    def n(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    net = model.filmed_net
    counts = {
        "generator": n(model.film_generator),
        "stem": n(net.stem),
        "res_blocks": n(net.res_blocks),
        "classifier": n(net.classifier),
    }
    counts["filmed_net"] = counts["stem"] + counts["res_blocks"] + counts["classifier"]
    counts["total"] = n(model)
    assert counts["total"] == counts["generator"] + counts["filmed_net"], counts
    return counts
