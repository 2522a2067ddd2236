"""Stage 4: WebDataset tar shards per split, their index, the question loader, and a split
held in memory for the official order.

A shard sample is one image: `{key}.png` (the resized RGB PNG, its bytes as resized) and
`{key}.json` (the image's encoded questions, tokens-file records). The loader decodes each PNG
once and expands it into one sample per question, so an image is read and decoded once per
epoch rather than once per question as in clevr-iep's HDF5 reader.

The loader trusts no shard: a tar reader stops without an error at a damaged header or where
a copy was cut between two members, so each shard is checked against what `index.json` records
for it (images, questions, well-formed records) before any of it is handed on, and each image as
it is decoded; a mismatch raises `ShardError` naming the file.

Shards are byte-identical on a rerun: members in sorted order, fixed mtime/owner/mode, USTAR
headers, and JSON with sorted keys.

The loader streams: shards shuffled, then a shuffle buffer of questions, so that a training
needs no more memory than the buffer. `InMemorySplit` gives training the official code's order
instead (clevr-iep's: every question permuted afresh each epoch), at the cost of holding the
split's images decoded in memory (`TrainConfig.data_order`).

`transformed_batches` is the loader's one hook: a block in which every loader hands its batches
through a function, for the studies that break the data on purpose.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import io
import itertools
import json
import logging
import os
import random
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from filmclevr import clevr, fileio
from filmclevr.tokenize import iter_encoded_split

log = logging.getLogger(__name__)

TAR_MTIME = 946684800  # 2000-01-01 UTC: any fixed value makes reruns byte-identical
TYPE_INDEX: dict[str, int] = {name: i for i, name in enumerate(clevr.QUESTION_TYPES)}


class Batch(NamedTuple):
    """A padded batch of questions with their images (docs/ARCHITECTURE.md)."""

    images: Tensor  # uint8 [B, 3, S, S]
    questions: Tensor  # int64 [B, L], padded with <NULL>=0
    lengths: Tensor  # int64 [B], <START> and <END> included
    answers: Tensor  # int64 [B], -1 where unknown (test split)
    types: Tensor  # int64 [B], index into list(clevr.QUESTION_TYPES), -1 if unknown
    question_indices: Tensor  # int64 [B]


# --- Writer ---------------------------------------------------------------------------------
def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


# A shard sample: its key (the image's file stem), json and png members, and its question count.
Sample = tuple[str, bytes, bytes, int]


def _write_split(tmp: Path, split: str, samples: Iterable[Sample], per_shard: int) -> list[dict]:
    """`tmp/{split}/{split}-NNNNNN.tar`, `per_shard` samples each (the last may hold fewer),
    members in sorted order; the index's shard entries."""
    (tmp / split).mkdir()
    shards: list[dict] = []
    remaining = iter(samples)
    for number in itertools.count():
        chunk = list(itertools.islice(remaining, per_shard))
        if not chunk:
            break
        name = f"{split}/{split}-{number:06d}.tar"
        with tarfile.open(tmp / name, "w", format=tarfile.USTAR_FORMAT) as tar:
            for key, text, png, _ in chunk:
                _add_member(tar, f"{key}.json", text)
                _add_member(tar, f"{key}.png", png)
        questions = sum(count for *_, count in chunk)
        shards.append({"file": name, "images": len(chunk), "questions": questions})
    return shards


def _image_samples(
    images: list[Path], by_image: dict[str, list[tuple[int, str]]], desc: str, progress: bool
) -> Iterator[Sample]:
    """One sample per resized image, its questions sorted by question_index."""
    for image in tqdm(images, desc=desc, disable=not progress):
        records = sorted(by_image.get(image.stem, []))
        # The bytes of json.dumps(records, sort_keys=True, separators=(",", ":")).
        text = "[" + ",".join(text for _, text in records) + "]"
        yield image.stem, text.encode("utf-8"), image.read_bytes(), len(records)


def write_shards(
    resized_root: Path,
    tokens_dir: Path,
    out_dir: Path,
    *,
    splits: list[str],
    images_per_shard: int,
    asked_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write `out_dir/{split}/{split}-NNNNNN.tar` and `out_dir/index.json` (ARCHITECTURE.md).

    Every resized image of a split becomes one sample holding its PNG and its questions
    (sorted by `question_index`); images are taken in file-name order. `out_dir` is replaced
    atomically, and a rerun on the same inputs writes byte-identical files.

    Args:
        resized_root: `resize_images` output, `{split}/CLEVR_{split}_NNNNNN.png`.
        tokens_dir: `tokenize_questions` output, `{split}.json`.
        out_dir: the shard folder to (re)create.
        splits: splits to write.
        images_per_shard: images per tar file (the last one may hold fewer).
        asked_only: write only the images that have questions (CLEVR-Humans asks about some
            of CLEVR's images); False: every image, as CLEVR asks about them all.
        progress: show a tqdm bar per split on stderr.

    Returns:
        The index: `{split: {"shards": [{"file", "images", "questions"}], "images", "questions"}}`.

    Raises:
        ValueError: a tokens file is missing or malformed, a question's image_filename and
            image_index disagree, a question's image has no resized file, or a split has no
            images (each message names the file or folder).
    """
    if images_per_shard < 1:
        raise ValueError(f"images_per_shard must be at least 1, got {images_per_shard}")
    resized_root, tokens_dir = Path(resized_root), Path(tokens_dir)
    index: dict[str, Any] = {}
    with fileio.atomic_dir(out_dir) as tmp:
        for split in splits:
            tokens_path = tokens_dir / f"{split}.json"
            # A split's questions may come in any order, so they are grouped by image before
            # writing, each held as its JSON text: 58 MB per 100,000 questions against 97 as
            # dicts (benchmarks/bench_stage_memory.py).
            by_image: dict[str, list[tuple[int, str]]] = {}
            for record in iter_encoded_split(tokens_path, split):
                image = Path(record["image_filename"]).stem
                # Joined by its file name, while evaluation counts images by image_index: a
                # question whose two disagree would be asked about the wrong image.
                if image != Path(clevr.image_filename(split, record["image_index"])).stem:
                    raise ValueError(
                        f"{tokens_path}: question {record['question_index']} has image_filename "
                        f"{record['image_filename']!r} but image_index {record['image_index']}; "
                        "rerun tokenize_questions"
                    )
                text = json.dumps(record, sort_keys=True, separators=(",", ":"))
                by_image.setdefault(image, []).append((record["question_index"], text))
            folder = resized_root / split
            images = sorted(folder.glob("*.png"))
            if not images:
                raise ValueError(f"{folder}: no resized images for split {split!r}")
            missing = by_image.keys() - {image.stem for image in images}
            if missing:
                raise ValueError(
                    f"{tokens_path}: {len(missing)} images with questions have no resized file "
                    f"in {folder}, e.g. {min(missing)}.png"
                )
            if asked_only:
                images = [image for image in images if image.stem in by_image]

            samples = _image_samples(images, by_image, f"shards {split}", progress)
            shards = _write_split(tmp, split, samples, images_per_shard)
            index[split] = {
                "shards": shards,
                "images": len(images),
                "questions": sum(s["questions"] for s in shards),
            }
            log.info(
                "%s: %d images, %d questions in %d shards",
                split,
                len(images),
                index[split]["questions"],
                len(shards),
            )
        fileio.write_json_atomic(tmp / "index.json", index)
    return index


def write_first_images(
    shards_dir: str | Path, split: str, images: int, out_dir: str | Path
) -> dict[str, Any]:
    """A shard folder holding only the first `images` images of `split` (shard order), under
    the same split name: CoGenT's fine-tuning sets, nested prefixes of valB. The samples are
    copied byte for byte, in shards as large as the source's; `out_dir` is replaced atomically.

    Returns:
        The new folder's index (the `write_shards` format).
    """
    source = load_index(shards_dir).get(split)
    if source is None:
        raise ValueError(f"{Path(shards_dir) / 'index.json'}: no split {split!r}")
    if not 1 <= images <= source["images"]:
        raise ValueError(f"{split}: asked for its first {images} images, it has {source['images']}")
    per_shard = source["shards"][0]["images"]
    samples: list[Sample] = []  # in order
    paths = shard_paths(shards_dir, split)
    expected = _expected_counts(paths)
    for path in paths:
        # Checked against the index like any shard read for training.
        for sample in _shard_samples(path, *expected[path], vocab_size=None, num_answers=None):
            questions = len(sample["__questions__"])
            samples.append((sample["__key__"], sample["json"], sample["png"], questions))
            if len(samples) == images:
                break
        if len(samples) == images:
            break
    with fileio.atomic_dir(out_dir) as tmp:
        shards = _write_split(tmp, split, samples, per_shard)
        index = {
            split: {
                "shards": shards,
                "images": images,
                "questions": sum(s["questions"] for s in shards),
            }
        }
        fileio.write_json_atomic(tmp / "index.json", index)
    return index


# --- Reader ---------------------------------------------------------------------------------
def load_index(shards_dir: str | Path) -> dict[str, Any]:
    """Read `shards_dir/index.json`; raise ValueError naming the file if absent or malformed."""
    path = Path(shards_dir) / "index.json"
    index = fileio.read_json(path)
    if not isinstance(index, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("shards"), list) for v in index.values()
    ):
        raise ValueError(f"{path}: expected {{split: {{'shards': [...], ...}}}}")
    for split, entry in index.items():
        _check_split_entry(path, split, entry)
    return index


def _check_split_entry(path: Path, split: str, entry: dict[str, Any]) -> None:
    """Raise ValueError naming `path` unless the split's shard entries are well formed and add
    up to the split's own counts: the loader checks every shard against its entry, so the
    entries are all that stands for the split."""

    def count(value: Any) -> bool:
        return _is_int(value) and value >= 0

    for number, shard in enumerate(entry["shards"]):
        file = shard.get("file") if isinstance(shard, dict) else None
        if (
            not isinstance(file, str)
            or Path(file).is_absolute()
            or ".." in Path(file).parts
            or not count(shard.get("images"))
            or not count(shard.get("questions"))
        ):
            raise ValueError(
                f"{path}: split {split!r}: shard entry #{number} is not {{'file': a path inside "
                "the folder, 'images': n, 'questions': m}; rerun write_shards"
            )
    for what in ("images", "questions"):
        total = sum(shard[what] for shard in entry["shards"])
        if entry.get(what) != total:
            raise ValueError(
                f"{path}: split {split!r} records {entry.get(what)!r} {what}, but its shards "
                f"{total}; rerun write_shards"
            )


def shard_paths(shards_dir: str | Path, split: str) -> list[str]:
    """The shard files of `split`, in index order, as paths under `shards_dir`."""
    index = load_index(shards_dir)
    if split not in index:
        raise ValueError(
            f"{Path(shards_dir) / 'index.json'}: no split {split!r} (has {', '.join(index)})"
        )
    return [str(Path(shards_dir) / shard["file"]) for shard in index[split]["shards"]]


def _node_info() -> tuple[int, int]:
    """(rank, world size) of torch.distributed when initialised, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _take_node(src: Iterable[Any], rank: int, world_size: int) -> Iterator[Any]:
    # Every node shuffles the shard list with the same seed, so the slices are disjoint.
    return itertools.islice(src, rank, None, world_size)


# What to do about a shard that does not hold what its index says.
_REBUILD = "rerun write_shards (or restore the folder with dvc checkout)"


class ShardError(ValueError):
    """A shard is unreadable or does not hold what its folder's index.json records."""


# A question as the loader hands it on: (tokens, answer or -1, type index or -1, question_index).
Question = tuple[list[int], int, int, int]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_questions(
    text: bytes, where: str, vocab_size: int | None, num_answers: int | None
) -> list[Question]:
    """A sample's json member as loader questions; raise ShardError naming `where` unless it is
    a list of encoded-question records whose tokens index the question vocabulary
    (`vocab_size`) and whose answers the answer vocabulary (`num_answers`); None: unchecked."""
    try:
        records = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ShardError(f"{where}: its json member is not valid JSON ({e}); {_REBUILD}") from None
    if not isinstance(records, list):
        raise ShardError(f"{where}: its json member is not a list of questions; {_REBUILD}")
    questions: list[Question] = []
    for q in records:
        if not isinstance(q, dict) or not _is_int(q.get("question_index")):
            raise ShardError(f"{where}: a question record without its question_index; {_REBUILD}")
        what = f"{where}: question {q['question_index']}"
        tokens, answer, kind = q.get("tokens"), q.get("answer"), q.get("type")
        if (
            not isinstance(tokens, list)
            or not tokens
            or not all(_is_int(t) and t >= 0 for t in tokens)
        ):
            raise ShardError(f"{what} has no valid tokens (non-negative integers); {_REBUILD}")
        # A token past the model's embedding would raise an IndexError deep in the forward
        # pass (a device assert on a GPU): shards encoded with a larger vocabulary.
        if vocab_size is not None and max(tokens) >= vocab_size:
            raise ShardError(
                f"{what} has token index {max(tokens)}, outside the vocabulary's {vocab_size}; "
                f"{_REBUILD}"
            )
        # An answer outside the vocabulary would crash training deep in the loss (a device
        # assert on a GPU) and would be scored as simply wrong in evaluation.
        if answer is not None and not (
            _is_int(answer) and answer >= 0 and (num_answers is None or answer < num_answers)
        ):
            bound = "" if num_answers is None else f", outside the vocabulary's {num_answers}"
            raise ShardError(f"{what} has answer index {answer!r}{bound}; {_REBUILD}")
        if kind is not None and kind not in TYPE_INDEX:
            raise ShardError(f"{what} has unknown question type {kind!r}; {_REBUILD}")
        questions.append(
            (
                tokens,
                -1 if answer is None else answer,
                -1 if kind is None else TYPE_INDEX[kind],
                q["question_index"],
            )
        )
    return questions


def _member_key(name: str) -> tuple[str, str]:
    """(sample key, extension) of a member name, split as WebDataset does: at the first dot of
    its file name."""
    folder, _, file = name.rpartition("/")
    stem, dot, extension = file.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (extension if dot else "")


def _shard_samples(
    path: str, images: int, questions: int, vocab_size: int | None, num_answers: int | None
) -> Iterator:
    """The samples of one shard, each with its questions parsed (`__questions__`), once the
    whole shard has been checked against its index entry (`images`, `questions`): nothing of
    a damaged shard is handed on.

    A tar reader stops without error at a damaged header or where a copy stopped between two
    members, so what the shard holds is counted, never assumed. The check reads the headers
    and the small json members; the PNGs are read once, when their sample is yielded.
    """
    try:
        tar = tarfile.open(path, mode="r:")
    except FileNotFoundError:
        raise ShardError(f"{path}: missing; {_REBUILD}") from None
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ShardError(f"{path}: not a readable tar file ({e}); {_REBUILD}") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(f"{path}: not a readable tar file ({e}); {_REBUILD}") from None
        samples: dict[str, dict[str, tarfile.TarInfo]] = {}
        for member in members:
            key, extension = _member_key(member.name)
            sample = samples.setdefault(key, {})
            if not member.isfile() or extension in sample:
                kind = "a second" if extension in sample else "a non-file"
                raise ShardError(
                    f"{path}: sample {key} has {kind} member {member.name}; {_REBUILD}"
                )
            sample[extension] = member
        for key, sample in samples.items():
            foreign = sorted(e or "(no extension)" for e in sample if e not in ("png", "json"))
            if foreign:
                raise ShardError(
                    f"{path}: sample {key} has foreign member(s) {', '.join(foreign)}: a shard "
                    f"sample holds a png and a json only; {_REBUILD}"
                )
            if len(sample) != 2:
                raise ShardError(f"{path}: sample {key} lacks its png or json member; {_REBUILD}")
        try:
            texts = {key: tar.extractfile(sample["json"]).read() for key, sample in samples.items()}
            parsed = {
                key: _checked_questions(text, f"{path}: sample {key}", vocab_size, num_answers)
                for key, text in texts.items()
            }
            found = sum(len(q) for q in parsed.values())
            if (len(samples), found) != (images, questions):
                raise ShardError(
                    f"{path}: holds {len(samples)} images and {found} questions, but "
                    f"{Path(path).parent.parent / 'index.json'} records {images} and "
                    f"{questions}: the shard is damaged or cut short; {_REBUILD}"
                )
            for key, sample in samples.items():
                yield {
                    "__url__": path,
                    "__key__": key,
                    "json": texts[key],  # as written, for copies (write_first_images)
                    "png": tar.extractfile(sample["png"]).read(),
                    "__questions__": parsed[key],
                }
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ShardError(f"{path}: not a readable tar file ({e}); {_REBUILD}") from None


def _expected_counts(paths: list[str]) -> dict[str, tuple[int, int]]:
    """(images, questions) that the index.json of each shard's folder (`shards_dir` of
    `shards_dir/{split}/{split}-NNNNNN.tar`) records for it."""
    listed: dict[Path, dict[str, tuple[int, int]]] = {}
    expected = {}
    for path in paths:
        shards_dir = Path(path).parent.parent
        if not (shards_dir / "index.json").is_file():
            raise ShardError(
                f"{path}: no {shards_dir / 'index.json'} to check the shard against; pass paths "
                "from shard_paths()"
            )
        if shards_dir not in listed:
            listed[shards_dir] = {
                os.path.normpath(shards_dir / shard["file"]): (shard["images"], shard["questions"])
                for split in load_index(shards_dir).values()
                for shard in split["shards"]
            }
        counts = listed[shards_dir].get(os.path.normpath(path))
        if counts is None:
            raise ShardError(
                f"{path}: not listed in {shards_dir / 'index.json'}, which every shard is "
                "checked against; pass paths from shard_paths()"
            )
        expected[path] = counts
    return expected


def _read_shards(
    shards: Iterable[dict[str, Any]],
    expected: dict[str, tuple[int, int]],
    vocab_size: int | None,
    num_answers: int | None,
) -> Iterator[dict[str, Any]]:
    """The samples of each shard (`{"url": path}` of a shard list), checked by `_shard_samples`."""
    for shard in shards:
        images, questions = expected[shard["url"]]
        yield from _shard_samples(shard["url"], images, questions, vocab_size, num_answers)


def _decoded(
    sample: dict[str, Any],
    size: tuple[int, int] | None,
    vocab_size: int | None,
    num_answers: int | None,
) -> tuple[np.ndarray, list[Question]]:
    """A sample's image as uint8 [3, S, S] and its questions, checked: the image RGB and
    `size` (width, height; None: any), and, for a sample not from `_shard_samples`, its json
    member."""
    where = f"{sample.get('__url__')}: sample {sample.get('__key__')}"
    foreign = sorted(k for k in sample if not k.startswith("__") and k not in ("png", "json"))
    if foreign:
        raise ShardError(
            f"{where} has foreign member(s) {', '.join(foreign)}: a shard sample holds a png "
            f"and a json only; {_REBUILD}"
        )
    questions = sample.get("__questions__")
    if "png" not in sample or (questions is None and "json" not in sample):
        raise ShardError(f"{where} lacks its png or json member")
    if questions is None:
        questions = _checked_questions(sample["json"], where, vocab_size, num_answers)
    try:
        with Image.open(io.BytesIO(sample["png"])) as image:
            mode, found = image.mode, image.size
            # Other modes (16-bit among them) would be converted without a word.
            pixels = np.asarray(image) if mode == "RGB" else None  # [S, S, 3]
    except (OSError, SyntaxError, ValueError) as e:
        raise ShardError(f"{where}: cannot decode png ({e}); {_REBUILD}") from None
    if pixels is None:
        raise ShardError(f"{where}: a {mode} image, where resize_images writes RGB; {_REBUILD}")
    if size is not None and found != size:
        raise ShardError(
            f"{where}: a {found[0]}x{found[1]} image, expected {size[0]}x{size[1]} "
            f"(resize_images.image_size); {_REBUILD}"
        )
    # To [3, S, S] once per image, shared by its questions: a strided copy per batch slot
    # would cost as much as the PNG decode.
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)), questions


def _expand_questions(
    samples: Iterable[dict[str, Any]],
    *,
    image_size: int | None = None,
    vocab_size: int | None = None,
    num_answers: int | None = None,
) -> Iterator[tuple]:
    """One decoded image -> one (image, tokens, answer, type, question_index) per question.

    Every image must be RGB and `image_size` pixels square (without `image_size`: the size of
    the first image), as resize_images writes them; a sample not from `_shard_samples` has
    its json member checked here.
    """
    size = None if image_size is None else (image_size, image_size)
    for sample in samples:
        pixels, questions = _decoded(sample, size, vocab_size, num_answers)
        size = size or (pixels.shape[2], pixels.shape[1])  # (width, height), as PIL's
        for tokens, answer, kind, question_index in questions:
            yield pixels, tokens, answer, kind, question_index


def _shuffle_questions(
    samples: Iterable[tuple], *, bufsize: int, seed: int, epoch: int, rank: int
) -> Iterator[tuple]:
    """Buffer shuffle: each arriving question replaces a random one of `bufsize`, yielded."""
    # Seeded per (seed, epoch, rank, worker): reproducible, yet workers do not mirror each other.
    info = torch.utils.data.get_worker_info()
    worker = info.id if info is not None else 0
    rng = random.Random(f"questions:{seed}:{epoch}:{rank}:{worker}")
    # Nothing leaves before the buffer is full, as an image's ~10 questions arrive together.
    buffer: list[tuple] = []
    for sample in samples:
        if len(buffer) < bufsize:
            buffer.append(sample)
            continue
        k = rng.randrange(bufsize)
        yield buffer[k]
        buffer[k] = sample
    rng.shuffle(buffer)
    yield from buffer


def _collate(samples: list[tuple]) -> Batch:
    images, tokens, answers, types, indices = zip(*samples, strict=True)
    lengths = [len(t) for t in tokens]
    questions = np.zeros((len(tokens), max(lengths)), dtype=np.int64)  # <NULL>=0 padding
    for row, t in enumerate(tokens):
        questions[row, : len(t)] = t
    return Batch(
        images=torch.from_numpy(np.stack(images)),
        questions=torch.from_numpy(questions),
        lengths=torch.tensor(lengths, dtype=torch.int64),
        answers=torch.tensor(answers, dtype=torch.int64),
        types=torch.tensor(types, dtype=torch.int64),
        question_indices=torch.tensor(indices, dtype=torch.int64),
    )


BatchTransform = Callable[[Batch], Batch]
# The transform of the enclosing `transformed_batches` block; None outside any.
_BATCH_TRANSFORM: contextvars.ContextVar[BatchTransform | None] = contextvars.ContextVar(
    "batch_transform", default=None
)


@contextlib.contextmanager
def transformed_batches(transform: BatchTransform | None) -> Iterator[None]:
    """Every `question_loader` made inside the block, and every `InMemorySplit.epoch_batches`,
    hands each batch through `transform` (None: unchanged); the block replaces an enclosing
    one's transform while it lasts.

    The hook for breaking the data on purpose: the gate study (studies/gate_tolerances) blanks
    the images or shuffles the questions to show the CI gate catches a broken data stage. The
    loader is the one path training, validation and evaluation share, so a run trained and
    evaluated inside the block sees the break everywhere, as it would see a bug in a data stage.
    A loader keeps the transform it was made with, in its worker processes too (a transform
    must then pickle: a module-level function). A resume point does not record the transform:
    train a transformed run into a folder of its own.
    """
    token = _BATCH_TRANSFORM.set(transform)
    try:
        yield
    finally:
        _BATCH_TRANSFORM.reset(token)


def _transformed(batches: Iterable[Batch], *, transform: BatchTransform) -> Iterator[Batch]:
    for batch in batches:
        yield transform(batch)


def question_loader(
    shard_paths: list[str],
    *,
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    shuffle_buffer: int = 2000,
    num_workers: int = 0,
    split_by_node: bool = True,
    image_size: int | None = None,
    vocab_size: int | None = None,
    num_answers: int | None = None,
) -> Iterable[Batch]:
    """Padded question batches from shards, for training (`shuffle`) or evaluation.

    Pipeline: shard list (shuffled per `seed`, `epoch`) -> this node's shards (rank::world
    size of torch.distributed, when initialised and `split_by_node`) -> this worker's shards ->
    samples -> PNG decoded once per image, expanded to its questions -> shuffle buffer of
    `shuffle_buffer` questions (if `shuffle`) -> batches of `batch_size` (the last may be
    smaller) -> the transform of an enclosing `transformed_batches` block, if any.

    Every shard is checked against the index.json of its folder before any of it is handed on
    (`_shard_samples`): the images and questions it holds, its records' fields, tokens below
    `vocab_size` and answers below `num_answers`; every image is checked as it is decoded
    (RGB, `image_size` square).

    Without `shuffle` the order is fixed and every question of the given shards comes exactly
    once over all nodes. With `shuffle` the same (`seed`, `epoch`, number of workers and nodes)
    gives the same batch sequence, which training resumption relies on. Each iteration of the
    returned object restarts the same epoch; build a new loader per epoch.

    Args:
        shard_paths: tar files, e.g. `shard_paths(shards_dir, "train")`.
        batch_size: questions per batch.
        shuffle: shuffle shards and questions (training) or keep the order (evaluation).
        seed: base seed of the shuffles.
        epoch: epoch number, mixed into the seeds so each epoch has its own order.
        shuffle_buffer: questions held in the shuffle buffer.
        num_workers: DataLoader worker processes (0: in this process); shards are split
            among them.
        split_by_node: give each distributed rank a disjoint slice of the shards.
        image_size: the side of every image (the model's input size); None: that of the first.
        vocab_size: the size of the question vocabulary (the model's embedding), which every
            token must index; None: tokens are only checked to be non-negative.
        num_answers: the size of the answer vocabulary, which every answer must index; None:
            answers are only checked to be non-negative.

    Returns:
        An iterable of `Batch` (a `torch.utils.data.DataLoader` when `num_workers > 0`).

    Raises:
        ValueError: no shards, fewer shards than nodes, a shard its folder's index.json does
            not list, or a bad argument.
        ShardError (a ValueError), while iterating: a shard is missing, unreadable, or holds
            other images, questions or records than its index entry says (names the file).
    """
    shard_paths = [str(p) for p in shard_paths]
    if not shard_paths:
        raise ValueError("question_loader: no shard paths given")
    if batch_size < 1 or shuffle_buffer < 1 or num_workers < 0:
        raise ValueError(
            f"question_loader: need batch_size >= 1, shuffle_buffer >= 1, num_workers >= 0; got "
            f"{batch_size}, {shuffle_buffer}, {num_workers}"
        )
    rank, world_size = _node_info() if split_by_node else (0, 1)
    if world_size > len(shard_paths):
        raise ValueError(
            f"question_loader: {len(shard_paths)} shards cannot feed {world_size} nodes; "
            "write smaller shards (write_shards.images_per_shard)"
        )
    if len(shard_paths) < world_size * max(num_workers, 1):
        log.warning(
            "%d shards for %d nodes x %d workers: some workers will be idle",
            len(shard_paths),
            world_size,
            num_workers,
        )
    expected = _expected_counts(shard_paths)
    stages: list[Any] = [
        wds.SimpleShardList(shard_paths, seed=f"shards:{seed}:{epoch}" if shuffle else None),
        functools.partial(_take_node, rank=rank, world_size=world_size),
        wds.split_by_worker,
        functools.partial(
            _read_shards, expected=expected, vocab_size=vocab_size, num_answers=num_answers
        ),
        functools.partial(
            _expand_questions,
            image_size=image_size,
            vocab_size=vocab_size,
            num_answers=num_answers,
        ),
    ]
    if shuffle:
        stages.append(
            functools.partial(
                _shuffle_questions, bufsize=shuffle_buffer, seed=seed, epoch=epoch, rank=rank
            )
        )
    stages.append(wds.batched(batch_size, collation_fn=_collate, partial=True))
    if (transform := _BATCH_TRANSFORM.get()) is not None:
        stages.append(functools.partial(_transformed, transform=transform))
    pipeline = wds.DataPipeline(*stages)
    if num_workers == 0:
        return pipeline
    # Batches are made in the workers; the DataLoader only moves them (batch_size=None).
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=num_workers)


# --- The official order: a split in memory, every question permuted each epoch --------------------
# Held per question besides its image: its tokens (int64; CLEVR's longest question has 45 with
# <START> and <END>) and five int64 fields; an allowance for the estimate made before reading.
QUESTION_BYTES_ALLOWANCE = 512


def in_memory_bytes(images: int, questions: int, image_size: int) -> int:
    """At most what `InMemorySplit.read` holds for a split of `images` and `questions`: every
    image decoded (3 x image_size^2 bytes), and an allowance per question. CLEVR's train split
    at 224x224: 70,000 x 150,528 bytes = 10.5 GB, its 699,989 questions 0.4 GB at most."""
    return images * 3 * image_size**2 + questions * QUESTION_BYTES_ALLOWANCE


def permuted_batch_bounds(questions: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch of an epoch of `questions` in the official order.

    Batches of `batch_size`, the last partial one kept, as clevr-iep's DataLoader (drop_last
    false); but a last batch of one question joins the batch before it, since BatchNorm cannot
    train on a single question (the classifier's BatchNorm1d would see one value per channel);
    with `batch_size` 1 every batch is one question, as asked.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    bounds = [
        (start, min(start + batch_size, questions)) for start in range(0, questions, batch_size)
    ]
    if batch_size > 1 and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        bounds[-2:] = [(bounds[-2][0], questions)]
    return bounds


def permuted_steps_per_epoch(questions: int, batch_size: int, world_size: int) -> int:
    """Steps of an epoch in the official order on each of `world_size` ranks."""
    return len(permuted_batch_bounds(-(-questions // world_size), batch_size))


def epoch_permutation(
    questions: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1
) -> np.ndarray:
    """Rank `rank`'s questions (rows of the split) of `epoch` in the official order.

    Every question of the split permuted afresh, seeded by (`seed`, `epoch`) alone, so that a
    resumed run replays it. The official code ran on one GPU; over `world_size` ranks this
    is torch's DistributedSampler: the permutation repeated from its start to a multiple of
    `world_size` (up to world_size - 1 questions come twice in an epoch), and rank r taking
    every world_size-th question from the r-th, so that every rank takes as many steps.
    """
    order = list(range(questions))
    random.Random(f"official:{seed}:{epoch}").shuffle(order)
    per_rank = -(-questions // world_size)
    return np.resize(np.asarray(order, dtype=np.int64), per_rank * world_size)[rank::world_size]


@dataclass(frozen=True)
class InMemorySplit:
    """Every question of a split with its image decoded, in memory: the random access that the
    official order (`epoch_batches`) needs. Questions and images are in shard order."""

    images: np.ndarray  # uint8 [I, 3, S, S]
    image_rows: np.ndarray  # int64 [Q]: each question's image, a row of `images`
    tokens: np.ndarray  # int64: the questions' tokens, one question after another
    token_starts: np.ndarray  # int64 [Q + 1]: question q's are tokens[starts[q]:starts[q + 1]]
    answers: np.ndarray  # int64 [Q], -1 where unknown
    types: np.ndarray  # int64 [Q], index into list(clevr.QUESTION_TYPES), -1 if unknown
    question_indices: np.ndarray  # int64 [Q]

    def __len__(self) -> int:
        return len(self.answers)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(getattr(self, f.name).nbytes for f in dataclasses.fields(self))

    @classmethod
    def read(
        cls,
        shard_paths: list[str],
        *,
        image_size: int,
        vocab_size: int | None = None,
        num_answers: int | None = None,
        progress: bool = False,
    ) -> InMemorySplit:
        """Read and decode every sample of `shard_paths` once, checked as `question_loader`
        checks them (each shard against its folder's index.json, each record, each image RGB
        and `image_size` square); raises as it does, naming the file."""
        paths = [str(p) for p in shard_paths]
        if not paths:
            raise ValueError("InMemorySplit.read: no shard paths given")
        expected = _expected_counts(paths)
        count = sum(images for images, _ in expected.values())
        images = np.empty((count, 3, image_size, image_size), dtype=np.uint8)
        tokens: list[int] = []
        starts, rows, answers, types, indices = [0], [], [], [], []
        samples = _read_shards(({"url": p} for p in paths), expected, vocab_size, num_answers)
        bar = tqdm(samples, total=count, desc="images into memory", disable=not progress)
        for row, sample in enumerate(bar):
            size = (image_size, image_size)
            images[row], questions = _decoded(sample, size, vocab_size, num_answers)
            for question_tokens, answer, kind, question_index in questions:
                tokens.extend(question_tokens)
                starts.append(len(tokens))
                rows.append(row)
                answers.append(answer)
                types.append(kind)
                indices.append(question_index)

        def array(values: list[int]) -> np.ndarray:
            return np.asarray(values, dtype=np.int64)

        return cls(
            images,
            array(rows),
            array(tokens),
            array(starts),
            array(answers),
            array(types),
            array(indices),
        )

    def batch(self, rows: np.ndarray) -> Batch:
        """The questions of `rows` as one batch, padded as the loader's batches."""
        starts, stops = self.token_starts[rows], self.token_starts[rows + 1]
        lengths = stops - starts
        questions = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)  # <NULL>=0
        for row, (start, stop) in enumerate(zip(starts, stops, strict=True)):
            questions[row, : stop - start] = self.tokens[start:stop]
        return Batch(
            images=torch.from_numpy(self.images[self.image_rows[rows]]),
            questions=torch.from_numpy(questions),
            lengths=torch.from_numpy(lengths),
            answers=torch.from_numpy(self.answers[rows]),
            types=torch.from_numpy(self.types[rows]),
            question_indices=torch.from_numpy(self.question_indices[rows]),
        )

    def epoch_batches(
        self,
        *,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        first_batch: int = 0,
    ) -> Iterator[Batch]:
        """This rank's batches of `epoch` in the official order (`epoch_permutation`,
        `permuted_batch_bounds`), from its `first_batch`-th on: a run resumed mid-epoch skips
        what it had trained without building it. Each batch goes through the transform of an
        enclosing `transformed_batches` block, as the loader's do."""
        order = epoch_permutation(
            len(self), seed=seed, epoch=epoch, rank=rank, world_size=world_size
        )
        bounds = permuted_batch_bounds(len(order), batch_size)[first_batch:]
        return self._batches(order, bounds, _BATCH_TRANSFORM.get())

    def _batches(
        self, order: np.ndarray, bounds: list[tuple[int, int]], transform: BatchTransform | None
    ) -> Iterator[Batch]:
        for start, stop in bounds:
            batch = self.batch(order[start:stop])
            yield batch if transform is None else transform(batch)
