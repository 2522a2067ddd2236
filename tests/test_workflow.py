"""The two engines run the stages of one table (filmclevr/workflow_stages.py), and every profile
is a valid parameter file."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from filmclevr import clevr, workflow_stages
from filmclevr.params import ParamsError, load_params, model_overrides, validate_params
from filmclevr.workflow_stages import STAGES, code_closure

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


# The demo, each matrix, and a training that starts from a checkpoint (an input Snakemake tracks).
PROFILES_RUN = [
    "params.yaml",
    "config/cogent-mini.yaml",
    "config/clevr-humans-mini.yaml",
    "config/sweep-cpu.yaml",
    "config/mini-clevr-size-curriculum.yaml",
]


@pytest.fixture(scope="module", params=PROFILES_RUN)
def parsed(request) -> tuple[dict, dict]:
    """(the profile's parameters, rule name -> rule) as Snakemake parses the workflow for it."""
    from snakemake.api import SnakemakeApi

    profile = ROOT / request.param
    with SnakemakeApi() as api:
        rules = {r.name: r for r in snakemake_workflow(api, profile).rules}
    return load_params(profile), rules


def dvc_stages() -> dict:
    with open(ROOT / "dvc.yaml") as f:
        return yaml.safe_load(f)["stages"]


def out_paths(entries: list) -> set[str]:
    return {e if isinstance(e, str) else next(iter(e)) for e in entries}


def dvc_matrix(text: str) -> str:
    """Snakemake's wildcards ({split}, {split,valB}, {wildcards.split}) as DVC's ${item.split}."""
    return re.sub(r"\{(?:wildcards\.)?(\w+)(?:,[^}]*)?\}", r"${item.\1}", str(text))


def named(files) -> dict:
    """A rule's named inputs or outputs: name -> path, or list of paths."""
    values = {}
    for name in files._names:
        value = getattr(files, name)
        values[name] = str(value) if isinstance(value, str) else list(map(str, value))
    return values


def test_dvc_yaml_is_generated_from_the_stage_table():
    assert (ROOT / "dvc.yaml").read_text() == workflow_stages.dvc_yaml(ROOT), (
        "dvc.yaml is stale: python -m filmclevr.workflow_stages --write dvc.yaml"
    )


def test_snakemake_rules_take_their_stage_from_the_table(parsed):
    """Every rule that runs a command runs its stage's, on the table's inputs, outputs and
    parameters (rules add only what is Snakemake's own: log, threads, resources, message)."""
    params, rules = parsed
    assert {name for name, rule in rules.items() if rule.shellcmd} == set(STAGES)
    for name, stage in STAGES.items():
        rule = rules[name]
        assert rule.shellcmd == workflow_stages.snakemake_shell(stage) + " 2>&1 | tee {log}"
        assert named(rule.input) == workflow_stages.snakemake_inputs(ROOT, stage, params), name
        outputs = {
            key: (dvc_matrix(path), path.is_directory)
            for key, path in zip(rule.output._names, rule.output, strict=True)
        }
        expected = workflow_stages.snakemake_outputs(stage).items()
        assert outputs == {k: (dvc_matrix(p), d) for k, (p, d) in expected}, name
        assert dict(rule.params.items()) == workflow_stages.snakemake_params(stage, params), name


def test_both_engines_run_the_same_commands_on_the_same_files(parsed):
    """Each Snakemake rule, as Snakemake parsed it, and the DVC stage of that name in dvc.yaml:
    the same command, inputs, outputs and parameter values."""
    params, rules = parsed
    stages = dvc_stages()
    assert {name for name, rule in rules.items() if rule.shellcmd} == set(stages)
    for name, stage in stages.items():
        rule = rules[name]
        command = rule.shellcmd.removesuffix(" 2>&1 | tee {log}")
        # DVC runs the stage with its default (all cores); Snakemake passes its `threads`.
        command = command.replace(" --workers {threads}", "")
        command = command.replace("{PARAMS}", "params.yaml")
        for kind, files in (("input", rule.input), ("output", rule.output)):
            for key, value in named(files).items():
                command = command.replace(f"{{{kind}.{key}}}", str(value))
        assert dvc_matrix(command) == stage["cmd"], name
        assert stage["cmd"].startswith(f"python -m stages.{name} "), name
        # Inputs, in order: the code, then one DVC dependency per named input; where Snakemake
        # waits for each run of a matrix, DVC depends on the folder that holds them. The
        # checkpoint a training starts from (`init`) DVC tracks as a parameter.
        inputs = named(rule.input)
        code, init = inputs.pop("code"), inputs.pop("init", [])
        assert stage["deps"][: len(code)] == code, name
        assert len(stage["deps"]) == len(code) + len(inputs), name
        for value, dep in zip(inputs.values(), stage["deps"][len(code) :], strict=True):
            if isinstance(value, str):
                assert dvc_matrix(value) == dep, name
            else:
                assert all(dvc_matrix(run).startswith(dep + "/") for run in value), name
        declared = out_paths(stage.get("outs", [])) | out_paths(stage.get("metrics", []))
        assert set(map(dvc_matrix, rule.output)) == declared, name
        # The parameters DVC tracks for a stage are the values Snakemake tracks for the rule.
        tracked = [workflow_stages.param_value(params, key) for key in stage["params"]]
        sections = [value for value in tracked if isinstance(value, dict)]
        for checkpoint in init:
            assert any(s.get("init_checkpoint") == checkpoint for s in sections), name
        assert sorted(map(repr, tracked)) == sorted(map(repr, rule.params)), name


def test_outputs_marked_for_the_report_have_a_caption_and_a_category(parsed):
    """`snakemake --report`: what the rules mark (a figure, the results table; a folder's files
    by pattern) each has its caption file and a category."""
    from snakemake.io import get_flag_value, is_flagged

    params, rules = parsed
    marked = {}
    for name, rule in rules.items():
        for key, path in zip(rule.output._names, rule.output, strict=True):
            if is_flagged(path, "report"):
                marked[f"{name}.{key}"] = get_flag_value(path, "report")
    expected = {
        "train_model.curves",
        "evaluate_model.table_html",
        "evaluate_model.figure",
        "evaluate_model.curve_figure",
        "analyze_model.root",
        "collect_experiments.figure",
        "report_cogent.out",
    }
    assert set(marked) == expected
    for name, shown in marked.items():
        caption = Path(shown.caption.get_path_or_uri(secret_free=True)).resolve()
        assert caption.parent == ROOT / "workflow/report" and caption.is_file(), name
        assert shown.category, name
        is_folder = STAGES[name.split(".")[0]].out(name.split(".")[1]).directory
        assert bool(shown.patterns) == is_folder, name  # a folder's files are shown by pattern


def _dvc_plot_fields() -> dict[str, set[str]]:
    """Each file DVC's plots read -> the fields they name in it (a field given alone is read
    in every file of the other axis, or in the plot's own file)."""
    fields: dict[str, set[str]] = {}
    for plot in workflow_stages.PLOTS:
        ((plot_id, spec),) = plot.items()
        axes = [spec[axis] for axis in ("x", "y") if axis in spec]
        files = [file for value in axes if isinstance(value, dict) for file in value] or [plot_id]
        for value in axes:
            by_file = value if isinstance(value, dict) else dict.fromkeys(files, value)
            for file, names in by_file.items():
                names = [names] if isinstance(names, str) else names
                fields.setdefault(file, set()).update(names)
    return fields


def test_dvc_plots_read_fields_the_stages_write(tmp_path):
    """dvc.yaml's plots: each reads a stage's output (DVCLive's folder, evaluate_model's learning
    curve and bar data) or the official curve, a data file of the stage that draws beside it,
    and every field they name is in those files as the stages write them."""
    from filmclevr import evaluate

    evaluate_stage = STAGES["evaluate_model"]
    columns = dict.fromkeys(clevr.QUESTION_TYPES, 50.0)
    scores = {"overall": 50.0, "columns": columns, "functions": {}, "families": {}, "counts": {}}
    context = dict.fromkeys(evaluate.CONTEXT_KEYS, 1)
    context.update(dataset="mini-CLEVR", split="val", profile="p", machine={}, train_split="t")
    written = {
        key: tmp_path / Path(evaluate_stage.out(key).path).name for key in evaluate_stage.outputs
    }
    evaluate.write_results(
        scores,
        scores,
        paper_csv=evaluate.PAPER_TABLE1,
        out_metrics=written["metrics"],
        out_table_md=written["table_md"],
        out_table_csv=written["table_csv"],
        out_table_html=written["table_html"],
        out_bar_png=written["figure"],
        out_bar_csv=written["figure_csv"],
        context=context,
    )
    history = [{"epoch": 1, "step": 1, "val_accuracy": 0.5, "train_accuracy": 0.5,
                "val_columns": {c: 0.5 for c in clevr.QUESTION_TYPES}}]  # fmt: skip
    evaluate.write_learning_curve(
        {"train_config": {"batch_size": 2}, "history": history},
        prior=40.0,
        context=context,
        out_csv=written["curve_csv"],
        out_png=written["curve_figure"],
    )
    headers = {
        evaluate_stage.out(key).path: set(written[key].read_text().splitlines()[0].split(","))
        for key in ("curve_csv", "figure_csv")
    }
    paper_curve = workflow_stages.PAPER_CURVE
    assert paper_curve in evaluate_stage.data
    headers[paper_curve] = set((ROOT / paper_curve).read_text().splitlines()[0].split(","))
    dvclive = STAGES["train_model"].out("log_dir").path + "/plots/metrics"
    headers[dvclive] = {"step"}  # DVCLive's files: step and the metric (tests/test_train.py)
    fields = _dvc_plot_fields()
    assert set(fields) == set(headers)
    for file, names in fields.items():
        assert names <= headers[file], file


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
        expected += [paper["get_data"]["splits"], paper["profile"]]
        assert list(train.params) == expected


def test_every_stage_depends_on_exactly_the_code_it_runs():
    """A code change must rerun every stage that imports it: both engines' code dependencies
    are the import closure of the stage's entry point, plus the data files its code reads."""
    for name, stage in dvc_stages().items():
        code_deps = {d for d in stage["deps"] if d.startswith(("stages/", "filmclevr/"))}
        expected = code_closure(ROOT, f"stages/{name}.py") | set(STAGES[name].data)
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

        # (read as a FiLMConfig: fields added since it was written take their defaults)
        assert (
            FiLMConfig.from_dict(load_checkpoint(ROOT / train.init_checkpoint)["model_config"])
            == model
        )


def test_paper_profile_is_the_paper():
    from filmclevr.model import FiLMConfig
    from filmclevr.train import TrainConfig

    params = load_params(ROOT / "config/paper.yaml")
    assert params["get_data"]["source"] == "clevr"
    # The paper's model, with the BatchNorm weights its runs started from (PyTorch 0.3's).
    paper_model = FiLMConfig(batchnorm_init="uniform")
    assert FiLMConfig.from_dict(model_overrides(params)) == paper_model
    train = TrainConfig.from_dict(params["train_model"])
    assert train.data_order == "official"  # the official loader's order
    paper = TrainConfig()
    assert (train.learning_rate, train.weight_decay, train.batch_size, train.max_epochs) == (
        paper.learning_rate,
        paper.weight_decay,
        paper.batch_size,
        paper.max_epochs,
    )


def test_bad_parameters_name_the_file_and_key(tmp_path):
    params = yaml.safe_load((ROOT / "config/demo.yaml").read_text())  # the demo
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

    params = yaml.safe_load((ROOT / "config/demo.yaml").read_text())  # the demo
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

    params = yaml.safe_load((ROOT / "config/demo.yaml").read_text())  # the demo
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
    demo, large = (
        load_params(ROOT / "config/demo.yaml"),
        load_params(ROOT / "config/mini-large.yaml"),
    )
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
        "filmclevr/humans.py",
        "filmclevr/runs.py",
        "filmclevr/scored_runs.py",
    }
    for path in sorted((ROOT / "filmclevr").rglob("*.py")):
        module = str(path.relative_to(ROOT))
        if module in trainers:
            continue
        assert "filmclevr/train.py" not in code_closure(ROOT, module), module


def test_the_training_loop_reads_in_short_functions():
    """train.py stays a file a reader can hold in their head: no function of 80 lines or more."""
    tree = ast.parse((ROOT / "filmclevr/train.py").read_text(encoding="utf-8"))
    lengths = {
        node.name: node.end_lineno - node.lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    }
    assert max(lengths.values()) < 80, sorted(lengths.items(), key=lambda kv: -kv[1])[:3]
