"""The two engines declare the same pipeline, and every profile is a valid parameter file."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from filmclevr.params import ParamsError, load_params, validate_params

ROOT = Path(__file__).resolve().parents[1]


def snakemake_workflow(api, *configfiles: Path):
    """The workflow as Snakemake parses it, as with `snakemake --configfile <configfiles>`."""
    from snakemake.settings.types import ConfigSettings, ResourceSettings

    return api.workflow(
        snakefile=ROOT / "Snakefile",
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(configfiles=list(configfiles)),
        workdir=ROOT,
    )._workflow


def snakemake_rules() -> dict:
    """Rule name -> (resolved command, inputs, outputs, params values), read by Snakemake itself."""
    from snakemake.api import SnakemakeApi

    rules = {}
    with SnakemakeApi() as api:
        workflow = snakemake_workflow(api)
        for rule in workflow.rules:
            if rule.shellcmd is None:
                continue
            command = rule.shellcmd.replace(" 2>&1 | tee {log}", "")
            # DVC runs the stage with its default (all cores); Snakemake passes its `threads`.
            command = command.replace(" --workers {threads}", "")
            command = command.replace("{PARAMS}", "params.yaml")
            for kind, files in (("input", rule.input), ("output", rule.output)):
                for name in files._names:
                    command = command.replace(f"{{{kind}.{name}}}", str(getattr(files, name)))
            rules[rule.name] = (command, set(rule.input), set(rule.output), list(rule.params))
    return rules


def dvc_stages() -> dict:
    with open(ROOT / "dvc.yaml") as f:
        return yaml.safe_load(f)["stages"]


def out_paths(entries: list) -> set[str]:
    return {e if isinstance(e, str) else next(iter(e)) for e in entries}


def dvc_param_value(params: dict, dotted: str):
    value = params
    for key in dotted.split("."):
        value = value[key]
    return value


def test_same_stages_commands_inputs_and_outputs():
    rules, stages = snakemake_rules(), dvc_stages()
    assert set(rules) == set(stages)
    params = load_params(ROOT / "params.yaml")
    for name, stage in stages.items():
        command, inputs, outputs, rule_params = rules[name]
        assert command == stage["cmd"], name
        assert stage["cmd"].startswith(f"python -m stages.{name} "), name
        assert inputs == set(stage["deps"]), name
        declared = out_paths(stage.get("outs", [])) | out_paths(stage.get("metrics", []))
        assert outputs == declared, name
        # The parameters DVC tracks for a stage are the values Snakemake tracks for the rule.
        tracked = [dvc_param_value(params, key) for key in stage["params"]]
        assert sorted(map(repr, tracked)) == sorted(map(repr, rule_params)), name


def test_a_configfile_profile_replaces_the_parameters_snakemake_tracks():
    """Snakemake merges --configfile into params.yaml; the rules must track the profile alone,
    the file the stage commands read."""
    from snakemake.api import SnakemakeApi

    paper = load_params(ROOT / "profiles/paper.yaml")
    with SnakemakeApi() as api:
        workflow = snakemake_workflow(api, ROOT / "profiles/paper.yaml")
        assert Path(workflow.globals["PARAMS"]) == ROOT / "profiles/paper.yaml"
        train = next(r for r in workflow.rules if r.name == "train_model")
        assert list(train.params) == [paper["model"], paper["train_model"]]


def project_imports(path: Path) -> set[str]:
    """The project's modules (stages/, filmclevr/) that `path` imports, inside functions too."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module in ("filmclevr", "stages"):
            found |= {f"{node.module}/{alias.name}.py" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.Import):
            found |= {alias.name.replace(".", "/") + ".py" for alias in node.names}
    return {m for m in found if m.startswith(("filmclevr/", "stages/")) and (ROOT / m).is_file()}


def code_closure(entry: str) -> set[str]:
    """`entry` and every project module it reaches through imports."""
    seen, todo = set(), [entry]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(project_imports(ROOT / module))
    return seen


# Data files the library reads at run time, by the stages whose outputs they shape.
DATA_DEPS = {"evaluate_model": {"filmclevr/paper/table1_clevr_test.csv"}}


def test_every_stage_depends_on_exactly_the_code_it_runs():
    """A code change must rerun every stage that imports it: the deps are the import closure."""
    for name, stage in dvc_stages().items():
        code_deps = {d for d in stage["deps"] if d.startswith(("stages/", "filmclevr/"))}
        expected = code_closure(f"stages/{name}.py") | DATA_DEPS.get(name, set())
        assert code_deps == expected, name


def test_raw_data_is_not_copied_into_dvc_cache():
    outs = dvc_stages()["get_data"]["outs"]
    assert outs == [{"data/clevr": {"cache": False}}]


PROFILES = [
    "params.yaml",
    *sorted(f"profiles/{p.name}" for p in (ROOT / "profiles").glob("*.yaml")),
]


@pytest.mark.parametrize("path", PROFILES)
def test_profiles_are_complete_and_valid(path):
    params = load_params(ROOT / path)
    from filmclevr.model import FiLMConfig
    from filmclevr.train import TrainConfig

    model = FiLMConfig.from_dict(params["model"])
    TrainConfig.from_dict(params["train_model"])
    assert model.image_size == params["resize_images"]["image_size"]


def test_paper_profile_is_the_paper():
    from filmclevr.model import FiLMConfig
    from filmclevr.train import TrainConfig

    params = load_params(ROOT / "profiles/paper.yaml")
    assert params["get_data"]["source"] == "clevr"
    assert FiLMConfig.from_dict(params["model"]) == FiLMConfig()
    train = TrainConfig.from_dict(params["train_model"])
    paper = TrainConfig()
    assert (train.learning_rate, train.weight_decay, train.batch_size, train.max_epochs) == (
        paper.learning_rate,
        paper.weight_decay,
        paper.batch_size,
        paper.max_epochs,
    )


def test_bad_parameters_name_the_file_and_key(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["resize_images"]["image_size"] = "big"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match=r"bad\.yaml.*\n.*resize_images\.image_size"):
        load_params(bad)
    params["resize_images"] = {"image_size": 64, "typo": 1}
    with pytest.raises(ParamsError, match="typo"):
        validate_params(params)


@pytest.mark.parametrize("nproc_per_node", [None, 4])
def test_training_rule_asks_one_gpu_per_process(tmp_path, nproc_per_node):
    """What the SLURM executor requests: `gpu` = train_model.nproc_per_node (default 1)."""
    from snakemake.api import SnakemakeApi

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    if nproc_per_node is not None:
        params["train_model"]["nproc_per_node"] = nproc_per_node
    profile = tmp_path / "profile.yaml"
    profile.write_text(yaml.safe_dump(params))
    with SnakemakeApi() as api:
        workflow = snakemake_workflow(api, profile)
        train = next(r for r in workflow.rules if r.name == "train_model")
        assert train.resources["gpu"] == (nproc_per_node or 1)


def test_mini_large_is_the_demo_model_on_more_data():
    demo, large = load_params(ROOT / "params.yaml"), load_params(ROOT / "profiles/mini-large.yaml")
    assert large["model"] == demo["model"]
    assert large["resize_images"] == demo["resize_images"]
    assert large["get_data"]["mini"]["seed"] == demo["get_data"]["mini"]["seed"]
    images = large["get_data"]["mini"]["images"]
    assert images["train"] > demo["get_data"]["mini"]["images"]["train"]
