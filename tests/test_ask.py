"""Tests of filmclevr.ask: answering questions about any image with a trained checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from filmclevr import ask, clevr, fileio, resize, shards
from filmclevr.tokenize import END, START, UNK
from tests.helpers import (
    tiny_film_config,
    tiny_train_config,
    tiny_trained_run,
)

TINY_MODEL = tiny_film_config(image_size=16)
TINY_TRAIN = tiny_train_config(max_epochs=1)
IMAGES = {"train": 8, "val": 4}
QUESTIONS_PER_IMAGE = 3
WORDS = ["How", "Is", "What", "a", "are", "color", "cube", "cubes", "is", "many", "red", "sphere",
         "the", "there", ","]  # fmt: skip
QUESTIONS = [
    "How many red cubes are there?",
    "Is there a cube?",
    "What color is the sphere?",
    "Is there a red cube, a sphere?",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A one-epoch checkpoint of a tiny model (16-pixel images) and a photo of another size."""
    root = tmp_path_factory.mktemp("tiny")
    tiny_trained_run(root, WORDS, IMAGES, QUESTIONS_PER_IMAGE, TINY_MODEL, TINY_TRAIN)
    rng = np.random.default_rng(1)
    photo = root / "photo.png"
    ramp = np.linspace(0, 255, 40 * 60 * 3).reshape(40, 60, 3)
    Image.fromarray(np.clip(ramp + rng.normal(0, 30, ramp.shape), 0, 255).astype(np.uint8)).save(
        photo
    )
    return {"root": root, "model": root / "film.pt", "image": photo}


def run_main(capsys, tiny_run, *args: str, image: Path | None = None) -> tuple[int, str, str]:
    argv = ["--model", str(tiny_run["model"]), "--image", str(image or tiny_run["image"])]
    code = ask.main([*argv, *args])
    out, err = capsys.readouterr()
    return code, out, err


def library_answers(tiny_run, questions: list[str], top: int = 5) -> list[ask.Answer]:
    model, checkpoint = ask.load(tiny_run["model"])
    image, _ = ask.preprocess(tiny_run["image"], checkpoint["model_config"]["image_size"])
    encoded = ask.encode(questions, checkpoint["vocab"]["question_token_to_idx"])
    return ask.answer(model, image, encoded, ask.answer_words(checkpoint), top=top)


def assert_top_is_a_ranking(top: list, answers: list[str]) -> None:
    probabilities = [p for _, p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(0 <= p <= 1 for p in probabilities)
    assert sum(probabilities) <= 1 + 1e-6
    assert len({a for a, _ in top}) == len(top) and all(a in answers for a, _ in top)


# --- Answers ------------------------------------------------------------------------------------
def test_one_question_printed(tiny_run, capsys):
    code, out, err = run_main(capsys, tiny_run, "--question", QUESTIONS[0])
    assert (code, err) == (0, "")
    (expected,) = library_answers(tiny_run, QUESTIONS[:1])
    lines = out.splitlines()
    assert lines[0] == f"Question: {QUESTIONS[0]}"
    assert lines[1] == f"Answer:   {expected.answer} (p={expected.probability:.3f})"
    assert lines[2].startswith("Top 5:    ")
    listed = [line[10:].split() for line in lines[2:7]]
    assert listed == [[a, f"{p:.3f}"] for a, p in expected.top]
    assert len(lines) == 7


def test_answer_is_the_most_probable_and_top_is_ranked(tiny_run):
    _, checkpoint = ask.load(tiny_run["model"])
    answers = ask.answer_words(checkpoint)
    for top in (1, 5, 100):
        (result,) = library_answers(tiny_run, QUESTIONS[:1], top=top)
        assert len(result.top) == min(top, len(answers))
        assert result.top[0] == (result.answer, result.probability)
        assert_top_is_a_ranking(result.top, answers)
    assert sum(p for _, p in result.top) == pytest.approx(1.0, abs=1e-5)  # every answer listed


def test_batch_equals_one_by_one(tiny_run):
    batch = library_answers(tiny_run, QUESTIONS)  # lengths differ: padded with <NULL>
    assert [r.question for r in batch] == QUESTIONS
    for question, together in zip(QUESTIONS, batch, strict=True):
        (alone,) = library_answers(tiny_run, [question])
        assert alone.answer == together.answer
        assert [a for a, _ in alone.top] == [a for a, _ in together.top]
        np.testing.assert_allclose([p for _, p in alone.top], [p for _, p in together.top],
                                   rtol=1e-5, atol=1e-7)  # fmt: skip
        assert torch.equal(alone.location_counts, together.location_counts)
        torch.testing.assert_close(alone.mean_activation, together.mean_activation)


def test_json_with_question_and_questions_file(tiny_run, capsys, tmp_path):
    listing = tmp_path / "questions.txt"
    listing.write_text(f"\n{QUESTIONS[1]}\n   \n{QUESTIONS[2]}\n\n", encoding="utf-8")
    code, out, err = run_main(capsys, tiny_run, "--question", QUESTIONS[0], "--questions-file",
                              str(listing), "--json", "--top", "3")  # fmt: skip
    assert (code, err) == (0, "")
    records = json.loads(out)
    expected = library_answers(tiny_run, QUESTIONS[:3], top=3)
    assert isinstance(records, list) and len(records) == 3
    keys = {"question", "tokens", "answer", "probability", "top", "unknown_words"}
    _, checkpoint = ask.load(tiny_run["model"])
    for record, result in zip(records, expected, strict=True):
        assert set(record) == keys
        assert record["question"] == result.question
        assert record["tokens"] == result.tokens
        assert record["answer"] == result.answer
        assert record["probability"] == pytest.approx(result.probability, rel=1e-5)
        assert [set(t) for t in record["top"]] == [{"answer", "probability"}] * 3
        top = [(t["answer"], t["probability"]) for t in record["top"]]
        assert top[0] == (record["answer"], record["probability"])
        assert_top_is_a_ranking(top, ask.answer_words(checkpoint))
        assert record["unknown_words"] == []
    assert records[0]["tokens"] == ["How", "many", "red", "cubes", "are", "there"]


# --- Maps ---------------------------------------------------------------------------------------
def assert_png(path: Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100
        image.verify()


def test_map_one_question(tiny_run, capsys, tmp_path):
    out_png = tmp_path / "maps" / "scene.png"
    code, out, err = run_main(capsys, tiny_run, "--question", QUESTIONS[0], "--map", str(out_png))
    assert (code, err) == (0, "")
    assert_png(out_png)
    assert f"Map:      {out_png}" in out
    assert sorted(p.name for p in out_png.parent.iterdir()) == ["scene.png"]


def test_maps_of_several_questions_are_numbered(tiny_run, capsys, tmp_path):
    out_png = tmp_path / "scene.png"
    code, out, err = run_main(capsys, tiny_run, "--question", QUESTIONS[0], "--question",
                              QUESTIONS[1], "--map", str(out_png), "--json")  # fmt: skip
    assert (code, err) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene-1.png", "scene-2.png"]
    for path in tmp_path.iterdir():
        assert_png(path)
    assert [r["map"] for r in json.loads(out)] == [str(tmp_path / f"scene-{k}.png") for k in (1, 2)]


def test_map_title_states_the_prediction_only():
    result = ask.Answer("Is there a cube?", [], "yes", 0.625, [("yes", 0.625)], [],
                        torch.zeros(2, 2), torch.zeros(2, 2))  # fmt: skip
    assert ask.map_title(result) == "Is there a cube?\npredicted yes (p=0.62)"


def test_help_names_the_numbered_maps(capsys):
    with pytest.raises(SystemExit) as exit_info:
        ask.main(["--help"])
    assert exit_info.value.code == 0
    assert "OUT-1.png, OUT-2.png" in capsys.readouterr().out


# --- Preprocessing: exactly the pipeline's pixels -----------------------------------------------
def pipeline_pixels(resized_png: Path) -> np.ndarray:
    """The (3, S, S) pixels the training/eval loader decodes from a resized PNG in a shard."""
    record = {"tokens": [1, 2], "answer": None, "type": None, "question_index": 0}
    sample = {"__key__": "x", "png": resized_png.read_bytes(), "json": json.dumps([record])}
    ((pixels, *_),) = list(shards._expand_questions([sample]))
    return pixels


def test_preprocess_equals_the_pipeline_rgba_release_image(tmp_path):
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (320, 480, 4), dtype=np.uint8)
    rgba[..., 3] = rng.integers(0, 256, (320, 480))  # alpha not 255: RGB conversion drops it
    src = clevr.image_path(tmp_path / "clevr", "val", 0)
    src.parent.mkdir(parents=True)
    Image.fromarray(rgba, "RGBA").save(src)
    resize.resize_images(tmp_path / "clevr", tmp_path / "resized", splits=["val"], image_size=24,
                         progress=False)  # fmt: skip
    ours, original = ask.preprocess(src, 24)
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == (3, 24, 24)
    np.testing.assert_array_equal(ours.numpy(), pipeline_pixels(tmp_path / "resized" / "val" /
                                                                 src.name))  # fmt: skip
    np.testing.assert_array_equal(original, rgba[..., :3])


@pytest.mark.parametrize("kind", ["jpeg", "L", "P"])
def test_preprocess_equals_the_pipeline_other_formats(tmp_path, kind):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (77, 53, 3), dtype=np.uint8)  # taller than wide, odd sizes
    if kind == "jpeg":
        src, image = tmp_path / "photo.jpg", Image.fromarray(rgb)
    elif kind == "L":
        src, image = tmp_path / "gray.png", Image.fromarray(rgb[..., 0], "L")
    else:
        src = tmp_path / "palette.png"
        image = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE)
    image.save(src)
    resize.resize_image(src, tmp_path / "resized.png", 32)
    ours, original = ask.preprocess(src, 32)
    np.testing.assert_array_equal(ours.numpy(), pipeline_pixels(tmp_path / "resized.png"))
    with Image.open(src) as image:
        np.testing.assert_array_equal(original, np.asarray(image.convert("RGB")))
    assert original.shape == (77, 53, 3)


def test_preprocess_of_a_16_bit_png_is_that_of_its_8_bit_picture(tmp_path):
    """PIL's own conversion clips 16-bit values at 255: the model would answer about white."""
    gray = np.random.default_rng(5).integers(0, 256, (41, 29), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "eight.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "sixteen.png")  # I;16
    ours, original = ask.preprocess(tmp_path / "sixteen.png", 32)
    expected, expected_original = ask.preprocess(tmp_path / "eight.png", 32)
    np.testing.assert_array_equal(ours.numpy(), expected.numpy())
    np.testing.assert_array_equal(original, expected_original)
    np.testing.assert_array_equal(original, np.dstack([gray] * 3))


def test_preprocess_refuses_floating_point_pixels_naming_the_file(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.full((20, 30), 0.5, dtype=np.float32)).save(path)
    with pytest.raises(ValueError, match=r"depth\.tiff: F pixels"):
        ask.preprocess(path, 32)


# --- Tokens --------------------------------------------------------------------------------------
def test_encode_pads_and_wraps():
    vocab = {"<NULL>": 0, "<START>": 1, "<END>": 2, "<UNK>": 3, "Is": 4, "a": 5, "cube": 6, ",": 7}
    encoded = ask.encode(["  Is a cube?\n", "a, cube."], vocab)
    assert encoded.questions == ["Is a cube?", "a, cube."]
    assert encoded.tokens == [["Is", "a", "cube"], ["a", ",", "cube"]]
    assert encoded.indices.tolist() == [[START, 4, 5, 6, END], [START, 5, 7, 6, END]]
    assert encoded.lengths.tolist() == [5, 5]
    short = ask.encode(["cube", "Is a cube"], vocab)
    assert short.indices.tolist() == [[START, 6, END, 0, 0], [START, 4, 5, 6, END]]
    assert short.lengths.tolist() == [3, 5]


def test_unknown_word_is_an_error_with_suggestions(tiny_run, capsys):
    code, out, err = run_main(capsys, tiny_run, "--question", "How many red spheres are there?")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "'spheres'" in err and "did you mean 'sphere'" in err and "--allow-unknown" in err
    vocab = {w: i for i, w in enumerate(["<NULL>", "<START>", "<END>", "<UNK>", *WORDS])}
    with pytest.raises(ask.UnknownWordsError, match="'how'.*did you mean 'How'") as error:
        ask.encode(["Is there a cube?", "how many spheres?", "spheres?"], vocab)
    assert error.value.words == {"how": [2], "spheres": [2, 3]}
    assert "'spheres' in question 2, 3" in str(error.value)
    with pytest.raises(ask.UnknownWordsError, match="'' [(]an empty word, from two spaces"):
        ask.encode(["How many  cubes?"], vocab)  # the pipeline's tokens: How, many, '', cubes


def test_allow_unknown_reads_unk_and_lists_the_words(tiny_run, capsys):
    question = "How many red spheres are there?"
    code, out, err = run_main(capsys, tiny_run, "--question", question, "--allow-unknown", "--json")
    assert (code, err) == (0, "")
    (record,) = json.loads(out)
    assert record["unknown_words"] == ["spheres"]
    assert record["tokens"] == ["How", "many", "red", "spheres", "are", "there"]
    _, checkpoint = ask.load(tiny_run["model"])
    vocab = checkpoint["vocab"]["question_token_to_idx"]
    encoded = ask.encode([question], vocab, allow_unknown=True)
    assert encoded.indices[0, 4] == UNK
    code, out, _ = run_main(capsys, tiny_run, "--question", question, "--allow-unknown")
    assert code == 0 and "Unknown:  'spheres' (read as <UNK>)" in out


# --- Bad inputs: one line on stderr, exit 1 -----------------------------------------------------
@pytest.fixture(scope="module")
def bad_files(tiny_run) -> dict[str, Path]:
    root = tiny_run["root"] / "bad"
    root.mkdir()
    model_bytes = tiny_run["model"].read_bytes()
    files = {
        "truncated.pt": model_bytes[: len(model_bytes) // 2],
        "random.pt": bytes(range(256)) * 8,
        "text.png": b"this is not an image\n",
        "truncated.png": tiny_run["image"].read_bytes()[:300],
        "blank.txt": b"\n  \n\n",
        "binary.txt": b"\xff\xfe\x00bad",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    torch.save({"format": "something else"}, root / "foreign.pt")
    return {name: root / name for name in [*files, "foreign.pt"]}


BAD_INPUTS = {
    # case: (arguments replacing the good ones, what the one line must say)
    "missing checkpoint": ({"--model": "nowhere/film.pt"}, "nowhere/film.pt: checkpoint not found"),
    "truncated checkpoint": ({"--model": "truncated.pt"}, "truncated.pt: not a readable"),
    "random checkpoint": ({"--model": "random.pt"}, "random.pt: not a readable checkpoint"),
    "foreign checkpoint": ({"--model": "foreign.pt"}, "foreign.pt: not a filmclevr-checkpoint/1"),
    "missing image": ({"--image": "nowhere/photo.png"}, "nowhere/photo.png: cannot read image"),
    "not an image": ({"--image": "text.png"}, "text.png: cannot read image"),
    "truncated image": ({"--image": "truncated.png"}, "truncated.png: cannot read image"),
    "empty question": ({"--question": ""}, "the question '' is empty"),
    "punctuation only": ({"--question": " ? "}, "the question ' ? ' is empty"),
    "unknown word": ({"--question": "How many blue cubes?"}, "unknown word"),
    "no question": ({"--question": None}, "no question given"),
    "missing questions file": ({"--questions-file": "nowhere.txt"}, "nowhere.txt: questions file"),
    "blank questions file": ({"--questions-file": "blank.txt"}, "blank.txt: no questions"),
    "binary questions file": ({"--questions-file": "binary.txt"}, "binary.txt: cannot read"),
    "bad device": ({"--device": "nonsense"}, "--device 'nonsense' is not a torch device"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line_exit_1(tiny_run, bad_files, capsys, case):
    changes, expected = BAD_INPUTS[case]
    options = {"--model": str(tiny_run["model"]), "--image": str(tiny_run["image"]),
               "--question": QUESTIONS[0]}  # fmt: skip
    for option, value in changes.items():
        if value is None:
            options.pop(option)
        else:
            options[option] = str(bad_files.get(value, value))
    if "--questions-file" in changes:
        options.pop("--question")
    argv = [part for option, value in options.items() for part in (option, value)]
    code = ask.main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert expected in err
    assert "Traceback" not in err


def test_usage_errors_exit_2(tiny_run, capsys):
    for argv in (["--image", "x.png", "--question", "q"], ["--model", "m", "--image", "x",
                                                           "--top", "0"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            ask.main(argv)
        assert exit_info.value.code == 2
    assert "--top: must be at least 1" in capsys.readouterr().err


# --- The module entry point --------------------------------------------------------------------
def test_python_dash_m(tiny_run):
    command = [sys.executable, "-m", "filmclevr.ask", "--model", str(tiny_run["model"]),
               "--image", str(tiny_run["image"]), "--question", QUESTIONS[1], "--json"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    (record,) = json.loads(done.stdout)
    (expected,) = library_answers(tiny_run, [QUESTIONS[1]])
    assert record["answer"] == expected.answer
    assert record["tokens"] == ["Is", "there", "a", "cube"]


# --- Shipped checkpoints: checked against their manifest ----------------------------------------
def test_a_shipped_checkpoint_is_verified_and_refused_once_changed(tiny_run, capsys, tmp_path):
    from filmclevr import manifest

    shipped = tmp_path / "reference" / "tiny" / "film.pt"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(tiny_run["model"].read_bytes())
    listed = manifest.build_manifest(tmp_path / "reference")
    (tmp_path / "reference" / manifest.MANIFEST_NAME).write_text(manifest.manifest_text(listed))
    expected = listed["checkpoints"]["tiny/film.pt"]["sha256"]
    argv = ["--model", str(shipped), "--image", str(tiny_run["image"]), "--question", QUESTIONS[1]]
    assert ask.main(argv) == 0
    (answer,) = library_answers(tiny_run, [QUESTIONS[1]])
    assert f"Answer:   {answer.answer} " in capsys.readouterr().out

    data = bytearray(shipped.read_bytes())
    data[-100] ^= 0x01  # one bit, inside the weights
    shipped.write_bytes(bytes(data))
    actual = fileio.file_sha256(shipped)
    assert ask.main(argv) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {shipped}: SHA-256 {actual} is not the {expected} that ")
    assert manifest.MANIFEST_NAME in err
    with pytest.raises(manifest.ChecksumMismatchError):
        ask.load(shipped)
    ask.load(tiny_run["model"])  # the same bytes under no manifest: loaded unchecked
