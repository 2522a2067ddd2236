"""The model's and the recipe's configurations, FiLMConfig and TrainConfig, and the named
ablations of the paper's Tables 2 and 3: plain dataclasses without torch, so that a parameters
file is checked against them (params.validate_params) before any stage runs, even when the
Snakefile is parsed. model.py and train.py re-export them; their defaults are the paper's.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ABLATIONS",
    "BATCHNORM_INITS",
    "DATA_ORDERS",
    "FILM_PLACEMENTS",
    "FROZEN_BATCHNORM",
    "GAMMA_OPTIONS",
    "LR_SCHEDULES",
    "TRAINABLE",
    "FiLMConfig",
    "TrainConfig",
    "unknown_keys",
]


def unknown_keys(what: str, given: Iterable[str], known: Sequence[str]) -> str | None:
    """The error message for keys of `given` not in `known` (None if there are none), with the
    closest known key for each typo, e.g. "unknown TrainConfig keys: max_epoch (did you mean
    max_epochs?) (known: ...)"."""
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return None
    message = f"unknown {what} keys: {', '.join(unknown)}"
    hints = [
        f"{key} -> {match[0]}" if len(unknown) > 1 else match[0]
        for key in unknown
        if (match := difflib.get_close_matches(key, known, n=1))
    ]
    if hints:
        message += f" (did you mean {'; '.join(hints)}?)"
    return f"{message} (known: {', '.join(known)})"


# --- The model (model.py) -------------------------------------------------------------------------
GAMMA_OPTIONS: tuple[str, ...] = ("linear", "sigmoid", "tanh", "exp")  # paper §5, Table 2
# The starting weight of every affine BatchNorm: PyTorch >= 1.2 starts them at 1; the PyTorch 0.3
# the paper's code ran on drew them from U(0, 1).
BATCHNORM_INITS: tuple[str, ...] = ("ones", "uniform")
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
    batchnorm_init: str = "ones"  # today's PyTorch; "uniform" as the paper's runs (BATCHNORM_INITS)

    def __post_init__(self) -> None:
        if self.gamma_option not in GAMMA_OPTIONS:
            raise ValueError(f"gamma_option {self.gamma_option!r} is not one of {GAMMA_OPTIONS}")
        if self.batchnorm_init not in BATCHNORM_INITS:
            raise ValueError(
                f"batchnorm_init {self.batchnorm_init!r} is not one of {BATCHNORM_INITS}"
            )
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


# --- The recipe (train.py) ------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are the paper's recipe (SPEC §4) on one process.

    `batch_size` is per process: with DDP the global batch is `batch_size * world size`, so keep
    the paper's 64 on 4 GPUs with `batch_size: 16`.
    """

    seed: int = 0  # model init and data order; the same seed gives the same run on a CPU
    batch_size: int = 64  # SPEC §4
    learning_rate: float = 3e-4  # SPEC §4: Adam, constant (no schedule); a schedule's peak
    # "constant" (SPEC §4), "cosine" (cosine decay from the peak to 0 at the end of
    # `max_epochs`) or "linear" (a straight line from the peak to 0 there), each after
    # `warmup_epochs` of linear warmup (0: none, the paper's). A higher peak annealed to 0
    # learned more from the demo's small budget of questions than the paper's constant rate;
    # off by default, so the default is the paper's recipe.
    lr_schedule: str = "constant"
    warmup_epochs: float = 0.0
    # Which weights the optimizer changes: "all" (the paper's training), or "film_generator",
    # only the question pipeline that predicts (gamma, beta), as the paper fine-tunes for
    # CLEVR-Humans; the visual pipeline's weights then stay as they were.
    trainable: str = "all"
    # The BatchNorm layers of what `trainable` leaves frozen: "train" keeps them in train mode, as
    # the official code does (it never sets the frozen network to eval mode): each batch is
    # normalized by its own statistics and the running statistics drift toward the new data;
    # "eval" freezes them too (running statistics used and kept), a stricter freeze.
    frozen_batchnorm: str = "train"
    # Start from this checkpoint's weights instead of the paper's Kaiming init: fine-tuning,
    # or the next step of a curriculum (a skill learned on one split, carried into the next).
    # Same model configuration and vocabulary; a path relative to the working directory.
    # None: train from scratch.
    init_checkpoint: str | None = None
    weight_decay: float = 1e-5  # SPEC §4: Adam's plain L2 on every parameter (not AdamW)
    max_epochs: int = 80  # SPEC §4: the official run stops at 80 epochs
    # Stop after this many epochs without a better validation accuracy; None (the default)
    # never stops early, as the paper's recipe: all 80 epochs, keep the best (SPEC §4). The
    # official curve still gains 0.8 points between epochs 30 and 80, so stopping early is a
    # budget choice of a profile, not the recipe.
    patience: int | None = None
    device: str = "auto"  # cuda if available, else cpu; or e.g. "cpu", "cuda", "cuda:1"
    bf16: bool = False  # bfloat16 autocast, a speed switch (the paper trained in float32)
    # NHWC memory format for the convolutions: a speed switch on GPUs, and on a CPU in bf16
    # (1.06x at batch 64, 1.17x at 128: benchmarks/bench_train.py)
    channels_last: bool = False
    compile: bool = False  # torch.compile the training model (optional speed-up)
    num_workers: int = 0  # loader worker processes; 0 decodes in this process (deterministic)
    # The order of the training questions (DATA_ORDERS). "shards": the shards shuffled, then a
    # buffer of `shuffle_buffer` questions (up to ~150 kB of 224x224 image each, so ~750 MB at
    # most), the last partial batch left out: the questions of one image land in nearby
    # batches. "official": as clevr-iep's loader, every question of the split permuted afresh
    # each epoch and the last partial batch kept; it holds the split's images decoded in
    # memory (10.5 GB for CLEVR's train split at 224x224), refuses to start where they do not
    # fit, and makes its batches in this process (num_workers then serve validation only).
    # Default "shards": every result so far was trained so.
    data_order: str = "shards"
    shuffle_buffer: int = 5000
    checkpoint_every_steps: int = 0  # also save `last` every this many steps; 0: at epoch end
    # Also keep each epoch's `last` as epoch-<N>.pt beside it: the run's checkpoints over
    # training (studies.genuine_clevr.over_training), a few MB each for the demo's model.
    keep_epoch_checkpoints: bool = False
    num_threads: int = 0  # torch CPU threads; 0 keeps torch's default
    # Processes on this node, one per GPU: the train_model stage starts itself under
    # `torchrun --standalone` when this is > 1 (several nodes: call torchrun yourself).
    nproc_per_node: int = 1

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = f.type.removesuffix(" | None")  # the annotations are strings (__future__)
            if value is None and kind != f.type:
                continue
            if kind == "bool" and not isinstance(value, bool):
                raise ValueError(f"TrainConfig.{f.name} must be true or false, got {value!r}")
            if kind == "str" and not isinstance(value, str):
                raise ValueError(f"TrainConfig.{f.name} must be a string, got {value!r}")
            if kind in ("int", "float"):
                types = int if kind == "int" else (int, float)
                if isinstance(value, bool) or not isinstance(value, types):
                    raise ValueError(f"TrainConfig.{f.name} must be a {f.type}, got {value!r}")
        positive = (
            "batch_size",
            "learning_rate",
            "max_epochs",
            "patience",
            "shuffle_buffer",
            "nproc_per_node",
        )
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ValueError(f"TrainConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.trainable not in TRAINABLE:
            raise ValueError(
                f"TrainConfig.trainable must be one of {', '.join(TRAINABLE)}, "
                f"got {self.trainable!r}"
            )
        if self.data_order not in DATA_ORDERS:
            raise ValueError(
                f"TrainConfig.data_order must be one of {', '.join(DATA_ORDERS)}, "
                f"got {self.data_order!r}"
            )
        if self.frozen_batchnorm not in FROZEN_BATCHNORM:
            raise ValueError(
                f"TrainConfig.frozen_batchnorm must be one of {', '.join(FROZEN_BATCHNORM)}, "
                f"got {self.frozen_batchnorm!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                f"got {self.lr_schedule!r}"
            )
        for name in (
            "weight_decay",
            "num_workers",
            "checkpoint_every_steps",
            "num_threads",
            "warmup_epochs",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build a config from a mapping (a params.yaml section); unknown keys are errors.

        Float fields also take numeric strings: YAML 1.1 readers (PyYAML's safe_load) give `3e-4`
        (no dot) as a string; `params.load_params` itself reads it as a number.
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        message = unknown_keys("TrainConfig", d, list(fields))
        if message:
            raise ValueError(message)
        values = dict(d)
        for name, value in d.items():
            if fields[name].type == "float" and isinstance(value, str):
                try:
                    values[name] = float(value)
                except ValueError:
                    raise ValueError(f"TrainConfig.{name} must be a float, got {value!r}") from None
        return cls(**values)

    def asdict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DATA_ORDERS = ("shards", "official")
LR_SCHEDULES = ("constant", "cosine", "linear")
TRAINABLE = ("all", "film_generator")
FROZEN_BATCHNORM = ("train", "eval")
