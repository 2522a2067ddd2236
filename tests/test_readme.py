"""The README's two commands are the ones CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quickstart = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", quickstart, re.S)


def test_readme_has_exactly_two_commands_main_job_then_tests():
    main, tests = readme_commands()
    assert "\n" not in main and "\n" not in tests
    assert main.endswith("snakemake --cores all")
    assert tests.endswith("pytest")
    for command in (main, tests):
        assert command.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install")


def test_ci_runs_the_readme_test_command_verbatim():
    _, tests = readme_commands()
    ci = (ROOT / ".ci/run").read_text().splitlines()
    assert tests in ci
