"""The two engines declare the same pipeline, and every profile is a valid parameter file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from filmclevr.params import ParamsError, load_params, model_overrides, validate_params

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
            inputs, outputs = set(map(dvc_matrix, rule.input)), set(map(dvc_matrix, rule.output))
            # DVC's collect stages depend on the folder of the runs, Snakemake on each run in it.
            if any(i.startswith(f"{RUNS}/") for i in inputs) or rule.name == "collect_experiments":
                inputs = {i for i in inputs if not i.startswith(f"{RUNS}/")} | {RUNS}
            if rule.name == "report_cogent":
                inputs.add(f"{COGENT_RUNS}/${{item.split}}")
            command = dvc_matrix(command.replace("{wildcards.", "{"))
            rules[rule.name] = (command, inputs, outputs, list(rule.params))
    return rules


RUNS = "results/experiments/runs"
COGENT_RUNS = "results/cogent/finetune"


def dvc_matrix(text: str) -> str:
    """Snakemake's wildcards {name}, {seed}, ... (constraints dropped) as DVC's ${item.name}."""
    text = re.sub(r"\{(name|seed|split|questions),[^}]*\}", r"{\1}", str(text))
    for wildcard in ("name", "seed", "split", "questions"):
        text = text.replace(f"{{{wildcard}}}", f"${{item.{wildcard}}}")
    return text


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

    paper = load_params(ROOT / "config/paper.yaml")
    with SnakemakeApi() as api:
        workflow = snakemake_workflow(api, ROOT / "config/paper.yaml")
        assert Path(workflow.globals["PARAMS"]) == ROOT / "config/paper.yaml"
        train = next(r for r in workflow.rules if r.name == "train_model")
        expected = [paper["model"], paper["train_model"], paper["curriculum"], 224]
        assert list(train.params) == expected


def module_file(dotted: str) -> str | None:
    """The project file of a dotted module name (a module or a package's __init__), if any."""
    base = dotted.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def project_imports(path: Path) -> set[str]:
    """The project's modules (stages/, filmclevr/) that `path` imports, inside functions too.

    Importing `a.b.c` also runs the `__init__` of every package on the way (`a.b`), except the
    two top-level packages, whose `__init__` files are empty by design.
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    found = set()
    for name in names:
        if not name.startswith(("filmclevr.", "stages.")):
            continue
        parts = name.split(".")
        for depth in range(2, len(parts) + 1):  # the packages on the way, then the module
            file = module_file(".".join(parts[:depth]))
            if file is not None:
                found.add(file)
    return found


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
DATA_DEPS = {
    "get_data": {"filmclevr/mini/clevr_templates.json"},
    "evaluate_model": {"filmclevr/paper/table1_clevr_test.csv"},
    "analyze_model": {"filmclevr/paper/analysis.csv"},
    "collect_experiments": {
        "filmclevr/paper/table2_ablations_val.csv",
        "filmclevr/paper/table3_resblocks_val.csv",
    },
    "report_cogent": {"filmclevr/paper/analysis.csv", "filmclevr/paper/cogent.csv"},
}


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
    *sorted(f"config/{p.name}" for p in (ROOT / "config").glob("*.yaml")),
]


@pytest.mark.parametrize("path", PROFILES)
def test_profiles_are_complete_and_valid(path):
    params = load_params(ROOT / path)
    from filmclevr.model import FiLMConfig
    from filmclevr.train import TrainConfig

    model = FiLMConfig.from_dict(model_overrides(params))
    train = TrainConfig.from_dict(params["train_model"])
    assert model.image_size == params["resize_images"]["image_size"]
    if train.init_checkpoint is not None:  # a committed checkpoint of this very model
        from filmclevr.checkpoint import load_checkpoint

        assert load_checkpoint(ROOT / train.init_checkpoint)["model_config"] == model.asdict()


def test_paper_profile_is_the_paper():
    from filmclevr.model import FiLMConfig
    from filmclevr.train import TrainConfig

    params = load_params(ROOT / "config/paper.yaml")
    assert params["get_data"]["source"] == "clevr"
    assert FiLMConfig.from_dict(model_overrides(params)) == FiLMConfig()
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


def test_a_checkpoint_to_start_from_is_an_input_of_the_training_rules(tmp_path):
    """train_model.init_checkpoint: a new file there reruns training (and the sweep's runs,
    which start from it too unless experiments.train_model sets it back to null)."""
    from snakemake.api import SnakemakeApi

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train_model"]["init_checkpoint"] = "results/reference/demo/film.pt"
    for experiments, expected in (({}, True), ({"init_checkpoint": None}, False)):
        params["experiments"]["train_model"] = experiments
        swept = tmp_path / f"swept-{expected}.yaml"
        swept.write_text(yaml.safe_dump(params))
        with SnakemakeApi() as api:
            rules = {r.name: r for r in snakemake_workflow(api, swept).rules}
            assert "results/reference/demo/film.pt" in rules["train_model"].input
            assert ("results/reference/demo/film.pt" in rules["run_experiment"].input) is expected
    with SnakemakeApi() as api:  # the demo starts from scratch: nothing more to depend on
        rules = {r.name: r for r in snakemake_workflow(api).rules}
        assert not any(str(f).endswith(".pt") for f in rules["train_model"].input)


def test_mini_large_is_the_demo_model_on_more_data():
    demo, large = load_params(ROOT / "params.yaml"), load_params(ROOT / "config/mini-large.yaml")
    assert large["model"] == demo["model"]
    assert large["resize_images"] == demo["resize_images"]
    assert large["get_data"]["mini"]["seed"] == demo["get_data"]["mini"]["seed"]
    images = large["get_data"]["mini"]["images"]
    assert images["train"] > demo["get_data"]["mini"]["images"]["train"]


def test_console_scripts_are_the_modules_main_functions():
    """One place lists the command-line tools: pyproject's [project.scripts]; each is installed
    (pip install -e .) and is also its module's `python -m` entry point."""
    import importlib
    import shutil
    import subprocess

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"filmclevr-count-params", "filmclevr-regression"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert function == "main" and callable(importlib.import_module(module).main), name
        assert "__main__" in (ROOT / (module.replace(".", "/") + ".py")).read_text(), name
        if shutil.which(name):  # installed by pip: it runs and prints its help
            result = subprocess.run([name, "--help"], capture_output=True, text=True, check=False)
            assert result.returncode == 0 and "usage" in result.stdout, name


def test_loading_a_model_never_imports_the_training_loop():
    """Layers: evaluation, checkpoints, devices, analysis, ask (every module but the ones that
    train) reach no `train.py` through their imports."""
    trainers = {
        "filmclevr/train.py",
        "filmclevr/curriculum.py",
        "filmclevr/experiments.py",
        "filmclevr/cogent.py",
    }
    for path in sorted((ROOT / "filmclevr").rglob("*.py")):
        module = str(path.relative_to(ROOT))
        if module in trainers:
            continue
        assert "filmclevr/train.py" not in code_closure(module), module


def test_the_training_loop_reads_in_short_functions():
    """train.py stays a file a reader can hold in their head: no function of 80 lines or more."""
    tree = ast.parse((ROOT / "filmclevr/train.py").read_text(encoding="utf-8"))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }
    assert max(lengths.values()) < 80, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]
