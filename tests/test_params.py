"""Parameter validation: the schema, then the facts that span sections, each error naming the
file and the keys."""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

from filmclevr import clevr
from filmclevr import params as params_mod
from filmclevr.params import ParamsError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]
# The demo, the base of every profile; params.yaml is written from it (filmclevr-params).
DEMO = ROOT / "config/demo.yaml"


@pytest.fixture
def good() -> dict:
    return load_params(DEMO)


def write(tmp_path: Path, params: dict) -> Path:
    path = tmp_path / "my_params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


# Every shipped profile's resolved values, recorded from the complete files before the profiles
# were rewritten as differences from the demo. A change to the demo reaches every profile based
# on it; this record makes each such change visible in review (its diff names the profiles).
RESOLVED_PROFILES = ROOT / "tests/data/resolved_profiles.json"


def shipped_profiles() -> list[str]:
    """Every profile in config/ (the demo too), relative to the project folder."""
    return sorted(f"config/{p.name}" for p in (ROOT / "config").glob("*.yaml"))


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
    if canonical(recorded) != canonical(resolved):
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


# --- Profiles as differences from a base ----------------------------------------------------------


def profile(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def canonical(value) -> str:
    return json.dumps(value, sort_keys=True)


def test_shipped_profiles_name_a_base_and_list_only_what_they_change() -> None:
    """Every profile in config/ but the demo is a difference from another profile there (the
    demo or one based on it), and each value it gives changes its base's (a section given
    whole differs as a whole)."""

    def repeated(base, changes, section, prefix=""):
        found = []
        for key, value in changes.items():
            sub = section["properties"][key]
            if "properties" in sub and isinstance(value, dict) and isinstance(base[key], dict):
                found += repeated(base[key], value, sub, f"{prefix}{key}.")
            elif key in base and canonical(base[key]) == canonical(value):
                found.append(prefix + key)
        return found

    complete = []
    for path in sorted((ROOT / "config").glob("*.yaml")):
        changes = yaml.safe_load(path.read_text())
        if "base" not in changes:
            complete.append(path)
            continue
        base_path = path.parent / changes.pop("base")
        assert base_path.parent == path.parent and base_path.is_file(), path
        changes.pop("replace", None)
        base = load_params(base_path)
        assert repeated(base, changes, params_mod.schema()) == [], path.name
    assert complete == [DEMO]


def test_the_merge_rule_merges_exactly_the_sections_of_named_parameters() -> None:
    """The mappings merged key by key (all others are replaced whole), as resolve's docstring
    states: a schema change that moves a mapping from one side to the other shows here."""

    def merged(section, prefix=""):
        paths = [prefix.rstrip(".")]
        for key, sub in section.get("properties", {}).items():
            if "properties" in sub:
                paths += merged(sub, f"{prefix}{key}.")
        return paths

    assert sorted(merged(params_mod.schema())) == [
        "",
        "analyze_model",
        "cogent",
        "cogent.zero_shot_reference",
        "evaluate_model",
        "experiments",
        "get_data",
        "get_data.clevr",
        "get_data.mini",
        "humans",
        "humans.download",
        "humans.stand_in",
        "regression",
        "resize_images",
        "tokenize_questions",
        "write_shards",
    ]


def test_a_profile_merges_named_parameters_and_replaces_the_rest(tmp_path: Path) -> None:
    demo = load_params(DEMO)
    path = profile(
        tmp_path,
        "p.yaml",
        f"""base: {DEMO}
profile: p
get_data:
  splits: [train, val]
  mini: {{images: {{train: 100, val: 10}}, max_objects: 5}}
train_model: {{max_epochs: 2}}
model: {{}}
analyze_model: {{examples: 3}}
""",
    )
    params = load_params(path)
    expected = copy.deepcopy(demo)
    expected["profile"] = "p"
    expected["get_data"]["splits"] = ["train", "val"]
    expected["get_data"]["mini"]["images"] = {"train": 100, "val": 10}  # no test: 250 left
    expected["get_data"]["mini"]["max_objects"] = 5  # min_objects, seed, ... the demo's
    expected["train_model"] = {"max_epochs": 2}  # the paper's recipe but for max_epochs
    expected["model"] = {}  # the paper's model
    expected["analyze_model"]["examples"] = 3
    assert params == expected
    assert load_params(DEMO) == demo  # the base is not changed


def test_a_base_is_found_beside_the_profile_and_chains(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "sub").mkdir()
    profile(
        tmp_path, "a.yaml", f"base: {DEMO}\nprofile: a\nwrite_shards: {{images_per_shard: 7}}\n"
    )
    b = profile(
        tmp_path / "sub", "b.yaml", "base: ../a.yaml\nprofile: b\nregression: {tolerance: 1}\n"
    )
    monkeypatch.chdir(ROOT / "config")  # bases are relative to the profile, not the cwd
    params = load_params(b)
    assert params["profile"] == "b" and params["regression"]["tolerance"] == 1
    assert params["write_shards"]["images_per_shard"] == 7


def test_replace_gives_a_mapping_whole(tmp_path: Path) -> None:
    mix = profile(
        tmp_path,
        "mix.yaml",
        f"base: {DEMO}\nprofile: mix\nget_data: {{mini: {{question_mix: clevr}}}}\n",
    )
    assert load_params(mix)["get_data"]["mini"]["question_mix"] == "clevr"
    mini = copy.deepcopy(load_params(DEMO)["get_data"]["mini"])
    assert "question_mix" not in mini
    plain = profile(
        tmp_path,
        "plain.yaml",
        yaml.safe_dump(
            {
                "base": "mix.yaml",
                "profile": "plain",
                "replace": ["get_data.mini"],
                "get_data": {"mini": mini},
            }
        ),
    )
    assert "question_mix" not in load_params(plain)["get_data"]["mini"]
    assert load_params(plain)["get_data"]["mini"] == mini


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "profile: p\nget_data: {mini: {seeed: 1}}\n",
            r"p\.yaml: unknown get_data\.mini keys: seeed \(did you mean seed\?\)",
        ),
        (
            "profile: p\ntrian_model: {max_epochs: 1}\n",
            r"p\.yaml: unknown top-level keys: trian_model \(did you mean train_model\?\)",
        ),
        (
            "profile: p\ntrain_model: {max_epoch: 1}\n",
            r"p\.yaml: invalid parameters\n  train_model: unknown TrainConfig keys: max_epoch",
        ),
        (
            "profile: p\nget_data: {splits: [train, val, valB]}\n",
            r"p\.yaml: invalid parameters\n  get_data\.mini\.images: no image count for split",
        ),
        (
            "get_data: {mini: {seed: 1}}\n",
            r"p\.yaml: give the profile its own name \(profile: \.\.\.\): its numbers would be "
            r"reported as 'mini', the name of its base",
        ),
        ("profile: mini\n", r"p\.yaml: give the profile its own name"),
        (
            "profile: p\nreplace: [model]\n",
            r"p\.yaml: replace names model, which the file does not give",
        ),
        ("profile: p\nreplace: model\n", r"p\.yaml: replace must be a list of dotted keys"),
    ],
)
def test_a_bad_difference_is_refused_naming_the_file(tmp_path: Path, text: str, message: str):
    path = profile(tmp_path, "p.yaml", f"base: {DEMO}\n{text}")
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_an_unreadable_file_is_refused_naming_it(tmp_path: Path, capsys) -> None:
    """A folder or a file that is not UTF-8 escaped as a raw OSError or UnicodeDecodeError."""
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe")
    for path, problem in ((tmp_path, "cannot read the parameters file"), (binary, "not UTF-8")):
        with pytest.raises(ParamsError, match=f"^{re.escape(str(path))}: {problem}"):
            load_params(path)
        assert params_mod.main([str(path), "--out", str(tmp_path / "out.yaml")]) == 1
        assert capsys.readouterr().err.startswith(f"error: {path}: {problem}")
    on_binary = profile(tmp_path, "mine.yaml", "base: binary.yaml\nprofile: mine\n")
    with pytest.raises(ParamsError, match=f"^{re.escape(str(binary))}: not UTF-8"):
        load_params(on_binary)


def test_a_missing_base_or_a_cycle_is_refused_naming_the_files(tmp_path: Path) -> None:
    a = profile(tmp_path, "a.yaml", "base: b.yaml\nprofile: a\n")
    with pytest.raises(ParamsError, match=rf"^{a}: base b\.yaml \({tmp_path / 'b.yaml'}\) not f"):
        load_params(a)
    profile(tmp_path, "b.yaml", "base: c.yaml\nprofile: b\n")
    profile(tmp_path, "c.yaml", "base: a.yaml\nprofile: c\n")
    with pytest.raises(ParamsError) as e:
        load_params(a)
    cycle = " -> ".join(str(tmp_path / f"{n}.yaml") for n in "abca")
    assert str(e.value) == f"{tmp_path / 'c.yaml'}: its bases form a cycle: {cycle}"
    itself = profile(tmp_path, "self.yaml", "base: self.yaml\nprofile: s\n")
    with pytest.raises(ParamsError, match="its bases form a cycle"):
        load_params(itself)
    with pytest.raises(ParamsError, match=r"base must be the path of a profile, not None"):
        load_params(profile(tmp_path, "none.yaml", "base:\nprofile: n\n"))
    with pytest.raises(ParamsError, match=r"replace without base"):
        load_params(profile(tmp_path, "complete.yaml", DEMO.read_text() + "replace: [model]\n"))


def test_an_error_in_a_base_names_the_base(tmp_path: Path) -> None:
    bad = profile(
        tmp_path, "bad.yaml", f"base: {DEMO}\nprofile: bad\nwrite_shards: {{images: 1}}\n"
    )
    top = profile(tmp_path, "top.yaml", "base: bad.yaml\nprofile: top\n")
    with pytest.raises(ParamsError, match=rf"^{bad}: unknown write_shards keys: images"):
        load_params(top)


# --- filmclevr-params: a profile as the complete params.yaml DVC reads ----------------------------
def git(cwd: Path, *args: str) -> None:
    import subprocess

    identity = ["-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


def commit_params_yaml(folder: Path, message: str) -> None:
    """A new git repository in `folder` whose one commit holds its params.yaml."""
    git(folder, "init", "-q")
    git(folder, "add", "params.yaml")
    git(folder, "commit", "-q", "-m", message)


def test_filmclevr_params_writes_the_resolved_profile(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the profile outside both out's folder and the working one
    out = tmp_path / "params.yaml"
    source = ROOT / "config/mini-clevr-size-curriculum.yaml"
    assert params_mod.main([str(source), "--out", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"{out}: profile mini-clevr-size-curriculum ({source}), complete; dvc repro runs it\n"
    )
    text = out.read_text()
    assert text.startswith(f"# Written by filmclevr-params from {source}\n")
    assert params_mod.written_from(out) == str(source)
    plain = yaml.safe_load(text)  # complete: DVC reads it as it is, with no base to resolve
    assert "base" not in plain and plain == load_params(source) == load_params(out)
    assert canonical(load_params(out)) == canonical(load_params(source))  # types too
    # Written again from an unchanged file, or from another profile: nothing is lost.
    assert params_mod.main([str(ROOT / "config/paper.yaml"), "--out", str(out)]) == 0
    assert load_params(out)["profile"] == "paper"
    # The profile is named from the working folder when it is inside it, as a user names it.
    monkeypatch.chdir(ROOT)
    assert params_mod.written_from(out) == str(ROOT / "config/paper.yaml")
    assert params_mod.main([str(ROOT / "config/paper.yaml"), "--out", str(out)]) == 0
    assert params_mod.written_from(out) == "config/paper.yaml"


def test_filmclevr_params_keeps_edits_unless_forced(tmp_path: Path, capsys) -> None:
    out = tmp_path / "params.yaml"
    paper = str(ROOT / "config/paper.yaml")
    assert params_mod.main([paper, "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("images_per_shard: 1000", "images_per_shard: 10"))
    assert params_mod.main([paper, "--out", str(out)]) == 1
    assert capsys.readouterr().err == (
        f"error: {out}: it has edits made after filmclevr-params wrote it; writing {paper} over "
        "it would lose them: keep them (commit them or copy the file), or pass --force\n"
    )
    assert yaml.safe_load(out.read_text())["write_shards"]["images_per_shard"] == 10
    assert params_mod.main([paper, "--out", str(out), "--force"]) == 0
    assert load_params(out)["write_shards"]["images_per_shard"] == 1000


def test_filmclevr_params_writes_over_a_hand_written_file_only_if_git_holds_it(
    tmp_path: Path, capsys
) -> None:
    out = tmp_path / "params.yaml"
    out.write_text(DEMO.read_text())
    paper = str(ROOT / "config/paper.yaml")
    assert params_mod.main([paper, "--out", str(out)]) == 1  # not in git: it would be lost
    assert "it has changes that git does not hold" in capsys.readouterr().err
    commit_params_yaml(tmp_path, "demo")
    out.write_text(DEMO.read_text() + "# an edit\n")
    assert params_mod.main([paper, "--out", str(out)]) == 1
    assert out.read_text().endswith("# an edit\n")
    git(tmp_path, "checkout", "--", "params.yaml")
    assert params_mod.main([paper, "--out", str(out)]) == 0
    assert load_params(out)["profile"] == "paper"


def test_filmclevr_params_writes_over_a_written_file_whose_edits_git_holds(
    tmp_path: Path, capsys
) -> None:
    """A params.yaml filmclevr-params wrote, edited by hand and committed, was refused ("edits
    made after filmclevr-params wrote it") though git keeps the edits; committing them, as the
    refusal advises, now lets it through."""
    out = tmp_path / "params.yaml"
    demo, paper = str(DEMO), str(ROOT / "config/paper.yaml")
    assert params_mod.main([demo, "--out", str(out)]) == 0
    commit_params_yaml(tmp_path, "the demo")
    out.write_text(out.read_text().replace("max_epochs: 6", "max_epochs: 7"))
    assert params_mod.main([paper, "--out", str(out)]) == 1  # the edit is in no commit
    assert "keep them (commit them or copy the file)" in capsys.readouterr().err
    git(tmp_path, "commit", "-q", "-a", "-m", "seven epochs")
    assert params_mod.main([paper, "--out", str(out)]) == 0
    assert load_params(out)["profile"] == "paper"


def test_filmclevr_params_keeps_a_file_that_is_not_utf8_unless_git_holds_it(
    tmp_path: Path, capsys
) -> None:
    """An --out that is not UTF-8 ended filmclevr-params in a UnicodeDecodeError traceback."""
    out = tmp_path / "params.yaml"
    out.write_bytes(b"# Written by filmclevr-params from config/demo.yaml\n\xff\xfe\n")
    paper = str(ROOT / "config/paper.yaml")
    assert params_mod.main([paper, "--out", str(out)]) == 1
    assert capsys.readouterr().err.startswith(f"error: {out}: not UTF-8 text")
    assert out.read_bytes().endswith(b"\xff\xfe\n")
    commit_params_yaml(tmp_path, "a binary params.yaml")
    assert params_mod.main([paper, "--out", str(out)]) == 0  # git holds it: nothing is lost
    assert load_params(out)["profile"] == "paper"


def test_filmclevr_params_writes_over_the_values_a_dvc_experiment_holds(
    tmp_path: Path, capsys
) -> None:
    """`dvc exp run -S train_model.learning_rate=...` leaves params.yaml with the experiment's
    values, which the experiment's commit under refs/exps/ keeps: writing a profile over them
    loses nothing. Any other edit is kept."""
    out = tmp_path / "params.yaml"
    demo, paper = str(DEMO), str(ROOT / "config/paper.yaml")
    assert params_mod.main([demo, "--out", str(out)]) == 0
    commit_params_yaml(tmp_path, "the demo")
    written = out.read_text()
    experiment = written.replace("learning_rate: 0.004", "learning_rate: 0.01")
    assert experiment != written
    out.write_text(experiment)  # as `dvc exp run -S` leaves it, then its commit, as DVC keeps it
    git(tmp_path, "commit", "-q", "-a", "-m", "an experiment")
    git(tmp_path, "update-ref", "refs/exps/ab/cdef/lr", "HEAD")
    git(tmp_path, "reset", "-q", "--soft", "HEAD~1")  # the workspace keeps its values
    assert params_mod.main([paper, "--out", str(out)]) == 0
    assert load_params(out)["profile"] == "paper"
    out.write_text(experiment.replace("max_epochs: 6", "max_epochs: 7"))  # held by nothing
    assert params_mod.main([demo, "--out", str(out)]) == 1
    assert "it has edits made after filmclevr-params wrote it" in capsys.readouterr().err


def project(tmp_path: Path, *names: str) -> Path:
    """A project folder holding copies of the named profiles of config/."""
    (tmp_path / "config").mkdir()
    for name in names:
        (tmp_path / "config" / name).write_text((ROOT / "config" / name).read_text())
    return tmp_path


def test_the_committed_params_yaml_is_the_demo_as_filmclevr_params_writes_it(
    tmp_path: Path, monkeypatch
) -> None:
    """params.yaml is generated: exactly what `filmclevr-params config/demo.yaml` writes."""
    monkeypatch.chdir(project(tmp_path, "demo.yaml"))
    assert params_mod.main(["config/demo.yaml"]) == 0
    written = (tmp_path / "params.yaml").read_text(encoding="utf-8")
    committed = (ROOT / "params.yaml").read_text(encoding="utf-8")
    assert committed == written, (
        f"params.yaml is not config/demo.yaml as filmclevr-params writes it (written from "
        f"{params_mod.written_from(ROOT / 'params.yaml')}): run filmclevr-params config/demo.yaml"
    )
    assert committed.startswith(
        "# Written by filmclevr-params from config/demo.yaml\n"
        "# generated: edit config/<profile>.yaml, then run filmclevr-params"
    )
    assert canonical(load_params(ROOT / "params.yaml")) == canonical(load_params(DEMO))


def test_switching_profiles_and_back_needs_no_force_and_leaves_the_profiles_alone(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """The issue this layout fixes: writing params.yaml from a profile once made every profile
    based on params.yaml resolve on that profile instead of the demo."""
    monkeypatch.chdir(project(tmp_path, "demo.yaml", "paper.yaml", "mini-large.yaml"))
    assert params_mod.main(["config/demo.yaml"]) == 0
    demo_text = Path("params.yaml").read_text()
    large = load_params("config/mini-large.yaml")
    assert params_mod.main(["config/paper.yaml"]) == 0
    assert load_params("params.yaml")["profile"] == "paper"
    assert load_params("config/mini-large.yaml") == large  # its base is the demo, unchanged
    assert params_mod.main(["config/mini-large.yaml"]) == 0
    assert canonical(load_params("params.yaml")) == canonical(large)
    assert params_mod.main(["config/demo.yaml"]) == 0
    assert Path("params.yaml").read_text() == demo_text
    # A hand edit is kept: switching again needs --force.
    Path("params.yaml").write_text(demo_text.replace("max_epochs: 6", "max_epochs: 7"))
    assert params_mod.main(["config/paper.yaml"]) == 1
    assert "it has edits made after filmclevr-params wrote it" in capsys.readouterr().err
    assert load_params("params.yaml")["train_model"]["max_epochs"] == 7


def test_a_generated_params_yaml_is_no_base(tmp_path: Path, monkeypatch) -> None:
    """params.yaml holds whichever profile was written last: a profile based on it would
    change with it, so it is refused, naming the profile to use instead."""
    monkeypatch.chdir(project(tmp_path, "demo.yaml", "paper.yaml"))
    demo, paper = Path("config/demo.yaml"), Path("config/paper.yaml")
    params_mod.write_profile(demo, "params.yaml")
    on_generated = profile(Path("config"), "mine.yaml", "base: ../params.yaml\nprofile: mine\n")
    with pytest.raises(ParamsError) as e:
        load_params(on_generated)
    assert str(e.value) == (
        f"{on_generated}: base params.yaml is generated (filmclevr-params wrote it from "
        "config/demo.yaml, and writes it again from whichever profile is run next): name a "
        "profile as the base, e.g. config/demo.yaml"
    )
    # Nor is a profile written over itself or over one of its bases.
    demo_text = demo.read_text()
    with pytest.raises(ParamsError, match=r"^config/demo\.yaml: is the profile itself"):
        params_mod.write_profile(demo, demo)
    with pytest.raises(ParamsError, match=r"^config/demo\.yaml: is a base of config/paper"):
        params_mod.write_profile(paper, demo, force=True)
    assert demo.read_text() == demo_text
    assert params_mod.bases(paper) == [demo] and params_mod.bases(demo) == []


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
    params = yaml.safe_load(DEMO.read_text())
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


@pytest.mark.parametrize(
    ("tolerance", "key"),
    [
        (".nan", "regression.tolerance"),
        ("{bf16: .nan}", "regression.tolerance.bf16"),
        (
            "{float32: {overall: 1, count: .inf, exist: 1, compare_numbers: 1, "
            "query_attribute: 1, compare_attribute: 1}}",
            "regression.tolerance.float32",
        ),
    ],
)
def test_a_tolerance_the_gate_would_refuse_is_refused_with_the_profile(
    tmp_path: Path, good: dict, tolerance: str, key: str
) -> None:
    """`{bf16: .nan}` passed the schema (its minimum lets NaN through) and was refused only by
    the gate, after the whole pipeline had run."""
    good["regression"]["tolerance"] = "TOLERANCE"
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump(good).replace("TOLERANCE", tolerance))
    with pytest.raises(ParamsError, match=rf"\n  {re.escape(key)}: tolerance must be a finite"):
        load_params(path)


def test_booleans_and_integers_are_read_as_in_yaml_1_2(tmp_path: Path) -> None:
    """Only floats were read as YAML 1.2: `seed: 010` read as 8 (YAML 1.1's octal), `yes` and
    `off` as booleans, `1:30` as 90. DVC reads params.yaml as YAML 1.2."""
    text = f"base: {DEMO}\nprofile: yes\nanalyze_model:\n  seed: 010\n  examples: 0o14\n"
    params = load_params(profile(tmp_path, "mine.yaml", text))
    assert params["profile"] == "yes"
    assert (params["analyze_model"]["seed"], params["analyze_model"]["examples"]) == (10, 12)
    scalars = "a: off\nb: 1:30\nc: TRUE\nd: 0x1f\ne: -007\nf: 1_000\ng: .inf\n"
    assert params_mod._read_yaml(profile(tmp_path, "scalars.yaml", scalars)) == {
        "a": "off", "b": "1:30", "c": True, "d": 31, "e": -7, "f": "1_000", "g": float("inf")
    }  # fmt: skip
    # Written back, a string either YAML would read as another type is quoted.
    out = tmp_path / "params.yaml"
    params_mod.write_profile(tmp_path / "mine.yaml", out)
    assert "profile: 'yes'\n" in out.read_text() and load_params(out)["profile"] == "yes"


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
    lines = DEMO.read_text().splitlines()
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
