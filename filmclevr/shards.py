"""Stage 4: WebDataset tar shards per split, their index, and the question loader.

A shard sample is one image: `{key}.png` (the resized RGB PNG, its bytes as resized) and
`{key}.json` (the image's encoded questions, tokens-file records). The loader decodes each PNG
once and expands it into one sample per question, so an image is read and decoded once per
epoch rather than once per question as in clevr-iep's HDF5 reader.

Shards are byte-identical on a rerun: members in sorted order, fixed mtime/owner/mode, USTAR
headers, and JSON with sorted keys.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import logging
import random
import tarfile
from collections.abc import Iterable, Iterator
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
        progress: show a tqdm bar per split on stderr.

    Returns:
        The index: `{split: {"shards": [{"file", "images", "questions"}], "images", "questions"}}`.

    Raises:
        ValueError: a tokens file is missing or malformed, a question's image has no resized
            file, or a split has no images (each message names the file or folder).
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
                text = json.dumps(record, sort_keys=True, separators=(",", ":"))
                entry = (record["question_index"], text)
                by_image.setdefault(Path(record["image_filename"]).stem, []).append(entry)
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
    for path in shard_paths(shards_dir, split):
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(members):
            if name.endswith(".json") and len(samples) < images:
                key = name.removesuffix(".json")
                text = members[name]
                samples.append((key, text, members[f"{key}.png"], len(json.loads(text))))
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
    return index


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


def _expand_questions(samples: Iterable[dict[str, Any]]) -> Iterator[tuple]:
    """One decoded image -> one (image, tokens, answer, type, question_index) per question."""
    for sample in samples:
        where = f"{sample.get('__url__')}: sample {sample.get('__key__')}"
        foreign = sorted(k for k in sample if not k.startswith("__") and k not in ("png", "json"))
        if foreign:
            raise ValueError(
                f"{where} has foreign member(s) {', '.join(foreign)}: a shard sample holds a png "
                "and a json only; rerun write_shards"
            )
        if "png" not in sample or "json" not in sample:
            raise ValueError(f"{where} lacks its png or json member")
        try:
            with Image.open(io.BytesIO(sample["png"])) as image:
                pixels = np.asarray(image.convert("RGB"))  # [S, S, 3]
        except (OSError, SyntaxError, ValueError) as e:
            raise ValueError(f"{where}: cannot decode png ({e})") from None
        # To [3, S, S] once per image, shared by its questions: a strided copy per batch slot
        # would cost as much as the PNG decode.
        pixels = np.ascontiguousarray(pixels.transpose(2, 0, 1))
        for q in json.loads(sample["json"]):
            answer = -1 if q["answer"] is None else q["answer"]
            kind = -1 if q["type"] is None else TYPE_INDEX[q["type"]]
            yield pixels, q["tokens"], answer, kind, q["question_index"]


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
) -> Iterable[Batch]:
    """Padded question batches from shards, for training (`shuffle`) or evaluation.

    Pipeline: shard list (shuffled per `seed`, `epoch`) -> this node's shards (rank::world
    size of torch.distributed, when initialised and `split_by_node`) -> this worker's shards ->
    samples -> PNG decoded once per image, expanded to its questions -> shuffle buffer of
    `shuffle_buffer` questions (if `shuffle`) -> batches of `batch_size` (the last may be
    smaller).

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

    Returns:
        An iterable of `Batch` (a `torch.utils.data.DataLoader` when `num_workers > 0`).

    Raises:
        ValueError: no shards, fewer shards than nodes, or a bad argument.
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
    stages: list[Any] = [
        wds.SimpleShardList(shard_paths, seed=f"shards:{seed}:{epoch}" if shuffle else None),
        functools.partial(_take_node, rank=rank, world_size=world_size),
        wds.split_by_worker,
        wds.tarfile_to_samples(),
        _expand_questions,
    ]
    if shuffle:
        stages.append(
            functools.partial(
                _shuffle_questions, bufsize=shuffle_buffer, seed=seed, epoch=epoch, rank=rank
            )
        )
    stages.append(wds.batched(batch_size, collation_fn=_collate, partial=True))
    pipeline = wds.DataPipeline(*stages)
    if num_workers == 0:
        return pipeline
    # Batches are made in the workers; the DataLoader only moves them (batch_size=None).
    return torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=num_workers)
