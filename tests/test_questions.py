"""Question templates and balanced sampling, on hand-built scenes (no rendering, no scenes.py)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from filmclevr import clevr
from filmclevr.executor import execute, execute_nodes
from filmclevr.mini import questions
from filmclevr.mini.questions import FAMILIES, Family, QuestionSampler, majority_baseline
from tests.helpers import ANSWERED_QUESTION_KEYS

DIRECTIONS = {
    "right": (1.0, 0.0, 0.0),
    "left": (-1.0, 0.0, 0.0),
    "behind": (0.0, 1.0, 0.0),
    "front": (0.0, -1.0, 0.0),
}


def make_scene(rng: random.Random, index: int, split: str = "train") -> dict:
    """A CLEVR-format scene with random objects and relationships by the 0.2 rule (SPEC §1)."""
    objects = []
    for _ in range(rng.randint(3, 10)):
        objects.append(
            {
                **{attr: rng.choice(values) for attr, values in clevr.ATTRIBUTES.items()},
                "3d_coords": [rng.uniform(-3, 3), rng.uniform(-3, 3), 0.35],
            }
        )
    relationships = {
        r: [
            [
                j
                for j, b in enumerate(objects)
                if j != i
                and sum((b["3d_coords"][k] - a["3d_coords"][k]) * d[k] for k in range(3))
                > clevr.RELATION_THRESHOLD
            ]
            for i, a in enumerate(objects)
        ]
        for r, d in DIRECTIONS.items()
    }
    return {
        "split": split,
        "image_index": index,
        "image_filename": clevr.image_filename(split, index),
        "objects": objects,
        "directions": {r: list(d) for r, d in DIRECTIONS.items()},
        "relationships": relationships,
    }


def make_scenes(seed: int, n: int, split: str = "train") -> list[dict]:
    rng = random.Random(seed)
    return [make_scene(rng, i, split) for i in range(n)]


@pytest.fixture(scope="module")
def sample() -> tuple[list[dict], list[dict]]:
    scenes = make_scenes(1, 200)
    return scenes, questions.sample_questions(scenes, random.Random(7), 10)


def test_family_table_is_complete() -> None:
    assert [f.index for f in FAMILIES] == list(range(len(FAMILIES)))
    assert {f.group for f in FAMILIES} == set(clevr.TEMPLATE_GROUPS)
    assert {f.terminal for f in FAMILIES} == set(clevr.TERMINAL_FUNCTIONS)
    assert all(f.texts and len(set(f.texts)) == len(f.texts) for f in FAMILIES)


def test_module_docstring_documents_the_family_table() -> None:
    assert questions.family_table() in questions.__doc__
    assert len(questions.family_table().splitlines()) == len(FAMILIES)


def test_questions_cover_groups_functions_and_families(sample) -> None:
    _, qs = sample
    assert {q["question_family_index"] for q in qs} == {f.index for f in FAMILIES}
    assert {n["function"] for q in qs for n in q["program"]} == set(clevr.FUNCTIONS)
    assert {q["program"][-1]["function"] for q in qs} == set(clevr.TERMINAL_FUNCTIONS)
    for q in qs:  # the family's terminal really is the program's last function
        assert q["program"][-1]["function"] == FAMILIES[q["question_family_index"]].terminal


def test_every_answer_is_the_executors(sample) -> None:
    scenes, qs = sample
    for q in qs:
        assert execute(q["program"], scenes[q["image_index"]]) == q["answer"]
        assert q["answer"] in clevr.ANSWERS


def test_release_format(sample) -> None:
    _, qs = sample
    assert [q["question_index"] for q in qs] == list(range(len(qs)))
    for q in qs:
        assert set(q) == ANSWERED_QUESTION_KEYS
        assert q["image_filename"] == clevr.image_filename("train", q["image_index"])
        assert q["split"] == "train"
        for position, n in enumerate(q["program"]):
            assert set(n) == {"function", "inputs", "value_inputs"}
            assert all(0 <= i < position for i in n["inputs"])
        assert clevr.normalize_program(q["program"]) == q["program"]


def test_about_ten_distinct_questions_per_image(sample) -> None:
    scenes, qs = sample
    per_image = Counter(q["image_index"] for q in qs)
    assert sum(per_image.values()) >= 0.98 * 10 * len(scenes)
    texts = Counter((q["image_index"], q["question"]) for q in qs)
    assert max(texts.values()) == 1


def test_text_is_clevr_style(sample) -> None:
    _, qs = sample
    words = Counter(w for q in qs for w in q["question"].rstrip("?").replace(";", "").split())
    for q in qs:
        text = q["question"]
        assert text[0].isupper() and text.endswith("?")
        assert "{" not in text and "}" not in text and "  " not in text
    # CLEVR's synonyms are all in use.
    for synonyms in clevr.SYNONYMS.values():
        for word in synonyms:
            assert words[word] + words[word + "s"] > 0, word
    assert words["a"] > 0 and words["an"] > 0
    assert "a object" not in " ".join(q["question"] for q in qs)


def _description(program: list[dict], k: int) -> tuple[set[tuple[str, str]], str]:
    """Filters read by node k (via unique/count/exist/filters) and the function they start at."""
    filters = set()
    while program[k]["function"] in ("unique", "count", "exist") or program[k][
        "function"
    ].startswith("filter_"):
        if program[k]["value_inputs"]:
            filters.add((program[k]["function"], program[k]["value_inputs"][0]))
        k = program[k]["inputs"][0]
    return filters, program[k]["function"]


def test_every_unique_sees_one_object_and_questions_are_not_degenerate(sample) -> None:
    scenes, qs = sample
    for q in qs:
        program, scene = q["program"], scenes[q["image_index"]]
        outputs = execute_nodes(program, scene)  # raises IllPosedError on a bad unique
        family = FAMILIES[q["question_family_index"]]
        if family.group == "zero_hop" and family.terminal in ("count", "exist"):
            assert _description(program, len(program) - 1)[0], q["question"]
        for n in program:
            fn = n["function"]
            if fn.startswith(("query_", "same_")):
                # The queried / shared attribute is never named in the description it reads.
                filters, _ = _description(program, n["inputs"][0])
                assert f"filter_{fn.split('_', 1)[1]}" not in {f for f, _ in filters}, q
            if fn.startswith("equal_") and fn != "equal_integer":
                a, b = (program[i]["inputs"][0] for i in n["inputs"])
                assert outputs[a] != outputs[b], q["question"]  # two distinct objects
            if fn in ("union", "equal_integer", "less_than", "greater_than"):
                (d1, root1), (d2, root2) = (_description(program, i) for i in n["inputs"])
                if root1 == root2 == "scene":  # two plain descriptions: non-empty, not nested
                    assert d1 and d2 and not (d1 <= d2 or d2 <= d1), q["question"]


def test_sampler_is_deterministic() -> None:
    scenes = make_scenes(3, 20)
    a = questions.sample_questions(scenes, random.Random(5), 10)
    b = questions.sample_questions(scenes, random.Random(5), 10)
    c = questions.sample_questions(scenes, random.Random(6), 10)
    assert a == b
    assert a != c


def test_answers_are_balanced_per_family() -> None:
    train = questions.sample_questions(make_scenes(11, 400), random.Random(1), 10)
    val = questions.sample_questions(make_scenes(12, 150, "val"), random.Random(2), 10)
    assert majority_baseline(train, val) <= 0.5
    by_family: dict[int, Counter] = {}
    for q in train:
        by_family.setdefault(q["question_family_index"], Counter())[q["answer"]] += 1
    for family, counts in by_family.items():
        (top, n1), (_, n2) = counts.most_common(2)
        # The rule: the most frequent answer exceeds the runner-up by at most 10% (plus slack 1).
        assert n1 <= 1.1 * n2 + 1, (family, counts)


def _type_shares(qs: list[dict]) -> dict[str, float]:
    types = Counter(clevr.question_type(q["program"]) for q in qs)
    return {t: types[t] / len(qs) for t in clevr.QUESTION_TYPES}


def test_clevr_mix_asks_each_type_as_often_as_clevr() -> None:
    scenes = make_scenes(21, 300)
    uniform = questions.sample_questions(scenes, random.Random(3), 10)
    mixed = questions.sample_questions(scenes, random.Random(3), 10, question_mix="clevr")
    target = clevr.question_type_shares()
    # Uniform families leave Compare Attribute (two unique references) far below CLEVR's share;
    # the CLEVR mix brings every type within 3 points of it (3,000 questions: sd ~0.7 point).
    assert _type_shares(uniform)["compare_attribute"] < target["compare_attribute"] - 0.08
    for t, share in _type_shares(mixed).items():
        assert share == pytest.approx(target[t], abs=0.03), t
    assert len(mixed) == len(uniform) == 3000  # no scene is asked fewer questions
    assert all(execute(q["program"], s) == q["answer"] for q, s in _with_scenes(mixed, scenes))


def _with_scenes(qs: list[dict], scenes: list[dict]):
    return ((q, scenes[q["image_index"]]) for q in qs)


def test_clevr_mix_moves_on_from_a_type_the_scene_cannot_ask(monkeypatch) -> None:
    # Family 0 (Exist) always answers; family 1 (Count) is always ill posed, and the mix asks
    # mostly Count: after max_attempts_per_question misses another type is drawn.
    fakes = (_fake_family(0, "exist"), _fake_family(1, "count", ill_posed=True))
    monkeypatch.setattr(questions, "FAMILIES", fakes)
    shares = dict.fromkeys(clevr.QUESTION_TYPES, 0.0) | {"count": 0.9, "exist": 0.1}
    monkeypatch.setattr(clevr, "question_type_shares", lambda: shares)
    sampler = QuestionSampler(random.Random(0), question_mix="clevr", max_attempts_per_question=4)
    got = sampler.sample(make_scenes(4, 1)[0], 5)  # 20 attempts in all
    # Without the redraw, a first Count draw would spend every attempt on Count and ask nothing.
    assert got and {q["question_family_index"] for q in got} == {0}


def test_a_mapping_mix_asks_only_and_in_proportion_the_types_it_names() -> None:
    scenes = make_scenes(22, 200)
    only = questions.sample_questions(scenes, random.Random(5), 5, {"compare_attribute": 1})
    assert {clevr.question_type(q["program"]) for q in only} == {"compare_attribute"}
    assert len(only) > 0.9 * 1000  # few scenes lack two unique references
    mix = {"exist": 1, "query_attribute": 3}
    half = questions.sample_questions(scenes, random.Random(5), 5, mix)
    shares = _type_shares(half)
    assert shares["query_attribute"] == pytest.approx(0.75, abs=0.04)  # 1,000 questions: sd 1.4
    assert shares["exist"] + shares["query_attribute"] == 1
    assert all(execute(q["program"], s) == q["answer"] for q, s in _with_scenes(only, scenes))


def test_a_mapping_mix_is_normalised_and_clevr_is_the_papers_shares() -> None:
    assert questions.question_type_weights({"count": 2, "exist": 6, "query_attribute": 0}) == {
        "count": 0.25,
        "exist": 0.75,
    }
    assert questions.question_type_weights("clevr") == clevr.question_type_shares()
    assert questions.question_type_weights("uniform") is None


@pytest.mark.parametrize(
    ("mix", "message"),
    [
        ("balanced", "one of"),
        ({"compare_colour": 1}, r"unknown question type\(s\) \['compare_colour'\]"),
        ({"count": -1, "exist": 2}, "numbers >= 0"),
        ({"count": 0}, "at least one > 0"),
        ({"count": "1"}, "numbers >= 0"),
        (3, "a string or a mapping"),
    ],
)
def test_a_bad_question_mix_is_refused(mix, message: str) -> None:
    with pytest.raises(ValueError, match=f"question_mix.*{message}|{message}"):
        QuestionSampler(random.Random(0), question_mix=mix)


def _fake_family(index: int, answer_node: str, ill_posed: bool = False) -> Family:
    def build(view, rng):
        program = [{"function": "scene", "inputs": [], "value_inputs": []}]
        if ill_posed:  # unique on every object of the scene
            program.append({"function": "unique", "inputs": [0], "value_inputs": []})
            program.append({"function": "query_color", "inputs": [1], "value_inputs": []})
        else:
            program.append({"function": answer_node, "inputs": [0], "value_inputs": []})
        return program, {"N": str(rng.random())}

    return Family(index, "zero_hop", answer_node, ("Is {N}?",), build)


def test_sampler_refuses_ill_posed_and_overrepresented_answers(monkeypatch) -> None:
    # Family 0 always answers "yes" (exist on the whole scene); family 1 is always ill posed.
    fakes = (_fake_family(0, "exist"), _fake_family(1, "exist", ill_posed=True))
    monkeypatch.setattr(questions, "FAMILIES", fakes)
    sampler = QuestionSampler(random.Random(0), max_attempts_per_question=5)
    got = [q for scene in make_scenes(4, 30) for q in sampler.sample(scene, 3)]
    # "yes" is accepted once (slack 1), then refused while "no" has count 0.
    assert [q["answer"] for q in got] == ["yes"]
    assert sampler.answer_counts[0] == {"yes": 1, "no": 0}


def test_majority_baseline() -> None:
    def q(family: int, answer: str) -> dict:
        return {"question_family_index": family, "answer": answer}

    train = [q(0, "yes"), q(0, "yes"), q(0, "no"), q(1, "2"), q(1, "3")]  # tie -> "2"
    val = [q(0, "yes"), q(0, "no"), q(1, "2"), q(1, "3"), q(2, "red")]
    # Family 2 is unseen: the overall majority ("yes") is wrong for it.
    assert majority_baseline(train, val) == pytest.approx(2 / 5)
    # The same prior as evaluation's: an unseen family takes its terminal function's majority.
    exist, count = [{"function": "exist"}], [{"function": "count"}]
    counts = [q(0, "yes") | {"program": exist} for _ in range(3)]  # overall majority: "yes"
    counts += [q(5, "3") | {"program": count} for _ in range(2)]
    unseen = [q(9, "3") | {"program": count}]
    assert majority_baseline(counts, unseen) == 1.0
    with pytest.raises(ValueError):
        majority_baseline(train, [])
