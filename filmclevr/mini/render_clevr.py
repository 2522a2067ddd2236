"""The CLEVR look: a numpy renderer that follows CLEVR v1.0's Blender set-up (SPEC §7).

CLEVR was path-traced by Blender Cycles; this renderer keeps what a model can see of it and
stays fast enough to make tens of thousands of images on a CPU:

- the camera of the scene record itself (`fit_camera`: CLEVR's lens, aimed at the origin, its
  position fitted to the record's `pixel_coords`), so genuine scenes render as given;
- shading in linear light, written as sRGB: albedo is CLEVR's RGB / 255 taken as linear, as
  Blender takes it, which is why CLEVR's objects look dark and unsaturated;
- CLEVR's three area lamps (key, fill, back), aimed at the origin and moved per scene by up to
  1.0 on each axis, and its sun; each casts a soft shadow: a shadow ray's closest approach to an
  object gives the object's signed distance there, and the lamp's size seen from that point the
  width of the penumbra;
- rubber: diffuse with a velvet-like sheen under a white glossy coat; metal: a tinted mirror
  that reflects the floor, its neighbours and the lamps, with no diffuse part; the floor and the
  backdrop: gray diffuse, and the light it bounces onto the objects;
- CLEVR's meshes' bevelled edges: rounded in the shading of cubes and cylinders, and in the
  outline of cubes (a cylinder's small bevel overhangs by under a pixel).

The constants below marked "calibrated" were fitted so that the median colours at object centres
and each object's shading over its surface (its luminance's mean, spread and percentiles, per
material) match the genuine development images (`benchmarks/bench_render_clevr.py` measures
both).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

import numpy as np
from PIL import Image

from filmclevr import clevr
from filmclevr.mini import scenes
from filmclevr.mini.scenes import IMAGE_HEIGHT, IMAGE_WIDTH, Camera

__all__ = ["Lamp", "fit_camera", "render_scene", "reprojection_errors", "scene_lamps"]


class Lamp:
    """An area lamp aimed at the origin (`size` > 0) or the sun (a direction, `size` 0)."""

    __slots__ = ("position", "size", "power", "tint")

    def __init__(self, position: np.ndarray, size: float, power: float, tint: tuple) -> None:
        self.position = np.asarray(position, dtype=np.float64)
        self.size = size
        self.power = power
        self.tint = np.asarray(tint, dtype=np.float32)


def _srgb_hex_to_linear(code: str) -> tuple[float, float, float]:
    rgb = [int(code[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    return tuple(c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)


# CLEVR's lamps before their per-scene jitter (position, size) and the published re-creation's
# powers and tints (SPEC §7).
KEY = ((6.4467, -2.9052, 4.2584), 0.5, 100.0, _srgb_hex_to_linear("ffedd0"))
FILL = ((-4.6711, -4.0136, 3.0112), 0.5, 30.0, _srgb_hex_to_linear("c2d0ff"))
BACK = ((-1.1685, 2.6460, 5.8157), 1.0, 50.0, (1.0, 1.0, 1.0))
LAMP_JITTER = 1.0
SUN_ELEVATION_DEG = 63.0  # high in front of the scene, towards the camera, not jittered
SUN_STRENGTH = 0.2  # SPEC §7's re-creation: 0.45; chosen with the calibrated constants below

TINT_STRENGTH = 0.5  # calibrated: how much of the re-creation's lamp tints the floor shows
AREA_GAIN = 3.0  # calibrated: the area lamps' irradiance over Cycles' power convention
FLOOR_ALBEDO = 0.9  # calibrated: the background's level
EXPOSURE = 1.0  # calibrated
AMBIENT = 0.01  # calibrated: radiance of the world around the studio
BOUNCE = 0.8  # calibrated: floor light reaching a surface facing straight down, as irradiance
COAT = 0.04  # calibrated: the rubber coat's reflectance at normal incidence
SHEEN = 0.35  # calibrated: the velvet sheen towards silhouettes
METAL_ROUGH_ALPHA = 0.04  # GGX alpha of the metal's broad lobe (roughness 0.2)
METAL_SHARP_ALPHA = 0.02  # the sharp lobe (roughness 0.01), widened to the lamps' size
COAT_ALPHA = 0.35**2
NEIGHBOUR_IRRADIANCE = 0.8  # light on a neighbour seen in a metal mirror (no second bounce)
# Quarter-pixel samples of an edge pixel (rows, columns on the twice-finer grid): the two of a
# diagonal give three levels of coverage, enough at the sizes models read (and half the cost).
EDGE_SAMPLES = (np.array([0, 1]), np.array([0, 1]))
OBJECT_SHADOW_POWER = 50.0  # lamps at least this strong shade objects with other objects
FLOOR_STEP = 4  # the ground is shaded every 4 pixels: its shadows are soft (see _floor_image)
SWEEP_START = 2.0  # calibrated: how far behind the origin the floor starts to curve up
SWEEP_RADIUS = 6.0  # calibrated
BACKDROP_RADIANCE = 0.10  # calibrated: what a mirror sees of the sweep rising behind the scene
# Calibrated on the objects' contrast (luminance spread over each object, its 10th and 90th
# percentiles against the genuine images'): Cycles' indirect light lifts the sides the lamps
# miss, and a metal's broad lobe (roughness 0.2) gathers light even looking up at the black
# world, away from the floor and the sweep.
RUBBER_DIRECT = 0.85  # the lamps' share of rubber's diffuse light
MIRROR_SKY = 0.05  # radiance a metal mirror sees looking up
BEVEL = {"cube": 0.2 * 0.7, "cylinder": 0.06 * 0.7, "sphere": 0.0}  # at size large; scaled
# A cylinder's small bevel overhangs by under a pixel (its rim is shaded rounded all the same):
# only cubes' silhouettes are traced round, at a fraction of the cost.
ROUNDED_SILHOUETTES = frozenset({"cube"})
# Sphere tracing onto a bevel from the sharp solid's hit, in few steps (each is a numpy call
# per object and ray batch): a ray still farther than BEVEL_MISS after them passes the edge
# (a grazing ray converges slowest; 0.01 is about half a pixel for a large object near the
# camera, within an edge pixel's anti-aliasing).
BEVEL_MARCH_STEPS = 6
BEVEL_TOLERANCE = 1e-3
BEVEL_MISS = 1e-2
SILHOUETTE_REACH = 4  # pixels in from a sharp silhouette that may lie past a rounded edge


def _scene_rng(scene: dict[str, Any]) -> random.Random:
    """A generator seeded by the scene's content, so its lamps are the same every time."""
    key = json.dumps(
        [scene.get("image_filename"), [o["3d_coords"] for o in scene["objects"]]],
        separators=(",", ":"),
    )
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def scene_lamps(scene: dict[str, Any]) -> list[Lamp]:
    """The scene's key, fill and back lamps, jittered as CLEVR jitters them, and the sun."""
    rng = _scene_rng(scene)
    lamps = []
    for position, size, power, tint in (KEY, FILL, BACK):
        moved = [c + rng.uniform(-LAMP_JITTER, LAMP_JITTER) for c in position]
        softened = tuple(1 - TINT_STRENGTH * (1 - c) for c in tint)
        lamps.append(Lamp(moved, size, power, softened))
    front = -np.asarray(scenes.CLEVR_CAMERA.ground_directions()["behind"])
    el = math.radians(SUN_ELEVATION_DEG)
    sun = np.array([front[0] * math.cos(el), front[1] * math.cos(el), math.sin(el)])
    lamps.append(Lamp(sun / np.linalg.norm(sun), 0.0, SUN_STRENGTH, (1.0, 1.0, 1.0)))
    return lamps


# --- The camera of a scene record ---------------------------------------------------------------
_DEPTH_WEIGHT = 50.0  # one pixel is about 0.02 scene units of depth at CLEVR's distance


_CLEVR_FOCAL = scenes.CLEVR_CAMERA.focal


def _residuals(position: np.ndarray, world: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Projection minus record, pixels and weighted depth, of a camera at `position` aimed at
    the origin (as `Camera.aimed_at_origin` builds it, without building one: this runs ~20
    times a scene)."""
    forward = -position / np.linalg.norm(position)
    right = np.array([forward[1], -forward[0], 0.0]) / math.hypot(forward[0], forward[1])
    up = np.cross(right, forward)
    view = (world - position) @ np.stack([right, up, forward], axis=1)
    px = _CLEVR_FOCAL * view[:, 0] / view[:, 2] + IMAGE_WIDTH / 2
    py = IMAGE_HEIGHT / 2 - _CLEVR_FOCAL * view[:, 1] / view[:, 2]
    return np.concatenate(
        [px - target[:, 0], py - target[:, 1], (view[:, 2] - target[:, 2]) * _DEPTH_WEIGHT]
    )


def fit_camera(scene: dict[str, Any]) -> Camera:
    """CLEVR's camera for a scene record: its lens, aimed at the origin, at the position whose
    projections of the objects' `3d_coords` best match their `pixel_coords` (least squares over
    pixels and depth, Gauss-Newton from CLEVR's unmoved camera)."""
    objects = scene["objects"]
    if not objects:
        return scenes.CLEVR_CAMERA
    world = np.array([o["3d_coords"] for o in objects], dtype=np.float64)
    target = np.array([o["pixel_coords"] for o in objects], dtype=np.float64)
    position = np.array(scenes.CLEVR_CAMERA_POSITION, dtype=np.float64)
    for _ in range(20):
        r0 = _residuals(position, world, target)
        jacobian = np.empty((r0.size, 3))
        for axis in range(3):
            step = np.zeros(3)
            step[axis] = 1e-6
            jacobian[:, axis] = (_residuals(position + step, world, target) - r0) / 1e-6
        delta = np.linalg.lstsq(jacobian, -r0, rcond=None)[0]
        position += delta
        if np.abs(delta).max() < 1e-7:
            break
    return Camera.aimed_at_origin(
        position, scenes.CLEVR_CAMERA_HFOV_DEG, blender_rotation=True, cache_rays=False
    )


def reprojection_errors(scene: dict[str, Any], camera: Camera) -> np.ndarray:
    """Pixel distance between each object's projection and its recorded `pixel_coords`."""
    world = np.array([o["3d_coords"] for o in scene["objects"]], dtype=np.float64)
    target = np.array([o["pixel_coords"] for o in scene["objects"]], dtype=np.float64)
    return np.hypot(*(camera.project_points(world)[:, :2] - target[:, :2]).T)


# --- Geometry of arbitrary rays -----------------------------------------------------------------
def _to_local(obj: dict[str, Any], points: np.ndarray, camera: Camera) -> np.ndarray:
    """World points [N, 3] in the object's frame (centre at 0, turned by its rotation)."""
    centre, cos_t, sin_t = scenes._local_frame(obj, camera)
    p = points - centre.astype(np.float32)
    out = np.empty_like(p)
    out[:, 0] = cos_t * p[:, 0] + sin_t * p[:, 1]
    out[:, 1] = -sin_t * p[:, 0] + cos_t * p[:, 1]
    out[:, 2] = p[:, 2]
    return out


def _signed_distance(obj: dict[str, Any], local: np.ndarray) -> np.ndarray:
    """Signed distance [N] from points in the object's frame to its (bevelled) surface."""
    h = obj["3d_coords"][2]
    r = clevr.SIZES[obj["size"]]
    if obj["shape"] == "sphere":
        return scenes.row_lengths(local) - r
    bevel = BEVEL[obj["shape"]] * r / 0.7
    # Column by column (no reductions along rows): the hot loop of `_onto_bevels`.
    if obj["shape"] == "cube":
        inner = h - bevel
        excess = [np.abs(local[:, axis]) - inner for axis in range(3)]
    else:
        excess = [
            np.hypot(local[:, 0], local[:, 1]) - (r - bevel),
            np.abs(local[:, 2]) - (h - bevel),
        ]
    squares = sum(np.square(np.maximum(e, 0.0)) for e in excess)
    largest = excess[0]
    for e in excess[1:]:
        largest = np.maximum(largest, e)
    return np.sqrt(squares) + np.minimum(largest, 0.0) - bevel


def _local_rays(
    obj: dict[str, Any], origins: np.ndarray, dirs: np.ndarray, camera: Camera
) -> tuple[np.ndarray, np.ndarray]:
    """Rays [N, 3] (origins, unit directions) in the object's frame."""
    d = np.zeros_like(dirs)
    _, cos_t, sin_t = scenes._local_frame(obj, camera)
    d[:, 0] = cos_t * dirs[:, 0] + sin_t * dirs[:, 1]
    d[:, 1] = -sin_t * dirs[:, 0] + cos_t * dirs[:, 1]
    d[:, 2] = dirs[:, 2]
    return _to_local(obj, origins, camera), d


def _ray_hits(
    obj: dict[str, Any],
    origins: np.ndarray,
    dirs: np.ndarray,
    camera: Camera,
    bevelled: bool = True,
):
    """Distance along each ray [N] to the object's surface (inf where it misses): a cube's
    bevelled (ROUNDED_SILHOUETTES), or with `bevelled` False the sharp solid's (cheaper, for
    what a mirror shows)."""
    o, d = _local_rays(obj, origins, dirs, camera)
    h = obj["3d_coords"][2]
    r = clevr.SIZES[obj["size"]]
    inf = np.float32(np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        if obj["shape"] == "sphere":
            b = scenes.row_dots(o, d)
            disc = b * b - (scenes.row_dots(o, o) - r * r)
            t = -b - np.sqrt(disc)
            t = np.where((disc >= 0) & (t > 1e-4), t, inf)
        elif obj["shape"] == "cube":
            inv = 1.0 / np.where(np.abs(d) < 1e-9, np.float32(1e-9), d)
            ta, tb = (-h - o) * inv, (h - o) * inv
            t_near = np.minimum(ta, tb).max(axis=1)
            t_far = np.maximum(ta, tb).min(axis=1)
            t = np.where((t_near <= t_far) & (t_near > 1e-4), t_near, inf)
        else:
            a = d[:, 0] ** 2 + d[:, 1] ** 2
            b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
            disc = b * b - a * (o[:, 0] ** 2 + o[:, 1] ** 2 - r * r)
            t_side = (-b - np.sqrt(disc)) / a
            z_side = o[:, 2] + t_side * d[:, 2]
            t_side = np.where((disc >= 0) & (np.abs(z_side) <= h) & (t_side > 1e-4), t_side, inf)
            t_cap = (np.sign(d[:, 2]) * -h - o[:, 2]) / d[:, 2]
            xc, yc = o[:, 0] + t_cap * d[:, 0], o[:, 1] + t_cap * d[:, 1]
            t_cap = np.where((t_cap > 1e-4) & (xc * xc + yc * yc <= r * r), t_cap, inf)
            t = np.minimum(t_side, t_cap)
    t = t.astype(np.float32)
    return _onto_bevels(obj, o, d, t) if bevelled else t


def _onto_bevels(obj: dict[str, Any], o: np.ndarray, d: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Hits `t` [N] on the sharp solid (rays o + t d in the object's frame) moved onto its
    bevelled surface, which lies inside it: sphere tracing from the sharp hit, which stays put
    on a face and slides in along a rounded edge; inf where the ray passes the rounded edge
    (the sharp corner's pixels then see what lies behind it, as CLEVR's meshes show)."""
    if obj["shape"] not in ROUNDED_SILHOUETTES:
        return t
    hit = np.flatnonzero(np.isfinite(t))
    distance = _signed_distance(obj, o[hit] + t[hit, None] * d[hit])
    # Only rays in a bevel's zone move (on a face the distance is 0 already); they march
    # together, those already there by steps of about 0.
    zone = hit[distance > BEVEL_TOLERANCE]
    if not zone.size:
        return t
    origins, dirs, along = o[zone], d[zone], t[zone]
    step = distance[distance > BEVEL_TOLERANCE]
    for _ in range(BEVEL_MARCH_STEPS):
        along += step
        step = _signed_distance(obj, origins + along[:, None] * dirs)
    out = t.copy()
    out[zone] = np.where(step <= BEVEL_MISS, along, np.float32(np.inf))
    return out


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# --- Lighting -----------------------------------------------------------------------------------
def _to_lamp(lamp: Lamp, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit directions to the lamp [N, 3], its distance [N] (inf for the sun) and the
    irradiance it gives a surface facing it [N], before shadows and tint."""
    if lamp.size == 0:
        n = len(points)
        dirs = np.broadcast_to(lamp.position.astype(np.float32), (n, 3))
        return dirs, np.full(n, np.inf, np.float32), np.full(n, lamp.power, np.float32)
    v = lamp.position.astype(np.float32) - points
    dist = scenes.row_lengths(v)
    dirs = v / dist[:, None]
    aim = (lamp.position / np.linalg.norm(lamp.position)).astype(np.float32)
    emitting = np.clip(dirs @ aim, 0.0, 1.0)  # an area lamp shines forward, with cosine falloff
    return dirs, dist, AREA_GAIN * lamp.power * emitting / (math.pi**2 * dist * dist)


def _shadow_box(obj: dict[str, Any], lamp: Lamp, camera: Camera) -> tuple[int, int, int, int]:
    """Pixel box (y0, y1, x0, x1) holding the object and its shadow from `lamp` on the floor."""
    key = (id(obj), id(lamp))
    cache = camera.__dict__.setdefault("_shadow_boxes", {})
    if key not in cache:
        cache[key] = _compute_shadow_box(obj, lamp, camera)
    return cache[key]


def _compute_shadow_box(obj: dict[str, Any], lamp: Lamp, camera: Camera) -> tuple:
    z = obj["3d_coords"][2]
    r = scenes.ground_radius(obj) + 0.35  # the penumbra's reach
    corners = np.asarray(obj["3d_coords"]) + scenes._UNIT_BOX_CORNERS * (r, r, z)
    corners[:, 2] = np.maximum(corners[:, 2], 0.0)
    if lamp.size == 0:
        floor = corners - lamp.position * (corners[:, 2] / lamp.position[2])[:, None]
    else:
        below = np.minimum(corners[:, 2], lamp.position[2] - 0.05)
        scale = lamp.position[2] / (lamp.position[2] - below)
        floor = lamp.position + (corners - lamp.position) * scale[:, None]
    floor[:, 2] = 0.0
    try:
        p = camera.project_points(np.concatenate([corners, floor]))
    except ValueError:  # part of the shadow is behind the camera: test the whole image
        return 0, IMAGE_HEIGHT, 0, IMAGE_WIDTH
    x0, y0 = np.floor(p[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(p[:, :2].max(axis=0)).astype(int) + 1
    return max(y0, 0), min(y1, IMAGE_HEIGHT), max(x0, 0), min(x1, IMAGE_WIDTH)


def _occlusion(obj, lamp, points, to_lamp, dist, camera) -> tuple[np.ndarray, np.ndarray]:
    """The points the object can shadow, as indices into `points`, and the fraction of the
    lamp it hides from each of them (soft shadow); it hides nothing from the others."""
    centre = np.asarray(obj["3d_coords"], dtype=np.float32)
    offset = centre - points
    along = scenes.row_dots(offset, to_lamp)
    half_angle = 0.5 * lamp.size / dist  # an area lamp's (the sun casts no shadow: _visibility)
    width = np.maximum(along, 0.0) * half_angle + 0.01
    # Only rays that pass near the object (and towards it) can be shadowed by it.
    miss2 = scenes.row_dots(offset, offset) - along * along
    reach = scenes.ground_radius(obj) + obj["3d_coords"][2] * 0.5 + width
    near = np.flatnonzero((along > 0) & (miss2 < reach * reach))
    a = np.minimum(along[near], dist[near])
    closest = points[near] + a[:, None] * to_lamp[near]
    sdf = _signed_distance(obj, _to_local(obj, closest, camera))
    w = width[near]
    return near, _smoothstep((w - sdf) / (2 * w))


def _visibility(objects, lamp, points, ids, camera, pick_box, to_lamp, dist) -> np.ndarray:
    """Unshadowed fraction [N] of `lamp` at each point, over every object but the point's own.

    `pick_box(y0, y1, x0, x1)` gives the indices of the points inside a pixel box;
    `to_lamp` [N, 3] and `dist` [N] are `_to_lamp`'s for the points.
    """
    visible = np.ones(len(points), dtype=np.float32)
    if lamp.size == 0:  # the sun: weak and high, its short shadows are left out for speed
        return visible
    for k, obj in enumerate(objects):
        pick = pick_box(*_shadow_box(obj, lamp, camera))
        pick = pick[ids[pick] != k]  # an object's own side away from the lamp is dark already
        if pick.size:
            near, occlusion = _occlusion(obj, lamp, points[pick], to_lamp[pick], dist[pick], camera)
            visible[pick[near]] *= 1.0 - occlusion
    return visible


def _ggx(n_dot_h: np.ndarray, alpha: float) -> np.ndarray:
    a2 = alpha * alpha
    denom = n_dot_h * n_dot_h * (a2 - 1) + 1
    return a2 / (math.pi * denom * denom)


_BEHIND = np.asarray(scenes.CLEVR_CAMERA.ground_directions()["behind"], dtype=np.float64)


def _ground_hits(origin: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where camera rays from `origin` meet the studio's ground: points [N, 3], normals [N, 3].

    The ground is the floor z = 0 up to SWEEP_START behind the origin, then a quarter circle
    of radius SWEEP_RADIUS rising to a wall (CLEVR's curved backdrop), all straight along
    the left/right axis.
    """
    d = dirs.astype(np.float64)
    o_b, o_z = float(origin @ _BEHIND), float(origin[2])
    d_b, d_z = d @ _BEHIND, d[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d_z < -1e-9, -o_z / d_z, np.inf)
        beyond = ~(o_b + t * d_b < SWEEP_START)
        # The arc: centre (SWEEP_START, SWEEP_RADIUS) in the (behind, up) plane.
        cb, cz = o_b - SWEEP_START, o_z - SWEEP_RADIUS
        a = d_b * d_b + d_z * d_z
        half_b = cb * d_b + cz * d_z
        disc = half_b * half_b - a * (cb * cb + cz * cz - SWEEP_RADIUS**2)
        t_arc = (-half_b + np.sqrt(np.maximum(disc, 0.0))) / a  # the far side: seen from inside
        b_arc = o_b + t_arc * d_b
        z_arc = o_z + t_arc * d_z
        on_arc = (disc >= 0) & (b_arc >= SWEEP_START) & (z_arc <= SWEEP_RADIUS)
        t_wall = (SWEEP_START + SWEEP_RADIUS - o_b) / d_b
    t = np.where(beyond, np.where(on_arc, t_arc, t_wall), t)
    points = origin + t[:, None] * d
    normals = np.zeros_like(points)
    normals[:, 2] = 1.0
    arc = beyond & on_arc
    nb = SWEEP_START - (points[arc] @ _BEHIND)
    nz = SWEEP_RADIUS - points[arc, 2]
    length = np.hypot(nb, nz)
    normals[arc] = (nb / length)[:, None] * _BEHIND + np.outer(nz / length, [0.0, 0.0, 1.0])
    normals[beyond & ~on_arc] = -_BEHIND
    floor = ~beyond
    points[floor, 2] = 0.0
    return points.astype(np.float32), normals.astype(np.float32)


def _floor_light(points: np.ndarray, normals: np.ndarray, lamp: Lamp) -> np.ndarray:
    """Unshadowed irradiance [N] of ground points from one lamp."""
    dirs, _, irradiance = _to_lamp(lamp, points)
    return irradiance * np.clip(scenes.row_dots(dirs, normals), 0.0, 1.0)


def _floor_radiance(points: np.ndarray, lamps: list[Lamp]) -> np.ndarray:
    """Unshadowed radiance [N, 3] of floor points, for reflections in metal."""
    up = np.zeros_like(points)
    up[:, 2] = 1.0
    light = np.full((len(points), 3), AMBIENT * math.pi, dtype=np.float32)
    for lamp in lamps:
        light += _floor_light(points, up, lamp)[:, None] * lamp.tint
    return light * (FLOOR_ALBEDO / math.pi)


def _shade_floor(scene, camera, lamps, points, normals, ids, pick_box) -> np.ndarray:
    """Linear radiance [N, 3] of ground points (soft shadows included)."""
    light = np.full((len(points), 3), AMBIENT * math.pi, dtype=np.float32)
    for lamp in lamps:
        to_lamp, dist, irradiance = _to_lamp(lamp, points)
        visible = _visibility(scene["objects"], lamp, points, ids, camera, pick_box, to_lamp, dist)
        facing = np.clip(scenes.row_dots(to_lamp, normals), 0, 1)
        light += (irradiance * facing * visible)[:, None] * lamp.tint
    return light * (FLOOR_ALBEDO / math.pi)


def _floor_image(scene, camera, lamps) -> np.ndarray:
    """Linear radiance [H * W, 3] of the ground seen through every pixel, objects ignored.

    The ground has no texture and its shadows are soft, so it is shaded at the centres of
    FLOOR_STEP x FLOOR_STEP pixel blocks and interpolated bilinearly.
    """
    f = FLOOR_STEP
    h, w = IMAGE_HEIGHT // f, IMAGE_WIDTH // f
    ys = (np.arange(h) + 0.5) * f - IMAGE_HEIGHT / 2
    xs = (np.arange(w) + 0.5) * f - IMAGE_WIDTH / 2
    dirs = (
        xs[None, :, None] / camera.focal * camera.right
        - ys[:, None, None] / camera.focal * camera.up
        + camera.forward
    ).reshape(-1, 3)
    points, normals = _ground_hits(camera.position, dirs)
    floor_ids = np.full(len(points), -1, dtype=np.int16)

    def pick_coarse(y0, y1, x0, x1):
        rows = np.arange(y0 // f, min(-(-y1 // f), h))
        cols = np.arange(x0 // f, min(-(-x1 // f), w))
        return (rows[:, None] * w + cols[None, :]).ravel()

    coarse = _shade_floor(scene, camera, lamps, points, normals, floor_ids, pick_coarse)
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(coarse[:, c]).reshape(h, w), mode="F").resize(
                (IMAGE_WIDTH, IMAGE_HEIGHT), Image.BILINEAR
            )
        )
        for c in range(3)
    ]
    return np.stack(channels, axis=-1).reshape(-1, 3)


def _shade_objects(scene, camera, lamps, points, dirs, ids, pick_box) -> np.ndarray:
    """Linear radiance [N, 3] of points on objects `ids` [N] seen along camera rays `dirs`."""
    objects = scene["objects"]
    normals = np.empty_like(points)
    albedo = np.empty_like(points)
    metal = np.zeros(len(points), dtype=bool)
    for k, obj in enumerate(objects):
        mine = np.flatnonzero(ids == k)
        if mine.size:
            bevel = BEVEL[obj["shape"]] * clevr.SIZES[obj["size"]] / 0.7
            normals[mine] = scenes.surface_normals(obj, points[mine], bevel, camera)
            albedo[mine] = np.asarray(clevr.COLORS[obj["color"]], np.float32) / 255
            metal[mine] = obj["material"] == "metal"
    view = -dirs
    n_dot_v = np.clip(scenes.row_dots(normals, view), 1e-3, 1.0)
    rubber, metal = np.flatnonzero(~metal), np.flatnonzero(metal)
    # Rubber gathers diffuse light and its coat's highlights; metal only its mirror lobes.
    diffuse = np.zeros((rubber.size, 3), dtype=np.float32)
    coat = np.zeros((rubber.size, 3), dtype=np.float32)
    mirror_lamps = np.zeros((metal.size, 3), dtype=np.float32)
    for lamp in lamps:
        to_lamp, dist, irradiance = _to_lamp(lamp, points)
        if lamp.power >= OBJECT_SHADOW_POWER:
            irradiance = irradiance * _visibility(
                objects, lamp, points, ids, camera, pick_box, to_lamp, dist
            )
        # (the fill lamp's shadows on other objects are faint: left out for speed)
        n_dot_l = np.clip(scenes.row_dots(normals, to_lamp), 0.0, 1.0)
        half = to_lamp + view
        half /= np.sqrt(scenes.row_dots(half, half))[:, None]
        n_dot_h = np.clip(scenes.row_dots(normals, half), 0.0, 1.0)
        # Geometry term: grazing views would blow the highlight up into white rims.
        lobe = irradiance * n_dot_l / (4 * np.maximum(n_dot_v, 0.3))
        r, m = rubber, metal
        diffuse += (RUBBER_DIRECT * irradiance[r] * n_dot_l[r])[:, None] * lamp.tint
        coat += (_ggx(n_dot_h[r], COAT_ALPHA) * lobe[r])[:, None] * lamp.tint
        sharp = 0.6 * _ggx(n_dot_h[m], METAL_SHARP_ALPHA) + 0.4 * _ggx(
            n_dot_h[m], METAL_ROUGH_ALPHA
        )
        mirror_lamps += (sharp * lobe[m])[:, None] * lamp.tint
    radiance = np.empty_like(points)
    if rubber.size:
        up = normals[rubber, 2]
        diffuse += (AMBIENT * math.pi * 0.5 * (1 + up) + BOUNCE * 0.5 * (1 - up))[:, None]
        grazing = 1 - n_dot_v[rubber]
        fresnel = COAT + (1 - COAT) * grazing**5
        radiance[rubber] = albedo[rubber] / math.pi * diffuse * (1 + SHEEN * grazing**2)[:, None]
        radiance[rubber] += fresnel[:, None] * coat
    if metal.size:
        radiance[metal] = albedo[metal] * (
            _reflection(scene, camera, lamps, points[metal], normals[metal], view[metal])
            + mirror_lamps
        )
    return radiance


def _box_picker(rows: np.ndarray, cols: np.ndarray):
    """A function giving the indices of the samples at pixel (rows, cols) inside a box
    (y0, y1, x0, x1): samples sorted by row once, so each box reads only its rows."""
    by_row = np.argsort(rows, kind="stable")
    starts = np.searchsorted(rows[by_row], np.arange(IMAGE_HEIGHT + 1))

    def pick(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        inside = by_row[starts[y0] : starts[y1]]
        return inside[(cols[inside] >= x0) & (cols[inside] < x1)]

    return pick


def _shade(scene, camera, lamps, dirs, ids, t, pixel_yx) -> np.ndarray:
    """Linear radiance [N, 3] seen along camera rays `dirs` [N, 3] that hit object `ids` [N]
    (-1: the floor) at distance `t` [N], through pixels `pixel_yx` (rows, columns)."""
    cam = camera.position.astype(np.float32)
    floor = ids < 0
    points = cam + np.where(floor, 0.0, t)[:, None] * dirs
    radiance = np.zeros_like(points)
    if floor.any():
        ground, normals = _ground_hits(camera.position, dirs[floor])
        points[floor] = ground
        # Each surface kind its own picker: a shadow box then reads only its own samples.
        pick_floor = _box_picker(pixel_yx[0][floor], pixel_yx[1][floor])
        radiance[floor] = _shade_floor(
            scene, camera, lamps, ground, normals, ids[floor], pick_floor
        )
    on_object = np.flatnonzero(~floor)
    if on_object.size:
        pick_objects = _box_picker(pixel_yx[0][on_object], pixel_yx[1][on_object])

        radiance[on_object] = _shade_objects(
            scene, camera, lamps, points[on_object], dirs[on_object], ids[on_object], pick_objects
        )
    return radiance


def _reflection(scene, camera, lamps, points, normals, view) -> np.ndarray:
    """Radiance [N, 3] a mirror at `points` sees: a neighbour, the floor, or the backdrop."""
    n_dot_v = scenes.row_dots(normals, view)
    rays = 2 * n_dot_v[:, None] * normals - view
    rays /= scenes.row_lengths(rays)[:, None]
    origins = points + 1e-3 * normals
    out = np.zeros_like(points)
    nearest = np.full(len(points), np.inf, dtype=np.float32)
    for obj in scene["objects"]:
        near = _passing_near(obj, origins, rays)
        if not near.size:
            continue
        hit = np.full(len(points), np.inf, dtype=np.float32)
        # A neighbour's rounded edges are a few pixels of a small reflection: the sharp solid.
        hit[near] = _ray_hits(obj, origins[near], rays[near], camera, bevelled=False)
        closer = hit < nearest
        if closer.any():
            nearest[closer] = hit[closer]
            albedo = np.asarray(clevr.COLORS[obj["color"]], np.float32) / 255
            gain = 0.2 if obj["material"] == "metal" else 1.0
            out[closer] = albedo * (gain * NEIGHBOUR_IRRADIANCE / math.pi)
    missed = ~np.isfinite(nearest)
    down = missed & (rays[:, 2] < -1e-4)
    if down.any():
        t = -origins[down, 2] / rays[down, 2]
        out[down] = _floor_radiance(origins[down] + t[:, None] * rays[down], lamps)
    upward = missed & ~down
    if upward.any():
        behind = np.asarray(scenes.CLEVR_CAMERA.ground_directions()["behind"], np.float32)
        towards_back = _smoothstep(rays[upward] @ behind * 4 + 0.5)
        out[upward] = (BACKDROP_RADIANCE * towards_back * (1 - rays[upward, 2]) + MIRROR_SKY)[
            :, None
        ]
    return out


def _sample_rays(camera: Camera, rows: np.ndarray, cols: np.ndarray, scale: int) -> np.ndarray:
    """Unit rays [N, 3] through the centres of samples (rows, cols) of the `scale`x grid."""
    focal = np.float32(camera.focal)
    xs = ((cols + 0.5) / scale - IMAGE_WIDTH / 2).astype(np.float32) / focal
    ys = ((rows + 0.5) / scale - IMAGE_HEIGHT / 2).astype(np.float32) / focal
    rays = xs[:, None] * camera.right.astype(np.float32)
    rays -= ys[:, None] * camera.up.astype(np.float32)
    rays += camera.forward.astype(np.float32)
    rays /= np.sqrt(scenes.row_dots(rays, rays))[:, None]
    return rays


_SRGB_STEPS = 1 << 14
_SRGB_TABLE = (
    np.where(
        (x := np.arange(_SRGB_STEPS + 1) / _SRGB_STEPS) <= 0.0031308,
        12.92 * x,
        1.055 * np.power(x, 1 / 2.4) - 0.055,
    )
    * 255
    + 0.5
).astype(np.uint8)


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear radiance to 8-bit sRGB (a table of 16,384 steps: finer than one output level)."""
    steps = linear * (EXPOSURE * _SRGB_STEPS)
    np.clip(steps, 0, _SRGB_STEPS, out=steps)
    steps += 0.5
    return _SRGB_TABLE[steps.astype(np.int32)]


def render_scene(scene: dict[str, Any], camera: Camera | None = None) -> Image.Image:
    """Render a scene record (CLEVR format) to a 480x320 RGBA image with alpha 255.

    `camera` defaults to the record's own (`fit_camera`). Objects are found pixel by pixel;
    where a pixel or its neighbours see different surfaces, its quarter-pixel samples
    (`EDGE_SAMPLES`) are cast and shaded apart and averaged (anti-aliased edges).
    """
    for k, obj in enumerate(scene["objects"]):
        for key, vocabulary in clevr.ATTRIBUTES.items():
            if obj.get(key) not in vocabulary:
                raise ValueError(f"object {k}: {key}={obj.get(key)!r} is not one of {vocabulary}")
    camera = camera or fit_camera(scene)
    lamps = scene_lamps(scene)
    objects = scene["objects"]
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    rgb = _floor_image(scene, camera, lamps)
    if objects:
        ids, depth = _bevelled_silhouettes(
            objects, camera, *scenes.object_id_buffer(objects, 1, camera)[:2]
        )
        edge = _id_edges(ids).ravel()
        flat_ids, flat_depth = ids.ravel(), depth.ravel()
        inside = np.flatnonzero(~edge & (flat_ids >= 0))
        edge = np.flatnonzero(edge)
        iy, ix = np.divmod(inside, w)
        ey, ex = np.divmod(edge, w)
        # Edge pixels: EDGE_SAMPLES samples each, on the grid twice as fine, cast against
        # every object.
        fy = (2 * ey[:, None] + EDGE_SAMPLES[0]).ravel()
        fx = (2 * ex[:, None] + EDGE_SAMPLES[1]).ravel()
        fine_rays = _sample_rays(camera, fy, fx, 2)
        fine_ids, fine_depth = _cast(objects, camera, fine_rays)
        # One shading call: inside pixels at their centre, edge pixels at four samples.
        rays = np.concatenate([_sample_rays(camera, iy, ix, 1), fine_rays])
        sy = np.concatenate([iy, fy // 2])
        sx = np.concatenate([ix, fx // 2])
        shaded = _shade(
            scene,
            camera,
            lamps,
            rays,
            np.concatenate([flat_ids[inside], fine_ids]),
            np.concatenate([flat_depth[inside], fine_depth]),
            (sy, sx),
        )
        rgb[inside] = shaded[: inside.size]
        rgb[edge] = shaded[inside.size :].reshape(edge.size, -1, 3).mean(axis=1)
    image = Image.fromarray(_to_srgb(rgb).reshape(h, w, 3))
    return image.convert("RGBA")


def _id_edges(ids: np.ndarray) -> np.ndarray:
    """Pixels [H, W] whose 4-neighbours include another object (or the floor) than their own."""
    around = np.pad(ids, 1, mode="edge")
    return (
        (around[:-2, 1:-1] != ids)
        | (around[2:, 1:-1] != ids)
        | (around[1:-1, :-2] != ids)
        | (around[1:-1, 2:] != ids)
    )


def dilated(mask: np.ndarray, steps: int) -> np.ndarray:
    """`mask` [H, W] grown by `steps` pixels (4-neighbour steps: a diamond)."""
    grown = mask.copy()
    for _ in range(steps):
        step = grown.copy()
        step[1:] |= grown[:-1]
        step[:-1] |= grown[1:]
        step[:, 1:] |= grown[:, :-1]
        step[:, :-1] |= grown[:, 1:]
        grown = step
    return grown


def _bevelled_silhouettes(
    objects, camera: Camera, ids: np.ndarray, depth: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The id buffer and depths [H, W] of sharp solids (`scenes.object_id_buffer`, which the
    scene sampler's visibility rule shares) made those of rounded cubes: a cube's pixels near
    its silhouette are traced onto its rounded edge (`_onto_bevels`), and those that pass it
    are cast again against every object (or see the floor)."""
    # A sharp corner overhangs its rounded edge by at most BEVEL x (sqrt 2 - 1): 3 pixels for a
    # large cube near the camera. Farther in, a bevel's pixels stay on their object, shaded
    # with the rounded edge's normals (`scenes.surface_normals`).
    near_silhouette = dilated(_id_edges(ids), SILHOUETTE_REACH).ravel()
    flat_ids, flat_depth = ids.ravel().copy(), depth.ravel().copy()
    origin = camera.position.astype(np.float32)[None]
    missed = []
    for k, obj in enumerate(objects):
        if obj["shape"] not in ROUNDED_SILHOUETTES:
            continue
        mine = np.flatnonzero(near_silhouette & (flat_ids == k))
        rays = _sample_rays(camera, *np.divmod(mine, IMAGE_WIDTH), 1)
        o, d = _local_rays(obj, np.broadcast_to(origin, rays.shape), rays, camera)
        flat_depth[mine] = t = _onto_bevels(obj, o, d, flat_depth[mine])
        missed.append(mine[~np.isfinite(t)])  # past the rounded edge: what lies behind it
    pixels = np.concatenate(missed) if missed else np.zeros(0, dtype=np.int64)
    if pixels.size:
        rays = _sample_rays(camera, *np.divmod(pixels, IMAGE_WIDTH), 1)
        flat_ids[pixels], flat_depth[pixels] = _cast(objects, camera, rays)
    return flat_ids.reshape(ids.shape), flat_depth.reshape(depth.shape)


def _cast(objects, camera: Camera, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The nearest object (-1: none) along each camera ray [N, 3], and the distance to it."""
    ids = np.full(len(rays), -1, dtype=np.int16)
    nearest = np.full(len(rays), np.inf, dtype=np.float32)
    origins = np.broadcast_to(camera.position.astype(np.float32), rays.shape)
    for k, obj in enumerate(objects):
        near = _passing_near(obj, origins, rays)
        if not near.size:
            continue
        t = _ray_hits(obj, origins[near], rays[near], camera)
        closer = t < nearest[near]
        nearest[near[closer]] = t[closer]
        ids[near[closer]] = k
    return ids, nearest


def _passing_near(obj: dict[str, Any], origins: np.ndarray, rays: np.ndarray) -> np.ndarray:
    """Indices of the rays (unit directions) that pass within the object's bounding sphere,
    ahead of their origins: the only ones that can hit it."""
    centre = np.asarray(obj["3d_coords"], dtype=np.float32)
    radius2 = scenes.ground_radius(obj) ** 2 + obj["3d_coords"][2] ** 2
    offset = centre - origins
    along = scenes.row_dots(offset, rays)
    miss2 = scenes.row_dots(offset, offset) - along * along
    return np.flatnonzero((miss2 <= radius2) & (along > -math.sqrt(radius2)))
