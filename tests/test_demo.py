"""The demo page's handler as a plain function (filmclevr/demo_page.py); the page itself in a
browser: tests/test_demo_page.py."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from PIL import Image

from filmclevr import ask, demo_page, manifest

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "results/reference/demo/film.pt"  # a shipped model: the page runs any of them
IMAGES = ROOT / "tests/data/clevr_genuine/images/train"
IMAGE = IMAGES / "CLEVR_train_000000.png"
QUESTION = "How many spheres are there?"


@pytest.fixture(scope="module")
def demo() -> demo_page.DemoModel:
    return demo_page.DemoModel(MODEL)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = ask.main(["--model", str(MODEL), "--image", str(IMAGE), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_page_answers_as_filmclevr_ask_prints(demo, capsys, tmp_path):
    result = demo_page.answer_question(demo, IMAGE, QUESTION)
    code, out, _ = cli(capsys, "--question", QUESTION, "--map", str(tmp_path / "map.png"))
    assert code == 0 and not result.failed
    report = out.rstrip("\n").rsplit("\nMap:", 1)[0]  # the CLI names the map file it wrote
    assert result.text == report
    assert result.text.startswith(f"Question: {QUESTION}\nAnswer:   ")
    top = list(result.top.items())
    assert len(top) == ask.DEFAULT_TOP
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert all(a in ask.real_answers(demo.checkpoint) for a, _ in top)
    assert f"Answer:   {top[0][0]} (p={top[0][1]:.3f})" in result.text
    # the same Figure 4 as filmclevr-ask --map draws
    assert result.map_png.parent == demo.map_dir
    assert result.map_png.read_bytes() == (tmp_path / "map.png").read_bytes()


def test_an_unknown_word_is_the_error_filmclevr_ask_gives(demo, capsys):
    question = "How many spheres are there please?"
    result = demo_page.answer_question(demo, IMAGE, question)
    code, out, err = cli(capsys, "--question", question)
    assert (code, out) == (1, "")
    assert result.failed and result.map_png is None
    assert result.text == err.rstrip("\n")
    assert result.text.startswith("error: unknown word") and "'please'" in result.text


def test_allow_unknown_reads_the_word_as_unk(demo, capsys):
    question = "How many spheres are there please?"
    result = demo_page.answer_question(demo, IMAGE, question, allow_unknown=True)
    code, out, _ = cli(capsys, "--question", question, "--allow-unknown")
    assert code == 0 and result.text == out.rstrip("\n")
    assert "Unknown:  'please' (read as <UNK>)" in result.text


@pytest.mark.parametrize(
    ("image", "question", "expected"),
    [
        (None, QUESTION, "error: no image: pick an example or upload one"),
        ("", QUESTION, "error: no image: pick an example or upload one"),
        (IMAGE, "  ", "error: the question '  ' is empty: it has no words"),
        (ROOT / "nowhere.png", QUESTION, f"error: {ROOT / 'nowhere.png'}: cannot read image"),
    ],
)
def test_bad_input_is_the_answer_not_an_exception(demo, image, question, expected):
    result = demo_page.answer_question(demo, image, question)
    assert result.failed and result.map_png is None
    assert result.text.startswith(expected)


def test_an_uploaded_image_of_any_format_is_read_as_filmclevr_ask_reads_it(demo, tmp_path):
    jpeg = tmp_path / "upload.jpg"
    with Image.open(IMAGE) as image:
        image.convert("RGB").save(jpeg, quality=95)
    result = demo_page.answer_question(demo, jpeg, QUESTION)
    pixels, _ = ask.preprocess(jpeg, demo.image_size)
    encoded = ask.encode([QUESTION], demo.vocab)
    (expected,) = ask.answer(demo.model, pixels, encoded, demo.answers)
    assert dict(expected.top) == result.top


def test_the_summary_says_whether_the_checkpoint_was_verified(demo, tmp_path):
    summary = demo.summary(root=ROOT)
    assert "`results/reference/demo/film.pt`" in summary
    assert f"`results/reference/{manifest.MANIFEST_NAME}` lists" in summary
    assert "`results/reference/demo/film.card.md`" in summary
    own = tmp_path / "film.pt"
    shutil.copyfile(MODEL, own)
    assert "under no manifest: a checkpoint of your own, not checked" in (
        demo_page.DemoModel(own).summary()
    )


def test_a_changed_shipped_checkpoint_is_refused(tmp_path):
    shipped = tmp_path / "reference" / "demo" / "film.pt"
    shipped.parent.mkdir(parents=True)
    shutil.copyfile(MODEL, shipped)
    listed = manifest.build_manifest(tmp_path / "reference")
    (tmp_path / "reference" / manifest.MANIFEST_NAME).write_text(manifest.manifest_text(listed))
    data = bytearray(shipped.read_bytes())
    data[-1] ^= 0xFF
    shipped.write_bytes(bytes(data))
    with pytest.raises(manifest.ChecksumMismatchError, match=f"{shipped}: SHA-256 "):
        demo_page.DemoModel(shipped)


def test_example_questions_are_those_the_model_can_read(demo):
    assert demo.example_questions() == list(demo_page.EXAMPLE_QUESTIONS)
    narrow = object.__new__(demo_page.DemoModel)  # a model that never saw "spheres"
    narrow.vocab = {w: i for w, i in demo.vocab.items() if w != "spheres"}
    assert "How many spheres are there?" not in narrow.example_questions()
    assert narrow.example_questions()


def test_example_images_are_the_bundled_genuine_ones(tmp_path):
    images = demo_page.example_images(demo_page.DEFAULT_EXAMPLES)
    assert [p.name for p in images] == sorted(p.name for p in IMAGES.glob("*.png"))
    with pytest.raises(ValueError, match="nowhere: examples folder not found"):
        demo_page.example_images(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("no image here")
    with pytest.raises(ValueError, match="no PNG or JPEG images"):
        demo_page.example_images(tmp_path)


def test_without_gradio_the_command_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio fails, find_spec is None
    assert demo_page.main(["--model", str(MODEL)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == "error: filmclevr-demo needs Gradio: pip install -e '.[demo]'\n"


def test_a_bad_checkpoint_is_one_line_and_exit_1(capsys, tmp_path):
    pytest.importorskip("gradio")
    assert demo_page.main(["--model", str(tmp_path / "nowhere.pt")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == f"error: {tmp_path / 'nowhere.pt'}: checkpoint not found\n"


def test_the_page_has_the_elements_the_browser_test_reads(demo):
    pytest.importorskip("gradio")
    page = demo_page.build_page(demo, demo_page.example_images(IMAGES))
    ids = {getattr(block, "elem_id", None) for block in page.blocks.values()}
    assert {"image", "examples", "question", "allow-unknown", "ask", "answer", "top", "map"} <= ids


@pytest.mark.parametrize(
    "name", sorted(manifest.read_manifest(ROOT / "results/reference" / manifest.MANIFEST_NAME))
)
def test_every_shipped_model_runs_on_the_page(name):
    shipped = demo_page.DemoModel(ROOT / "results/reference" / name)  # verified, on the CPU
    result = demo_page.answer_question(shipped, IMAGE, "Is there a cube?")
    assert not result.failed, result.text
    assert len(result.top) == ask.DEFAULT_TOP and set(result.top) <= set(shipped.answers)
    assert result.map_png.is_file()
