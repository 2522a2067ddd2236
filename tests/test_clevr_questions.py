"""CLEVR v1.0's own question language (`clevr_questions`) on mini-CLEVR scenes, measured against
genuine CLEVR question texts and CLEVR's vocabulary (`tests/data/clevr_genuine/`)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from filmclevr import clevr
from filmclevr.executor import IllPosedError, execute, execute_nodes
from filmclevr.mini import clevr_questions as cq
from filmclevr.mini.clevr_questions import FAMILIES, ClevrQuestionSampler
from filmclevr.mini.generate import make_scene
from filmclevr.mini.questions import QuestionSampler
from filmclevr.tokenize import build_vocab, tokenize
from tests.helpers import ANSWERED_QUESTION_KEYS

GENUINE = Path(__file__).parent / "data" / "clevr_genuine"
GENUINE_TEXTS = GENUINE / "CLEVR_test_question_texts_even_images.json"
# The demo asks 20 questions per image; 300 train images make even the rarest word of CLEVR's
# vocabulary ('' from one phrasing of one family, ~1 in 600 questions) expected ten times.
IMAGES, PER_IMAGE = 300, 20


@pytest.fixture(scope="module")
def scenes() -> list[dict]:
    return [make_scene(0, "train", i, look=cq.COVERAGE_LOOK) for i in range(IMAGES)]


@pytest.fixture(scope="module")
def split(scenes) -> list[dict]:
    """A train split in the demo's shape: one sampler, 20 questions per image."""
    sampler = ClevrQuestionSampler(random.Random(0))
    return [q for scene in scenes for q in sampler.sample(scene, PER_IMAGE)]


@pytest.fixture(scope="module")
def clevr_vocab() -> dict[str, dict[str, int]]:
    return json.loads((GENUINE / "vocab.json").read_text())


@pytest.fixture(scope="module")
def genuine_texts() -> list[str]:
    return cq.read_question_texts(GENUINE_TEXTS)


def _slots(text: str) -> set[str]:
    return set(re.findall(r"<[A-Z]\d?>", text))


# --- The template data ----------------------------------------------------------------------------
def test_the_data_holds_clevrs_90_families_numbered_in_sorted_file_order() -> None:
    data = json.loads(cq.TEMPLATES_PATH.read_text())
    assert "clevr-dataset-gen" in data["source"]
    assert any("Facebook" in line for line in data["license"])
    assert data["template_files"] == sorted(data["template_files"])
    assert [f.index for f in FAMILIES] == list(range(90))
    # Families run through the template files in sorted name order, each file in its order.
    order = [(f.file, f.index_in_file) for f in FAMILIES]
    assert order == sorted(order)
    assert Counter(f.group for f in FAMILIES) == clevr.TEMPLATE_GROUPS
    assert {f.terminal for f in FAMILIES} == set(clevr.TERMINAL_FUNCTIONS)
    for family, template in zip(FAMILIES, data["families"], strict=True):
        params = {p["name"] for p in template["params"]}
        for text in template["text"]:
            assert _slots(text) <= params, (family.index, text)
        for node in template["nodes"]:
            assert set(node.get("side_inputs", [])) <= params
            assert all(i < template["nodes"].index(node) for i in node["inputs"])


def test_family_table_lists_every_family() -> None:
    lines = cq.family_table().splitlines()
    assert len(lines) == 90
    assert lines[0].startswith(" 0 compare_integer equal_integer: Are there an equal number")
    assert lines[89].startswith("89 zero_hop query_size:")


# --- Instantiation --------------------------------------------------------------------------------
def test_every_family_can_be_instantiated(scenes, clevr_vocab) -> None:
    words = set(clevr_vocab["question_token_to_idx"])
    rng = random.Random(1)
    for family in FAMILIES:
        question = next(
            q for q in (cq.instantiate(family.index, s, rng) for s in scenes[:40]) if q is not None
        )
        assert question["question_family_index"] == family.index
        assert question["program"][-1]["function"] == family.terminal
        assert execute(question["program"], scenes[question["image_index"]]) == question["answer"]
        assert set(tokenize(question["question"])) <= words, question["question"]


def test_the_executor_computes_every_answer(split, scenes) -> None:
    assert len(split) == IMAGES * PER_IMAGE
    for q in split:
        assert execute(q["program"], scenes[q["image_index"]]) == q["answer"], q


def test_release_format_and_numbering(split) -> None:
    assert [q["question_index"] for q in split] == list(range(len(split)))
    for q in split:
        assert set(q) == ANSWERED_QUESTION_KEYS
        assert (
            clevr.question_type(q["program"])
            == clevr.TYPE_OF_FUNCTION[FAMILIES[q["question_family_index"]].terminal]
        )
        for node in q["program"]:
            assert node["function"] in clevr.FUNCTIONS
            assert set(node) == {"function", "inputs", "value_inputs"}
    for image in range(IMAGES):
        texts = [q["question"] for q in split if q["image_index"] == image]
        assert len(texts) == len(set(texts)) == PER_IMAGE


def test_texts_use_only_clevrs_vocabulary(split, clevr_vocab) -> None:
    words = set(clevr_vocab["question_token_to_idx"])
    for q in split:
        assert set(tokenize(q["question"])) <= words, q["question"]
        assert q["question"] == q["question"].strip()


def test_the_vocabulary_of_a_train_split_is_clevrs_id_for_id(split, clevr_vocab) -> None:
    built = build_vocab(split)
    for key in ("question_token_to_idx", "program_token_to_idx", "answer_token_to_idx"):
        assert built[key] == clevr_vocab[key], key


def test_a_model_of_this_language_reads_every_genuine_text(split, genuine_texts) -> None:
    """filmclevr-ask, given the vocabulary a train split in CLEVR's language builds, encodes all
    7,500 genuine test texts with no unknown word (it would raise UnknownWordsError)."""
    from filmclevr import ask

    vocab = build_vocab(split)["question_token_to_idx"]
    encoded = ask.encode(genuine_texts, vocab)
    assert len(encoded.questions) == len(genuine_texts) == 7500
    assert not any(encoded.unknown_words)


def test_only_the_release_phrasing_keeps_a_double_space(split) -> None:
    doubled = [q for q in split if "  " in q["question"]]
    assert doubled, "the phrasing behind CLEVR's '' token never came up"
    assert {q["question_family_index"] for q in doubled} == {22}
    assert all(" the same as  the " in q["question"] for q in doubled)
    assert all("   " not in q["question"] for q in split)


def test_every_unique_sees_one_object_and_and_questions_are_not_degenerate(split, scenes) -> None:
    single_and = 0
    for q in split:
        scene = scenes[q["image_index"]]
        execute_nodes(q["program"], scene)  # IllPosedError if a unique saw 0 or 2+ objects
        if FAMILIES[q["question_family_index"]].group != "single_and":
            continue
        single_and += 1
        # CLEVR's degeneracy rule: asking about the whole scene instead of either relation
        # must change the answer.
        for position, node in enumerate(q["program"]):
            if node["function"] == "relate":
                program = [dict(n) for n in q["program"]]
                program[position] = {"function": "scene", "inputs": [], "value_inputs": []}
                try:
                    assert execute(program, scene) != q["answer"], q["question"]
                except IllPosedError:
                    pass
    assert single_and > 50


def test_constraints_hold(split, scenes) -> None:
    for q in split:
        family = FAMILIES[q["question_family_index"]]
        program = q["program"]
        outputs = execute_nodes(program, scenes[q["image_index"]])
        if family.terminal.startswith("query_"):
            # NULL: the queried attribute is never named for the object asked about.
            attr = family.terminal.removeprefix("query_")
            node = program[program[-1]["inputs"][0]]
            while node["function"] != "unique":
                node = program[node["inputs"][0]]
            node = program[node["inputs"][0]]
            while node["function"].startswith("filter_"):
                assert node["function"] != f"filter_{attr}", q["question"]
                node = program[node["inputs"][0]]
        if family.group == "comparison":
            # OUT_NEQ: the two compared objects are different objects.
            first, second = (program[i]["inputs"][0] for i in program[-1]["inputs"])
            assert outputs[first] != outputs[second], q["question"]
    # OUT_NEQ on two counts makes CLEVR's plain "same number" family answer "no" only, so
    # balancing lets it through once; genuine CLEVR has none of its questions either.
    plain_same_number = [q for q in split if q["question_family_index"] == 0]
    assert [q["answer"] for q in plain_same_number] in ([], ["no"])


def test_the_other_rule_drops_other_when_the_descriptions_differ() -> None:
    family = FAMILIES[43]  # How many other <Z2> <C2> <M2> <S2>s have the same size as the <Z>...?
    assert family.other_rule and all(" other " in t for t in family.texts)
    base = dict.fromkeys(["<Z>", "<C>", "<M>", "<Z2>", "<C2>", "<M2>"], "")
    rng = random.Random(0)
    for _ in range(20):
        same = cq._render(family, {**base, "<S>": "thing", "<S2>": "thing", "<C2>": "red"}, rng)
        differ = cq._render(family, {**base, "<S>": "cube", "<S2>": "sphere"}, rng)
        assert " other " in same and " other " not in differ, (same, differ)
    assert cq._render(FAMILIES[40], {**base, "<S>": "cube", "<S2>": "sphere"}, rng) in {
        "Is there a sphere that has the same color as the cube?",
        "Is there a sphere of the same color as the cube?",
        "Are there any spheres that have the same color as the cube?",
        "Are there any spheres of the same color as the cube?",
        "Is there a ball that has the same color as the cube?",
        "Is there a ball of the same color as the cube?",
        "Are there any balls that have the same color as the cube?",
        "Are there any balls of the same color as the cube?",
        "Is there a sphere that has the same color as the block?",
        "Is there a sphere of the same color as the block?",
        "Are there any spheres that have the same color as the block?",
        "Are there any spheres of the same color as the block?",
        "Is there a ball that has the same color as the block?",
        "Is there a ball of the same color as the block?",
        "Are there any balls that have the same color as the block?",
        "Are there any balls of the same color as the block?",
    }


# --- Balance, mixes, determinism ------------------------------------------------------------------
def test_answers_are_balanced_per_family(split, scenes) -> None:
    by_family: dict[int, Counter] = {}
    for q in split:
        by_family.setdefault(q["question_family_index"], Counter())[q["answer"]] += 1
    for family, counts in by_family.items():
        top, *rest = sorted(counts.values(), reverse=True)
        # CLEVR's rule: no answer more than 1.1 times the runner-up (plus the first one).
        assert top <= 1.1 * (rest[0] if rest else 0) + 1, (family, counts)
    for family in FAMILIES:
        counts = by_family.get(family.index, Counter())
        if family.answers == ("yes", "no") and sum(counts.values()) >= 30:
            assert 0.4 <= counts["yes"] / sum(counts.values()) <= 0.6, (family.index, counts)
    # Families are asked evenly, as far as scenes allow (CLEVR tries the least asked first).
    asked = Counter(q["question_family_index"] for q in split)
    assert sum(asked[f] >= 0.8 * len(split) / 90 for f in asked) >= 80
    # With no family's answer a safe guess, CLEVR's Q-type prior stays low (41.8% on CLEVR).
    val = ClevrQuestionSampler(random.Random(7))
    val_questions = [q for s in scenes[:80] for q in val.sample(s, PER_IMAGE)]
    prior = cq.prior_accuracy(cq.baseline_keys(split), cq.baseline_keys(val_questions))
    assert prior < 0.5


def test_sampler_is_deterministic(scenes) -> None:
    def run(seed: int) -> list[dict]:
        sampler = ClevrQuestionSampler(random.Random(seed))
        return [q for s in scenes[:8] for q in sampler.sample(s, PER_IMAGE)]

    assert run(3) == run(3)
    assert [q["question"] for q in run(3)] != [q["question"] for q in run(4)]


def test_question_mixes(scenes) -> None:
    only = ClevrQuestionSampler(random.Random(0), question_mix={"compare_attribute": 1})
    asked = [q for s in scenes[:10] for q in only.sample(s, 10)]
    assert len(asked) == 100
    assert {clevr.question_type(q["program"]) for q in asked} == {"compare_attribute"}
    mixed = ClevrQuestionSampler(random.Random(0), question_mix="clevr")
    asked = [q for s in scenes[:60] for q in mixed.sample(s, PER_IMAGE)]
    shares = Counter(clevr.question_type(q["program"]) for q in asked)
    for kind, share in clevr.question_type_shares().items():
        assert abs(shares[kind] / len(asked) - share) < 0.04, kind
    with pytest.raises(ValueError, match="question_mix"):
        ClevrQuestionSampler(random.Random(0), question_mix="everything")


def test_counts_reset_as_often_as_asked(scenes) -> None:
    # Balanced over a whole split, the plain "same number" family (answer always "no") is asked
    # once; with CLEVR's periodic reset it comes back.
    def plain_same_number(**options) -> int:
        sampler = ClevrQuestionSampler(random.Random(0), **options)
        asked = [q for s in scenes[:30] for q in sampler.sample(s, PER_IMAGE)]
        return sum(q["question_family_index"] == 0 for q in asked)

    assert plain_same_number() <= 1
    assert plain_same_number(reset_counts_every=1) >= 2


# --- Coverage of genuine CLEVR texts --------------------------------------------------------------
def test_genuine_texts_are_covered(split, genuine_texts) -> None:
    assert len(genuine_texts) == 7500
    vocab = build_vocab(split)["question_token_to_idx"]
    coverage = cq.measure_coverage(genuine_texts, vocab)
    assert coverage["in_vocabulary"] == 1.0
    assert coverage["phrasings"] >= 0.95  # of every phrasing the families can produce
    # The measure: of the phrasings the generated questions themselves use.
    generated = {cq.phrasing_skeleton(q["question"]) for q in split}
    assert cq.phrasing_coverage(genuine_texts, generated) >= 0.95


def test_the_old_generator_covers_far_less(split, scenes, genuine_texts) -> None:
    old = QuestionSampler(random.Random(0))
    old_questions = [q for s in scenes[:100] for q in old.sample(s, PER_IMAGE)]
    new_questions = split[: len(old_questions)]

    def phrasings(questions: list[dict]) -> float:
        skeletons = {cq.phrasing_skeleton(q["question"]) for q in questions}
        return cq.phrasing_coverage(genuine_texts, skeletons)

    old_vocab = build_vocab(old_questions)["question_token_to_idx"]
    assert cq.vocabulary_coverage(genuine_texts, old_vocab) < 0.9
    # The same measure on as many generated questions: CLEVR's phrasings versus our own.
    assert phrasings(old_questions) < 0.4
    assert phrasings(new_questions) > phrasings(old_questions) + 0.4


def test_skeletons_abstract_content_but_not_phrasing() -> None:
    skeleton = cq.phrasing_skeleton
    assert skeleton("What number of big red cubes are left of the ball?") == skeleton(
        "What number of cylinders are on the right side of the tiny shiny metal block?"
    )
    assert skeleton("What number of cubes are there?") != skeleton("How many cubes are there?")
    assert skeleton("Is the shape of the cube the same as  the ball?") != skeleton(
        "Is the shape of the cube the same as the ball?"
    )


def test_coverage_command(capsys) -> None:
    assert cq.main(["--coverage", "--images", "5", "--genuine", str(GENUINE_TEXTS)]) == 0
    out = capsys.readouterr().out
    assert "7500 genuine texts" in out
    assert re.search(r"in the vocabulary of \d+ generated questions .*: \d+\.\d\d%", out)
    assert "phrasings of the 90 CLEVR families: 100.00%" in out


def test_coverage_command_writes_what_it_prints_and_what_it_measured_on(tmp_path, capsys) -> None:
    out_file = tmp_path / "coverage" / "coverage.json"
    argv = ["--coverage", "--images", "5", "--seed", "3", "--genuine", str(GENUINE_TEXTS)]
    assert cq.main([*argv, "--json", str(out_file)]) == 0
    printed = capsys.readouterr().out
    assert [p.name for p in out_file.parent.iterdir()] == ["coverage.json"]  # no temporary left
    report = json.loads(out_file.read_text())
    assert report["genuine"]["file"] == "tests/data/clevr_genuine/" + GENUINE_TEXTS.name
    assert len(report["genuine"]["sha256"]) == 64 and report["genuine"]["texts"] == 7500
    assert report["generated_on"] == {
        "scenes": 5,
        "split": "train",
        "look": "clevr",
        "questions_per_image": 20,
        "seed": 3,
    }
    clevr_side, mini_side = report["clevr_language"], report["mini_language"]
    assert clevr_side["questions"] == 5 * 20 and mini_side["questions"] == 5 * 20
    # The file holds the printed numbers, unrounded.
    assert (
        f"({clevr_side['vocabulary_entries']} entries): {100 * clevr_side['in_vocabulary']:.2f}%"
        in printed
    )
    assert f"families: {100 * clevr_side['phrasings_of_the_families']:.2f}%" in printed
    assert f"questions: {100 * clevr_side['phrasings_of_the_questions']:.2f}%" in printed
    assert (
        f"vocabulary of {mini_side['vocabulary_entries']} entries "
        f"{100 * mini_side['in_vocabulary']:.2f}%, "
        f"phrasings {100 * mini_side['phrasings_of_the_questions']:.2f}%" in printed
    )
    assert 0 < mini_side["in_vocabulary"] < clevr_side["in_vocabulary"] <= 1


def test_coverage_json_needs_coverage(tmp_path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cq.main(["--speed", "--images", "1", "--json", str(tmp_path / "c.json")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "c.json").exists()
