"""Load the workflow parameters and validate them: the one schema, then what spans sections and
the model and recipe sections against FiLMConfig and TrainConfig themselves.

Both engines read the same parameters: Snakemake loads its --configfile (else params.yaml)
through `load_params` when the Snakefile is parsed (so `snakemake -n` refuses a bad profile),
DVC tracks the keys of params.yaml, and every stage entry point calls `load_params` (so DVC's
first stage refuses it). Nothing a later stage would trip over is left for it to find after
hours of data stages.

The profiles are config/*.yaml. The demo, config/demo.yaml, is complete; every other one names
its base and lists only what it changes; `load_params` resolves a profile on its bases
(`resolve`, whose docstring states the merge rule). params.yaml, the one file DVC tracks, is
generated: `filmclevr-params` writes a profile there, resolved and complete (the committed one
is the demo's, and a test keeps it so):

    filmclevr-params config/mini-large.yaml && dvc repro
    filmclevr-params config/demo.yaml        # the demo again
"""

from __future__ import annotations

import argparse
import copy
import functools
import hashlib
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from filmclevr import clevr
from filmclevr.configs import ABLATIONS, FiLMConfig, TrainConfig, unknown_keys
from filmclevr.fileio import atomic_path

SCHEMA_RESOURCE = "schemas/params.schema.yaml"
# The two keys of a profile written as differences that are not parameters: the file it is
# based on (a path relative to the profile's own folder), and the mappings it gives whole.
BASE_KEY = "base"
REPLACE_KEY = "replace"
# The first line of a params.yaml that filmclevr-params wrote, followed by the profile's path
# (`profile_text` says which), and the header's last line: the checksum that tells an unchanged
# file from one edited by hand.
WRITTEN_BY = "# Written by filmclevr-params from "
GENERATED = (
    "# generated: edit config/<profile>.yaml, then run filmclevr-params config/<profile>.yaml.\n"
    "# This is that profile resolved on its bases, the complete parameters DVC tracks and both\n"
    "# engines read by default; filmclevr-params config/demo.yaml writes the demo again.\n"
)
CHECKSUM_LINE = "# sha256 of the lines below: "
# regression.tolerance, as the CI gate (filmclevr.regression) applies it: the accuracies it holds
# to the baseline (each may have its own tolerance), and the numeric paths a tolerance may be
# written per (a run's context.precision, evaluate.precision_name), each with its baseline.
GATE_METRICS: tuple[str, ...] = ("overall", *clevr.QUESTION_TYPES)
PRECISIONS: tuple[str, ...] = ("bf16", "float32")


# YAML 1.2's core schema for booleans and numbers (tag, pattern, the characters it starts with),
# as DVC reads params.yaml. PyYAML reads YAML 1.1: `010` as 8, `yes`, `no`, `on` and `off` as
# booleans, `1:30` as 90, `3e-4` (no dot) as a string. Ints come before floats: both match `10`.
_YAML_1_2_SCALARS = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "tag:yaml.org,2002:float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+.0123456789",
    ),
)


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading booleans and numbers by YAML 1.2's core schema: `010` is
    10, `0o10` 8, `yes` and `off` strings, only true and false booleans, `3e-4` a float."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [
        (tag, regexp) for tag, regexp in resolvers if tag not in {t for t, *_ in _YAML_1_2_SCALARS}
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _tag, _pattern, _first in _YAML_1_2_SCALARS:
    _Yaml12Loader.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


def _construct_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 integer: decimal (leading zeros and all), 0o octal or 0x hexadecimal."""
    value = loader.construct_scalar(node)
    if re.fullmatch(r"[-+]?[0-9]+", value):
        return int(value, 10)
    if re.fullmatch(r"0o[0-7]+|0x[0-9a-fA-F]+", value):
        return int(value[2:], 8 if value[1] == "o" else 16)
    raise yaml.constructor.ConstructorError(
        None, None, f"{value!r} is not a YAML 1.2 integer", node.start_mark
    )


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _first_duplicate_key(node: yaml.Node, path: str = "") -> tuple[str, yaml.Node] | None:
    """The dotted path and node of the first key given twice in one mapping, or None.

    PyYAML (and so Snakemake) keeps the last value of a repeated key without a word, while DVC
    refuses the file: one engine would run parameters the other never sees.
    """
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            dotted = f"{path}.{key}" if path else key
            if key in seen:
                return dotted, key_node
            seen.add(key)
            if found := _first_duplicate_key(value_node, dotted):
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            if found := _first_duplicate_key(item, f"{path}[{i}]"):
                return found
    return None


class _ProfileDumper(yaml.SafeDumper):
    """Writes parameters as a profile is written by hand: mappings as blocks, a list of plain
    values on one line (`splits: [train, val, test]`), other lists indented under their key."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    plain = all(not isinstance(item, dict | list) for item in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=plain)


_ProfileDumper.add_representer(list, _represent_list)
# Quote a string that either YAML reads as another type (`'yes'` for YAML 1.1, `'0o10'` for 1.2).
for _tag, _pattern, _first in _YAML_1_2_SCALARS:
    _ProfileDumper.add_implicit_resolver(_tag, re.compile(_pattern), list(_first))


class ParamsError(ValueError):
    """A parameters file is missing, unreadable or breaks the schema; the message names it."""


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `params.yaml` (a copy: the caller may change it)."""
    return copy.deepcopy(_schema())


@functools.cache
def _schema() -> dict[str, Any]:
    """The schema, read once (parsing it costs more than validating a profile); never changed."""
    text = resources.files("filmclevr").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _cross_key_errors(params: dict[str, Any]) -> list[str]:
    """Facts that span sections, which the schema cannot state (params already fit it)."""
    errors = []
    if "image_size" in params["model"]:
        errors.append(
            f"  model.image_size: {params['model']['image_size']!r} is not a parameter: the "
            "model's input size is resize_images.image_size "
            f"({params['resize_images']['image_size']!r}); remove model.image_size"
        )
    data = params["get_data"]
    if data["source"] == "mini":
        missing = [s for s in data["splits"] if s not in data["mini"]["images"]]
        if missing:
            errors.append(
                f"  get_data.mini.images: no image count for split(s) {', '.join(missing)} "
                "listed in get_data.splits"
            )
        stray = [s for s in data["mini"].get("split_settings", {}) if s not in data["splits"]]
        if stray:
            errors.append(
                f"  get_data.mini.split_settings: split(s) {', '.join(stray)} not in "
                "get_data.splits"
            )
    errors += _split_role_errors(params)
    errors += _humans_errors(params)
    errors += _recipe_errors(params)
    errors += _tolerance_errors(params)
    return errors


def per_precision(tolerance: Any) -> bool:
    """Whether a regression.tolerance is written per precision (its keys are PRECISIONS)."""
    return isinstance(tolerance, Mapping) and bool(tolerance) and set(tolerance) <= set(PRECISIONS)


def tolerances(tolerance: float | Mapping[str, float]) -> dict[str, float]:
    """Each metric's tolerance from one precision's regression.tolerance: one number for every
    metric, or a mapping that must name exactly GATE_METRICS; every value finite and >= 0 (JSON
    Schema's minimum lets NaN pass, and a NaN tolerance would let every drop pass the gate).

    Raises:
        ValueError: naming the keys or values at fault.
    """
    if isinstance(tolerance, Mapping):
        if set(tolerance) != set(GATE_METRICS):
            raise ValueError(
                f"tolerance names {sorted(tolerance)}; it must name exactly {list(GATE_METRICS)}"
            )
        values = {name: float(tolerance[name]) for name in GATE_METRICS}
    else:
        values = dict.fromkeys(GATE_METRICS, float(tolerance))
    bad = {name: v for name, v in values.items() if not (math.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"tolerance must be a finite number >= 0, got {bad}")
    return values


def _tolerance_errors(params: dict[str, Any]) -> list[str]:
    """Each precision's regression.tolerance checked as the gate checks it (`tolerances`), so a
    NaN is refused before the pipeline runs, not by the gate after it."""
    tolerance = params["regression"]["tolerance"]
    parts = (
        {f".{p}": part for p, part in tolerance.items()}
        if per_precision(tolerance)
        else {"": tolerance}
    )
    errors = []
    for suffix, part in parts.items():
        try:
            tolerances(part)
        except (ValueError, TypeError) as e:
            errors.append(f"  regression.tolerance{suffix}: {e}")
    return errors


def _humans_errors(params: dict[str, Any]) -> list[str]:
    """CLEVR-Humans asks about the images of CLEVR's train, val and test splits: those of CLEVR
    v1.0 for the release, those of the mini-CLEVR tree for the stand-in."""
    errors = []
    splits = params["get_data"]["splits"]
    for source in params.get("humans", {}).get("sources", []):
        if source != params["get_data"]["source"]:
            images = "CLEVR v1.0's" if source == "clevr" else "the mini-CLEVR tree's"
            errors.append(
                f"  humans.sources: {source!r} asks about {images} images, but get_data.source "
                f"is {params['get_data']['source']!r}"
            )
        missing = [s for s in ("train", "val", "test") if s not in splits]
        if missing:
            errors.append(
                f"  humans.sources: CLEVR-Humans asks about the images of train, val and test; "
                f"get_data.splits {splits} lacks {', '.join(missing)}"
            )
    return errors


def _split_role_errors(params: dict[str, Any]) -> list[str]:
    """Every split a section names is one of get_data.splits and has the answers its role needs
    (a test split has none: training on one crashed after all the data stages)."""
    splits = params["get_data"]["splits"]
    errors = [
        f"  get_data.splits: {split!r} is the {role} split (the {place} of get_data.splits) but "
        "a test split has no answers; list the training and the validation split first"
        for role, place, split in (
            ("training", "first", splits[0]),
            ("validation", "second", splits[1]),
        )
        if clevr.is_test_split(split)
    ]
    for key in ("evaluate_model", "analyze_model"):
        split = params[key]["split"]
        if split not in splits:
            errors.append(f"  {key}.split: {split!r} is not one of get_data.splits {splits}")
    for key in ("evaluate_model", "analyze_model"):  # test answers are predicted, not scored
        if clevr.is_test_split(params[key]["split"]):
            errors.append(
                f"  {key}.split: {params[key]['split']!r} is a test split, which has no answers "
                "to score (the validation split has)"
            )
    for i, phase in enumerate(params.get("curriculum") or []):
        if problem := training_split_problem(splits, phase["split"]):
            errors.append(f"  curriculum[{i}].split: {problem}")
    for split in params["cogent"]["transfer"]:
        if problem := transfer_split_problem(params, split):
            errors.append(f"  {problem}")
    return errors


def training_split_problem(splits: list[str], split: str) -> str | None:
    """Why `split` cannot be trained on after the main training (a curriculum phase), or None."""
    if split not in splits or split == splits[1]:
        return (
            f"{split!r} is not a training split of get_data.splits ({', '.join(splits)}; "
            f"{splits[1]!r} validates)"
        )
    if clevr.is_test_split(split):
        return f"{split!r} is a test split: it has no answers to train on"
    return None


def transfer_split_problem(params: dict[str, Any], split: str) -> str | None:
    """Why `split` cannot be a CoGenT transfer split (cogent.transfer), or None: it must be
    CoGenT's answered B split (valB), after a model trained on trainA, with fine-tuning sizes."""
    splits = params["get_data"]["splits"]
    if split not in splits:
        return f"cogent.transfer names {split!r}, not one of get_data.splits {splits}"
    if clevr.cogent_condition(split) != "B" or clevr.is_test_split(split):
        return f"cogent.transfer: {split!r} is not CoGenT's answered B split (valB)"
    if not params["cogent"]["finetune_questions"]:
        return "cogent.finetune_questions is empty: give at least one size (30000)"
    if clevr.cogent_condition(splits[0]) != "A":
        return f"get_data.splits must start with CoGenT's trainA, not {splits[0]!r}"
    return None


def _recipe_errors(params: dict[str, Any]) -> list[str]:
    """The model and recipe sections built into FiLMConfig and TrainConfig, as the stages will
    build them: unknown keys (with the closest known one), wrong types, values out of range.
    The sections that change the recipe for some runs (curriculum phases, the sweep's runs,
    CoGenT's fine-tuning) are checked on top of train_model, as those runs merge them."""
    errors = []

    def check(key: str, build: Any) -> bool:
        try:
            build()
        except (ValueError, TypeError) as e:
            errors.append(f"  {key}: {e}")
            return False
        return True

    if "image_size" not in params["model"]:  # reported above, with where the size comes from
        check("model", lambda: FiLMConfig.from_dict(model_overrides(params)))
    train = params["train_model"]
    if check("train_model", lambda: TrainConfig.from_dict(train)):  # else each merge repeats it
        changes = [
            (f"curriculum[{i}].train_model", phase.get("train_model", {}))
            for i, phase in enumerate(params.get("curriculum") or [])
        ]
        changes += [
            ("experiments.train_model", params["experiments"]["train_model"]),
            ("cogent.train_model", params["cogent"]["train_model"]),
        ]
        if "humans" in params:
            changes.append(("humans.train_model", params["humans"]["train_model"]))
        for key, change in changes:
            check(key, lambda change=change: TrainConfig.from_dict({**train, **change}))
    unknown = [name for name in params["experiments"]["names"] if name not in ABLATIONS]
    if unknown:
        errors.append(
            f"  experiments.names: unknown experiments {', '.join(unknown)} (presets of "
            f"filmclevr.model.ABLATIONS: {', '.join(ABLATIONS)})"
        )
    return errors


def validate_params(params: dict[str, Any], source: str = "params") -> dict[str, Any]:
    """Validate `params` against the schema, then the facts that span sections: the model's
    input size is not given twice (it is `resize_images.image_size`); with `source: mini`
    every split of `get_data.splits` has an image count in `get_data.mini.images` and every
    split of `get_data.mini.split_settings` is one of them; every split a section names is
    listed and has the answers its role needs; CLEVR-Humans' source matches the images it asks
    about; the model, train_model, curriculum, experiments, cogent and humans sections make valid
    FiLMConfig and TrainConfig objects; experiments.names are presets of ABLATIONS.

    Split convention (every stage): the first entry of `get_data.splits` is the training split,
    the second the validation split.

    Raises:
        ParamsError: naming `source` and each offending key.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    lines = [
        f"  {'.'.join(str(p) for p in e.absolute_path) or '<top>'}: {e.message}" for e in errors
    ]
    if not lines:
        lines = _cross_key_errors(params)
    if lines:
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines))
    return params


def _read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in a YAML file, read as YAML 1.2 (plain data only); a key given twice, a
    missing or unreadable file (a folder, no permission, not UTF-8), bad YAML or a file that is
    not a mapping raise ParamsError naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            loader = _Yaml12Loader(f)  # a SafeLoader: plain data only
            try:
                node = loader.get_single_node()
                if node is not None and (duplicate := _first_duplicate_key(node)):
                    key, key_node = duplicate
                    raise ParamsError(
                        f"{path}: line {key_node.start_mark.line + 1}: key {key} is given twice; "
                        "keep one (YAML readers disagree on which value wins: DVC refuses the "
                        "file, Snakemake and PyYAML keep the last)"
                    )
                params = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found") from None
    except OSError as e:
        raise ParamsError(f"{path}: cannot read the parameters file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ParamsError(f"{path}: not UTF-8 text ({e})") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter sections")
    return params


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a parameters file (YAML), resolve it on its bases (`resolve`) and validate it."""
    return resolve(Path(path))


def resolve(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The complete parameters of the profile at `path`, validated.

    A file without `base:` is complete (config/demo.yaml, the demo; a params.yaml that
    filmclevr-params wrote). A file with `base: <path>` (relative to its own folder) is that
    base, itself resolved and valid, with the file's changes laid over it by one rule:

    - a section of named parameters (a mapping whose keys the schema lists: `get_data`,
      `get_data.mini`, `analyze_model`, `experiments`, ...) merges key by key; a key the
      schema does not list there is refused, so a typo cannot add a key;
    - every other value is replaced whole: numbers, strings, every list (`splits`,
      `curriculum`, `experiments.names`, ...), and the mappings whose missing keys mean
      something, where a merge would silently change a result: `model` and `train_model` (and
      the `train_model` changes of `experiments`, `cogent`, `humans` and curriculum phases), whose
      missing keys are the paper's defaults; `get_data.mini.images` and `split_settings`, one
      entry per split; `question_mix` (a type left out is not asked); `regression.tolerance`;
    - `replace: [<dotted key>, ...]` gives the named mappings of this file whole as well (to
      drop what the base sets there, e.g. an optional `get_data.mini.look`).

    A profile with a base names itself (`profile:`, not its base's name), since every number
    it reports carries that name.

    Raises:
        ParamsError: naming the file at fault: a missing base, bases in a cycle, a base that
            filmclevr-params wrote (params.yaml: its values are those of whichever profile was
            written last), an unknown key, an invalid result.
    """
    params = _read_yaml(path)
    if BASE_KEY not in params:
        if REPLACE_KEY in params:
            raise ParamsError(f"{path}: {REPLACE_KEY} without {BASE_KEY}: nothing to replace")
        return validate_params(params, str(path))
    base_name = params.pop(BASE_KEY)
    replace = params.pop(REPLACE_KEY, [])
    if not isinstance(base_name, str) or not base_name:
        raise ParamsError(f"{path}: {BASE_KEY} must be the path of a profile, not {base_name!r}")
    if not isinstance(replace, list) or not all(isinstance(k, str) for k in replace):
        raise ParamsError(f"{path}: {REPLACE_KEY} must be a list of dotted keys ({replace!r})")
    base_path = _base_path(path, base_name)
    chain = (*chain, path)
    if base_path.resolve() in {p.resolve() for p in chain}:
        cycle = " -> ".join(str(p) for p in (*chain, base_path))
        raise ParamsError(f"{path}: its bases form a cycle: {cycle}")
    if not base_path.is_file():
        raise ParamsError(f"{path}: base {base_name} ({base_path}) not found")
    if origin := written_from(base_path):
        raise ParamsError(
            f"{path}: base {base_path} is generated (filmclevr-params wrote it from {origin}, and "
            "writes it again from whichever profile is run next): name a profile as the base, "
            "e.g. config/demo.yaml"
        )
    base = resolve(base_path, chain)
    if params.get("profile", base["profile"]) == base["profile"]:
        raise ParamsError(
            f"{path}: give the profile its own name (profile: ...): its numbers would be "
            f"reported as {base['profile']!r}, the name of its base {base_path}"
        )
    unused = set(replace)
    merged = _merge(base, params, _schema(), "", str(path), unused)
    if unused:
        raise ParamsError(
            f"{path}: {REPLACE_KEY} names {', '.join(sorted(unused))}, which the file does not give"
        )
    return validate_params(merged, str(path))


def _base_path(path: Path, base_name: str) -> Path:
    """The file that `base: base_name` in the profile at `path` names (beside the profile)."""
    return Path(os.path.normpath(path.parent / base_name))


def bases(path: str | Path) -> list[Path]:
    """The files the profile at `path` is resolved on, nearest first (after `load_params`
    accepted it: no cycle, every base found)."""
    chain, path = [], Path(path)
    while isinstance(base_name := _read_yaml(path).get(BASE_KEY), str):
        path = _base_path(path, base_name)
        chain.append(path)
    return chain


def _merge(
    base: dict[str, Any],
    changes: dict[str, Any],
    section: dict[str, Any],
    prefix: str,
    source: str,
    replace: set[str],
) -> dict[str, Any]:
    """`base` with `changes` laid over it by `resolve`'s rule; `section` is the schema of this
    mapping. Each dotted key of `replace` met is removed from it."""
    known = section["properties"]
    if unknown := unknown_keys(prefix.rstrip(".") or "top-level", map(str, changes), list(known)):
        raise ParamsError(f"{source}: {unknown}")
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        dotted = prefix + key
        if dotted in replace:
            replace.discard(dotted)
        elif (
            "properties" in known[key]
            and isinstance(value, dict)
            and isinstance(merged.get(key), dict)
        ):
            merged[key] = _merge(merged[key], value, known[key], dotted + ".", source, replace)
            continue
        merged[key] = copy.deepcopy(value)
    return merged


def written_from(path: Path) -> str | None:
    """The profile filmclevr-params wrote `path` from, or None if it did not write it."""
    with open(path, "rb") as f:  # any file: one that is not UTF-8 is refused when it is read
        first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    return first.removeprefix(WRITTEN_BY) if first.startswith(WRITTEN_BY) else None


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _held_by_dvc_experiment(path: Path) -> bool:
    """Whether a DVC experiment holds `path` as it is now: `dvc exp run -S key=value` leaves
    params.yaml with the experiment's values, which the experiment's commit (refs/exps/) keeps."""
    git = ["git", "-C", str(path.parent.resolve())]
    try:
        blob = subprocess.run([*git, "hash-object", "--", path.name], capture_output=True)
        refs = subprocess.run(
            [*git, "for-each-ref", f"--format=%(objectname):./{path.name}", "refs/exps/"],
            capture_output=True,
        )
        if blob.returncode or refs.returncode or not refs.stdout.strip():
            return False
        held = subprocess.run(
            [*git, "cat-file", "--batch-check=%(objectname)"],
            input=refs.stdout,
            capture_output=True,
        )
    except OSError:  # no git
        return False
    return blob.stdout.strip() in held.stdout.split()


def _edits(path: Path) -> str | None:
    """What writing over `path` would lose, or None: nothing if filmclevr-params wrote it and it
    is unchanged, if git holds it as it is (tracked, no change since the last commit: a written
    file edited by hand and committed too), or if a DVC experiment holds it as it is.

    Raises:
        ParamsError: `path` is not UTF-8 text (so no file filmclevr-params wrote) and neither
            git nor a DVC experiment holds it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = None
    written = text is not None and written_from(path) is not None
    if written:
        _, found, body = text.partition("\n" + CHECKSUM_LINE)
        checksum, _, body = body.partition("\n")
        if found and checksum == _checksum(body):
            return None
    if _held_by_git(path) or _held_by_dvc_experiment(path):
        return None
    if text is None:
        raise ParamsError(
            f"{path}: not UTF-8 text, so no file filmclevr-params wrote, and git does not hold "
            "it: writing over it would lose it; move it away, or pass --force"
        )
    if written:
        return "it has edits made after filmclevr-params wrote it"
    return "it has changes that git does not hold"


def _held_by_git(path: Path) -> bool:
    """Whether git tracks `path` with no change since the last commit."""
    git = ["git", "-C", str(path.parent.resolve())]
    try:
        return all(
            subprocess.run([*git, *args, "--", path.name], capture_output=True).returncode == 0
            for args in (["ls-files", "--error-unmatch"], ["diff", "--quiet", "HEAD"])
        )
    except OSError:  # no git
        return False


def profile_text(profile: str | Path, out: str | Path) -> tuple[str, dict[str, Any]]:
    """The text `write_profile` writes to `out` for the profile at `profile`, and its
    parameters: a header naming the profile and the resolved parameters, in the profile's order
    of sections. The profile is named by its path from `out`'s folder when it is inside it (so
    the committed params.yaml names config/demo.yaml wherever it was written from), else from
    the working folder when it is inside that (a reference run's copy names the profile as the
    project does), else by its absolute path.

    Raises:
        ParamsError: the profile is invalid.
    """
    profile, out = Path(profile), Path(out)
    params = load_params(profile)
    source = str(profile.resolve())
    for folder in (out.parent, Path.cwd()):
        if profile.resolve().is_relative_to(folder.resolve()):
            source = profile.resolve().relative_to(folder.resolve()).as_posix()
            break
    body = yaml.dump(
        params, Dumper=_ProfileDumper, sort_keys=False, default_flow_style=False, width=100
    )
    body = re.sub(r"\n(?=\S)", "\n\n", body)  # a blank line before each section, as by hand
    header = f"{WRITTEN_BY}{source}\n{GENERATED}{CHECKSUM_LINE}{_checksum(body)}\n"
    return header + body, params


def write_profile(profile: str | Path, out: str | Path, force: bool = False) -> dict[str, Any]:
    """Write the profile at `profile`, resolved and complete, to `out` (atomically), under a
    header naming the profile (`profile_text`); return its parameters.

    DVC reads one complete file, params.yaml: this is how a profile gets there. Writing over a
    file is refused if that would lose edits (`_edits`) unless `force`, and always if `out` is
    the profile or one of its bases (which would be lost, or change the profile written).

    Raises:
        ParamsError: the profile is invalid, or `out` has edits (naming what), or `out` is
            the profile or one of its bases.
    """
    profile, out = Path(profile), Path(out)
    text, params = profile_text(profile, out)
    if out.exists():
        for source in (profile, *bases(profile)):
            if out.resolve() == source.resolve():
                what = "the profile itself" if source == profile else f"a base of {profile}"
                raise ParamsError(f"{out}: is {what}; write it elsewhere")
        if not force and (edits := _edits(out)):
            raise ParamsError(
                f"{out}: {edits}; writing {profile} over it would lose them: keep them (commit "
                "them or copy the file), or pass --force"
            )
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
        if _canonical(resolve(tmp)) != _canonical(params):  # a YAML writer's number formats
            raise ParamsError(f"{out}: the written file does not read back as {profile}")
    return params


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    """filmclevr-params PROFILE [--out params.yaml] [--force]; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="filmclevr-params",
        description="Write a profile, resolved on its bases, as the complete params.yaml that "
        "DVC tracks and both engines read by default (Snakemake also reads a profile itself: "
        "--configfile); config/demo.yaml writes the demo, the committed params.yaml.",
    )
    parser.add_argument("profile", type=Path, help="a profile, e.g. config/mini-large.yaml")
    parser.add_argument("--out", type=Path, default=Path("params.yaml"), help="params.yaml")
    parser.add_argument("--force", action="store_true", help="write over edits to --out")
    args = parser.parse_args(argv)
    try:
        params = write_profile(args.profile, args.out, force=args.force)
    except (OSError, ParamsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.out}: profile {params['profile']} ({args.profile}), complete; dvc repro runs it")
    return 0


def input_files(params: dict[str, Any]) -> dict[str, str]:
    """The files a profile names as inputs, by the key that names each: a checkpoint training
    starts from (and the sweep's runs, when they run and change it), a vocabulary to encode with.
    Paths are relative to the project folder, where both engines run the stages."""
    inputs = {}
    if path := params["train_model"].get("init_checkpoint"):
        inputs["train_model.init_checkpoint"] = path
    sweep = params["experiments"]
    if sweep["names"] and (path := sweep["train_model"].get("init_checkpoint")):
        inputs["experiments.train_model.init_checkpoint"] = path
    if path := params["tokenize_questions"]["vocab"]:
        inputs["tokenize_questions.vocab"] = path
    return inputs


def check_input_files(params: dict[str, Any], source: str | Path) -> None:
    """Refuse a profile whose input files (`input_files`) do not exist, before any stage runs.

    With its outputs in place, Snakemake skipped the job of a missing input ("Nothing to be
    done"), leaving the old model as the result of a run asked to start from another.

    Raises:
        ParamsError: naming `source`, each key and its path.
    """
    missing = [
        f"  {key}: {path} does not exist"
        for key, path in input_files(params).items()
        if not Path(path).is_file()
    ]
    if missing:
        raise ParamsError(
            f"{source}: missing input files (paths are relative to the project folder, "
            f"{Path.cwd()})\n" + "\n".join(missing)
        )


def model_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The `FiLMConfig` fields a profile sets: its `model` section, and the input size, which is
    `resize_images.image_size` (the model sees the images as the pipeline resized them)."""
    return {**params["model"], "image_size": params["resize_images"]["image_size"]}


if __name__ == "__main__":
    sys.exit(main())
