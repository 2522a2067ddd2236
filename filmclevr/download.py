"""Resumable, verified download of the CLEVR release and its safe extraction (SPEC §1).

The release is one 19 GB zip on a slow host, so a broken transfer resumes from its `.part` file
with an HTTP Range request, and nothing is extracted before the archive's size and SHA-256 match
the recorded values. Extraction refuses any entry that could write outside the target folder
(absolute paths, `..`, symlinks, special files) and goes through a temporary folder, so `dest`
is either a complete release root or absent.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from http.client import HTTPException
from pathlib import Path

from tqdm import tqdm

from filmclevr.clevr import ClevrFormatError
from filmclevr.fileio import atomic_dir, remove_stale_temporaries

log = logging.getLogger(__name__)

REQUIRED_FOLDERS = ("images", "questions")  # checked in the extracted tree before it is renamed
_RETRY_HTTP_CODES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_BACKOFF_S = 60.0
_USER_AGENT = "filmclevr-download (python urllib)"
_NO_RESUME = (
    "the server does not support resuming (it answered 200 instead of 206 to a Range request)"
)


class ChecksumError(ValueError):
    """The archive's size or SHA-256 differs from the expected value."""


class UnsafeArchiveError(ValueError):
    """The archive holds an entry that could write outside the extraction folder."""


class InsufficientSpaceError(OSError):
    """Not enough free disk space for the download or the extraction."""


class DownloadError(OSError):
    """The server refused the file, or the transfer kept failing (the `.part` file is kept)."""


class _Interrupted(Exception):
    """A transfer ended before the expected number of bytes arrived (retryable)."""


class _Stalled(_Interrupted):
    """A transfer brought too few bytes in too long a time: cut, and retried as no progress."""


_RETRYABLE = (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError, _Interrupted)


def fetch_clevr(
    url: str,
    archive: str | Path,
    dest: str | Path,
    *,
    size: int | None,
    sha256: str | None,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    retries: int = 5,
    max_attempts: int = 1000,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    stall_s: float = 120.0,
    stall_bytes: int = 1 << 20,
) -> Path:
    """Download a CLEVR release zip (resuming), verify it, and extract it to `dest`.

    An archive already at `archive` is verified instead of downloaded. The archive's single top
    folder (`CLEVR_v1.0/`) is stripped, so `dest` becomes a release root (`dest/images/...`,
    `dest/questions/...`); an existing `dest` is replaced only once the new tree is complete.

    Args:
        url: http(s) address of the zip.
        archive: where the zip is kept; the transfer writes to `archive` + `.part` first.
        dest: the release root to create.
        size: expected size in bytes, or None when not known (then only warned about).
        sha256: expected SHA-256 (hex), or None when not known (CoGenT): a warning is logged.
        chunk_size: bytes per read while downloading, hashing and extracting.
        progress: show tqdm progress bars (stderr).
        retries: consecutive failed attempts without progress tolerated before giving up;
            progress means the kept `.part` file grew past its longest length so far, so bytes
            that a restart from byte 0 throws away (a server that ignores Range) do not count.
        max_attempts: requests in all before giving up, progress or not.
        backoff_s: wait before the first retry; it doubles for each further one (up to 60 s).
        timeout_s: socket timeout of each request: the longest wait for any byte.
        stall_s, stall_bytes: a request that brings fewer than `stall_bytes` bytes in
            `stall_s` seconds (a byte every 20 s never trips `timeout_s`) is cut and retried
            from where it stopped; it counts as an attempt without progress, so `retries`
            such attempts in a row give up.

    Returns:
        `dest`.

    Raises:
        ChecksumError: the archive's size or hash is wrong; it is moved aside to `.corrupt`,
            and while that file is there no later call downloads again (the parameters may be
            what is wrong: downloading 19 GB once more would fail the same way).
        UnsafeArchiveError: an entry is absolute, has a `..` part, or is a link or special file.
        ClevrFormatError: the archive is not a zip of one top folder holding images/ and
            questions/, or an entry is damaged; the message says to check the parameters' url
            and sha256, and a verified archive is left in place.
        InsufficientSpaceError: the archive's or the extraction's folder lacks free space.
        DownloadError: an HTTP error status, `retries` consecutive attempts without progress,
            or `max_attempts` attempts in all; the `.part` file is kept for a later resume.
    """
    archive, dest = Path(archive), Path(dest)
    fetch_archive(
        url,
        archive,
        size=size,
        sha256=sha256,
        dest=dest,
        chunk_size=chunk_size,
        progress=progress,
        retries=retries,
        max_attempts=max_attempts,
        backoff_s=backoff_s,
        timeout_s=timeout_s,
        stall_s=stall_s,
        stall_bytes=stall_bytes,
    )
    try:
        _extract(archive, dest, chunk_size=chunk_size, progress=progress)
    except ClevrFormatError as e:
        raise ClevrFormatError(f"{e}; {_not_clevr_advice(archive, sha256)}") from None
    return dest


def fetch_archive(
    url: str,
    archive: str | Path,
    *,
    size: int | None,
    sha256: str | None,
    dest: str | Path | None = None,
    settings: str = "get_data.clevr",
    chunk_size: int = 1 << 20,
    progress: bool = True,
    retries: int = 5,
    max_attempts: int = 1000,
    backoff_s: float = 2.0,
    timeout_s: float = 60.0,
    stall_s: float = 120.0,
    stall_bytes: int = 1 << 20,
) -> Path:
    """Download an archive (resuming) and verify it, as `fetch_clevr` does, without extracting
    it: for archives whose reader takes what it needs (CLEVR-Humans' three question files).

    Args:
        dest: where the archive will be extracted, if it will (a space warning checks it and
            a killed extraction's temporary folder is removed); None: it will not.
        settings: the parameters' section naming url, size and sha256, for the messages.
        The others: as `fetch_clevr`'s.

    Returns:
        `archive`, verified.

    Raises:
        As `fetch_clevr`, but for the extraction's errors.
    """
    archive = Path(archive)
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"sha256 {sha256!r} is not 64 hexadecimal digits")
    if size is not None and size < 0:
        raise ValueError(f"size {size} is negative")
    if retries < 0 or max_attempts < 1:
        raise ValueError(f"need retries >= 0 and max_attempts >= 1, got {retries}, {max_attempts}")
    if stall_s <= 0 or stall_bytes < 1:
        raise ValueError(f"need stall_s > 0 and stall_bytes >= 1, got {stall_s}, {stall_bytes}")
    if sha256 is None:
        log.warning("no SHA-256 known for %s: the archive's integrity cannot be checked", url)
    if size is None:
        log.warning("no size known for %s: relying on the server's Content-Length", url)

    if dest is not None:
        # A killed run's extraction (up to 18 GB) would count against the free-space checks.
        dest = Path(dest)
        remove_stale_temporaries(dest)
    digest = None
    aside = _aside(archive)
    if archive.exists():
        log.info("%s already present: verifying it instead of downloading", archive)
    elif aside.exists():
        raise ChecksumError(
            f"{aside}: an earlier download of {url} failed verification and is kept there, so it "
            f"is not downloaded again; {_mismatch_advice(archive, settings)}"
        )
    else:
        digest = _download(
            url,
            archive,
            dest,
            size=size,
            chunk_size=chunk_size,
            progress=progress,
            retries=retries,
            max_attempts=max_attempts,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
            stall=(stall_s, stall_bytes),
        )
    _verify(
        archive,
        size=size,
        sha256=sha256,
        digest=digest,
        chunk_size=chunk_size,
        progress=progress,
        settings=settings,
    )
    return archive


def _not_clevr_advice(archive: Path, sha256: str | None) -> str:
    """What to do about an archive that passed verification but is no CLEVR release."""
    if sha256 is None:
        return (
            f"no SHA-256 was given to check {archive} against: check get_data.clevr.url in the "
            f"parameters file, then delete {archive} and run again"
        )
    # The archive is exactly the file the parameters describe, so downloading it again cannot
    # help: the parameters are what is wrong. It is left in place, as it is what they ask for.
    return (
        f"its size and SHA-256 match the parameters, so the checksum in the parameters names a "
        f"file that is not a CLEVR archive: check get_data.clevr.url and get_data.clevr.sha256 "
        f"in the parameters file, then delete {archive} and run again"
    )


# --- Disk space -------------------------------------------------------------------------------
def _check_space(folder: Path, needed: int, what: str) -> None:
    """Raise InsufficientSpaceError unless `folder`'s file system has `needed` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise InsufficientSpaceError(
            f"not enough free disk space in {folder} for {what}: {needed:,} bytes needed "
            f"({needed / 1e9:.2f} GB), {free:,} bytes free ({free / 1e9:.2f} GB)"
        )


# --- Download ---------------------------------------------------------------------------------
class _PartFile:
    """The `.part` file being appended to, with the running SHA-256 of all its bytes.

    Hashing while downloading spares a second 19 GB read; a resumed prefix is hashed first.
    """

    def __init__(self, path: Path, *, chunk_size: int, progress: bool) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        # The longest prefix the file has held: only getting past it is progress, as bytes that
        # a restart throws away would otherwise let a server that ignores Range loop forever.
        self.kept = self.offset
        self.resume_refused = False  # the last Range request was answered 200, not 206
        self.hasher = (
            _hash_file(path, chunk_size=chunk_size, progress=progress, desc="hash partial")
            if self.offset
            else hashlib.sha256()
        )
        self.file = open(path, "ab")  # closed by close()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hasher.update(data)
        self.offset += len(data)

    def progressed(self) -> bool:
        """Whether the file got past its longest length so far (and note the new length)."""
        if self.offset > self.kept:
            self.kept = self.offset
            return True
        return False

    def restart(self, *, stale: bool = False) -> None:
        """Discard what was downloaded so far.

        `stale`: the bytes were no prefix of the server's file (it is shorter), so their length
        is no progress to beat.
        """
        self.file.truncate(0)
        self.file.seek(0)
        self.offset = 0
        self.hasher = hashlib.sha256()
        if stale:
            self.kept = 0

    def close(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


def _download(
    url: str,
    archive: Path,
    dest: Path | None,
    *,
    size: int | None,
    chunk_size: int,
    progress: bool,
    retries: int,
    max_attempts: int,
    backoff_s: float,
    timeout_s: float,
    stall: tuple[float, int],
) -> str:
    """Download `url` to `archive` via `archive.part`, resuming it; return the SHA-256 (hex)."""
    part_path = archive.with_name(archive.name + ".part")
    archive.parent.mkdir(parents=True, exist_ok=True)
    if size is not None and part_path.exists() and part_path.stat().st_size > size:
        log.warning("%s is larger than the expected %d bytes: starting over", part_path, size)
        part_path.unlink()
    part = _PartFile(part_path, chunk_size=chunk_size, progress=progress)
    try:
        total = size
        if total is not None:
            _check_space(archive.parent, total - part.offset, f"downloading {archive.name}")
            if dest is not None:
                _warn_extraction_space(archive, dest, total - part.offset + total)
        if part.offset:
            log.info("resuming %s at byte %d", part_path, part.offset)
        log.info("downloading %s -> %s", url, archive)
        failures = attempts = 0
        last_error = ""
        with _byte_bar(total, f"download {archive.name}", progress, initial=part.offset) as bar:
            while total is None or part.offset < total:
                if attempts == max_attempts:
                    # Progress alone bounds nothing when each attempt gains a few bytes.
                    why = f"gave up after {attempts} attempts, the most allowed{last_error}"
                    raise _give_up(url, archive, part, why)
                attempts += 1
                try:
                    total = _request(url, part, total, bar, chunk_size, timeout_s, stall)
                except _RETRYABLE as e:
                    last_error = f" (the last one: {e})"
                    # A stalled attempt's few bytes are no progress: a trickle never ends.
                    progressed = part.progressed() and not isinstance(e, _Stalled)
                    failures = 0 if progressed else failures + 1
                    if failures > retries:
                        why = (
                            f"{failures} attempts in a row got no further than byte "
                            f"{part.kept:,}{_of(total)} ({e})"
                            if not isinstance(e, _Stalled)
                            else f"{failures} attempts in a row stalled ({e})"
                        )
                        raise _give_up(url, archive, part, why) from e
                    if attempts == max_attempts:
                        continue  # give up at once rather than after a wait
                    delay = min(backoff_s * 2 ** max(failures - 1, 0), _MAX_BACKOFF_S)
                    note = f"; {_NO_RESUME}, so each attempt starts over from byte 0"
                    log.warning(
                        "%s: transfer interrupted at byte %d (%s)%s; retrying in %.0f s "
                        "(%d/%d failed attempts without progress, attempt %d of at most %d)",
                        url, part.offset, e, note if part.resume_refused else "",
                        delay, failures, retries, attempts, max_attempts,
                    )  # fmt: skip
                    time.sleep(delay)
    finally:
        part.close()
    os.replace(part_path, archive)
    return part.hasher.hexdigest()


def _of(total: int | None) -> str:
    return f" of {total:,}" if total is not None else ""


def _give_up(url: str, archive: Path, part: _PartFile, why: str) -> DownloadError:
    """The error for a transfer that keeps failing, with what to do about it."""
    if part.resume_refused:
        advice = (
            f"{_NO_RESUME}, so each attempt started over from byte 0; {part.offset:,} bytes are "
            f"in {part.path}. Run again when the connection is steadier, or fetch the file "
            f"another way and put it at {archive}, where it is verified instead of downloaded"
        )
    else:
        advice = f"{part.offset:,} bytes kept in {part.path}, run again to resume"
    return DownloadError(f"{url}: {why}; {advice}")


def _request(
    url: str,
    part: _PartFile,
    total: int | None,
    bar: tqdm,
    chunk_size: int,
    timeout_s: float,
    stall: tuple[float, int],
) -> int | None:
    """One HTTP request continuing `part`; return the file's total size (None if not yet known).

    Raises _Stalled when fewer than `stall[1]` bytes arrive in `stall[0]` seconds."""
    headers = {"User-Agent": _USER_AGENT}
    if part.offset:
        headers["Range"] = f"bytes={part.offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        with e:
            content_range = e.headers.get("Content-Range", "")
        if e.code == 416 and part.offset:
            # Range not satisfiable: either the part is already complete, or it is longer than
            # the file (a changed file, a wrong part): then start over without a Range.
            match = re.fullmatch(r"bytes \*/(\d+)", content_range.strip())
            server_total = int(match.group(1)) if match else None
            if server_total == part.offset and total in (None, server_total):
                return server_total
            log.warning("%s: server cannot resume at byte %d: starting over", url, part.offset)
            part.restart(stale=True)
            bar.reset(total=total)
            return total
        if e.code in _RETRY_HTTP_CODES:
            raise _Interrupted(f"HTTP {e.code} {e.reason}") from e
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None

    with response:
        if response.status == 206:
            match = re.fullmatch(
                r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", "").strip()
            )
            if not match or int(match.group(1)) != part.offset:
                # A range we did not ask for: rather than splice it in, start over.
                log.warning("%s: unexpected Content-Range; starting over", url)
                part.restart()
                bar.reset(total=total)
                return total
            server_total = None if match.group(2) == "*" else int(match.group(2))
            part.resume_refused = False
        elif response.status == 200:
            if part.offset:
                log.warning("%s: %s; starting over from byte 0", url, _NO_RESUME)
                part.resume_refused = True
                part.restart()
                bar.reset(total=total)
            length = response.headers.get("Content-Length")
            server_total = int(length) if length is not None else None
        else:
            raise DownloadError(f"{url}: unexpected HTTP status {response.status}")

        if server_total is not None:
            if total is not None and server_total != total:
                raise ChecksumError(
                    f"{url}: the server's file has {server_total:,} bytes, expected {total:,}"
                )
            if total is None:
                # Size learnt only now (size=None): check the space before taking the body.
                _check_space(part.path.parent, server_total - part.offset, f"downloading {url}")
                total = server_total
                bar.total = total
                bar.refresh()

        stall_s, stall_bytes = stall
        window_start, window_bytes = time.monotonic(), 0
        # read1: what one socket read brings, so a trickle is seen; read(n) waits for n bytes.
        while chunk := response.read1(chunk_size):
            part.write(chunk)
            bar.update(len(chunk))
            if total is not None and part.offset > total:
                raise ChecksumError(
                    f"{url}: the server sent more than the {total:,} bytes expected"
                )
            window_bytes += len(chunk)
            elapsed = time.monotonic() - window_start
            if elapsed >= stall_s:
                if window_bytes < stall_bytes:
                    raise _Stalled(
                        f"only {window_bytes:,} bytes in {elapsed:.0f} s, under the "
                        f"{stall_bytes:,} bytes per {stall_s:.0f} s a transfer must keep up; "
                        f"{part.offset:,} bytes kept"
                    )
                window_start, window_bytes = time.monotonic(), 0
    if total is None:
        # Neither a size nor a Content-Length: the end of the stream is all we can go by.
        log.warning("%s: the server gave no length; taking the end of stream as complete", url)
        return part.offset
    if part.offset < total:
        # http.client returns b"" when a connection closes early instead of raising.
        raise _Interrupted(f"connection closed after byte {part.offset:,} of {total:,}")
    return total


def _warn_extraction_space(archive: Path, dest: Path, needed: int) -> None:
    """Warn early when the archive plus a same-sized extraction will not fit one file system."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if os.stat(archive.parent).st_dev != os.stat(dest.parent).st_dev:
        return
    free = shutil.disk_usage(archive.parent).free
    if needed > free:
        log.warning(
            "%s: %d bytes free; the download plus its extraction (PNGs barely compress) will need "
            "about %d: extraction is likely to fail for lack of space",
            archive.parent, free, needed,
        )  # fmt: skip


def _byte_bar(total: int | None, desc: str, progress: bool, initial: int = 0) -> tqdm:
    """A progress bar counting bytes (KiB, MiB, ... as they grow)."""
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not progress,
    )


# --- Verification -----------------------------------------------------------------------------
def _hash_file(path: Path, *, chunk_size: int, progress: bool, desc: str) -> hashlib._Hash:
    """Stream `path` through SHA-256 with a progress bar; return the hash object."""
    hasher = hashlib.sha256()
    with (
        open(path, "rb") as f,
        _byte_bar(path.stat().st_size, f"{desc} {path.name}", progress) as bar,
    ):
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
            bar.update(len(chunk))
    return hasher


def _verify(
    archive: Path,
    *,
    size: int | None,
    sha256: str | None,
    digest: str | None,
    chunk_size: int,
    progress: bool,
    settings: str,
) -> None:
    """Check the archive's size and SHA-256 (`digest` if already computed); refuse a mismatch
    (`settings`: the parameters' section that gives them)."""
    actual_size = archive.stat().st_size
    if size is not None and actual_size != size:
        _refuse(
            archive, f"has {actual_size:,} bytes, expected {size:,} ({settings}.size)", settings
        )
    if sha256 is not None:
        if digest is None:
            digest = _hash_file(archive, chunk_size=chunk_size, progress=progress, desc="sha256")
            digest = digest.hexdigest()
        if digest != sha256:
            _refuse(
                archive, f"has SHA-256 {digest}, expected {sha256} ({settings}.sha256)", settings
            )
    log.info("%s verified (%s)", archive, "size and SHA-256" if sha256 else "size only")


def _aside(archive: Path) -> Path:
    """Where an archive that failed verification is kept."""
    return archive.with_name(archive.name + ".corrupt")


def _mismatch_advice(archive: Path, settings: str) -> str:
    """What to check after a verified mismatch, which a new download may well repeat."""
    aside = _aside(archive)
    return (
        f"either the transfer was damaged or {settings}.sha256 (or .size) in the parameters "
        "file is wrong: compare them with the checksum and size published for the release. If "
        f"the parameters are wrong, correct them and move {aside} back to {archive}: it is "
        f"verified again, not downloaded. If the file is damaged, delete {aside} and run again "
        "to download a fresh copy"
    )


def _refuse(archive: Path, problem: str, settings: str) -> None:
    """Move a bad archive aside (never extract it, never verify it again) and raise."""
    aside = _aside(archive)
    os.replace(archive, aside)
    raise ChecksumError(
        f"{archive} {problem}; it was NOT extracted and was moved to {aside}: "
        f"{_mismatch_advice(archive, settings)}"
    )


# --- Extraction -------------------------------------------------------------------------------
def _entry_problem(info: zipfile.ZipInfo) -> str | None:
    """Why extracting this entry would be unsafe, or None."""
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "absolute path"
    if ".." in re.split(r"[/\\]", name):
        return "'..' path component"
    # Unix file type in the high 16 bits of the external attributes; 0 when the zip has none.
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        return "symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return f"special file (mode {oct(kind)})"
    if info.flag_bits & 0x1:
        return "encrypted entry"
    return None


def _is_dir(info: zipfile.ZipInfo) -> bool:
    return info.is_dir() or stat.S_ISDIR(info.external_attr >> 16)


def _plan_extraction(
    archive: Path, infos: list[zipfile.ZipInfo]
) -> tuple[str, list[tuple[zipfile.ZipInfo, list[str]]]]:
    """Check every entry before anything is written; return the top folder and the entries.

    Each entry comes with its path parts below the top folder (which is stripped).
    """
    tops: set[str] = set()
    plan = []
    for info in infos:
        problem = _entry_problem(info)
        if problem:
            raise UnsafeArchiveError(
                f"{archive}: refusing to extract entry {info.filename!r} ({problem}); "
                "nothing was extracted"
            )
        parts = [p for p in re.split(r"[/\\]", info.filename) if p not in ("", ".")]
        if not parts:
            continue
        # "" marks a file at the top level, which a release never has.
        tops.add(parts[0] if len(parts) > 1 or _is_dir(info) else "")
        if len(parts) > 1:
            plan.append((info, parts[1:]))
    if len(tops) != 1 or "" in tops:
        shown = sorted(t or "<files at top level>" for t in tops)[:5]
        raise ClevrFormatError(
            f"{archive}: expected a single top folder (like CLEVR_v1.0/), found {shown}"
        )
    return tops.pop(), plan


def _extract(archive: Path, dest: Path, *, chunk_size: int, progress: bool) -> None:
    """Extract `archive`'s top folder's contents to `dest`, atomically."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as e:
        raise ClevrFormatError(f"{archive}: not a readable zip archive ({e})") from None
    with zf:
        top, plan = _plan_extraction(archive, zf.infolist())
        total = sum(info.file_size for info, _ in plan)
        _check_space(dest.parent, total, f"extracting {archive.name}")
        log.info("extracting %s (%d entries, %d bytes) -> %s", archive, len(plan), total, dest)
        with (
            atomic_dir(dest) as tmp,
            _byte_bar(total, f"extract {archive.name}", progress) as bar,
        ):
            for info, parts in plan:
                target = tmp.joinpath(*parts)
                if _is_dir(info):
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with zf.open(info) as src, open(target, "wb") as out:
                        while chunk := src.read(chunk_size):
                            out.write(chunk)
                            bar.update(len(chunk))
                # A bad CRC or header, a damaged deflate stream, one cut short: a damaged
                # download, which nothing verifies where no checksum is published (CoGenT).
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise ClevrFormatError(
                        f"{archive}: entry {info.filename!r} is damaged ({e})"
                    ) from None
            missing = [d for d in REQUIRED_FOLDERS if not (tmp / d).is_dir()]
            if missing:
                raise ClevrFormatError(
                    f"{archive}: {top}/ lacks {', '.join(m + '/' for m in missing)}; "
                    "not a CLEVR release"
                )
    log.info("extracted %s to %s", archive.name, dest)
