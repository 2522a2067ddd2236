"""The SHA-256 manifest of shipped checkpoints, and the check of a checkpoint against it.

A manifest (`MANIFEST.sha256.json`, written by `filmclevr-model-cards` in `results/reference/`)
lists every checkpoint under its folder: its path relative to the folder, its SHA-256 and its
size in bytes. `verify_checkpoint` checks a checkpoint against the manifest of the nearest
folder above it that has one; a checkpoint under no manifest (a user's own `models/film.pt`)
is not checked. Torch-free, so that loading a model (`ask.load`) checks the file before it is
unpickled.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filmclevr.fileio import file_sha256, read_json

MANIFEST_NAME = "MANIFEST.sha256.json"
MANIFEST_FORMAT = "filmclevr-manifest/1"


class ChecksumMismatchError(ValueError):
    """A checkpoint listed in a manifest whose bytes are not the ones listed."""

    def __init__(self, path: Path, manifest: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: SHA-256 {actual} is not the {expected} that {manifest} lists: the "
            "checkpoint was changed or damaged since it was shipped; restore it "
            f"(git checkout -- {path}) or use a checkpoint of your own outside that folder"
        )
        self.path, self.manifest, self.expected, self.actual = path, manifest, expected, actual


def checkpoints_under(folder: Path) -> list[Path]:
    """Every checkpoint (`*.pt`) under `folder`, sorted, hidden files (temporaries) left out."""
    found = folder.rglob("*.pt")
    return sorted(
        p for p in found if not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def build_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of every checkpoint under `folder` (paths relative to it, POSIX style)."""
    listed = {}
    for path in checkpoints_under(folder):
        listed[path.relative_to(folder).as_posix()] = {
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }
    return {
        "format": MANIFEST_FORMAT,
        "about": "SHA-256 and size of every checkpoint under this folder, written by "
        "filmclevr-model-cards; filmclevr-ask and filmclevr-demo refuse a listed checkpoint "
        "whose bytes differ",
        "checkpoints": listed,
    }


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The manifest as its file holds it (sorted keys: byte-stable)."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """A manifest's entries: relative path -> {"sha256", "bytes"}.

    Raises:
        ValueError: naming `path`, when it is not a manifest of this format.
    """
    data = read_json(path)
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise ValueError(f"{path}: not a {MANIFEST_FORMAT} manifest (format, checkpoints)")
    entries = data.get("checkpoints")
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: not a {MANIFEST_FORMAT} manifest (format, checkpoints)")
    for name, entry in entries.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or len(digest) != 64:
            raise ValueError(f"{path}: checkpoints.{name}.sha256 is not a SHA-256 digest")
    return entries


def manifest_over(path: str | Path) -> Path | None:
    """The manifest of the nearest folder above `path` (links resolved) that has one, if any."""
    for folder in Path(path).resolve().parents:
        if (folder / MANIFEST_NAME).is_file():
            return folder / MANIFEST_NAME
    return None


@dataclasses.dataclass(frozen=True)
class Verified:
    """A checkpoint whose bytes are the ones its manifest lists."""

    path: Path
    manifest: Path
    sha256: str


def verify_checkpoint(path: str | Path) -> Verified | None:
    """Check a checkpoint against the manifest above it.

    Returns:
        None when no folder above `path` has a manifest (nothing to check), else what matched.

    Raises:
        ChecksumMismatchError: the file's SHA-256 is not the one listed (names the file, the
            manifest, the expected and the actual digest).
        ValueError: the manifest covers `path` but does not list it, or is malformed.
    """
    path = Path(path)
    manifest = manifest_over(path)
    if manifest is None:
        return None
    name = path.resolve().relative_to(manifest.parent.resolve()).as_posix()
    entry = read_manifest(manifest).get(name)
    if entry is None:
        raise ValueError(
            f"{path}: not listed in {manifest}, which lists every checkpoint shipped under "
            f"{manifest.parent}: run filmclevr-model-cards to list it, or keep your own "
            "checkpoints outside that folder"
        )
    actual = file_sha256(path)
    if actual != entry["sha256"]:
        raise ChecksumMismatchError(path, manifest, entry["sha256"], actual)
    return Verified(path, manifest, actual)
