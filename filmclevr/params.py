"""Load the workflow parameters and validate them against the one schema.

Both engines read the same file: Snakemake loads it as its config (and validates it with
`validate_params`), DVC tracks its keys, and every stage entry point calls `load_params`.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

SCHEMA_RESOURCE = "schemas/params.schema.yaml"


class ParamsError(ValueError):
    """A parameters file is missing, unreadable or breaks the schema; the message names it."""


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of `params.yaml`."""
    text = resources.files("filmclevr").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def validate_params(params: dict[str, Any], source: str = "params") -> dict[str, Any]:
    """Validate `params` against the schema; raise ParamsError naming `source` and the key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"  {'.'.join(str(p) for p in e.absolute_path) or '<top>'}: {e.message}" for e in errors
        ]
        raise ParamsError(f"{source}: invalid parameters\n" + "\n".join(lines))
    return params


def load_params(path: str | Path) -> dict[str, Any]:
    """Read and validate a parameters file (YAML)."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise ParamsError(f"{path}: parameters file not found") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: expected a mapping of parameter sections")
    return validate_params(copy.deepcopy(params), str(path))


def dataset_label(params: dict[str, Any]) -> str:
    """Human label of the data source, carried into every reported number."""
    return {"mini": "mini-CLEVR", "clevr": "CLEVR v1.0"}[params["get_data"]["source"]]
