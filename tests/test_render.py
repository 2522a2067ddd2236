"""Mini-CLEVR renderer: image format, determinism, perspective, occlusion, materials, colors."""

from __future__ import annotations

import copy
import json
import random

import numpy as np
import pytest

from filmclevr import clevr
from filmclevr.mini import render, scenes
from tests.helpers import object_at


def scene_of(*objects: dict) -> dict:
    directions = scenes.camera_directions()
    return {
        "split": "val",
        "image_index": 0,
        "image_filename": "CLEVR_val_000000.png",
        "objects": list(objects),
        "directions": directions,
        "relationships": scenes.compute_relationships(objects, directions),
    }


def pixels(obj: dict) -> np.ndarray:
    return np.asarray(render.render_scene(scene_of(obj)))[..., :3].astype(int)


def colored_mask(rgb: np.ndarray, color: str, min_chroma: int = 40) -> np.ndarray:
    """Pixels whose dominant channel is the color's and that are clearly not floor gray."""
    target = np.argmax(clevr.COLORS[color])
    chroma = rgb.max(axis=-1) - rgb.min(axis=-1)
    return (rgb.argmax(axis=-1) == target) & (chroma > min_chroma)


def disc(obj: dict, radius: int) -> tuple[slice, slice]:
    px, py, _ = obj["pixel_coords"]
    return slice(py - radius, py + radius + 1), slice(px - radius, px + radius + 1)


@pytest.fixture(scope="module")
def sampled() -> list[dict]:
    rng = random.Random(99)
    return [scenes.sample_scene(rng, "train", i) for i in range(6)]


def test_image_format(sampled):
    for scene in sampled[:3]:
        image = render.render_scene(scene)
        assert image.mode == "RGBA" and image.size == (480, 320)
        alpha = np.asarray(image)[..., 3]
        assert (alpha == 255).all()


def test_rendering_is_deterministic_and_survives_json(sampled):
    scene = sampled[0]
    first = render.render_scene(scene).tobytes()
    assert render.render_scene(copy.deepcopy(scene)).tobytes() == first
    assert render.render_scene(json.loads(json.dumps(scene))).tobytes() == first
    assert render.render_scene(sampled[1]).tobytes() != first


def test_empty_scene_is_a_gray_studio():
    rgb = np.asarray(render.render_scene(scene_of()))[..., :3].astype(int)
    assert (rgb.max(axis=-1) - rgb.min(axis=-1)).max() <= 4  # neutral gray
    assert 60 < rgb.mean() < 200 and rgb.std() > 3  # lit like a studio, not flat


def test_object_is_drawn_at_its_pixel_coords():
    obj = object_at("sphere", "large", 0.5, 0.5, color="red")
    rgb = pixels(obj)
    ys, xs = disc(obj, 6)
    assert colored_mask(rgb[ys, xs], "red").all()
    r, g, b = rgb[ys, xs].reshape(-1, 3).mean(axis=0)
    assert r > g + 60 and r > b + 60
    # The silhouette is centred on pixel_coords (to within a pixel or two).
    mask = colored_mask(rgb, "red")
    yy, xx = np.nonzero(mask)
    assert abs(xx.mean() - obj["pixel_coords"][0]) < 2.0
    assert abs(yy.mean() - obj["pixel_coords"][1]) < 3.0


def test_pixel_coords_hit_their_object_in_sampled_scenes(sampled):
    for scene in sampled:
        ids, _, _ = scenes.object_id_buffer(scene["objects"])
        for k, obj in enumerate(scene["objects"]):
            px, py, _ = obj["pixel_coords"]
            # The centre may be hidden by a nearer object, never by a farther one.
            seen = ids[py, px]
            assert seen >= 0
            assert seen == k or scene["objects"][seen]["pixel_coords"][2] < obj["pixel_coords"][2]


def test_farther_objects_are_smaller_and_higher():
    near = object_at("cube", "large", 0.0, -2.5, color="blue")
    far = object_at("cube", "large", 0.0, 3.0, color="blue")
    near_mask, far_mask = colored_mask(pixels(near), "blue"), colored_mask(pixels(far), "blue")
    assert near_mask.sum() > 1.8 * far_mask.sum() > 0
    assert np.nonzero(far_mask)[0].mean() < np.nonzero(near_mask)[0].mean() - 100
    # Smallest case still readable once downsized: a far small sphere spans 20+ rows.
    tiny = colored_mask(pixels(object_at("sphere", "small", 0.0, 3.5, color="blue")), "blue")
    assert np.any(tiny, axis=1).sum() >= 20


def test_nearer_object_occludes_farther_one():
    near = object_at("cylinder", "large", 0.0, -1.0, color="blue")
    far = object_at("sphere", "large", 0.3, 0.8, color="red")
    for order in ((near, far), (far, near)):  # list order must not matter
        rgb = np.asarray(render.render_scene(scene_of(*order)))[..., :3].astype(int)
        ys, xs = disc(near, 8)
        assert colored_mask(rgb[ys, xs], "blue").all()
        # Where their silhouettes overlap the nearer (blue) one wins.
        ids, _, _ = scenes.object_id_buffer([far])
        alone_far = ids >= 0
        overlap = alone_far & colored_mask(pixels(near), "blue")
        assert overlap.sum() > 100
        assert colored_mask(rgb, "blue")[overlap].mean() > 0.95
        assert colored_mask(rgb, "red")[alone_far & ~overlap].mean() > 0.8


def test_metal_has_brighter_highlights_than_rubber():
    for color in ("red", "blue", "gray", "yellow"):
        peaks = {}
        for material in clevr.MATERIALS:
            obj = object_at("sphere", "large", 0.0, 0.0, color=color, material=material)
            ids, _, _ = scenes.object_id_buffer([obj])
            darkest_channel = pixels(obj)[ids == 0].min(axis=-1)
            peaks[material] = np.percentile(darkest_channel, 99.5)
        # A metal highlight is near white in every channel; rubber's brightest stays tinted.
        assert peaks["metal"] > 220 and peaks["metal"] > peaks["rubber"] + 60, (color, peaks)


@pytest.mark.parametrize("material", clevr.MATERIALS)
def test_shading_keeps_the_hue(material):
    for color, reference in clevr.COLORS.items():
        for shape in clevr.SHAPES:
            obj = object_at(shape, "large", 0.0, 0.0, color=color, material=material)
            ys, xs = disc(obj, 12)
            mean = pixels(obj)[ys, xs].reshape(-1, 3).mean(axis=0)
            cosine = mean @ reference / np.linalg.norm(mean) / np.linalg.norm(reference)
            assert cosine > 0.97, (color, shape, material, mean)


def test_shapes_and_rotation():
    """Cubes turn with `rotation`; spheres and cylinders look the same at any rotation."""
    for shape, changes in (("cube", True), ("sphere", False), ("cylinder", False)):
        a = pixels(object_at(shape, "large", 0.0, 0.0, rotation=0.0))
        b = pixels(object_at(shape, "large", 0.0, 0.0, rotation=30.0))
        differing = np.any(np.abs(a - b) > 8, axis=-1).sum()
        assert (differing > 200) == changes, (shape, differing)


def test_bad_attribute_is_rejected():
    obj = object_at("sphere", "large", 0.0, 0.0)
    obj["color"] = "pink"
    with pytest.raises(ValueError, match="color='pink'"):
        render.render_scene(scene_of(obj))
