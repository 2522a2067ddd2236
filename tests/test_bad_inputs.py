"""Bad inputs, run as a user would: each stage command exits 1 with one line naming the file and
the problem, and leaves no half-written output behind (the output it would have replaced stays
as it was)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from filmclevr import clevr, shards
from filmclevr.mini import generate_mini_clevr
from filmclevr.resize import resize_images
from filmclevr.tokenize import tokenize_questions
from tests.helpers import TINY_IMAGE_SIZE, TINY_MODEL_PARAMS

ROOT = Path(__file__).resolve().parents[1]
SPLITS = {"train": 8, "val": 4}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project: params.yaml and every stage's outputs up to a trained checkpoint."""
    root = tmp_path_factory.mktemp("bad_inputs")
    params = yaml.safe_load((ROOT / "config/demo.yaml").read_text())  # the demo
    params["get_data"]["splits"] = list(SPLITS)
    params["get_data"]["mini"]["images"] = dict(SPLITS)
    params["get_data"]["mini"]["questions_per_image"] = 4
    params["resize_images"]["image_size"] = TINY_IMAGE_SIZE
    params["write_shards"]["images_per_shard"] = 4
    params["model"] = dict(TINY_MODEL_PARAMS)
    params["train_model"] = {"max_epochs": 1, "batch_size": 8, "num_threads": 1}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data = root / "data"
    generate_mini_clevr(data / "clevr", splits=SPLITS, seed=0, questions_per_image=4)
    resize_images(
        data / "clevr", data / "resized", splits=list(SPLITS), image_size=32, progress=False
    )
    tokenize_questions(data / "clevr", data / "tokens", splits=list(SPLITS))
    shards.write_shards(
        data / "resized", data / "tokens", data / "shards", splits=list(SPLITS),
        images_per_shard=4, progress=False,
    )  # fmt: skip
    stage(root, "train_model", check=True)
    return root


COMMANDS = {
    "resize_images": ["--clevr", "data/clevr", "--out", "data/resized"],
    "tokenize_questions": ["--clevr", "data/clevr", "--out", "data/tokens"],
    "write_shards": ["--resized", "data/resized", "--tokens", "data/tokens", "--out", "data/out"],
    "train_model": [
        "--shards", "data/shards", "--vocab", "data/tokens/vocab.json", "--out", "models/film.pt",
        "--last", "models/last.pt", "--log-dir", "results/train", "--curves", "results/c.png",
    ],
    "evaluate_model": [
        "--checkpoint", "models/film.pt", "--sidecar", "models/film.json", "--shards",
        "data/shards", "--tokens", "data/tokens", "--metrics", "results/metrics.json",
        "--table-md", "results/t.md", "--table-csv", "results/t.csv", "--table-html",
        "results/t.html", "--figure", "results/a.png", "--figure-csv", "results/a.csv",
        "--curve-csv", "results/curve.csv", "--curve-figure", "results/curve.png",
        "--predictions", "data/predictions",
    ],
}  # fmt: skip


def stage(project: Path, name: str, check: bool = False) -> tuple[int, list[str], str]:
    """Run `python -m stages.<name>` in `project`: (exit code, its ERROR lines, stderr)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), FILMCLEVR_LOG="WARNING")
    result = subprocess.run(
        [sys.executable, "-m", f"stages.{name}", *COMMANDS[name]],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    text = result.stderr.replace("\r", "\n")
    errors = [line for line in text.splitlines() if " stage ERROR: " in line]
    return result.returncode, errors, text


@pytest.fixture
def workspace(project: Path, tmp_path: Path) -> Path:
    """A copy of the tiny project that a test may damage."""
    copy = tmp_path / "project"
    shutil.copytree(project, copy)
    return copy


def fails_with(workspace: Path, name: str, *fragments: str) -> None:
    code, errors, _ = stage(workspace, name)
    assert code == 1 and len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_truncated_png(workspace: Path) -> None:
    image = workspace / "data/clevr/images/train/CLEVR_train_000003.png"
    image.write_bytes(image.read_bytes()[:2000])
    before = snapshot(workspace / "data/resized")
    fails_with(workspace, "resize_images", str(image.relative_to(workspace)), "truncated")
    assert snapshot(workspace / "data/resized") == before
    assert not [p for p in (workspace / "data").iterdir() if p.name.startswith(".")]


def test_image_of_another_size(workspace: Path) -> None:
    image = workspace / "data/clevr/images/val/CLEVR_val_000002.png"
    Image.new("RGBA", (200, 100), (9, 9, 9, 255)).save(image)
    before = snapshot(workspace / "data/resized")
    fails_with(workspace, "resize_images", "CLEVR_val_000002.png: 200x100 pixels", "480x320")
    assert snapshot(workspace / "data/resized") == before


@pytest.mark.parametrize("field", ["question", "answer", "program", "question_family_index"])
def test_question_with_a_missing_field(workspace: Path, field: str) -> None:
    path = workspace / "data/clevr/questions/CLEVR_train_questions.json"
    document = json.loads(path.read_text())
    del document["questions"][2][field]
    path.write_text(json.dumps(document))
    before = snapshot(workspace / "data/tokens")
    fails_with(workspace, "tokenize_questions", "CLEVR_train_questions.json: question #2 lacks")
    assert snapshot(workspace / "data/tokens") == before


def test_empty_split(workspace: Path) -> None:
    path = workspace / "data/clevr/questions/CLEVR_val_questions.json"
    document = json.loads(path.read_text())
    document["questions"] = []
    path.write_text(json.dumps(document))
    fails_with(workspace, "tokenize_questions", "CLEVR_val_questions.json: holds no questions")


def test_shard_with_a_foreign_member(workspace: Path) -> None:
    shard = workspace / "data/shards/train/train-000000.tar"
    members = []
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            members.append((member, tar.extractfile(member).read()))
    with tarfile.open(shard, "w") as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data))
            if member.name == "CLEVR_train_000001.json":  # inside a sample, beside its own
                extra = tarfile.TarInfo("CLEVR_train_000001.exe")
                extra.size = 2
                tar.addfile(extra, io.BytesIO(b"MZ"))
    before = snapshot(workspace / "models")
    fails_with(workspace, "train_model", "train-000000.tar: sample CLEVR_train_000001", "exe")
    assert snapshot(workspace / "models") == before  # film.pt and last.pt untouched


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint(workspace: Path, damage: str) -> None:
    checkpoint = workspace / "models/film.pt"
    content = checkpoint.read_bytes()
    checkpoint.write_bytes(content[:3000] if damage == "truncate" else b"not a checkpoint\n")
    fails_with(workspace, "evaluate_model", "models/film.pt: not a readable checkpoint")
    assert not (workspace / "results/metrics.json").exists()


@pytest.mark.parametrize(
    ("section", "key", "typo", "hint"),
    [
        ("train_model", "max_epochs", "max_epoch", "did you mean max_epochs?"),
        ("model", "stem_channels", "stem_channel", "did you mean stem_channels?"),
        ("evaluate_model", "batch_size", "batchsize", "'batchsize' was unexpected"),
    ],
)
def test_parameters_with_a_typo(
    workspace: Path, section: str, key: str, typo: str, hint: str
) -> None:
    path = workspace / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][typo] = params[section].pop(key, 1)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    name = "evaluate_model" if section == "evaluate_model" else "train_model"
    code, errors, stderr = stage(workspace, name)
    assert code == 1 and len(errors) == 1 and "params.yaml: " in errors[0], errors
    assert typo in stderr and hint in stderr  # a schema error lists its keys below the line


def test_the_mini_clevr_images_are_clevrs_size() -> None:
    """The 480x320 the size check names is the release's (SPEC §1), which mini-CLEVR writes."""
    assert clevr.IMAGE_SIZE == (480, 320)
