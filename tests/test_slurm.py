"""The SLURM path for real: the tiny profile through the shipped SLURM profile
(workflow/profiles/slurm, with workflow/profiles/slurm-local after it for the one-node cluster
that tests/slurm/start-cluster.sh starts), every job through sbatch, as `sacct` records, and the
results equal to a local `snakemake --cores 2` run's.

The end-to-end test (markers slurm and slow) needs that cluster up and Snakemake's SLURM
executor plugin (`pip install -e '.[slurm]'`); without them it is skipped, saying why, except
under CI=true, where it fails: CI starts the cluster for it, so a skip there would hide a broken
step. The checks of the profiles themselves run everywhere.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from filmclevr.checkpoint import load_checkpoint
from tests.test_pipeline import make_project, metrics_without_commit, run, snakemake

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "workflow" / "profiles"
SHIPPED = "workflow/profiles/slurm"
LOCAL = "workflow/profiles/slurm-local"
START = "tests/slurm/start-cluster.sh"


def profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


def rule_blocks() -> dict[str, str]:
    """Each rule of workflow/rules/*.smk and the Snakefile, by name: the text of its block."""
    files = [ROOT / "Snakefile", *sorted(ROOT.glob("workflow/rules/*.smk"))]
    text = "\n".join(path.read_text() for path in files)
    parts = re.split(r"^rule (\w+):\n", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


# --- The profiles, checked without a cluster ------------------------------------------------------
def test_every_rule_taking_all_cores_has_a_thread_count_in_both_profiles():
    """A rule with `threads: all_cores` gets `--cores` locally; a cluster run has no --cores, and
    Snakemake stops at such a rule unless the profile sets its threads."""
    all_cores = {name for name, block in rule_blocks().items() if "threads: all_cores" in block}
    assert {"get_data", "train_model", "analyze_model"} <= all_cores  # the parse found them
    for name in ("slurm", "slurm-local"):
        missing = all_cores - set(profile(name)["set-threads"])
        assert not missing, f"workflow/profiles/{name}: no set-threads for {sorted(missing)}"


def test_every_rule_asking_for_gpus_goes_to_the_gpu_partition_and_none_on_the_local_cluster():
    """A rule that declares `gpu=` resources must go to the GPU partition of the shipped profile
    (the default partition has none), and ask for no GPU on the one-node cluster, which has none."""
    gpu_rules = {
        name for name, block in rule_blocks().items() if re.search(r"^\s+gpu=", block, re.M)
    }
    assert "train_model" in gpu_rules  # the parse found them
    shipped, local = profile("slurm"), profile("slurm-local")
    default_partition = shipped["default-resources"]["slurm_partition"]
    for name in gpu_rules:
        partition = shipped["set-resources"].get(name, {}).get("slurm_partition")
        assert partition not in (None, default_partition), f"{SHIPPED}: {name} partition"
        assert local["set-resources"].get(name, {}).get("gpu") == 0, f"{LOCAL}: {name} gpu"


def test_the_local_profile_names_what_the_cluster_script_makes():
    """slurm-local's partition and account are the ones start-cluster.sh creates; how jobs run
    (executor: slurm, retries, ...) stays the shipped profile's."""
    resources = profile("slurm-local")["default-resources"]
    script = (ROOT / START).read_text()
    assert f"\nPARTITION={resources['slurm_partition']}\n" in script
    assert f"\nACCOUNT={resources['slurm_account']}\n" in script
    assert "executor" not in profile("slurm-local") and profile("slurm")["executor"] == "slurm"


# --- The tiny profile on a real cluster ----------------------------------------------------------
def why_no_cluster() -> str | None:
    """Why the end-to-end test cannot run here, or None when it can."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "Snakemake's SLURM executor plugin is not installed: pip install -e '.[slurm]'"
    if shutil.which("sinfo") is None:
        return f"no SLURM here (sinfo not found): install it and start a cluster, {START}"
    partition = profile("slurm-local")["default-resources"]["slurm_partition"]
    result = subprocess.run(
        ["sinfo", "--noheader", "--partition", partition, "--format", "%t"],
        capture_output=True,
        text=True,
    )
    states = result.stdout.split()
    if result.returncode != 0 or not {"idle", "mix", "alloc"} & set(states):
        found = (result.stdout + result.stderr).strip() or "no node"
        return f"no node up in SLURM partition {partition!r} (sinfo: {found}); start it: {START}"
    return None


@pytest.fixture
def cluster() -> None:
    reason = why_no_cluster()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true, and {reason}")
    pytest.skip(reason)


def submitted_jobs(output: str) -> dict[str, str]:
    """{rule: SLURM job id} from the executor's 'Job N has been submitted with SLURM jobid X (log:
    .../rule_<rule>/X.log)' lines."""
    pattern = r"submitted with SLURM jobid (\d+) \(log: \S*/rule_(\w+)/\1\.log\)"
    jobs = {}
    for job_id, rule in re.findall(pattern, output):
        assert rule not in jobs, f"{rule} submitted twice (a retry?):\n{output[-4000:]}"
        jobs[rule] = job_id
    return jobs


def planned_jobs(output: str) -> set[str]:
    """The rules of the 'Job stats' table Snakemake prints before it starts."""
    start = output.index("Job stats:")
    table = output[start : output.index("\ntotal", start)]
    return set(re.findall(r"^(\w+)\s+\d+$", table, re.M))


def sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """{job id: {State, Comment, WorkDir}} of the jobs' allocations, as SLURM recorded them."""
    fields = ["JobIDRaw", "State", "Comment", "WorkDir"]
    result = subprocess.run(
        ["sacct", "--allocations", "--noheader", "--parsable2", "--jobs", ",".join(job_ids)]
        + ["--format", ",".join(fields)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [dict(zip(fields, line.split("|"), strict=True)) for line in result.stdout.splitlines()]
    return {row["JobIDRaw"]: row for row in rows}


@pytest.mark.slurm
@pytest.mark.slow
def test_the_tiny_profile_through_slurm_equals_a_local_run(cluster, tmp_path):
    on_slurm, local = make_project(tmp_path / "slurm"), make_project(tmp_path / "local")
    # The local run meanwhile: the cluster run spends much of its time waiting on the scheduler.
    with ThreadPoolExecutor(max_workers=1) as pool:
        local_run = pool.submit(snakemake, local)
        output = run(
            [sys.executable, "-m", "snakemake", "--profile", SHIPPED, "--profile", LOCAL]
            + ["--show-failed-logs"],
            on_slurm,
        )
        local_run.result()

    # Every job that runs a command went through sbatch, ran in the project, and completed.
    commands = {name for name, block in rule_blocks().items() if "\n    shell:" in block}
    jobs = submitted_jobs(output)
    assert set(jobs) == planned_jobs(output) & commands, output[-4000:]
    assert {"get_data", "train_model", "evaluate_model"} <= set(jobs)
    recorded = sacct(list(jobs.values()))
    for rule, job_id in jobs.items():
        assert job_id in recorded, f"sacct has no job {job_id} ({rule}): {recorded}"
        assert recorded[job_id]["State"] == "COMPLETED", (rule, recorded[job_id])
        # The executor names the rule in the job's comment.
        assert recorded[job_id]["Comment"].startswith(f"rule_{rule}"), recorded[job_id]
        assert Path(recorded[job_id]["WorkDir"]) == on_slurm, recorded[job_id]

    # The same results as the local run: the metrics, the analysis and, since training is
    # deterministic on the CPU, the very same weights (the checkpoints' histories differ only in
    # their own speed, samples_per_s).
    assert metrics_without_commit(on_slurm) == metrics_without_commit(local)
    analyses = [json.loads((p / "results/analysis.json").read_text()) for p in (on_slurm, local)]
    assert analyses[0] == analyses[1]
    weights = [load_checkpoint(p / "models/film.pt")["model"] for p in (on_slurm, local)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        assert torch.equal(tensor, weights[1][name]), name
