"""How close the CLEVR look comes to genuine CLEVR images: colours, background, camera.

Each genuine image is compared with the re-render of its own scene record (`render_clevr`):
the median colour of a 3x3 patch at every object's `pixel_coords`, pooled per colour x material
(CIELAB distance, CIE76), the background level in horizontal bands (pixels that show the floor
in the re-render and in the genuine image alike), and the fitted camera's reprojection error.
Colour at a centre says nothing of how an object is shaded across its surface, which is what a
model reads its shape and material from: so each object's luminance over its visible pixels
(its mask in the re-render's own id buffer, eroded by SHADING_ERODE pixels to leave its edges
out) is compared too, pooled per material: the mean, the spread (standard deviation) within an
object, and the 10th and 90th percentiles (its shaded and its lit parts).
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
SHADING_ERODE = 3  # pixels off an object's edge before its shading is measured
SHADING_MIN_PIXELS = 40  # objects with fewer measured pixels are left out
SHADING_STATS = ("mean", "spread", "p10", "p90")


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

    Returns per object (colour, material, genuine centre colour, rendered centre colour), per
    object big enough (material, genuine shading, rendered shading: `_shading`), the
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
    shading = []
    for k, obj in enumerate(scene["objects"]):
        mask = _eroded(ids == k, SHADING_ERODE)
        if mask.sum() >= SHADING_MIN_PIXELS:
            shading.append((obj["material"], _shading(genuine[mask]), _shading(rendered[mask])))
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
        "shading": shading,
        "background": background,
        "reprojection": render_clevr.reprojection_errors(scene, camera),
        "per_axis": _offsets(scene, camera),
        "rendered": rendered,
    }


def _eroded(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` [H, W] less `steps` pixels along its edges (4-neighbour steps): what is left
    where the rest, grown by as many steps (`render_clevr.dilated`), does not reach."""
    return ~render_clevr.dilated(~mask, steps)


def _shading(pixels: np.ndarray) -> dict[str, float]:
    """SHADING_STATS of the luminance (mean of R, G, B, 0-255) of an object's pixels [N, 3]."""
    luminance = pixels.astype(np.float64).mean(axis=-1)
    p10, p90 = np.percentile(luminance, [10, 90])
    return {"mean": luminance.mean(), "spread": luminance.std(), "p10": p10, "p90": p90}


def summarize(comparisons: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Pooled numbers over many `compare_images` results.

    `cells`: per "colour material", the number of objects, the medians of the genuine and the
    rendered centre colours and their CIELAB distance; `mean_delta_e`, `max_delta_e` over the
    cells; `background`: per band, the median genuine and rendered level; `reprojection_px`:
    mean and max over all objects; `shading`: per material, the objects measured and the mean
    over them of each SHADING_STATS, genuine and rendered.
    """
    pooled: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    shaded: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}
    bands: list[list[tuple[float, float]]] = [[] for _ in range(BANDS)]
    errors = []
    for c in comparisons:
        for colour, material, genuine, rendered in c["objects"]:
            pooled.setdefault(f"{colour} {material}", []).append((genuine, rendered))
        for material, genuine, rendered in c.get("shading", []):
            shaded.setdefault(material, []).append((genuine, rendered))
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
    shading = {
        material: {
            "objects": len(shaded[material]),
            **{
                stat: {
                    side: round(float(np.mean([pair[k][stat] for pair in shaded[material]])), 1)
                    for k, side in enumerate(("genuine", "rendered"))
                }
                for stat in SHADING_STATS
            },
        }
        for material in clevr.MATERIALS
        if material in shaded
    }
    return {
        "cells": cells,
        "shading": shading,
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
