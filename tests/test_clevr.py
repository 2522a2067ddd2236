"""The CLEVR readers accept the release and the generator dialect, and name bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from filmclevr import clevr

PROGRAM_RELEASE = [
    {"function": "scene", "inputs": [], "value_inputs": []},
    {"function": "filter_color", "inputs": [0], "value_inputs": ["red"]},
    {"function": "exist", "inputs": [1], "value_inputs": []},
]
PROGRAM_GENERATOR = [
    {"type": "scene", "inputs": [], "_output": [0, 1]},
    {"type": "filter_color", "inputs": [0], "value_inputs": ["red"], "_output": [1]},
    {"type": "exist", "inputs": [1], "_output": True},
]


def write(tmp_path, name, document):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def question(program, answer, **extra):
    return {
        "image_index": 3,
        "image_filename": "CLEVR_val_000003.png",
        "split": "val",
        "question": "Is there a red thing?",
        "answer": answer,
        "question_family_index": 5,
        "program": program,
        **extra,
    }


def test_both_dialects_read_the_same(tmp_path):
    release = write(
        tmp_path, "r.json", {"info": {}, "questions": [question(PROGRAM_RELEASE, "yes")]}
    )
    generator = write(
        tmp_path, "g.json", {"info": {}, "questions": [question(PROGRAM_GENERATOR, True)]}
    )
    (r,), (g,) = clevr.read_questions(release), clevr.read_questions(generator)
    assert r == g
    assert g["answer"] == "yes" and g["program"] == PROGRAM_RELEASE
    assert clevr.question_type(g["program"]) == "exist"
    assert g["question_index"] == 0  # missing in both: the position in the file


def test_integer_answers_become_strings(tmp_path):
    path = write(tmp_path, "q.json", {"questions": [question(PROGRAM_RELEASE, 3)]})
    assert clevr.read_questions(path)[0]["answer"] == "3"


def test_test_split_questions_have_no_answer(tmp_path):
    public = {"image_index": 0, "split": "test", "question": "How many?", "question_index": 7}
    (q,) = clevr.read_questions(write(tmp_path, "t.json", {"questions": [public]}))
    assert q["image_filename"] == "CLEVR_test_000000.png"
    assert "answer" not in q and "program" not in q


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"scenes": []}', "list under 'questions'"),
        ('{"questions": [{"question": "Why?"}]}', "lacks image_index"),
    ],
)
def test_bad_question_files_are_named(tmp_path, content, message):
    path = tmp_path / "CLEVR_val_questions.json"
    path.write_text(content)
    with pytest.raises(clevr.ClevrFormatError, match=rf"CLEVR_val_questions\.json.*{message}"):
        clevr.read_questions(path)


@pytest.mark.parametrize(
    ("scenes", "message"),
    [
        ([7], r"scene #0 is not an object"),
        ([{"objects": [], "image_index": 0}, {"objects": [], "image_index": "1"}],
         r"scene #1 has image_index '1', not an image number"),
        ([{"objects": [], "image_index": True}], r"scene #0 has image_index True"),
    ],
)  # fmt: skip
def test_bad_scene_records_are_named(tmp_path, scenes, message):
    """Checked before the scenes are sorted by image_index (a TypeError there named nothing)."""
    path = tmp_path / "CLEVR_val_scenes.json"
    path.write_text(json.dumps({"scenes": scenes}))
    with pytest.raises(clevr.ClevrFormatError, match=rf"CLEVR_val_scenes\.json: {message}"):
        clevr.read_scenes(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(clevr.ClevrFormatError, match="nothere.json: file not found"):
        clevr.read_scenes(tmp_path / "nothere.json")


def test_vocabulary_facts():
    assert len(clevr.ANSWERS) == 28 and len(set(clevr.ANSWERS)) == 28
    assert len(clevr.FUNCTIONS) == 26
    assert len(clevr.TERMINAL_FUNCTIONS) == 13
    assert sum(clevr.TEMPLATE_GROUPS.values()) == 90
    with pytest.raises(ValueError, match="filter_color"):
        clevr.question_type(PROGRAM_RELEASE[:2])


def generator_file(tmp_path: Path, name: str, raw: list[tuple[str, int]]) -> Path:
    questions = [
        question(PROGRAM_GENERATOR, True, question_family_index=i, template_filename=template)
        for template, i in raw
    ]
    return write(tmp_path, name, {"info": {}, "questions": questions})


def test_generator_family_indices_are_made_global_per_template_file(tmp_path):
    # Two template files both number their families from 0.
    raw = [
        ("zero_hop.json", 0),
        ("one_hop.json", 0),
        ("one_hop.json", 2),
        ("zero_hop.json", 1),
        ("compare_integer.json", 0),
    ]
    path = generator_file(tmp_path, "g.json", raw)
    families = [q["question_family_index"] for q in clevr.read_questions(path)]
    # CLEVR's nine files sorted by name, end to end by their family counts: compare_integer (9)
    # 0..8, comparison (16) 9..24, one_hop (6) 25..30, same_relate 31.., ..., zero_hop 84..89.
    assert families == [84, 25, 27, 85, 0]
    assert len(set(families)) == len(set(raw))  # distinct (file, index) pairs stay distinct
    assert "template_filename" not in clevr.read_questions(path)[0]
    every = [(f"{group}.json", i) for group, n in clevr.TEMPLATE_GROUPS.items() for i in range(n)]
    numbered = clevr.read_questions(generator_file(tmp_path, "all.json", every))
    assert sorted(q["question_family_index"] for q in numbered) == list(range(90))


def test_generator_families_are_numbered_alike_in_every_file(tmp_path):
    """Train and val are read apart and val's families looked up in train's prior: a family
    missing from one file once shifted every later template file's families in it."""
    train = generator_file(
        tmp_path, "train.json", [("compare_integer.json", 0), ("compare_integer.json", 1),
                                 ("one_hop.json", 0)]
    )  # fmt: skip
    val = generator_file(tmp_path, "val.json", [("compare_integer.json", 0), ("one_hop.json", 0)])
    train_families = {q["question_family_index"] for q in clevr.read_questions(train)}
    val_families = [q["question_family_index"] for q in clevr.read_questions(val)]
    assert val_families == [0, 25] and set(val_families) <= train_families


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([("my_templates.json", 0)], r"question #0 comes from template file 'my_templates\.json', "
                                     r"not one of CLEVR's nine \(compare_integer\.json, "),
        ([("zero_hop.json", 0), ("zero_hop.json", 6)],
         r"question #1 has question_family_index 6, but zero_hop\.json holds 6 families"),
        ([("zero_hop.json", -1)], r"question #0 has question_family_index -1, not a family"),
    ],
)  # fmt: skip
def test_generator_families_outside_clevrs_templates_are_refused(tmp_path, raw, message):
    path = generator_file(tmp_path, "CLEVR_val_questions.json", raw)
    with pytest.raises(clevr.ClevrFormatError, match=rf"CLEVR_val_questions\.json: {message}"):
        clevr.read_questions(path)


def test_release_family_indices_are_kept(tmp_path):
    path = write(tmp_path, "r.json", {"questions": [question(PROGRAM_RELEASE, "yes")]})
    assert clevr.read_questions(path)[0]["question_family_index"] == 5


def test_mixed_family_numbering_is_an_error(tmp_path):
    questions = [
        question(PROGRAM_GENERATOR, True, template_filename="zero_hop.json"),
        question(PROGRAM_GENERATOR, True),
    ]
    path = write(tmp_path, "CLEVR_val_questions.json", {"questions": questions})
    with pytest.raises(clevr.ClevrFormatError, match=r"questions\.json: question #1 .*no templ"):
        clevr.read_questions(path)


def test_a_release_file_whose_later_question_uses_generator_numbering_is_an_error(tmp_path):
    questions = [
        question(PROGRAM_GENERATOR, True),
        question(PROGRAM_GENERATOR, True, template_filename="zero_hop.json"),
    ]
    path = write(tmp_path, "CLEVR_val_questions.json", {"questions": questions})
    with pytest.raises(clevr.ClevrFormatError, match=r"questions\.json: question #0 has no templ"):
        clevr.read_questions(path)


def test_questions_stream_from_the_file(tmp_path):
    questions = [question(PROGRAM_RELEASE, "yes", question_index=i) for i in range(3)]
    # info after the questions: still read
    path = write(tmp_path, "CLEVR_val_questions.json", {"questions": questions, "info": {"a": 1}})
    info, stream = clevr.iter_question_file(path)
    assert info == {"a": 1}
    assert [q["question_index"] for q in stream] == [0, 1, 2]
    # A file cut short: the questions before the cut come out, then an error naming the file.
    path.write_text(json.dumps({"info": {}, "questions": questions})[:-60])
    _, stream = clevr.iter_question_file(path)
    assert next(stream)["question_index"] == 0
    with pytest.raises(clevr.ClevrFormatError, match=r"CLEVR_val_questions\.json: not valid JSON"):
        list(stream)


def test_question_type_shares_reproduce_every_row_of_table_1():
    import pandas as pd

    shares = clevr.question_type_shares()
    assert list(shares) == list(clevr.QUESTION_TYPES)
    assert sum(shares.values()) == pytest.approx(1.0)
    table = pd.read_csv(clevr.PAPER_TABLE1)
    predicted = sum(table[t] * w for t, w in shares.items())
    # Each row's Overall is its columns weighted by these shares, up to the table's rounding.
    assert (predicted - table["overall"]).abs().max() < 0.3
    assert 0.15 < shares["compare_attribute"] < 0.25  # CLEVR asks far more than uniform 6%


def test_question_type_shares_name_a_bad_table(tmp_path):
    path = tmp_path / "table1.csv"
    path.write_text("model,overall,count\nHuman,92.6,86.7\n")
    with pytest.raises(ValueError, match="table1.csv"):
        clevr.question_type_shares(path)


@pytest.mark.parametrize("extra", [{}, {"question_index": 41}])
def test_question_whose_image_filename_and_image_index_disagree(tmp_path, extra):
    """Which image such a question asks about is unknown: the shards would join it to the one
    its file name names, evaluation count the one its index names."""
    right = question(PROGRAM_RELEASE, "no")
    wrong = question(PROGRAM_RELEASE, "yes", image_filename="CLEVR_val_000004.png", **extra)
    path = write(tmp_path, "CLEVR_val_questions.json", {"questions": [right, wrong]})
    number = extra.get("question_index", 1)
    message = (
        rf"CLEVR_val_questions\.json: question #1 \(question_index {number}\): image_filename "
        r"'CLEVR_val_000004\.png' names image 4, but its image_index is 3"
    )
    with pytest.raises(clevr.ClevrFormatError, match=message):
        clevr.read_questions(path)
