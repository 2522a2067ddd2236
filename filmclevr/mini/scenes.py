"""Mini-CLEVR scenes: sampling, the camera, directions and relationships (SPEC §1).

Scenes follow CLEVR's generator (`render_images.py` of facebookresearch/clevr-dataset-gen): objects
of CLEVR's vocabulary stand on the ground plane z = 0, `3d_coords` is the object centre,
placement keeps a minimum gap between objects and a margin along every ground direction so that
each left/right/front/behind relation is unambiguous, and a scene is redrawn when an object is
hidden behind others.

Two looks (`get_data.mini.look`). In CLEVR's (`clevr`, SPEC §7) the camera is jittered and
re-aimed per scene, `directions` are those of the unmoved camera as in the release, cubes have
side 2r with `3d_coords.z` = r, and objects are placed in world axes with CLEVR's gap, margin
and visibility rules. In mini's older look (`mini`) the camera is fixed (no jitter), cubes use
`size / sqrt(2)` as half height, and positions are drawn over the ground the camera sees (every
object fully inside the frame), which keeps objects large once images are downsized.

This module owns the scene geometry (camera rays and ray/object intersection), because the
visibility test of `sample_scene` needs it; `render.py` adds shading on top of the same geometry.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
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
CLEVR_PLACEMENT = 3.0  # the CLEVR look: x and y uniform in [-this, this], in world axes
LOOKS = ("mini", "clevr")
MAX_PLACEMENT_TRIES = 50  # CLEVR's --max_retries per object before the layout restarts
MAX_SCENE_ATTEMPTS = 1000


@dataclass(frozen=True, eq=False)
class Camera:
    """A pinhole camera aimed at the origin with the world's z axis up, and its 480x320 image.

    Image x follows `right`, image y follows -`up`; `focal` is in pixels. Instances are
    compared by identity, so a camera's ray grid is cached once per camera.
    """

    position: np.ndarray
    right: np.ndarray
    up: np.ndarray
    forward: np.ndarray
    focal: float
    blender_rotation: bool = False  # objects turn by `rotation` radians, as in CLEVR's renders
    cache_rays: bool = True  # keep the whole ray grid: worth it for a camera used many times

    @classmethod
    def aimed_at_origin(
        cls,
        position: Sequence[float],
        hfov_deg: float,
        blender_rotation: bool = False,
        cache_rays: bool = True,
    ) -> Camera:
        position = np.asarray(position, dtype=np.float64)
        forward = -position / np.linalg.norm(position)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        focal = (IMAGE_WIDTH / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(position, right, up, forward, focal, blender_rotation, cache_rays)

    @functools.cached_property
    def world_to_view(self) -> np.ndarray:
        return np.stack([self.right, self.up, self.forward], axis=1)  # columns

    def project_points(self, points: np.ndarray) -> np.ndarray:
        """World points [N, 3] -> [N, 3] rows of (px, py, depth), as `project`."""
        view = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.position) @ (
            self.world_to_view
        )
        depth = view[:, 2]
        if np.any(depth <= 0):
            raise ValueError("a point lies behind the camera")
        view[:, :2] *= self.focal / depth[:, None]
        view[:, 0] += IMAGE_WIDTH / 2
        view[:, 1] = IMAGE_HEIGHT / 2 - view[:, 1]
        return view

    def ray_directions(self, scale: int = 1) -> np.ndarray:
        """Unit world-space rays through pixel centres, float32 [H*scale, W*scale, 3]."""
        cache = self.__dict__.setdefault("_rays", {})
        if scale not in cache:
            d = self._rays_in(scale, 0, IMAGE_HEIGHT * scale, 0, IMAGE_WIDTH * scale)
            d.setflags(write=False)
            cache[scale] = d
        return cache[scale]

    def rays_in_box(self, scale: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """`ray_directions(scale)[y0:y1, x0:x1]`; a camera used for one image only
        (`cache_rays` False) computes just the box instead of the whole grid."""
        if self.cache_rays:
            return self.ray_directions(scale)[y0:y1, x0:x1]
        return self._rays_in(scale, y0, y1, x0, x1)

    def _rays_in(self, scale: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        xs = (np.arange(x0, x1) + 0.5) / scale - IMAGE_WIDTH / 2
        ys = (np.arange(y0, y1) + 0.5) / scale - IMAGE_HEIGHT / 2
        if self.cache_rays:  # the grid kept for every image: as it was always computed
            d = (
                xs[None, :, None] / self.focal * self.right
                - ys[:, None, None] / self.focal * self.up
                + self.forward[None, None, :]
            )
            d /= np.linalg.norm(d, axis=-1, keepdims=True)
            return d.astype(np.float32)
        # A camera of one image: float32 all along, which is twice as fast.
        right = (self.right / self.focal).astype(np.float32)
        up = (self.up / self.focal).astype(np.float32)
        d = xs.astype(np.float32)[None, :, None] * right - ys.astype(np.float32)[:, None, None] * up
        d += self.forward.astype(np.float32)
        flat = d.reshape(-1, 3)
        d *= (1 / np.sqrt(row_dots(flat, flat))).reshape(d.shape[:2])[..., None]
        return d

    def ground_directions(self) -> dict[str, list[float]]:
        """CLEVR's six scene directions, derived from this camera as `render_images.py` does.

        Left and behind are the camera's -x and viewing axes projected onto the ground and
        normalized; above is the ground normal; the others are their opposites.
        """
        behind = np.array([self.forward[0], self.forward[1], 0.0])
        behind /= np.linalg.norm(behind)
        left = np.array([-self.right[0], -self.right[1], 0.0])
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


def _mini_camera_position() -> np.ndarray:
    az, el = math.radians(CAMERA_AZIMUTH_DEG), math.radians(CAMERA_ELEVATION_DEG)
    return CAMERA_DISTANCE * np.array(
        [math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)]
    )


MINI_CAMERA = Camera.aimed_at_origin(_mini_camera_position(), CAMERA_HFOV_DEG)
# World-space camera frame; the image x axis follows CAMERA_RIGHT, its y axis -CAMERA_UP.
CAMERA_POSITION, CAMERA_RIGHT, CAMERA_UP, CAMERA_FORWARD, FOCAL_PX = (
    MINI_CAMERA.position,
    MINI_CAMERA.right,
    MINI_CAMERA.up,
    MINI_CAMERA.forward,
    MINI_CAMERA.focal,
)

# CLEVR v1.0's camera (SPEC §7): 35 mm lens on a 32 mm sensor, at this position before each
# scene's jitter, re-aimed at the origin after it.
CLEVR_CAMERA_POSITION = (7.4811, -6.5076, 5.3437)
CLEVR_CAMERA_HFOV_DEG = math.degrees(2 * math.atan(16 / 35))
CLEVR_CAMERA_JITTER = 0.5
CLEVR_CAMERA = Camera.aimed_at_origin(CLEVR_CAMERA_POSITION, CLEVR_CAMERA_HFOV_DEG, True)


def jittered_clevr_camera(rng: random.Random) -> Camera:
    """CLEVR's camera for one scene: each coordinate moved by U(-0.5, 0.5), aimed at the origin."""
    moved = [
        c + rng.uniform(-CLEVR_CAMERA_JITTER, CLEVR_CAMERA_JITTER) for c in CLEVR_CAMERA.position
    ]
    return Camera.aimed_at_origin(
        moved, CLEVR_CAMERA_HFOV_DEG, blender_rotation=True, cache_rays=False
    )


def camera_directions() -> dict[str, list[float]]:
    """The mini look's scene directions (`Camera.ground_directions` of its fixed camera)."""
    return MINI_CAMERA.ground_directions()


def project_points(points: np.ndarray, camera: Camera = MINI_CAMERA) -> np.ndarray:
    """Vectorised `project`: world points [N, 3] -> [N, 3] rows of (px, py, depth)."""
    return camera.project_points(points)


def project(point_xyz: Sequence[float], camera: Camera = MINI_CAMERA) -> tuple[float, float, float]:
    """Camera projection of a world point: (px, py, depth) in the 480x320 image.

    px grows to the right and py downwards, both continuous (pixel i covers [i, i + 1));
    depth is the distance along the viewing axis, as in CLEVR's `pixel_coords`.
    """
    px, py, depth = camera.project_points(np.asarray(point_xyz, dtype=np.float64))[0]
    return float(px), float(py), float(depth)


# --- Geometry -----------------------------------------------------------------------------------
def half_height(shape: str, size: str, look: str = "mini") -> float:
    """Half height of an object, also the z of its centre.

    In CLEVR v1.0 every shape's is its size's radius (a cube's side is twice it: SPEC §7); the
    mini look's cubes are smaller by sqrt 2, as the generator's unused line would have made them.
    Geometry reads it back from an object's `3d_coords` z, so both looks render as recorded.
    """
    scale = clevr.SIZES[size]
    return scale / math.sqrt(2) if shape == "cube" and look == "mini" else scale


def ray_directions(scale: int = 1, camera: Camera = MINI_CAMERA) -> np.ndarray:
    """Unit world-space ray directions through pixel centres, float32 [H*scale, W*scale, 3]."""
    return camera.ray_directions(scale)


def object_bbox(
    obj: dict[str, Any], scale: int = 1, camera: Camera = MINI_CAMERA
) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) at `scale` that holds the object, clipped to the image."""
    px, py = _projected_extent(obj, camera)
    y0 = max(int(math.floor(py[0] * scale)) - 1, 0)
    y1 = min(int(math.ceil(py[1] * scale)) + 1, IMAGE_HEIGHT * scale)
    x0 = max(int(math.floor(px[0] * scale)) - 1, 0)
    x1 = min(int(math.ceil(px[1] * scale)) + 1, IMAGE_WIDTH * scale)
    return y0, y1, x0, x1


_UNIT_BOX_CORNERS = np.array([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float)


def ground_radius(obj: dict[str, Any]) -> float:
    """Radius of a vertical cylinder around the object: its size's, or a CLEVR cube's corner."""
    r = clevr.SIZES[obj["size"]]
    if obj["shape"] == "cube" and obj["3d_coords"][2] > 0.8 * r:  # a side of 2r, not r sqrt 2
        return r * math.sqrt(2)
    return r


def _projected_extent(
    obj: dict[str, Any], camera: Camera = MINI_CAMERA
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(min px, max px), (min py, max py) of the corners of the object's bounding box."""
    z = obj["3d_coords"][2]
    r = ground_radius(obj)
    p = camera.project_points(np.asarray(obj["3d_coords"]) + _UNIT_BOX_CORNERS * (r, r, z))
    lo, hi = p.min(axis=0), p.max(axis=0)
    return (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))


def _local_frame(obj: dict[str, Any], camera: Camera) -> tuple[np.ndarray, float, float]:
    """Object centre, and cos/sin of its rotation about the vertical axis.

    The mini look turns objects by `rotation` degrees. CLEVR's generator hands the same
    number, drawn in [0, 360), to Blender as radians, so genuine and CLEVR-look scenes turn
    by that many radians (still uniform over directions).
    """
    theta = obj["rotation"] if camera.blender_rotation else math.radians(obj["rotation"])
    return np.asarray(obj["3d_coords"], dtype=np.float64), math.cos(theta), math.sin(theta)


def intersect(
    obj: dict[str, Any], scale: int = 1, camera: Camera = MINI_CAMERA
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Ray-cast one object over its pixel box.

    Returns the box (y0, y1, x0, x1) and the ray distance t to the first hit, float32 [h, w],
    inf where the ray misses. Cubes and cylinders are intersected in the object's own frame.
    """
    box = object_bbox(obj, scale, camera)
    y0, y1, x0, x1 = box
    d = camera.rays_in_box(scale, y0, y1, x0, x1)
    centre, cos_t, sin_t = _local_frame(obj, camera)
    o = camera.position - centre
    # Rotate into the object frame (by -theta); Python floats keep the arrays float32.
    ox, oy, oz = cos_t * o[0] + sin_t * o[1], -sin_t * o[0] + cos_t * o[1], float(o[2])
    dx = cos_t * d[..., 0] + sin_t * d[..., 1]
    dy = -sin_t * d[..., 0] + cos_t * d[..., 1]
    dz = d[..., 2]
    ox, oy = float(ox), float(oy)
    h = obj["3d_coords"][2]
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


def row_dots(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of [N, k] arrays (k of 2 or 3), the products summed column by
    column, in order, in plain ufuncs, at a third of `np.einsum("ij,ij->i", a, b)`'s cost. On
    the float32 arrays the renderers pass, these are the floats einsum gave on the CPU that made
    the reference images (their renders and scenes byte for byte); on float64 einsum sums
    otherwise, so a float64 caller gets other last bits than einsum would give."""
    products = a * b
    total = products[:, 0]
    for k in range(1, products.shape[1]):
        total = total + products[:, k]
    return total


def row_lengths(v: np.ndarray) -> np.ndarray:
    """`np.linalg.norm(v, axis=1)`, the same floats (the squares summed in the same order), at a
    tenth of its cost on a few columns: the general reduction pays per row."""
    return np.sqrt(row_dots(v, v))


def surface_normals(
    obj: dict[str, Any], points: np.ndarray, bevel: float = 0.0, camera: Camera = MINI_CAMERA
) -> np.ndarray:
    """Outward unit normals [N, 3] of the object's surface at world points [N, 3] on it.

    With `bevel` > 0 the edges of cubes and cylinders are shaded as if rounded with that radius
    (CLEVR's meshes have bevelled edges); the silhouette is the sharp solid's
    (`render_clevr` traces cubes' round).
    """
    centre, cos_t, sin_t = _local_frame(obj, camera)
    p = points - centre.astype(np.float32)
    if obj["shape"] == "sphere":
        return p / row_lengths(p)[:, None]
    lx = cos_t * p[:, 0] + sin_t * p[:, 1]
    ly = -sin_t * p[:, 0] + cos_t * p[:, 1]
    lz = p[:, 2]
    h = obj["3d_coords"][2]
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
    local /= row_lengths(local)[:, None] + 1e-12
    world = np.empty_like(local)
    world[:, 0] = cos_t * local[:, 0] - sin_t * local[:, 1]
    world[:, 1] = sin_t * local[:, 0] + cos_t * local[:, 1]
    world[:, 2] = local[:, 2]
    return world


def object_id_buffer(
    objects: Sequence[dict[str, Any]], scale: int = 1, camera: Camera = MINI_CAMERA
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
        (y0, y1, x0, x1), t = intersect(obj, scale, camera)
        footprint.append(int(np.isfinite(t).sum()))
        nearer = t < depth[y0:y1, x0:x1]
        depth[y0:y1, x0:x1][nearer] = t[nearer]
        ids[y0:y1, x0:x1][nearer] = k
    return ids, depth, footprint


def visible_pixel_counts(
    objects: Sequence[dict[str, Any]], camera: Camera = MINI_CAMERA
) -> list[int]:
    """Pixels of the 480x320 image where each object is the nearest surface."""
    ids, _, _ = object_id_buffer(objects, 1, camera)
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
    # Plain floats: this runs for every pair of every placement try, where numpy's per-call
    # overhead was most of the scene sampler's time.
    (a, b), (c, d) = axes.tolist()
    for other in placed:
        dx, dy = x - other["3d_coords"][0], y - other["3d_coords"][1]
        if math.hypot(dx, dy) - r - clevr.SIZES[other["size"]] < MIN_GAP:
            return False
        if abs(a * dx + b * dy) < MARGIN or abs(c * dx + d * dy) < MARGIN:
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
    look: str = "mini",
    camera: Camera = MINI_CAMERA,
) -> list[dict[str, Any]] | None:
    """One layout attempt; None when an object finds no free spot in MAX_PLACEMENT_TRIES.

    The mini look draws positions over the ground its fixed camera sees and keeps every object
    inside the frame; the CLEVR look draws x and y uniformly in [-3, 3] as CLEVR does.
    """
    right = np.asarray(directions["right"][:2])
    behind = np.asarray(directions["behind"][:2])
    axes = np.stack([right, behind])
    placed: list[dict[str, Any]] = []
    for _ in range(count):
        size, color, material, shape = _attributes(rng, condition)
        z = half_height(shape, size, look)
        for _ in range(MAX_PLACEMENT_TRIES):
            if look == "clevr":
                x, y = (
                    rng.uniform(-CLEVR_PLACEMENT, CLEVR_PLACEMENT),
                    rng.uniform(-CLEVR_PLACEMENT, CLEVR_PLACEMENT),
                )
            else:
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
            in_frame = look == "clevr" or _in_frame(obj)
            if in_frame and _well_separated(obj, placed, axes):
                px, py, depth = project(obj["3d_coords"], camera)
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
    look: str = "mini",
) -> dict[str, Any]:
    """Draw one scene in the CLEVR v1.0 scene format (SPEC §1), deterministic given `rng`.

    The object count is uniform in [min_objects, max_objects]; attributes are uniform over
    CLEVR's vocabulary, or over CoGenT's `condition` ("A" or "B"; `clevr.COGENT_COLORS`).
    Layouts that break the gap/margin rules or leave an object with fewer than
    MIN_VISIBLE_PIXELS visible pixels are redrawn, as CLEVR does.

    `look` "mini" is the fixed, higher camera and small cubes mini-CLEVR always had; "clevr"
    follows CLEVR v1.0 (SPEC §7): the camera moved by up to CLEVR_CAMERA_JITTER on each axis
    and re-aimed at the origin (so `pixel_coords` are its projections, while `directions`
    stay those of the unmoved camera, as in the release), cubes of side 2r, and positions
    uniform in [-3, 3] whether or not an object leaves the frame.
    """
    check_object_counts(min_objects, max_objects)
    if look not in LOOKS:
        raise ValueError(f"look must be one of {LOOKS}, got {look!r}")
    if condition not in (None, *clevr.COGENT_COLORS):
        raise ValueError(f"condition must be None, 'A' or 'B', got {condition!r}")
    if not split or index < 0:
        raise ValueError(f"need a non-empty split and index >= 0, got {split!r}, {index}")
    if look == "clevr":
        camera = jittered_clevr_camera(rng)
        directions = CLEVR_CAMERA.ground_directions()
    else:
        camera, directions = MINI_CAMERA, camera_directions()
    count = rng.randint(min_objects, max_objects)
    for attempt in range(1, MAX_SCENE_ATTEMPTS + 1):
        objects = _place_objects(rng, count, directions, condition, look, camera)
        if objects is None or min(visible_pixel_counts(objects, camera)) < MIN_VISIBLE_PIXELS:
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
