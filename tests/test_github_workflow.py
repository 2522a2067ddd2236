"""The GitHub Actions workflow: valid against GitHub's schema, bounded, and a wrapper of .ci/run.

The schema is the one check-jsonschema vendors (`--builtin-schema vendor.github-workflows`), so
the check needs no network.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
CI_RUN = ROOT / ".ci" / "run"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
        + [str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def _workflow() -> dict[str, Any]:
    return yaml.safe_load(WORKFLOW.read_text())


def _triggers(workflow: dict[str, Any]) -> set[str]:
    # YAML 1.1 (PyYAML) reads the bare key `on` as the boolean True.
    on = workflow.get("on", workflow.get(True))
    if isinstance(on, str):
        return {on}
    return set(on)


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _run_scripts(workflow: dict[str, Any]) -> list[str]:
    return [step["run"] for step in _steps(workflow) if "run" in step]


def test_workflow_matches_github_schema() -> None:
    result = _validate(WORKFLOW)
    assert result.returncode == 0, f"{WORKFLOW} fails the GitHub workflow schema:\n" + (
        result.stdout + result.stderr
    )


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    # Guards against a vacuous check (a schema that accepts anything, or a wrong flag).
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  ci:\n    runs-on: ubuntu-latest\n    timeout-minutes: soon\n"
        "    steps: [{run: bash .ci/run}]\n"
    )
    result = _validate(broken)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "timeout-minutes" in result.stdout


def test_every_job_has_a_timeout() -> None:
    for name, job in _workflow()["jobs"].items():
        timeout = job.get("timeout-minutes")
        assert isinstance(timeout, int) and timeout > 0, (
            f"{WORKFLOW}: job {name!r} needs a positive timeout-minutes (the default is 6 hours)"
        )


def test_triggers_on_push_and_pull_request() -> None:
    assert {"push", "pull_request"} <= _triggers(_workflow())


def test_runs_ci_run_and_no_copy_of_its_commands() -> None:
    scripts = _run_scripts(_workflow())
    runners = [s for s in scripts if "bash .ci/run" in s]
    assert len(runners) == 1, f"{WORKFLOW}: expected one step running `bash .ci/run`"
    # tee would otherwise hide a failing .ci/run behind its own exit status 0.
    assert "set -o pipefail" in runners[0]
    syntax = {"fi", "then", "else", "done", "do", "esac", "{", "}"}  # not commands of their own
    commands = [
        line.strip()
        for line in CI_RUN.read_text().splitlines()
        if line.strip()
        and not line.strip().startswith(("#", "set ", "cd "))
        and line.strip() not in syntax
    ]
    for script in scripts:
        for command in commands:
            assert command not in script, f"{WORKFLOW} copies .ci/run's {command!r}"
        for tool in ("pytest", "ruff", "snakemake", "snakefmt", "filmclevr.regression"):
            assert tool not in script, f"{WORKFLOW} runs {tool} itself: leave that to .ci/run"


def test_gate_report_goes_to_the_step_summary() -> None:
    reporters = [
        step
        for step in _steps(_workflow())
        if "GITHUB_STEP_SUMMARY" in step.get("run", "") and "ci.log" in step["run"]
    ]
    assert len(reporters) == 1
    assert reporters[0].get("if") == "always()"  # the report matters most when CI fails


def test_setup_python_with_pip_cache() -> None:
    (setup,) = [s for s in _steps(_workflow()) if s.get("uses", "").startswith("actions/setup-")]
    assert setup["uses"].startswith("actions/setup-python@")
    assert {k: str(v) for k, v in setup["with"].items()} == {
        "python-version": "3.11",
        "cache": "pip",
        "cache-dependency-path": "pyproject.toml",
    }


def test_runs_on_a_cpu_runner_with_ci_set() -> None:
    for job in _workflow()["jobs"].values():
        assert job["runs-on"] == "ubuntu-latest"
        assert str(job["env"]["CI"]) == "true"
