"""How close the CLEVR look comes to genuine CLEVR images: colours, background, camera.

Each genuine image is compared with the re-render of its own scene record (`render_clevr`):
the median colour of a 3x3 patch at every object's `pixel_coords`, pooled per colour x material
(CIELAB distance, CIE76), the background level in horizontal bands (pixels that show the floor
in the re-render and in the genuine image alike), and the fitted camera's reprojection error.
`benchmarks/bench_render_clevr.py` prints it for the development sample.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from filmclevr import clevr
from filmclevr.mini import render_clevr, scenes

__all__ = ["compare_images", "delta_e", "load_genuine", "srgb_to_lab", "summarize"]

BANDS = 5  # horizontal bands of the background level


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """8-bit sRGB [..., 3] to CIELAB (D65) [..., 3]."""
    c = np.asarray(rgb, dtype=np.float64) / 255
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = (
        linear
        @ np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]).T
    )
    xyz /= np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack(
        [116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1
    )


def delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIE76 colour distance between two 8-bit sRGB colours (arrays [..., 3])."""
    return np.linalg.norm(srgb_to_lab(a) - srgb_to_lab(b), axis=-1)


def load_genuine(root: str | Path) -> list[tuple[dict[str, Any], Path]]:
    """(scene record, image path) of every genuine train image that has its record.

    `root` is a folder with `images/train/*.png` and `scenes/*.json` in the release format.
    """
    root = Path(root)
    records: dict[int, dict[str, Any]] = {}
    scene_files = sorted((root / "scenes").glob("*.json"))
    if not scene_files:
        raise FileNotFoundError(f"{root / 'scenes'}: no scene file")
    for path in scene_files:
        try:
            for scene in json.loads(path.read_text())["scenes"]:
                records[int(scene["image_index"])] = scene
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: not a CLEVR scene file ({e})") from None
    pairs = []
    for image in sorted((root / "images" / "train").glob("*.png")):
        index = int(image.stem.rsplit("_", 1)[-1])
        if index in records:
            pairs.append((records[index], image))
    if not pairs:
        raise FileNotFoundError(f"{root}: no genuine image with a scene record")
    return pairs


def _centre_colour(image: np.ndarray, x: int, y: int) -> np.ndarray:
    h, w = image.shape[:2]
    x, y = min(max(x, 1), w - 2), min(max(y, 1), h - 2)
    return np.median(image[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3), axis=0)


def _offsets(scene: dict[str, Any], camera) -> np.ndarray:
    """Each object's projection minus its recorded `pixel_coords`, in x and y [N, 2]."""
    world = np.array([o["3d_coords"] for o in scene["objects"]], dtype=np.float64)
    target = np.array([o["pixel_coords"][:2] for o in scene["objects"]], dtype=np.float64)
    return camera.project_points(world)[:, :2] - target


def compare_images(scene: dict[str, Any], genuine: np.ndarray) -> dict[str, Any]:
    """One genuine image [H, W, 3] uint8 against the re-render of its scene record.

    Returns per object (colour, material, genuine centre colour, rendered centre colour), the
    background level per band of both, and the camera's reprojection errors in pixels.
    """
    camera = render_clevr.fit_camera(scene)
    rendered = np.asarray(render_clevr.render_scene(scene, camera).convert("RGB"))
    objects = []
    for obj in scene["objects"]:
        x, y = int(obj["pixel_coords"][0]), int(obj["pixel_coords"][1])
        if 0 <= x < genuine.shape[1] and 0 <= y < genuine.shape[0]:
            objects.append(
                (
                    obj["color"],
                    obj["material"],
                    _centre_colour(genuine, x, y),
                    _centre_colour(rendered, x, y),
                )
            )
    ids, _, _ = scenes.object_id_buffer(scene["objects"], 1, camera)
    # The floor away from objects (a margin of 12 px covers their shadows' cores) in both.
    near = np.zeros_like(ids, dtype=bool)
    ys, xs = np.nonzero(ids >= 0)
    for dy in (-12, 0, 12):
        for dx in (-12, 0, 12):
            near[np.clip(ys + dy, 0, ids.shape[0] - 1), np.clip(xs + dx, 0, ids.shape[1] - 1)] = 1
    band_rows = np.array_split(np.arange(ids.shape[0]), BANDS)
    background = []
    for rows in band_rows:
        mask = ~near[rows]
        background.append(
            (
                float(np.median(genuine[rows][mask].mean(axis=-1))) if mask.any() else np.nan,
                float(np.median(rendered[rows][mask].mean(axis=-1))) if mask.any() else np.nan,
            )
        )
    return {
        "objects": objects,
        "background": background,
        "reprojection": render_clevr.reprojection_errors(scene, camera),
        "per_axis": _offsets(scene, camera),
        "rendered": rendered,
    }


def summarize(comparisons: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Pooled numbers over many `compare_images` results.

    `cells`: per "colour material", the number of objects, the medians of the genuine and the
    rendered centre colours and their CIELAB distance; `mean_delta_e`, `max_delta_e` over the
    cells; `background`: per band, the median genuine and rendered level; `reprojection_px`:
    mean and max over all objects.
    """
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    bands: list[list[tuple[float, float]]] = [[] for _ in range(BANDS)]
    errors = []
    for c in comparisons:
        for colour, material, genuine, rendered in c["objects"]:
            pooled.setdefault(f"{colour} {material}", []).append((genuine, rendered))
        for k, pair in enumerate(c["background"]):
            bands[k].append(pair)
        errors.extend(c["reprojection"].tolist())
    cells = {}
    for key in (f"{c} {m}" for c in clevr.COLORS for m in clevr.MATERIALS):
        if key not in pooled:
            continue
        genuine = np.median([g for g, _ in pooled[key]], axis=0)
        rendered = np.median([r for _, r in pooled[key]], axis=0)
        cells[key] = {
            "objects": len(pooled[key]),
            "genuine": [round(float(v), 1) for v in genuine],
            "rendered": [round(float(v), 1) for v in rendered],
            "delta_e": round(float(delta_e(genuine, rendered)), 2),
        }
    distances = [cell["delta_e"] for cell in cells.values()]
    return {
        "cells": cells,
        "mean_delta_e": round(float(np.mean(distances)), 2) if distances else None,
        "max_delta_e": round(float(np.max(distances)), 2) if distances else None,
        "background": [
            {
                "genuine": round(float(np.nanmedian([g for g, _ in b])), 1),
                "rendered": round(float(np.nanmedian([r for _, r in b])), 1),
            }
            for b in bands
        ],
        "reprojection_px": {
            "mean": round(float(np.mean(errors)), 3),
            "max": round(float(np.max(errors)), 3),
        },
    }
