"""Mini-CLEVR scenes: sampling, the camera, directions and relationships (SPEC §1).

Scenes follow CLEVR's generator (`render_images.py` of facebookresearch/clevr-dataset-gen): objects
of CLEVR's vocabulary stand on the ground plane z = 0, `3d_coords` is the object centre (its z is
the half height, so cubes use CLEVR's `size / sqrt(2)`), placement keeps a minimum gap between
objects and a margin along every ground direction so that each left/right/front/behind relation
is unambiguous, and a scene is redrawn when an object is hidden behind others.

Unlike CLEVR the camera is fixed (no jitter), so `directions` is the same for every scene, and
positions are drawn over the ground the camera sees (every object lies fully inside the frame),
which keeps objects large once images are downsized.

This module owns the scene geometry (camera rays and ray/object intersection), because the
visibility test of `sample_scene` needs it; `render.py` adds shading on top of the same geometry.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from filmclevr import clevr

log = logging.getLogger(__name__)

IMAGE_WIDTH, IMAGE_HEIGHT = 480, 320  # CLEVR's image size (SPEC §1)

# Camera: looks at the origin from CLEVR's side (azimuth about -43 degrees), higher and closer
# than CLEVR's so the placement area fills the frame: a small object far back is still about
# 25 px tall, a large one in front up to about 125 px.
CAMERA_AZIMUTH_DEG = -43.0
CAMERA_ELEVATION_DEG = 38.0
CAMERA_DISTANCE = 11.0
CAMERA_HFOV_DEG = 50.0

MIN_GAP = 0.25  # CLEVR's --min_dist: clearance between the objects' ground-plane discs
MARGIN = 0.4  # CLEVR's --margin: minimum |offset| between any two objects along each direction
MIN_VISIBLE_PIXELS = 200  # CLEVR's --min_pixels_per_object, counted at 480x320
FRAME_MARGIN_PX = 2.0  # every object's bounding box stays this far inside the image
PLACEMENT_RIGHT = 6.0  # positions are drawn with |offset along `right`| <= this, ...
PLACEMENT_BEHIND = 4.5  # ... and |offset along `behind`| <= this, then kept if in frame
MAX_PLACEMENT_TRIES = 50  # CLEVR's --max_retries per object before the layout restarts
MAX_SCENE_ATTEMPTS = 1000


def _camera() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Camera position, its right/up/forward unit vectors and focal length in pixels."""
    az, el = math.radians(CAMERA_AZIMUTH_DEG), math.radians(CAMERA_ELEVATION_DEG)
    position = CAMERA_DISTANCE * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    focal = (IMAGE_WIDTH / 2) / math.tan(math.radians(CAMERA_HFOV_DEG) / 2)
    return position, right, up, forward, focal


# World-space camera frame; the image x axis follows CAMERA_RIGHT, its y axis -CAMERA_UP.
CAMERA_POSITION, CAMERA_RIGHT, CAMERA_UP, CAMERA_FORWARD, FOCAL_PX = _camera()
_WORLD_TO_VIEW = np.stack([CAMERA_RIGHT, CAMERA_UP, CAMERA_FORWARD], axis=1)  # columns


def camera_directions() -> dict[str, list[float]]:
    """CLEVR's six scene directions, derived from the camera as `render_images.py` does.

    Left and behind are the camera's -x and viewing axes projected onto the ground and
    normalized; above is the ground normal; the others are their opposites.
    """
    behind = np.array([CAMERA_FORWARD[0], CAMERA_FORWARD[1], 0.0])
    behind /= np.linalg.norm(behind)
    left = np.array([-CAMERA_RIGHT[0], -CAMERA_RIGHT[1], 0.0])
    left /= np.linalg.norm(left)
    above = np.array([0.0, 0.0, 1.0])
    vectors = {
        "behind": behind,
        "front": -behind,
        "left": left,
        "right": -left,
        "above": above,
        "below": -above,
    }
    # + 0.0 turns -0.0 into 0.0 so the JSON reads cleanly.
    return {name: [round(float(c), 6) + 0.0 for c in v] for name, v in vectors.items()}


def project_points(points: np.ndarray) -> np.ndarray:
    """Vectorised `project`: world points [N, 3] -> [N, 3] rows of (px, py, depth)."""
    view = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - CAMERA_POSITION) @ _WORLD_TO_VIEW
    depth = view[:, 2]
    if np.any(depth <= 0):
        raise ValueError("a point lies behind the camera")
    view[:, :2] *= FOCAL_PX / depth[:, None]
    view[:, 0] += IMAGE_WIDTH / 2
    view[:, 1] = IMAGE_HEIGHT / 2 - view[:, 1]
    return view


def project(point_xyz: Sequence[float]) -> tuple[float, float, float]:
    """Camera projection of a world point: (px, py, depth) in the 480x320 image.

    px grows to the right and py downwards, both continuous (pixel i covers [i, i + 1));
    depth is the distance along the viewing axis, as in CLEVR's `pixel_coords`.
    """
    px, py, depth = project_points(np.asarray(point_xyz, dtype=np.float64))[0]
    return float(px), float(py), float(depth)


# --- Geometry -----------------------------------------------------------------------------------
def half_height(shape: str, size: str) -> float:
    """Half height of an object, also the z of its centre (CLEVR: a cube's is size / sqrt 2)."""
    scale = clevr.SIZES[size]
    return scale / math.sqrt(2) if shape == "cube" else scale


@functools.lru_cache(maxsize=4)
def ray_directions(scale: int = 1) -> np.ndarray:
    """Unit world-space ray directions through pixel centres, float32 [H*scale, W*scale, 3]."""
    xs = (np.arange(IMAGE_WIDTH * scale) + 0.5) / scale - IMAGE_WIDTH / 2
    ys = (np.arange(IMAGE_HEIGHT * scale) + 0.5) / scale - IMAGE_HEIGHT / 2
    d = (
        xs[None, :, None] / FOCAL_PX * CAMERA_RIGHT
        - ys[:, None, None] / FOCAL_PX * CAMERA_UP
        + CAMERA_FORWARD[None, None, :]
    )
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    d = d.astype(np.float32)
    d.setflags(write=False)
    return d


def object_bbox(obj: dict[str, Any], scale: int = 1) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) at `scale` that holds the object, clipped to the image."""
    px, py = _projected_extent(obj)
    y0 = max(int(math.floor(py[0] * scale)) - 1, 0)
    y1 = min(int(math.ceil(py[1] * scale)) + 1, IMAGE_HEIGHT * scale)
    x0 = max(int(math.floor(px[0] * scale)) - 1, 0)
    x1 = min(int(math.ceil(px[1] * scale)) + 1, IMAGE_WIDTH * scale)
    return y0, y1, x0, x1


_UNIT_BOX_CORNERS = np.array([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)


def _projected_extent(obj: dict[str, Any]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(min px, max px), (min py, max py) of the corners of the object's bounding box."""
    z = obj["3d_coords"][2]
    r = clevr.SIZES[obj["size"]]  # ground-plane bounding radius of every shape
    p = project_points(np.asarray(obj["3d_coords"]) + _UNIT_BOX_CORNERS * (r, r, z))
    lo, hi = p.min(axis=0), p.max(axis=0)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _local_frame(obj: dict[str, Any]) -> tuple[np.ndarray, float, float]:
    """Object centre, and cos/sin of its rotation about the vertical axis (degrees)."""
    theta = math.radians(obj["rotation"])
    return np.asarray(obj["3d_coords"], dtype=np.float64), math.cos(theta), math.sin(theta)


def intersect(obj: dict[str, Any], scale: int = 1) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Ray-cast one object over its pixel box.

    Returns the box (y0, y1, x0, x1) and the ray distance t to the first hit, float32 [h, w],
    inf where the ray misses. Cubes and cylinders are intersected in the object's own frame.
    """
    box = object_bbox(obj, scale)
    y0, y1, x0, x1 = box
    d = ray_directions(scale)[y0:y1, x0:x1]
    centre, cos_t, sin_t = _local_frame(obj)
    o = CAMERA_POSITION - centre
    # Rotate into the object frame (by -theta); Python floats keep the arrays float32.
    ox, oy, oz = cos_t * o[0] + sin_t * o[1], -sin_t * o[0] + cos_t * o[1], float(o[2])
    dx = cos_t * d[..., 0] + sin_t * d[..., 1]
    dy = -sin_t * d[..., 0] + cos_t * d[..., 1]
    dz = d[..., 2]
    ox, oy = float(ox), float(oy)
    h = half_height(obj["shape"], obj["size"])
    r = clevr.SIZES[obj["size"]]
    inf = np.float32(np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        if obj["shape"] == "sphere":
            b = ox * dx + oy * dy + oz * dz
            disc = b * b - (ox * ox + oy * oy + oz * oz - r * r)
            t = np.where(disc >= 0, -b - np.sqrt(disc), inf)
        elif obj["shape"] == "cube":
            # Slab method over the three axis pairs +-h.
            t_near = np.full(dz.shape, -np.inf, dtype=np.float32)
            t_far = np.full(dz.shape, np.inf, dtype=np.float32)
            for oc, dc in ((ox, dx), (oy, dy), (oz, dz)):
                inv = 1.0 / np.where(np.abs(dc) < 1e-9, np.float32(1e-9), dc)
                ta, tb = (-h - oc) * inv, (h - oc) * inv
                np.maximum(t_near, np.minimum(ta, tb), out=t_near)
                np.minimum(t_far, np.maximum(ta, tb), out=t_far)
            t = np.where((t_near <= t_far) & (t_far > 0), t_near, inf)
        elif obj["shape"] == "cylinder":
            a = dx * dx + dy * dy
            b = ox * dx + oy * dy
            disc = b * b - a * (ox * ox + oy * oy - r * r)
            t_side = (-b - np.sqrt(disc)) / a
            z_side = oz + t_side * dz
            t_side = np.where((disc >= 0) & (np.abs(z_side) <= h), t_side, inf)
            # The camera is above every object, so only the top cap can be seen.
            t_top = (h - oz) / dz
            xt, yt = ox + t_top * dx, oy + t_top * dy
            t_top = np.where((t_top > 0) & (xt * xt + yt * yt <= r * r), t_top, inf)
            t = np.minimum(t_side, t_top)
        else:
            raise ValueError(f"unknown shape {obj['shape']!r}; expected one of {clevr.SHAPES}")
    return box, t.astype(np.float32, copy=False)


def surface_normals(obj: dict[str, Any], points: np.ndarray, bevel: float = 0.0) -> np.ndarray:
    """Outward unit normals [N, 3] of the object's surface at world points [N, 3] on it.

    With `bevel` > 0 the edges of cubes and cylinders are shaded as if rounded with that radius
    (CLEVR's meshes have bevelled edges); the silhouette stays sharp.
    """
    centre, cos_t, sin_t = _local_frame(obj)
    p = points - centre.astype(np.float32)
    if obj["shape"] == "sphere":
        return p / np.linalg.norm(p, axis=1, keepdims=True)
    lx = cos_t * p[:, 0] + sin_t * p[:, 1]
    ly = -sin_t * p[:, 0] + cos_t * p[:, 1]
    lz = p[:, 2]
    h = half_height(obj["shape"], obj["size"])
    bevel = min(max(bevel, 1e-3), 0.5 * h)
    # Rounded-box normal: from the inner (shrunk) solid's closest point to the surface point.
    if obj["shape"] == "cube":
        inner = h - bevel
        local = np.stack([lx, ly, lz], axis=1)
        local -= np.clip(local, -inner, inner)
    else:  # cylinder: radial and vertical excess over the shrunk cylinder
        r = clevr.SIZES[obj["size"]]
        radial = np.hypot(lx, ly) + 1e-12
        out = np.maximum(radial - (r - bevel), 0.0) / radial
        local = np.stack(
            [lx * out, ly * out, np.sign(lz) * np.maximum(np.abs(lz) - (h - bevel), 0.0)], axis=1
        )
    local /= np.linalg.norm(local, axis=1, keepdims=True) + 1e-12
    world = np.empty_like(local)
    world[:, 0] = cos_t * local[:, 0] - sin_t * local[:, 1]
    world[:, 1] = sin_t * local[:, 0] + cos_t * local[:, 1]
    world[:, 2] = local[:, 2]
    return world


def object_id_buffer(
    objects: Sequence[dict[str, Any]], scale: int = 1
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Z-buffered visibility: which object each pixel sees.

    Returns ids int16 [H*scale, W*scale] (-1 for the ground), the ray distance there (inf on the
    ground) and, per object, how many pixels it would cover if nothing hid it.
    """
    shape = (IMAGE_HEIGHT * scale, IMAGE_WIDTH * scale)
    ids = np.full(shape, -1, dtype=np.int16)
    depth = np.full(shape, np.inf, dtype=np.float32)
    footprint = []
    for k, obj in enumerate(objects):
        (y0, y1, x0, x1), t = intersect(obj, scale)
        footprint.append(int(np.isfinite(t).sum()))
        nearer = t < depth[y0:y1, x0:x1]
        depth[y0:y1, x0:x1][nearer] = t[nearer]
        ids[y0:y1, x0:x1][nearer] = k
    return ids, depth, footprint


def visible_pixel_counts(objects: Sequence[dict[str, Any]]) -> list[int]:
    """Pixels of the 480x320 image where each object is the nearest surface."""
    ids, _, _ = object_id_buffer(objects, scale=1)
    counts = np.bincount(ids.ravel() + 1, minlength=len(objects) + 1)
    return [int(c) for c in counts[1:]]


# --- Relationships ------------------------------------------------------------------------------
def compute_relationships(
    objects: Sequence[dict[str, Any]], directions: dict[str, list[float]]
) -> dict[str, list[list[int]]]:
    """CLEVR's relationships: j is in `rel[r][i]` when dot(c_j - c_i, directions[r]) > 0.2.

    Keys are left, right, front, behind (CLEVR skips above/below); each value lists, for every
    object i, the sorted indices j != i in that relation to i.
    """
    coords = np.array([obj["3d_coords"] for obj in objects], dtype=np.float64).reshape(-1, 3)
    relationships: dict[str, list[list[int]]] = {}
    for name in clevr.RELATIONS:
        if name not in directions:
            raise ValueError(f"directions lacks {name!r}; it has {sorted(directions)}")
        # dots[i, j] = (c_j - c_i) . direction
        along = coords @ np.asarray(directions[name], dtype=np.float64)
        dots = along[None, :] - along[:, None]
        relationships[name] = [
            [j for j in range(len(objects)) if j != i and dots[i, j] > clevr.RELATION_THRESHOLD]
            for i in range(len(objects))
        ]
    return relationships


# --- Sampling -----------------------------------------------------------------------------------
def _in_frame(obj: dict[str, Any]) -> bool:
    (x_lo, x_hi), (y_lo, y_hi) = _projected_extent(obj)
    m = FRAME_MARGIN_PX
    return x_lo >= m and y_lo >= m and x_hi <= IMAGE_WIDTH - m and y_hi <= IMAGE_HEIGHT - m


def _well_separated(obj: dict[str, Any], placed: list[dict[str, Any]], axes: np.ndarray) -> bool:
    """CLEVR's test: a gap of MIN_GAP between discs and >= MARGIN apart along every direction."""
    x, y, _ = obj["3d_coords"]
    r = clevr.SIZES[obj["size"]]
    for other in placed:
        dx, dy = x - other["3d_coords"][0], y - other["3d_coords"][1]
        if math.hypot(dx, dy) - r - clevr.SIZES[other["size"]] < MIN_GAP:
            return False
        if np.any(np.abs(axes @ (dx, dy)) < MARGIN):
            return False
    return True


def _attributes(rng: random.Random, condition: str | None) -> tuple[str, str, str, str]:
    """(size, color, material, shape), uniform over CLEVR's vocabulary or, in a CoGenT
    condition, uniform over the shapes and then over the colours that shape may take there."""
    size = rng.choice(tuple(clevr.SIZES))
    if condition is None:  # this draw order keeps mini-CLEVR's bytes as they always were
        color = rng.choice(tuple(clevr.COLORS))
        material = rng.choice(clevr.MATERIALS)
        shape = rng.choice(clevr.SHAPES)
        return size, color, material, shape
    shape = rng.choice(clevr.SHAPES)
    color = rng.choice(clevr.COGENT_COLORS[condition][shape])
    material = rng.choice(clevr.MATERIALS)
    return size, color, material, shape


def _place_objects(
    rng: random.Random,
    count: int,
    directions: dict[str, list[float]],
    condition: str | None = None,
) -> list[dict[str, Any]] | None:
    """One layout attempt; None when an object finds no free spot in MAX_PLACEMENT_TRIES."""
    right = np.asarray(directions["right"][:2])
    behind = np.asarray(directions["behind"][:2])
    axes = np.stack([right, behind])
    placed: list[dict[str, Any]] = []
    for _ in range(count):
        size, color, material, shape = _attributes(rng, condition)
        z = half_height(shape, size)
        for _ in range(MAX_PLACEMENT_TRIES):
            u = rng.uniform(-PLACEMENT_RIGHT, PLACEMENT_RIGHT)
            w = rng.uniform(-PLACEMENT_BEHIND, PLACEMENT_BEHIND)
            x, y = u * right + w * behind
            obj = {
                "color": color,
                "size": size,
                "shape": shape,
                "material": material,
                "3d_coords": [round(float(x), 4), round(float(y), 4), z],
                "pixel_coords": None,
                "rotation": round(rng.uniform(0.0, 360.0), 4),
            }
            if _in_frame(obj) and _well_separated(obj, placed, axes):
                px, py, depth = project(obj["3d_coords"])
                # CLEVR rounds the pixel position to an int and keeps the depth as a float.
                obj["pixel_coords"] = [int(round(px)), int(round(py)), round(depth, 4)]
                placed.append(obj)
                break
        else:
            return None
    return placed


def check_object_counts(min_objects: int, max_objects: int) -> None:
    """The objects-per-scene range `sample_scene` draws from, checked (ValueError)."""
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")


def sample_scene(
    rng: random.Random,
    split: str,
    index: int,
    *,
    min_objects: int = 3,
    max_objects: int = 10,
    condition: str | None = None,
) -> dict[str, Any]:
    """Draw one scene in the CLEVR v1.0 scene format (SPEC §1), deterministic given `rng`.

    The object count is uniform in [min_objects, max_objects]; attributes are uniform over
    CLEVR's vocabulary, or over CoGenT's `condition` ("A" or "B"; `clevr.COGENT_COLORS`).
    Layouts that break the gap/margin rules or leave an object with fewer than
    MIN_VISIBLE_PIXELS visible pixels are redrawn, as CLEVR does.
    """
    check_object_counts(min_objects, max_objects)
    if condition not in (None, *clevr.COGENT_COLORS):
        raise ValueError(f"condition must be None, 'A' or 'B', got {condition!r}")
    if not split or index < 0:
        raise ValueError(f"need a non-empty split and index >= 0, got {split!r}, {index}")
    directions = camera_directions()
    count = rng.randint(min_objects, max_objects)
    for attempt in range(1, MAX_SCENE_ATTEMPTS + 1):
        objects = _place_objects(rng, count, directions, condition)
        if objects is None or min(visible_pixel_counts(objects)) < MIN_VISIBLE_PIXELS:
            continue
        if attempt > 20:
            log.debug("scene %s/%d took %d layout attempts", split, index, attempt)
        return {
            "split": split,
            "image_index": index,
            "image_filename": clevr.image_filename(split, index),
            "objects": objects,
            "directions": directions,
            "relationships": compute_relationships(objects, directions),
        }
    raise RuntimeError(
        f"no valid layout of {count} objects in {MAX_SCENE_ATTEMPTS} attempts "
        f"(scene {split}/{index}); lower max_objects"
    )
