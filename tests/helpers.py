"""Fixtures shared by several test files: tiny configs, tiny data and hand-placed objects.

Plain values and functions (no pytest fixtures), imported as `from tests.helpers import ...`.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from filmclevr import clevr, shards, train
from filmclevr.mini import scenes
from filmclevr.model import FiLMConfig
from filmclevr.tokenize import SPECIAL_TOKENS

# --- A tiny model and recipe, trained on the CPU in seconds ---------------------------------------
# The `model:` parameters of a tiny run (on 32-pixel images: `resize_images.image_size` 32): two
# stem layers, then one residual block of 8 channels.
TINY_IMAGE_SIZE = 32
TINY_MODEL_PARAMS = {
    "stem_num_layers": 2,
    "stem_channels": 8,
    "module_channels": 8,
    "num_blocks": 1,
    "word_embedding_dim": 8,
    "rnn_hidden_dim": 16,
    "classifier_proj_dim": 16,
    "classifier_fc_dim": 16,
}


def tiny_film_config(**overrides: Any) -> FiLMConfig:
    """The FiLMConfig of TINY_MODEL_PARAMS, with `overrides`."""
    return FiLMConfig(**{"image_size": TINY_IMAGE_SIZE, **TINY_MODEL_PARAMS, **overrides})


def tiny_train_config(**overrides: Any) -> train.TrainConfig:
    """Batches of 8 from a 16-question shuffle buffer, one thread, on the CPU."""
    recipe = {"batch_size": 8, "shuffle_buffer": 16, "num_threads": 1, "device": "cpu"}
    return train.TrainConfig(**{**recipe, **overrides})


def write_vocab(tokens_dir: Path, words: list[str]) -> Path:
    """A tokenizer vocab.json in `tokens_dir` (made here): the special tokens, then `words`."""
    special = ["<NULL>", "<START>", "<END>", "<UNK>"]
    vocab = {
        "question_token_to_idx": {t: i for i, t in enumerate([*special, *words])},
        "program_token_to_idx": {t: i for i, t in enumerate(special)},
        "answer_token_to_idx": {a: i for i, a in enumerate([*special, *clevr.ANSWERS])},
    }
    tokens_dir.mkdir()
    path = tokens_dir / "vocab.json"
    path.write_text(json.dumps(vocab))
    return path


def permute_question_words(vocab_path: Path) -> None:
    """Give the words of the question vocabulary at `vocab_path` each other's indices (reversed):
    another training split's vocabulary, of the same size, under which every token id of the
    encoded questions names another word."""
    vocab = json.loads(vocab_path.read_text())
    table = vocab["question_token_to_idx"]
    words = sorted((w for w in table if w not in SPECIAL_TOKENS), key=table.get)
    indices = [table[w] for w in words]
    table.update(zip(words, reversed(indices), strict=True))
    vocab_path.write_text(json.dumps(vocab))


def write_random_images(
    root: Path, split: str, n_images: int, image_size: int, rng: np.random.Generator
) -> Iterator[tuple[int, str, np.ndarray]]:
    """Saves `n_images` random RGB images as `root/resized/<split>/<CLEVR name>`, one at a time,
    yielding (image index, file name, pixels) after each."""
    (root / "resized" / split).mkdir(parents=True)
    for i in range(n_images):
        name = clevr.image_filename(split, i)
        pixels = rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "resized" / split / name)
        yield i, name, pixels


def write_tokens_and_shards(
    root: Path, questions: dict[str, list[dict]], images_per_shard: int
) -> Path:
    """The tokenizer's `root/tokens/<split>.json` for each split's encoded `questions` (and its
    report.json, as for mini-CLEVR), then `root/shards` from them and the images in
    `root/resized/<split>/`; returns the shards dir."""
    counts = {}
    for split, records in questions.items():
        document = {"split": split, "unknown_tokens": 0, "questions": records}
        (root / "tokens" / f"{split}.json").write_text(json.dumps(document))
        images = len({r["image_index"] for r in records})
        counts[split] = {"questions": len(records), "images": images, "unknown_tokens": 0}
    report = {"dataset": "mini-CLEVR", "splits": counts}
    (root / "tokens" / "report.json").write_text(json.dumps(report))
    shards.write_shards(
        root / "resized",
        root / "tokens",
        root / "shards",
        splits=list(questions),
        images_per_shard=images_per_shard,
        progress=False,
    )
    return root / "shards"


def write_random_question_data(
    root: Path, images: dict[str, int], words: list[str], questions_per_image: int = 4
) -> dict[str, Path]:
    """Tiny shards (6 images each) by the real shard writer: random 32-pixel images per split of
    `images`, each with random questions whose answer (yes or no) is whether the image is mostly
    red, so that a model can learn it. Returns {"shards": ..., "vocab": ...}."""
    rng = np.random.default_rng(0)
    write_vocab(root / "tokens", sorted(words))
    types = list(clevr.QUESTION_TYPES)
    questions: dict[str, list[dict]] = {}
    for split, n_images in images.items():
        records = questions[split] = []
        for i, name, pixels in write_random_images(root, split, n_images, 32, rng):
            for _ in range(questions_per_image):
                length = int(rng.integers(3, 8))
                tokens = [1, *rng.integers(4, 4 + len(words), length - 2).tolist(), 2]
                kind = types[int(rng.integers(len(types)))]
                records.append(
                    {
                        "question_index": len(records),
                        "image_index": i,
                        "image_filename": name,
                        "tokens": tokens,
                        "answer": 4
                        + int(pixels[..., 0].mean() > 127),  # yes (4) or no (5) from the image
                        "type": kind,
                        "function": clevr.QUESTION_TYPES[kind][0],
                        "family": 0,
                    }
                )
    write_tokens_and_shards(root, questions, images_per_shard=6)
    return {"shards": root / "shards", "vocab": root / "tokens" / "vocab.json"}


def train_into(
    out: Path,
    model: FiLMConfig,
    config: train.TrainConfig,
    shards_dir: Path,
    vocab_path: Path,
    **kwargs: Any,
) -> dict[str, Any]:
    """`train.train` writing film.pt, last.pt and the train/ logs under `out`; no progress bar
    unless `progress=True`. Other keywords (curves_png, the split names) go to `train.train`."""
    kwargs.setdefault("progress", False)
    return train.train(
        model,
        config,
        shards_dir=shards_dir,
        vocab_path=vocab_path,
        best_checkpoint=out / "film.pt",
        last_checkpoint=out / "last.pt",
        log_dir=out / "train",
        **kwargs,
    )


# --- Released questions -------------------------------------------------------------------------
# The keys of a question with its answer (train, val) in a CLEVR release questions file.
ANSWERED_QUESTION_KEYS = {
    "image_index",
    "image_filename",
    "split",
    "question",
    "answer",
    "question_family_index",
    "question_index",
    "program",
}


# --- Hand-placed scene objects ------------------------------------------------------------------
def make_object(shape: str, size: str, x: float, y: float, **attrs: Any) -> dict:
    """A CLEVR scene object resting on the ground at (x, y); color, material and rotation
    default to red, rubber and 0."""
    obj = {
        "color": attrs.get("color", "red"),
        "size": size,
        "shape": shape,
        "material": attrs.get("material", "rubber"),
        "3d_coords": [x, y, scenes.half_height(shape, size)],
        "rotation": attrs.get("rotation", 0.0),
    }
    px, py, depth = scenes.project(obj["3d_coords"])
    obj["pixel_coords"] = [round(px), round(py), depth]
    return obj


def ground_point(right: float, behind: float) -> tuple[float, float]:
    """The ground point at offset (right, behind) from the origin, in the camera's directions."""
    d = scenes.camera_directions()
    return (
        right * d["right"][0] + behind * d["behind"][0],
        right * d["right"][1] + behind * d["behind"][1],
    )


def object_at(shape: str, size: str, right: float, behind: float, **attrs: Any) -> dict:
    """An object placed by its offset (right, behind) from the origin on the ground."""
    return make_object(shape, size, *ground_point(right, behind), **attrs)


# --- CLEVR's own question vocabulary ------------------------------------------------------------
def clevr_question_vocabulary() -> list[str]:
    """CLEVR v1.0's 93 question tokens in clevr-iep's index order, read from docs/SPEC.md §5 (the
    one home of that list); `''` there is the empty-string token."""
    spec = (Path(__file__).resolve().parents[1] / "docs" / "SPEC.md").read_text(encoding="utf-8")
    section = spec[spec.index("## 5.") : spec.index("## 6.")]
    listing = section[section.index("`<NULL> <START>") + 1 :]
    tokens = listing[: listing.index("`")].split()
    return ["" if t == "''" else t for t in tokens]


# --- A tiny trained checkpoint ------------------------------------------------------------------
def tiny_trained_run(
    root: Path,
    words: list[str],
    images: dict[str, int],
    questions_per_image: int,
    model: FiLMConfig,
    config: train.TrainConfig,
    image_size: int = 16,
) -> Path:
    """Random images and encoded questions of `words` (answers yes/no, functions in turn;
    none for test splits), their shards under `root`, and `root/film.pt` trained on them.

    Returns the vocab.json path.
    """
    rng = np.random.default_rng(0)
    vocab_path = write_vocab(root / "tokens", words)
    functions = clevr.TERMINAL_FUNCTIONS
    questions: dict[str, list[dict]] = {}
    for split, n_images in images.items():
        records = questions[split] = []
        answered = not clevr.is_test_split(split)
        for i, name, _ in write_random_images(root, split, n_images, image_size, rng):
            for _ in range(questions_per_image):
                function = functions[len(records) % len(functions)]
                records.append(
                    {
                        "question_index": len(records),
                        "image_index": i,
                        "image_filename": name,
                        "tokens": [1, *rng.integers(4, 4 + len(words), 3).tolist(), 2],
                        "answer": 4 + int(rng.integers(0, 2)) if answered else None,  # yes/no
                        "type": clevr.TYPE_OF_FUNCTION[function] if answered else None,
                        "function": function if answered else None,
                        "family": len(records) % 5 if answered else None,
                    }
                )
    write_tokens_and_shards(root, questions, images_per_shard=3)
    train_into(root, model, config, root / "shards", vocab_path)
    return vocab_path


# --- A damaged archive ----------------------------------------------------------------------------
def damage_deflate_stream(archive: bytes, name: str) -> bytes:
    """`archive` (a zip) with entry `name`'s deflate stream opening on a block of the reserved
    type: damage that neither the central directory nor a CRC shows before the entry is read,
    and that zlib refuses (zlib.error) as it reads it."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo(name)
    if info.compress_type != zipfile.ZIP_DEFLATED:
        raise ValueError(f"{name}: not a deflated entry")
    # The data follows the entry's 30-byte local header, its name and its extra field.
    name_length, extra_length = struct.unpack_from("<HH", archive, info.header_offset + 26)
    damaged = bytearray(archive)
    damaged[info.header_offset + 30 + name_length + extra_length] = 0b111  # BFINAL 1, BTYPE 11
    return bytes(damaged)


# --- A sim-to-real profile: the demo's parameters at a tiny image size, small scenes ------------
SIM_TO_REAL_IMAGE_SIZE = 16
_DEMO_PARAMS = Path(__file__).parents[1] / "results" / "reference" / "demo" / "params.yaml"


def sim_to_real_params(folder: Path) -> Path:
    """A complete parameters file (`folder`/params.yaml): the demo's reference run's, resized to
    SIM_TO_REAL_IMAGE_SIZE, with 3-5 objects and 3 questions per image."""
    params = yaml.safe_load(_DEMO_PARAMS.read_text())
    params["resize_images"]["image_size"] = SIM_TO_REAL_IMAGE_SIZE
    params["get_data"]["mini"].update(min_objects=3, max_objects=5, questions_per_image=3)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path
