"""The mini-CLEVR writer: release layout and schema, answers, determinism, balance."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from filmclevr import clevr
from filmclevr.executor import execute
from filmclevr.mini import generate
from filmclevr.mini.questions import majority_baseline
from tests.helpers import ANSWERED_QUESTION_KEYS, clevr_question_vocabulary

SPLITS = {"train": 6, "val": 4, "test": 3}
KW = {"splits": SPLITS, "seed": 3, "questions_per_image": 5, "max_objects": 6}
TEST_KEYS = {"image_index", "image_filename", "split", "question", "question_index"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("gen") / "clevr"
    return root, generate.generate_mini_clevr(root, **KW)


def files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout(tree) -> None:
    root, _ = tree
    expected = {"README.txt", "LICENSE.txt", "COPYRIGHT.txt"}  # SPEC §1
    for split, n in SPLITS.items():
        expected |= {f"images/{split}/{clevr.image_filename(split, i)}" for i in range(n)}
        expected.add(str(clevr.questions_path("", split)))
    expected |= {str(clevr.scenes_path("", s)) for s in ("train", "val")}
    assert set(files(root)) == expected  # no test scenes, no temporary files
    assert not list(root.parent.glob(".clevr*"))
    assert "CC BY 4.0" in (root / "LICENSE.txt").read_text()
    copyright_text = (root / "COPYRIGHT.txt").read_text()
    assert "filmclevr" in copyright_text and "CC BY 4.0" in copyright_text
    assert f"seed {KW['seed']}" in copyright_text


def test_images_are_480x320_rgba(tree) -> None:
    root, _ = tree
    for split, n in SPLITS.items():
        for i in range(n):
            with Image.open(clevr.image_path(root, split, i)) as image:
                assert image.format == "PNG" and image.size == (480, 320) and image.mode == "RGBA"
                assert (np.asarray(image)[..., 3] == 255).all()


def test_question_files_follow_the_release_schema(tree) -> None:
    root, stats = tree
    for split, n in SPLITS.items():
        document = json.loads(clevr.questions_path(root, split).read_text())
        assert set(document) == {"info", "questions"}
        info = document["info"]
        assert info["split"] == split and info["version"] == "1.0"
        assert "CC BY 4.0" in info["license"] and info["generator"] == "filmclevr mini-CLEVR"
        raw = document["questions"]
        assert len(raw) == stats["splits"][split]["questions"] >= 0.9 * n * 5
        assert [q["question_index"] for q in raw] == list(range(len(raw)))
        for q in raw:
            assert set(q) == (TEST_KEYS if split == "test" else ANSWERED_QUESTION_KEYS)
            assert q["split"] == split and 0 <= q["image_index"] < n
            assert q["image_filename"] == clevr.image_filename(split, q["image_index"])
            assert isinstance(q["question"], str) and q["question"].endswith("?")
            if split != "test":
                assert isinstance(q["answer"], str) and q["answer"] in clevr.ANSWERS
                assert isinstance(q["question_family_index"], int)
                for node in q["program"]:
                    assert set(node) == {"function", "inputs", "value_inputs"}
                    assert node["function"] in clevr.FUNCTIONS


def test_answers_re_execute_on_the_scene_files(tree) -> None:
    root, _ = tree
    for split in ("train", "val"):
        scenes = clevr.read_scenes(clevr.scenes_path(root, split))
        assert [s["image_index"] for s in scenes] == list(range(SPLITS[split]))
        document = json.loads(clevr.scenes_path(root, split).read_text())
        assert document["info"]["split"] == split
        for scene in scenes:
            assert {"split", "image_index", "image_filename", "objects", "directions"} <= set(scene)
            assert set(scene["relationships"]) == set(clevr.RELATIONS)
        for q in clevr.read_questions(clevr.questions_path(root, split)):
            assert execute(q["program"], scenes[q["image_index"]]) == q["answer"]


def test_images_show_the_scene_file(tree) -> None:
    from filmclevr.mini.render import render_scene

    root, _ = tree
    scene = clevr.read_scenes(clevr.scenes_path(root, "val"))[1]
    with Image.open(clevr.image_path(root, "val", 1)) as stored:
        assert np.array_equal(np.asarray(stored), np.asarray(render_scene(scene)))


def test_stats(tree) -> None:
    root, stats = tree
    assert stats["families"] == len(generate.FAMILIES)
    assert stats["images_per_second"] > 0
    # The baseline is the Q-type prior of the written train answers, scored on val. That it
    # stays at most 50% (SPEC: answers must need the image) needs more than this tree's 30
    # train questions: test_majority_baseline_at_most_half_on_generated_scenes checks it.
    train, val = (clevr.read_questions(clevr.questions_path(root, s)) for s in ("train", "val"))
    assert stats["majority_baseline_val"] == round(majority_baseline(train, val), 4)


def test_first_split_trains_second_validates(tmp_path) -> None:
    """CoGenT-style names: the baseline uses the first two splits; only test* is public."""
    splits = {"trainA": 3, "valB": 2, "testA": 1}
    stats = generate.generate_mini_clevr(
        tmp_path / "c", splits=splits, seed=1, questions_per_image=4, max_objects=5
    )
    read = {s: clevr.read_questions(clevr.questions_path(tmp_path / "c", s)) for s in splits}
    assert stats["majority_baseline_val"] == round(
        majority_baseline(read["trainA"], read["valB"]), 4
    )
    assert clevr.scenes_path(tmp_path / "c", "valB").is_file()
    assert not clevr.scenes_path(tmp_path / "c", "testA").exists()
    assert all("answer" not in q for q in read["testA"])
    assert "README.txt" in {p.name for p in (tmp_path / "c").iterdir()}
    # The test split second: nothing to validate on.
    assert (
        generate.generate_mini_clevr(
            tmp_path / "d", splits={"train": 1, "test": 1}, seed=1, questions_per_image=2
        )["majority_baseline_val"]
        is None
    )


def test_same_seed_same_bytes_and_workers_do_not_matter(tree, tmp_path) -> None:
    root, _ = tree
    generate.generate_mini_clevr(tmp_path / "serial", **KW)
    generate.generate_mini_clevr(tmp_path / "parallel", **KW, workers=2)
    assert files(tmp_path / "serial") == files(root)
    assert files(tmp_path / "parallel") == files(root)
    other = generate.generate_mini_clevr(tmp_path / "other", **{**KW, "seed": 4})
    assert other["splits"]["train"]["images"] == SPLITS["train"]
    assert files(tmp_path / "other") != files(root)


def test_a_mapping_mix_is_asked_and_recorded_in_the_question_files(tmp_path) -> None:
    mix = {"compare_attribute": 1}
    stats = generate.generate_mini_clevr(
        tmp_path / "c", splits={"train": 4}, seed=2, questions_per_image=3, question_mix=mix
    )
    info, qs = clevr.read_question_file(clevr.questions_path(tmp_path / "c", "train"))
    assert info["question_mix"] == mix
    assert qs and {clevr.question_type(q["program"]) for q in qs} == {"compare_attribute"}
    types = stats["splits"]["train"]["question_types"]
    assert types["compare_attribute"] == len(qs) and sum(types.values()) == len(qs)


def test_a_split_can_have_its_own_scenes_and_questions(tmp_path) -> None:
    """A curriculum's phase split beside CLEVR's splits: only it changes, and its files say so."""
    own = {"min_objects": 2, "max_objects": 2, "questions_per_image": 2,
           "question_mix": {"compare_attribute": 1}}  # fmt: skip
    kw = {"splits": {"train": 3, "two": 3}, "seed": 2, "questions_per_image": 4}
    generate.generate_mini_clevr(tmp_path / "plain", **kw)
    generate.generate_mini_clevr(tmp_path / "c", **kw, split_settings={"two": own})
    plain, tree = files(tmp_path / "plain"), files(tmp_path / "c")
    changed = {name for name in tree if tree[name] != plain.get(name)}
    assert changed and all("two" in name or name == "README.txt" for name in changed)
    scenes = clevr.read_scenes(clevr.scenes_path(tmp_path / "c", "two"))
    assert [len(s["objects"]) for s in scenes] == [2, 2, 2]
    info, qs = clevr.read_question_file(clevr.questions_path(tmp_path / "c", "two"))
    assert info["objects"] == [2, 2] and info["question_mix"] == own["question_mix"]
    assert {clevr.question_type(q["program"]) for q in qs} == {"compare_attribute"}
    assert all(n <= 2 for n in Counter(q["image_index"] for q in qs).values())
    readme = (tmp_path / "c" / "README.txt").read_text()
    assert "two: 3 / 6 (questions_per_image 2, min_objects 2, max_objects 2, question_mix" in readme


def test_rerun_replaces_the_tree(tmp_path) -> None:
    out = tmp_path / "clevr"
    (out / "images" / "stale").mkdir(parents=True)
    generate.generate_mini_clevr(out, splits={"val": 1}, seed=0, questions_per_image=2)
    assert not (out / "images" / "stale").exists()
    assert clevr.image_path(out, "val", 0).is_file()


def test_failure_leaves_nothing(tmp_path, monkeypatch) -> None:
    import filmclevr.mini.render

    def broken(scene):
        return Image.new("RGB", (64, 64))

    monkeypatch.setattr(filmclevr.mini.render, "render_scene", broken)
    with pytest.raises(ValueError, match="expected"):
        generate.generate_mini_clevr(tmp_path / "clevr", splits={"val": 2}, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_generation_resumes_with_the_images_it_rendered(tmp_path, monkeypatch):
    kw = {"splits": {"train": 4, "val": 3}, "seed": 5, "questions_per_image": 3}
    generate.generate_mini_clevr(tmp_path / "fresh" / "clevr", **kw)
    render = generate.render_image
    rendered = []

    def counted(scene, look="mini", fail_at=None):
        if len(rendered) == fail_at:
            raise KeyboardInterrupt  # as a killed run stops
        rendered.append(scene["image_filename"])
        return render(scene, look)

    out, kept_root = tmp_path / "clevr", tmp_path / ".clevr.rendered"
    monkeypatch.setattr(generate, "render_image", lambda s, look: counted(s, look, fail_at=5))
    with pytest.raises(KeyboardInterrupt):
        generate.generate_mini_clevr(out, **kw)
    assert not out.exists()
    assert len(list(kept_root.rglob("*.png"))) == 5  # the 4 train images and 1 of val

    rendered.clear()
    monkeypatch.setattr(generate, "render_image", counted)
    generate.generate_mini_clevr(out, **kw)
    assert rendered == ["CLEVR_val_000001.png", "CLEVR_val_000002.png"]  # only the missing ones
    assert files(out) == files(tmp_path / "fresh" / "clevr")  # the same bytes as in one go
    assert not kept_root.exists()  # removed once the tree is complete


def test_kept_images_of_other_settings_are_never_reused(tmp_path, monkeypatch):
    kw = {"splits": {"val": 3}, "questions_per_image": 2}
    render = generate.render_image
    rendered = []

    def counted(scene, look="mini", fail_at=None):
        if len(rendered) == fail_at:
            raise KeyboardInterrupt
        rendered.append(scene["image_filename"])
        return render(scene, look)

    monkeypatch.setattr(generate, "render_image", lambda s, look: counted(s, look, fail_at=2))
    with pytest.raises(KeyboardInterrupt):
        generate.generate_mini_clevr(tmp_path / "clevr", seed=1, **kw)
    rendered.clear()
    monkeypatch.setattr(generate, "render_image", counted)
    generate.generate_mini_clevr(tmp_path / "clevr", seed=2, **kw)  # another seed
    assert len(rendered) == 3
    generate.generate_mini_clevr(tmp_path / "seed1", seed=1, **kw)
    assert files(tmp_path / "clevr") != files(tmp_path / "seed1")
    assert generate.rendered_key("val", 1, 3, 10, "mini") != generate.rendered_key(
        "val", 1, 3, 10, "clevr"
    )


def test_kept_images_are_rendered_again_after_an_edit_of_what_clevr_py_says(tmp_path, monkeypatch):
    """The renderer and the scene sampler read colours, sizes, shapes, materials and CoGenT's
    palettes from clevr.py, whose edit must not leave the kept images of the old values."""
    kw = {"splits": {"val": 2}, "seed": 0, "questions_per_image": 2}
    render = generate.render_image

    def killed_at_second(scene, look="mini"):
        if scene["image_index"] == 1:
            raise KeyboardInterrupt
        return render(scene, look)

    with monkeypatch.context() as m:
        m.setattr(generate, "render_image", killed_at_second)
        with pytest.raises(KeyboardInterrupt):
            generate.generate_mini_clevr(tmp_path / "clevr", **kw)
    assert len(list((tmp_path / ".clevr.rendered").rglob("*.png"))) == 1
    inverted = {name: tuple(255 - c for c in rgb) for name, rgb in clevr.COLORS.items()}
    monkeypatch.setattr(clevr, "COLORS", inverted)
    generate.generate_mini_clevr(tmp_path / "clevr", **kw)
    generate.generate_mini_clevr(tmp_path / "fresh", **kw)
    assert files(tmp_path / "clevr") == files(tmp_path / "fresh")
    monkeypatch.undo()

    def key(split: str) -> str:
        return generate.rendered_key(split, 0, 3, 10, "mini")

    before = {split: key(split) for split in ("val", "trainA", "valB")}
    palettes = {**clevr.COGENT_COLORS["A"], "cube": ("gray", "blue", "brown", "red")}
    edits = [
        ("COLORS", {**clevr.COLORS, "red": (200, 0, 0)}),
        ("COLORS", dict(reversed(clevr.COLORS.items()))),  # drawn from in another order
        ("SIZES", {**clevr.SIZES, "small": 0.3}),
        ("SHAPES", clevr.SHAPES[::-1]),
        ("MATERIALS", clevr.MATERIALS[::-1]),
        ("COGENT_COLORS", {**clevr.COGENT_COLORS, "A": palettes}),
    ]
    for name, value in edits:
        with monkeypatch.context() as m:
            m.setattr(clevr, name, value)
            changed = {split for split, was in before.items() if key(split) != was}
            assert changed == ({"trainA"} if name == "COGENT_COLORS" else set(before)), name


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"splits": {}}, "splits"),
        ({"splits": {"val": -1}}, "image count"),
        ({"splits": {"va/l": 1}}, "split name"),
        ({"splits": {"val": 1}, "workers": 0}, "workers"),
        ({"splits": {"val": 1}, "questions_per_image": 0}, "questions_per_image"),
        ({"splits": {"val": 1}, "question_mix": "even"}, "question_mix"),
        ({"splits": {"val": 1}, "question_mix": {"colour": 1}}, "unknown question type"),
        ({"splits": {"val": 1}, "split_settings": {"train": {"min_objects": 2}}}, "no such split"),
        ({"splits": {"val": 1}, "split_settings": {"val": {"objects": 2}}}, "val: unknown objects"),
        ({"splits": {"val": 1}, "split_settings": {"val": {"max_objects": 2}}}, "'val': objects"),
        ({"splits": {"val": 1}, "split_settings": {"val": {"question_mix": "x"}}}, "'val': "),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        generate.generate_mini_clevr(tmp_path / "x", **{"seed": 0, **kwargs})
    assert not (tmp_path / "x").exists()


def test_derive_seed_is_stable() -> None:
    assert generate.derive_seed(0, "train", 5) == generate.derive_seed(0, "train", 5)
    assert generate.derive_seed(0, "train", 5) != generate.derive_seed(0, "val", 5)
    # Pinned: a change would silently change every generated dataset.
    assert generate.derive_seed(0, "train", "scene", 5) == 0x5375A0E2128280B7


def test_majority_baseline_at_most_half_on_generated_scenes() -> None:
    """The generator's own scenes and questions (rendering skipped): train 400, val 150."""
    questions = {}
    for split, n in (("train", 400), ("val", 150)):
        scenes = [generate.make_scene(0, split, i) for i in range(n)]
        questions[split] = generate.make_questions(
            scenes, seed=0, split=split, questions_per_image=10
        )
    assert majority_baseline(questions["train"], questions["val"]) <= 0.5


def test_every_generated_word_is_in_clevrs_question_vocabulary() -> None:
    """A model trained on mini-CLEVR reads genuine CLEVR questions and vice versa: the generator
    emits no word outside CLEVR's 93-token question vocabulary (SPEC §5)."""
    from filmclevr.tokenize import tokenize

    allowed = set(clevr_question_vocabulary())
    assert len(allowed) == 93
    used: Counter[str] = Counter()
    for seed, split in ((0, "train"), (1, "val"), (2, "trainA")):
        scenes = [generate.make_scene(seed, split, i) for i in range(400)]
        for q in generate.make_questions(scenes, seed=seed, split=split, questions_per_image=10):
            used.update(tokenize(q["question"]))
    assert sum(used.values()) > 100_000  # 12,000 questions
    assert {w: n for w, n in used.items() if w not in allowed} == {}


def test_mini_cogent_has_the_release_layout_and_each_condition_its_colors(tmp_path) -> None:
    splits = {"trainA": 8, "valA": 3, "valB": 3, "testA": 2, "testB": 2}
    root = tmp_path / "cogent"
    generate.generate_mini_clevr(root, splits=splits, seed=2, questions_per_image=3)
    for split, count in splits.items():  # CLEVR_CoGenT_v1.0's names, split by split
        names = sorted(p.name for p in (root / "images" / split).iterdir())
        assert names == [f"CLEVR_{split}_{i:06d}.png" for i in range(count)]
        questions = json.loads(clevr.questions_path(root, split).read_text())
        assert clevr.dataset_name(questions["info"], split) == "mini-CoGenT"
        public = split.startswith("test")
        assert clevr.scenes_path(root, split).exists() != public  # test splits: no scenes
        assert all(("answer" in q) != public for q in questions["questions"])
    cubes_and_cylinders = {"A": set(), "B": set()}
    for split in ("trainA", "valA", "valB"):
        for scene in clevr.read_scenes(clevr.scenes_path(root, split)):
            for o in scene["objects"]:
                condition = split[-1]
                assert o["color"] in clevr.COGENT_COLORS[condition][o["shape"]], (split, o)
                if o["shape"] != "sphere":
                    cubes_and_cylinders[condition].add((o["color"], o["shape"]))
    assert not cubes_and_cylinders["A"] & cubes_and_cylinders["B"]
    assert (root / "README.txt").read_text().startswith("mini-CLEVR-CoGenT, generated")


def test_clevr_and_cogent_split_names_do_not_mix(tmp_path) -> None:
    with pytest.raises(ValueError, match="mix CLEVR's split names with CoGenT's"):
        generate.generate_mini_clevr(tmp_path / "x", splits={"train": 2, "valB": 1}, seed=0)
