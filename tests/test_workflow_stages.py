"""The stage table (filmclevr/workflow_stages.py): code dependencies computed from imports, and
the two engines' renderings of each stage."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from filmclevr import workflow_stages
from filmclevr.params import load_params
from filmclevr.workflow_stages import (
    PACKAGES,
    STAGES,
    Stage,
    code_closure,
    code_deps,
    module_file,
    project_imports,
)

ROOT = Path(__file__).resolve().parents[1]


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_the_closure_follows_every_kind_of_import(tmp_path):
    write(
        tmp_path,
        {
            "stages/__init__.py": "",
            "stages/_common.py": "from filmclevr.params import load\n",
            "stages/go.py": (
                "import os\nfrom stages import _common\n\n"
                "def main():\n    from filmclevr.mini import generate\n"
                "    import filmclevr.model as m\n"
            ),
            "filmclevr/__init__.py": "",
            "filmclevr/params.py": "import yaml\n",
            "filmclevr/model.py": "try:\n    import torch\nexcept ImportError:\n"
            "    from . import fallback\n",
            "filmclevr/fallback.py": "",
            "filmclevr/mini/__init__.py": "from .generate import run\n",
            "filmclevr/mini/generate.py": "from ..params import load\nfrom . import scenes\n",
            "filmclevr/mini/scenes.py": "",
            "filmclevr/unused.py": "",
        },
    )
    assert code_closure(tmp_path, "stages/go.py") == {
        "stages/go.py",
        "stages/_common.py",  # from a package import a module
        "filmclevr/params.py",
        "filmclevr/mini/__init__.py",  # a package on the way runs its __init__
        "filmclevr/mini/generate.py",  # imported inside a function
        "filmclevr/mini/scenes.py",  # relative, `from . import`
        "filmclevr/model.py",  # `import a.b as c`
        "filmclevr/fallback.py",  # in an except branch
    }
    assert project_imports(tmp_path, "filmclevr/params.py") == set()  # not the project's


def test_a_changed_file_is_read_again(tmp_path):
    write(tmp_path, {"stages/go.py": "", "filmclevr/a.py": ""})
    assert project_imports(tmp_path, "stages/go.py") == set()
    (tmp_path / "stages/go.py").write_text("import filmclevr.a  # now it does\n")
    assert project_imports(tmp_path, "stages/go.py") == {"filmclevr/a.py"}


def test_the_top_level_packages_run_no_code():
    """Importing filmclevr.x runs filmclevr/__init__.py, which is no dependency: it stays empty."""
    for package in PACKAGES:
        assert (ROOT / package / "__init__.py").read_text().strip() == "", package


SPY = r"""
import builtins, importlib, importlib.util, json, sys
edges, real = set(), builtins.__import__
def spy(name, globals=None, locals=None, fromlist=(), level=0):
    module = real(name, globals, locals, fromlist, level)
    package = (globals or {}).get("__package__")
    target = importlib.util.resolve_name("." * level + name, package) if level else name
    for imported in [target] + [f"{target}.{item}" for item in fromlist or ()]:
        if imported in sys.modules:
            edges.add(((globals or {}).get("__name__", ""), imported))
    return module
builtins.__import__ = spy
for module in sys.argv[1:]:
    importlib.import_module(module)
print(json.dumps(sorted(edges)))
"""


def test_every_import_the_interpreter_makes_is_one_the_closure_sees():
    """Import every module the stages reach, watching each import statement Python runs: each
    one between the project's modules is one `project_imports` reads from the source."""
    files = set().union(*(code_closure(ROOT, f"stages/{name}.py") for name in STAGES))
    modules = sorted(
        f.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for f in files
    )
    result = subprocess.run(
        [sys.executable, "-c", SPY, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    edges = json.loads(result.stdout)
    seen = 0
    for importer, imported in edges:
        source, target = module_file(ROOT, importer), module_file(ROOT, imported)
        if source is None or target is None or imported in PACKAGES:
            continue  # not the project's, or a top-level package (empty: test above)
        seen += 1
        assert target in project_imports(ROOT, source), (importer, imported)
    assert seen > 50  # the spy saw the project's imports


def test_each_stage_depends_on_its_entry_point_its_imports_and_its_data():
    for name, stage in STAGES.items():
        deps = code_deps(ROOT, stage)
        assert deps[0] == f"stages/{name}.py"
        assert len(deps) == len(set(deps)), name
        assert set(deps) == code_closure(ROOT, deps[0]) | set(stage.data), name


def test_every_data_file_is_read_by_the_code_of_its_stage():
    """A data file a stage lists is named (file name or stem) in a module it runs."""
    for name, stage in STAGES.items():
        sources = "\n".join((ROOT / m).read_text() for m in code_closure(ROOT, f"stages/{name}.py"))
        for data in stage.data:
            assert (ROOT / data).is_file(), (name, data)
            assert Path(data).stem in sources, (name, data)


class ReadingParams(dict):
    """Parameters that record the dotted key of every value read from them in `read`."""

    def __init__(self, section: dict, read: set[str], prefix: str = "") -> None:
        super().__init__(
            {
                key: ReadingParams(value, read, f"{prefix}{key}.")
                if isinstance(value, dict)
                else value
                for key, value in section.items()
            }
        )
        self.read, self.prefix = read, prefix

    def __getitem__(self, key: str):
        value = super().__getitem__(key)
        if not isinstance(value, ReadingParams):
            self.read.add(self.prefix + key)
        return value

    def get(self, key: str, default=None):
        return self[key] if key in self else default


def test_run_experiment_declares_what_scoring_its_runs_reads(monkeypatch):
    """Its runs are scored as evaluate_model scores (scored_runs.evaluate_run): a change to
    evaluate_model.split left their results stale while both engines thought them current."""
    from filmclevr import scored_runs

    read: set[str] = set()
    params = ReadingParams(dict(load_params(ROOT / "config/demo.yaml")), read)
    monkeypatch.setattr(scored_runs, "evaluate", lambda *args, **kwargs: kwargs)
    plan = SimpleNamespace(params=params)
    scored_runs.evaluate_run(plan, Path("film.pt"), shards_dir=Path("s"), tokens_dir=Path("t"))
    declared = STAGES["run_experiment"].params
    assert "evaluate_model.split" in read
    assert {k for k in read if not any(k == d or k.startswith(f"{d}.") for d in declared)} == set()


def test_a_missing_entry_point_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"stages/get_data\.py"):
        code_deps(tmp_path, STAGES["get_data"])


def test_a_table_the_engines_cannot_both_read_is_refused():
    def table(**changes) -> dict[str, Stage]:
        stage = Stage("go", "--x {x}", inputs={"x": "get_data.root"}, outputs={}, params=())
        stage = dataclasses.replace(stage, **changes)
        return {**STAGES, "go": stage}

    workflow_stages.check_table(table())  # as it stands: accepted
    with pytest.raises(ValueError, match=r"'go'.*get_data\.rot"):
        workflow_stages.check_table(table(inputs={"x": "get_data.rot"}))
    with pytest.raises(ValueError, match=r"'go'.*unknown \['y'\]"):
        workflow_stages.check_table(table(args="--x {x} --y {y}"))
    with pytest.raises(ValueError, match=r"'go'.*output 'run'.*\['seed'\]"):
        workflow_stages.check_table(
            table(matrix={"seed": "experiments.seeds"}, outputs={"run": "results/go"})
        )
    with pytest.raises(ValueError, match=r"'go'.*'split'.*get_data\.splits"):
        workflow_stages.check_table(
            table(matrix={"split": "get_data.splits"}, outputs={"run": "results/{split}"})
        )


@pytest.mark.parametrize("profile", ["config/sweep-cpu.yaml", "config/cogent-mini.yaml"])
def test_a_matrix_is_one_job_per_combination_and_its_runs_one_folder(profile):
    params = load_params(ROOT / profile)
    for stage in STAGES.values():
        if not stage.matrix:
            continue
        values = workflow_stages.matrix_values(stage, params)
        jobs = 1
        for listed in values.values():
            jobs *= len(listed)
        targets = workflow_stages.snakemake_targets(stage, params)
        assert len(targets) == len(set(targets)) == jobs * len(stage.outputs), stage.name
        for wildcard, key in stage.matrix.items():
            assert workflow_stages.dvc_stage(ROOT, stage)["matrix"][wildcard] == f"${{{key}}}"
    sweep, cogent = params["experiments"], params["cogent"]
    collect = workflow_stages.snakemake_inputs(ROOT, STAGES["collect_experiments"], params)
    assert len(collect["runs"]) == len(sweep["names"]) * len(sweep["seeds"])
    report = workflow_stages.snakemake_inputs(ROOT, STAGES["report_cogent"], params)
    assert report["runs"] == [
        f"results/cogent/finetune/{{split}}/{q}" for q in cogent["finetune_questions"]
    ]  # the report of one split waits for that split's runs only


def test_wildcards_match_only_the_listed_values():
    import re

    params = load_params(ROOT / "config/cogent-mini.yaml")
    constraints = workflow_stages.wildcard_constraints(params)
    assert re.fullmatch(constraints["split"], "valB")
    assert not re.fullmatch(constraints["split"], "finetune")  # results/cogent/{split}
    assert not re.fullmatch(constraints["name"], "")  # no experiments: matches nothing
    assert not re.fullmatch(constraints["name"], "no-experiment")


def test_the_running_pages_stage_table_lists_every_stage_in_order():
    """docs/running.md's table of stages (what each reads and writes, in words) names the stage
    table's stages, in its order, and each row the outputs' folders or files."""
    text = (ROOT / "docs" / "running.md").read_text()
    table = text.split("## Stages and what they write", 1)[1].split("\n\n", 2)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    named = [row.split("`", 2)[1] for row in rows]
    assert named == list(STAGES)
    for row, stage in zip(rows, STAGES.values(), strict=True):
        writes = row.rsplit("|", 2)[1]
        for output in stage.outputs.values():
            path = str(getattr(output, "path", output))
            fixed = path.split("{", 1)[0].rstrip("/")  # a matrix's templates: their folder
            name = fixed.rsplit("/", 1)[-1].split(".", 1)[0]  # table.{md,csv,html} says "table"
            assert name and name in writes, (stage.name, path)
