"""Models trained with the official FiLM code (github.com/ethanjperez/film), read into this project.

    filmclevr-import-official official.pt models/official.pt
    filmclevr-import-official official.pt models/official.pt --vocab-out data/official_vocab.json
    python -m filmclevr.official ...   (the same)

The official `scripts/train_model.py` saves one `.pt` holding the FiLM generator (`FiLMGen`) and
the FiLMed network (`FiLMedNet`) as two modules, each as its constructor's arguments and its
state dict (`program_generator_kwargs` / `program_generator_state`, `execution_engine_kwargs` /
`execution_engine_state`), beside the vocabulary (`vocab`), the command line (`args`) and the
run's statistics (`best_val_acc`, `model_t`, ...). `convert` writes such a file as this project's
checkpoint (`checkpoint.py`) with its record beside it (OUT with `.json`, as models/film.json
beside models/film.pt: the run's validation checks), so that the evaluate_model, submit_test and
analyze_model stages and `filmclevr-ask` read it.

Only the `film_pixels` family converts: a FiLM model on raw pixels with a GRU FiLM generator, whose
every option `FiLMConfig` expresses with the same computation. Anything else (a FiLM model on
ResNet features, another module type, an option this project lacks) is refused, naming the file
and the option. `NAME_MAPPING` is the one statement of how the official parameter names map onto
this project's modules; `tests/test_official_golden.py` loads the official code's own weights
through it and checks the outputs bit for bit.

The file is read with `torch.load(weights_only=True)`: tensors and plain Python data only, never
an arbitrary object (unpickling one can run code). A file holding one is refused with what to do.

--vocab-out writes the vocabulary as a clevr-iep `vocab.json`: give it to `tokenize_questions.vocab`
so that the workflow's questions are encoded with the indices the model was trained on.

Exit status: 0 converted; 1 bad input (one line on stderr naming the file); 2 usage.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from filmclevr.checkpoint import CHECKPOINT_FORMAT, save_checkpoint, weights_sha256
from filmclevr.configs import FILM_PLACEMENTS
from filmclevr.fileio import file_sha256, write_json_atomic
from filmclevr.model import FiLMConfig, FiLMedNet, count_parameters
from filmclevr.tokenize import check_vocab

log = logging.getLogger(__name__)

__all__ = [
    "NAME_MAPPING",
    "OfficialCheckpointError",
    "convert",
    "main",
    "official_record",
    "project_config",
    "project_name",
    "project_state_dict",
    "read_official_checkpoint",
    "record_path",
    "unverified_options",
]

# Official state-dict name -> this project's, per official module: (module, pattern, project
# name). Below these prefixes the names are the same: the project named its submodules after the
# official ones (`encoder_rnn`, `input_proj`, `conv1`, `bn1`, the stem's and classifier's
# Sequential indices), so only where each part hangs differs. FiLMedNet registers its ResBlocks
# as children "0", "1", ...; here they live in `filmed_net.res_blocks`.
NAME_MAPPING: tuple[tuple[str, str, str], ...] = (
    ("FiLMGen", r"(?P<rest>.+)", "film_generator.{rest}"),
    ("FiLMedNet", r"stem\.(?P<rest>.+)", "filmed_net.stem.{rest}"),
    ("FiLMedNet", r"(?P<block>\d+)\.(?P<rest>.+)", "filmed_net.res_blocks.{block}.{rest}"),
    ("FiLMedNet", r"classifier\.(?P<rest>.+)", "filmed_net.classifier.{rest}"),
)
# The two modules as the official checkpoint holds them: (module, kwargs key, state key).
MODULES: tuple[tuple[str, str, str], ...] = (
    ("FiLMGen", "program_generator_kwargs", "program_generator_state"),
    ("FiLMedNet", "execution_engine_kwargs", "execution_engine_state"),
)
FAMILY = (
    "only the official film_pixels family converts (model_type FiLM on raw pixels, feature_dim "
    "3,S,S, a GRU FiLM generator with a linear decoder, options that FiLMConfig expresses)"
)
# Official options that do not change what the trained model computes.
_IGNORED = {
    "FiLMGen": {"decoder_vocab_size", "debug_every"},  # the program vocabulary: unused by FiLM
    "FiLMedNet": {"vocab", "debug_every", "print_verbose_every", "verbose"},
}
_CONDITION_METHODS = {official: ours for ours, official in FILM_PLACEMENTS.items()}
_RESTRICTED_GAMMAS = ("sigmoid", "tanh", "exp")
# The FiLMConfig options that choose a computation rather than a width. The official code's own
# outputs (tests/data/official_golden/) check the film_pixels model, each of these at its
# FiLMConfig() default (and a classifier projection, classifier_proj_dim > 0); another value
# converts by reading the official source, unchecked by its outputs, and the conversion says so.
CHECKED_COMPUTATION = (
    "rnn_num_layers",
    "stem_num_layers",
    "stem_kernel_size",
    "stem_stride",
    "stem_padding",
    "module_kernel_size",
    "stem_batchnorm",
    "use_coords",
    "use_gamma",
    "use_beta",
    "gamma_option",
    "film_placement",
    "condition_pattern",
    "residual",
    "module_batchnorm",
    "classifier_batchnorm",
    "dropout",
)


class OfficialCheckpointError(ValueError):
    """An official checkpoint that cannot be converted; the message names the file."""


# --- Names ---------------------------------------------------------------------------------------
def project_name(module: str, key: str) -> str:
    """This project's state-dict name of `key` of the official `module` ("FiLMGen", "FiLMedNet").

    Raises:
        KeyError: no rule of NAME_MAPPING covers it.
    """
    for owner, pattern, target in NAME_MAPPING:
        if owner == module and (match := re.fullmatch(pattern, key)):
            return target.format(**match.groupdict())
    raise KeyError(f"{module}.{key}")


def project_state_dict(
    generator_state: Mapping[str, Tensor],
    network_state: Mapping[str, Tensor],
    model: FiLMedNet,
    source: str | Path = "official state",
) -> dict[str, Tensor]:
    """The official FiLMGen and FiLMedNet state dicts renamed onto `model`, every name and shape
    checked, ready for `model.load_state_dict`.

    Raises:
        OfficialCheckpointError: a tensor `model` lacks or shapes otherwise, or one it misses.
    """
    expected = model.state_dict()
    state: dict[str, Tensor] = {}
    for (module, _, _), official in zip(MODULES, (generator_state, network_state), strict=True):
        for key, value in official.items():
            try:
                name = project_name(module, key)
            except KeyError:
                name = None
            if name not in expected:
                raise OfficialCheckpointError(
                    f"{source}: {module} holds {key!r}, which this project's model has no "
                    f"place for; {FAMILY}"
                )
            if not isinstance(value, Tensor) or value.shape != expected[name].shape:
                shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise OfficialCheckpointError(
                    f"{source}: {module} {key!r} is {shape}, but its configuration gives "
                    f"{tuple(expected[name].shape)} ({name})"
                )
            state[name] = value
    for name in expected:
        # PyTorch before 0.4.1, which the official code was written for, kept no BatchNorm
        # batch counter; load_state_dict itself starts a missing one at 0 for such old dicts.
        if name not in state and name.endswith(".num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.long)
    missing = [name for name in expected if name not in state]
    if missing:
        more = ", ..." if len(missing) > 5 else ""
        raise OfficialCheckpointError(
            f"{source}: the official state dicts lack {len(missing)} tensors of the model their "
            f"configuration describes: {', '.join(missing[:5])}{more}"
        )
    return {name: state[name] for name in expected}


# --- Configuration -------------------------------------------------------------------------------
class _Options:
    """One official kwargs dict, read option by option; errors name the file and the option."""

    def __init__(self, kwargs: Any, module: str, kwargs_key: str, source: str | Path) -> None:
        if not isinstance(kwargs, Mapping):
            raise OfficialCheckpointError(f"{source}: {kwargs_key} is not a dict of arguments")
        self.kwargs, self.where, self.source = kwargs, kwargs_key, source
        self.read: set[str] = set(_IGNORED[module])

    def refuse(self, option: str, why: str) -> OfficialCheckpointError:
        value = self.kwargs.get(option)
        return OfficialCheckpointError(
            f"{self.source}: {self.where}[{option!r}] = {value!r}: {why}; {FAMILY}"
        )

    def get(self, option: str) -> Any:
        self.read.add(option)
        if option not in self.kwargs:
            raise OfficialCheckpointError(
                f"{self.source}: {self.where} lacks {option!r} (train_model.py of "
                "github.com/ethanjperez/film writes it: a checkpoint of another version?)"
            )
        return self.kwargs[option]

    def flag(self, option: str) -> bool:
        value = self.get(option)
        if value not in (0, 1) or isinstance(value, float):
            raise self.refuse(option, "expected true/false or 0/1")
        return bool(value)

    def integer(self, option: str, low: int = 1) -> int:
        value = self.get(option)
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.refuse(option, f"expected an integer >= {low}")
        return value

    def require(self, option: str, allowed: tuple[Any, ...], why: str) -> Any:
        value = self.get(option)
        if value not in allowed:
            raise self.refuse(option, why)
        return value

    def optional(self, option: str, allowed: tuple[Any, ...], why: str) -> None:
        """An option the official constructor defaults to one of `allowed` when absent."""
        if option in self.kwargs:
            self.require(option, allowed, why)
        self.read.add(option)

    def check_all_read(self) -> None:
        unknown = sorted(set(self.kwargs) - self.read)
        if unknown:
            raise self.refuse(unknown[0], "an option this converter does not know")


def project_config(
    generator_kwargs: Any, network_kwargs: Any, source: str | Path = "official checkpoint"
) -> FiLMConfig:
    """The FiLMConfig computing what the official FiLMGen(**generator_kwargs) and
    FiLMedNet(**network_kwargs) compute.

    Raises:
        OfficialCheckpointError: not the film_pixels family; names `source` and the option.
    """
    gen = _Options(generator_kwargs, "FiLMGen", "program_generator_kwargs", source)
    net = _Options(network_kwargs, "FiLMedNet", "execution_engine_kwargs", source)

    feature_dim = net.get("feature_dim")
    pixels = isinstance(feature_dim, list | tuple) and len(feature_dim) == 3
    if not pixels or feature_dim[0] != 3 or feature_dim[1] != feature_dim[2]:
        raise net.refuse(
            "feature_dim", "a FiLM model on image features (e.g. ResNet-101's), not raw pixels"
        )
    image_size = int(feature_dim[1])

    gen.require("encoder_type", ("gru",), "this project's generator is a GRU")
    gen.require("decoder_type", ("linear",), "this project's generator decodes with one linear")
    gen.require("bidirectional", (False, 0), "this project's GRU is unidirectional")
    gen.require("output_batchnorm", (False, 0), "this project's generator has no output BatchNorm")
    gen.require("parameter_efficient", (True, 1), "the older layout of FiLM parameters")
    gen.require("module_num_layers", (1,), "one FiLMed layer per ResBlock")
    net.require("module_num_layers", (1,), "one FiLMed layer per ResBlock")
    gen.optional("null_token", (0,), "<NULL> is token 0 here")
    gen.optional("start_token", (1,), "<START> is token 1 here")
    gen.optional("end_token", (2,), "<END> is token 2 here")
    gen.optional("encoder_embed", (None,), "pretrained embeddings are not an option here")
    rnn_num_layers = gen.integer("rnn_num_layers")
    if rnn_num_layers > 1:  # GRU dropout acts only between layers
        gen.require("rnn_dropout", (0, 0.0), "this project's GRU has no dropout")
    else:
        gen.get("rnn_dropout")

    gamma_option = gen.require("gamma_option", ("linear", *_RESTRICTED_GAMMAS), "unknown")
    # The official code adds gamma_baseline after gamma_option's function; here "linear" is
    # 1 + delta gamma and the restricted options are the function alone (model.py).
    baseline = 1 if gamma_option == "linear" else 0
    ours = "1 + delta gamma" if baseline else f"{gamma_option}(delta gamma)"
    why = f"with gamma_option {gamma_option!r} gamma is {ours} here, so only {baseline} matches"
    gen.require("gamma_baseline", (baseline,), why)

    num_blocks = net.integer("num_modules")
    channels = net.integer("module_dim")
    for option, value in (("num_modules", num_blocks), ("module_dim", channels)):
        if gen.get(option) != value:
            raise gen.refuse(option, f"execution_engine_kwargs[{option!r}] is {value}")

    net.require("module_batchnorm_affine", (False, 0), "FiLMed BatchNorm has no affine here")
    net.require("module_input_proj", (1,), "Conv-1 is a 1x1 convolution here")
    net.require("classifier_downsample", ("maxpoolfull",), "the classifier pools globally here")
    use_coords = net.require("use_coords", (0, 1), "coordinate maps only on Conv-1 and classifier")
    stride = net.integer("stem_stride")
    if stride == 1 and use_coords:  # the official stem then reads the coordinate maps too
        raise net.refuse("stem_stride", "stride 1 feeds coordinate maps to the stem")
    kernel = net.integer("stem_kernel_size")
    padding = net.get("stem_padding")
    if padding is None:  # the official build_stem's default, defined for odd kernels only
        if kernel % 2 == 0:
            raise net.refuse("stem_padding", "no default padding for an even stem kernel")
        padding = kernel // 2
    elif isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise net.refuse("stem_padding", "expected an integer >= 0")

    fc_layers = net.get("classifier_fc_layers")
    if not isinstance(fc_layers, list | tuple) or len(fc_layers) != 1:
        raise net.refuse("classifier_fc_layers", "the classifier has one hidden layer here")
    module_dropout, classifier_dropout = net.get("module_dropout"), net.get("classifier_dropout")
    if module_dropout != classifier_dropout:
        raise net.refuse("module_dropout", "one dropout serves ResBlocks and classifier here")

    method = net.require("condition_method", tuple(_CONDITION_METHODS), "not a FiLM placement")
    pattern = net.get("condition_pattern")
    if not isinstance(pattern, list | tuple) or not all(isinstance(v, int) for v in pattern):
        raise net.refuse("condition_pattern", "expected a list of 0/1")

    values = {
        "image_size": image_size,
        "word_embedding_dim": gen.integer("wordvec_dim"),
        "rnn_hidden_dim": gen.integer("hidden_dim"),
        "rnn_num_layers": rnn_num_layers,
        "stem_num_layers": net.integer("stem_num_layers"),
        "stem_channels": channels,  # the official stem outputs module_dim channels
        "stem_kernel_size": kernel,
        "stem_stride": stride,
        "stem_padding": padding,
        "stem_batchnorm": net.flag("stem_batchnorm"),
        "num_blocks": num_blocks,
        "module_channels": channels,
        "module_kernel_size": net.integer("module_kernel_size"),
        "use_coords": bool(use_coords),
        "use_gamma": net.flag("use_gamma"),
        "use_beta": net.flag("use_beta"),
        "gamma_option": gamma_option,
        "film_placement": _CONDITION_METHODS[method],
        "condition_pattern": [int(v > 0) for v in pattern] if len(pattern) else None,
        "residual": net.flag("module_residual"),
        "module_batchnorm": net.flag("module_batchnorm"),
        "classifier_proj_dim": net.integer("classifier_proj_dim"),
        "classifier_fc_dim": int(fc_layers[0]),
        "classifier_batchnorm": net.flag("classifier_batchnorm"),
        "dropout": module_dropout,
    }
    gen.get("encoder_vocab_size")  # checked against the vocabulary by `convert`
    gen.check_all_read()
    net.check_all_read()
    try:
        return FiLMConfig(**values)
    except ValueError as e:
        raise OfficialCheckpointError(f"{source}: {e}; {FAMILY}") from None


def unverified_options(config: FiLMConfig) -> dict[str, Any]:
    """The options of `config` (CHECKED_COMPUTATION) at another value than the one the official
    code's own outputs check; a condition pattern of every block is the default's."""
    checked = FiLMConfig()
    unchecked = {}
    for option in CHECKED_COMPUTATION:
        value = getattr(config, option)
        if option == "condition_pattern" and value is not None and all(value):
            continue
        if value != getattr(checked, option):
            unchecked[option] = value
    if config.classifier_proj_dim == 0:  # no 1x1 projection before the classifier's pooling
        unchecked["classifier_proj_dim"] = 0
    return unchecked


# --- Reading and converting ----------------------------------------------------------------------
def read_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """The official checkpoint at `path`, read safely (tensors and plain data only) to the CPU.

    Raises:
        FileNotFoundError: no file at `path`.
        OfficialCheckpointError: damaged, not a checkpoint of the official code, or holding an
            object other than tensors and plain data (the message says what to do).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: official checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged pickle fails in many ways (EOFError, KeyError, ...)
        text = str(e)
        unsafe = re.search(r"GLOBAL ([\w.]+)", text)  # torch names what it refused to import
        if unsafe:
            raise OfficialCheckpointError(
                f"{path}: holds an object of type {unsafe.group(1)} besides tensors and plain "
                "data, and objects are never unpickled here (that can run code). If you trust "
                "the file, re-save the parts the import reads where the official code runs: "
                "c = torch.load(PATH, weights_only=False); torch.save({k: c[k] for k in "
                "('vocab', 'program_generator_kwargs', 'program_generator_state', "
                "'execution_engine_kwargs', 'execution_engine_state')}, NEW_PATH)"
            ) from None
        detail = re.search(r"WeightsUnpickler error: (.+)", text)  # past torch's preamble
        first = detail.group(1) if detail else (text.strip().splitlines() or [""])[0]
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise OfficialCheckpointError(
            f"{path}: not a readable checkpoint, damaged or truncated ({reason})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise OfficialCheckpointError(f"{path}: not a checkpoint of the official FiLM code")
    if checkpoint.get("format") == CHECKPOINT_FORMAT:
        raise OfficialCheckpointError(f"{path}: already a {CHECKPOINT_FORMAT} checkpoint")
    args = checkpoint.get("args")
    if isinstance(args, Mapping) and args.get("model_type", "FiLM") != "FiLM":
        raise OfficialCheckpointError(
            f"{path}: args['model_type'] = {args['model_type']!r}, not a FiLM model; {FAMILY}"
        )
    lacking = [key for _, *keys in MODULES for key in keys if key not in checkpoint]
    if lacking:
        raise OfficialCheckpointError(
            f"{path}: not a checkpoint of the official FiLM code (no {', '.join(lacking)})"
        )
    for _, _, state_key in MODULES:
        state = checkpoint[state_key]
        if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
            raise OfficialCheckpointError(f"{path}: {state_key} is not a state dict of tensors")
    return checkpoint


def _plain(value: Any) -> Any:
    """`value` with tuples as lists, for the checkpoint's record of the official arguments."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# The official scripts/train_model.py's --batch_size default, for a file whose args lack it.
OFFICIAL_BATCH_SIZE = 64


def record_path(out_path: str | Path) -> Path:
    """Where `convert` writes the checkpoint's record: beside it, as train_model writes
    models/film.json beside models/film.pt."""
    return Path(out_path).with_suffix(".json")


def official_history(official: Mapping[str, Any], batch_size: int) -> list[dict[str, Any]]:
    """The official run's validation checks as a history of this project's (the rows
    `evaluate.learning_curve` reads): step = the official iteration `val_accs_ts`, questions
    seen = step x batch size, accuracies as fractions. An official run checks every
    `checkpoint_every` iterations, not per epoch, so a row's `epoch` is None. Empty where the
    statistics are missing or do not line up (one accuracy per check)."""
    steps = official.get("val_accs_ts") or []
    val = official.get("val_accs") or []
    train = official.get("train_accs") or []
    if not (len(steps) == len(val) == len(train)):
        return []
    try:
        return [
            {
                "epoch": None,
                "step": int(step),
                "questions_seen": int(step) * batch_size,
                "val_accuracy": float(val_accuracy),
                "train_accuracy": float(train_accuracy),
            }
            for step, val_accuracy, train_accuracy in zip(steps, val, train, strict=True)
        ]
    except (TypeError, ValueError):  # statistics of another kind than numbers: no history
        return []


def official_record(official: Mapping[str, Any], checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The record train_model writes beside a checkpoint (models/film.json), for the converted
    checkpoint of `official`: what the stages that read a record need (evaluate_model draws its
    history, the official run's own validation checks, beside the paper's curve)."""
    args = official.get("args")
    args = args if isinstance(args, Mapping) else {}
    batch_size = int(args.get("batch_size") or OFFICIAL_BATCH_SIZE)
    return {
        "model_config": checkpoint["model_config"],
        "train_config": {"batch_size": batch_size},
        "epoch": checkpoint["epoch"],
        "val_accuracy": official.get("best_val_acc"),
        "parameters": checkpoint["parameters"],
        "world_size": 1,
        "fingerprint": checkpoint["fingerprint"],
        "history": official_history(official, batch_size),
        "official": {
            k: checkpoint["official"][k] for k in ("source", "sha256", "unverified_options")
        },
    }


def convert(official_path: str | Path, out_path: str | Path) -> dict[str, Any]:
    """Write the official checkpoint at `official_path` as this project's checkpoint `out_path`,
    with its record beside it (`record_path`: what train_model writes as models/film.json), so
    that the stages take it as one of this project's.

    Returns:
        the checkpoint written (as `checkpoint.load_checkpoint` reads it back).

    Raises:
        FileNotFoundError: no file at `official_path`.
        OfficialCheckpointError: not convertible; the message names the file and the reason.
    """
    official_path, out_path = Path(official_path), Path(out_path)
    official = read_official_checkpoint(official_path)
    generator_kwargs = official["program_generator_kwargs"]
    network_kwargs = official["execution_engine_kwargs"]
    config = project_config(generator_kwargs, network_kwargs, official_path)
    raw_vocab = official.get("vocab")
    if raw_vocab is None and isinstance(network_kwargs, Mapping):
        raw_vocab = network_kwargs.get("vocab")  # FiLMedNet's own copy
    vocab = check_vocab(raw_vocab, f"{official_path}: vocab")
    vocab_size = len(vocab["question_token_to_idx"])
    if generator_kwargs["encoder_vocab_size"] != vocab_size:
        raise OfficialCheckpointError(
            f"{official_path}: program_generator_kwargs['encoder_vocab_size'] = "
            f"{generator_kwargs['encoder_vocab_size']}, but the vocabulary has {vocab_size} "
            "question tokens"
        )
    num_answers = len(vocab["answer_token_to_idx"])
    model = FiLMedNet(config, vocab_size, num_answers)
    state = project_state_dict(
        official["program_generator_state"],
        official["execution_engine_state"],
        model,
        official_path,
    )
    model.load_state_dict(state)
    weights = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_config": config.asdict(),
        "vocab": vocab,
        "vocab_size": vocab_size,
        "num_answers": num_answers,
        "model": weights,
        # What a fine-tuning run from it knows its start by (checkpoint.start_identity; a run
        # here: its own); model_t alone, the step, is the same for many official runs.
        "fingerprint": f"weights:{weights_sha256(weights)}",
        "parameters": count_parameters(model),
        "torch_version": str(torch.__version__),
        # The official code counts iterations; an epoch is recorded only by some versions.
        "epoch": official.get("model_epoch"),
        "step": official.get("model_t"),
        # Evaluation labels its results with where the model was trained: unknown here.
        "machine": {"processor": "unknown (the official FiLM code's run)", "torch": "unknown"},
        "official": {
            "source": str(official_path),
            "sha256": file_sha256(official_path),
            "unverified_options": unverified_options(config),
            "best_val_acc": official.get("best_val_acc"),
            "program_generator_kwargs": _plain(generator_kwargs),
            "execution_engine_kwargs": _plain(
                {k: v for k, v in network_kwargs.items() if k != "vocab"}
            ),
        },
    }
    if record_path(out_path).resolve() == out_path.resolve():
        raise ValueError(f"{out_path}: the checkpoint's record would be written over it (.json)")
    record = official_record(official, checkpoint)  # before anything is written
    save_checkpoint(out_path, checkpoint)
    write_json_atomic(record_path(out_path), record)
    unverified = checkpoint["official"]["unverified_options"]
    if unverified:
        log.warning(
            "%s: %s: the official code's own outputs check none of these values (the "
            "conversion follows the official source; the golden files cover the film_pixels "
            "defaults only)",
            out_path,
            ", ".join(f"{k}={v!r}" for k, v in unverified.items()),
        )
    return checkpoint


# --- Command line --------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status."""
    p = argparse.ArgumentParser(
        prog="filmclevr-import-official",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("official", type=Path, help="checkpoint written by the official code (.pt)")
    p.add_argument("out", type=Path, help="this project's checkpoint to write (e.g. models/x.pt)")
    p.add_argument(
        "--vocab-out",
        type=Path,
        metavar="VOCAB.json",
        help="also write the model's vocabulary as a clevr-iep vocab.json",
    )
    args = p.parse_args(argv)
    try:
        record = record_path(args.out)
        for path in (args.out, record):
            if path.resolve() == args.official.resolve():
                raise ValueError(f"{path}: would overwrite the official checkpoint it reads")
        if args.vocab_out is not None:
            written = (
                (args.official, "official checkpoint"),
                (args.out, "checkpoint"),
                (record, "checkpoint's record"),
            )
            for path, what in written:
                if args.vocab_out.resolve() == path.resolve():
                    raise ValueError(
                        f"--vocab-out {args.vocab_out}: would overwrite the {what} {path}"
                    )
        checkpoint = convert(args.official, args.out)
        if args.vocab_out is not None:
            write_json_atomic(args.vocab_out, checkpoint["vocab"])
    except (OSError, ValueError) as e:  # bad input: one line, no traceback
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    config = checkpoint["model_config"]
    print(
        f"{args.out}: the official FiLM model of {args.official}, "
        f"{config['image_size']}-pixel images, {config['num_blocks']} ResBlocks of "
        f"{config['module_channels']} channels, {checkpoint['vocab_size']} question tokens, "
        f"{checkpoint['num_answers']} answers, {checkpoint['parameters']['total']:,} parameters; "
        f"its record: {record_path(args.out)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
