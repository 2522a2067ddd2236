"""Reference results: what the pipeline produced, with the commit and parameters that made it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from filmclevr import reference
from filmclevr.params import load_params


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout.strip()


REPO = Path(__file__).resolve().parents[1]
PARAMS_TEXT = (REPO / "params.yaml").read_text()  # the default profile, "mini"


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A git project whose pipeline 'ran' at its only commit."""
    root = tmp_path / "project"
    (root / "filmclevr").mkdir(parents=True)
    (root / "filmclevr" / "model.py").write_text("# code\n")
    (root / "params.yaml").write_text(PARAMS_TEXT)
    git(root, "init", "-q")
    git(root, "-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
    git(root, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "code")
    commit = git(root, "rev-parse", "--short", "HEAD")
    for name in (
        "models/film.pt",
        "results/table.md",
        "results/table.csv",
        "data/tokens/vocab.json",
    ):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name)
    (root / "models/film.json").write_text('{"history": []}')
    (root / "results/learning_curve.csv").write_text("epoch,questions_seen\n")
    (root / "results/learning_curve_vs_paper.png").write_bytes(b"png")
    metrics = {
        "overall": 42.0,
        "prior": {"overall": 40.0},
        "context": {"commit": commit, "machine": {"processor": "x"}, "profile": "mini"},
    }
    (root / "results/metrics.json").write_text(json.dumps(metrics))
    (root / "results/analysis").mkdir()
    (root / "results/analysis/tsne.png").write_bytes(b"png")
    (root / "results/cogent/valB").mkdir(parents=True)
    (root / "results/cogent/valB.json").write_text('{"train_A": {}}')
    (root / "results/cogent/valB/table.md").write_text("# CoGenT")
    (root / "logs/benchmarks").mkdir(parents=True)
    (root / "logs/benchmarks/get_data.tsv").write_text("s\tmax_rss\n1.0\t2.0\n")
    return root


def test_keeps_outputs_parameters_and_provenance(run: Path) -> None:
    out = reference.keep_reference(run, "demo", run / "params.yaml")
    assert out == run / "results/reference/demo"
    assert (out / "film.pt").read_text() == "models/film.pt"
    assert (out / "vocab.json").read_text() == "data/tokens/vocab.json"
    # The learning curve beside the official one, as evaluate_model wrote it.
    assert (out / "learning_curve.csv").read_text() == "epoch,questions_seen\n"
    assert (out / "learning_curve_vs_paper.png").read_bytes() == b"png"
    assert (out / "analysis/tsne.png").read_bytes() == b"png"
    assert (out / "cogent/valB.json").read_text() == '{"train_A": {}}'
    assert (out / "cogent/valB/table.md").read_text() == "# CoGenT"
    assert (out / "benchmarks/get_data.tsv").read_text() == "s\tmax_rss\n1.0\t2.0\n"
    assert (out / "params.yaml").read_text() == PARAMS_TEXT
    provenance = json.loads((out / "PROVENANCE.json").read_text())
    assert provenance["commit"] == git(run, "rev-parse", "HEAD")
    assert provenance["machine"] == {"processor": "x"}
    assert provenance["dvc_lock"] is None  # no dvc.lock: Snakemake ran it


def test_measurements_only_keeps_the_numbers_and_times_not_the_model(run: Path) -> None:
    out = reference.keep_reference(
        run, "demo-elsewhere", run / "params.yaml", measurements_only=True
    )
    kept = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert kept == [
        "PROVENANCE.json",
        "benchmarks/get_data.tsv",
        "learning_curve.csv",
        "metrics.json",
        "params.yaml",
        "table.csv",
        "table.md",
    ]
    assert json.loads((out / "metrics.json").read_text())["overall"] == 42.0
    assert json.loads((out / "PROVENANCE.json").read_text())["machine"] == {"processor": "x"}


def test_a_profile_with_a_base_is_kept_resolved_and_complete(run: Path, monkeypatch) -> None:
    """The record is the values that ran: a base edited later must not change it."""
    config = run / "config"
    config.mkdir()
    for name in ("demo.yaml", "mini-large.yaml"):
        (config / name).write_text((REPO / "config" / name).read_text())
    monkeypatch.chdir(run)  # the profile named as the project names it
    resolved = load_params("config/mini-large.yaml")
    set_evaluated_profile(run, resolved["profile"])
    out = reference.keep_reference(run, "large", Path("config/mini-large.yaml"))
    kept = out / "params.yaml"
    first_line = kept.read_text().splitlines()[0]
    assert first_line == "# Written by filmclevr-params from config/mini-large.yaml"
    assert "base" not in yaml.safe_load(kept.read_text())  # complete: no base to find
    assert json.dumps(load_params(kept), sort_keys=True) == json.dumps(resolved, sort_keys=True)
    assert json.loads((out / "PROVENANCE.json").read_text())["parameters"] == (
        "config/mini-large.yaml"
    )
    # Named by its absolute path (a run kept from another worktree, --root), the profile is
    # still recorded as the repository names it.
    out = reference.keep_reference(run, "large", (run / "config/mini-large.yaml").resolve())
    assert json.loads((out / "PROVENANCE.json").read_text())["parameters"] == (
        "config/mini-large.yaml"
    )
    # A profile with a base that is not valid is refused, naming it; nothing is kept.
    (config / "bad.yaml").write_text("base: demo.yaml\nprofile: bad\nmodel: {depth: 1}\n")
    with pytest.raises(ValueError, match=r"config/bad\.yaml: invalid parameters"):
        reference.keep_reference(run, "bad", Path("config/bad.yaml"))
    assert not (run / "results/reference/bad").exists()


def set_evaluated_profile(run: Path, profile: str) -> None:
    path = run / "results/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["context"]["profile"] = profile
    path.write_text(json.dumps(metrics))


@pytest.mark.parametrize("evaluated", ["cogent-mini", None])
def test_refuses_parameters_of_another_profile(run: Path, evaluated: str | None) -> None:
    """After a run of another profile, ./params.yaml may still hold the demo's: kept beside that
    run's model, they would describe it wrongly (sim-to-real and the model cards read them)."""
    set_evaluated_profile(run, evaluated)
    with pytest.raises(ValueError, match=r"params\.yaml: profile 'mini', but .*metrics\.json was "
                       rf"made by profile {evaluated!r}"):  # fmt: skip
        reference.keep_reference(run, "demo", run / "params.yaml")
    assert not (run / "results/reference").exists()


@pytest.mark.parametrize("name", ["", ".", "..", "/tmp/elsewhere", "a/b", "-x", "demo\n"])
def test_refuses_a_name_that_is_not_one_folder(run: Path, name: str) -> None:
    """The folder is replaced whole: "" or "." once replaced all of results/reference/, an
    absolute name any folder on the disk."""
    other = run / "results/reference/other"
    other.mkdir(parents=True)
    (other / "keep.txt").write_text("keep me\n")
    with pytest.raises(ValueError, match="give one folder name"):
        reference.keep_reference(run, name, run / "params.yaml")
    assert (other / "keep.txt").read_text() == "keep me\n"
    assert sorted(p.name for p in (run / "results/reference").iterdir()) == ["other"]


def test_cli_reads_the_projects_params_by_default(run: Path, tmp_path: Path, monkeypatch) -> None:
    """--root alone: the parameters are that project's params.yaml, not the working folder's."""
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    assert reference.main(["--name", "demo", "--root", str(run)]) == 0
    assert (run / "results/reference/demo/params.yaml").read_text() == PARAMS_TEXT


def test_provenance_keeps_dvc_lock_only_when_it_records_this_run(run: Path) -> None:
    import hashlib

    lock = "stages:\n  evaluate_model:\n    outs:\n    - path: results/metrics.json\n"
    (run / "dvc.lock").write_text(lock + "      md5: 0123\n")  # an earlier run's
    git(run, "-c", "user.email=a@b", "-c", "user.name=a", "add", "dvc.lock")
    git(run, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "lock")
    metrics = json.loads((run / "results/metrics.json").read_text())
    metrics["context"]["commit"] = git(run, "rev-parse", "--short", "HEAD")
    (run / "results/metrics.json").write_text(json.dumps(metrics))
    out = reference.keep_reference(run, "demo", run / "params.yaml")
    provenance = json.loads((out / "PROVENANCE.json").read_text())
    assert provenance["dvc_lock"] is None

    digest = hashlib.md5((run / "results/metrics.json").read_bytes()).hexdigest()
    (run / "dvc.lock").write_text(lock + f"      md5: {digest}\n")
    out = reference.keep_reference(run, "demo2", run / "params.yaml")
    provenance = json.loads((out / "PROVENANCE.json").read_text())
    assert digest in provenance["dvc_lock"]


def test_refuses_uncommitted_code(run: Path) -> None:
    (run / "filmclevr" / "model.py").write_text("# changed\n")
    with pytest.raises(ValueError, match="uncommitted changes to the code"):
        reference.keep_reference(run, "demo", run / "params.yaml")
    assert not (run / "results/reference").exists()


def test_refuses_code_changed_since_the_run(run: Path) -> None:
    (run / "filmclevr" / "model.py").write_text("# changed\n")
    git(run, "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qam", "later code")
    with pytest.raises(ValueError, match="the code changed since commit"):
        reference.keep_reference(run, "demo", run / "params.yaml")


def test_cli_reports_a_missing_output(run: Path, capsys: pytest.CaptureFixture) -> None:
    (run / "models/film.pt").unlink()
    assert reference.main(["--name", "demo", "--root", str(run)]) == 1
    assert "models/film.pt: missing" in capsys.readouterr().err


@pytest.mark.parametrize("commit", ["--output=VICTIM", "-p", "HEAD", "unknown", "abc12", "g" * 7,
                                    "a" * 41, "1234567 HEAD", None, 1234567])  # fmt: skip
def test_refuses_a_recorded_commit_that_is_no_commit_id(run: Path, commit: object) -> None:
    """context.commit comes from a file: it must never reach git as an option (`--output=FILE`
    once truncated FILE and skipped the check)."""
    victim = run / "victim.txt"
    victim.write_text("keep me\n")
    path = run / "results/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["context"]["commit"] = (
        commit.replace("VICTIM", str(victim)) if isinstance(commit, str) else commit
    )
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"metrics\.json: context\.commit .* is not a commit id"):
        reference.keep_reference(run, "demo", run / "params.yaml")
    assert victim.read_text() == "keep me\n"
    assert not (run / "results/reference").exists()


def test_refuses_a_run_made_with_uncommitted_code(run: Path) -> None:
    path = run / "results/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["context"]["commit"] += "-dirty"  # what evaluation records then (evaluate.git_commit)
    path.write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match="made with uncommitted code changes"):
        reference.keep_reference(run, "demo", run / "params.yaml")
    assert not (run / "results/reference").exists()


def test_accepts_a_full_commit_id(run: Path) -> None:
    path = run / "results/metrics.json"
    metrics = json.loads(path.read_text())
    metrics["context"]["commit"] = git(run, "rev-parse", "HEAD")
    path.write_text(json.dumps(metrics))
    assert reference.keep_reference(run, "demo", run / "params.yaml").is_dir()


def test_training_time_sums_each_epochs_questions_over_its_rate(run: Path) -> None:
    # Two epochs of 10 steps of 64 questions, at 64 and 32 samples/s: 10 s + 20 s. The epochs'
    # own rates count, so a run resumed in its second epoch is timed whole.
    sidecar = {
        "train_config": {"batch_size": 64},
        "world_size": 1,
        "history": [{"step": 10, "samples_per_s": 64.0}, {"step": 20, "samples_per_s": 32.0}],
    }
    (run / "models/film.json").write_text(json.dumps(sidecar))
    out = reference.keep_reference(run, "demo", run / "params.yaml")
    timed = json.loads((out / "training_time.json").read_text())
    assert (timed["seconds"], timed["epochs"], timed["questions"]) == (30.0, 2, 1280)


def test_training_time_of_a_curriculum_counts_every_phase() -> None:
    # A curriculum's merged history counts questions from the first phase's start; each phase's
    # steps restart, so `step` alone would count the later phases wrong.
    history = [
        {"step": 10, "questions_seen": 640, "samples_per_s": 64.0},
        {"step": 5, "questions_seen": 960, "samples_per_s": 32.0},
    ]
    timed = reference.training_time({"train_config": {"batch_size": 64}, "history": history})
    assert (timed["seconds"], timed["questions"]) == (20.0, 960)


def write_resume_point(root: Path, profile: str) -> None:
    """A `models/last.pt` as training writes it, one epoch and a few steps into a run."""
    from filmclevr.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    (root / "models").mkdir(exist_ok=True)
    epoch = {"epoch": 1, "val_accuracy": 0.70851, "train_accuracy": 0.7227, "samples_per_s": 378.94}
    save_checkpoint(
        root / "models/last.pt",
        {
            "format": CHECKPOINT_FORMAT,
            "profile": profile,
            "epoch": 1,
            "epoch_step": 7063,
            "step": 18000,
            "fingerprint": "f" * 64,
            "train_config": {"max_epochs": 6, "init_checkpoint": "start.pt"},
            "history": [{**epoch, "val_columns": {"count": 0.5106}}],
            "machine": {"processor": "x"},
        },
    )


def test_in_progress_keeps_the_resume_point_and_how_far_it_got(run: Path) -> None:
    write_resume_point(run, "mini")
    assert reference.main(["--in-progress", "--root", str(run)]) == 0
    out = run / "results/in-progress/mini"
    assert (out / "last.pt").read_bytes() == (run / "models/last.pt").read_bytes()
    progress = json.loads((out / "progress.json").read_text())
    assert progress["epochs_done"] == 1 and progress["step"] == 18000
    assert progress["epochs"] == [
        {
            "epoch": 1,
            "val_percent": 70.85,
            "val_columns_percent": {"count": 51.06},
            "train_percent": 72.27,
            "samples_per_s": 378.9,
        }
    ]
    assert progress["commit"] == git(run, "rev-parse", "HEAD")
    assert progress["fingerprint"] == "f" * 64 and progress["max_epochs"] == 6


def test_in_progress_refuses_another_profiles_resume_point(run: Path, capsys) -> None:
    write_resume_point(run, "another-profile")
    assert reference.main(["--in-progress", "--root", str(run)]) == 1
    assert "written by profile 'another-profile', not by 'mini'" in capsys.readouterr().err
    assert not (run / "results/in-progress").exists()


def test_in_progress_or_a_name_not_both(run: Path) -> None:
    with pytest.raises(SystemExit):
        reference.main(["--in-progress", "--name", "x", "--root", str(run)])
    with pytest.raises(SystemExit):
        reference.main(["--root", str(run)])


def test_in_progress_refuses_uncommitted_code(run: Path, capsys) -> None:
    write_resume_point(run, "mini")
    (run / "filmclevr" / "model.py").write_text("# changed\n")
    assert reference.main(["--in-progress", "--root", str(run)]) == 1
    assert "uncommitted changes to the code" in capsys.readouterr().err
    assert not (run / "results/in-progress").exists()
