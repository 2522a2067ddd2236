"""Atomic writes: complete or absent, flushed to disk before the rename, usual file modes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from filmclevr import fileio


def test_atomic_path_fsyncs_the_file_before_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        events.append(("fsync", (st.st_dev, st.st_ino)))
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append(("replace", Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "out" / "film.pt"
    fileio.write_text_atomic(target, "weights")
    file_id = (target.stat().st_dev, target.stat().st_ino)  # a rename keeps the inode
    folder_id = (target.parent.stat().st_dev, target.parent.stat().st_ino)
    assert events == [("fsync", file_id), ("replace", target), ("fsync", folder_id)]
    assert target.read_text() == "weights"
    assert [p.name for p in target.parent.iterdir()] == ["film.pt"]


def test_atomic_path_failure_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    fileio.write_json_atomic(target, {"a": 1})
    with pytest.raises(RuntimeError), fileio.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_atomic_dir_replaces_the_tree_as_a_whole(tmp_path: Path) -> None:
    out = tmp_path / "tokens"
    with fileio.atomic_dir(out) as tmp:
        (tmp / "old.json").write_text("1")
    with fileio.atomic_dir(out) as tmp:
        fileio.write_json_atomic(tmp / "new.json", [1])
    assert [p.name for p in out.iterdir()] == ["new.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens"]  # no .old or .tmp left
    mode = 0o777 & ~fileio._umask()
    assert out.stat().st_mode & 0o777 == mode
    assert (out / "new.json").stat().st_mode & 0o777 == 0o666 & ~fileio._umask()


@pytest.mark.parametrize(
    ("head", "items"),
    [
        ({"info": {"split": "val", "seed": 0}}, [{"b": 1, "a": ["é", 2.5]}, {"c": None}]),
        ({"info": {}}, []),
        ({}, [1, "two"]),
    ],
)
def test_json_list_writer_writes_the_bytes_of_the_whole_document(
    tmp_path: Path, head: dict, items: list
) -> None:
    fileio.write_json_atomic(tmp_path / "whole.json", {**head, "questions": items}, indent=None)
    with fileio.json_list_writer(tmp_path / "streamed.json", head, "questions") as append:
        for item in items:
            append(item)
    assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()


def test_json_list_writer_leaves_nothing_on_failure(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), fileio.json_list_writer(tmp_path / "q.json", {}, "q") as add:
        add({"a": 1})
        raise RuntimeError("cut short")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "head, tail", [({}, {"split": "val", "unknown_tokens": 0}), ({"a": 1}, {"z": 0})]
)
def test_json_list_writer_writes_a_tail_known_only_at_the_end(
    tmp_path: Path, head: dict, tail: dict
) -> None:
    items = [{"tokens": [1, 5, 2]}, {"tokens": [1, 2]}]
    with fileio.json_list_writer(tmp_path / "streamed.json", head, "questions", tail) as append:
        for item in items:
            append(item)
        tail[max(tail)] = len(items)  # a count, known once every item is written
    document = {**head, "questions": items, **tail}
    fileio.write_json_atomic(tmp_path / "whole.json", document, indent=None)
    assert (tmp_path / "streamed.json").read_bytes() == (tmp_path / "whole.json").read_bytes()
    assert json.loads((tmp_path / "streamed.json").read_text())[max(tail)] == 2


@pytest.mark.parametrize(
    "head, tail", [({"zeta": 1}, None), ({}, {"alpha": 0}), ({}, {"questions": 0})]
)
def test_json_list_writer_needs_the_list_key_between_head_and_tail(
    tmp_path: Path, head: dict, tail: dict | None
) -> None:
    # sort_keys puts "questions" before "zeta" and after "alpha": streaming it out of its place
    # would change the bytes
    with pytest.raises(ValueError, match="must sort after"):
        with fileio.json_list_writer(tmp_path / "q.json", head, "questions", tail):
            pass


# --- Temporaries of killed runs -------------------------------------------------------------------
KILLED_WRITER = """
import sys, time
from filmclevr import fileio
with fileio.atomic_dir(sys.argv[1]) as tmp:
    (tmp / "part.png").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(60)
"""


def test_the_temporary_folder_of_a_killed_writer_is_removed_by_the_next(tmp_path: Path) -> None:
    out = tmp_path / "resized"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(out)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert writer.stdout.readline() == "writing\n"
    writer.kill()  # SIGKILL: no finally block runs
    writer.wait()
    writer.stdout.close()
    (stale,) = (p for p in tmp_path.iterdir() if p.suffix == ".tmp")
    assert stale.name.startswith(".resized.") and (stale / "part.png").exists()
    # The killed run's lock file stays, empty and unlocked: the kernel dropped its lock.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([stale.name, ".resized.lock"])
    with fileio.atomic_dir(out) as tmp:
        (tmp / "new.png").write_text("1")
    assert [p.name for p in tmp_path.iterdir()] == ["resized"]


# Beside an output `resized`: names its own temporaries never take (tempfile's 8 characters are
# lower-case letters, digits and _), or another output's.
NEIGHBOURS = [
    ".resized.abc.tmp",
    ".resized.abcdefghi.tmp",
    ".resized.ABCDEFGH.tmp",
    ".resized.abcdefgh.tmp.keep",
    ".resized.abcdefgh.part",
    ".resized2.abcdefgh.tmp",
    ".other.abcdefgh.tmp",
    "resized.abcdefgh.tmp",
    "resized.old",
]


@pytest.mark.parametrize("helper", ["atomic_dir", "atomic_path"])
def test_only_the_outputs_own_temporaries_are_removed(tmp_path: Path, helper: str) -> None:
    (tmp_path / ".resized.ab_d1234.tmp").mkdir()  # an atomic_dir's, with what it held
    (tmp_path / ".resized.ab_d1234.tmp" / "CLEVR_train_000000.png").write_bytes(b"png")
    (tmp_path / ".resized.zz00zz00.tmp").write_text("half")  # an atomic_path's
    for name in NEIGHBOURS:
        (tmp_path / name).write_text("keep")
    out = tmp_path / "resized"
    if helper == "atomic_dir":
        with fileio.atomic_dir(out) as tmp:
            (tmp / "new.png").write_text("1")
    else:
        fileio.write_text_atomic(out, "1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*NEIGHBOURS, "resized"])
    assert all((tmp_path / name).read_text() == "keep" for name in NEIGHBOURS)


def test_a_swap_cut_short_keeps_the_last_good_output(tmp_path: Path) -> None:
    """Killed between atomic_dir's two renames: the old tree is at .NAME.old, NAME is gone."""
    out = tmp_path / "tokens"
    (tmp_path / ".tokens.old").mkdir()
    (tmp_path / ".tokens.old" / "vocab.json").write_text("old")
    (tmp_path / ".tokens.abcdefgh.tmp").mkdir()
    fileio.remove_stale_temporaries(out)
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]
    assert (out / "vocab.json").read_text() == "old"
    (tmp_path / ".tokens.old").mkdir()  # beside a complete output, it is only stale
    fileio.remove_stale_temporaries(out)
    assert [p.name for p in tmp_path.iterdir()] == ["tokens"]
    assert (out / "vocab.json").read_text() == "old"


def test_a_second_writer_of_the_same_folder_at_once_is_refused(tmp_path):
    """Two runs writing one folder (the other engine, or a stage started by hand) would remove
    each other's temporaries as stale: the second fails, naming the folder, and the first's
    output arrives whole, with nothing left beside it."""
    out = tmp_path / "clevr"
    with fileio.atomic_dir(out) as first:
        (first / "a.json").write_text("{}")
        with pytest.raises(fileio.AlreadyRunningError, match=str(out)):
            with fileio.atomic_dir(out):
                pass
        assert first.is_dir()  # the second run did not take it for a killed run's leftover
    assert [p.name for p in out.iterdir()] == ["a.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["clevr"]  # the lock is gone too
