"""filmclevr-demo: ask a trained FiLM model about an image in the browser (a Gradio page).

    pip install -e '.[demo]'      # Gradio: an optional extra, the core install stays light
    filmclevr-demo --model results/reference/demo/film.pt
    filmclevr-demo --model models/film.pt --examples data/clevr/images/val --port 7861
    python -m filmclevr.demo_page ...   (the same)

Pick one of the example images (by default the three genuine CLEVR v1.0 images of
`tests/data/clevr_genuine/`, whose README gives their source and licence) or upload a PNG or
JPEG, type a question and press Ask: the page shows what `filmclevr-ask` prints (the answer,
the top 5 with probabilities), the top 5 as bars, and the paper's Figure 4 for the question
(where the classifier's max-pooled features come from, beside the last ResBlock's mean
activation). Everything is `filmclevr.ask`'s: the same preprocessing, tokenization, answers,
maps and error lines (an unknown word names it and suggests close words; the page's
--allow-unknown box reads it as <UNK>). A shipped checkpoint is verified against its manifest
when the page starts (`ask.load`). It runs on the CPU by default and serves on 127.0.0.1 only,
unless --host says otherwise.

Exit status: 0 after the server stops; 1 bad input (a missing, corrupt or changed checkpoint, an
examples folder without images) or Gradio not installed; 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from filmclevr import ask
from filmclevr.fileio import relative_name
from filmclevr.manifest import manifest_over
from filmclevr.model_cards import card_path

# The bundled genuine CLEVR images: the repository's own copies (this is a tool run from a
# clone, like the shipped checkpoints it opens), not a second copy in the package.
DEFAULT_EXAMPLES = Path(__file__).resolve().parents[1] / "tests/data/clevr_genuine/images/train"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Offered on the page when every word is in the model's vocabulary (they are in mini-CLEVR's).
EXAMPLE_QUESTIONS = (
    "How many spheres are there?",
    "Is there a large cube?",
    "What color is the cylinder?",
    "What material is the large sphere?",
)
INSTALL_HINT = "filmclevr-demo needs Gradio: pip install -e '.[demo]'"


@dataclasses.dataclass(frozen=True)
class PageAnswer:
    """What the page shows for one question: the report or the error line, the top answers
    ({answer: probability}, None after an error) and the Figure 4 map (None after an error)."""

    text: str
    top: dict[str, float] | None
    map_png: Path | None

    @property
    def failed(self) -> bool:
        return self.top is None


class DemoModel:
    """A checkpoint loaded once for the page (`ask.load`: verified when it is shipped), and
    where the maps of its answers are written."""

    def __init__(self, model_path: str | Path, device: str = "cpu", top: int = ask.DEFAULT_TOP):
        self.path = Path(model_path)
        self.model, self.checkpoint = ask.load(self.path, device)
        self.vocab = self.checkpoint["vocab"]["question_token_to_idx"]
        self.answers = ask.answer_words(self.checkpoint)
        self.image_size = int(self.checkpoint["model_config"]["image_size"])
        self.top = top
        self._maps = tempfile.TemporaryDirectory(prefix="filmclevr-demo-")  # gone at exit
        self.manifest = manifest_over(self.path)  # ask.load checked the file against it

    @property
    def map_dir(self) -> Path:
        return Path(self._maps.name)

    def words(self) -> list[str]:
        """The question words the model knows, sorted (no special tokens, no punctuation)."""
        return sorted(ask.known_words(self.vocab))

    def example_questions(self) -> list[str]:
        """EXAMPLE_QUESTIONS whose words the model knows."""
        known = []
        for question in EXAMPLE_QUESTIONS:
            try:
                ask.encode([question], self.vocab)
            except ValueError:
                continue
            known.append(question)
        return known

    def summary(self, root: Path | None = None) -> str:
        """The page's header: which checkpoint, whether it was verified, its card."""
        shown = _shown(self.path, root)
        answers = ask.real_answers(self.checkpoint)
        size = f"{self.image_size}x{self.image_size}"
        lines = [
            f"**Model** `{shown}`: {size} images, {len(self.words())} question words, "
            f"{len(answers)} answers."
        ]
        if self.manifest is not None:
            lines.append(
                f"Its SHA-256 is the one `{_shown(self.manifest, root)}` lists (checked when the "
                "page started)."
            )
        else:
            lines.append("It lies under no manifest: a checkpoint of your own, not checked.")
        card = card_path(self.path)
        if card.is_file():
            lines.append(
                f"Its model card, `{_shown(card, root)}`, gives its data, its accuracy on "
                "mini-CLEVR and on genuine CLEVR images, and its limits."
            )
        return " ".join(lines)


def _shown(path: Path, root: Path | None) -> str:
    """`path` relative to `root` (the working directory by default) when it is under it."""
    return relative_name(path, root or Path.cwd())


def answer_question(
    demo: DemoModel, image_path: str | Path | None, question: str, allow_unknown: bool = False
) -> PageAnswer:
    """The page's handler: one question about one image, as `filmclevr-ask` answers it.

    Bad input (no image, an unreadable image, an empty question, an unknown word) is not raised:
    it is the answer, as the line `filmclevr-ask` prints (`ask.error_line`).
    """
    try:
        if image_path is None or str(image_path) == "":
            raise ValueError("no image: pick an example or upload one")
        encoded = ask.encode([question], demo.vocab, allow_unknown)
        image, original = ask.preprocess(image_path, demo.image_size)
        (result,) = ask.answer(demo.model, image, encoded, demo.answers, top=demo.top)
        map_png = demo.map_dir / f"map-{uuid.uuid4().hex}.png"
        ask.write_map(result, original, map_png)
    except (OSError, ValueError) as e:
        return PageAnswer(ask.error_line(e), None, None)
    return PageAnswer(ask.format_answers([result]), dict(result.top), map_png)


def example_images(folder: Path) -> list[Path]:
    """The PNG and JPEG files of `folder`, sorted.

    Raises:
        ValueError: naming the folder, when it is missing or holds no such image.
    """
    if not folder.is_dir():
        raise ValueError(f"{folder}: examples folder not found")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise ValueError(f"{folder}: no PNG or JPEG images to offer as examples")
    return images


def build_page(demo: DemoModel, examples: Sequence[Path]) -> Any:
    """The Gradio page (a `gradio.Blocks`), not started. Element ids (for tests and styling):
    image, question, allow-unknown, ask, answer, top, map."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local tool: no telemetry
    import gradio as gr

    def handle(image_path: str | None, question: str, allow_unknown: bool) -> tuple:
        result = answer_question(demo, image_path, question, allow_unknown)
        map_png = None if result.map_png is None else str(result.map_png)
        return result.text, result.top, map_png

    questions = demo.example_questions()
    with gr.Blocks(title="FiLM on CLEVR: ask the model", analytics_enabled=False) as page:
        gr.Markdown("# FiLM on CLEVR: ask the model")
        gr.Markdown(demo.summary())
        with gr.Row():
            with gr.Column():
                # image_mode None: the file as uploaded, so the model sees what filmclevr-ask
                # would (ask.preprocess converts it exactly as the pipeline did)
                image = gr.Image(
                    type="filepath", image_mode=None, sources=["upload"], label="Image",
                    elem_id="image",
                )  # fmt: skip
                if examples:
                    gr.Examples(
                        examples=[[str(p)] for p in examples], inputs=[image],
                        label="Genuine CLEVR images (or upload your own)", elem_id="examples",
                    )  # fmt: skip
                question = gr.Textbox(
                    label="Question", value=questions[0] if questions else "", elem_id="question"
                )
                if questions:
                    gr.Examples(
                        examples=[[q] for q in questions], inputs=[question], label="Questions"
                    )
                allow_unknown = gr.Checkbox(
                    label="--allow-unknown: read words outside the model's vocabulary as <UNK>",
                    elem_id="allow-unknown",
                )
                button = gr.Button("Ask", variant="primary", elem_id="ask")
            with gr.Column():
                answer = gr.Textbox(
                    label="Answer (as filmclevr-ask prints it)", lines=8, interactive=False,
                    elem_id="answer",
                )  # fmt: skip
                top = gr.Label(num_top_classes=demo.top, label="Top answers", elem_id="top")
                map_image = gr.Image(
                    type="filepath", label="Figure 4: where the classifier looks",
                    interactive=False, elem_id="map",
                )  # fmt: skip
        with gr.Accordion("Words this model knows", open=False):
            gr.Markdown(", ".join(demo.words()))
        inputs, outputs = [image, question, allow_unknown], [answer, top, map_image]
        button.click(handle, inputs=inputs, outputs=outputs)
        question.submit(handle, inputs=inputs, outputs=outputs)
    return page


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="filmclevr-demo", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (e.g. models/film.pt)")
    p.add_argument(
        "--examples",
        type=Path,
        default=None,
        help="folder of PNG or JPEG images offered as examples\n"
        f"(default: {DEFAULT_EXAMPLES}, when there)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=ask.positive_int, default=None, help="port (default: 7860, or the next free)"
    )
    p.add_argument(
        "--device", default="cpu", help='torch device: "cpu" (default), "cuda", "cuda:N", "auto"'
    )
    return p


def _serve(args: argparse.Namespace) -> int:
    import importlib.util

    if importlib.util.find_spec("gradio") is None:  # before the model loads: say it at once
        raise ValueError(INSTALL_HINT)
    demo = DemoModel(args.model, args.device)
    if args.examples is not None:
        examples = example_images(args.examples)
    else:
        examples = example_images(DEFAULT_EXAMPLES) if DEFAULT_EXAMPLES.is_dir() else []
    page = build_page(demo, examples)
    allowed = sorted({str(p.parent.resolve()) for p in examples})
    page.launch(server_name=args.host, server_port=args.port, allowed_paths=allowed)
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    return ask.exit_status(lambda: _serve(args))


if __name__ == "__main__":
    sys.exit(main())
