"""Resizing CLEVR images (SPEC §3: bicubic, aspect ratio not kept, RGBA -> RGB)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filmclevr import clevr
from filmclevr.resize import resize_images


def write_images(root: Path, split: str, count: int, seed: int = 0) -> list[Path]:
    """Release-like images: 480x320 RGBA PNG, alpha 255, smooth colors plus noise."""
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(count):
        ramp = np.linspace(0, 255, 320 * 480 * 3).reshape(320, 480, 3)
        rgb = np.clip(ramp + rng.normal(0, 20, ramp.shape), 0, 255).astype(np.uint8)
        rgba = np.dstack([rgb, np.full((320, 480), 255, np.uint8)])
        path = clevr.image_path(root, split, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgba, "RGBA").save(path)
        paths.append(path)
    return paths


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_sizes_mode_and_names(tmp_path):
    write_images(tmp_path / "clevr", "train", 3)
    write_images(tmp_path / "clevr", "val", 2, seed=1)
    report = resize_images(
        tmp_path / "clevr", tmp_path / "out", splits=["train", "val"], image_size=24, progress=False
    )
    assert sorted(tree_bytes(tmp_path / "out")) == [
        "train/CLEVR_train_000000.png", "train/CLEVR_train_000001.png",
        "train/CLEVR_train_000002.png", "val/CLEVR_val_000000.png", "val/CLEVR_val_000001.png",
    ]  # fmt: skip
    for path in (tmp_path / "out").rglob("*.png"):
        with Image.open(path) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "RGB", (24, 24))
    assert report["splits"]["train"]["images"] == 3
    assert report["splits"]["val"]["bytes"] == sum(
        p.stat().st_size for p in (tmp_path / "out" / "val").iterdir()
    )


def test_bicubic_matches_pil_reference(tmp_path):
    (src,) = write_images(tmp_path / "clevr", "val", 1)
    resize_images(tmp_path / "clevr", tmp_path / "out", splits=["val"], image_size=37,
                  progress=False)  # fmt: skip
    with Image.open(src) as image:
        reference = np.asarray(image.convert("RGB").resize((37, 37), Image.Resampling.BICUBIC))
    with Image.open(tmp_path / "out" / "val" / "CLEVR_val_000000.png") as image:
        ours = np.asarray(image)
    np.testing.assert_array_equal(ours, reference)  # PNG is lossless: exactly PIL's pixels
    nearest = np.asarray(Image.open(src).convert("RGB").resize((37, 37), Image.Resampling.NEAREST))
    assert not np.array_equal(ours, nearest)


def test_corrupt_image_error_names_the_file(tmp_path):
    paths = write_images(tmp_path / "clevr", "train", 4)
    paths[2].write_bytes(paths[2].read_bytes()[:200])  # truncated PNG
    for workers in (1, 2):
        with pytest.raises(ValueError, match="CLEVR_train_000002.png"):
            resize_images(tmp_path / "clevr", tmp_path / "out", splits=["train"], image_size=16,
                          workers=workers, progress=False)  # fmt: skip
        assert not (tmp_path / "out").exists()  # nothing half-written is left behind


def test_missing_split_and_misnamed_file(tmp_path):
    write_images(tmp_path / "clevr", "train", 1)
    with pytest.raises(clevr.ClevrFormatError, match="images/val"):
        resize_images(tmp_path / "clevr", tmp_path / "out", splits=["train", "val"], image_size=8)
    (tmp_path / "clevr" / "images" / "train" / "extra.png").write_bytes(b"")
    with pytest.raises(clevr.ClevrFormatError, match="extra.png"):
        resize_images(tmp_path / "clevr", tmp_path / "out", splits=["train"], image_size=8)


def test_workers_do_not_change_bytes_and_rerun_replaces(tmp_path):
    write_images(tmp_path / "clevr", "train", 6)
    kwargs = dict(splits=["train"], image_size=20, progress=False)
    resize_images(tmp_path / "clevr", tmp_path / "one", workers=1, **kwargs)
    resize_images(tmp_path / "clevr", tmp_path / "two", workers=2, **kwargs)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    (tmp_path / "two" / "stale.txt").write_text("from an earlier run")
    resize_images(tmp_path / "clevr", tmp_path / "two", workers=2, **kwargs)
    assert not (tmp_path / "two" / "stale.txt").exists()
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")


# --- 16-bit and other deep images ---------------------------------------------------------------
def png_16_bit(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG of uint16 `pixels` (H, W, 3), which PIL cannot write itself."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)  # 16 bits, RGB
    chunks = [chunk(b"IHDR", header), chunk(b"IDAT", zlib.compress(rows)), chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def resized_pixels(tmp_path: Path, name: str, save) -> np.ndarray:
    """Resize one val image written by `save(path)` under `tmp_path/name`; its 24x24 pixels."""
    path = clevr.image_path(tmp_path / name, "val", 0)
    path.parent.mkdir(parents=True)
    save(path)
    resize_images(tmp_path / name, tmp_path / f"{name}-out", splits=["val"], image_size=24,
                  progress=False)  # fmt: skip
    with Image.open(tmp_path / f"{name}-out" / "val" / path.name) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def test_16_bit_grayscale_png_keeps_its_picture(tmp_path):
    """PIL's own conversion clips 16-bit values at 255: the model would see a white picture."""
    gray = np.random.default_rng(2).integers(0, 256, (32, 48), dtype=np.uint8)
    deep = gray.astype(np.uint16) * 257  # the same picture in 16 bits (255 -> 65535)
    assert Image.fromarray(deep).mode == "I;16"
    eight = resized_pixels(tmp_path, "eight", Image.fromarray(gray, "L").save)
    sixteen = resized_pixels(tmp_path, "sixteen", Image.fromarray(deep).save)
    np.testing.assert_array_equal(sixteen, eight)


def test_16_bit_rgb_png_keeps_its_top_8_bits(tmp_path):
    deep = np.random.default_rng(3).integers(0, 65536, (32, 48, 3), dtype=np.uint16)
    eight = resized_pixels(tmp_path, "eight", Image.fromarray((deep >> 8).astype(np.uint8)).save)
    sixteen = resized_pixels(tmp_path, "sixteen", lambda path: path.write_bytes(png_16_bit(deep)))
    np.testing.assert_array_equal(sixteen, eight)


@pytest.mark.parametrize(("dtype", "mode"), [(np.float32, "F"), (np.int32, "I")])
def test_pixels_without_a_fixed_range_are_refused_naming_the_file(tmp_path, dtype, mode):
    """32-bit integer or floating-point pixels (a TIFF, here under a .png name) could be on any
    scale: guessing one would feed the model a wrong picture without a word."""
    path = clevr.image_path(tmp_path / "clevr", "val", 0)
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((32, 48), 3, dtype=dtype)).save(path, format="TIFF")
    with pytest.raises(ValueError, match=rf"CLEVR_val_000000\.png: {mode} pixels"):
        resize_images(tmp_path / "clevr", tmp_path / "out", splits=["val"], image_size=24,
                      progress=False)  # fmt: skip
    assert not (tmp_path / "out").exists()
