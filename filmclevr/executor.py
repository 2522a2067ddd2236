"""The one CLEVR program executor: runs a release-dialect program on a scene (SPEC §1).

The mini-CLEVR generator computes every answer with it, and checks re-execute stored programs
with it, so there is exactly one definition of what the 26 functions mean. Semantics follow
CLEVR's question engine:

- object sets are sorted tuples of object indices, a single object is an int index;
- `scene` gives every object; `filter_<attr>` keeps the objects whose attribute equals the value;
- `unique` is valid only on a one-element set (`IllPosedError` otherwise);
- `relate` maps object i to `scene["relationships"][value][i]`;
- `same_<attr>` gives the *other* objects sharing the attribute (the object itself excluded);
- `equal_<attr>` compares two attribute values, `equal_integer`/`less_than`/`greater_than` two
  counts, and answers are returned as release strings ("yes"/"no", "0".."10", attribute words).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from filmclevr import clevr

__all__ = ["IllPosedError", "answer_string", "execute", "execute_nodes"]

ObjectSet = tuple[int, ...]
Value = Any  # ObjectSet | int (object or count) | bool | str


class IllPosedError(ValueError):
    """A program is not well posed on a scene: `unique` got a set that is not one object."""


def _object_set(x: Value, fn: str) -> ObjectSet:
    if not isinstance(x, tuple):
        raise ValueError(f"{fn}: expects an object set, got {x!r}")
    return x


def _object(x: Value, fn: str) -> int:
    # A single object is an int index; a count is an int too, but the graph types keep them
    # apart in valid programs, and bool (an int subclass) is excluded explicitly.
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError(f"{fn}: expects one object, got {x!r}")
    return x


def _count(x: Value, fn: str) -> int:
    if not isinstance(x, int) or isinstance(x, bool):
        raise ValueError(f"{fn}: expects an integer, got {x!r}")
    return x


def _word(x: Value, fn: str) -> str:
    if not isinstance(x, str):
        raise ValueError(f"{fn}: expects an attribute value, got {x!r}")
    return x


def _vocab_value(value: str, allowed: Sequence[str], fn: str) -> str:
    if value not in allowed:
        raise ValueError(f"{fn}: value {value!r} is not one of {', '.join(allowed)}")
    return value


# Each handler gets (objects, relationships, input values, value_inputs).
Handler = Callable[[list[dict], dict, list[Value], list[str]], Value]


def _scene(objects, relationships, args, values) -> ObjectSet:
    return tuple(range(len(objects)))


def _make_filter(attr: str) -> Handler:
    fn = f"filter_{attr}"

    def run(objects, relationships, args, values) -> ObjectSet:
        value = _vocab_value(values[0], clevr.ATTRIBUTES[attr], fn)
        return tuple(i for i in _object_set(args[0], fn) if objects[i][attr] == value)

    return run


def _unique(objects, relationships, args, values) -> int:
    members = _object_set(args[0], "unique")
    if len(members) != 1:
        raise IllPosedError(f"unique: expected exactly one object, got {len(members)}")
    return members[0]


def _relate(objects, relationships, args, values) -> ObjectSet:
    relation = _vocab_value(values[0], clevr.RELATIONS, "relate")
    return tuple(sorted(relationships[relation][_object(args[0], "relate")]))


def _union(objects, relationships, args, values) -> ObjectSet:
    return tuple(sorted(set(_object_set(args[0], "union")) | set(_object_set(args[1], "union"))))


def _intersect(objects, relationships, args, values) -> ObjectSet:
    a, b = _object_set(args[0], "intersect"), set(_object_set(args[1], "intersect"))
    return tuple(i for i in a if i in b)


def _count_fn(objects, relationships, args, values) -> int:
    return len(_object_set(args[0], "count"))


def _exist(objects, relationships, args, values) -> bool:
    return len(_object_set(args[0], "exist")) > 0


def _make_query(attr: str) -> Handler:
    fn = f"query_{attr}"

    def run(objects, relationships, args, values) -> str:
        return objects[_object(args[0], fn)][attr]

    return run


def _make_same(attr: str) -> Handler:
    fn = f"same_{attr}"

    def run(objects, relationships, args, values) -> ObjectSet:
        me = _object(args[0], fn)
        value = objects[me][attr]
        return tuple(i for i, o in enumerate(objects) if i != me and o[attr] == value)

    return run


def _make_equal(attr: str) -> Handler:
    fn = f"equal_{attr}"

    def run(objects, relationships, args, values) -> bool:
        return _word(args[0], fn) == _word(args[1], fn)

    return run


def _make_compare(fn: str, op: Callable[[int, int], bool]) -> Handler:
    def run(objects, relationships, args, values) -> bool:
        return op(_count(args[0], fn), _count(args[1], fn))

    return run


# function -> (handler, number of inputs, number of value_inputs)
_FUNCTIONS: dict[str, tuple[Handler, int, int]] = {
    "scene": (_scene, 0, 0),
    "unique": (_unique, 1, 0),
    "relate": (_relate, 1, 1),
    "union": (_union, 2, 0),
    "intersect": (_intersect, 2, 0),
    "count": (_count_fn, 1, 0),
    "exist": (_exist, 1, 0),
    "equal_integer": (_make_compare("equal_integer", lambda a, b: a == b), 2, 0),
    "less_than": (_make_compare("less_than", lambda a, b: a < b), 2, 0),
    "greater_than": (_make_compare("greater_than", lambda a, b: a > b), 2, 0),
}
for _attr in clevr.ATTRIBUTES:
    _FUNCTIONS[f"filter_{_attr}"] = (_make_filter(_attr), 1, 1)
    _FUNCTIONS[f"query_{_attr}"] = (_make_query(_attr), 1, 0)
    _FUNCTIONS[f"same_{_attr}"] = (_make_same(_attr), 1, 0)
    _FUNCTIONS[f"equal_{_attr}"] = (_make_equal(_attr), 2, 0)
assert set(_FUNCTIONS) == set(clevr.FUNCTIONS), "executor must implement exactly SPEC §1's 26"


def execute_nodes(program: Sequence[dict[str, Any]], scene: dict[str, Any]) -> list[Value]:
    """Run a program and return every node's output, in node order.

    Args:
        program: release-dialect nodes (`function`, `inputs`, `value_inputs`) in topological
            order; see `clevr.normalize_program` for the generator dialect.
        scene: a CLEVR scene dict (`objects`, `relationships`).

    Returns:
        One output per node: object sets as sorted tuples of indices, a single object as its
        index, counts as ints, `exist`/`equal_*`/comparisons as bools, queries as strings.

    Raises:
        IllPosedError: a `unique` node got a set that is not exactly one object.
        ValueError: an unknown function, a bad input reference, arity, value or type.
    """
    objects = scene["objects"]
    relationships = scene.get("relationships", {})
    outputs: list[Value] = []
    for position, node in enumerate(program):
        fn = node.get("function")
        try:
            handler, n_inputs, n_values = _FUNCTIONS[fn]
        except (KeyError, TypeError):
            raise ValueError(f"node {position}: unknown program function {fn!r}") from None
        inputs = node.get("inputs", [])
        values = node.get("value_inputs", [])
        if len(inputs) != n_inputs or len(values) != n_values:
            raise ValueError(
                f"node {position}: {fn} takes {n_inputs} inputs and {n_values} value inputs, "
                f"got {len(inputs)} and {len(values)}"
            )
        for i in inputs:
            if not isinstance(i, int) or not 0 <= i < position:
                raise ValueError(f"node {position}: {fn} input {i!r} is not an earlier node")
        outputs.append(handler(objects, relationships, [outputs[i] for i in inputs], values))
    return outputs


def answer_string(value: Value) -> str:
    """A terminal output as a release answer string: bools -> yes/no, ints -> digits."""
    if not isinstance(value, int | str):  # bool is an int
        raise ValueError(f"program output {value!r} is an object set, not an answer")
    return clevr.normalize_answer(value)


def execute(program: Sequence[dict[str, Any]], scene: dict[str, Any]) -> str:
    """Run a program on a scene and return its answer as a release string.

    Raises IllPosedError or ValueError as `execute_nodes`, and ValueError when the last node
    is not one of the 13 answer-producing functions.
    """
    if not program:
        raise ValueError("empty program")
    clevr.question_type(program)  # the last node must produce an answer
    return answer_string(execute_nodes(program, scene)[-1])
