"""Stage 2: every split's images to `image_size` square RGB PNGs, in parallel, streaming.

The official pipeline (clevr-iep `scripts/extract_features.py`, used by FiLM's `film_pixels`)
reads each image as RGB and resizes it with `scipy.misc.imresize(img, (224, 224),
interp='bicubic')`, which is PIL's bicubic `Image.resize`: aspect ratio not kept (SPEC §3).
We call PIL directly, so the pixels are those of the official code.

Stored format, chosen by measurement (`benchmarks/bench_data.py`): PNG at zlib level 4.
PNG is lossless, so the model sees exactly the official pixels (JPEG q95 moves some by many
levels at object edges). Raw `.npy` decodes faster but takes several times the bytes, and PNG
decoding is not the bottleneck: one decode serves all of the image's questions. Level 4 is the
knee: nearly as small as PIL's default level 6 at a much faster encode, and smaller than level
1; decoding speed is about the same at every level (the measurements: bench_data.json under
results/reference/cpu-benchmarks/).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from filmclevr import fileio, parallel
from filmclevr.clevr import ClevrFormatError

log = logging.getLogger(__name__)

EXTENSION = "png"
PNG_COMPRESS_LEVEL = 4  # the size/encode-time knee, measured (module docstring)


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[Image.Image]:
    """An image file opened and fully decoded, in a context (any format and mode PIL reads).

    Raises:
        ValueError: the file is missing, not an image, truncated or otherwise undecodable (the
            message names it). Errors raised in the `with` body pass through unchanged.
    """
    image = None
    try:
        image = Image.open(path)
        image.load()  # decode now, so a damaged file fails here and is named
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if image is not None:
            image.close()
        raise ValueError(f"{path}: cannot read image ({e})") from None
    with image:
        yield image


# 16-bit grayscale as PIL opens it (16-bit RGB and RGBA PNGs it opens as 8-bit RGB, RGBA).
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})


def to_rgb(image: Image.Image) -> Image.Image:
    """`image` as 8-bit RGB, the pixels the model sees.

    16-bit grayscale keeps its top 8 bits, as PIL does itself for 16-bit RGB PNGs; PIL's own
    conversion would clip it at 255, a white picture. Every other mode PIL converts.

    Raises:
        ValueError: 32-bit integer or floating-point pixels (a PNG's 16-bit "I" excepted),
            whose scale no file states; the message names the image's file.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES or (mode == "I" and image.format == "PNG"):
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 0xFFFF:  # not 16-bit data after all
            raise ValueError(f"{_name(image)}: {mode} pixels outside 0..65535")
        top = (values >> 8).astype(np.uint8)
        return Image.fromarray(top, "L").convert("RGB")
    if mode in ("I", "F") or mode.startswith(("I;", "F;")):
        raise ValueError(
            f"{_name(image)}: {mode} pixels (32-bit integer or floating point) have no fixed "
            "range to map to the model's 8-bit input; save the image as an 8- or 16-bit PNG"
        )
    return image.convert("RGB")


def _name(image: Image.Image) -> str:
    """The file an image was opened from, for messages."""
    return getattr(image, "filename", "") or "image"


def resize_pixels(image: Image.Image, image_size: int) -> Image.Image:
    """The pipeline's one preprocessing step: `image` to an `image_size` square RGB image.

    RGB first (`to_rgb`), then PIL's bicubic resize, aspect ratio not kept: the official order
    (alpha is always 255 in CLEVR). Everything that feeds a model its pixels (`resize_image`,
    and `filmclevr.ask` for any image) goes through this function.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return to_rgb(image).resize((image_size, image_size), Image.Resampling.BICUBIC)


def resize_image(src: Path, dst: Path, image_size: int) -> int:
    """Resize one image file to `image_size` square RGB PNG (bicubic); return the bytes written.

    Raises:
        ValueError: the source cannot be read or decoded (the message names it).
    """
    return _resize_file(src, dst, image_size)[1]


def _resize_file(src: Path, dst: Path, image_size: int) -> tuple[tuple[int, int], int]:
    """`resize_image`, also returning the source's width x height (read in the same open)."""
    with open_image(src) as image:
        size = image.size
        resized = resize_pixels(image, image_size)
    # No metadata chunks and a fixed zlib level, so the bytes depend on the pixels only.
    resized.save(dst, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return size, dst.stat().st_size


def _resize_job(job: tuple[Path, Path, int]) -> tuple[Path, tuple[int, int], int]:
    """(source, its width x height, bytes written): the size is checked in the parent."""
    src, dst, image_size = job
    size, written = _resize_file(src, dst, image_size)
    return src, size, written


def _split_images(src_root: Path, split: str) -> list[Path]:
    folder = Path(src_root) / "images" / split
    if not folder.is_dir():
        raise ClevrFormatError(f"{folder}: image folder of split {split!r} not found")
    pattern = re.compile(rf"CLEVR_{re.escape(split)}_\d{{6}}\.png")
    images = sorted(folder.glob("*.png"))
    for path in images:
        if not pattern.fullmatch(path.name):
            raise ClevrFormatError(f"{path}: not named CLEVR_{split}_NNNNNN.png")
    if not images:
        raise ClevrFormatError(f"{folder}: no PNG images for split {split!r}")
    return images


def resize_images(
    src_root: Path,
    dst_root: Path,
    *,
    splits: list[str],
    image_size: int,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Resize every split's images to `image_size` square RGB PNGs (SPEC §3).

    Reads `src_root/images/{split}/*.png` and writes `dst_root/{split}/CLEVR_{split}_NNNNNN.png`.
    Each worker process reads, resizes and writes one image at a time and returns only its byte
    count, so memory stays flat in the dataset size. `dst_root` is replaced atomically: it
    appears complete or not at all. The output bytes do not depend on `workers`.

    Args:
        src_root: a CLEVR release root.
        dst_root: the folder to (re)create.
        splits: splits to resize, e.g. ["train", "val"].
        image_size: the square side in pixels (224 in the paper).
        workers: processes to use (1: in this process).
        progress: show a tqdm bar per split on stderr.

    Returns:
        `{"image_size": S, "format": "png", "splits": {split: {"images": n, "bytes": b}}}`.

    Raises:
        ClevrFormatError: a split's image folder is missing, empty, holds a misnamed file, or
            an image whose size differs from the split's first.
        ValueError: an image cannot be decoded (the message names the file), or bad arguments.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    inputs = {split: _split_images(src_root, split) for split in splits}  # fail before any work
    report: dict[str, Any] = {"image_size": image_size, "format": EXTENSION, "splits": {}}
    with fileio.atomic_dir(dst_root) as tmp:
        for split, images in inputs.items():
            out = tmp / split
            out.mkdir()
            jobs = [(src, out / f"{src.stem}.{EXTENSION}", image_size) for src in images]
            total, first = 0, None
            with parallel.ordered_map(_resize_job, jobs, workers) as results:
                bar = tqdm(results, total=len(jobs), desc=f"resize {split}", disable=not progress)
                for src, size, written in bar:
                    # A release's images share one size (CLEVR: 480x320); an odd one out is a
                    # foreign or damaged file that resizing would silently distort.
                    first = first or (src, size)
                    if size != first[1]:
                        raise ClevrFormatError(
                            f"{src}: {size[0]}x{size[1]} pixels, unlike the {first[1][0]}x"
                            f"{first[1][1]} of the split's other images ({first[0].name})"
                        )
                    total += written
            report["splits"][split] = {"images": len(jobs), "bytes": total}
            log.info(
                "%s: %d images -> %dx%d %s, %.1f KB per image",
                split,
                len(jobs),
                image_size,
                image_size,
                EXTENSION,
                total / len(jobs) / 1e3,
            )
    return report
