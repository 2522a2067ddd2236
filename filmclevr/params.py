"""Load the workflow parameters and validate them against the one schema.

Both engines read the same file: Snakemake loads it as its config through `load_params`, DVC
tracks its keys, and every stage entry point calls `load_params`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_RESOURCE = "schemas/params.schema.yaml"


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: YAML 1.1 reads `3e-4` (no dot) as a string."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"),
)


class ParamsError(ValueError):
    """A parameters file is missing, unreadable or breaks the schema; the message names it."""


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `params.yaml`."""
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
    return errors


def validate_params(params: dict[str, Any], source: str = "params") -> dict[str, Any]:
    """Validate `params` against the schema, then the facts that span sections: the model's
    input size is not given twice (it is `resize_images.image_size`), and with `source: mini`
    every split of `get_data.splits` has an image count in `get_data.mini.images` and every
    split of `get_data.mini.split_settings` is one of them.

    Split convention (every stage): the first entry of `get_data.splits` is the training split,
    the second the validation split.

    Raises:
        ParamsError: naming `source` and each offending key.
    """
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    lines = [
        f"  {'.'.join(str(p) for p in e.absolute_path) or '<top>'}: {e.message}" for e in errors
    ]
    if not lines:
        lines = _cross_key_errors(params)
    if lines:
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines))
    return params


def load_params(path: str | Path) -> dict[str, Any]:
    """Read and validate a parameters file (YAML)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.load(f, Loader=_Yaml12Loader)  # a SafeLoader: plain data only
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter sections")
    return validate_params(params, str(path))


def model_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """The `FiLMConfig` fields a profile sets: its `model` section, and the input size, which is
    `resize_images.image_size` (the model sees the images as the pipeline resized them)."""
    return {**params["model"], "image_size": params["resize_images"]["image_size"]}


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
