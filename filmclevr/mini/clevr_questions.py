"""CLEVR v1.0's own question language for mini-CLEVR: its 90 families, phrasings and synonyms.

The template definitions are data (`clevr_templates.json`, from CLEVR's generator
clevr-dataset-gen, unmodified in content: texts, program nodes, params, constraints, value
domains and synonyms). This module is an independent instantiation engine for them:

- A family's template nodes are filled in order by a randomised depth-first search over the
  scene, as CLEVR's generator does: a `filter*` node tries every attribute combination (size,
  color, material, shape, each possibly left out) over its input set, `filter_unique` only
  those that pick exactly one object, `filter_count`/`filter` also random combinations that
  need not match anything (as many as there are single-object ones), `filter_exist` as many
  random ones as real ones; a `relate_filter*` node tries (relation, combination) pairs around
  its object, keeping a tenth of the "trivial" pairs whose relation adds nothing; a plain
  `relate` or `filter_<attr>` node tries every value of its parameter.
- Constraints prune as soon as they can be decided: NULL (the parameter stays empty),
  OUT_NEQ (two nodes' outputs differ; on a `filter_count` node that is its count, as in
  CLEVR, which makes the plain "same number" family answer "no" only), and NOT_NULL, EQ and
  NEQ (unused by CLEVR v1.0's templates, given their plain meaning here).
- A finished program is kept only if its answer is still acceptable under the family's answer
  balance, and, for templates with a plain `relate` node, only if it is not degenerate (its
  answer changes when any `relate` is replaced by the whole scene). Options are tested on
  bitmasks before their program nodes are built. Unlike CLEVR's exhaustive search, one
  instantiation may visit only so many options (`search_budget`): a family that finds none
  is tried again on later scenes, first, as the least asked.
- Template nodes expand into the release dialect's 26 functions (filter_unique -> filters +
  unique, relate_filter_count -> relate + filters + count, ...); every answer is the one
  `filmclevr.executor.execute` computes.
- The text is one of the family's phrasings, each slot replaced by its value or a random
  synonym, empty slots and dropped "[optional]" words removed with the spaces they leave,
  and CLEVR's "other" rule applied ("other"/"another" go when the two descriptions of a
  same-attribute question differ). The release's spacing is kept: no a/an agreement ("a
  object" is genuine CLEVR), and the one phrasing whose genuine questions all carry a double
  space ("... the same as  the ...", the source of CLEVR's '' token) keeps it.

`ClevrQuestionSampler` has `questions.QuestionSampler`'s constructor and `sample(scene, n)`
contract; `FAMILIES` describes the 90 families (`question_family_index` 0..89: the template
files in sorted name order, templates in file order). `measure_coverage` and
`python -m filmclevr.mini.clevr_questions --coverage` measure how much of a file of genuine
question texts this generator's vocabulary and phrasings cover.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filmclevr import clevr
from filmclevr.mini.questions import (
    QUESTION_MIXES,
    QuestionMix,
    baseline_keys,
    prior_accuracy,
    question_type_weights,
    release_question,
)
from filmclevr.tokenize import tokenize

__all__ = [
    "FAMILIES",
    "QUESTION_MIXES",
    "ClevrFamily",
    "ClevrQuestionSampler",
    "QuestionMix",
    "baseline_keys",
    "family_table",
    "instantiate",
    "measure_coverage",
    "phrasing_coverage",
    "phrasing_skeleton",
    "prior_accuracy",
    "question_type_weights",
    "read_question_texts",
    "sample_clevr_questions",
    "template_skeletons",
    "vocabulary_coverage",
]

TEMPLATES_PATH = Path(__file__).with_name("clevr_templates.json")
# The genuine test question texts the coverage command reads by default (a development checkout).
GENUINE_TEXTS_PATH = (
    Path(__file__).resolve().parents[2]
    / "tests"
    / "data"
    / "clevr_genuine"
    / "CLEVR_test_question_texts_even_images.json"
)

# CLEVR's filter keys are (size, color, material, shape): the order of <Z> <C> <M> <S>.
_KEY_ATTRIBUTES: tuple[str, ...] = ("size", "color", "material", "shape")
_TRIVIAL_FRACTION = 0.1  # share of "trivial" relate options kept, as in CLEVR's generator
_STREAK = 3  # failed attempts in a row after which a family is searched on a small budget
_SAME_PAIRS = (("<Z>", "<Z2>"), ("<C>", "<C2>"), ("<M>", "<M2>"), ("<S>", "<S2>"))
_OPTIONAL = re.compile(r"\[([^\[\]]*)\]")
_KEPT_SPACE = "\0"  # marks a template's own double space while the slot gaps are closed
_SPECIAL_FILTERS = ("filter_unique", "filter_count", "filter_exist", "filter")
_SPECIAL_RELATES = (
    "relate_filter_unique",
    "relate_filter_count",
    "relate_filter_exist",
    "relate_filter",
)


class _Invalid:
    """A `unique` that did not see exactly one object (CLEVR's '__INVALID__')."""


_INVALID = _Invalid()


# --- The template data ----------------------------------------------------------------------------
@dataclass(frozen=True)
class _Step:
    """One template node, compiled for the search."""

    function: str  # the template node type
    inputs: tuple[int, ...]  # template node indices
    params: tuple[str, ...]  # its side inputs (parameter names)
    null_positions: tuple[int, ...]  # key positions a NULL constraint keeps empty
    out_neq: tuple[int, ...]  # earlier template nodes whose output must differ from this one's
    param_checks: tuple[tuple[str, tuple[str, ...]], ...]  # EQ/NEQ/NOT_NULL decided here
    closing: str | None  # the unique/count/exist a composite node ends with
    relate_mode: str  # relate_filter*: "unique" (one object), "zero" (empty allowed), "plain"
    tail_is_plain: bool  # every later node is a plain function (the answer follows directly)
    tail_is_local: bool  # later nodes read only this node and each other


@dataclass(frozen=True)
class ClevrFamily:
    """One of CLEVR's 90 question families: its group (template file), terminal function and
    phrasings, plus the compiled template the sampler instantiates."""

    index: int
    group: str
    terminal: str
    texts: tuple[str, ...]
    file: str = field(repr=False)
    index_in_file: int = field(repr=False)
    steps: tuple[_Step, ...] = field(repr=False, compare=False)
    param_types: Mapping[str, str] = field(repr=False, compare=False)
    check_degenerate: bool = field(repr=False, compare=False)  # has a plain `relate` node
    other_rule: bool = field(repr=False, compare=False)  # CLEVR's "other"/"another" rule applies
    answers: tuple[str, ...] = field(repr=False, compare=False)  # every answer it can have


def _terminal_function(node_type: str) -> str:
    for suffix in ("count", "exist"):
        if node_type.endswith(f"filter_{suffix}"):
            return suffix
    return node_type


def _answer_space(terminal: str) -> tuple[str, ...]:
    if terminal == "count":
        return tuple(str(n) for n in range(11))
    if terminal.startswith("query_"):
        return clevr.ATTRIBUTES[terminal.removeprefix("query_")]
    return ("yes", "no")


def _compile_steps(template: dict[str, Any]) -> tuple[_Step, ...]:
    nodes = template["nodes"]
    nulls = {c["params"][0] for c in template["constraints"] if c["type"] == "NULL"}
    out_neq: dict[int, list[int]] = {}
    param_checks: dict[int, list[tuple[str, tuple[str, ...]]]] = {}
    assigned_at = {p: t for t, node in enumerate(nodes) for p in node.get("side_inputs", [])}
    for constraint in template["constraints"]:
        kind, params = constraint["type"], constraint["params"]
        if kind == "OUT_NEQ":
            later, earlier = max(params), min(params)
            out_neq.setdefault(later, []).append(earlier)
        elif kind in ("EQ", "NEQ", "NOT_NULL"):
            decided = max(assigned_at[p] for p in params)
            param_checks.setdefault(decided, []).append((kind, tuple(params)))
        elif kind != "NULL":
            raise ValueError(f"unknown template constraint type {kind!r}")
    composite = _SPECIAL_FILTERS + _SPECIAL_RELATES
    steps = []
    for t, node in enumerate(nodes):
        function = node["type"]
        params = tuple(node.get("side_inputs", ()))
        filters = params[1:] if function in _SPECIAL_RELATES else params
        null_positions: tuple[int, ...] = ()
        if function in composite:
            null_positions = tuple(i for i, p in enumerate(filters) if p in nulls)
        elif any(p in nulls for p in params):
            null_positions = (0,)  # a plain parameter node always sets its value
        closing = next((c for c in ("unique", "count", "exist") if function.endswith(c)), None)
        steps.append(
            _Step(
                function=function,
                inputs=tuple(node["inputs"]),
                params=params,
                null_positions=null_positions,
                out_neq=tuple(out_neq.get(t, ())),
                param_checks=tuple(param_checks.get(t, ())),
                closing=closing if function in composite else None,
                relate_mode="unique" if closing == "unique" else "zero" if closing else "plain",
                tail_is_plain=all(
                    not n.get("side_inputs") and n["type"] not in composite for n in nodes[t + 1 :]
                ),
                tail_is_local=all(i >= t for n in nodes[t + 1 :] for i in n["inputs"]),
            )
        )
    return tuple(steps)


def _load_families() -> tuple[tuple[ClevrFamily, ...], dict[str, Any]]:
    data = json.loads(TEMPLATES_PATH.read_text(encoding="utf-8"))
    release_texts = {(d["family"], d["text"]): d for d in data["release_text_differences"]}
    families = []
    for index, template in enumerate(data["families"]):
        if template["family"] != index:
            raise ValueError(f"{TEMPLATES_PATH}: family {index} is out of order")
        texts = list(template["text"])
        for (family, position), difference in release_texts.items():
            if family == index:
                if texts[position] != difference["template"]:
                    raise ValueError(f"{TEMPLATES_PATH}: release difference of family {index}")
                texts[position] = difference["release"]
        param_types = {p["name"]: p["type"] for p in template["params"]}
        terminal = _terminal_function(template["nodes"][-1]["type"])
        families.append(
            ClevrFamily(
                index=index,
                group=template["file"].removesuffix(".json"),
                terminal=terminal,
                texts=tuple(texts),
                file=template["file"],
                index_in_file=template["index_in_file"],
                steps=_compile_steps(template),
                param_types=param_types,
                check_degenerate=any(n["type"] == "relate" for n in template["nodes"]),
                other_rule=set(param_types) == {p for pair in _SAME_PAIRS for p in pair},
                answers=_answer_space(terminal),
            )
        )
    return tuple(families), data


FAMILIES, _DATA = _load_families()
_TYPES: dict[str, list[str]] = _DATA["types"]
_FILTER_FUNCTIONS = tuple(f"filter_{a}" for a in _KEY_ATTRIBUTES)
# CLEVR's random filter options: each key position any value of its type, or left out.
_RANDOM_KEY_VALUES = tuple((*_TYPES[t], None) for t in ("Size", "Color", "Material", "Shape"))
_EMPTY_KEY = (None, None, None, None)
_SYNONYMS: dict[str, list[str]] = _DATA["synonyms"]
# Each phrasing with its own double spaces marked, so closing the slot gaps keeps them.
_PREPARED_TEXTS: dict[int, tuple[str, ...]] = {
    f.index: tuple(t.strip().replace("  ", f" {_KEPT_SPACE} ") for t in f.texts) for f in FAMILIES
}


def family_table() -> str:
    """One line per family: index, group, terminal function: its first phrasing."""
    return "\n".join(f"{f.index:2d} {f.group} {f.terminal}: {f.texts[0]}" for f in FAMILIES)


# --- A scene, indexed for the search --------------------------------------------------------------
class _SceneIndex:
    """A scene as bitmasks of object indices: attribute values, filter keys, relations."""

    def __init__(self, scene: dict[str, Any]) -> None:
        objects = scene["objects"]
        self.objects = objects
        self.all = (1 << len(objects)) - 1
        self.value_masks: list[dict[str, int]] = [{} for _ in _KEY_ATTRIBUTES]
        # Every (size, color, material, shape) key, None where left out, that picks an object.
        self.key_masks: dict[tuple[str | None, ...], int] = {}
        for i, obj in enumerate(objects):
            bit = 1 << i
            values = tuple(obj[a] for a in _KEY_ATTRIBUTES)
            for position, value in enumerate(values):
                masks = self.value_masks[position]
                masks[value] = masks.get(value, 0) | bit
            for subset in range(16):
                key = tuple(v if subset >> p & 1 else None for p, v in enumerate(values))
                self.key_masks[key] = self.key_masks.get(key, 0) | bit
        self.keys = tuple(self.key_masks.items())
        # Keys that pick the same objects behave alike: the option tables work per object set.
        self.keys_by_mask: dict[int, list[tuple]] = {}
        for key, mask in self.keys:
            self.keys_by_mask.setdefault(mask, []).append(key)
        self.related = {
            r: [sum(1 << j for j in js) for js in lists]
            for r, lists in scene["relationships"].items()
        }
        self.same = {
            a: [
                sum(1 << j for j, o in enumerate(objects) if j != i and o[a] == obj[a])
                for i, obj in enumerate(objects)
            ]
            for a in _KEY_ATTRIBUTES
        }
        self._filter_tables: dict[int, tuple[list, list, int, int]] = {}
        self._option_lists: dict[tuple, tuple[list[tuple], int]] = {}
        self._relate_tables: dict[tuple, tuple] = {}  # (obj, mode[, nulls]) -> options

    def _filter_table(self, members: int) -> tuple[list, list, int, int]:
        """Filter keys over `members`: (every key, keys picking one object, how many keys pick
        one object, how many of those are not the empty key)."""
        table = self._filter_tables.get(members)
        if table is None:
            every = [key for key, _ in self.keys]
            single = []
            for mask, keys in self.keys_by_mask.items():
                sub = mask & members
                if sub and not sub & (sub - 1):
                    single += keys
            table = (every, single, len(single), len(single) - (_EMPTY_KEY in single))
            self._filter_tables[members] = table
        return table

    def filter_options(
        self, members: int, function: str, nulls: tuple[int, ...]
    ) -> tuple[list[tuple], int]:
        """CLEVR's options of a filter_* template node over `members`: (the scene's keys that
        keep the NULL-constrained positions empty, how many random keys to add)."""
        cache_key = (members, function, nulls)
        options = self._option_lists.get(cache_key)
        if options is None:
            every, single, singles, singles_not_empty = self._filter_table(members)
            if function == "filter_unique":
                keys, extra = single, 0
            elif function == "filter":  # the empty key (all objects) is no filter
                keys = [k for k in every if k != _EMPTY_KEY]
                extra = singles_not_empty
            elif function == "filter_count":  # as many random keys as single-object ones
                keys, extra = every, singles
            else:  # filter_exist: as many random keys as real ones
                keys, extra = every, len(every)
            if nulls:
                keys = [k for k in keys if all(k[p] is None for p in nulls)]
            options = (keys, extra)
            self._option_lists[cache_key] = options
        return options

    def relate_options(
        self, obj: int, mode: str, nulls: tuple[int, ...]
    ) -> tuple[list[tuple], list[tuple]]:
        """(relation, key) options around `obj`: (the non-trivial ones that keep the
        NULL-constrained positions empty, every trivial one: its relation adds nothing).
        `mode`: "unique" keeps one-object results, "zero" empty results too, "plain" neither.
        The caller keeps a share of the trivial ones (counted before NULL pruning, as CLEVR)."""
        cache_key = (obj, mode, nulls)
        table = self._relate_tables.get(cache_key)
        if table is None:
            options, trivial = self._relate_table(obj, mode)
            kept = [o for o in options if all(o[1][p] is None for p in nulls)] if nulls else options
            table = (kept, trivial, len(options))
            self._relate_tables[cache_key] = table
        return table

    def _relate_table(self, obj: int, mode: str) -> tuple[list[tuple], list[tuple]]:
        cached = self._relate_tables.get((obj, mode))
        if cached is None:
            options: list[tuple] = []
            trivial: list[tuple] = []
            for relation, masks in self.related.items():
                related = masks[obj]
                for mask, keys in self.keys_by_mask.items():
                    sub = related & mask
                    if mode == "unique":
                        if not sub or sub & (sub - 1):
                            continue
                    elif not sub and mode != "zero":
                        continue
                    (trivial if sub == mask else options).extend((relation, k) for k in keys)
            cached = (options, trivial)
            self._relate_tables[(obj, mode)] = cached
        return cached


# --- Execution on bitmasks (the executor's semantics; the tests check they agree) -----------------
def _answer_string(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _unique(index: _SceneIndex, members: Any, value: str | None) -> Any:
    if not members or members & (members - 1):
        return _INVALID
    return members.bit_length() - 1


def _one_input_functions() -> dict[str, Callable[[_SceneIndex, Any, str | None], Any]]:
    table: dict[str, Callable[[_SceneIndex, Any, str | None], Any]] = {
        "unique": _unique,
        "relate": lambda index, obj, value: index.related[value][obj],
        "count": lambda index, members, value: members.bit_count(),
        "exist": lambda index, members, value: members != 0,
    }
    for position, attr in enumerate(_KEY_ATTRIBUTES):
        table[f"filter_{attr}"] = lambda index, members, value, p=position: (
            members & index.value_masks[p].get(value, 0)
        )
        table[f"query_{attr}"] = lambda index, obj, value, a=attr: index.objects[obj][a]
        table[f"same_{attr}"] = lambda index, obj, value, a=attr: index.same[a][obj]
    return table


_ONE_INPUT = _one_input_functions()
_TWO_INPUTS: dict[str, Callable[[Any, Any], Any]] = {
    "union": lambda a, b: a | b,
    "intersect": lambda a, b: a & b,
    "less_than": lambda a, b: a < b,
    "greater_than": lambda a, b: a > b,
    "equal_integer": lambda a, b: a == b,
    **{f"equal_{attr}": (lambda a, b: a == b) for attr in _KEY_ATTRIBUTES},
}


def _apply(index: _SceneIndex, function: str, args: Sequence[Any], value: str | None) -> Any:
    """One release-dialect function on bitmask sets (an object is its index); `_INVALID`
    propagates."""
    if function == "scene":
        return index.all
    if len(args) == 1:
        return _INVALID if args[0] is _INVALID else _ONE_INPUT[function](index, args[0], value)
    a, b = args
    return _INVALID if a is _INVALID or b is _INVALID else _TWO_INPUTS[function](a, b)


def _close(closing: str | None, members: int) -> Any:
    """The output of a composite template node whose filters left `members`."""
    if closing is None:
        return members
    if closing == "count":
        return members.bit_count()
    if closing == "exist":
        return members != 0
    return members.bit_length() - 1  # "unique": the options pick exactly one object


# --- The instantiation search ---------------------------------------------------------------------
class _OutOfBudget(Exception):
    """The search visited as many partial programs as it may."""


class _Search:
    """A randomised depth-first search for one instantiation of a family on a scene.

    `nodes`/`outputs` hold the program built so far (release-dialect nodes as (function,
    inputs, value) and their outputs), `where[t]` the program node that stands for template
    node t, `values` the parameter values chosen so far. Options are taken in random order;
    the first that leads to an accepted question ends the search, as in CLEVR's generator.
    """

    def __init__(
        self,
        family: ClevrFamily,
        index: _SceneIndex,
        rng: random.Random,
        acceptable: Callable[[str], bool],
        budget: int,
    ) -> None:
        self.family = family
        self.steps = family.steps
        self.index = index
        self.rng = rng
        self.acceptable = acceptable
        self.budget = budget
        self.nodes: list[tuple[str, tuple[int, ...], str | None]] = []
        self.outputs: list[Any] = []
        self.where = [0] * len(family.steps)
        self.values: dict[str, str] = {}
        self.result: tuple[list, dict[str, str], str] | None = None
        # For CLEVR's degeneracy test, kept up to date as nodes come and go: per `relate` node
        # of the program, (its position, the outputs with it replaced by the whole scene,
        # which of them that changed).
        self.tracks_relates = family.check_degenerate
        self.overrides: list[tuple[int, list[Any], list[bool]]] = []

    def run(self) -> tuple[list, dict[str, str], str] | None:
        """(program nodes, parameter values, answer), or None if none was found in budget."""
        try:
            self._visit(0)
        except _OutOfBudget:
            return None
        return self.result

    def _spend(self) -> None:
        self.budget -= 1
        if self.budget < 0:
            raise _OutOfBudget

    def _random_order(self, n: int) -> Iterable[int]:
        """0..n-1 in random order, drawn as needed: the search usually stops early."""
        order = list(range(n))
        draw = self.rng.random
        for i in range(n):
            j = i + int(draw() * (n - i))
            order[i], order[j] = order[j], order[i]
            yield order[i]

    # Each handler tries the options of template node t: it appends the nodes of one, goes on
    # with t + 1 and takes them away again; it returns True once a question has been accepted.
    def _visit(self, t: int) -> bool:
        if t == len(self.steps):
            return self._finish()
        step = self.steps[t]
        if step.function in _SPECIAL_FILTERS:
            return self._filter_options(t, step)
        if step.function in _SPECIAL_RELATES:
            return self._relate_options(t, step)
        if step.params:
            return self._parameter_values(t, step)
        self._spend()
        inputs = tuple(self.where[i] for i in step.inputs)
        output = _apply(self.index, step.function, [self.outputs[i] for i in inputs], None)
        if output is _INVALID or not self._differs(step, output):
            return False
        return self._push_and_continue(t, [(step.function, inputs, None, output)], None)

    def _push_and_continue(self, t: int, new: list[tuple], source: int | None) -> bool:
        """Append `new` (function, inputs, value, output) nodes for template node t (none:
        it stands for program node `source`), go on with t + 1, then remove them."""
        nodes, outputs = self.nodes, self.outputs
        size = len(nodes)
        for function, inputs, value, output in new:
            if self.tracks_relates:
                self._track(function, inputs, value, output)
            nodes.append((function, inputs, value))
            outputs.append(output)
        self.where[t] = len(nodes) - 1 if new else source
        found = self._visit(t + 1)
        del nodes[size:], outputs[size:]
        if self.tracks_relates:
            while self.overrides and self.overrides[-1][0] >= size:
                self.overrides.pop()
            for _, replaced, changed in self.overrides:
                del replaced[size:], changed[size:]
        return found

    def _track(self, function: str, inputs: tuple[int, ...], value: Any, output: Any) -> None:
        """Extend every relate-replaced program by the node about to be appended."""
        for _, replaced, changed in self.overrides:
            if any(changed[i] for i in inputs):
                args = [replaced[i] for i in inputs]
                replaced.append(_apply(self.index, function, args, value))
                changed.append(True)
            else:
                replaced.append(output)
                changed.append(False)
        if function == "relate":
            position = len(self.nodes)
            changed = [False] * position
            changed.append(True)
            self.overrides.append((position, [*self.outputs, self.index.all], changed))

    def _differs(self, step: _Step, output: Any) -> bool:
        """Whether `output` of `step` meets its OUT_NEQ and parameter constraints."""
        for other in step.out_neq:
            if self.outputs[self.where[other]] == output:
                return False
        for kind, params in step.param_checks:
            values = [self.values[p] for p in params]
            if kind == "NOT_NULL" and values[0] in ("", "thing"):
                return False
            if kind == "EQ" and values[0] != values[1]:
                return False
            if kind == "NEQ" and values[0] == values[1]:
                return False
        return True

    def _answer_if_last(self, t: int, output: Any, earlier: list[Any] | None = None) -> str | None:
        """With template node t giving `output`: the answer, if every later node is a plain
        function (None if one is invalid or, unless `earlier` is given, breaks a constraint);
        "" if the answer is not known yet. `earlier` replaces the program's outputs (a
        degeneracy check)."""
        steps = self.steps
        if not steps[t].tail_is_plain:
            return ""
        if t == len(steps) - 1:
            return _answer_string(output)
        base = self.outputs if earlier is None else earlier
        later: dict[int, Any] = {t: output}
        for j in range(t + 1, len(steps)):
            step = steps[j]
            args = [later[i] if i in later else base[self.where[i]] for i in step.inputs]
            value = _apply(self.index, step.function, args, None)
            if value is _INVALID:
                return None
            if earlier is None:
                for other in step.out_neq:
                    theirs = later[other] if other in later else base[self.where[other]]
                    if theirs == value:
                        return None
            later[j] = value
        return _answer_string(later[len(steps) - 1])

    def _promising(self, t: int, step: _Step, output: Any) -> str | None:
        """Cheap checks of one option before its nodes are built: constraints, and the answer
        if the rest of the template is plain functions. Returns None if the option fails, else
        its answer ("" if not known yet)."""
        if not self._differs(step, output):
            return None
        answer = self._answer_if_last(t, output)
        if answer and not self.acceptable(answer):
            return None
        return answer

    def _relate_overrides(self) -> list[list[Any]]:
        """The program's outputs with each `relate` node in turn replaced by the whole scene
        (CLEVR's degeneracy test), for options tested before their nodes are built."""
        return [replaced for _, replaced, _ in self.overrides]

    def _degenerate_option(
        self, t: int, step: _Step, key_mask: int, answer: str, overrides: list[list[Any]]
    ) -> bool:
        """Whether filter option `key_mask` of template node t gives the same answer with some
        `relate` replaced by the whole scene."""
        for outputs in overrides:
            members = outputs[self.where[step.inputs[0]]]
            if members is _INVALID:
                continue
            sub = members & key_mask
            if step.closing == "unique" and (not sub or sub & (sub - 1)):
                continue  # the replaced program is not well posed: another answer
            if self._answer_if_last(t, _close(step.closing, sub), outputs) == answer:
                return True
        return False

    def _filter_nodes(
        self,
        start: int,
        source: int,
        members: int,
        key: Sequence[str | None],
        params: Sequence[str],
        closing: str | None,
    ) -> list[tuple]:
        """The nodes of one filter key, the first at program index `start` reading `source`
        (empty key positions add none), then the closing unique/count/exist node; sets the
        key's parameters."""
        new: list[tuple] = []
        masks = self.index.value_masks
        for position, value in enumerate(key):
            name = params[position]
            if value is None:
                self.values[name] = "thing" if position == 3 else ""
                continue
            self.values[name] = value
            members &= masks[position].get(value, 0)
            inputs = (start + len(new) - 1,) if new else (source,)
            new.append((_FILTER_FUNCTIONS[position], inputs, value, members))
        if closing is not None:
            last = start + len(new) - 1 if new else source
            new.append((closing, (last,), None, _close(closing, members)))
        return new

    def _random_key(self) -> tuple[str | None, ...]:
        """A random filter key, as CLEVR's "empty" options: each attribute any value or none."""
        return tuple(self.rng.choice(values) for values in _RANDOM_KEY_VALUES)

    def _filter_options(self, t: int, step: _Step) -> bool:
        source = self.where[step.inputs[0]]
        members = self.outputs[source]
        keys, random_keys = self.index.filter_options(members, step.function, step.null_positions)
        key_masks = self.index.key_masks
        # Templates with a plain relate (single_and) end in a filter node: test each option for
        # degeneracy before building it, against the outputs with each relate replaced.
        overrides = None
        if self.family.check_degenerate and step.tail_is_plain:
            overrides = self._relate_overrides()
            if step.tail_is_local and any(o[source] == members for o in overrides):
                return False  # a relate that changes nothing here: every option is degenerate
        for pick in self._random_order(len(keys) + random_keys):
            self._spend()
            if pick < len(keys):
                key = keys[pick]
            else:
                key = self._random_key()
                if any(key[p] is not None for p in step.null_positions):
                    continue
            key_mask = key_masks.get(key, 0)  # every key that matches an object is there
            answer = self._promising(t, step, _close(step.closing, key_mask & members))
            if answer is None:
                continue
            if (
                answer
                and overrides
                and self._degenerate_option(t, step, key_mask, answer, overrides)
            ):
                continue
            start = len(self.nodes)
            new = self._filter_nodes(start, source, members, key, step.params, step.closing)
            if self._push_and_continue(t, new, source):
                return True
        return False

    def _relate_options(self, t: int, step: _Step) -> bool:
        source = self.where[step.inputs[0]]
        obj = self.outputs[source]
        nulls = step.null_positions
        options, trivial, unpruned = self.index.relate_options(obj, step.relate_mode, nulls)
        keep = round(unpruned * _TRIVIAL_FRACTION / (1 - _TRIVIAL_FRACTION))
        if keep and trivial:
            picked = self.rng.sample(trivial, min(keep, len(trivial)))
            options = options + [o for o in picked if all(o[1][p] is None for p in nulls)]
        relation_param, filter_params = step.params[0], step.params[1:]
        key_masks, related_masks = self.index.key_masks, self.index.related
        for pick in self._random_order(len(options)):
            self._spend()
            relation, key = options[pick]
            related = related_masks[relation][obj]
            if self._promising(t, step, _close(step.closing, related & key_masks[key])) is None:
                continue
            self.values[relation_param] = relation
            start = len(self.nodes)
            new = [("relate", (source,), relation, related)]
            new += self._filter_nodes(start + 1, start, related, key, filter_params, step.closing)
            if self._push_and_continue(t, new, source):
                return True
        return False

    def _parameter_values(self, t: int, step: _Step) -> bool:
        if step.null_positions:  # a NULL constraint on a parameter that always gets a value
            return False
        (param,) = step.params
        values = _TYPES[self.family.param_types[param]]
        source = self.where[step.inputs[0]]
        for pick in self._random_order(len(values)):
            self._spend()
            value = values[pick]
            output = _apply(self.index, step.function, [self.outputs[source]], value)
            self.values[param] = value
            if self._promising(t, step, output) is None:
                continue
            if self._push_and_continue(t, [(step.function, (source,), value, output)], source):
                return True
        return False

    def _finish(self) -> bool:
        answer = _answer_string(self.outputs[-1])
        if not self.acceptable(answer):
            return False
        if self.family.check_degenerate and self._degenerate(answer):
            return False
        self.result = (list(self.nodes), dict(self.values), answer)
        return True

    def _degenerate(self, answer: str) -> bool:
        """CLEVR's degeneracy: replacing some `relate` by the whole scene keeps the answer."""
        for position, (function, _, _) in enumerate(self.nodes):
            if function != "relate":
                continue
            outputs = self.outputs[:position] + [self.index.all]
            for node_function, inputs, value in self.nodes[position + 1 :]:
                outputs.append(
                    _apply(self.index, node_function, [outputs[i] for i in inputs], value)
                )
            last = outputs[-1]
            if last is not _INVALID and _answer_string(last) == answer:
                return True
        return False


def _render(family: ClevrFamily, values: Mapping[str, str], rng: random.Random) -> str:
    """The question text: a random phrasing, slots filled (random synonyms), optional words
    kept or dropped at random, the gaps closed, CLEVR's other/another rule applied."""
    text = rng.choice(_PREPARED_TEXTS[family.index])
    for name, value in values.items():
        words = _SYNONYMS.get(value)
        text = text.replace(name, rng.choice(words) if words else value)
    text = _OPTIONAL.sub(lambda m: m.group(1) if rng.random() < 0.5 else "", text)
    text = " ".join(text.split()).replace(f" {_KEPT_SPACE} ", "  ")
    if family.other_rule and (" other " in text or " another " in text):
        # Two described objects that differ in a named attribute are not "other" ones.
        for first, second in _SAME_PAIRS:
            a, b = values[first], values[second]
            if a and b and a != b:
                text = text.replace(" other ", " ").replace(" another ", " a ")
                break
    return text


def _release_program(nodes: Sequence[tuple[str, tuple[int, ...], str | None]]) -> list[dict]:
    return [
        {"function": f, "inputs": list(inputs), "value_inputs": [] if v is None else [v]}
        for f, inputs, v in nodes
    ]


# --- Balanced sampling ----------------------------------------------------------------------------
class ClevrQuestionSampler:
    """Samples CLEVR-language questions for scenes, balancing answers per family over a split.

    A drop-in for `questions.QuestionSampler` (same keywords, same `sample` contract). Keep one
    sampler per split: its counts span every scene it has seen, and `question_index` numbers
    its questions 0, 1, 2, ... in order.

    Families are tried as CLEVR's generator tries its templates: those asked least so far
    first (ties in random order), each at most once per image while unused ones remain.

    Args:
        rng: the only source of randomness (seed it for reproducible questions).
        question_mix: "uniform" spreads questions evenly over the 90 families (as far as each
            scene allows); "clevr" first draws the question type with CLEVR v1.0's shares
            (`clevr.question_type_shares`), then a family of that type; a mapping from type to
            weight does the same with those shares (`question_type_weights`).
        max_ratio, slack: an answer is refused while its count in the family would exceed
            `max_ratio` times the count of the family's next most frequent answer plus `slack`
            (with the defaults exactly CLEVR's rule: at most 1.1 times the runner-up).
        max_attempts_per_question: family instantiations tried per requested question before
            a scene is given fewer questions.
        median_ratio, median_floor: CLEVR's second rule: an answer is refused while its count
            exceeds `median_ratio` times the family's median answer count (at least
            `median_floor`).
        search_budget: partial programs one instantiation may visit before the family is given
            up for that scene (CLEVR searches exhaustively, which is slow on hopeless cases); a
            family that failed on its last `_STREAK` attempts gets an eighth of it, so one that
            cannot succeed any more (the plain "same number" family after its one "no") stays
            cheap.
        reset_counts_every: forget the counts every this many images, as CLEVR's generator
            does every 250; None (the default) balances over the whole split.
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        question_mix: QuestionMix = "uniform",
        max_ratio: float = 1.1,
        slack: int = 1,
        max_attempts_per_question: int = 60,
        median_ratio: float = 5.0,
        median_floor: int = 5,
        search_budget: int = 200,
        reset_counts_every: int | None = None,
    ) -> None:
        self.type_shares = question_type_weights(question_mix)
        self.rng = rng
        self.max_ratio = max_ratio
        self.slack = slack
        self.max_attempts_per_question = max_attempts_per_question
        self.median_ratio = median_ratio
        self.median_floor = median_floor
        self.search_budget = search_budget
        self.reset_counts_every = reset_counts_every
        self.next_question_index = 0
        self.images_seen = 0
        self.failures_in_a_row: dict[int, int] = dict.fromkeys(range(len(FAMILIES)), 0)
        self._reset_counts()
        self.families_of_type = {
            t: [f for f in FAMILIES if clevr.TYPE_OF_FUNCTION[f.terminal] == t]
            for t in clevr.QUESTION_TYPES
        }

    def _reset_counts(self) -> None:
        self.answer_counts: dict[int, dict[str, int]] = {
            f.index: dict.fromkeys(f.answers, 0) for f in FAMILIES
        }
        self.family_counts: dict[int, int] = dict.fromkeys(range(len(FAMILIES)), 0)

    def acceptable_answers(self, family: int) -> frozenset[str]:
        """The answers `family` may have now under both balance rules."""
        counts = self.answer_counts[family]
        ordered = sorted(counts.values())
        median = max(ordered[len(ordered) // 2], self.median_floor)
        top, runner_up = ordered[-1], ordered[-2]
        accepted = []
        for answer, count in counts.items():
            best_other = runner_up if count == top else top
            if count + 1 > self.max_ratio * best_other + self.slack:
                continue
            if count > self.median_ratio * median:
                continue
            accepted.append(answer)
        return frozenset(accepted)

    def _attempt(
        self, family: ClevrFamily, index: _SceneIndex, texts: set[str]
    ) -> tuple[str, str, list[dict]] | None:
        acceptable = self.acceptable_answers(family.index)
        if not acceptable:
            return None
        budget = self.search_budget
        if self.failures_in_a_row[family.index] >= _STREAK:
            budget //= 8
        found = _Search(family, index, self.rng, acceptable.__contains__, budget).run()
        if found is None:
            self.failures_in_a_row[family.index] += 1
            return None
        self.failures_in_a_row[family.index] = 0
        nodes, values, answer = found
        text = _render(family, values, self.rng)
        if text in texts:
            return None
        return text, answer, _release_program(nodes)

    def _ordered(self, families: Iterable[ClevrFamily], asked: set[int]) -> list[ClevrFamily]:
        """Unused families first, each group least asked first, ties in random order."""
        rng, counts = self.rng, self.family_counts
        return sorted(families, key=lambda f: (f.index in asked, counts[f.index], rng.random()))

    def sample(self, scene: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """Up to `n` questions about `scene` (fewer only if the families keep failing).

        Returns release-format questions (`image_index`, `image_filename`, `split`, `question`,
        `answer`, `question_family_index`, `question_index`, `program`), texts distinct.
        """
        if self.reset_counts_every and self.images_seen % self.reset_counts_every == 0:
            self._reset_counts()
        self.images_seen += 1
        index = _SceneIndex(scene)
        questions: list[dict[str, Any]] = []
        texts: set[str] = set()
        asked: set[int] = set()
        attempts = n * self.max_attempts_per_question
        failed_types: set[str] = set()
        while len(questions) < n and attempts > 0:
            if self.type_shares is None:
                candidates = self._ordered(FAMILIES, asked)
            else:
                types = [t for t in self.type_shares if t not in failed_types]
                if not types:
                    break
                wanted = self.rng.choices(types, weights=[self.type_shares[t] for t in types])[0]
                candidates = self._ordered(self.families_of_type[wanted], asked)
            accepted = 0
            for family in candidates:
                if len(questions) == n or attempts == 0:
                    break
                attempts -= 1
                attempt = self._attempt(family, index, texts)
                if attempt is None:
                    continue
                text, answer, program = attempt
                texts.add(text)
                asked.add(family.index)
                self.answer_counts[family.index][answer] += 1
                self.family_counts[family.index] += 1
                questions.append(
                    release_question(
                        scene, text, answer, family.index, self.next_question_index, program
                    )
                )
                self.next_question_index += 1
                accepted += 1
                if self.type_shares is not None:
                    break  # one question per drawn type
            if not accepted:
                if self.type_shares is None:
                    break  # every family failed on this scene
                failed_types.add(wanted)
        return questions


def instantiate(
    family: int, scene: dict[str, Any], rng: random.Random, *, search_budget: int = 20_000
) -> dict[str, Any] | None:
    """One question of `family` about `scene`, any answer (no balancing), or None if the search
    finds none within `search_budget` partial programs. Release format without
    `question_index`."""
    chosen = FAMILIES[family]
    index = _SceneIndex(scene)
    found = _Search(chosen, index, rng, lambda answer: True, search_budget).run()
    if found is None:
        return None
    nodes, values, answer = found
    split = scene.get("split", "")
    image_index = int(scene["image_index"])
    return {
        "image_index": image_index,
        "image_filename": scene.get("image_filename") or clevr.image_filename(split, image_index),
        "split": split,
        "question": _render(chosen, values, rng),
        "answer": answer,
        "question_family_index": chosen.index,
        "program": _release_program(nodes),
    }


def sample_clevr_questions(
    scenes: Iterable[dict[str, Any]],
    rng: random.Random,
    questions_per_image: int,
    question_mix: QuestionMix = "uniform",
) -> list[dict[str, Any]]:
    """Questions for every scene of one split, balanced over the split (one sampler)."""
    sampler = ClevrQuestionSampler(rng, question_mix=question_mix)
    questions: list[dict[str, Any]] = []
    for scene in scenes:
        questions += sampler.sample(scene, questions_per_image)
    return questions


# --- Coverage of genuine question texts -----------------------------------------------------------
_ADJECTIVES = frozenset(
    w
    for attr in ("size", "color", "material")
    for value in clevr.ATTRIBUTES[attr]
    for w in _SYNONYMS.get(value, [value])
)
_NOUNS = frozenset(w for value in (*clevr.SHAPES, "thing") for w in _SYNONYMS.get(value, [value]))
_PLURAL_NOUNS = frozenset(f"{w}s" for w in _NOUNS)
_RELATION_PHRASES = tuple(
    sorted(
        (tuple(phrase.split(" ")) for r in clevr.RELATIONS for phrase in _SYNONYMS[r]),
        key=len,
        reverse=True,
    )
)


def phrasing_skeleton(text: str) -> tuple[str, ...]:
    """A question's phrasing with its content abstracted: its clevr-iep tokens with every
    description (adjectives and a noun) replaced by <D> (singular) or <Ds> (plural), stray
    adjectives by <A>, and every relation phrase ("left of", "on the right side of", "in
    front of", ...) by <R>. Function words, word order, punctuation and double spaces (the ''
    token) are kept, so two texts share a skeleton only if they share a phrasing."""
    tokens = tokenize(text)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        for phrase in _RELATION_PHRASES:
            if tuple(tokens[i : i + len(phrase)]) == phrase:
                out.append("<R>")
                i += len(phrase)
                break
        else:
            if token in _ADJECTIVES or token in _NOUNS or token in _PLURAL_NOUNS:
                j = i
                while j < len(tokens) and tokens[j] in _ADJECTIVES:
                    j += 1
                if j < len(tokens) and tokens[j] in _NOUNS:
                    out.append("<D>")
                    i = j + 1
                elif j < len(tokens) and tokens[j] in _PLURAL_NOUNS:
                    out.append("<Ds>")
                    i = j + 1
                else:
                    out.append("<A>")
                    i = j
            else:
                out.append(token)
                i += 1
    return tuple(out)


def _template_variants(text: str) -> list[str]:
    """Every way the optional words of a phrasing can come out."""
    variants = [""]
    position = 0
    for match in _OPTIONAL.finditer(text):
        literal = text[position : match.start()]
        variants = [v + literal + kept for v in variants for kept in ("", match.group(1))]
        position = match.end()
    return [v + text[position:] for v in variants]


def template_skeletons(families: Sequence[ClevrFamily] = FAMILIES) -> frozenset[tuple[str, ...]]:
    """The skeleton (`phrasing_skeleton`) of every phrasing the families can produce: each
    phrasing with every choice of its optional words, with and without CLEVR's other/another
    rule. Slots are filled with fixed words: skeletons do not depend on them."""
    fill = {"Size": "", "Color": "", "Material": "", "Shape": "thing", "Relation": "left"}
    skeletons = set()
    for family in families:
        values = {name: fill[kind] for name, kind in family.param_types.items()}
        for phrasing in _PREPARED_TEXTS[family.index]:
            for variant in _template_variants(phrasing):
                text = variant
                for name, value in values.items():
                    words = _SYNONYMS.get(value)
                    text = text.replace(name, words[0] if words else value)
                text = " ".join(text.split()).replace(f" {_KEPT_SPACE} ", "  ")
                skeletons.add(phrasing_skeleton(text))
                if family.other_rule:
                    plain = text.replace(" other ", " ").replace(" another ", " a ")
                    skeletons.add(phrasing_skeleton(plain))
    return frozenset(skeletons)


def vocabulary_coverage(texts: Sequence[str], vocabulary: Iterable[str]) -> float:
    """The share of `texts` whose every clevr-iep token is in `vocabulary`."""
    words = set(vocabulary)
    if not texts:
        raise ValueError("no texts to measure")
    return sum(all(t in words for t in tokenize(text)) for text in texts) / len(texts)


def phrasing_coverage(texts: Sequence[str], skeletons: Iterable[tuple[str, ...]]) -> float:
    """The share of `texts` whose `phrasing_skeleton` is one of `skeletons` (those of a
    generator: `template_skeletons()` for this one, or the skeletons of texts it generated)."""
    known = set(skeletons)
    if not texts:
        raise ValueError("no texts to measure")
    return sum(phrasing_skeleton(text) in known for text in texts) / len(texts)


def measure_coverage(
    texts: Sequence[str],
    vocabulary: Iterable[str],
    skeletons: Iterable[tuple[str, ...]] | None = None,
) -> dict[str, float]:
    """How much of a list of (genuine) question texts a generator covers.

    Returns `{"texts": n, "in_vocabulary": ..., "phrasings": ...}`: the share of texts whose
    every token is in `vocabulary` (e.g. the question vocabulary built on the generator's train
    split) and the share whose phrasing skeleton is among `skeletons` (default: every phrasing
    this module's families produce, `template_skeletons()`).
    """
    if skeletons is None:
        skeletons = template_skeletons()
    return {
        "texts": len(texts),
        "in_vocabulary": vocabulary_coverage(texts, vocabulary),
        "phrasings": phrasing_coverage(texts, skeletons),
    }


def read_question_texts(path: str | Path) -> list[str]:
    """The texts of a question file: a release file (`questions`) or `{"<image>": [texts]}`."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict) and "questions" in data:
        return [q["question"] for q in data["questions"]]
    if isinstance(data, dict):
        return [text for image in data.values() for text in image]
    raise ValueError(f"{path}: neither a release question file nor image -> texts")


# The look of the scenes the coverage is measured on: the one CLEVR's language is trained with.
COVERAGE_LOOK = "clevr"


def _mini_scenes(images: int, seed: int, split: str = "train") -> list[dict[str, Any]]:
    from filmclevr.mini.generate import make_scene  # generate imports questions, not this module

    return [make_scene(seed, split, i, look=COVERAGE_LOOK) for i in range(images)]


def _recorded_path(path: Path) -> str:
    """`path` relative to the repository when inside it (a record that reads alike on every
    checkout), else as given."""
    root = Path(__file__).resolve().parents[2]
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def coverage_report(
    genuine: Path, scenes: Sequence[Mapping[str, Any]], questions_per_image: int, seed: int
) -> dict[str, Any]:
    """How much of the genuine question texts in `genuine` this generator covers, beside the
    project's own generator on the same scenes: `--coverage`'s numbers, and what they were
    measured on (shares are fractions of the genuine texts)."""
    import hashlib

    from filmclevr.mini.questions import sample_questions
    from filmclevr.tokenize import build_vocab

    texts = read_question_texts(genuine)
    sampler = ClevrQuestionSampler(random.Random(seed))
    questions = [q for s in scenes for q in sampler.sample(s, questions_per_image)]
    vocab = build_vocab(questions)["question_token_to_idx"]
    result = measure_coverage(texts, vocab)
    sampled = phrasing_coverage(texts, {phrasing_skeleton(q["question"]) for q in questions})
    # The project's own generator on the same scenes, side by side: its vocabulary, and the
    # phrasings its questions use.
    own = sample_questions(scenes, random.Random(seed), questions_per_image, "uniform")
    own_vocab = build_vocab(own)["question_token_to_idx"]
    own_result = measure_coverage(texts, own_vocab, {phrasing_skeleton(q["question"]) for q in own})
    return {
        "genuine": {
            "file": _recorded_path(genuine),
            "sha256": hashlib.sha256(Path(genuine).read_bytes()).hexdigest(),
            "texts": result["texts"],
        },
        "generated_on": {
            "scenes": len(scenes),
            "split": "train",
            "look": COVERAGE_LOOK,
            "questions_per_image": questions_per_image,
            "seed": seed,
        },
        "clevr_language": {
            "questions": len(questions),
            "vocabulary_entries": len(vocab),  # question_token_to_idx, special tokens included
            "in_vocabulary": result["in_vocabulary"],
            "phrasings_of_the_families": result["phrasings"],
            "phrasings_of_the_questions": sampled,
        },
        "mini_language": {
            "questions": len(own),
            "vocabulary_entries": len(own_vocab),
            "in_vocabulary": own_result["in_vocabulary"],
            "phrasings_of_the_questions": own_result["phrasings"],
        },
    }


def _print_coverage(report: Mapping[str, Any], genuine: Path) -> None:
    clevr_side, mini_side = report["clevr_language"], report["mini_language"]
    print(f"{report['genuine']['texts']} genuine texts ({genuine.name})")
    print(
        f"in the vocabulary of {clevr_side['questions']} generated questions "
        f"({clevr_side['vocabulary_entries']} entries): {100 * clevr_side['in_vocabulary']:.2f}%"
    )
    print(
        f"phrasings of the 90 CLEVR families: {100 * clevr_side['phrasings_of_the_families']:.2f}%"
    )
    print(
        f"phrasings of these {clevr_side['questions']} generated questions: "
        f"{100 * clevr_side['phrasings_of_the_questions']:.2f}%"
    )
    print(
        f"mini-CLEVR's own generator, {mini_side['questions']} questions on the same scenes: "
        f"vocabulary of {mini_side['vocabulary_entries']} entries "
        f"{100 * mini_side['in_vocabulary']:.2f}%,"
        f" phrasings {100 * mini_side['phrasings_of_the_questions']:.2f}%"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`--coverage`: vocabulary and phrasing coverage of a genuine question file (`--json`
    also writes it); `--speed`: questions per second on mini-CLEVR scenes."""
    from filmclevr.fileio import write_json_atomic

    parser = argparse.ArgumentParser(prog="python -m filmclevr.mini.clevr_questions")
    parser.add_argument("--coverage", action="store_true", help="measure genuine-text coverage")
    parser.add_argument("--speed", action="store_true", help="measure questions per second")
    parser.add_argument("--genuine", type=Path, default=GENUINE_TEXTS_PATH)
    parser.add_argument("--images", type=int, default=300, help="mini-CLEVR train scenes")
    parser.add_argument("--questions-per-image", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--family-table", action="store_true", help="print the 90 families")
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="with --coverage: also write its numbers here"
    )
    args = parser.parse_args(argv)
    if not (args.coverage or args.speed or args.family_table):
        parser.error("say --coverage, --speed or --family-table")
    if args.json is not None and not args.coverage:
        parser.error("--json writes the coverage: say --coverage too")
    if args.family_table:
        print(family_table())
    if args.coverage or args.speed:
        scenes = _mini_scenes(args.images, args.seed)
    if args.speed:
        sampler = ClevrQuestionSampler(random.Random(args.seed))
        started = time.perf_counter()
        questions = [q for s in scenes for q in sampler.sample(s, args.questions_per_image)]
        seconds = time.perf_counter() - started
        print(
            f"{len(questions)} questions on {len(scenes)} scenes in {seconds:.2f} s: "
            f"{len(questions) / seconds:.0f} questions/s"
        )
    if args.coverage:
        report = coverage_report(args.genuine, scenes, args.questions_per_image, args.seed)
        _print_coverage(report, args.genuine)
        if args.json is not None:
            write_json_atomic(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
