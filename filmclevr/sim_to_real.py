"""filmclevr-sim-to-real: how a checkpoint does on genuine CLEVR images beside mini-CLEVR ones.

    filmclevr-sim-to-real --model results/reference/demo/film.pt \\
        --genuine ../shared/clevr_genuine
    python -m filmclevr.sim_to_real ...   (the same)

One harness, two sides (three with `--re-rendered`):

- **genuine**: every image of `GENUINE/images/train/` (CLEVR v1.0 train images) with its genuine
  scene record from the one `GENUINE/scenes/CLEVR_train_scenes*.json`;
- **mini-CLEVR**: as many images of the checkpoint's own profile's validation split, images
  0, 1, 2, ...: `mini.generate.make_scene` and the renderer give exactly that split's scenes
  and images, drawn here on the fly; `--mini-images N` takes N of them instead (more than the
  genuine sample's: the difference's interval narrows to the genuine side's own sampling error);
- **re-rendered** (with `--re-rendered`, for a profile in CLEVR's look): the genuine side's scene
  records drawn by the project's renderer in CLEVR's look, each camera fitted to its record,
  asked the genuine side's very questions, so that genuine minus re-rendered is what the
  pixels alone cost, question for question.

Each image gets the same number of questions (default 10) from the same question sampler (a
`language` of `mini.generate.question_sampler`, by default the profile's), one sampler per side
seeded by (seed, side), so both sides are asked the same kind of questions. Every answer is
`executor.execute(program, scene)` on the image's scene. Images get the pipeline's exact
preprocessing (`resize.resize_pixels`, through `ask.preprocess` for files) and the questions the
pipeline's tokenization (`ask.encode`), and the model answers in batches.

A question with a word outside the checkpoint's vocabulary is an *unknown-word question*: the
model still answers it (the word read as <UNK>), but it is scored wrong, and every accuracy is
also given over the other questions.

**The prior** is the project's Q-type prior (`clevr.majority_answer_by_family`: each family's
most common answer, ties to the first word alphabetically), counted on the questions of the
profile's training split: the first `prior_train_images` (default 500) images' questions,
which `mini.generate.make_questions` reproduces exactly (the split's own seed, questions per
image, objects and question mix). That is evaluation's prior (its Q-type row), on a prefix of
the split rather than all of it (on the demo's val, 500 images give 41.7%, all 6,000 41.4%): a
model that only learned each family's usual answer in training scores it, on either side. The
same prior scores both sides, so it is fitted on neither side's questions. A family of another
language than the training split's falls back to its terminal function's majority (the report
says so). The prior is also scored over the questions without unknown words, beside the model.

**How far the sample can tell**: each side's accuracy and the difference between the sides
come with a 95% interval from resampling each side's images, every question of an image with
it (`image_bootstrap`): questions about one image are not independent, and with about a hundred
questions a column, a few points either way is within what another sample would give.

Outputs, each written atomically into `--out` (default: the checkpoint's folder):
`sim_to_real.json` (every number with its context), `sim_to_real.md` (the table) and
`sim_to_real_colors.png` (true vs answered colour on query_color questions, both sides).

Exit status: 0 measured; 1 bad input (one line on stderr naming the file and the problem); 2
usage.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from filmclevr import ask, clevr, figures, resize
from filmclevr.distributed import machine_description
from filmclevr.evaluate import compute_metrics, git_commit
from filmclevr.executor import execute
from filmclevr.fileio import file_sha256, read_json_value, write_json_atomic, write_text_atomic
from filmclevr.mini import generate
from filmclevr.mini.generate import SPLIT_SETTINGS, derive_seed, make_questions, make_scene
from filmclevr.mini.questions import QuestionMix
from filmclevr.params import load_params

log = logging.getLogger(__name__)

GENUINE = "genuine"
MINI = "mini-CLEVR"
SIDES: tuple[str, ...] = (GENUINE, MINI)
RE_RENDERED = "re-rendered"  # the optional third side: the genuine scenes in the CLEVR look
GENUINE_SPLIT = "train"  # the genuine sample's scenes are public for train images only
DEFAULT_QUESTIONS_PER_IMAGE = 10
DEFAULT_SEED = 0
DEFAULT_PRIOR_TRAIN_IMAGES = 500  # prior within ~0.5 points of the whole split's (docstring)
DEFAULT_BATCH_SIZE = 256
BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE_LEVEL = 0.95
QUERIED_ATTRIBUTES: tuple[str, ...] = ("query_color", "query_shape", "query_size", "query_material")
OTHER_ANSWER = "other"  # a query_color answer that is no colour, or an unknown-word question's
OUTPUT_JSON = "sim_to_real.json"
OUTPUT_MD = "sim_to_real.md"
OUTPUT_COLORS = "sim_to_real_colors.png"
OUTPUT_QUESTIONS = "sim_to_real_questions.json"


# --- Question samplers, by language --------------------------------------------------------------
class QuestionSource(Protocol):
    """What the harness needs of a sampler: `sample(scene, n)` -> release-format questions
    (`question`, `question_family_index`, `program`, ...), one sampler per side."""

    def sample(self, scene: dict[str, Any], n: int) -> list[dict[str, Any]]: ...


SamplerFactory = Callable[[random.Random, QuestionMix], QuestionSource]


def _sampler_of(language: str) -> SamplerFactory:
    return lambda rng, question_mix: generate.question_sampler(rng, question_mix, language)


# One entry per question language of the generator (`mini.generate.LANGUAGES`).
SAMPLERS: dict[str, SamplerFactory] = {name: _sampler_of(name) for name in generate.LANGUAGES}


def question_sampler(
    language: str, rng: random.Random, question_mix: QuestionMix
) -> QuestionSource:
    """A question sampler speaking `language` (a key of `SAMPLERS`), drawing from `rng`."""
    try:
        factory = SAMPLERS[language]
    except KeyError:
        raise ValueError(
            f"unknown question language {language!r}; known: {', '.join(SAMPLERS)}"
        ) from None
    return factory(rng, question_mix)


def side_rng(seed: int, side: str) -> random.Random:
    """The one source of a side's questions: the same scheme for both sides."""
    return random.Random(derive_seed(seed, "sim_to_real", side, "questions"))


# --- The mini-CLEVR profile -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SplitSettings:
    """One mini-CLEVR split's generator settings (`mini.generate.SPLIT_SETTINGS`)."""

    name: str
    questions_per_image: int
    min_objects: int
    max_objects: int
    question_mix: QuestionMix = "uniform"
    images: int | None = None  # the split's size (`get_data.mini.images`); None: not known


@dataclasses.dataclass(frozen=True)
class MiniProfile:
    """What the harness needs of a checkpoint's profile: the generator's seed, its training
    split (for the prior) and its validation split (the mini-CLEVR side's images)."""

    seed: int
    train: SplitSettings
    val: SplitSettings
    image_size: int | None = None  # resize_images.image_size, checked against the checkpoint
    source: str = ""  # the parameters file, for messages and the report
    name: str = ""  # the parameter profile's name
    look: str = "mini"  # get_data.mini.look: how the profile's scenes are drawn and rendered
    language: str = "mini"  # get_data.mini.language: the training split's questions

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def profile_from_params(path: str | Path) -> MiniProfile:
    """The mini-CLEVR profile of a parameters file: seed, and the settings of its first split
    (training) and second split (validation), split_settings applied as the generator does.

    Raises:
        ParamsError (a ValueError): the file is missing or invalid (names it).
        ValueError: not a mini-CLEVR profile, or fewer than two splits (names the file).
    """
    params = load_params(path)
    data = params["get_data"]
    if data["source"] != "mini":
        raise ValueError(
            f"{path}: get_data.source is {data['source']!r}; the mini-CLEVR side needs a mini "
            "profile (give one with --params)"
        )
    splits = list(data["splits"])
    if len(splits) < 2:
        raise ValueError(f"{path}: get_data.splits needs a training and a validation split")
    mini = data["mini"]
    defaults = {k: mini[k] for k in SPLIT_SETTINGS if k in mini}
    own = mini.get("split_settings") or {}

    def settings(split: str) -> SplitSettings:
        size = mini["images"].get(split)
        return SplitSettings(name=split, **{**defaults, **own.get(split, {})}, images=size)

    return MiniProfile(
        seed=int(mini["seed"]),
        train=settings(splits[0]),
        val=settings(splits[1]),
        image_size=int(params["resize_images"]["image_size"]),
        source=str(path),
        name=str(params.get("profile", "")),
        look=str(mini.get("look", "mini")),
        language=str(mini.get("language", "mini")),
    )


def default_params_path(model_path: str | Path) -> Path:
    """The params.yaml beside a reference checkpoint if there is one, else ./params.yaml."""
    beside = Path(model_path).parent / "params.yaml"
    return beside if beside.is_file() else Path("params.yaml")


# --- Images ---------------------------------------------------------------------------------------
def render_mini_clevr_image(scene: dict[str, Any], look: str = "mini") -> Image.Image:
    """The mini-CLEVR image of a scene in the profile's look, as the generator draws it."""
    return generate.render_image(scene, look)


def model_input(image: Image.Image, image_size: int) -> Tensor:
    """An in-memory image as the model sees it: `resize.resize_pixels` (the pipeline's one
    step; its PNG round trip is lossless), channels first, as `ask.preprocess` gives a file."""
    resized = resize.resize_pixels(image, image_size)
    return torch.from_numpy(np.ascontiguousarray(np.asarray(resized).transpose(2, 0, 1)))


@dataclasses.dataclass(frozen=True)
class GenuineImage:
    """A genuine image file and its genuine scene record."""

    scene: dict[str, Any]
    path: Path


def find_scenes_file(genuine_root: str | Path, split: str = GENUINE_SPLIT) -> Path:
    """The one `scenes/CLEVR_{split}_scenes*.json` of a genuine sample folder."""
    folder = Path(genuine_root) / "scenes"
    found = sorted(folder.glob(f"CLEVR_{split}_scenes*.json"))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ValueError(
            f"{folder}: expected one CLEVR_{split}_scenes*.json scene file, found {what}"
            + (f" ({', '.join(p.name for p in found)})" if found else "")
        )
    return found[0]


def _check_scene(scene: Any, scenes_file: Path, position: int) -> None:
    """A scene record the sampler and the executor can use, else an error naming it."""
    where = f"{scenes_file}: scene #{position}"
    if not isinstance(scene, dict):
        raise ValueError(f"{where} is not an object")
    where += f" (image_index {scene.get('image_index')})"
    if not isinstance(scene.get("relationships"), dict) or any(
        r not in scene["relationships"] for r in clevr.RELATIONS
    ):
        raise ValueError(f"{where}: no relationships {list(clevr.RELATIONS)}")
    objects = scene.get("objects")
    if not isinstance(objects, list) or not objects:
        raise ValueError(f"{where}: no objects")
    for k, obj in enumerate(objects):
        for attribute, values in clevr.ATTRIBUTES.items():
            if not isinstance(obj, dict) or obj.get(attribute) not in values:
                value = obj.get(attribute) if isinstance(obj, dict) else obj
                raise ValueError(
                    f"{where}: object {k} {attribute} {value!r} is not one of {values}"
                )
    for relation in clevr.RELATIONS:
        if len(scene["relationships"][relation]) != len(objects):
            raise ValueError(f"{where}: relationships[{relation!r}] does not list every object")


def _image_name(split: str) -> re.Pattern[str]:
    """CLEVR's image file names of `split` (`clevr.image_filename`), the index as group 1."""
    return re.compile(rf"CLEVR_{re.escape(split)}_(\d{{6}})\.png")


def read_image_list(path: str | Path, split: str = GENUINE_SPLIT) -> list[str]:
    """The image file names listed in `path`, one per line (CLEVR_{split}_NNNNNN.png; blank
    lines and lines starting with # are skipped), sorted and each once.

    Raises:
        ValueError: a missing file, a line that is not such a name, or no names; the message
            names the file (and the line).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the image list ({e.strerror or e})") from None
    pattern = _image_name(split)
    names = set()
    for number, line in enumerate(lines, 1):
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        if pattern.fullmatch(name) is None:
            raise ValueError(f"{path}:{number}: {name!r} is not a CLEVR_{split}_NNNNNN.png name")
        names.add(name)
    if not names:
        raise ValueError(f"{path}: lists no images")
    return sorted(names)


def genuine_images(
    genuine_root: str | Path, split: str = GENUINE_SPLIT, image_list: str | Path | None = None
) -> list[GenuineImage]:
    """Every image of `genuine_root/images/{split}/` with its scene record, by image index; with
    `image_list` (`read_image_list`), only those it names (each must be there), so that CLEVR's
    release scores the very images of a sample.

    Only images that exist are measured; each must have its record in the scene file.

    Raises:
        ValueError: no or several scene files, a scene file that is missing, not JSON or not a
            release scene file, a scene record the sampler cannot use, a misnamed image, an image
            without a scene record, or no images; the message names the file.
    """
    root = Path(genuine_root)
    scenes_file = find_scenes_file(root, split)
    scenes = clevr.read_scenes(scenes_file)  # ClevrFormatError (a ValueError) names the file
    info = read_json_value(scenes_file, "info", {})
    if isinstance(info, dict) and info.get("generator") == clevr.MINI_GENERATOR:
        raise ValueError(
            f"{scenes_file}: mini-CLEVR's own scenes (info.generator {clevr.MINI_GENERATOR!r}), "
            "not genuine CLEVR: give a folder of CLEVR v1.0's files"
        )
    by_index: dict[int, dict[str, Any]] = {}
    for position, scene in enumerate(scenes):
        _check_scene(scene, scenes_file, position)
        by_index[int(scene["image_index"])] = scene
    folder = root / "images" / split
    if not folder.is_dir():
        raise ValueError(f"{folder}: image folder not found")
    pattern = _image_name(split)
    if image_list is None:
        paths = sorted(folder.iterdir())
    else:
        paths = [folder / name for name in read_image_list(image_list, split)]
        missing = [path.name for path in paths if not path.is_file()]
        if missing:
            raise ValueError(
                f"{image_list}: {len(missing)} listed images are not in {folder} "
                f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
            )
    found = []
    for path in paths:
        match = pattern.fullmatch(path.name)
        if match is None:
            raise ValueError(f"{path}: not named CLEVR_{split}_NNNNNN.png")
        index = int(match.group(1))
        if index not in by_index:
            raise ValueError(f"{path}: no scene record for image {index} in {scenes_file}")
        found.append(GenuineImage(by_index[index], path))
    if not found:
        raise ValueError(f"{folder}: no CLEVR_{split}_NNNNNN.png images")
    return found


# --- Questions and answers ------------------------------------------------------------------------
@dataclasses.dataclass
class SideData:
    """One side's model inputs: its images (uint8 [n, 3, S, S]) and per question a record."""

    name: str
    images: Tensor
    records: list[dict[str, Any]]


def ask_about(
    sampler: QuestionSource,
    scene: dict[str, Any],
    image_row: int,
    questions_per_image: int,
    first_index: int,
) -> list[dict[str, Any]]:
    """Up to `questions_per_image` questions on `scene`, each answered by the executor, as
    per-question records (`question_index` from `first_index`; `image_row` is the image's
    position in its side's image tensor)."""
    records = []
    for k, q in enumerate(sampler.sample(scene, questions_per_image)):
        program = q["program"]
        function = program[-1]["function"]
        records.append(
            {
                "question_index": first_index + k,
                "image_row": image_row,
                "image_index": int(scene["image_index"]),
                "question": q["question"],
                "family": int(q["question_family_index"]),
                "function": function,
                "type": clevr.question_type(program),
                "answer": execute(program, scene),  # the executor's, not the sampler's word
            }
        )
    return records


def genuine_side(
    images: Sequence[GenuineImage],
    sampler: QuestionSource,
    image_size: int,
    questions_per_image: int,
    progress: bool = True,
) -> SideData:
    """The genuine images preprocessed as `filmclevr-ask` does, with their questions."""
    pixels, records = [], []
    for row, item in enumerate(tqdm(images, desc=f"{GENUINE} images", disable=not progress)):
        pixels.append(ask.preprocess(item.path, image_size)[0])
        for record in ask_about(sampler, item.scene, row, questions_per_image, len(records)):
            record["image_filename"] = item.path.name
            records.append(record)
    return SideData(GENUINE, torch.stack(pixels), records)


def re_rendered_side(
    genuine: SideData, images: Sequence[GenuineImage], image_size: int, progress: bool = True
) -> SideData:
    """The genuine side's scenes drawn by the project's renderer in CLEVR's look (each camera
    fitted to its record's `pixel_coords`), asked the genuine side's very questions: its
    accuracy against the genuine side's is the pixels' share of the gap, question for question."""
    pixels = [
        model_input(render_mini_clevr_image(item.scene, "clevr"), image_size)
        for item in tqdm(images, desc=f"{RE_RENDERED} images", disable=not progress)
    ]
    records = [
        {k: v for k, v in record.items() if k != "image_filename"} for record in genuine.records
    ]
    return SideData(RE_RENDERED, torch.stack(pixels), records)


def split_scene(profile: MiniProfile, split: SplitSettings, index: int) -> dict[str, Any]:
    """Scene `index` of one of the profile's splits, exactly the generator's."""
    return make_scene(
        profile.seed,
        split.name,
        index,
        min_objects=split.min_objects,
        max_objects=split.max_objects,
        look=profile.look,
    )


def mini_clevr_side(
    profile: MiniProfile,
    count: int,
    sampler: QuestionSource,
    image_size: int,
    questions_per_image: int,
    progress: bool = True,
) -> SideData:
    """Images 0 .. count-1 of the profile's validation split, rendered, with their questions."""
    pixels, records = [], []
    for row in tqdm(range(count), desc=f"{MINI} images", disable=not progress):
        scene = split_scene(profile, profile.val, row)
        pixels.append(model_input(render_mini_clevr_image(scene, profile.look), image_size))
        for record in ask_about(sampler, scene, row, questions_per_image, len(records)):
            record["image_filename"] = clevr.image_filename(profile.val.name, row)
            records.append(record)
    return SideData(MINI, torch.stack(pixels), records)


def answer_side(
    model: torch.nn.Module,
    checkpoint: Mapping[str, Any],
    side: SideData,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
) -> None:
    """Fill in each record's `predicted` answer word and `unknown_words`, in batches of
    `batch_size` questions (each question with its image), as evaluation predicts (argmax)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    vocab = checkpoint["vocab"]["question_token_to_idx"]
    words = ask.answer_words(checkpoint)
    known_answers = set(words)
    device = next(model.parameters()).device
    records = side.records
    bar = tqdm(total=len(records), desc=f"{side.name} answers", disable=not progress)
    with bar, torch.inference_mode():
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            encoded = ask.encode([r["question"] for r in chunk], vocab, allow_unknown=True)
            rows = torch.tensor([r["image_row"] for r in chunk], dtype=torch.int64)
            logits = model(
                side.images[rows].to(device),
                encoded.indices.to(device),
                encoded.lengths.to(device),
            )
            for record, answer, unknown in zip(
                chunk, logits.argmax(dim=1).tolist(), encoded.unknown_words, strict=True
            ):
                record["predicted"] = words[answer]
                record["unknown_words"] = list(unknown)
                record["correct"] = not unknown and words[answer] == record["answer"]
                record["answer_in_vocabulary"] = record["answer"] in known_answers
            bar.update(len(chunk))


# --- Scores ---------------------------------------------------------------------------------------
Prior = Callable[[int, str], str]  # (family, terminal function) -> answer


def training_prior(
    profile: MiniProfile, images: int = DEFAULT_PRIOR_TRAIN_IMAGES, language: str | None = None
) -> tuple[Prior, int]:
    """The Q-type prior counted on the first `images` images' questions of the profile's
    training split (regenerated exactly: `mini.generate.make_questions`), for questions of
    `language`; returns (predict, the number of training questions counted)."""
    if images < 1:
        raise ValueError(f"prior_train_images must be at least 1, got {images}")
    train = profile.train
    if train.images is not None and images > train.images:
        raise ValueError(
            f"{profile.source or 'profile'}: prior_train_images is {images}, but the training "
            f"split {train.name!r} has {train.images} images: give at most that many"
        )
    scenes = [split_scene(profile, train, i) for i in range(images)]
    questions = make_questions(
        scenes,
        seed=profile.seed,
        split=train.name,
        questions_per_image=train.questions_per_image,
        question_mix=train.question_mix,
        language=profile.language,
    )
    language = profile.language if language is None else language
    # Families are numbered per language: keyed by (language, family), a family of another
    # language is absent and falls back to its terminal function's training majority.
    predict = clevr.majority_answer_by_family(
        ((profile.language, q["question_family_index"]), q["program"][-1]["function"], q["answer"])
        for q in questions
    )
    return (lambda family, function: predict((language, family), function)), len(questions)


def prior_description(profile: MiniProfile, language: str, train_images: int) -> str:
    """What `training_prior` counted, in words: which answer it gives a question."""
    how = (
        "clevr.majority_answer_by_family (each family's most common answer) counted on the "
        f"questions of the first {train_images} images of the profile's training split "
        f"{profile.train.name!r}, regenerated exactly; the same prior scores both sides"
    )
    if language != profile.language:
        how += (
            f". The training questions are in language {profile.language!r} and these in "
            f"{language!r}, whose families are numbered apart: each question gets its terminal "
            "function's most common training answer instead"
        )
    return how


def _scored_predictions(records: Iterable[dict[str, Any]]) -> dict[int, str | None]:
    """The answers scored: an unknown-word question's is None, which is never right."""
    return {r["question_index"]: None if r["unknown_words"] else r["predicted"] for r in records}


def color_confusion(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """True colour (rows) vs answered colour (columns) over the query_color questions; an
    answer that is no colour, and every unknown-word question's, is counted as `OTHER_ANSWER`.
    The diagonal's sum is the number of query_color questions scored right."""
    from sklearn.metrics import confusion_matrix

    colors = list(clevr.ATTRIBUTES["color"])
    asked = [r for r in records if r["function"] == "query_color"]
    true = [r["answer"] for r in asked]
    answered = [
        r["predicted"] if not r["unknown_words"] and r["predicted"] in colors else OTHER_ANSWER
        for r in asked
    ]
    labels = [*colors, OTHER_ANSWER]
    matrix = (
        confusion_matrix(true, answered, labels=labels)
        if asked
        else np.zeros((len(labels), len(labels)), dtype=np.int64)
    )
    return {
        "true": colors,
        "answered": labels,
        "matrix": matrix[: len(colors)].tolist(),  # a true answer is always a colour
    }


def score_side(records: list[dict[str, Any]], prior: Prior) -> dict[str, Any]:
    """One side's numbers: the model's accuracy (`evaluate.compute_metrics`: overall, per column,
    per terminal function, per family, with the questions behind each), the same over questions
    without unknown words, the prior's (over all questions and over those), unknown words and
    the colour confusion."""
    known = [r for r in records if not r["unknown_words"]]
    unknown_words = Counter(w for r in records for w in r["unknown_words"])
    prior_predictions = {r["question_index"]: prior(r["family"], r["function"]) for r in records}
    return {
        "images": len({r["image_row"] for r in records}),
        "questions": len(records),
        "model": compute_metrics(records, _scored_predictions(records)),
        "model_known_words": compute_metrics(known, _scored_predictions(known)) if known else None,
        "prior": compute_metrics(records, prior_predictions),
        # the prior answers an unknown-word question too: over the same questions as the
        # model's known-word numbers, so that model and prior compare like with like
        "prior_known_words": compute_metrics(known, prior_predictions) if known else None,
        "unknown_word_questions": len(records) - len(known),
        "unknown_words": dict(sorted(unknown_words.items())),
        # Right answers the model cannot give: its answer vocabulary (its training answers)
        # lacks them, so they are scored wrong whatever it sees.
        "answers_outside_vocabulary": sum(not r["answer_in_vocabulary"] for r in records),
        "color_confusion": color_confusion(records),
    }


# --- The measurement ------------------------------------------------------------------------------
@dataclasses.dataclass
class Measurement:
    """The report (`sim_to_real.json`) and each side's per-question records."""

    report: dict[str, Any]
    records: dict[str, list[dict[str, Any]]]


def measure(
    model_path: str | Path,
    genuine_root: str | Path,
    profile: MiniProfile,
    *,
    questions_per_image: int = DEFAULT_QUESTIONS_PER_IMAGE,
    seed: int = DEFAULT_SEED,
    language: str | None = None,
    question_mix: QuestionMix | None = None,
    prior_train_images: int = DEFAULT_PRIOR_TRAIN_IMAGES,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    progress: bool = True,
    re_rendered: bool = False,
    image_list: str | Path | None = None,
    mini_images: int | None = None,
) -> Measurement:
    """Score the checkpoint at `model_path` on the genuine images of `genuine_root` and on as
    many images of `profile`'s validation split (module docstring).

    Args:
        question_mix: the sampler's mix of question types; None: the validation split's (the
            mix the checkpoint was validated on), on both sides.
        re_rendered: also score the genuine scenes re-rendered in CLEVR's look
            (`re_rendered_side`); a profile in CLEVR's look only.
        image_list: only the genuine images this file names (`read_image_list`).
        mini_images: the mini-CLEVR side's number of images; None: as many as the genuine side.

    Raises:
        FileNotFoundError, ValueError: a missing or unusable checkpoint, genuine sample or
            setting; the message names the file.
    """
    if questions_per_image < 1:
        raise ValueError(f"questions_per_image must be at least 1, got {questions_per_image}")
    started = time.perf_counter()
    mix = profile.val.question_mix if question_mix is None else question_mix
    language = profile.language if language is None else language
    question_sampler(language, random.Random(0), mix)  # an unknown language fails before work
    if re_rendered and profile.look != "clevr":
        raise ValueError(
            f"{profile.source or 'profile'}: the re-rendered side draws the genuine scenes in "
            f"CLEVR's look, but this profile's look is {profile.look!r} (get_data.mini.look)"
        )
    if mini_images is not None and mini_images < 1:
        raise ValueError(f"mini_images must be at least 1, got {mini_images}")
    images = genuine_images(genuine_root, image_list=image_list)  # fails before the model loads
    mini_count = len(images) if mini_images is None else mini_images
    model, checkpoint = ask.load(model_path, device)
    image_size = int(checkpoint["model_config"]["image_size"])
    if profile.image_size is not None and profile.image_size != image_size:
        raise ValueError(
            f"{profile.source or 'profile'}: resize_images.image_size is {profile.image_size} but "
            f"{model_path} reads {image_size}-pixel images: not this checkpoint's profile"
        )
    if profile.val.images is not None and mini_count > profile.val.images:
        wanted = (
            f"{mini_count} images (--mini-images)"
            if mini_images is not None
            else f"as many images as the genuine sample's {len(images)} ({genuine_root}"
            + (f", the images {image_list} names" if image_list is not None else "")
            + ")"
        )
        raise ValueError(
            f"{profile.source or 'profile'}: the mini-CLEVR side needs {wanted}, but the "
            f"validation split {profile.val.name!r} has {profile.val.images}: "
            + (
                "ask for fewer"
                if mini_images is not None
                else "narrow the genuine side with --images"
            )
        )
    _check_checkpoint_profile(checkpoint, model_path, profile)
    prior, prior_questions = training_prior(profile, prior_train_images, language)
    sides = {
        GENUINE: genuine_side(
            images,
            question_sampler(language, side_rng(seed, GENUINE), mix),
            image_size,
            questions_per_image,
            progress,
        ),
        MINI: mini_clevr_side(
            profile,
            mini_count,
            question_sampler(language, side_rng(seed, MINI), mix),
            image_size,
            questions_per_image,
            progress,
        ),
    }
    if re_rendered:
        sides[RE_RENDERED] = re_rendered_side(sides[GENUINE], images, image_size, progress)
    for side in sides.values():
        answer_side(model, checkpoint, side, batch_size, progress)
    scores = {name: score_side(side.records, prior) for name, side in sides.items()}
    report = {
        "checkpoint": {
            "path": str(model_path),
            "sha256": file_sha256(model_path),
            "epoch": checkpoint.get("epoch"),
            "image_size": image_size,
            "profile": checkpoint.get("profile"),  # None: written before train recorded it
        },
        "params": profile.as_dict(),
        "seed": seed,
        "questions_per_image": questions_per_image,
        "language": language,
        "question_mix": mix if isinstance(mix, str) else dict(mix),
        "genuine": {
            "root": str(genuine_root),
            "split": GENUINE_SPLIT,
            "images": len(images),
            **({"image_list": str(image_list)} if image_list is not None else {}),
        },
        "mini_clevr": {"split": profile.val.name, "images": mini_count},
        "prior": {
            "how": prior_description(profile, language, prior_train_images),
            "train_images": prior_train_images,
            "train_questions": prior_questions,
        },
        "sides": scores,
        "difference": difference(scores[GENUINE]["model"], scores[MINI]["model"]),
        "intervals": image_bootstrap(
            sides[GENUINE].records, sides[MINI].records, seed=seed, names=(GENUINE, MINI)
        ),
        **(
            {
                # genuine minus re-rendered: the pixels' share of the gap; re-rendered minus
                # mini-CLEVR: the rest (genuine scenes and their questions against generated)
                "pixels_difference": difference(
                    scores[GENUINE]["model"], scores[RE_RENDERED]["model"]
                ),
                "scenes_difference": difference(
                    scores[RE_RENDERED]["model"], scores[MINI]["model"]
                ),
                # first: genuine, second: re-rendered
                "pixels_paired_test": paired_difference(
                    sides[GENUINE].records, sides[RE_RENDERED].records
                ),
            }
            if re_rendered
            else {}
        ),
        "commit": git_commit(),
        "machine": machine_description(next(model.parameters()).device),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log.info("measured in %.1f s", report["seconds"])
    return Measurement(report, {name: side.records for name, side in sides.items()})


def _check_checkpoint_profile(
    checkpoint: Mapping[str, Any], model_path: str | Path, profile: MiniProfile
) -> None:
    """Refuse a profile other than the one the checkpoint records (`train.train` records it;
    a checkpoint written before it did cannot tell, and is measured against the profile given)."""
    trained_by = checkpoint.get("profile")
    if trained_by is not None and profile.name and trained_by != profile.name:
        raise ValueError(
            f"{model_path} was trained by profile {trained_by!r}, but "
            f"{profile.source or 'the parameters'} is profile {profile.name!r}: its mini-CLEVR "
            f"side and prior would be another profile's (give --params config/{trained_by}.yaml "
            "or that run's params.yaml)"
        )


def difference(genuine: Mapping[str, Any], mini: Mapping[str, Any]) -> dict[str, Any]:
    """Genuine minus mini-CLEVR accuracy, in points, overall, per column and per function."""

    def minus(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else round(a - b, 2)

    return {
        "overall": minus(genuine["overall"], mini["overall"]),
        "columns": {k: minus(genuine["columns"][k], mini["columns"][k]) for k in mini["columns"]},
        "functions": {
            k: minus(genuine["functions"][k], mini["functions"][k]) for k in mini["functions"]
        },
    }


def _per_image_counts(records: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """(right, asked): per image row, the questions answered right and asked, overall (column 0)
    and per question type (`clevr.QUESTION_TYPES`, columns 1 on)."""
    types = list(clevr.QUESTION_TYPES)
    images = 1 + max((r["image_row"] for r in records), default=-1)
    right = np.zeros((images, 1 + len(types)))
    asked = np.zeros_like(right)
    for r in records:
        for column in (0, 1 + types.index(r["type"])):
            asked[r["image_row"], column] += 1
            right[r["image_row"], column] += bool(r["correct"])
    return right, asked


def image_bootstrap(
    first: Sequence[Mapping[str, Any]],
    second: Sequence[Mapping[str, Any]],
    *,
    seed: int = DEFAULT_SEED,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = CONFIDENCE_LEVEL,
    names: tuple[str, str] = ("first", "second"),
) -> dict[str, Any]:
    """Percentile intervals (at `level`) of each side's accuracy and of first minus second, in
    points, overall and per column: each resample draws a side's images with replacement, every
    question of a drawn image with it, the two sides apart (they hold different images). A
    column with no question in some resamples is judged on the others; None where it has none."""
    rng = np.random.default_rng([seed, resamples])

    def accuracies(records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        right, asked = _per_image_counts(records)
        n = right.shape[0]
        if n == 0:
            return np.full((resamples, right.shape[1]), np.nan)
        draws = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)  # times drawn
        with np.errstate(invalid="ignore", divide="ignore"):
            return 100.0 * (draws @ right) / (draws @ asked)

    def interval(values: np.ndarray) -> list[float] | None:
        values = values[~np.isnan(values)]
        if values.size == 0:
            return None
        tail = 100.0 * (1.0 - level) / 2.0
        low, high = np.percentile(values, [tail, 100.0 - tail])
        return [round(float(low), 2), round(float(high), 2)]

    def by_column(values: np.ndarray) -> dict[str, Any]:
        return {
            "overall": interval(values[:, 0]),
            "columns": {c: interval(values[:, 1 + i]) for i, c in enumerate(clevr.QUESTION_TYPES)},
        }

    a, b = accuracies(first), accuracies(second)
    return {
        "how": (
            f"{level:.0%} percentile intervals over {resamples} resamples of each side's "
            "images with replacement (all of an image's questions with it, the sides apart)"
        ),
        "level": level,
        "resamples": resamples,
        "sides": {names[0]: by_column(a), names[1]: by_column(b)},
        "difference": by_column(a - b),
    }


def paired_difference(
    first: Sequence[Mapping[str, Any]], second: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """Two sides asked the very same questions (records in the same order), question for
    question, overall, per column and per function: how many each alone answered right, and
    the two-sided exact McNemar p-value (a binomial test on those discordant questions) of
    "neither side is better"."""
    from scipy.stats import binomtest

    if [r["question_index"] for r in first] != [r["question_index"] for r in second]:
        raise ValueError("paired sides must hold the same questions in the same order")
    groups: dict[str, dict[str, list[int]]] = {"overall": {"": [0, 0]}, "columns": {},
                                               "functions": {}}  # fmt: skip
    for a, b in zip(first, second, strict=True):
        if a["correct"] == b["correct"]:
            continue
        for group, key in (("overall", ""), ("columns", a["type"]), ("functions", a["function"])):
            groups[group].setdefault(key, [0, 0])[0 if a["correct"] else 1] += 1

    def test(first_only: int, second_only: int) -> dict[str, Any]:
        n = first_only + second_only
        p = binomtest(first_only, n, 0.5).pvalue if n else 1.0
        return {"first_only": first_only, "second_only": second_only, "p_value": round(p, 4)}

    return {
        "overall": test(*groups["overall"][""]),
        "columns": {k: test(*groups["columns"].get(k, [0, 0])) for k in clevr.QUESTION_TYPES},
        "functions": {k: test(*v) for k, v in sorted(groups["functions"].items())},
    }


# --- Outputs --------------------------------------------------------------------------------------
def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _signed(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None else f"{a - b:+.2f}"


def table_rows() -> list[tuple[str, str, str]]:
    """(label, group, key) of each table row: overall, the columns, the queried attributes."""
    rows = [("Overall", "overall", "")]
    rows += [
        (figures.COLUMN_TITLES[c].replace("\n", " "), "columns", c) for c in clevr.QUESTION_TYPES
    ]
    rows += [(f"{f} (Query Attribute)", "functions", f) for f in QUERIED_ATTRIBUTES]
    return rows


def _value(metrics: Mapping[str, Any] | None, group: str, key: str) -> float | None:
    if metrics is None:
        return None
    return metrics[group] if group == "overall" else metrics[group].get(key)


def _interval(by_column: Mapping[str, Any], group: str, key: str) -> list[float] | None:
    """An interval of `image_bootstrap`'s for a table row (queried attributes have none)."""
    if group == "overall":
        return by_column["overall"]
    return by_column["columns"].get(key) if group == "columns" else None


def _count(metrics: Mapping[str, Any] | None, group: str, key: str) -> int:
    if metrics is None:
        return 0
    counts = metrics["counts"]
    return counts[group] if group == "overall" else counts[group].get(key, 0)


def markdown(report: Mapping[str, Any]) -> str:
    """sim_to_real.md: per row the model's accuracy on each side, the prior's on each side,
    the difference (genuine minus mini-CLEVR, points) and the questions behind each number."""
    genuine, mini = report["sides"][GENUINE], report["sides"][MINI]
    again = report["sides"].get(RE_RENDERED)
    extra = " re-rendered | genuine minus re-rendered |" if again else ""
    head = (
        "| column | genuine | mini-CLEVR | prior (genuine) | prior (mini-CLEVR) | difference "
        f"| questions (genuine / mini-CLEVR) |{extra}\n|---|---:|---:|---:|---:|---:|---:|"
        + ("---:|---:|" if again else "")
    )
    lines = [head]
    intervals = report["intervals"]
    for label, group, key in table_rows():
        g, m = _value(genuine["model"], group, key), _value(mini["model"], group, key)
        between = _interval(intervals["difference"], group, key)
        line = (
            f"| {label} | {_cell(g)} | {_cell(m)} "
            f"| {_cell(_value(genuine['prior'], group, key))} "
            f"| {_cell(_value(mini['prior'], group, key))} | {_signed(g, m)}"
            + (f" [{between[0]:+.1f}, {between[1]:+.1f}]" if between else "")
            + " "
            f"| {_count(genuine['model'], group, key)} / {_count(mini['model'], group, key)} |"
        )
        if again:
            r = _value(again["model"], group, key)
            paired = report["pixels_paired_test"][group]
            test = paired if group == "overall" else paired.get(key)
            p_value = "" if test is None or g is None else f" (p {test['p_value']:.3f})"
            line += f" {_cell(r)} | {_signed(g, r)}{p_value} |"
        lines.append(line)
    g = _value(genuine["model_known_words"], "overall", "")
    m = _value(mini["model_known_words"], "overall", "")
    lines.append(
        f"| Overall, questions without unknown words | {_cell(g)} | {_cell(m)} "
        f"| {_cell(_value(genuine['prior_known_words'], 'overall', ''))} "
        f"| {_cell(_value(mini['prior_known_words'], 'overall', ''))} "
        f"| {_signed(g, m)} "
        f"| {_count(genuine['model_known_words'], 'overall', '')} / "
        f"{_count(mini['model_known_words'], 'overall', '')} |" + (" | |" if again else "")
    )
    checkpoint, params = report["checkpoint"], report["params"]
    notes = [
        f"Checkpoint `{checkpoint['path']}` (SHA-256 {checkpoint['sha256'][:16]}..., "
        f"{checkpoint['image_size']}-pixel inputs), commit {report['commit']}, "
        f"{report['machine']['processor']}, torch {report['machine']['torch']}.",
        f"Genuine: {report['genuine']['images']} CLEVR v1.0 {report['genuine']['split']} images "
        f"with their scene records ({report['genuine']['root']}). mini-CLEVR: images 0-"
        f"{report['mini_clevr']['images'] - 1} of the {report['mini_clevr']['split']!r} split of "
        f"`{params['source']}` (seed {params['seed']}), rendered on the fly.",
        f"Questions: {report['questions_per_image']} per image, sampler language "
        f"{report['language']!r}, question mix {report['question_mix']!r}, seed {report['seed']}; "
        "answers by the executor on each image's scene. Accuracies in percent.",
        f"Unknown-word questions (scored wrong): genuine {genuine['unknown_word_questions']}, "
        f"mini-CLEVR {mini['unknown_word_questions']}.",
        "Right answers outside the model's answer vocabulary (scored wrong): genuine "
        f"{genuine['answers_outside_vocabulary']}, "
        f"mini-CLEVR {mini['answers_outside_vocabulary']}.",
        f"Prior: {report['prior']['how']} ({report['prior']['train_questions']} questions).",
        f"Difference: genuine minus mini-CLEVR, in points; in brackets its {intervals['how']}.",
    ]
    if again:
        notes.append(
            "Re-rendered: the genuine scenes drawn by the project's renderer in CLEVR's look "
            "(camera fitted to each record), asked the genuine side's very questions; genuine "
            "minus re-rendered is what the pixels alone cost; p: the exact McNemar test's "
            "two-sided p-value over the questions one side alone answered right."
        )
    return (
        "\n".join(["# Sim-to-real: genuine CLEVR images vs mini-CLEVR", "", *lines, "", *notes])
        + "\n"
    )


def plot_color_confusion(report: Mapping[str, Any], out_png: Path) -> None:
    """Both sides' colour confusion, each row scaled to its true colour's questions, the
    counts written in the cells."""
    # figures' own canvas and atomic, metadata-free PNG writer, as every figure of the project
    sides = [side for side in (*SIDES, RE_RENDERED) if side in report["sides"]]
    figure = figures._new_figure(5.5 * len(sides), 4.8)
    axes = figure.subplots(1, len(sides))
    for ax, side in zip(axes, sides, strict=True):
        confusion = report["sides"][side]["color_confusion"]
        matrix = np.asarray(confusion["matrix"], dtype=float)
        totals = matrix.sum(axis=1, keepdims=True)
        shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
        ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
        for (i, j), n in np.ndenumerate(matrix):
            if n:
                color = "white" if shares[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(n)}", ha="center", va="center", fontsize=8, color=color)
        ax.set_xticks(range(len(confusion["answered"])), confusion["answered"], rotation=45)
        ax.set_yticks(range(len(confusion["true"])), confusion["true"])
        ax.set_xlabel("answered colour")
        ax.set_ylabel("true colour")
        correct = int(np.trace(matrix[:, : len(confusion["true"])]))
        ax.set_title(f"{side}: {correct} of {int(matrix.sum())} query_color right")
    figure.suptitle("What colour is it? True vs answered colour, rows scaled to 1")
    figures._save(figure, out_png)


def write_outputs(
    measurement: Measurement, out_dir: str | Path, questions: bool = False
) -> dict[str, Path]:
    """Write sim_to_real.json, .md and _colors.png (and, with `questions`, every question's
    record) into `out_dir`, each atomically; returns their paths."""
    out = Path(out_dir)
    paths = {
        "json": out / OUTPUT_JSON,
        "md": out / OUTPUT_MD,
        "colors": out / OUTPUT_COLORS,
    }
    plot_color_confusion(measurement.report, paths["colors"])
    write_text_atomic(paths["md"], markdown(measurement.report))
    if questions:
        paths["questions"] = out / OUTPUT_QUESTIONS
        write_json_atomic(paths["questions"], measurement.records)
    write_json_atomic(paths["json"], measurement.report)  # last: its presence marks a full run
    return paths


def summary(report: Mapping[str, Any]) -> str:
    """One line per side: overall and per column."""
    lines = []
    for side in [side for side in (*SIDES, RE_RENDERED) if side in report["sides"]]:
        metrics = report["sides"][side]["model"]
        columns = ", ".join(f"{c} {_cell(v)}" for c, v in metrics["columns"].items())
        lines.append(f"{side}: {_cell(metrics['overall'])}% overall ({columns})")
    return "\n".join(lines)


# --- Command line ---------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="filmclevr-sim-to-real",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help="checkpoint (e.g. models/film.pt)")
    p.add_argument(
        "--genuine",
        required=True,
        type=Path,
        help="genuine CLEVR sample: images/train/*.png and scenes/CLEVR_train_scenes*.json",
    )
    p.add_argument(
        "--params",
        type=Path,
        help="the checkpoint's parameters file (mini-CLEVR seed, splits, objects); default:\n"
        "params.yaml beside the checkpoint if there is one, else ./params.yaml; refused when\n"
        "the checkpoint records another profile",
    )
    p.add_argument(
        "--images",
        type=Path,
        metavar="LIST",
        help="only the genuine images this file names, one CLEVR_train_NNNNNN.png a line (e.g.\n"
        "results/reference/genuine-sample/train_images.txt with --genuine CLEVR_v1.0: the\n"
        "development sample's images, from CLEVR's release)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: the checkpoint's folder)")
    p.add_argument(
        "--questions-per-image",
        type=ask.positive_int,
        default=DEFAULT_QUESTIONS_PER_IMAGE,
        help=f"questions asked about each image (default {DEFAULT_QUESTIONS_PER_IMAGE})",
    )
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the questions' seed")
    p.add_argument(
        "--language",
        default=None,
        choices=sorted(SAMPLERS),
        help="the question sampler's language (default: the profile's get_data.mini.language)",
    )
    p.add_argument(
        "--question-mix",
        choices=["uniform", "clevr"],
        help="mix of question types (default: the validation split's)",
    )
    p.add_argument(
        "--prior-train-images",
        type=ask.positive_int,
        default=DEFAULT_PRIOR_TRAIN_IMAGES,
        help="training images whose questions the prior counts "
        f"(default {DEFAULT_PRIOR_TRAIN_IMAGES})",
    )
    p.add_argument("--batch-size", type=ask.positive_int, default=DEFAULT_BATCH_SIZE)
    p.add_argument(
        "--device", default="cpu", help='torch device: "cpu" (default), "cuda", "cuda:N", "auto"'
    )
    p.add_argument(
        "--questions",
        action="store_true",
        help=f"also write every question's record ({OUTPUT_QUESTIONS})",
    )
    p.add_argument(
        "--re-rendered",
        action="store_true",
        help="also ask the genuine side's questions about its scenes re-rendered in CLEVR's\n"
        "look (a profile in CLEVR's look): genuine minus re-rendered is the pixels' share",
    )
    p.add_argument(
        "--mini-images",
        type=ask.positive_int,
        help="mini-CLEVR val images (default: as many as the genuine side); more narrow the\n"
        "difference's interval to the genuine side's own sampling error",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _run(args: argparse.Namespace) -> int:
    params_path = args.params if args.params is not None else default_params_path(args.model)
    guessed = args.params is None and not (Path(args.model).parent / "params.yaml").is_file()
    profile = profile_from_params(params_path)
    measurement = measure(
        args.model,
        args.genuine,
        profile,
        questions_per_image=args.questions_per_image,
        seed=args.seed,
        language=args.language,
        question_mix=args.question_mix,
        prior_train_images=args.prior_train_images,
        batch_size=args.batch_size,
        device=args.device,
        progress=not args.no_progress,
        re_rendered=args.re_rendered,
        image_list=args.images,
        mini_images=args.mini_images,
    )
    out = args.out if args.out is not None else Path(args.model).parent
    paths = write_outputs(measurement, out, questions=args.questions)
    if guessed and measurement.report["checkpoint"]["profile"] is None:
        log.warning(
            "%s records no profile and has no params.yaml beside it: measured against "
            "./params.yaml (profile %r); if another profile trained it, give --params",
            args.model,
            profile.name,
        )
    print(summary(measurement.report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line (module docstring); returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return ask.exit_status(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
