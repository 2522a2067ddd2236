"""Parameter validation: the schema, then the facts that span sections, each error naming the
file and the keys."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import yaml

from filmclevr import clevr
from filmclevr import params as params_mod
from filmclevr.params import ParamsError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def good() -> dict:
    return load_params(ROOT / "params.yaml")


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "my_params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# Every shipped profile's resolved values, recorded from the complete files before the profiles
# were rewritten as differences from the demo. A change to the demo reaches every profile based
# on it; this record makes each such change visible in review (its diff names the profiles).
RESOLVED_PROFILES = ROOT / "tests/data/resolved_profiles.json"


def shipped_profiles() -> list[str]:
    """The demo (params.yaml) and every profile in config/, relative to the project folder."""
    return ["params.yaml", *sorted(f"config/{p.name}" for p in (ROOT / "config").glob("*.yaml"))]


def resolved_profiles() -> dict[str, dict]:
    return {name: load_params(ROOT / name) for name in shipped_profiles()}


def differences(recorded, resolved, path: str = "") -> list[str]:
    """Each dotted key whose value (or type: 6 is not 6.0) differs, with both values."""
    if isinstance(recorded, dict) and isinstance(resolved, dict):
        return [
            line
            for key in sorted(recorded.keys() | resolved.keys())
            for line in differences(
                recorded.get(key, "<absent>"), resolved.get(key, "<absent>"), f"{path}.{key}"
            )
        ]
    if json.dumps(recorded, sort_keys=True) != json.dumps(resolved, sort_keys=True):
        return [f"{path.lstrip('.')}: recorded {recorded!r}, resolved {resolved!r}"]
    return []


def test_shipped_profiles_are_consistent() -> None:
    for name in shipped_profiles():
        load_params(ROOT / name)  # raises on any inconsistency


def test_every_profile_resolves_to_its_recorded_values() -> None:
    """Every shipped profile, resolved, has exactly the values (and types) recorded for it.

    If a change is meant (a new profile, a new value in a profile or in the demo, which every
    profile based on it inherits), rewrite the record and review its diff:
    `python -m tests.test_params --write-resolved-profiles`."""
    recorded = json.loads(RESOLVED_PROFILES.read_text(encoding="utf-8"))
    resolved = resolved_profiles()
    assert sorted(resolved) == sorted(recorded), "profiles added or removed: rewrite the record"
    changed = {name: differences(recorded[name], resolved[name]) for name in resolved}
    changed = {name: lines for name, lines in changed.items() if lines}
    assert not changed, "\n".join(
        f"{name}:\n  " + "\n  ".join(lines) for name, lines in changed.items()
    )


def test_differences_name_each_changed_key_and_type() -> None:
    recorded = {"a": {"b": 6, "c": [1, 2]}, "d": None}
    assert differences(recorded, copy.deepcopy(recorded)) == []
    resolved = {"a": {"b": 6.0, "c": [1]}, "e": 1}
    assert differences(recorded, resolved) == [
        "a.b: recorded 6, resolved 6.0",
        "a.c: recorded [1, 2], resolved [1]",
        "d: recorded None, resolved '<absent>'",
        "e: recorded '<absent>', resolved 1",
    ]


def test_the_model_input_size_is_stated_once(tmp_path: Path, good: dict) -> None:
    """The model sees the images as resized: `model.image_size` is refused, not cross-checked."""
    bad = copy.deepcopy(good)
    bad["model"]["image_size"] = 128
    with pytest.raises(ParamsError) as e:
        load_params(write(tmp_path, bad))
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'my_params.yaml'}: invalid parameters")
    assert "model.image_size" in message and "resize_images.image_size" in message
    assert "128" in message and str(good["resize_images"]["image_size"]) in message


def test_model_overrides_take_the_input_size_from_resize_images(good: dict) -> None:
    from filmclevr.model import FiLMConfig

    params = copy.deepcopy(good)
    params["resize_images"]["image_size"] = 96
    config = FiLMConfig.from_dict(params_mod.model_overrides(params))
    assert config.image_size == 96
    assert config.stem_channels == good["model"]["stem_channels"]
    assert "image_size" not in params["model"]  # the section itself is not changed


def test_every_mini_split_needs_an_image_count(good: dict) -> None:
    params = copy.deepcopy(good)
    params["get_data"]["splits"] = ["train", "val", "valB", "test"]
    with pytest.raises(ParamsError) as e:
        validate_params(params, "p.yaml")
    assert str(e.value) == (
        "p.yaml: invalid parameters\n"
        "  get_data.mini.images: no image count for split(s) valB listed in get_data.splits"
    )
    # Extra counts are harmless, and a CLEVR download has no image counts at all.
    params["get_data"]["mini"]["images"]["valB"] = 10
    validate_params(params)
    params["get_data"]["mini"]["images"] = {}
    params["get_data"]["source"] = "clevr"
    validate_params(params)


def test_both_cross_key_errors_are_reported_together(good: dict) -> None:
    params = copy.deepcopy(good)
    params["get_data"]["splits"] = ["trainA", "valA"]
    params["model"]["image_size"] = 32
    with pytest.raises(ParamsError) as e:
        validate_params(params, "p.yaml")
    assert "get_data.mini.images" in str(e.value) and "model.image_size" in str(e.value)


def test_schema_errors_come_first(good: dict) -> None:
    params = copy.deepcopy(good)
    params["resize_images"]["image_size"] = "big"
    with pytest.raises(ParamsError, match=r"resize_images\.image_size: 'big' is not of type"):
        validate_params(params, "p.yaml")


def test_a_training_and_a_validation_split_are_required(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["get_data"]["splits"] = ["train"]
    path = tmp_path / "one_split.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"one_split\.yaml.*\n.*get_data\.splits"):
        load_params(path)


def test_exponent_numbers_are_floats_as_in_yaml_1_2(tmp_path: Path, good: dict) -> None:
    """PyYAML (YAML 1.1) reads `1e-1` as a string; a parameters file means the number."""
    good["regression"]["tolerance"] = 3.0
    text = yaml.safe_dump(good).replace("tolerance: 3.0", "tolerance: 1e-1")
    assert "tolerance: 1e-1" in text
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    assert load_params(path)["regression"]["tolerance"] == 0.1


@pytest.mark.parametrize("split", ["train", "trainA", "valB2", "train_a", "tråin", "val-1", ""])
def test_schema_and_generator_agree_on_split_names(good: dict, split: str) -> None:
    """The schema's pattern and clevr.SPLIT_NAME (used by the generator) are one rule."""
    params = copy.deepcopy(good)
    params["get_data"]["splits"] = [split, "val"]
    params["get_data"]["mini"]["images"][split] = 1
    valid = True
    try:
        validate_params(params)
    except ParamsError as e:
        assert "get_data.splits" in str(e)
        valid = False
    assert valid == bool(clevr.SPLIT_NAME.fullmatch(split))


@pytest.mark.parametrize(
    ("mix", "valid"),
    [
        ("clevr", True),
        ({"compare_attribute": 1, "query_attribute": 0.5}, True),
        ("balanced", False),
        ({"compare_colour": 1}, False),
        ({"count": -1}, False),
        ({}, False),
    ],
)
def test_the_schema_admits_the_question_mixes_the_sampler_takes(good: dict, mix, valid) -> None:
    params = copy.deepcopy(good)
    params["get_data"]["mini"]["question_mix"] = mix
    if valid:
        validate_params(params)
    else:
        with pytest.raises(ParamsError, match="get_data.mini.question_mix"):
            validate_params(params)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"train": {"min_objects": 2, "max_objects": 2}}, None),
        ({"train": {"question_mix": {"compare_attribute": 1}}}, None),
        ({"train": {"objects": 2}}, "get_data.mini.split_settings.train"),
        ({"train": {"question_mix": "balanced"}}, "get_data.mini.split_settings.train"),
        ({"train": {}}, "get_data.mini.split_settings.train"),
        ({"valB": {"min_objects": 2}}, "split_settings: split.s. valB not in get_data.splits"),
    ],
)
def test_split_settings_name_listed_splits_and_known_settings(good: dict, settings, message):
    params = copy.deepcopy(good)
    params["get_data"]["mini"]["split_settings"] = settings
    if message is None:
        validate_params(params)
    else:
        with pytest.raises(ParamsError, match=message):
            validate_params(params)


# --- Issue 26, case 6: every parameter is checked before any stage runs ---------------------------
def set_key(params: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        params = params[key]
    params[last] = value


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model.num_block": 2}, r"model: unknown FiLMConfig keys: num_block \(did you mean "),
        ({"model.gamma_option": "cube"}, r"model: gamma_option 'cube' is not one of"),
        ({"train_model.max_epoch": 2}, r"train_model: unknown TrainConfig keys: max_epoch \(did"),
        ({"train_model.lr_schedule": "cosin"}, r"train_model: TrainConfig\.lr_schedule must be"),
        ({"train_model.batch_size": 1.5}, r"train_model: TrainConfig\.batch_size must be .*1\.5"),
        ({"get_data.splits": ["test", "val", "train"]}, r"get_data\.splits: 'test' is the train"),
        ({"get_data.splits": ["train", "test", "val"]}, r"get_data\.splits: 'test' is the valid"),
        ({"curriculum": [{"split": "val"}]}, r"curriculum\[0\]\.split: 'val' is not a training"),
        ({"curriculum": [{"split": "test"}]}, r"curriculum\[0\]\.split: 'test' is a test split"),
        ({"curriculum": [{"split": "train", "train_model": {"epochs": 1}}]}, r"curriculum\[0\]\.t"),
        ({"experiments.names": ["gamma2"]}, r"experiments\.names: unknown experiments gamma2"),
        ({"experiments.train_model": {"max_epoch": 1}}, r"experiments\.train_model: unknown Tr"),
        ({"cogent.train_model": {"max_epochs": 1, "trainable": "film"}}, r"cogent\.train_model:"),
        ({"cogent.transfer": ["val"]}, r"cogent\.transfer: 'val' is not CoGenT's answered B"),
        ({"evaluate_model.split": "valB"}, r"evaluate_model\.split: 'valB' is not one of get_da"),
        ({"analyze_model.split": "test"}, r"analyze_model\.split: 'test' is a test split"),
        ({"evaluate_model.split": "test"}, r"evaluate_model\.split: 'test' is a test split"),
    ],
)
def test_every_section_is_checked_when_the_file_is_loaded(
    tmp_path: Path, good: dict, changes: dict, message: str
) -> None:
    """What the stages build from a profile (FiLMConfig, TrainConfig per phase, sweep run and
    fine-tuning run, the splits each role reads) is checked by `load_params`, which the
    Snakefile runs when it is parsed and every stage when it starts: a typo stops `snakemake -n`
    and DVC's first stage, not training after hours of data stages."""
    params = copy.deepcopy(good)
    for key, value in changes.items():
        set_key(params, key, value)
    path = write(tmp_path, params)
    with pytest.raises(ParamsError, match=message) as e:
        load_params(path)
    assert str(e.value).startswith(f"{path}: invalid parameters\n")


def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path: Path) -> None:
    """PyYAML (and Snakemake) would keep the second value silently, DVC refuses the file."""
    lines = (ROOT / "params.yaml").read_text().splitlines()
    line = lines.index(next(s for s in lines if s.startswith("train_model:"))) + 2
    lines.insert(line - 1, "  max_epochs: 2")  # the section's first key, then its own
    path = tmp_path / "twice.yaml"
    path.write_text("\n".join(lines))
    assert lines[line].startswith("  max_epochs:")  # the one already there, now second
    line += 1
    with pytest.raises(ParamsError, match=rf"twice\.yaml: line {line}: key train_model\.max_epo"):
        load_params(path)


@pytest.mark.parametrize("name", ["beta0; touch pwned", "beta0|gamma1", "../beta0", "beta0 "])
def test_experiment_names_are_plain_words(good: dict, name: str) -> None:
    """A name becomes a folder, a Snakemake wildcard (a regex) and a word of a shell command."""
    params = copy.deepcopy(good)
    params["experiments"]["names"] = ["beta0", name]
    with pytest.raises(ParamsError, match=r"experiments\.names\.1: .* does not match"):
        validate_params(params, "p.yaml")


if __name__ == "__main__" and sys.argv[1:] == ["--write-resolved-profiles"]:
    RESOLVED_PROFILES.write_text(
        json.dumps(resolved_profiles(), indent=1, sort_keys=True) + "\n", encoding="utf-8"
    )
