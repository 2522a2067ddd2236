"""Mini-CLEVR renderer: a gray studio ground, soft shadows and shaded, ray-cast objects.

CLEVR renders with Blender; this renderer imitates its look with numpy so thousands of images
take seconds: the scene is ray-cast at 2x resolution (geometry from `scenes.py`, z-buffered so
nearer objects hide farther ones), every object is shaded over its own pixel box, and the image
is box-downsampled to 480x320, which anti-aliases the edges. Rubber is matte (diffuse light only);
metal reflects a studio environment (gray floor below, bright softbox above, a horizon line
between) and shows sharp highlights. Shading multiplies CLEVR's RGB color, so hues survive.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image

from filmclevr import clevr
from filmclevr.mini import scenes

SUPERSAMPLE = 2  # render at 2x and box-downsample: 4 samples per pixel for the edges


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def _from_camera_frame(right: float, behind: float, up: float) -> np.ndarray:
    """A world unit vector given in the camera's ground frame (right, behind, up)."""
    directions = scenes.camera_directions()
    v = right * np.asarray(directions["right"]) + behind * np.asarray(directions["behind"])
    return _unit((v[0], v[1], up))


# Three lamps like CLEVR's key/fill/back rig: key from the front left, so shadows fall to
# the back right where the camera sees them.
KEY_LIGHT = _from_camera_frame(-0.55, -0.45, 0.9)
FILL_LIGHT = _from_camera_frame(0.8, -0.2, 0.45)
BACK_LIGHT = _from_camera_frame(0.1, 0.9, 0.6)
LIGHTS = ((KEY_LIGHT, 0.62), (FILL_LIGHT, 0.22), (BACK_LIGHT, 0.18))
AMBIENT = 0.38
_KEY32 = KEY_LIGHT.astype(np.float32)
_KEY_AZIMUTH32 = (KEY_LIGHT[:2] / np.linalg.norm(KEY_LIGHT[:2])).astype(np.float32)
_LIGHTS32 = tuple((d.astype(np.float32), p) for d, p in LIGHTS)
# Blinn half vector between the key light and the (average) direction to the camera.
_HALFWAY32 = _unit(tuple(KEY_LIGHT - scenes.CAMERA_FORWARD)).astype(np.float32)
SHADOW_STRENGTH = 0.42  # fraction of the floor's light removed in the core of a shadow
BEVEL = 0.06  # shading radius of cube and cylinder edges, in scene units


@functools.cache
def _studio() -> tuple[np.ndarray, np.ndarray]:
    """The empty 480x320 studio, uint8 [H, W, 3], and each pixel's floor point [H, W, 2]."""
    d = scenes.ray_directions(1).astype(np.float64)
    cam = scenes.CAMERA_POSITION
    # Every pixel sees the floor (the camera looks down steeply enough); guard anyway.
    t = -cam[2] / np.minimum(d[..., 2], -1e-6)
    gx, gy = cam[0] + t * d[..., 0], cam[1] + t * d[..., 1]
    # Brightest under the lamps, darker towards the back of the studio and the sides.
    directions = scenes.camera_directions()
    behind = gx * directions["behind"][0] + gy * directions["behind"][1]
    side = gx * directions["right"][0] + gy * directions["right"][1]
    light = 0.36 + 0.22 * np.exp(-((behind + 1.0) ** 2 + (0.6 * side) ** 2) / (2 * 5.5**2))
    light -= 0.05 * np.clip((behind - 2.0) / 6.0, 0.0, 1.0)
    rgb = np.clip(light, 0, 1)[..., None] * np.array([1.0, 1.0, 0.98])
    studio = (rgb * 255 + 0.5).astype(np.uint8)
    ground_xy = np.stack([gx, gy], axis=-1).astype(np.float32)
    studio.setflags(write=False)
    ground_xy.setflags(write=False)
    return studio, ground_xy


def _shadow_segment(obj: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, float]:
    """The object's shadow on the floor as a capsule: segment ends (x, y) and radius.

    A cylinder's shadow is exactly the capsule from its base disc to its top disc projected
    along the key light; spheres and cubes use the capsule that best covers their shadow.
    """
    x, y, z = obj["3d_coords"]
    r = clevr.SIZES[obj["size"]]
    along = -KEY_LIGHT[:2] / KEY_LIGHT[2]  # floor offset per unit of height
    base = np.array([x, y])
    if obj["shape"] == "sphere":
        centre = base + along * z
        # The sphere's shadow is an ellipse around the centre's shadow, long axis r / sin(elev).
        half = r / KEY_LIGHT[2] - r
        unit = along / (np.linalg.norm(along) + 1e-12)
        return centre - unit * half, centre + unit * half, r
    radius = 0.85 * r if obj["shape"] == "cube" else r
    return base, base + along * (2 * z), radius


def _draw_shadow(image: np.ndarray, obj: dict[str, Any]) -> None:
    """Darken the floor of the 480x320 `image` under the object's soft shadow, in place.

    Shadows are soft, so 1x resolution is enough; objects are drawn over them afterwards.
    """
    a, b, radius = _shadow_segment(obj)
    reach = radius + 0.4
    # The capsule lies in the hull of the squares around its ends; so does its image.
    square = np.array([[-reach, -reach], [-reach, reach], [reach, -reach], [reach, reach]])
    ends = np.concatenate([a + square, b + square])
    pts = scenes.project_points(np.column_stack([ends, np.zeros(len(ends))]))[:, :2]
    y0, x0 = (max(int(v), 0) for v in pts.min(axis=0)[::-1])
    y1, x1 = (int(v) + 1 for v in pts.max(axis=0)[::-1])
    if y1 <= y0 or x1 <= x0:
        return
    g = _studio()[1][y0:y1, x0:x1]
    gx, gy = g[..., 0] - np.float32(a[0]), g[..., 1] - np.float32(a[1])
    abx, aby = float(b[0] - a[0]), float(b[1] - a[1])
    frac = np.clip((gx * abx + gy * aby) / max(abx * abx + aby * aby, 1e-9), 0.0, 1.0)
    dist = np.hypot(gx - frac * abx, gy - frac * aby)
    soft = 0.06 + 0.22 * frac  # penumbra widens away from the contact point
    cover = np.clip((radius + soft - dist) / (2 * soft), 0.0, 1.0)
    cover *= cover * (3 - 2 * cover)  # smoothstep
    # Contact shadow: the floor right under the object gets less of every light.
    x, y, _ = obj["3d_coords"]
    gap = np.hypot(g[..., 0] - np.float32(x), g[..., 1] - np.float32(y))
    gap = np.maximum(gap - np.float32(clevr.SIZES[obj["size"]]), 0.0) * (1 / 0.18)
    keep = (1 - SHADOW_STRENGTH * cover * (1 - 0.35 * frac)) * (1 - 0.22 * np.exp(-gap * gap))
    region = image[y0:y1, x0:x1]
    region[...] = region * keep[..., None] + 0.5


def _environment(reflected: np.ndarray, height: np.ndarray) -> np.ndarray:
    """Studio seen in mirror directions [N, 3] from surface points `height` [N] above the floor.

    Below the horizon a mirror shows the floor, dark near the object (its own contact shadow)
    and lighter farther away; above it, a bright sky and softbox. The sharp horizon and the
    floor gradient are what make metal read as a mirror.
    """
    up = reflected[:, 2]
    sky = 0.45 + 0.5 * np.sqrt(np.clip(up, 0.0, 1.0))
    sky += 1.1 * np.clip(reflected @ _KEY32, 0.0, 1.0) ** 12
    sky += 0.5 * np.clip((up - 0.45) * 5.0, 0.0, 1.0)  # overhead softbox
    # Horizontal distance from the surface point to the floor point it reflects.
    flat = np.hypot(reflected[:, 0], reflected[:, 1])
    reach = height * flat / np.maximum(-up, 0.05)
    floor = 0.42 - 0.34 * np.exp(-reach * 2.5)
    horizon = np.clip(up * (1 / 0.04) + 0.5, 0.0, 1.0)
    # A tall strip light on the key side: it lights a vertical band on curved metal and
    # a whole face of a metal cube turned towards it.
    across = (reflected[:, :2] @ _KEY_AZIMUTH32) / (flat + 1e-6)
    strip = 0.7 * np.clip(across, 0.0, 1.0) ** 16
    return floor + horizon * (sky - floor) + strip


def _shade(
    obj: dict[str, Any], normals: np.ndarray, view: np.ndarray, height: np.ndarray
) -> np.ndarray:
    """RGB in [0, 1] of N surface pixels of `obj`.

    Args: unit normals [N, 3], unit vectors towards the eye [N, 3], heights above the floor [N].
    """
    albedo = np.asarray(clevr.COLORS[obj["color"]], dtype=np.float32) * (1 / 255)
    if obj["material"] == "metal":
        n_dot_v = np.clip(np.einsum("ij,ij->i", normals, view), 0.0, 1.0)
        reflected = 2 * n_dot_v[:, None] * normals - view
        env = _environment(reflected, height)
        spec = 1.6 * np.clip(reflected @ _KEY32, 0.0, 1.0) ** 60
        # Metal tints what it reflects; Fresnel lets grazing angles mirror the studio untinted.
        fresnel = (1 - n_dot_v) ** 5
        tinted = (0.12 + 0.95 * env) * (1 - fresnel)
        rgb = tinted[:, None] * albedo + (0.6 * env * fresnel + spec)[:, None]
    else:
        light = AMBIENT + 0.08 * normals[:, 2]  # sky light from above
        for direction, power in _LIGHTS32:
            light += power * np.clip(normals @ direction, 0.0, 1.0)
        # Rubber has a faint broad sheen, nothing like metal's highlights.
        light += 0.05 * np.clip(normals @ _HALFWAY32, 0.0, 1.0) ** 10
        rgb = light[:, None] * albedo
    np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb


def render_scene(scene: dict[str, Any]) -> Image.Image:
    """Render a scene dict (CLEVR format) to a 480x320 RGBA image with alpha 255.

    Uses only each object's shape, size, color, material, 3d_coords and rotation, so a scene
    read back from JSON renders to the same bytes.
    """
    objects = scene["objects"]
    for k, obj in enumerate(objects):
        for key, vocabulary in clevr.ATTRIBUTES.items():
            if obj.get(key) not in vocabulary:
                raise ValueError(f"object {k}: {key}={obj.get(key)!r} is not one of {vocabulary}")
    floor = _studio()[0].copy()
    for obj in objects:
        _draw_shadow(floor, obj)
    image = Image.fromarray(floor)
    if objects:
        top, left, patch = _draw_objects(floor, objects)
        image.paste(patch, (left, top))
    return image.convert("RGBA")


def _draw_objects(floor: np.ndarray, objects: list[dict[str, Any]]) -> tuple[int, int, Image.Image]:
    """Ray-cast and shade the objects at SUPERSAMPLE x resolution over the floor.

    Only the box that holds every object is supersampled; returns its top-left corner in the
    480x320 image and the downsampled patch.
    """
    s = SUPERSAMPLE
    boxes = [scenes.object_bbox(obj, s) for obj in objects]
    top, left = min(b[0] for b in boxes) // s, min(b[2] for b in boxes) // s
    bottom, right = -(-max(b[1] for b in boxes) // s), -(-max(b[3] for b in boxes) // s)
    # The floor is smooth: repeat its pixels, so downsampling gives it back exactly.
    region = floor[top:bottom, left:right]
    h, w = region.shape[:2]
    canvas = np.empty((h, s, w, s, 3), dtype=np.uint8)
    for dx in range(s):
        canvas[:, 0, :, dx] = region
    canvas[:, 1:] = canvas[:, :1]
    flat_canvas = canvas.reshape(h * s * w * s, 3)
    ids, depth, _ = scenes.object_id_buffer(objects, s)
    rays, flat_depth = scenes.ray_directions(s).reshape(-1, 3), depth.ravel()
    full_width = ids.shape[1]
    camera = scenes.CAMERA_POSITION.astype(np.float32)
    for k, (obj, (y0, y1, x0, x1)) in enumerate(zip(objects, boxes, strict=True)):
        where = np.flatnonzero(ids[y0:y1, x0:x1] == k)
        if where.size == 0:
            continue
        # Rows and columns of this object's visible pixels, in the full supersampled image.
        rows, cols = where // (x1 - x0) + y0, where % (x1 - x0) + x0
        pixel = rows * full_width + cols
        d = rays[pixel]
        points = camera + flat_depth[pixel, None] * d
        normals = scenes.surface_normals(obj, points, bevel=BEVEL)
        rgb = _shade(obj, normals, -d, points[:, 2])
        flat_canvas[(rows - top * s) * (w * s) + cols - left * s] = rgb * 255 + 0.5
    patch = Image.fromarray(canvas.reshape(h * s, w * s, 3)).reduce(s)
    return top, left, patch
