"""Model cards and the SHA-256 manifest of the shipped checkpoints (filmclevr/model_cards.py)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from filmclevr import clevr, fileio, manifest, model_cards
from filmclevr.manifest import MANIFEST_NAME
from filmclevr.model_cards import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / REFERENCE / "demo"
# What filmclevr-reference and filmclevr-sim-to-real keep beside the demo's checkpoint.
DEMO_FILES = (
    "film.pt",
    "metrics.json",
    "PROVENANCE.json",
    "params.yaml",
    "sim_to_real.json",
    "sim_to_real_clevr_language/sim_to_real.json",
)


def test_the_shipped_cards_and_manifest_are_up_to_date():
    stale = model_cards.stale_files(ROOT / REFERENCE, ROOT)
    assert stale == [], "run filmclevr-model-cards, then commit:\n" + "\n".join(stale)


def test_the_manifest_lists_exactly_the_checkpoints_git_ships():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    tracked = subprocess.run(
        ["git", "ls-files", "--", f"{REFERENCE.as_posix()}/**.pt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    listed = manifest.read_manifest(ROOT / REFERENCE / MANIFEST_NAME)
    assert {f"{REFERENCE.as_posix()}/{name}" for name in listed} == set(tracked)
    for name, entry in listed.items():
        path = ROOT / REFERENCE / name
        assert entry == {
            "bytes": path.stat().st_size,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        }
        assert model_cards.card_path(path).is_file(), name


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project root whose results/reference/ holds the demo's folder as filmclevr-reference
    and filmclevr-sim-to-real left it, and a checkpoint with nothing beside it."""
    folder = tmp_path / REFERENCE / "demo"
    for name in DEMO_FILES:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO / name, folder / name)
    (tmp_path / REFERENCE / "bare").mkdir()
    shutil.copyfile(DEMO / "film.pt", tmp_path / REFERENCE / "bare" / "step.pt")
    return tmp_path


def write(project: Path) -> list[Path]:
    return model_cards.write_cards_and_manifest(project / REFERENCE, project)


def test_a_card_gives_the_genuine_differences_interval_and_the_known_word_prior(project):
    path = project / REFERENCE / "demo" / "sim_to_real.json"
    report = json.loads(path.read_text())
    genuine = report["sides"]["genuine"]
    genuine["unknown_word_questions"] = 7
    genuine["model_known_words"] = {**genuine["model"], "overall": 55.5}
    genuine["prior_known_words"] = {**genuine["prior"], "overall": 44.25}
    report["intervals"] = {"difference": {"overall": [-3.14, 2.5]}}
    path.write_text(json.dumps(report))
    write(project)
    card = (project / REFERENCE / "demo" / "film.card.md").read_text()
    assert "genuine minus own: -3.1 to +2.5 points, a 95% interval over resampled images" in card
    assert "scored wrong (55.50% on the others, the prior 44.25%)" in card


def test_a_card_says_what_the_files_beside_the_checkpoint_say(project):
    write(project)
    folder = project / REFERENCE / "demo"
    card = (folder / "film.card.md").read_text()
    metrics = json.loads((folder / "metrics.json").read_text())
    provenance = json.loads((folder / "PROVENANCE.json").read_text())
    genuine = json.loads((folder / "sim_to_real.json").read_text())["sides"]["genuine"]
    context = metrics["context"]
    digest = hashlib.sha256((folder / "film.pt").read_bytes()).hexdigest()
    assert card.startswith(model_cards.GENERATED)
    assert f"`{digest}`" in card and f"{(folder / 'film.pt').stat().st_size:,} bytes" in card
    assert f"`{context['profile']}`" in card and context["dataset"] == "mini-CLEVR"
    assert (
        f"trained on `{context['train_split']}` ({context['train_questions']:,} questions" in card
    )
    assert f"| {context['parameters']:,} (" in card
    assert f"`{provenance['commit']}`" in card
    row = next(line for line in card.splitlines() if line.startswith("| mini-CLEVR `val`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    expected = [metrics["overall"], *(metrics["columns"][t] for t in clevr.QUESTION_TYPES)]
    assert cells[3 : 4 + len(clevr.QUESTION_TYPES)] == [f"{v:.2f}" for v in expected]
    assert cells[-2:] == [f"{metrics['prior']['overall']:.2f}", "metrics.json"]
    genuine_row = next(line for line in card.splitlines() if "genuine CLEVR" in line)
    assert f"| {genuine['model']['overall']:.2f} |" in genuine_row
    assert "never CLEVR ones" in card  # a mini-CLEVR number never passes for a CLEVR one
    assert f"git checkout {provenance['commit']}" in card
    assert "snakemake --cores all --configfile /tmp/demo.params.yaml" in card
    assert "filmclevr-demo --model results/reference/demo/film.pt" in card


def test_a_checkpoint_alone_gets_a_card_that_says_what_is_missing(project):
    write(project)
    card = (project / REFERENCE / "bare" / "step.card.md").read_text()
    assert "not recorded beside it (no metrics.json)" in card
    assert "not recorded beside it (no PROVENANCE.json)" in card
    assert "Validation accuracy recorded by its training at its best epoch" in card
    assert "git checkout" not in card and "mini-CLEVR `val`" not in card


def test_the_manifest_lists_every_checkpoint_with_its_digest_and_size(project):
    write(project)
    listed = manifest.read_manifest(project / REFERENCE / MANIFEST_NAME)
    assert set(listed) == {"demo/film.pt", "bare/step.pt"}
    data = (DEMO / "film.pt").read_bytes()
    assert listed["bare/step.pt"] == {
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def test_writing_twice_changes_nothing_and_check_passes(project, capsys):
    assert len(write(project)) == 3  # two cards and the manifest
    assert write(project) == []
    assert model_cards.main(["--root", str(project), "--check"]) == 0


def test_stale_cards_and_manifest_are_named(project, capsys):
    write(project)
    folder = project / REFERENCE / "demo"
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["overall"] = 99.99
    (folder / "metrics.json").write_text(json.dumps(metrics))
    shutil.copyfile(
        ROOT / REFERENCE / "cogent-mini" / "film.pt", project / REFERENCE / "bare" / "step.pt"
    )
    stale = model_cards.stale_files(project / REFERENCE, project)
    assert f"{folder / 'film.card.md'}: stale" in stale
    assert f"{project / REFERENCE / 'bare' / 'step.card.md'}: stale" in stale
    assert f"{project / REFERENCE / MANIFEST_NAME}: stale" in stale
    assert model_cards.main(["--root", str(project), "--check"]) == 1
    assert f"{folder / 'film.card.md'}: stale" in capsys.readouterr().out
    write(project)
    assert "| 99.99 |" in (folder / "film.card.md").read_text()
    assert model_cards.stale_files(project / REFERENCE, project) == []


def test_a_missing_card_and_a_card_without_its_checkpoint_are_stale(project):
    write(project)
    (project / REFERENCE / "demo" / "film.card.md").unlink()
    (project / REFERENCE / "bare" / "step.pt").unlink()
    stale = model_cards.stale_files(project / REFERENCE, project)
    assert f"{project / REFERENCE / 'demo' / 'film.card.md'}: missing" in stale
    assert any(
        line.startswith(f"{project / REFERENCE / 'bare' / 'step.card.md'}: a card without")
        for line in stale
    )


def test_files_of_another_run_are_refused_naming_them(project):
    folder = project / REFERENCE / "demo"
    # sim_to_real.json records the digest of the checkpoint it measured
    shutil.copyfile(ROOT / REFERENCE / "mini-clevr-size" / "film.pt", folder / "film.pt")
    with pytest.raises(ValueError, match=r"sim_to_real.json: measured a checkpoint of SHA-256"):
        write(project)
    shutil.copyfile(DEMO / "film.pt", folder / "film.pt")
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["context"]["checkpoint_epoch"] += 1
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with pytest.raises(ValueError, match=r"metrics.json: context.checkpoint_epoch is \d+, the"):
        write(project)
    assert model_cards.main(["--root", str(project)]) == 1


@pytest.mark.parametrize("check", [False, True])
def test_a_mistyped_folder_is_refused_and_nothing_written(tmp_path, capsys, check):
    """Once it was 'written': a new folder holding an empty manifest, exit 0."""
    argv = ["--root", str(tmp_path / "nowhere")] + (["--check"] if check else [])
    assert model_cards.main(argv) == 1
    assert "nowhere/results/reference: no such folder" in capsys.readouterr().err
    assert not (tmp_path / "nowhere").exists()


# --- Verification -------------------------------------------------------------------------------
def test_a_listed_checkpoint_with_its_digest_is_verified(project):
    write(project)
    path = project / REFERENCE / "demo" / "film.pt"
    verified = manifest.verify_checkpoint(path)
    assert verified is not None
    assert verified.manifest == (project / REFERENCE / MANIFEST_NAME).resolve()
    assert verified.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_changed_checkpoint_is_refused_naming_the_file_and_both_digests(project):
    write(project)
    path = project / REFERENCE / "demo" / "film.pt"
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(manifest.ChecksumMismatchError) as error:
        manifest.verify_checkpoint(path)
    message = str(error.value)
    assert message.startswith(f"{path}: SHA-256 {actual} is not the {expected} that ")
    assert MANIFEST_NAME in message
    assert (error.value.expected, error.value.actual) == (expected, actual)


def test_a_link_to_a_listed_checkpoint_is_verified_as_its_target(project, tmp_path):
    write(project)
    target = project / REFERENCE / "demo" / "film.pt"
    link = tmp_path / "elsewhere" / "film.pt"
    link.parent.mkdir()
    link.symlink_to(target)
    assert manifest.verify_checkpoint(link).sha256 == fileio.file_sha256(target)
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(manifest.ChecksumMismatchError):
        manifest.verify_checkpoint(link)


def test_a_checkpoint_under_a_manifest_but_not_listed_is_refused(project):
    write(project)
    extra = project / REFERENCE / "demo" / "extra.pt"
    shutil.copyfile(DEMO / "film.pt", extra)
    with pytest.raises(ValueError, match=r"extra.pt: not listed in .*run filmclevr-model-cards"):
        manifest.verify_checkpoint(extra)


def test_a_checkpoint_under_no_manifest_is_not_checked(project, tmp_path):
    own = tmp_path / "models" / "film.pt"
    own.parent.mkdir()
    own.write_bytes(b"anything")
    assert manifest.verify_checkpoint(own) is None


@pytest.mark.parametrize(
    "text",
    ['{"format": "something else", "checkpoints": {}}', "[1, 2]", "{not json",
     '{"format": "filmclevr-manifest/1", "checkpoints": {"demo/film.pt": {"sha256": "abc"}}}'],
)  # fmt: skip
def test_a_malformed_manifest_is_an_error_naming_it(project, text):
    (project / REFERENCE / MANIFEST_NAME).write_text(text)
    with pytest.raises(ValueError, match=MANIFEST_NAME):
        manifest.verify_checkpoint(project / REFERENCE / "demo" / "film.pt")


def test_where_training_started_comes_from_the_checkpoint_else_its_parameters():
    start = model_cards._start
    assert start({"init_checkpoint": "a.pt"}, {"train_model": {"init_checkpoint": "b.pt"}}) == (
        "; started from `a.pt`"
    )
    assert start({"init_checkpoint": None}, None) == "; from scratch"
    # older code recorded no init_checkpoint: the parameters it ran say
    assert start({}, {"train_model": {"init_checkpoint": "b.pt"}}) == "; started from `b.pt`"
    assert start({}, {"train_model": {}}) == "; from scratch"
    assert start({}, None) == "; its start is not recorded"
