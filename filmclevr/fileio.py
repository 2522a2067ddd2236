"""Atomic file and folder writes: outputs appear complete or not at all.

A stage killed half-way must never leave a file or tree that a later stage (or the workflow
engine's up-to-date check) could mistake for a finished one, so everything is written under a
temporary name beside its destination and renamed into place when complete.

A killed run leaves its temporary behind (`.NAME.XXXXXXXX.tmp`, up to a whole CLEVR
extraction); both helpers remove those of their own output when they start
(`remove_stale_temporaries`), which a stage with a free-space check calls before the check. A
stage is the one writer of its outputs (the workflow engines see to it), so a temporary of its
output that exists when it starts is a dead run's.

Power loss: `atomic_path` flushes the file to disk (fsync) before the rename and the folder
after it, so a checkpoint is, after a crash, the old or the new one, whole. `atomic_dir` does
not fsync the files of its tree (a resized CLEVR is 100,000 images; a sync each would cost
minutes), only the files written through `atomic_path` inside it; a tree cut short by a power
loss is rebuilt by rerunning its stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import ijson

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; finished outputs get the usual modes.
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's data and metadata to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temporary_names(path: Path) -> re.Pattern[str]:
    """The names the helpers below give `path`'s temporaries: `.NAME.` + tempfile's 8 random
    characters (lower-case letters, digits, _) + `.tmp`."""
    return re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.tmp")


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove what runs writing `path` through `atomic_path` or `atomic_dir` left beside it when
    they were killed, and nothing else: its temporaries (`.NAME.XXXXXXXX.tmp`) and the
    `.NAME.old` of a swap cut short, which goes back to `path` if `path` is missing (it is the
    last complete output).

    Returns:
        The temporaries removed.
    """
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.is_dir() and not old.is_symlink() and not path.exists() and not path.is_symlink():
        os.replace(old, path)
        log.warning("%s restored from %s, where a killed run had moved it", path, old.name)
    if not path.parent.is_dir():
        return []
    names = _temporary_names(path)
    removed = []
    for entry in os.scandir(path.parent):
        swapped_out = entry.name == old.name and entry.is_dir(follow_symlinks=False)
        if not (names.fullmatch(entry.name) or swapped_out):
            continue
        stale = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        log.warning("removed %s, left by a run that was killed while writing %s", stale, path)
        removed.append(stale)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it to `path` if the block succeeds.

    The file is fsynced before the rename and its folder after, so the rename survives a power
    loss and never exposes a file whose data had not reached the disk. Temporaries of `path`
    left by killed runs are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, _FILE_MODE)
            _fsync(tmp)
        os.replace(tmp, path)
        # Makes the rename itself durable; folders cannot be opened for fsync on Windows.
        with contextlib.suppress(OSError):
            _fsync(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder beside `path`; it replaces `path` if the block succeeds.
    Temporaries of `path` left by killed runs are removed first.

    The whole write holds a lock beside `path` (`.NAME.lock`, removed at the end), so a second
    run writing the same folder at once (the other engine, or a stage started by hand) fails
    with `AlreadyRunningError` instead of removing this run's temporary as a stale one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with exclusive_lock(lock, f"a run writing {path}", remove=True), _swap_in(path) as tmp:
        yield tmp


@contextlib.contextmanager
def _swap_in(path: Path) -> Iterator[Path]:
    """`atomic_dir`'s work, under its lock."""
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _DIR_MODE)
        if path.exists():
            # Move the old tree aside first so the swap leaves no mixture of old and new files.
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class AlreadyRunningError(OSError):
    """Another live process holds the lock of an output this run would write."""


@contextlib.contextmanager
def exclusive_lock(
    lock_path: str | Path, what: str, remove: bool = False, wait: bool = False
) -> Iterator[None]:
    """Hold an exclusive lock on `lock_path` (made if missing) for the block, for `what` (e.g.
    "a training writing results/train"); its pid is written into the file for the message.

    The engines keep one writer per output only among their own jobs: a stage run by hand, or
    by the other engine, writes beside it, and each one's atomic writes remove the other's
    temporaries. The kernel drops the lock when its process dies, so a hard kill leaves no
    stale lock; the empty file stays.

    With `remove`, the lock file is removed before the lock is released, so nothing stays
    beside the output (a run that opens it after that makes a new one, and the writer is done).
    With `wait`, a lock another process holds is waited for (for short critical sections, such
    as reading and rewriting a shared file), not refused.

    Raises:
        AlreadyRunningError: another process holds it; the message names `what`, the process
            and the lock file.
    """
    import fcntl  # POSIX only, as the rest of the pipeline

    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise AlreadyRunningError(
                f"{lock_path}: {what} is already running there (process {holder} holds this "
                "lock); two at once would mix their outputs: wait for it to end, or stop it"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            f.truncate(0)
            if remove:
                lock_path.unlink(missing_ok=True)
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _errors_named(path: str | Path, error: type[Exception]) -> Iterator[None]:
    """A missing, unreadable or malformed JSON file raises `error` naming it."""
    try:
        yield
    except FileNotFoundError:
        raise error(f"{path}: file not found") from None
    except OSError as e:
        raise error(f"{path}: cannot read ({e.strerror or e})") from None
    except (json.JSONDecodeError, ijson.JSONError, UnicodeDecodeError) as e:
        raise error(f"{path}: not valid JSON ({e})") from None


def read_json(path: str | Path, error: type[Exception] = ValueError) -> Any:
    """Parse a JSON file; a missing, unreadable or malformed file raises `error` naming it."""
    with _errors_named(path, error), open(path, encoding="utf-8") as f:
        return json.load(f)


def iter_json_list(
    path: str | Path, key: str, error: type[Exception] = ValueError
) -> Iterator[Any]:
    """The items of the list under `key` of a JSON object file, parsed one at a time (ijson), so
    a split of 700,000 questions is never held whole. A missing, unreadable or malformed file,
    or one without that list, raises `error` naming it (when the bad part is reached)."""
    with _errors_named(path, error), open(path, "rb") as f:
        empty = True
        for item in ijson.items(f, f"{key}.item", use_float=True):
            empty = False
            yield item
        if empty:
            f.seek(0)
            if not any(p == key and e == "start_array" for p, e, _ in ijson.parse(f)):
                raise error(f"{path}: expected a JSON object with a list under {key!r}")


def read_json_value(
    path: str | Path, key: str, default: Any = None, error: type[Exception] = ValueError
) -> Any:
    """The value under `key` of a JSON object file (`default` without one), the rest of the file
    parsed but not built: a file's `info` or `split` beside its 700,000 questions."""
    with _errors_named(path, error), open(path, "rb") as f:
        return next(ijson.items(f, key, use_float=True), default)


def relative_name(path: str | Path, root: str | Path) -> str:
    """`path` as named from `root` when it lies under it (so a record or a page names a file as
    the project does, not by a folder of the machine that wrote it), else as given."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return str(path)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, in hexadecimal (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write `data` as JSON to `path` atomically, with sorted keys for byte-stable output."""
    write_text_atomic(path, json.dumps(data, indent=indent, sort_keys=True) + "\n")


@contextlib.contextmanager
def json_list_writer(
    path: str | Path,
    head: Mapping[str, Any],
    key: str,
    tail: Mapping[str, Any] | None = None,
) -> Iterator[Callable[[Any], None]]:
    """Stream the JSON document `{**head, key: [items], **tail}` to `path` atomically, one item at
    a time.

    Yields `append(item)`. The bytes are those of `write_json_atomic(path, {**head, key: items,
    **tail}, indent=None)`, so a split of 700,000 questions is written without holding it in
    memory. `tail` is read when the block ends, so it may hold what is known only then (a count);
    its keys must be there from the start.
    """
    tail = {} if tail is None else tail
    if key in head or any(k > key for k in head) or any(k <= key for k in tail):
        raise ValueError(
            f"{path}: list key {key!r} must sort after every key of {sorted(head)} and before "
            f"every key of {sorted(tail)}"
        )
    prefix = json.dumps(dict(head), sort_keys=True)[:-1]  # the head without its closing brace
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{prefix}{', ' if head else ''}{json.dumps(key)}: [")
        separator = ""

        def append(item: Any) -> None:
            nonlocal separator
            f.write(separator + json.dumps(item, sort_keys=True))
            separator = ", "

        yield append
        rest = json.dumps(dict(tail), sort_keys=True)[1:]  # the tail without its opening brace
        f.write(f"]{', ' if tail else ''}{rest}\n")
