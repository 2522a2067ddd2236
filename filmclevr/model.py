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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from filmclevr.params import unknown_keys

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

GAMMA_OPTIONS: tuple[str, ...] = ("linear", "sigmoid", "tanh", "exp")  # paper §5, Table 2
# Where FiLM sits in a ResBlock (paper Table 2) -> the official `condition_method` it matches.
# The paper calls the 1x1 conv "Conv-1" (official `input_proj`) and the 3x3 conv "Conv-2" (`conv1`).
FILM_PLACEMENTS: dict[str, str] = {
    "before_conv1": "block-input-film",  # on the block input, before Conv-1
    "after_conv2": "conv-film",  # right after Conv-2, before BatchNorm
    "after_bn": "bn-film",  # after BatchNorm, before ReLU-2: the paper's model
    "after_relu": "relu-film",  # after ReLU-2, before the residual sum
    "after_residual": "block-output-film",  # on the block output, after the residual sum
}


@dataclass(frozen=True)
class FiLMConfig:
    """Architecture of the raw-pixel FiLM model; the defaults are the paper's recipe (SPEC §3)."""

    image_size: int = 224  # SPEC §3: images resized to 224x224
    word_embedding_dim: int = 200  # paper §2.2: learned 200-dim word embeddings
    rnn_hidden_dim: int = 4096  # paper §2.2: GRU with 4096 hidden units
    rnn_num_layers: int = 1  # SPEC §3: one-layer unidirectional GRU
    stem_num_layers: int = 4  # paper §2.2 / SPEC §3: 4 conv layers, 224 -> 14
    stem_channels: int = 128  # ... with 128 kernels each
    stem_kernel_size: int = 4  # ... of size 4x4
    stem_stride: int = 2  # ... stride 2 (SPEC §3)
    stem_padding: int = 1  # ... padding 1 (SPEC §3)
    stem_batchnorm: bool = True  # ... each followed by BatchNorm and ReLU
    num_blocks: int = 4  # paper §2.2: 4 FiLMed ResBlocks (Table 3 varies it)
    module_channels: int = 128  # paper §2.2: 128 feature maps per ResBlock
    module_kernel_size: int = 3  # Conv-2 is 3x3 (Table 2: "1x1 conv only" sets 1)
    use_coords: bool = True  # paper §2.2: coordinate maps on ResBlock and classifier inputs
    use_gamma: bool = True  # Table 2 "gamma := 1" sets False
    use_beta: bool = True  # Table 2 "beta := 0" sets False
    gamma_option: str = "linear"  # gamma = 1 + delta_gamma (SPEC §3); Table 2 tries the others
    film_placement: str = "after_bn"  # paper Figure 3: BN -> FiLM -> ReLU; see FILM_PLACEMENTS
    condition_pattern: tuple[bool, ...] | None = None  # FiLM per block; None = every block
    residual: bool = True  # Table 2 "No residual connection" sets False
    module_batchnorm: bool = True  # Table 2 "No batch normalization" sets False
    classifier_proj_dim: int = 512  # paper §2.2: 1x1 conv to 512 feature maps
    classifier_fc_dim: int = 1024  # paper §2.2: MLP with 1024 hidden units
    classifier_batchnorm: bool = True  # official recipe: --classifier_batchnorm 1
    dropout: float = 0.0  # SPEC §3: dropout 0

    def __post_init__(self) -> None:
        if self.gamma_option not in GAMMA_OPTIONS:
            raise ValueError(f"gamma_option {self.gamma_option!r} is not one of {GAMMA_OPTIONS}")
        if self.film_placement not in FILM_PLACEMENTS:
            raise ValueError(
                f"film_placement {self.film_placement!r} is not one of {tuple(FILM_PLACEMENTS)}"
            )
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "bool" and not isinstance(value, bool):
                raise ValueError(f"{f.name} must be true or false, got {value!r}")
            if f.type == "int":
                low = 0 if f.name == "stem_padding" else 1
                if isinstance(value, bool) or not isinstance(value, int) or value < low:
                    raise ValueError(f"{f.name} must be an integer >= {low}, got {value!r}")
        if self.module_kernel_size % 2 == 0:  # 'same' padding needs an odd kernel (official too)
            raise ValueError(f"module_kernel_size must be odd, got {self.module_kernel_size}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, int | float):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.film_placement == "before_conv1" and self.stem_channels != self.module_channels:
            raise ValueError(
                f"film_placement 'before_conv1' modulates the stem output, so stem_channels "
                f"({self.stem_channels}) must equal module_channels ({self.module_channels})"
            )
        if self.condition_pattern is not None:
            pattern = self.condition_pattern
            if isinstance(pattern, str) or not isinstance(pattern, list | tuple):
                raise ValueError(f"condition_pattern must be a list of 0/1, got {pattern!r}")
            if any(v not in (0, 1) or not isinstance(v, int) for v in pattern):  # bool is an int
                raise ValueError(f"condition_pattern entries must be 0/1 or booleans: {pattern!r}")
            if len(pattern) != self.num_blocks:
                raise ValueError(
                    f"condition_pattern {list(pattern)} has {len(pattern)} entries "
                    f"but num_blocks is {self.num_blocks}"
                )
            object.__setattr__(self, "condition_pattern", tuple(bool(v) for v in pattern))
        if self.feature_grid_size < 1:
            raise ValueError(
                f"image_size {self.image_size} is too small for {self.stem_num_layers} stem layers "
                f"(kernel {self.stem_kernel_size}, stride {self.stem_stride}, "
                f"padding {self.stem_padding})"
            )

    @property
    def feature_grid_size(self) -> int:
        """Side of the stem's output grid (14 for the paper's 224x224 input)."""
        size = self.image_size
        for _ in range(self.stem_num_layers):
            size = (size + 2 * self.stem_padding - self.stem_kernel_size) // self.stem_stride + 1
        return size

    @property
    def conditioned_blocks(self) -> tuple[bool, ...]:
        """Whether each ResBlock is FiLMed (condition_pattern with None resolved)."""
        if self.condition_pattern is None:
            return (True,) * self.num_blocks
        return self.condition_pattern

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FiLMConfig:
        """Build a config from a mapping (e.g. a params.yaml section); unknown keys are errors."""
        message = unknown_keys("FiLMConfig", d, [f.name for f in dataclasses.fields(cls)])
        if message:
            raise ValueError(message)
        return cls(**d)

    def asdict(self) -> dict[str, Any]:
        """Plain dict (lists, not tuples) that YAML, JSON and checkpoints can hold."""
        d = dataclasses.asdict(self)
        if d["condition_pattern"] is not None:
            d["condition_pattern"] = list(d["condition_pattern"])
        return d


# Named ablations: FiLMConfig overrides for the rows of the paper's Tables 2 and 3.
# Deviation: the paper ran Table 2 on its ResNet-101 image-feature model; here every ablation is
# applied to the raw-pixel model (Table 2's "raw pixels" row is this model unchanged).
ABLATIONS: dict[str, dict[str, Any]] = {
    "raw_pixels": {},
    "beta0": {"use_beta": False},
    "gamma1": {"use_gamma": False},
    "gamma_sigmoid": {"gamma_option": "sigmoid"},
    "gamma_tanh": {"gamma_option": "tanh"},
    "gamma_exp": {"gamma_option": "exp"},
    "film_after_residual": {"film_placement": "after_residual"},
    "film_after_relu": {"film_placement": "after_relu"},
    "film_after_conv2": {"film_placement": "after_conv2"},
    "film_before_conv1": {"film_placement": "before_conv1"},
    "no_film_block4": {"condition_pattern": [1, 1, 1, 0]},
    "no_film_blocks3_4": {"condition_pattern": [1, 1, 0, 0]},
    "no_film_blocks2_4": {"condition_pattern": [1, 0, 0, 0]},
    "no_film_blocks1_4": {"condition_pattern": [0, 0, 0, 0]},
    "1x1_no_coords": {"module_kernel_size": 1, "use_coords": False},
    "no_residual": {"residual": False},
    "no_batchnorm": {"module_batchnorm": False},  # the ResBlocks' BN; stem and classifier keep it
    **{f"resblocks_{n}": {"num_blocks": n} for n in (1, 2, 3, 4, 5, 6, 7, 8, 12)},
}
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
        self.film_generator = FiLMGenerator(config, vocab_size)
        self.filmed_net = FiLMedCNN(config, num_answers)
        init_modules(self.modules())

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
