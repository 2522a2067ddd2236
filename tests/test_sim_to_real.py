"""Tests of filmclevr.sim_to_real: a checkpoint on genuine CLEVR images beside mini-CLEVR ones.

The genuine side reads tests/data/clevr_genuine/: three genuine CLEVR v1.0 train images and
their three scene records, unmodified (CLEVR, Johnson et al. 2017, CC BY 4.0). The model is a
tiny randomly initialised FiLM network: the tests check the harness, not the model.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from filmclevr import ask, clevr, fileio, resize, sim_to_real
from filmclevr.checkpoint import CHECKPOINT_FORMAT, save_checkpoint
from filmclevr.mini import generate, generate_mini_clevr
from filmclevr.mini.generate import make_scene
from filmclevr.model import build_model
from filmclevr.tokenize import tokenize
from tests.helpers import (
    SIM_TO_REAL_IMAGE_SIZE,
    sim_to_real_params,
    tiny_film_config,
    write_vocab,
)

GENUINE = Path(__file__).parent / "data" / "clevr_genuine"
GENUINE_IMAGES = 3
QUESTIONS_PER_IMAGE = 4
IMAGE_SIZE = SIM_TO_REAL_IMAGE_SIZE
PROFILE = sim_to_real.MiniProfile(
    seed=0,
    train=sim_to_real.SplitSettings("train", questions_per_image=3, min_objects=3, max_objects=5),
    val=sim_to_real.SplitSettings("val", questions_per_image=3, min_objects=3, max_objects=5),
    image_size=IMAGE_SIZE,
    source="tiny profile",
)
FAST = {"questions_per_image": QUESTIONS_PER_IMAGE, "prior_train_images": 4, "progress": False}


def asked_questions(language: str = "mini") -> list[str]:
    """Every question the harness asks with FAST's settings, both sides, without a model."""
    mix = PROFILE.val.question_mix
    genuine = sim_to_real.genuine_side(
        sim_to_real.genuine_images(GENUINE),
        sim_to_real.question_sampler(language, sim_to_real.side_rng(0, sim_to_real.GENUINE), mix),
        IMAGE_SIZE,
        QUESTIONS_PER_IMAGE,
        progress=False,
    )
    mini = sim_to_real.mini_clevr_side(
        PROFILE,
        GENUINE_IMAGES,
        sim_to_real.question_sampler(language, sim_to_real.side_rng(0, sim_to_real.MINI), mix),
        IMAGE_SIZE,
        QUESTIONS_PER_IMAGE,
        progress=False,
    )
    return [r["question"] for r in genuine.records + mini.records]


def pick_unknown_word(questions: list[str]) -> str:
    """A word in some of the questions but not most, to leave out of the vocabulary."""
    counts: dict[str, int] = {}
    for q in questions:
        for word in set(tokenize(q.strip())):
            counts[word] = counts.get(word, 0) + 1
    return min((w for w, n in counts.items() if 0 < n <= len(questions) // 4), key=str)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A randomly initialised tiny checkpoint whose vocabulary lacks one asked word."""
    root = tmp_path_factory.mktemp("sim_to_real")
    questions = asked_questions()
    unknown = pick_unknown_word(questions)
    words = sorted({w for q in questions for w in tokenize(q.strip())} - {unknown})
    vocab = json.loads(write_vocab(root / "tokens", words).read_text())
    torch.manual_seed(0)
    config = tiny_film_config(image_size=IMAGE_SIZE)
    vocab_size, num_answers = len(vocab["question_token_to_idx"]), len(vocab["answer_token_to_idx"])
    model = build_model(config, vocab_size, num_answers)
    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "model_config": config.asdict(),
        "vocab": vocab,
        "vocab_size": vocab_size,
        "num_answers": num_answers,
        "epoch": 0,
        "model": model.state_dict(),
    }
    save_checkpoint(root / "film.pt", checkpoint)
    measurement = sim_to_real.measure(root / "film.pt", GENUINE, PROFILE, **FAST)
    return {"root": root, "model": root / "film.pt", "unknown": unknown, "m": measurement}


def percent(correct: int, total: int) -> float | None:
    return round(100.0 * correct / total, 2) if total else None


# --- The re-rendered side ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def re_rendered(tiny) -> sim_to_real.Measurement:
    """The tiny checkpoint measured with the re-rendered side, under the profile in CLEVR's look."""
    clevr_look = dataclasses.replace(PROFILE, look="clevr")
    return sim_to_real.measure(tiny["model"], GENUINE, clevr_look, re_rendered=True, **FAST)


def test_the_re_rendered_side_asks_the_genuine_sides_questions_about_re_rendered_scenes(
    re_rendered, tmp_path
):
    records = re_rendered.records
    genuine, again = records[sim_to_real.GENUINE], records[sim_to_real.RE_RENDERED]
    asked = ("question_index", "image_row", "image_index", "question", "answer", "family")
    assert [[r[k] for k in asked] for r in again] == [[r[k] for k in asked] for r in genuine]
    scene = sim_to_real.genuine_images(GENUINE)[0].scene
    drawn = sim_to_real.model_input(sim_to_real.render_mini_clevr_image(scene, "clevr"), IMAGE_SIZE)
    genuine_pixels = ask.preprocess(sim_to_real.genuine_images(GENUINE)[0].path, IMAGE_SIZE)[0]
    assert not torch.equal(drawn, genuine_pixels)  # the same scene, other pixels
    report = re_rendered.report
    assert report["pixels_difference"]["overall"] == round(
        report["sides"]["genuine"]["model"]["overall"]
        - report["sides"]["re-rendered"]["model"]["overall"],
        2,
    )
    assert "| re-rendered | genuine minus re-rendered |" in sim_to_real.markdown(report)
    paths = sim_to_real.write_outputs(re_rendered, tmp_path)  # three colour panels
    assert json.loads(paths["json"].read_text())["sides"].keys() == set(records)


def test_the_paired_test_counts_the_questions_one_side_alone_answered(re_rendered):
    genuine = re_rendered.records[sim_to_real.GENUINE]
    again = re_rendered.records[sim_to_real.RE_RENDERED]
    test = re_rendered.report["pixels_paired_test"]
    alone = [(a["correct"], b["correct"]) for a, b in zip(genuine, again, strict=True)]
    assert test["overall"]["first_only"] == alone.count((True, False))
    assert test["overall"]["second_only"] == alone.count((False, True))


def test_paired_difference_by_hand():
    def record(index, correct, function="exist"):
        return {"question_index": index, "correct": correct, "function": function,
                "type": clevr.TYPE_OF_FUNCTION[function]}  # fmt: skip

    first = [record(i, True) for i in range(10)] + [record(10, False, "count")]
    second = [record(i, i >= 9) for i in range(10)] + [record(10, True, "count")]
    test = sim_to_real.paired_difference(first, second)
    # 9 exist questions only the first side got right, 1 count question only the second
    assert test["overall"] == {"first_only": 9, "second_only": 1, "p_value": 0.0215}
    assert test["columns"]["exist"] == {"first_only": 9, "second_only": 0, "p_value": 0.0039}
    assert test["columns"]["compare_numbers"] == {"first_only": 0, "second_only": 0,
                                                  "p_value": 1.0}  # fmt: skip
    with pytest.raises(ValueError, match="same questions"):
        sim_to_real.paired_difference(first, second[::-1])


def test_re_rendering_needs_a_profile_in_clevrs_look(tiny):
    with pytest.raises(ValueError, match="tiny profile: the re-rendered side .* look is 'mini'"):
        sim_to_real.measure(tiny["model"], GENUINE, PROFILE, re_rendered=True, **FAST)


# --- Counts and scores ----------------------------------------------------------------------------
def test_counts_add_up(tiny):
    report, records = tiny["m"].report, tiny["m"].records
    assert report["genuine"]["images"] == report["mini_clevr"]["images"] == GENUINE_IMAGES
    for side in sim_to_real.SIDES:
        scores, asked = report["sides"][side], records[side]
        assert scores["images"] == GENUINE_IMAGES
        assert scores["questions"] == len(asked) <= GENUINE_IMAGES * QUESTIONS_PER_IMAGE
        assert len(asked) >= GENUINE_IMAGES  # the sampler gives every scene questions
        counts = scores["model"]["counts"]
        assert counts["overall"] == len(asked) == sum(counts["columns"].values())
        assert sum(counts["functions"].values()) == len(asked)
        assert scores["prior"]["counts"] == counts  # the prior is scored on the same questions
        assert scores["answers_outside_vocabulary"] == 0  # the tiny vocabulary has every answer
        assert [r["question_index"] for r in asked] == list(range(len(asked)))


def test_per_column_numbers_are_the_records(tiny):
    """Every accuracy of the report, recomputed by hand from the per-question records."""
    for side in sim_to_real.SIDES:
        asked, model = tiny["m"].records[side], tiny["m"].report["sides"][side]["model"]
        for record in asked:
            right = not record["unknown_words"] and record["predicted"] == record["answer"]
            assert record["correct"] == right
            assert record["type"] == clevr.TYPE_OF_FUNCTION[record["function"]]
        assert model["overall"] == percent(sum(r["correct"] for r in asked), len(asked))
        for column in clevr.QUESTION_TYPES:
            mine = [r for r in asked if r["type"] == column]
            assert model["columns"][column] == percent(sum(r["correct"] for r in mine), len(mine))
            assert model["counts"]["columns"][column] == len(mine)
        for function in sim_to_real.QUERIED_ATTRIBUTES:
            mine = [r for r in asked if r["function"] == function]
            assert model["functions"][function] == percent(
                sum(r["correct"] for r in mine), len(mine)
            )


def test_answers_are_the_executors_on_the_image_scene(tiny):
    from filmclevr.executor import execute

    scenes = {s["image_index"]: s for s in clevr.read_scenes(sim_to_real.find_scenes_file(GENUINE))}
    sampler = sim_to_real.question_sampler(
        "mini", sim_to_real.side_rng(0, sim_to_real.GENUINE), PROFILE.val.question_mix
    )
    again = []
    for index in sorted(scenes):
        for q in sampler.sample(scenes[index], QUESTIONS_PER_IMAGE):
            again.append((index, q["question"], execute(q["program"], scenes[index])))
    asked = tiny["m"].records[sim_to_real.GENUINE]
    assert [(r["image_index"], r["question"], r["answer"]) for r in asked] == again


def test_unknown_words_are_counted_and_scored_wrong(tiny):
    unknown = tiny["unknown"]
    total = 0
    for side in sim_to_real.SIDES:
        asked, scores = tiny["m"].records[side], tiny["m"].report["sides"][side]
        holding = [r for r in asked if unknown in tokenize(r["question"].strip())]
        total += len(holding)
        assert scores["unknown_word_questions"] == len(holding)
        assert all(r["unknown_words"] == [unknown] and not r["correct"] for r in holding)
        assert scores["unknown_words"] == ({unknown: len(holding)} if holding else {})
        known = [r for r in asked if not r["unknown_words"]]
        assert scores["model_known_words"]["counts"]["overall"] == len(known)
        assert scores["model_known_words"]["overall"] == percent(
            sum(r["correct"] for r in known), len(known)
        )
        # the prior over the same questions as the model's known-word numbers
        assert scores["prior_known_words"]["counts"]["overall"] == len(known)
    assert total > 0  # the vocabulary really lacks an asked word


def test_color_confusion_rows_sum_to_the_query_color_questions(tiny):
    for side in sim_to_real.SIDES:
        asked = tiny["m"].records[side]
        confusion = tiny["m"].report["sides"][side]["color_confusion"]
        matrix = np.asarray(confusion["matrix"])
        colors = confusion["true"]
        assert colors == list(clevr.ATTRIBUTES["color"])
        assert confusion["answered"] == [*colors, sim_to_real.OTHER_ANSWER]
        color_questions = [r for r in asked if r["function"] == "query_color"]
        for row, color in enumerate(colors):
            assert matrix[row].sum() == sum(r["answer"] == color for r in color_questions)
        assert matrix.sum() == len(color_questions)
        assert np.trace(matrix[:, : len(colors)]) == sum(r["correct"] for r in color_questions)


def test_color_confusion_by_hand():
    def record(answer: str, predicted: str, unknown: list[str] = ()) -> dict:
        return {
            "function": "query_color",
            "answer": answer,
            "predicted": predicted,
            "unknown_words": list(unknown),
        }

    records = [
        record("red", "red"),
        record("red", "blue"),
        record("red", "red", unknown=["crimson"]),  # scored wrong: "other"
        record("blue", "yes"),
        {"function": "count", "answer": "2", "predicted": "2", "unknown_words": []},
    ]
    confusion = sim_to_real.color_confusion(records)
    matrix = dict(zip(confusion["true"], confusion["matrix"], strict=True))
    answered = confusion["answered"]
    assert matrix["red"][answered.index("red")] == 1
    assert matrix["red"][answered.index("blue")] == 1
    assert matrix["red"][answered.index("other")] == 1
    assert matrix["blue"][answered.index("other")] == 1
    assert sum(map(sum, confusion["matrix"])) == 4


def test_prior_is_the_training_splits_q_type_prior(tmp_path):
    """The prior counts exactly the first images' questions of the generated training split."""
    generate_mini_clevr(
        tmp_path / "mini",
        splits={"train": 4, "val": 1},
        seed=PROFILE.seed,
        questions_per_image=PROFILE.train.questions_per_image,
        min_objects=PROFILE.train.min_objects,
        max_objects=PROFILE.train.max_objects,
    )
    train = clevr.read_questions(clevr.questions_path(tmp_path / "mini", "train"))
    expected = clevr.majority_answer_by_family(
        (q["question_family_index"], q["program"][-1]["function"], q["answer"]) for q in train
    )
    prior, counted = sim_to_real.training_prior(PROFILE, images=4)
    assert counted == len(train)
    for family in sorted({q["question_family_index"] for q in train}):
        function = next(
            q["program"][-1]["function"] for q in train if q["question_family_index"] == family
        )
        assert prior(family, function) == expected(family, function)
    assert prior(10_000, "count") == expected(10_000, "count")  # unseen: the function's majority
    # Another language's family 0 is not this language's family 0: its function's majority.
    other_prior, _ = sim_to_real.training_prior(PROFILE, images=4, language="other")
    assert other_prior(0, "count") == expected(10_000, "count")


def test_the_prior_says_when_it_cannot_use_the_questions_families():
    same = sim_to_real.prior_description(PROFILE, PROFILE.language, 500)
    assert "first 500 images" in same and "terminal function" not in same
    other = sim_to_real.prior_description(PROFILE, "clevr", 500)
    assert other.startswith(same) and "terminal function's most common training answer" in other


# --- How far the sample can tell ------------------------------------------------------------------
def bootstrap_record(image_row: int, correct: bool, function: str = "exist") -> dict:
    return {"image_row": image_row, "correct": correct, "type": clevr.TYPE_OF_FUNCTION[function]}


def test_the_bootstrap_resamples_whole_images():
    """Image 0's ten questions all right, image 1's all wrong: a resample of two images can only
    score 0, 50 or 100, which it could not if questions were drawn one by one."""
    halves = [bootstrap_record(0, True)] * 10 + [bootstrap_record(1, False)] * 10
    right = [bootstrap_record(i, True) for i in range(2) for _ in range(10)]
    intervals = sim_to_real.image_bootstrap(halves, right, names=("halves", "right"))
    low, high = intervals["sides"]["halves"]["overall"]
    assert {low, high} <= {0.0, 50.0, 100.0} and low <= 50.0 <= high and low < high
    assert intervals["sides"]["right"]["overall"] == [100.0, 100.0]
    assert intervals["difference"]["overall"] == [low - 100.0, high - 100.0]
    assert intervals["sides"]["halves"]["columns"]["exist"] == [low, high]
    assert intervals["sides"]["halves"]["columns"]["count"] is None  # no question of that type
    assert intervals == sim_to_real.image_bootstrap(halves, right, names=("halves", "right"))


def test_the_bootstrap_narrows_with_more_images():
    rng = random.Random(0)

    def side(images: int) -> list[dict]:
        return [bootstrap_record(i, rng.random() < 0.7) for i in range(images) for _ in range(5)]

    def width(images: int) -> float:
        low, high = sim_to_real.image_bootstrap(side(images), side(images))["difference"]["overall"]
        return high - low

    assert width(400) < width(25) / 2  # 16x the images: about a quarter of the width


# --- Images ---------------------------------------------------------------------------------------
def test_mini_side_is_the_pipelines_validation_images(tmp_path):
    """Rendered here, image i is the generator's val image i as the resize stage gives it."""
    generate_mini_clevr(
        tmp_path / "mini",
        splits={"train": 1, "val": 2},
        seed=PROFILE.seed,
        min_objects=PROFILE.val.min_objects,
        max_objects=PROFILE.val.max_objects,
    )
    for index in range(2):
        scene = make_scene(PROFILE.seed, "val", index, min_objects=3, max_objects=5)
        assert scene == sim_to_real.split_scene(PROFILE, PROFILE.val, index)
        here = sim_to_real.model_input(sim_to_real.render_mini_clevr_image(scene), IMAGE_SIZE)
        written = clevr.image_path(tmp_path / "mini", "val", index)
        resized = tmp_path / f"resized-{index}.png"
        resize.resize_image(written, resized, IMAGE_SIZE)
        pipeline = np.asarray(Image.open(resized).convert("RGB")).transpose(2, 0, 1)
        assert torch.equal(here, torch.from_numpy(np.ascontiguousarray(pipeline)))
        assert torch.equal(here, ask.preprocess(written, IMAGE_SIZE)[0])


def test_genuine_images_are_preprocessed_as_ask_does():
    images = sim_to_real.genuine_images(GENUINE)
    assert [i.path for i in images] == sorted((GENUINE / "images" / "train").iterdir())
    assert [i.scene["image_index"] for i in images] == [0, 23, 96]
    sampler = sim_to_real.question_sampler("mini", sim_to_real.side_rng(0, "x"), "uniform")
    side = sim_to_real.genuine_side(images, sampler, IMAGE_SIZE, 2, progress=False)
    for row, item in enumerate(images):
        assert torch.equal(side.images[row], ask.preprocess(item.path, IMAGE_SIZE)[0])


def test_batches_answer_as_one_question_at_a_time(tiny):
    """Batching (any size) gives each question the answer `filmclevr-ask` gives it alone."""
    model, checkpoint = ask.load(tiny["model"])
    images = sim_to_real.genuine_images(GENUINE)
    sampler = sim_to_real.question_sampler("mini", sim_to_real.side_rng(0, "x"), "uniform")
    side = sim_to_real.genuine_side(images, sampler, IMAGE_SIZE, 3, progress=False)
    sim_to_real.answer_side(model, checkpoint, side, batch_size=4, progress=False)
    words = ask.answer_words(checkpoint)
    vocab = checkpoint["vocab"]["question_token_to_idx"]
    for record in side.records:
        encoded = ask.encode([record["question"]], vocab, allow_unknown=True)
        image = side.images[record["image_row"]]
        alone = ask.answer(model, image, encoded, words, top=1)[0]
        assert record["predicted"] == alone.answer


# --- Samplers -------------------------------------------------------------------------------------
def test_unknown_language_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown question language 'klingon'; known: mini"):
        sim_to_real.question_sampler("klingon", sim_to_real.side_rng(0, "x"), "uniform")


def test_a_registered_language_asks_both_sides(tiny, monkeypatch):
    """A language is one entry of SAMPLERS: the harness asks both sides through it."""
    seen: list[tuple[str, int]] = []

    class Sampler:
        def sample(self, scene, n):
            seen.append((scene["split"], len(scene["objects"])))
            program = [{"function": "scene", "inputs": [], "value_inputs": []}]
            program.append({"function": "count", "inputs": [0], "value_inputs": []})
            text = "How many things are there?"
            return [{"question": text, "question_family_index": 0, "program": program}]

    monkeypatch.setitem(sim_to_real.SAMPLERS, "plain", lambda rng, mix: Sampler())
    m = sim_to_real.measure(tiny["model"], GENUINE, PROFILE, language="plain", **FAST)
    assert [split for split, _ in seen] == ["train"] * GENUINE_IMAGES + ["val"] * GENUINE_IMAGES
    assert m.report["language"] == "plain"
    answers = [r["answer"] for side in sim_to_real.SIDES for r in m.records[side]]
    assert answers == [str(objects) for _, objects in seen]  # the executor's count
    for side in sim_to_real.SIDES:
        assert m.report["sides"][side]["model"]["counts"]["columns"]["count"] == GENUINE_IMAGES


# --- Outputs --------------------------------------------------------------------------------------
def test_outputs_written_with_their_context(tiny, tmp_path):
    paths = sim_to_real.write_outputs(tiny["m"], tmp_path / "out", questions=True)
    report = json.loads(paths["json"].read_text())
    assert report == json.loads(json.dumps(tiny["m"].report))
    assert report["checkpoint"]["sha256"] == fileio.file_sha256(tiny["model"])
    assert report["questions_per_image"] == QUESTIONS_PER_IMAGE
    assert report["language"] == "mini" and report["seed"] == 0
    assert report["params"]["seed"] == PROFILE.seed and report["commit"]
    table = paths["md"].read_text()
    assert "| column | genuine | mini-CLEVR | prior (genuine) | prior (mini-CLEVR) |" in table
    overall = report["sides"]["genuine"]["model"]["overall"]
    assert f"| Overall | {overall:.2f} |" in table
    low, high = report["intervals"]["difference"]["overall"]
    assert low <= report["difference"]["overall"] <= high
    assert f" [{low:+.1f}, {high:+.1f}] |" in table
    with Image.open(paths["colors"]) as image:
        assert image.format == "PNG"
    records = json.loads(paths["questions"].read_text())
    assert set(records) == set(sim_to_real.SIDES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [
            sim_to_real.OUTPUT_JSON,
            sim_to_real.OUTPUT_MD,
            sim_to_real.OUTPUT_COLORS,
            sim_to_real.OUTPUT_QUESTIONS,
        ]
    )  # no temporary files left


def test_a_failed_write_keeps_the_old_outputs(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / sim_to_real.OUTPUT_JSON).write_text("old\n")

    def broken(report):
        raise RuntimeError("disk trouble")

    monkeypatch.setattr(sim_to_real, "markdown", broken)
    with pytest.raises(RuntimeError):
        sim_to_real.write_outputs(tiny["m"], out)
    assert (out / sim_to_real.OUTPUT_JSON).read_text() == "old\n"
    assert not any(p.name.endswith(".tmp") for p in out.iterdir())


# --- The command line and bad input ---------------------------------------------------------------
def test_profile_from_params_applies_split_settings(tmp_path):
    path = sim_to_real_params(tmp_path)
    params = yaml.safe_load(path.read_text())
    params["get_data"]["mini"]["split_settings"] = {"train": {"min_objects": 2, "max_objects": 2}}
    params["get_data"]["mini"]["question_mix"] = "clevr"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    profile = sim_to_real.profile_from_params(path)
    sizes = params["get_data"]["mini"]["images"]
    assert profile.train == sim_to_real.SplitSettings("train", 3, 2, 2, "clevr", sizes["train"])
    assert profile.val == sim_to_real.SplitSettings("val", 3, 3, 5, "clevr", sizes["val"])
    assert profile.image_size == IMAGE_SIZE and profile.source == str(path)


def test_a_profile_in_clevrs_look_and_language_is_drawn_and_asked_so(tmp_path):
    path = sim_to_real_params(tmp_path)
    params = yaml.safe_load(path.read_text())
    params["get_data"]["mini"].update(look="clevr", language="clevr")
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    profile = sim_to_real.profile_from_params(path)
    assert (profile.look, profile.language) == ("clevr", "clevr")
    scene = sim_to_real.split_scene(profile, profile.val, 0)
    assert scene == generate.make_scene(
        profile.seed, "val", 0, min_objects=3, max_objects=5, look="clevr"
    )
    image = sim_to_real.render_mini_clevr_image(scene, profile.look)
    assert image.tobytes() == generate.render_image(scene, "clevr").tobytes()
    sampler = sim_to_real.question_sampler(profile.language, random.Random(0), "uniform")
    families = {q["question_family_index"] for q in sampler.sample(scene, 20)}
    assert max(families) < 90 and len(families) > 5  # CLEVR's 90 families


def test_cli_default_params_and_output_beside_the_checkpoint(tiny, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(tiny["model"], folder / "film.pt")
    sim_to_real_params(folder)
    argv = ["--model", str(folder / "film.pt"), "--genuine", str(GENUINE), "--no-progress"]
    argv += ["--questions-per-image", "2", "--prior-train-images", "2"]
    assert sim_to_real.main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("genuine: ") and "mini-CLEVR: " in out
    report = json.loads((folder / sim_to_real.OUTPUT_JSON).read_text())
    assert report["params"]["source"] == str(folder / "params.yaml")
    assert (folder / sim_to_real.OUTPUT_MD).is_file()
    assert (folder / sim_to_real.OUTPUT_COLORS).is_file()


def test_checkpoint_of_another_image_size_is_refused(tiny, tmp_path):
    profile = sim_to_real.MiniProfile(
        seed=0, train=PROFILE.train, val=PROFILE.val, image_size=64, source="p.yaml"
    )
    with pytest.raises(ValueError, match="p.yaml: resize_images.image_size is 64 but .*16-pixel"):
        sim_to_real.measure(tiny["model"], GENUINE, profile, **FAST)


def checkpoint_of_profile(tiny: dict, folder: Path, profile: str | None) -> Path:
    """The tiny checkpoint, recording `profile` as train.train records the profile of a run."""
    checkpoint = torch.load(tiny["model"], weights_only=True)
    if profile is not None:
        checkpoint["profile"] = profile
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "film.pt", checkpoint)
    return folder / "film.pt"


def test_a_checkpoint_of_another_profile_is_refused(tiny, tmp_path):
    """Measured against another profile, its mini-CLEVR side and prior would be that one's."""
    model = checkpoint_of_profile(tiny, tmp_path, "cogent-mini")
    profile = dataclasses.replace(PROFILE, name="mini")
    refused = (
        r"film\.pt was trained by profile 'cogent-mini', but tiny profile is profile 'mini'"
        r".*--params config/cogent-mini\.yaml"
    )
    with pytest.raises(ValueError, match=refused):
        sim_to_real.measure(model, GENUINE, profile, **FAST)
    same = dataclasses.replace(PROFILE, name="cogent-mini")
    report = sim_to_real.measure(model, GENUINE, same, **FAST).report
    assert report["checkpoint"]["profile"] == "cogent-mini"


def test_splits_smaller_than_the_measurement_are_refused(tiny):
    """Images past a split's end are no images of it: the report would say otherwise."""
    small_val = dataclasses.replace(PROFILE, val=dataclasses.replace(PROFILE.val, images=2))
    with pytest.raises(ValueError, match=rf"needs as many images as the genuine sample's "
                       rf"{GENUINE_IMAGES} .* split 'val' has 2"):  # fmt: skip
        sim_to_real.measure(tiny["model"], GENUINE, small_val, **FAST)
    small_train = dataclasses.replace(PROFILE, train=dataclasses.replace(PROFILE.train, images=3))
    with pytest.raises(ValueError, match="prior_train_images is 4, but the training split "
                       "'train' has 3 images"):  # fmt: skip
        sim_to_real.measure(tiny["model"], GENUINE, small_train, **FAST)


def test_the_mini_side_can_take_more_images_than_the_genuine_one(tiny):
    """--mini-images: the first images are the default measurement's, asked the same questions;
    the genuine side is unchanged."""
    default = tiny["m"]
    more = sim_to_real.measure(tiny["model"], GENUINE, PROFILE, mini_images=5, **FAST)
    assert more.report["mini_clevr"]["images"] == more.report["sides"]["mini-CLEVR"]["images"] == 5
    assert more.report["genuine"]["images"] == GENUINE_IMAGES
    assert more.records["genuine"] == default.records["genuine"]

    def asked(records: list[dict], images: int) -> list[tuple]:
        return [(r["image_row"], r["question"], r["answer"]) for r in records
                if r["image_row"] < images]  # fmt: skip

    mini = more.records["mini-CLEVR"]
    assert asked(mini, GENUINE_IMAGES) == asked(default.records["mini-CLEVR"], GENUINE_IMAGES)
    assert {r["image_row"] for r in mini} == set(range(5))
    assert more.report["intervals"]["sides"]["mini-CLEVR"]["overall"] is not None
    small_val = dataclasses.replace(PROFILE, val=dataclasses.replace(PROFILE.val, images=4))
    with pytest.raises(ValueError, match=r"needs 5 images \(--mini-images\), but the validation "
                       r"split 'val' has 4: ask for fewer"):  # fmt: skip
        sim_to_real.measure(tiny["model"], GENUINE, small_val, mini_images=5, **FAST)


def test_cli_warns_when_it_guesses_the_profile(tiny, tmp_path, monkeypatch, caplog):
    """No params.yaml beside a checkpoint that records no profile: ./params.yaml is a guess."""
    model = checkpoint_of_profile(tiny, tmp_path / "models", None)
    sim_to_real_params(tmp_path)
    monkeypatch.chdir(tmp_path)
    argv = ["--model", str(model), "--genuine", str(GENUINE), "--no-progress"]
    argv += ["--questions-per-image", "2", "--prior-train-images", "2"]
    assert sim_to_real.main(argv) == 0
    assert "records no profile and has no params.yaml beside it" in caplog.text
    caplog.clear()
    model = checkpoint_of_profile(tiny, tmp_path / "models", "mini")  # the tiny params' profile
    assert sim_to_real.main(argv) == 0
    assert "records no profile" not in caplog.text


def genuine_copy(tmp_path: Path) -> Path:
    root = tmp_path / "genuine"
    shutil.copytree(GENUINE, root)
    return root


def scenes_file(root: Path) -> Path:
    return next((root / "scenes").glob("*.json"))


def damage_no_scene_file(root: Path) -> str:
    scenes_file(root).unlink()
    return f"{root / 'scenes'}: expected one CLEVR_train_scenes*.json scene file, found no"


def damage_scene_file_not_json(root: Path) -> str:
    scenes_file(root).write_text("{not json")
    return f"{scenes_file(root)}: not valid JSON"


def damage_scene_without_relationships(root: Path) -> str:
    document = json.loads(scenes_file(root).read_text())
    del document["scenes"][1]["relationships"]
    scenes_file(root).write_text(json.dumps(document))
    return f"{scenes_file(root)}: scene #1 (image_index 23): no relationships"


def damage_scene_without_an_image_number(root: Path) -> str:
    document = json.loads(scenes_file(root).read_text())
    document["scenes"][2]["image_index"] = None  # once a TypeError from sorting the scenes
    scenes_file(root).write_text(json.dumps(document))
    return f"{scenes_file(root)}: scene #2 has image_index None, not an image number"


def damage_image_without_scene(root: Path) -> str:
    extra = root / "images" / "train" / "CLEVR_train_000001.png"
    shutil.copy(root / "images" / "train" / "CLEVR_train_000000.png", extra)
    return f"{extra}: no scene record for image 1 in {scenes_file(root)}"


def damage_corrupt_image(root: Path) -> str:
    image = root / "images" / "train" / "CLEVR_train_000023.png"
    image.write_bytes(image.read_bytes()[:2000])
    return f"{image}: cannot read image"


def damage_no_images(root: Path) -> str:
    shutil.rmtree(root / "images" / "train")
    return f"{root / 'images' / 'train'}: image folder not found"


def damage_mini_clevrs_own_scenes(root: Path) -> str:
    """mini-CLEVR's release tree (data/clevr of a mini profile) has CLEVR's layout and names."""
    path = scenes_file(root)
    document = json.loads(path.read_text())
    document["info"]["generator"] = clevr.MINI_GENERATOR
    path.write_text(json.dumps(document))
    return f"{path}: mini-CLEVR's own scenes"


@pytest.mark.parametrize(
    "damage",
    [
        damage_no_scene_file,
        damage_scene_file_not_json,
        damage_scene_without_relationships,
        damage_scene_without_an_image_number,
        damage_image_without_scene,
        damage_corrupt_image,
        damage_no_images,
        damage_mini_clevrs_own_scenes,
    ],
)
def test_bad_genuine_sample_is_one_line_naming_the_file(tiny, tmp_path, capsys, damage):
    root = genuine_copy(tmp_path)
    expected = damage(root)
    argv = ["--model", str(tiny["model"]), "--genuine", str(root), "--no-progress"]
    argv += ["--params", str(sim_to_real_params(tmp_path)), "--out", str(tmp_path / "out")]
    assert sim_to_real.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {expected}"), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_checkpoint_and_params_are_named(tmp_path, capsys):
    argv = [
        "--genuine",
        str(GENUINE),
        "--no-progress",
        "--params",
        str(sim_to_real_params(tmp_path)),
    ]
    assert sim_to_real.main(["--model", str(tmp_path / "nowhere.pt"), *argv]) == 1
    assert f"{tmp_path / 'nowhere.pt'}: checkpoint not found" in capsys.readouterr().err
    argv = ["--model", str(tmp_path / "film.pt"), "--genuine", str(GENUINE)]
    assert sim_to_real.main([*argv, "--params", str(tmp_path / "none.yaml")]) == 1
    assert f"{tmp_path / 'none.yaml'}: parameters file not found" in capsys.readouterr().err


def _asked(images: list[sim_to_real.GenuineImage]) -> list[dict]:
    """The genuine side's records (questions, answers, images) for `images`, FAST's settings."""
    mix = PROFILE.val.question_mix
    sampler = sim_to_real.question_sampler(
        "clevr", sim_to_real.side_rng(0, sim_to_real.GENUINE), mix
    )
    side = sim_to_real.genuine_side(
        images, sampler, IMAGE_SIZE, QUESTIONS_PER_IMAGE, progress=False
    )
    return side.records


def test_an_image_list_asks_what_a_sample_of_just_those_images_asks(tmp_path):
    """A release folder narrowed by a list scores exactly the sample the list names: the same
    images, questions and answers as a folder that holds only those images."""
    names = sorted(p.name for p in (GENUINE / "images" / "train").glob("*.png"))
    kept = names[1:]
    image_list = tmp_path / "images.txt"
    image_list.write_text("# the sample\n" + "\n".join(reversed(kept)) + f"\n\n{kept[0]}\n")
    assert sim_to_real.read_image_list(image_list) == kept
    listed = sim_to_real.genuine_images(GENUINE, image_list=image_list)
    assert [image.path.name for image in listed] == kept

    sample = genuine_copy(tmp_path)
    (sample / "images" / "train" / names[0]).unlink()
    assert _asked(listed) == _asked(sim_to_real.genuine_images(sample))


@pytest.mark.parametrize(
    "text, expected",
    [
        (None, ": cannot read the image list"),
        ("# nothing\n\n", ": lists no images"),
        ("CLEVR_train_000000.png\nCLEVR_val_000001.png\n", ":2: 'CLEVR_val_000001.png' is not"),
        ("CLEVR_train_000000.png\nCLEVR_train_000001.png\n", ": 1 listed images are not in"),
    ],
)
def test_a_bad_image_list_is_one_line_naming_it(tiny, tmp_path, capsys, text, expected):
    image_list = tmp_path / "images.txt"
    if text is not None:
        image_list.write_text(text)
    argv = ["--model", str(tiny["model"]), "--genuine", str(GENUINE), "--no-progress"]
    argv += ["--params", str(sim_to_real_params(tmp_path)), "--out", str(tmp_path / "out")]
    assert sim_to_real.main([*argv, "--images", str(image_list)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {image_list}{expected}"), err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
