"""Ask a trained FiLM model questions about any image.

    filmclevr-ask --model models/film.pt --image photo.png --question "How many cubes are there?"
    filmclevr-ask --model models/film.pt --image photo.jpg --question "Is there a cube?" \\
        --question "What color is the sphere?" --top 3 --map maps/photo.png
    filmclevr-ask --model models/film.pt --image photo.png --questions-file questions.txt --json
    python -m filmclevr.ask ...   (the same)

The image (PNG or JPEG, any size, RGBA, RGB, L or P) gets the pipeline's exact preprocessing for
this model: `resize.resize_pixels` (RGB, then bicubic to the checkpoint's `image_size` square);
the pipeline's PNG round trip after it is lossless, so the model sees the pixels it would have
seen in its own data. Each question is tokenized as the pipeline does (`tokenize.tokenize`, with
the checkpoint's vocabulary, wrapped in <START> ... <END>; only leading and trailing whitespace
is dropped first), and all questions are answered in one batch (padded with <NULL>).

Probabilities are the softmax over all the model's answer outputs. A word outside the model's
vocabulary is an error that names it and suggests close words, unless --allow-unknown reads it
as <UNK> (the output then lists it). --map writes the paper's Figure 4 for each question: where
the classifier's max-pooled features come from (per location, how many of its channels peak
there), upsampled over the original image, beside the last ResBlock's mean activation.

A shipped checkpoint (under `results/reference/`, whose MANIFEST.sha256.json lists it) is
refused when its SHA-256 is not the listed one, naming the file and both digests; a checkpoint
of your own, under no manifest, is loaded unchecked.

Exit status: 0 answered; 1 bad input (one line on stderr: a missing or corrupt checkpoint, an
unreadable image or questions file, an empty question, an unknown word, no question, a shipped
checkpoint whose SHA-256 is not its manifest's); 2 usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from filmclevr import analysis, figures, resize
from filmclevr.checkpoint import model_from_checkpoint
from filmclevr.distributed import resolve_device
from filmclevr.manifest import verify_checkpoint
from filmclevr.model import FiLMedNet
from filmclevr.tokenize import END, SPECIAL_TOKENS, START, UNK, tokenize

DEFAULT_TOP = 5
_NOT_WORDS = ("", ",", ";")  # what a question of punctuation only tokenizes to
_EMPTY_WORD = "an empty word, from two spaces in a row or a space before punctuation"


class UnknownWordsError(ValueError):
    """Words of the questions that the model's vocabulary lacks (and no --allow-unknown)."""

    def __init__(self, message: str, words: dict[str, list[int]]) -> None:
        super().__init__(message)
        self.words = words  # word -> the (1-based) numbers of the questions holding it


@dataclasses.dataclass(frozen=True)
class Encoded:
    """A batch of questions as the model reads them."""

    questions: list[str]  # as asked, surrounding whitespace dropped
    tokens: list[list[str]]  # each question's words (tokenize's output, no <START>/<END>)
    unknown_words: list[list[str]]  # each question's words read as <UNK>, first occurrence order
    indices: Tensor  # int64 (B, L): <START> ... <END>, padded with <NULL>=0
    lengths: Tensor  # int64 (B,): <START> and <END> included


@dataclasses.dataclass(frozen=True)
class Answer:
    """The model's answer to one question, with the Figure 4 maps of its forward pass."""

    question: str
    tokens: list[str]
    answer: str
    probability: float
    top: list[tuple[str, float]]  # the `top` most probable answers, most probable first
    unknown_words: list[str]
    location_counts: Tensor  # (h, w): classifier channels whose maximum is at each location
    mean_activation: Tensor  # (h, w): the last ResBlock's output, mean over channels

    def as_dict(self) -> dict[str, Any]:
        """The --json record (no maps)."""
        return {
            "question": self.question,
            "tokens": list(self.tokens),
            "answer": self.answer,
            "probability": self.probability,
            "top": [{"answer": a, "probability": p} for a, p in self.top],
            "unknown_words": list(self.unknown_words),
        }


# --- Library -------------------------------------------------------------------------------------
def load(model_path: str | Path, device: str | torch.device = "cpu") -> tuple[FiLMedNet, dict]:
    """The model of a checkpoint, in eval mode on `device` ("cpu", "cuda", "auto", ...).

    A shipped checkpoint (one under a folder with a manifest, `results/reference/`) must have
    the SHA-256 its manifest lists (`manifest.verify_checkpoint`); any other loads unchecked.

    Returns:
        (model, the checkpoint dict: `vocab`, `model_config`, ...).

    Raises:
        FileNotFoundError: no file at `model_path`.
        ValueError: not a (usable) filmclevr checkpoint, or an unusable device; names the file.
        manifest.ChecksumMismatchError: a shipped checkpoint whose bytes changed (a
            ValueError naming the file, the expected and the actual digest).
    """
    if isinstance(device, str):
        device = resolve_device(device, setting="--device")
    if Path(model_path).is_file():  # a missing file: load_checkpoint's own message
        verify_checkpoint(model_path)
    try:
        return model_from_checkpoint(model_path, device)
    except FileNotFoundError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if first.startswith(str(model_path)):  # load_checkpoint's own message names the file
            raise ValueError(first) from None
        # The right format, but not the model this code builds.
        raise ValueError(f"{model_path}: not a usable model checkpoint ({first})") from None


def preprocess(image_path: str | Path, image_size: int) -> tuple[Tensor, np.ndarray]:
    """An image file as the model of `image_size` sees it, and as it was.

    Returns:
        (uint8 (3, S, S) tensor: `resize.resize_pixels`, exactly the pipeline's step,
         the original image as RGB uint8 (H, W, 3), for the maps).

    Raises:
        ValueError: the file is missing, not an image, damaged, or of pixels without a fixed
            range (32-bit integer or floating point) (names it).
    """
    with resize.open_image(Path(image_path)) as image:
        rgb = resize.to_rgb(image)  # 16-bit scaled, not clipped; no fixed range: refused
    original = np.array(rgb)
    resized = resize.resize_pixels(rgb, image_size)
    pixels = np.ascontiguousarray(np.asarray(resized).transpose(2, 0, 1))  # as the shard loader
    return torch.from_numpy(pixels), original


def known_words(vocab: Mapping[str, int]) -> list[str]:
    """The words of a question vocabulary, in its order: no special tokens, no punctuation."""
    return [w for w in vocab if w not in SPECIAL_TOKENS and w not in _NOT_WORDS]


def close_words(word: str, vocab: Mapping[str, int], n: int = 3) -> list[str]:
    """Up to `n` words of `vocab` close to `word`: same letters in another case, then difflib's."""
    words = known_words(vocab)
    same = [w for w in words if w.lower() == word.lower() and w != word]
    near = difflib.get_close_matches(word, words, n=n)
    return list(dict.fromkeys(same + near))[:n]


def _unknown_message(words: dict[str, list[int]], vocab: Mapping[str, int], several: bool) -> str:
    parts = []
    for word, numbers in words.items():
        where = f" in question {', '.join(map(str, numbers))}" if several else ""
        close = close_words(word, vocab)
        hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "no close word"
        parts.append(f"{word!r}{where} ({_EMPTY_WORD if word == '' else hint})")
    noun = "word" if len(words) == 1 else "words"
    return (
        f"unknown {noun}, not in the model's vocabulary: {', '.join(parts)}; "
        "--allow-unknown reads unknown words as <UNK>"
    )


def encode(
    questions: Sequence[str], vocab: Mapping[str, int], allow_unknown: bool = False
) -> Encoded:
    """Questions -> the model's token batch, tokenized as the pipeline does.

    Args:
        questions: the questions; leading and trailing whitespace is dropped (a trailing space
            would be an empty-string token), everything else is tokenized as `tokenize.tokenize`.
        vocab: the checkpoint's `vocab["question_token_to_idx"]`.
        allow_unknown: read words outside `vocab` as <UNK> instead of raising.

    Raises:
        ValueError: no questions, or a question without words (empty, or punctuation only).
        UnknownWordsError: words outside `vocab`, unless `allow_unknown`; the message names them
            and suggests close words of the vocabulary.
    """
    if not questions:
        raise ValueError("no question given")
    texts = [q.strip() for q in questions]
    several = len(texts) > 1
    tokens, unknown, rows = [], [], []
    missing: dict[str, list[int]] = {}
    for number, text in enumerate(texts, start=1):
        words = tokenize(text)
        if all(w in _NOT_WORDS for w in words):
            which = f"question {number}" if several else "the question"
            raise ValueError(f"{which} {questions[number - 1]!r} is empty: it has no words")
        new = list(dict.fromkeys(w for w in words if w not in vocab))
        for word in new:
            missing.setdefault(word, []).append(number)
        tokens.append(words)
        unknown.append(new)
        rows.append([START, *(vocab.get(w, UNK) for w in words), END])
    if missing and not allow_unknown:
        raise UnknownWordsError(_unknown_message(missing, vocab, several), missing)
    lengths = [len(r) for r in rows]
    indices = torch.zeros((len(rows), max(lengths)), dtype=torch.int64)  # <NULL>=0 padding
    for k, row in enumerate(rows):
        indices[k, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return Encoded(texts, tokens, unknown, indices, torch.tensor(lengths, dtype=torch.int64))


def answer_words(checkpoint: Mapping[str, Any]) -> list[str]:
    """The answer of each model output, in output order (the checkpoint's answer vocabulary)."""
    words = {i: w for w, i in checkpoint["vocab"]["answer_token_to_idx"].items()}
    return [words[i] for i in range(len(words))]


def real_answers(checkpoint: Mapping[str, Any]) -> list[str]:
    """The answers a model can give: its outputs but the special tokens (<NULL>, ...)."""
    return [a for a in answer_words(checkpoint) if a not in SPECIAL_TOKENS]


def answer(
    model: FiLMedNet,
    image: Tensor,
    encoded: Encoded,
    answers: Sequence[str],
    top: int = DEFAULT_TOP,
) -> list[Answer]:
    """Answer every question of `encoded` about `image` in one batch.

    Args:
        model: in eval mode (`load`).
        image: uint8 (3, S, S), S the model's image size (`preprocess`).
        encoded: the questions (`encode`).
        answers: the answer of each model output (`answer_words`).
        top: how many of the most probable answers to list (at most all of them).
    """
    size = model.config.image_size
    if tuple(image.shape) != (3, size, size):
        raise ValueError(f"image must be (3, {size}, {size}), got {tuple(image.shape)}")
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    device = next(model.parameters()).device
    batch = len(encoded.questions)
    images = image.to(device).unsqueeze(0).repeat(batch, 1, 1, 1)
    with torch.inference_mode():
        t = analysis.trace(model, images, encoded.indices.to(device), encoded.lengths.to(device))
        probabilities = t.logits.float().softmax(dim=1).cpu()
        counts = analysis.max_location_counts(t.classifier_map).cpu()
        means = t.last_block.float().mean(dim=1).cpu()
    best = probabilities.topk(min(top, probabilities.shape[1]), dim=1)
    predicted = probabilities.argmax(dim=1)  # as evaluation predicts
    results = []
    for k in range(batch):
        listed = zip(best.indices[k].tolist(), best.values[k].tolist(), strict=True)
        results.append(
            Answer(
                question=encoded.questions[k],
                tokens=encoded.tokens[k],
                answer=answers[int(predicted[k])],
                probability=float(probabilities[k, predicted[k]]),
                top=[(answers[i], p) for i, p in listed],
                unknown_words=encoded.unknown_words[k],
                location_counts=counts[k],
                mean_activation=means[k],
            )
        )
    return results


def _example(result: Answer, original: np.ndarray | None = None) -> dict[str, Any]:
    """The answer as a Figure 4 example of `figures` (no true answer: a user's image)."""
    example = {
        "question": result.question,
        "answer": None,
        "predicted": result.answer,
        "probability": result.probability,
    }
    if original is not None:
        example["overlay"] = analysis.overlay(original, result.location_counts)
        example["mean_overlay"] = analysis.overlay(original, result.mean_activation)
    return example


def map_title(result: Answer) -> str:
    """The map's title: the question, the prediction and its probability (no true answer)."""
    return figures.example_title(_example(result))


def write_map(result: Answer, original: np.ndarray, out_png: str | Path) -> None:
    """Figure 4 for one answer: the classifier's max-location counts over the original image,
    beside the last ResBlock's mean activation, titled with the question and the prediction."""
    figures.plot_example_map(_example(result, original), Path(out_png))


def map_paths(out_png: str | Path, count: int) -> list[Path]:
    """Where the maps of `count` questions go: `out_png` itself for one, else out-1.png, ..."""
    out = Path(out_png)
    if count == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(1, count + 1)]


def read_questions_file(path: str | Path) -> list[str]:
    """The questions of a text file, one per line, blank lines ignored.

    Raises:
        ValueError: the file is missing, unreadable, not UTF-8 text, or holds no question.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{path}: questions file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read questions file ({e})") from None
    questions = [line for line in text.splitlines() if line.strip()]
    if not questions:
        raise ValueError(f"{path}: no questions in the file (one per line, blank lines ignored)")
    return questions


def format_answers(results: Sequence[Answer], maps: Sequence[Path] = ()) -> str:
    """The readable report: per question its answer and the top answers with probabilities."""
    blocks = []
    for k, result in enumerate(results):
        width = max(len(a) for a, _ in result.top)
        lines = [
            f"Question: {result.question}",
            f"Answer:   {result.answer} (p={result.probability:.3f})",
        ]
        label = f"Top {len(result.top)}:"
        for n, (word, p) in enumerate(result.top):
            lines.append(f"{label if n == 0 else '':<10}{word:<{width}}  {p:.3f}")
        if result.unknown_words:
            words = ", ".join(map(repr, result.unknown_words))
            lines.append(f"Unknown:  {words} (read as <UNK>)")
        if k < len(maps):
            lines.append(f"Map:      {maps[k]}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# --- Command line --------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="filmclevr-ask", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (e.g. models/film.pt)")
    p.add_argument("--image", required=True, type=Path, help="image file (PNG or JPEG, any size)")
    p.add_argument(
        "--question", action="append", default=[], help="a question (repeat for several)"
    )
    p.add_argument(
        "--questions-file",
        type=Path,
        help="text file, one question per line (blank lines ignored), after any --question",
    )
    p.add_argument(
        "--top",
        type=positive_int,
        default=DEFAULT_TOP,
        help=f"how many of the most probable answers to list (default {DEFAULT_TOP})",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list, one object per question: question, tokens, answer, "
        "probability,\ntop [{answer, probability}], unknown_words (and map with --map)",
    )
    p.add_argument(
        "--map",
        type=Path,
        metavar="OUT.png",
        help="write the Figure 4 map of the question to OUT.png; with several questions\n"
        "OUT-1.png, OUT-2.png, ... in question order",
    )
    p.add_argument(
        "--allow-unknown",
        action="store_true",
        help="read words outside the model's vocabulary as <UNK> (listed in the output)\n"
        "instead of stopping with an error",
    )
    p.add_argument(
        "--device", default="cpu", help='torch device: "cpu" (default), "cuda", "cuda:N", "auto"'
    )
    return p


def _ask(args: argparse.Namespace) -> int:
    questions = list(args.question)
    if args.questions_file is not None:
        questions += read_questions_file(args.questions_file)
    if not questions:
        raise ValueError("no question given: use --question TEXT or --questions-file FILE")
    model, checkpoint = load(args.model, args.device)
    encoded = encode(questions, checkpoint["vocab"]["question_token_to_idx"], args.allow_unknown)
    image, original = preprocess(args.image, int(checkpoint["model_config"]["image_size"]))
    results = answer(model, image, encoded, answer_words(checkpoint), top=args.top)
    maps = map_paths(args.map, len(results)) if args.map is not None else []
    for result, path in zip(results, maps, strict=False):
        try:
            write_map(result, original, path)
        except OSError as e:
            raise ValueError(f"{path}: cannot write the map ({e})") from None
    if args.json:
        records = [r.as_dict() for r in results]
        for record, path in zip(records, maps, strict=False):
            record["map"] = str(path)
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        print(format_answers(results, maps))
    return 0


def error_line(error: Exception) -> str:
    """Bad input as the one line the tools show: `error: ...` (the demo page shows it too)."""
    message = " ".join(str(error).split("\n")) or type(error).__name__
    return f"error: {message}"


def exit_status(run: Callable[[], int]) -> int:
    """`run()`'s exit status; bad input (OSError, ValueError) is one line on stderr, no
    traceback, and status 1."""
    try:
        return run()
    except (OSError, ValueError) as e:
        print(error_line(e), file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    return exit_status(lambda: _ask(args))


if __name__ == "__main__":
    sys.exit(main())
