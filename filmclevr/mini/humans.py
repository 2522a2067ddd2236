"""A stand-in for CLEVR-Humans on a mini-CLEVR tree, for CPU runs and tests: not human data.

CLEVR-Humans asks people's own questions about CLEVR's images; its files hold `questions`, each
with question, answer, image_index, image_filename and split, and no program. The stand-in
writes files of that format about a mini-CLEVR tree's images so that the CLEVR-Humans stages run
end to end on a CPU: each split's questions are the tree's own (the first `questions_per_image`
of each image; the test split's answers, which the release hides, drawn again from the
generator's settings as `answer_key` draws them), each re-worded by fixed rules so that its
wording departs from the templates the model was trained on, as people's does:

- openings people use and the templates do not ("Can you see any ...", "Tell me how many ...",
  "Which colour is ...");
- synonyms outside CLEVR's vocabulary (grey, box, orb, tube, huge, little, glossy, steel,
  plastic, dull): frequent in train, so the expanded vocabulary takes them;
- a lower-case first word ("is there ..."): the tokenizer keeps case, so "is" is not "Is";
- typos (one letter of a word replaced): words too rare for the vocabulary, which become <UNK>.

The rules keep each question's meaning, so its answer stays the tree's. Everything is drawn
from (seed, split, question_index): the same tree and settings give the same bytes. The files'
`info` says they are a stand-in, and every result made from them is labelled so
(`filmclevr.humans_data.dataset_name`).
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filmclevr.fileio import atomic_dir, json_list_writer
from filmclevr.humans_data import SPLITS, STAND_IN, question_file
from filmclevr.mini.answer_key import answered_release

# What a CLEVR-Humans question holds (no program, no family).
KEYS = ("question", "answer", "image_index", "image_filename", "split")

# How often each rule applies: an opening where one fits, each word that has a synonym, a
# lower-case first word, one typo per question.
OPENING_RATE = 0.5
SYNONYM_RATE = 0.5
LOWER_CASE_RATE = 0.1
TYPO_RATE = 0.1

OPENINGS = (  # (how the templates start a question, how people might)
    ("Are there any ", "Can you see any "),
    ("Is there a ", "Can you see a "),
    ("Is there an ", "Can you see an "),
    ("How many ", "Tell me how many "),
    ("What number of ", "How many "),
    ("What color is ", "Which colour is "),
)
SYNONYMS = {
    "gray": "grey",
    "cube": "box",
    "cubes": "boxes",
    "block": "box",
    "blocks": "boxes",
    "sphere": "orb",
    "spheres": "orbs",
    "ball": "orb",
    "balls": "orbs",
    "cylinder": "tube",
    "cylinders": "tubes",
    "large": "huge",
    "big": "huge",
    "small": "little",
    "tiny": "little",
    "shiny": "glossy",
    "metallic": "glossy",
    "metal": "steel",
    "rubber": "plastic",
    "matte": "dull",
}
_SYNONYM = re.compile(r"\b(" + "|".join(sorted(SYNONYMS, key=len, reverse=True)) + r")\b")
_WORD = re.compile(r"[A-Za-z]{4,}")


def reword(question: str, rng: random.Random) -> str:
    """The question re-worded by the module's rules, each drawn from `rng`."""
    text = question
    for start, human in OPENINGS:
        if text.startswith(start):
            if rng.random() < OPENING_RATE:
                text = human + text[len(start) :]
            break
    text = _SYNONYM.sub(
        lambda m: SYNONYMS[m.group(1)] if rng.random() < SYNONYM_RATE else m.group(1), text
    )
    if rng.random() < LOWER_CASE_RATE:
        text = text[:1].lower() + text[1:]
    if rng.random() < TYPO_RATE:
        text = _typo(text, rng)
    return text


def _typo(text: str, rng: random.Random) -> str:
    """One letter of one word (not its first) replaced by another: with some 25 letters for each
    place of each word, a misspelling is too rare for the vocabulary, as people's typos are."""
    words = list(_WORD.finditer(text))
    if not words:
        return text
    word = rng.choice(words)
    i = word.start() + rng.randrange(1, len(word.group()))
    letter = rng.choice([c for c in string.ascii_lowercase if c != text[i].lower()])
    return text[:i] + letter + text[i + 1 :]


def stand_in_questions(
    questions: Iterable[Mapping[str, Any]], *, seed: int, questions_per_image: int
) -> Iterator[dict[str, Any]]:
    """A split's stand-in questions: the first `questions_per_image` answered questions of each
    image (in question order), re-worded, with CLEVR-Humans' keys."""
    asked: dict[int, int] = {}
    for q in questions:
        if asked.get(q["image_index"], 0) >= questions_per_image:
            continue
        asked[q["image_index"]] = asked.get(q["image_index"], 0) + 1
        rng = random.Random(f"humans-stand-in:{seed}:{q['split']}:{q['question_index']}")
        yield {**{k: q[k] for k in KEYS}, "question": reword(q["question"], rng)}


def write_stand_in(
    clevr_root: str | Path,
    out_dir: str | Path,
    settings: Mapping[str, Any],
    *,
    seed: int,
    questions_per_image: int,
) -> dict[str, int]:
    """Write `out_dir/CLEVR-Humans-{train,val,test}.json` about the tree's images.

    Args:
        clevr_root: the mini-CLEVR tree (read only), with the splits train, val and test.
        out_dir: the folder to (re)create, atomically.
        settings: the generator's arguments that made the tree
            (`generate.generator_arguments` of the profile's `get_data`).
        seed: the re-wording's seed.
        questions_per_image: questions kept per image.

    Returns:
        The number of questions written per split.

    Raises:
        ValueError: the tree lacks a split, or was not made by `settings` (names the file).
    """
    missing = [s for s in SPLITS if s not in settings["splits"]]
    if missing:
        raise ValueError(
            f"{clevr_root}: the stand-in asks about the images of the splits {list(SPLITS)}; "
            f"the tree has no {', '.join(missing)} (get_data.splits)"
        )
    counts = {}
    with atomic_dir(out_dir) as tmp:
        for split in SPLITS:
            tree_info, questions = answered_release(clevr_root, split, settings)
            info = {
                "generator": STAND_IN,
                "split": split,
                "seed": seed,
                "questions_per_image": questions_per_image,
                "tree": {
                    k: tree_info[k] for k in ("generator", "seed", "version") if k in tree_info
                },
            }
            counts[split] = 0
            with json_list_writer(question_file(tmp, split), {"info": info}, "questions") as add:
                for q in stand_in_questions(
                    questions, seed=seed, questions_per_image=questions_per_image
                ):
                    add(q)
                    counts[split] += 1
    return counts
