"""Data-pipeline benchmark: generation, resizing, stored formats and question reading, per core.

Builds a temporary dataset with the mini-CLEVR generator, runs stages 2-4 on it, and prints one
table of per-core rates and ratios beside their baselines:

- generation images/s in mini-CLEVR's own look and language beside CLEVR's
  (`get_data.mini.look` and `.language`: clevr);
- resize images/s beside the floor of only decoding the source PNGs;
- the stored format of resized images: PNG (zlib level 4, stored; levels 1, 6), JPEG q95, `.npy`:
  bytes, encode and decode rates, fidelity against the exact pixels;
- question samples/s from the shards (`question_loader`) beside reading the resized file of
  every question one by one, and beside clevr-iep/FiLM's HDF5 float32 reader (one
  `features[image_index]` read per question);
- shard bytes per image beside HDF5 float32 bytes per image.

Everything runs in one process and is timed in CPU seconds, so the rates are per core and
hold on a busy machine. Usage:
    python benchmarks/bench_data.py [--images 300] [--image-size 224] [--json FILE]

`--json` also keeps the table, each row by a name, with the machine (CPU model, family, model
number, the instruction sets that matter here) and the commit, so that a page can read the
numbers of one run from it rather than have them typed in.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from filmclevr import clevr, fileio
from filmclevr.distributed import cpu_machine
from filmclevr.evaluate import git_commit
from filmclevr.resize import PNG_COMPRESS_LEVEL, resize_images
from filmclevr.shards import load_index, question_loader, shard_paths, write_shards
from filmclevr.tokenize import tokenize_questions

BATCH = 64  # the paper's batch size (SPEC §4)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children: unlike wall time, it is not inflated
    when other jobs share the cores, and it is what "per core" means."""
    children = os.times()  # children's CPU time, at clock-tick resolution
    return time.process_time() + children.children_user + children.children_system


def timed(fn: Callable[[], object], repeats: int = 1) -> float:
    """Least CPU seconds of `fn` over `repeats` runs (the least disturbed by cache effects)."""
    best = float("inf")
    for _ in range(repeats):
        start = cpu_seconds()
        fn()
        best = min(best, cpu_seconds() - start)
    return best


# --- Dataset ----------------------------------------------------------------------------------
def clevr_like_image(rng: np.random.Generator) -> Image.Image:
    """A 480x320 RGBA image like a CLEVR render: shaded floor, 3-10 colored shapes, and render
    noise, which makes PNGs large: ~200 KB per image, near CLEVR v1.0's ~180 KB."""
    ramp = np.linspace(95, 150, 320)[:, None, None] * np.ones((320, 480, 3))
    image = Image.fromarray(ramp.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    colors = list(clevr.COLORS.values())
    for _ in range(int(rng.integers(3, 11))):
        x, y, s = (int(v) for v in rng.integers((20, 60, 25), (420, 260, 70)))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape([x, y, x + s, y + s], fill=colors[int(rng.integers(len(colors)))])
    noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 1, (320, 480, 3))
    rgb = np.clip(noisy, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, np.full((320, 480), 255, np.uint8)]), "RGBA")


def build_release(
    root: Path, images: int, look: str = "mini", language: str = "mini"
) -> tuple[str, float | None]:
    """Write a release tree of `images` train images; return its source and generation img/s."""
    from filmclevr.mini import generate_mini_clevr

    with contextlib.redirect_stderr(io.StringIO()):  # its progress bar would break the table
        seconds = timed(
            lambda: generate_mini_clevr(
                root,
                splits={"train": images},
                seed=0,
                questions_per_image=10,
                min_objects=3,
                max_objects=10,
                look=look,
                language=language,
                workers=1,
            )
        )
    return "mini-CLEVR generator", images / seconds


# --- Stored formats ---------------------------------------------------------------------------
def encoders() -> dict[str, tuple[Callable, Callable]]:
    def png(level):
        def encode(image):
            buffer = io.BytesIO()
            image.save(buffer, "PNG", compress_level=level)
            return buffer.getvalue()

        return encode

    def jpeg(image):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95)
        return buffer.getvalue()

    def npy(image):
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(image), allow_pickle=False)
        return buffer.getvalue()

    def decode_image(data):
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))

    def decode_npy(data):
        return np.load(io.BytesIO(data), allow_pickle=False)

    return {
        **{
            f"png-{level}{label}": (png(level), decode_image)
            for level, label in ((PNG_COMPRESS_LEVEL, " (stored)"), (1, ""), (6, " (PIL default)"))
            if label or level != PNG_COMPRESS_LEVEL
        },
        "jpeg q95": (jpeg, decode_image),
        "npy (raw uint8)": (npy, decode_npy),
    }


def format_rows(label: str, images: list[Image.Image]) -> list[tuple]:
    """Bytes, encode/decode rates and fidelity of each stored format on resized RGB images."""
    exact = [np.asarray(image) for image in images]
    rows, reference = [], None
    for name, (encode, decode) in encoders().items():
        encode_s = timed(lambda: [encode(image) for image in images], repeats=5)  # noqa: B023
        blobs = [encode(image) for image in images]
        decode_s = timed(lambda: [decode(blob) for blob in blobs], repeats=5)  # noqa: B023
        decoded = [decode(blob).astype(np.float64) for blob in blobs]
        error = max(int(np.abs(d - e).max()) for d, e in zip(decoded, exact, strict=True))
        mse = np.mean([np.mean((d - e) ** 2) for d, e in zip(decoded, exact, strict=True)])
        fidelity = (
            "lossless"
            if mse == 0
            else f"max err {error}, PSNR {10 * np.log10(255**2 / mse):.0f} dB"
        )
        rate = len(images) / decode_s
        reference = reference or rate
        value = (
            f"dec {rate:.0f}/s, enc {len(images) / encode_s:.0f}/s, "
            f"{np.mean([len(b) for b in blobs]) / 1e3:.1f} KB, {fidelity}"
        )
        rows.append(
            (
                f"{label}: {name}",
                value,
                f"decode rate vs png-{PNG_COMPRESS_LEVEL}",
                "",
                rate / reference,
            )
        )
    return rows


def resized_images(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


# --- Readers ----------------------------------------------------------------------------------
def collate(images: list[torch.Tensor], tokens: list[list[int]]) -> tuple:
    lengths = [len(t) for t in tokens]
    questions = torch.zeros(len(tokens), max(lengths), dtype=torch.int64)
    for row, t in enumerate(tokens):
        questions[row, : len(t)] = torch.tensor(t)
    return torch.stack(images), questions


def read_files(resized: Path, records: list[dict]) -> int:
    """Per question: open and decode its resized PNG (a plain map-style Dataset would)."""
    count = 0
    for start in range(0, len(records), BATCH):
        batch = records[start : start + BATCH]
        images = []
        for q in batch:
            with Image.open(resized / q["image_filename"]) as image:
                images.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1))
        collate(images, [q["tokens"] for q in batch])
        count += len(batch)
    return count


def read_hdf5(h5_path: Path, records: list[dict]) -> int:
    """clevr-iep's ClevrDataset: per question `feature_h5['features'][image_idx]` as float32."""
    import h5py

    count = 0
    with h5py.File(h5_path, "r") as h5:
        features = h5["features"]
        for start in range(0, len(records), BATCH):
            batch = records[start : start + BATCH]
            images = [
                torch.FloatTensor(np.asarray(features[q["image_index"]], dtype=np.float32))
                for q in batch
            ]
            collate(images, [q["tokens"] for q in batch])
            count += len(batch)
    return count


def write_hdf5(h5_path: Path, resized: list[Path], size: int) -> None:
    """The official layout: one contiguous float32 [N, 3, S, S] dataset `features`."""
    import h5py

    with h5py.File(h5_path, "w") as h5:
        features = h5.create_dataset("features", (len(resized), 3, size, size), dtype=np.float32)
        for i, path in enumerate(resized):
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
            features[i] = pixels.transpose(2, 0, 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=300, help="train images to build (default 300)")
    p.add_argument("--image-size", type=int, default=224, help="resized side (default 224)")
    p.add_argument("--json", type=Path, help="also write the measurements here, by name")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    size = args.image_size
    rows: list[tuple] = []
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        tmp = Path(tmp)
        source, generate_rate = build_release(tmp / "clevr", args.images)
        rows.append(("generate mini-CLEVR (10 q/img)", f"{generate_rate:.1f} img/s", "", "", None))
        rates = {"generate_mini_look": generate_rate}
        # CLEVR's look and language (get_data.mini.look/language: clevr) beside it, same images
        _, clevr_rate = build_release(tmp / "clevr-look", args.images, "clevr", "clevr")
        rows.append(
            (
                "generate, CLEVR look + language",
                f"{clevr_rate:.1f} img/s",
                f"mini look: {generate_rate:.1f}",
                f"{clevr_rate / generate_rate:.2f}",
                None,
            )
        )
        rates |= {
            "generate_clevr_look": clevr_rate,
            "clevr_look_over_mini_look": clevr_rate / generate_rate,
        }

        sources = sorted((tmp / "clevr" / "images" / "train").glob("*.png"))
        n = len(sources)

        def decode_sources():
            for path in sources:
                with Image.open(path) as image:
                    image.convert("RGB")

        floor = n / timed(decode_sources, repeats=2)
        resize = n / timed(
            lambda: resize_images(
                tmp / "clevr", tmp / "resized", splits=["train"], image_size=size, progress=False
            ),
            repeats=2,
        )
        rows.append(
            (f"resize 480x320 -> {size} png", f"{resize:.0f} img/s", "decode source png only",
             f"{floor:.0f} img/s", resize / floor)
        )  # fmt: skip
        rates |= {
            "resize": resize,
            "decode_source_png": floor,
            "resize_over_decode": resize / floor,
        }
        resized = sorted((tmp / "resized" / "train").glob("*.png"))
        rows += format_rows("format, this data", resized_images(resized[:100]))
        if generate_rate is not None:
            # mini-CLEVR renders are smooth; real CLEVR renders are noisy, which changes PNG sizes.
            rng = np.random.default_rng(1)
            like = [clevr_like_image(rng).convert("RGB") for _ in range(50)]
            like = [image.resize((size, size), Image.Resampling.BICUBIC) for image in like]
            rows += format_rows("format, CLEVR-like noise", like)

        tokenize_questions(tmp / "clevr", tmp / "tokens", splits=["train"])
        write_shards(tmp / "resized", tmp / "tokens", tmp / "shards", splits=["train"],
                     images_per_shard=100, progress=False)  # fmt: skip
        records = json.loads((tmp / "tokens" / "train.json").read_text())["questions"]
        random.Random(0).shuffle(records)  # map-style readers visit questions in random order
        paths = shard_paths(tmp / "shards", "train")

        def read_shards():
            loader = question_loader(paths, batch_size=BATCH, shuffle=True)
            return sum(len(batch.question_indices) for batch in loader)

        shard_rate = len(records) / timed(read_shards, repeats=2)
        files_rate = len(records) / timed(
            lambda: read_files(tmp / "resized" / "train", records), repeats=2
        )
        write_hdf5(tmp / "features.h5", resized, size)
        h5_rate = len(records) / timed(lambda: read_hdf5(tmp / "features.h5", records), repeats=2)
        rates |= {"read_shards": shard_rate, "read_png_per_question": files_rate,
                  "read_hdf5_per_question": h5_rate,
                  "shards_over_png_per_question": shard_rate / files_rate,
                  "shards_over_hdf5_per_question": shard_rate / h5_rate}  # fmt: skip
        for name, rate in (("resized png file per question", files_rate),
                           ("hdf5 float32 per question (clevr-iep)", h5_rate)):  # fmt: skip
            rows.append(("read questions from shards", f"{shard_rate:.0f} q/s", name,
                         f"{rate:.0f} q/s", shard_rate / rate))  # fmt: skip

        index = load_index(tmp / "shards")["train"]
        shard_bytes = sum((tmp / "shards" / s["file"]).stat().st_size for s in index["shards"])
        h5_bytes = (tmp / "features.h5").stat().st_size
        rows.append(
            ("shard bytes per image", f"{shard_bytes / n / 1e3:.1f} KB", "hdf5 float32 per image",
             f"{h5_bytes / n / 1e3:.1f} KB", shard_bytes / h5_bytes)
        )  # fmt: skip
        rates |= {"shard_bytes_per_image": shard_bytes / n, "hdf5_bytes_per_image": h5_bytes / n}

    print(f"\ndata: {n} images, {len(records)} questions, {size}x{size}, source: {source}; "
          "rates per CPU-second (one process, best of 2-5 runs)\n")  # fmt: skip
    header = ("measurement", "value", "compared with", "its value", "ratio")
    table = [header] + [(*row[:4], "" if row[4] is None else f"{row[4]:.2f}") for row in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(5)]
    for k, row in enumerate(table):
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if k == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    if args.json:
        fileio.write_json_atomic(
            args.json,
            {
                "what": "benchmarks/bench_data.py: per-core rates (images/s, questions/s: per "
                "CPU-second of one process) and bytes",
                "machine": cpu_machine(),
                "commit": git_commit(),
                "images": n,
                "questions": len(records),
                "image_size": size,
                "measurements": {name: round(value, 3) for name, value in rates.items()},
                "table": [dict(zip(header, row, strict=True)) for row in table[1:]],
            },
        )
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
