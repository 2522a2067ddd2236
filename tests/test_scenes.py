"""Mini-CLEVR scene sampling: CLEVR scene format, placement rules, relationships, visibility."""

from __future__ import annotations

import itertools
import json
import math
import random

import numpy as np
import pytest

from filmclevr import clevr
from filmclevr.mini import scenes
from tests.helpers import ground_point, make_object

SCENE_KEYS = {"split", "image_index", "image_filename", "objects", "directions", "relationships"}
OBJECT_KEYS = {"color", "size", "shape", "material", "3d_coords", "pixel_coords", "rotation"}


@pytest.fixture(scope="module")
def sampled() -> list[dict]:
    rng = random.Random(1234)
    return [scenes.sample_scene(rng, "train", i) for i in range(120)]


# --- Camera and directions ----------------------------------------------------------------------
def test_directions_are_clevr_style_unit_vectors():
    d = scenes.camera_directions()
    assert set(d) == {"left", "right", "front", "behind", "above", "below"}
    for name in ("left", "right", "front", "behind"):
        assert d[name][2] == 0.0  # ground-plane directions
        assert math.isclose(np.linalg.norm(d[name]), 1.0, abs_tol=1e-5)
    for a, b in (("left", "right"), ("front", "behind"), ("above", "below")):
        assert np.allclose(d[a], -np.asarray(d[b]))
    assert d["above"] == [0.0, 0.0, 1.0]
    assert abs(np.dot(d["left"], d["behind"])) < 1e-5


def test_projection_matches_directions():
    """The origin is the image centre; right moves right, behind moves up and away."""
    px, py, depth = scenes.project((0.0, 0.0, 0.0))
    assert (px, py) == pytest.approx((240.0, 160.0))
    right = scenes.project((*ground_point(2.0, 0.0), 0.0))
    behind = scenes.project((*ground_point(0.0, 2.0), 0.0))
    assert right[0] > px + 50 and right[1] == pytest.approx(py, abs=1e-3)
    assert behind[1] < py - 30 and behind[2] > depth
    with pytest.raises(ValueError, match="behind the camera"):
        scenes.project(2 * scenes.CAMERA_POSITION)


# --- Relationships ------------------------------------------------------------------------------
def test_relationships_follow_the_threshold_rule():
    rng = random.Random(0)
    # Offsets near the 0.2 threshold on purpose.
    coords = [[rng.uniform(-1, 1), rng.uniform(-1, 1), 0.35] for _ in range(12)]
    coords.append([coords[0][0] + 0.19, coords[0][1], 0.35])
    coords.append([coords[0][0] + 0.21, coords[0][1], 0.35])
    objects = [{"3d_coords": c} for c in coords]
    directions = {"left": [-1.0, 0, 0], "right": [1.0, 0, 0], "front": [0, -1.0, 0],
                  "behind": [0, 1.0, 0], "above": [0, 0, 1.0], "below": [0, 0, -1.0]}  # fmt: skip
    rel = scenes.compute_relationships(objects, directions)
    assert set(rel) == set(clevr.RELATIONS)
    for name in clevr.RELATIONS:
        for i, ci in enumerate(coords):
            expected = [
                j
                for j, cj in enumerate(coords)
                if j != i and np.dot(np.subtract(cj, ci), directions[name]) > 0.2
            ]
            assert rel[name][i] == expected
    assert 12 not in rel["right"][0] and 13 in rel["right"][0]
    with pytest.raises(ValueError, match="lacks 'right'"):
        scenes.compute_relationships(objects, {"left": [1, 0, 0]})


def test_sampled_relationships_are_consistent_and_unambiguous(sampled):
    for scene in sampled:
        rel, n = scene["relationships"], len(scene["objects"])
        assert rel == scenes.compute_relationships(scene["objects"], scene["directions"])
        for i, j in itertools.permutations(range(n), 2):
            assert (j in rel["left"][i]) == (i in rel["right"][j])
            assert (j in rel["front"][i]) == (i in rel["behind"][j])
            # The margin makes every pair fall on exactly one side of each axis.
            assert (j in rel["left"][i]) != (j in rel["right"][i])
            assert (j in rel["front"][i]) != (j in rel["behind"][i])
        for name in clevr.RELATIONS:
            assert all(lst == sorted(lst) and i not in lst for i, lst in enumerate(rel[name]))


# --- Scene format and placement -----------------------------------------------------------------
def test_scene_format_and_vocabulary(sampled):
    for index, scene in enumerate(sampled):
        assert set(scene) == SCENE_KEYS
        assert scene["split"] == "train" and scene["image_index"] == index
        assert scene["image_filename"] == f"CLEVR_train_{index:06d}.png"
        for obj in scene["objects"]:
            assert set(obj) == OBJECT_KEYS
            for key, vocabulary in clevr.ATTRIBUTES.items():
                assert obj[key] in vocabulary
            assert len(obj["3d_coords"]) == 3 and len(obj["pixel_coords"]) == 3
            assert 0.0 <= obj["rotation"] <= 360.0
    assert json.loads(json.dumps(sampled)) == sampled  # plain JSON types only


def test_attributes_and_counts_cover_the_vocabulary(sampled):
    counts = [len(s["objects"]) for s in sampled]
    assert min(counts) >= 3 and max(counts) <= 10
    assert {3, 10} <= set(counts)
    objects = [obj for s in sampled for obj in s["objects"]]
    for key, vocabulary in clevr.ATTRIBUTES.items():
        assert {obj[key] for obj in objects} == set(vocabulary)


def test_object_count_bounds_are_respected():
    rng = random.Random(5)
    for lo, hi in ((1, 1), (10, 10), (4, 6)):
        for i in range(5):
            n = len(scenes.sample_scene(rng, "val", i, min_objects=lo, max_objects=hi)["objects"])
            assert lo <= n <= hi
    for lo, hi in ((0, 3), (5, 4)):
        with pytest.raises(ValueError, match="min_objects"):
            scenes.sample_scene(rng, "val", 0, min_objects=lo, max_objects=hi)


def test_objects_rest_on_the_ground_with_gap_and_margin(sampled):
    axes = [scenes.camera_directions()[k][:2] for k in ("right", "behind")]
    for scene in sampled:
        objects = scene["objects"]
        for obj in objects:
            assert obj["3d_coords"][2] == pytest.approx(
                scenes.half_height(obj["shape"], obj["size"])
            )
        for a, b in itertools.combinations(objects, 2):
            delta = np.subtract(a["3d_coords"][:2], b["3d_coords"][:2])
            gap = np.linalg.norm(delta) - clevr.SIZES[a["size"]] - clevr.SIZES[b["size"]]
            assert gap >= scenes.MIN_GAP
            for axis in axes:
                assert abs(np.dot(delta, axis)) >= scenes.MARGIN


def test_pixel_coords_are_the_projected_centres_inside_the_frame(sampled):
    for scene in sampled:
        for obj in scene["objects"]:
            px, py, depth = scenes.project(obj["3d_coords"])
            assert obj["pixel_coords"][:2] == [round(px), round(py)]
            assert obj["pixel_coords"][2] == pytest.approx(depth, abs=1e-3)
            assert 0 <= px < 480 and 0 <= py < 320


def test_every_object_is_visible(sampled):
    for scene in sampled:
        counts = scenes.visible_pixel_counts(scene["objects"])
        assert min(counts) >= scenes.MIN_VISIBLE_PIXELS


def test_object_id_buffer_detects_a_hidden_object():
    """A small sphere just behind a large cylinder is hidden; alone it is visible."""
    near = make_object("cylinder", "large", *ground_point(0.0, -1.0))
    hidden = make_object("sphere", "small", *ground_point(0.0, 0.3))  # gap 1.3 - 1.05 > 0
    alone = scenes.visible_pixel_counts([hidden])[0]
    assert alone >= scenes.MIN_VISIBLE_PIXELS
    assert scenes.visible_pixel_counts([near, hidden])[1] < scenes.MIN_VISIBLE_PIXELS
    ids, depth, footprint = scenes.object_id_buffer([hidden, near])  # order does not matter
    assert not (ids == 0).any() and footprint[0] == alone
    assert np.isinf(depth[ids == -1]).all() and np.isfinite(depth[ids >= 0]).all()
    # Moved aside, the sphere shows again.
    aside = make_object("sphere", "small", *ground_point(1.5, 0.3))
    assert scenes.visible_pixel_counts([near, aside])[1] >= scenes.MIN_VISIBLE_PIXELS


def test_sampling_is_deterministic():
    a = [scenes.sample_scene(random.Random(7), "val", 3) for _ in range(2)]
    assert a[0] == a[1]
    assert scenes.sample_scene(random.Random(8), "val", 3) != a[0]


def test_scene_sizes_stay_large_enough_for_downsizing(sampled):
    """Smallest object far back still spans about 20+ px at 480x320 (downstream 64x64 CNN)."""
    heights = []
    for scene in sampled[:40]:
        for obj in scene["objects"]:
            _, t = scenes.intersect(obj)
            heights.append(int(np.isfinite(t).any(axis=1).sum()))
    assert min(heights) >= 20


# --- CLEVR-CoGenT's conditions ------------------------------------------------------------------
def test_cogent_conditions_keep_to_their_palettes():
    rng = random.Random(7)
    seen: dict[str, set[tuple[str, str]]] = {}
    for condition in ("A", "B"):
        objects = [
            o
            for i in range(150)
            for o in scenes.sample_scene(rng, f"val{condition}", i, condition=condition)["objects"]
        ]
        seen[condition] = {(o["color"], o["shape"]) for o in objects}
    palette_1 = {"gray", "blue", "brown", "yellow"}
    palette_2 = {"red", "green", "purple", "cyan"}
    allowed = {
        "A": {"cube": palette_1, "cylinder": palette_2, "sphere": palette_1 | palette_2},
        "B": {"cube": palette_2, "cylinder": palette_1, "sphere": palette_1 | palette_2},
    }
    for condition, pairs in seen.items():
        # Nothing forbidden, and every allowed pair drawn (about 60 objects per pair).
        expected = {(c, s) for s, colors in allowed[condition].items() for c in colors}
        assert pairs == expected, condition
    # B is A's swap: its cubes and cylinders are exactly the pairs A never shows.
    assert not {p for p in seen["B"] if p[1] != "sphere"} & seen["A"]


def test_plain_clevr_scenes_mix_every_color_and_shape(sampled):
    pairs = {(o["color"], o["shape"]) for scene in sampled for o in scene["objects"]}
    assert len(pairs) == len(clevr.COLORS) * len(clevr.SHAPES)


def test_unknown_condition_is_refused():
    with pytest.raises(ValueError, match="condition must be None, 'A' or 'B'"):
        scenes.sample_scene(random.Random(0), "valC", 0, condition="C")
