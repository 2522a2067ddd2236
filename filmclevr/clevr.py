"""The CLEVR v1.0 release format: vocabulary, layout and readers.

Facts from the CLEVR paper (Johnson et al., CVPR 2017) and its release; see SPEC §1-§2.
Every later stage reads CLEVR through this module, so the embedded mini-CLEVR and the real
release go through the same code.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Iterator
from pathlib import Path
from typing import Any

from filmclevr.fileio import iter_json_list, read_json, read_json_value

# --- Scene vocabulary (CLEVR's `properties.json`) -------------------------------------------
COLORS: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder")
MATERIALS: tuple[str, ...] = ("rubber", "metal")
SIZES: dict[str, float] = {"large": 0.7, "small": 0.35}  # object scale in scene units
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "material": MATERIALS,
    "size": tuple(SIZES),
}
RELATIONS: tuple[str, ...] = ("left", "right", "front", "behind")
RELATION_THRESHOLD = 0.2  # j relates to i when dot(c_j - c_i, direction) > 0.2 (SPEC §1)

# Words a question may use for a value; the first is CLEVR's canonical value.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "thing": ("thing", "object"),
    "sphere": ("sphere", "ball"),
    "cube": ("cube", "block"),
    "cylinder": ("cylinder",),
    "large": ("large", "big"),
    "small": ("small", "tiny"),
    "metal": ("metal", "metallic", "shiny"),
    "rubber": ("rubber", "matte"),
}

# The 28 answers (SPEC §1).
ANSWERS: tuple[str, ...] = (
    ("yes", "no")
    + tuple(str(n) for n in range(11))
    + tuple(COLORS)
    + SHAPES
    + MATERIALS
    + tuple(SIZES)
)

# --- Programs (SPEC §1) ---------------------------------------------------------------------
FUNCTIONS: tuple[str, ...] = (
    "scene",
    "filter_color", "filter_shape", "filter_size", "filter_material",
    "unique",
    "relate",
    "union", "intersect",
    "count", "exist",
    "query_color", "query_shape", "query_size", "query_material",
    "same_color", "same_shape", "same_size", "same_material",
    "equal_color", "equal_shape", "equal_size", "equal_material",
    "equal_integer", "less_than", "greater_than",
)  # fmt: skip

# The paper's five Table 1 columns, keyed as in `paper/table1_clevr_test.csv` (SPEC §2).
QUESTION_TYPES: dict[str, tuple[str, ...]] = {
    "count": ("count",),
    "exist": ("exist",),
    "compare_numbers": ("equal_integer", "less_than", "greater_than"),
    "query_attribute": ("query_color", "query_material", "query_shape", "query_size"),
    "compare_attribute": ("equal_color", "equal_material", "equal_shape", "equal_size"),
}
TYPE_OF_FUNCTION: dict[str, str] = {f: t for t, fs in QUESTION_TYPES.items() for f in fs}
TERMINAL_FUNCTIONS: tuple[str, ...] = tuple(TYPE_OF_FUNCTION)  # the 13 answer-producing functions
PAPER_TABLE1 = Path(__file__).resolve().parent / "paper" / "table1_clevr_test.csv"


def question_type_shares(path: str | Path = PAPER_TABLE1) -> dict[str, float]:
    """CLEVR v1.0 test's share of each question type, recovered from the paper's Table 1.

    Every row's Overall is its five columns weighted by the shares of their question types, so
    least squares over the rows recovers the shares (they sum to 0.999 before normalizing: the
    table's numbers are rounded). CLEVR's question counts per type are not in our data; this
    reads them off the paper instead of retyping them.
    """
    import numpy as np

    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        columns = np.array([[float(r[t]) for t in QUESTION_TYPES] for r in rows])
        overall = np.array([float(r["overall"]) for r in rows])
    except (OSError, KeyError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: cannot read the paper's Table 1 columns ({e!r})") from None
    if len(rows) < len(QUESTION_TYPES):
        raise ValueError(f"{path}: {len(rows)} rows cannot determine {len(QUESTION_TYPES)} shares")
    shares = np.clip(np.linalg.lstsq(columns, overall, rcond=None)[0], 0.0, None)
    return {t: float(w) for t, w in zip(QUESTION_TYPES, shares / shares.sum(), strict=True)}


# The 9 template groups of CLEVR's 90 families, with their family counts (SPEC §1).
TEMPLATE_GROUPS: dict[str, int] = {
    "compare_integer": 9,
    "comparison": 16,
    "zero_hop": 6,
    "one_hop": 6,
    "two_hop": 6,
    "three_hop": 6,
    "single_and": 5,
    "single_or": 8,
    "same_relate": 28,
}


class ClevrFormatError(ValueError):
    """A CLEVR file does not follow the release format; the message names the file."""


def question_type(program: list[dict[str, Any]]) -> str:
    """The paper column of a question: the type of its program's last function (SPEC §2)."""
    last = program[-1].get("function")
    try:
        return TYPE_OF_FUNCTION[last]
    except KeyError:
        raise ValueError(
            f"last program function {last!r} is not one of the 13 terminal functions"
        ) from None


def majority_answer_by_family(
    train: Iterable[tuple[Hashable, str | None, Any]],
) -> Callable[[Hashable, str | None], Any]:
    """CLEVR's "Q-type" baseline: the most frequent training answer of a question's family.

    The one prior of the project: the generator reports it as a balance check, evaluation
    scores it beside the model. Ties go to the smaller answer: the first word alphabetically,
    and for clevr-iep answer indices the same order, as that vocabulary is sorted. A family
    absent from training falls back to its terminal function's majority, then to the overall
    majority.

    Args:
        train: (family, terminal function or None, answer) of each answered training question.

    Returns:
        predict(family, function) -> answer.

    Raises:
        ValueError: `train` is empty.
    """
    by_family: dict[Hashable, Counter] = {}
    by_function: dict[str | None, Counter] = {}
    overall: Counter = Counter()
    for family, function, answer in train:
        by_family.setdefault(family, Counter())[answer] += 1
        by_function.setdefault(function, Counter())[answer] += 1
        overall[answer] += 1
    if not overall:
        raise ValueError("no answered training questions to build the Q-type prior from")

    def majority(counts: Counter) -> Any:
        return min(counts.items(), key=lambda item: (-item[1], item[0]))[0]

    family_answer = {family: majority(c) for family, c in by_family.items()}
    function_answer = {function: majority(c) for function, c in by_function.items()}
    fallback = majority(overall)

    def predict(family: Hashable, function: str | None) -> Any:
        return family_answer.get(family, function_answer.get(function, fallback))

    return predict


# --- Layout -----------------------------------------------------------------------------------
IMAGE_SIZE = (480, 320)  # every CLEVR image's width x height (SPEC §1)
# Split names go into file names (CLEVR_{split}_NNNNNN.png); the params schema has the same rule.
SPLIT_NAME = re.compile(r"[A-Za-z0-9]+")


def is_test_split(split: str) -> bool:
    """Test splits (CLEVR's test, CoGenT's testA/testB) ship without answers or scenes.

    By name, as in CLEVR's releases: the parameters give split names only, and every other
    split (train, val, trainA, valB, ...) ships with answers, programs and scenes.
    """
    return split.startswith("test")


def image_filename(split: str, index: int) -> str:
    return f"CLEVR_{split}_{index:06d}.png"


def image_path(root: str | Path, split: str, index: int) -> Path:
    return Path(root) / "images" / split / image_filename(split, index)


def questions_path(root: str | Path, split: str) -> Path:
    return Path(root) / "questions" / f"CLEVR_{split}_questions.json"


def scenes_path(root: str | Path, split: str) -> Path:
    return Path(root) / "scenes" / f"CLEVR_{split}_scenes.json"


# --- Readers ----------------------------------------------------------------------------------
def _load_json_document(path: Path, key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(`info`, the list under `key`) of a release JSON file."""
    document = read_json(path, ClevrFormatError)
    if not isinstance(document, dict) or not isinstance(document.get(key), list):
        raise ClevrFormatError(f"{path}: expected a JSON object with a list under {key!r}")
    info = document.get("info")
    return (info if isinstance(info, dict) else {}), document[key]


# --- Which dataset a file belongs to, from the file itself ------------------------------------
MINI_GENERATOR = "filmclevr mini-CLEVR"  # the `generator` of mini-CLEVR files' `info`
COGENT_SPLITS = frozenset({"trainA", "valA", "valB", "testA", "testB"})

# CLEVR-CoGenT's two conditions (SPEC §1): the colours cubes and cylinders may take; spheres take
# any colour. Condition B swaps A's palettes, so every (colour, cube or cylinder) pair of B is
# unseen in A.
_PALETTE_1 = ("gray", "blue", "brown", "yellow")
_PALETTE_2 = ("red", "green", "purple", "cyan")
COGENT_COLORS: dict[str, dict[str, tuple[str, ...]]] = {
    "A": {"cube": _PALETTE_1, "cylinder": _PALETTE_2, "sphere": tuple(COLORS)},
    "B": {"cube": _PALETTE_2, "cylinder": _PALETTE_1, "sphere": tuple(COLORS)},
}


def cogent_condition(split: str) -> str | None:
    """ "A" or "B" for a CoGenT split (trainA, valA, testA / valB, testB), None for CLEVR's."""
    return split[-1] if split in COGENT_SPLITS else None


def dataset_name(info: dict[str, Any], split: str) -> str:
    """The dataset a question file comes from, read from its own `info` and split name.

    What results say about their data comes from here, never from a parameter a user may
    forget to change: "mini-CLEVR" (this project's generator in its own look and language;
    "mini-CLEVR (look clevr, language clevr)" in CLEVR's, as `info` says), "CLEVR v1.0",
    "CLEVR-CoGenT v1.0" (CoGenT's split names), or another generator's own name.
    """
    cogent = split in COGENT_SPLITS
    generator = info.get("generator")
    if generator == MINI_GENERATOR:
        name = "mini-CoGenT" if cogent else "mini-CLEVR"
        # Results of one look or language do not compare with another's (the gate's context).
        style = {key: info.get(key, "mini") for key in ("look", "language")}
        if set(style.values()) == {"mini"}:
            return name
        return f"{name} ({', '.join(f'{key} {value}' for key, value in style.items())})"
    if generator:
        return str(generator)
    name = "CLEVR-CoGenT" if cogent else "CLEVR"
    return f"{name} v{info['version']}" if "version" in info else f"{name} (version unknown)"


def normalize_answer(answer: Any) -> str:
    """Release answers are strings; the generator's dialect writes booleans and integers."""
    if isinstance(answer, bool):
        return "yes" if answer else "no"
    return str(answer)


def normalize_program(program: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accept `function` (release) or `type` (generator) and drop the generator's `_output`."""
    nodes = []
    for node in program:
        function = node.get("function", node.get("type"))
        nodes.append(
            {
                "function": function,
                "inputs": list(node.get("inputs", [])),
                "value_inputs": list(node.get("value_inputs", [])),
            }
        )
    return nodes


def _read_info(path: Path) -> dict[str, Any]:
    """A release file's `info` ({} when it has none)."""
    info = read_json_value(path, "info", {}, ClevrFormatError)
    return info if isinstance(info, dict) else {}


def _generator_family_offsets() -> dict[str, int]:
    """CLEVR's template file -> the offset of its family indices in the generator dialect.

    The generator numbers families per template file (`template_filename`, e.g.
    "zero_hop.json"), so index 0 of one file and index 0 of another are different families.
    The nine files, sorted by name, are laid end to end by their family counts
    (`TEMPLATE_GROUPS`): (template_filename, question_family_index) becomes one index in 0..89,
    the same in every file, whatever families a file happens to hold (train and val are read
    separately, and val's families are looked up in train's prior). It is the project's
    numbering, not necessarily the release's: compare it only with files read by this reader.
    """
    offsets, total = {}, 0
    for group in sorted(TEMPLATE_GROUPS):
        offsets[f"{group}.json"] = total
        total += TEMPLATE_GROUPS[group]
    return offsets


# What an answered (train/val) question has beyond the public keys of a test question.
ANSWERED_KEYS: tuple[str, ...] = ("answer", "question_family_index", "program")


def read_questions(path: str | Path) -> list[dict[str, Any]]:
    """The questions of a CLEVR question file (`read_question_file` without its `info`)."""
    return read_question_file(path)[1]


def read_question_file(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`iter_question_file` with the questions in a list."""
    info, questions = iter_question_file(path)
    return info, list(questions)


def iter_question_file(
    path: str | Path, *, answered_keys: tuple[str, ...] = ANSWERED_KEYS
) -> tuple[dict[str, Any], Iterator[dict[str, Any]]]:
    """Read a CLEVR question file in either dialect (SPEC §1) as release-dialect dicts, one at a
    time: memory does not grow with the split.

    Every question gets `image_index`, `image_filename`, `split`, `question`, `question_index`;
    train/val questions also keep `answer` (a string), `question_family_index` and `program`
    (nodes with `function`, `inputs`, `value_inputs`). In the generator dialect (the first
    question carries `template_filename`), `question_family_index` becomes one index per
    (template file, index) pair, fixed by CLEVR's nine template files
    (`_generator_family_offsets`); a template file of another name is refused.

    Args:
        path: the questions file.
        answered_keys: what a question of a train or val split must hold (a test split's may
            hold none of them): CLEVR's answer, family and program; CLEVR-Humans' answer alone.

    Returns:
        (the file's `info` ({} when it has none), an iterator of the questions). The iterator
        raises ClevrFormatError, naming the file and the question, where the file is malformed,
        or holds no questions (an empty split cannot be used).
    """
    path = Path(path)
    info = _read_info(path)
    stream = iter_json_list(path, "questions", ClevrFormatError)
    first = next(stream, None)
    stream.close()  # the file, at once
    if first is None:
        raise ClevrFormatError(f"{path}: holds no questions (an empty split cannot be used)")
    generator = "template_filename" in first
    return info, _normalized_questions(path, generator, answered_keys)


_GENERATOR_FAMILY_OFFSETS = _generator_family_offsets()


def _family_index(path: Path, position: int, raw: dict[str, Any], generator: bool) -> int:
    """The question's family in 0..89; a generator-dialect index made global by its template
    file (`_generator_family_offsets`)."""
    index, template = raw["question_family_index"], raw.get("template_filename")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ClevrFormatError(
            f"{path}: question #{position} has question_family_index {index!r}, not a family"
        )
    if not generator:
        if template is not None:
            raise ClevrFormatError(
                f"{path}: question #0 has no template_filename, unlike question "
                f"#{position} (the family indices of one file are numbered one way)"
            )
        return index
    if template is None:
        raise ClevrFormatError(
            f"{path}: question #{position} has a question_family_index but no "
            "template_filename, unlike question #0 (the family indices of one file are "
            "numbered one way)"
        )
    name = Path(str(template)).name
    if name not in _GENERATOR_FAMILY_OFFSETS:
        raise ClevrFormatError(
            f"{path}: question #{position} comes from template file {template!r}, not one of "
            f"CLEVR's nine ({', '.join(sorted(_GENERATOR_FAMILY_OFFSETS))}): its families "
            "cannot be numbered the same in every question file"
        )
    size = TEMPLATE_GROUPS[name.removesuffix(".json")]
    if index >= size:
        raise ClevrFormatError(
            f"{path}: question #{position} has question_family_index {index}, but {name} "
            f"holds {size} families"
        )
    return _GENERATOR_FAMILY_OFFSETS[name] + index


# A release's image file name, CLEVR_{split}_NNNNNN.png: group 1 is the image index.
_IMAGE_NAME = re.compile(r"CLEVR_[A-Za-z0-9]+_(\d+)\.png")


def _normalized_questions(
    path: Path, generator: bool, answered_keys: tuple[str, ...]
) -> Iterator[dict[str, Any]]:
    # The file's split by its release name; files named otherwise are not held to the rule.
    named = re.fullmatch(r"CLEVR_([A-Za-z0-9]+)_questions\.json", path.name)
    public = named is None or is_test_split(named.group(1))
    for position, raw in enumerate(iter_json_list(path, "questions", ClevrFormatError)):
        missing = [k for k in ("image_index", "question") if k not in raw]
        if missing:
            raise ClevrFormatError(f"{path}: question #{position} lacks {', '.join(missing)}")
        split = raw.get("split", "")
        q = {
            "image_index": int(raw["image_index"]),
            "image_filename": raw.get("image_filename")
            or image_filename(split, int(raw["image_index"])),
            "split": split,
            "question": raw["question"],
            "question_index": int(raw.get("question_index", position)),
        }
        # The shards join a question to the image its file name names, evaluation counts the
        # one its index names: where they differ, which image it asks about is unknown.
        image_name = _IMAGE_NAME.fullmatch(Path(q["image_filename"]).name)
        if image_name and int(image_name.group(1)) != q["image_index"]:
            raise ClevrFormatError(
                f"{path}: question #{position} (question_index {q['question_index']}): "
                f"image_filename {q['image_filename']!r} names image {int(image_name.group(1))}, "
                f"but its image_index is {q['image_index']}"
            )
        if "answer" in raw:
            q["answer"] = normalize_answer(raw["answer"])
        if "question_family_index" in raw:
            q["question_family_index"] = _family_index(path, position, raw, generator)
        if "program" in raw:
            q["program"] = normalize_program(raw["program"])
            if any(node["function"] is None for node in q["program"]):
                raise ClevrFormatError(f"{path}: question #{position} has a node without function")
        lacking = [k for k in answered_keys if k not in q]
        if lacking and (len(lacking) < len(answered_keys) or not public):
            # A train/val question without its answer would silently train or score on nothing.
            raise ClevrFormatError(
                f"{path}: question #{position} lacks {', '.join(lacking)} (questions of a "
                f"train or val split have {', '.join(answered_keys)}; only test splits have "
                "none of them)"
            )
        yield q


def read_scenes(path: str | Path) -> list[dict[str, Any]]:
    """Read a CLEVR scene file; scenes are returned in image-index order."""
    path = Path(path)
    _, scenes = _load_json_document(path, "scenes")
    for position, scene in enumerate(scenes):
        if not isinstance(scene, dict):
            raise ClevrFormatError(f"{path}: scene #{position} is not an object")
        if "objects" not in scene or "image_index" not in scene:
            raise ClevrFormatError(f"{path}: scene #{position} lacks objects or image_index")
        index = scene["image_index"]
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ClevrFormatError(
                f"{path}: scene #{position} has image_index {index!r}, not an image number"
            )
    return sorted(scenes, key=lambda s: s["image_index"])
