"""The program executor: each of the 26 functions on a hand-built scene, and its errors."""

from __future__ import annotations

import pytest

from filmclevr import clevr
from filmclevr.executor import IllPosedError, answer_string, execute, execute_nodes


def _obj(size: str, color: str, material: str, shape: str) -> dict:
    return {"size": size, "color": color, "material": material, "shape": shape}


# Ground positions (x to the right, y to the back): 0 (-2, 1), 1 (-1, -1), 2 (1, 2), 3 (2, 0).
# relationships[r][i] lists the objects j in relation r to i ("j is left of i").
SCENE = {
    "objects": [
        _obj("large", "red", "metal", "cube"),
        _obj("small", "red", "rubber", "sphere"),
        _obj("large", "blue", "rubber", "cylinder"),
        _obj("small", "green", "metal", "sphere"),
    ],
    "relationships": {
        "left": [[], [0], [0, 1], [0, 1, 2]],
        "right": [[1, 2, 3], [2, 3], [3], []],
        "behind": [[2], [0, 2, 3], [], [0, 2]],
        "front": [[1, 3], [], [0, 1, 3], [1]],
    },
}


def node(function: str, inputs: list[int] | None = None, values: list[str] | None = None) -> dict:
    return {"function": function, "inputs": inputs or [], "value_inputs": values or []}


def only(n: int) -> list[dict]:
    """Nodes 0-2: scene, filter to object `n` by a unique attribute pair, unique."""
    shape, color = SCENE["objects"][n]["shape"], SCENE["objects"][n]["color"]
    return [
        node("scene"),
        node("filter_color", [0], [color]),
        node("filter_shape", [1], [shape]),
        node("unique", [2]),
    ]


def last(program: list[dict]):
    return execute_nodes(program, SCENE)[-1]


# (function under test, program, expected output of the last node)
CASES = [
    ("scene", [node("scene")], (0, 1, 2, 3)),
    ("filter_color", [node("scene"), node("filter_color", [0], ["red"])], (0, 1)),
    ("filter_shape", [node("scene"), node("filter_shape", [0], ["sphere"])], (1, 3)),
    ("filter_size", [node("scene"), node("filter_size", [0], ["large"])], (0, 2)),
    ("filter_material", [node("scene"), node("filter_material", [0], ["metal"])], (0, 3)),
    ("unique", only(2), 2),
    ("relate", [*only(2), node("relate", [3], ["left"])], (0, 1)),
    ("relate", [*only(1), node("relate", [3], ["behind"])], (0, 2, 3)),
    ("relate", [*only(0), node("relate", [3], ["front"])], (1, 3)),
    ("relate", [*only(0), node("relate", [3], ["right"])], (1, 2, 3)),
    (
        "union",
        [
            node("scene"),
            node("filter_color", [0], ["blue"]),
            node("filter_material", [0], ["metal"]),
            node("union", [1, 2]),
        ],
        (0, 2, 3),
    ),
    (
        "intersect",
        [
            node("scene"),
            node("filter_color", [0], ["red"]),
            node("filter_shape", [0], ["sphere"]),
            node("intersect", [1, 2]),
        ],
        (1,),
    ),
    ("count", [node("scene"), node("filter_size", [0], ["small"]), node("count", [1])], 2),
    ("count", [node("scene"), node("filter_color", [0], ["cyan"]), node("count", [1])], 0),
    ("exist", [node("scene"), node("filter_color", [0], ["green"]), node("exist", [1])], True),
    ("exist", [node("scene"), node("filter_color", [0], ["gray"]), node("exist", [1])], False),
    ("query_color", [*only(2), node("query_color", [3])], "blue"),
    ("query_shape", [*only(2), node("query_shape", [3])], "cylinder"),
    ("query_size", [*only(2), node("query_size", [3])], "large"),
    ("query_material", [*only(2), node("query_material", [3])], "rubber"),
    ("same_color", [*only(0), node("same_color", [3])], (1,)),
    ("same_shape", [*only(1), node("same_shape", [3])], (3,)),
    ("same_size", [*only(0), node("same_size", [3])], (2,)),
    ("same_material", [*only(3), node("same_material", [3])], (0,)),
    ("same_color", [*only(2), node("same_color", [3])], ()),
]


def _compare_attr(attr: str, a: int, b: int) -> list[dict]:
    first, second = only(a), only(b)
    shifted = [dict(n, inputs=[i + 4 for i in n["inputs"]]) for n in second]
    return [
        *first,
        *shifted,
        node(f"query_{attr}", [3]),
        node(f"query_{attr}", [7]),
        node(f"equal_{attr}", [8, 9]),
    ]


CASES += [
    ("equal_color", _compare_attr("color", 0, 1), True),
    ("equal_color", _compare_attr("color", 0, 2), False),
    ("equal_shape", _compare_attr("shape", 1, 3), True),
    ("equal_shape", _compare_attr("shape", 0, 3), False),
    ("equal_size", _compare_attr("size", 0, 2), True),
    ("equal_size", _compare_attr("size", 0, 1), False),
    ("equal_material", _compare_attr("material", 1, 2), True),
    ("equal_material", _compare_attr("material", 1, 3), False),
]


def _compare_counts(function: str, color_a: str, color_b: str) -> list[dict]:
    return [
        node("scene"),
        node("filter_color", [0], [color_a]),
        node("count", [1]),
        node("scene"),
        node("filter_color", [3], [color_b]),
        node("count", [4]),
        node(function, [2, 5]),
    ]


# red: 2 objects, blue: 1, green: 1
CASES += [
    ("equal_integer", _compare_counts("equal_integer", "blue", "green"), True),
    ("equal_integer", _compare_counts("equal_integer", "red", "green"), False),
    ("less_than", _compare_counts("less_than", "blue", "red"), True),
    ("less_than", _compare_counts("less_than", "blue", "green"), False),
    ("greater_than", _compare_counts("greater_than", "red", "blue"), True),
    ("greater_than", _compare_counts("greater_than", "blue", "red"), False),
]


@pytest.mark.parametrize(("function", "program", "expected"), CASES)
def test_function(function: str, program: list[dict], expected) -> None:
    assert program[-1]["function"] == function
    assert last(program) == expected


def test_cases_cover_all_26_functions() -> None:
    assert {case[0] for case in CASES} == set(clevr.FUNCTIONS)


def test_execute_returns_release_strings() -> None:
    answers = {
        execute(program, SCENE)
        for function, program, _ in CASES
        if function in clevr.TERMINAL_FUNCTIONS
    }
    assert answers == {"yes", "no", "0", "2", "blue", "cylinder", "large", "rubber"}
    assert answers <= set(clevr.ANSWERS)


def test_execute_nodes_returns_every_output() -> None:
    outputs = execute_nodes([*only(2), node("relate", [3], ["left"]), node("count", [4])], SCENE)
    assert outputs == [(0, 1, 2, 3), (2,), (2,), 2, (0, 1), 2]


@pytest.mark.parametrize(
    "program",
    [
        [node("scene"), node("filter_color", [0], ["red"]), node("unique", [1])],  # two objects
        [node("scene"), node("filter_color", [0], ["cyan"]), node("unique", [1])],  # none
    ],
)
def test_unique_on_not_one_object_is_ill_posed(program: list[dict]) -> None:
    with pytest.raises(IllPosedError, match="exactly one object"):
        execute_nodes(program, SCENE)
    with pytest.raises(IllPosedError):
        execute([*program, node("query_color", [2])], SCENE)


def test_unknown_function_is_named() -> None:
    with pytest.raises(ValueError, match="'filter_texture'"):
        execute_nodes([node("scene"), node("filter_texture", [0], ["rough"])], SCENE)
    with pytest.raises(ValueError, match="'relate_left'"):
        execute([node("scene"), node("relate_left", [0])], SCENE)


@pytest.mark.parametrize(
    ("program", "message"),
    [
        ([node("scene"), node("filter_color", [1], ["red"])], "not an earlier node"),
        ([node("scene"), node("filter_color", [0], ["pink"])], "'pink'"),
        ([*only(0), node("relate", [3], ["above"])], "'above'"),
        ([node("scene"), node("count", [0, 0])], "takes 1 inputs"),
        ([node("scene"), node("query_color", [0])], "expects one object"),
        ([*only(0), node("count", [3])], "expects an object set"),
        ([node("scene"), node("exist", [0]), node("less_than", [1, 1])], "expects an integer"),
    ],
)
def test_malformed_programs_raise_value_error(program: list[dict], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        execute_nodes(program, SCENE)


def test_execute_needs_a_terminal_function() -> None:
    with pytest.raises(ValueError, match="terminal"):
        execute([node("scene"), node("filter_color", [0], ["red"])], SCENE)
    with pytest.raises(ValueError, match="empty"):
        execute([], SCENE)


def test_answer_string() -> None:
    assert [answer_string(v) for v in (True, False, 0, 10, "cube")] == [
        "yes",
        "no",
        "0",
        "10",
        "cube",
    ]
    with pytest.raises(ValueError, match="object set"):
        answer_string((1, 2))
