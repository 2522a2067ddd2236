"""Mini-CLEVR question templates and balanced question sampling.

Our own templates (not CLEVR's files), in CLEVR's style and with its synonyms (`clevr.SYNONYMS`),
covering its 9 template groups, all 26 program functions and the 13 terminal functions. A
template picks objects of the scene and describes them (random attribute subsets, in CLEVR's
size-color-material-shape order), builds the release-dialect program, and the answer is always
`executor.execute(program, scene)`; a question whose `unique` does not see exactly one object is
rejected. Degenerate questions are avoided: zero-hop sets, union and count-comparison operands
carry at least one filter, compared descriptions differ and neither contains the other, an
attribute that is queried or compared is never named in the description, and two compared
objects are distinct.

Answers are balanced per family by rejection, as in CLEVR's generator: `QuestionSampler` keeps
answer counts per family over a whole split and refuses an answer while it would exceed
`max_ratio` times the count of the family's next most frequent answer (plus `slack`).

Family table, one line per family: `question_family_index`, group, terminal function: the first
of the family's text templates. `{D}`/`{Ds}`/`{D_a}` are a set description (singular, plural, with
article), `{U}`, `{A}`, `{B}` unique references, `{REL}` a relation chain such as "left of the red
cube" or "behind the sphere that is left of the cube" (`family_table()` prints it):

 0 zero_hop count: How many {Ds} are there?
 1 zero_hop exist: Are there any {Ds}?
 2 zero_hop query_color: What color is the {U}?
 3 zero_hop query_shape: What shape is the {U}?
 4 zero_hop query_size: What size is the {U}?
 5 zero_hop query_material: What material is the {U}?
 6 one_hop count: How many {Ds} are {REL}?
 7 one_hop exist: Are there any {Ds} {REL}?
 8 one_hop query_color: What color is the {U} {REL}?
 9 one_hop query_shape: What shape is the {U} {REL}?
10 one_hop query_size: What size is the {U} {REL}?
11 one_hop query_material: What material is the {U} {REL}?
12 two_hop count: How many {Ds} are {REL}?
13 two_hop exist: Are there any {Ds} {REL}?
14 two_hop query_color: What color is the {U} {REL}?
15 two_hop query_shape: What shape is the {U} {REL}?
16 two_hop query_size: What size is the {U} {REL}?
17 two_hop query_material: What material is the {U} {REL}?
18 three_hop count: How many {Ds} are {REL}?
19 three_hop exist: Are there any {Ds} {REL}?
20 three_hop query_color: What color is the {U} {REL}?
21 three_hop query_shape: What shape is the {U} {REL}?
22 three_hop query_size: What size is the {U} {REL}?
23 three_hop query_material: What material is the {U} {REL}?
24 single_and count: How many {Ds} are both {REL1} and {REL2}?
25 single_and exist: Are there any {Ds} that are both {REL1} and {REL2}?
26 single_and query_color: What color is the {U} that is {REL1} and {REL2}?
27 single_and query_shape: What shape is the {U} that is {REL1} and {REL2}?
28 single_and query_material: What material is the {U} that is {REL1} and {REL2}?
29 single_or count: How many things are either {D1s} or {D2s}?
30 single_or exist: Are there any {D1s} or {D2s}?
31 single_or count: How many {Ds} are {REL1} or {REL2}?
32 comparison equal_color: Does the {A} have the same color as the {B}?
33 comparison equal_shape: Does the {A} have the same shape as the {B}?
34 comparison equal_size: Is the {A} the same size as the {B}?
35 comparison equal_material: Is the {A} made of the same material as the {B}?
36 comparison equal_color: Does the {A} {REL} have the same color as the {B}?
37 comparison equal_material: Is the {A} {REL} made of the same material as the {B}?
38 compare_integer equal_integer: Are there the same number of {D1s} and {D2s}?
39 compare_integer less_than: Are there fewer {D1s} than {D2s}?
40 compare_integer greater_than: Are there more {D1s} than {D2s}?
41 compare_integer equal_integer: Are there the same number of {D1s} {REL} and {D2s}?
42 compare_integer less_than: Are there fewer {D1s} {REL} than {D2s}?
43 compare_integer greater_than: Are there more {D1s} {REL} than {D2s}?
44 same_relate count: How many other {Ds} have the same color as the {A}?
45 same_relate count: How many other {Ds} have the same shape as the {A}?
46 same_relate count: How many other {Ds} have the same size as the {A}?
47 same_relate count: How many other {Ds} are made of the same material as the {A}?
48 same_relate exist: Is there another {D} that has the same color as the {A}?
49 same_relate exist: Is there another {D} that has the same shape as the {A}?
50 same_relate exist: Is there another {D} that has the same size as the {A}?
51 same_relate exist: Is there another {D} that is made of the same material as the {A}?
52 same_relate query_shape: What shape is the other {U} that has the same color as the {A}?
53 same_relate query_color: What color is the other {U} that has the same shape as the {A}?
54 same_relate query_material: What material is the other {U} that has the same size as the {A}?
55 same_relate query_size: What size is the other {U} that is made of the same material as the {A}?
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from filmclevr import clevr
from filmclevr.executor import IllPosedError, execute

__all__ = [
    "FAMILIES",
    "Family",
    "QuestionSampler",
    "family_table",
    "majority_baseline",
    "sample_questions",
]

_ORDER: tuple[str, ...] = ("size", "color", "material", "shape")  # CLEVR's <Z> <C> <M> <S>
_RELATION_WORDS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of", "on the left side of"),
    "right": ("right of", "to the right of", "on the right side of"),
    "front": ("in front of",),
    "behind": ("behind",),
}
# Number of filters of a set description: 1-2 most often, so sets are neither all nor mostly empty.
_FILTER_WEIGHTS: tuple[float, ...] = (1.0, 3.0, 3.0, 1.5, 0.5)
_COPY_OBJECT_P = 0.6  # a set description copies a present object's attributes (else random)
_STOP_WHEN_UNIQUE_P = 0.75  # a unique reference sometimes names one more attribute than needed
_ANSWER_SPACE: dict[str, tuple[str, ...]] = {
    **{f"query_{a}": values for a, values in clevr.ATTRIBUTES.items()},
    "count": tuple(str(n) for n in range(11)),
}


# --- Scenes, descriptions and text -------------------------------------------------------------
class _View:
    """The parts of a scene the templates read."""

    __slots__ = ("objects", "relationships", "all")

    def __init__(self, scene: dict[str, Any]) -> None:
        self.objects: list[dict[str, Any]] = scene["objects"]
        self.relationships: dict[str, list[list[int]]] = scene["relationships"]
        self.all: tuple[int, ...] = tuple(range(len(self.objects)))


Description = dict[str, str]  # attribute -> value, the filters of one noun phrase


def _unique_desc(
    view: _View, obj: int, pool: Sequence[int], exclude: Iterable[str], rng: random.Random
) -> Description | None:
    """Attributes of `obj` that single it out within `pool`, or None if none do."""
    attrs = [a for a in _ORDER if a not in exclude]
    rng.shuffle(attrs)
    me = view.objects[obj]
    candidates = list(pool)
    desc: Description = {}
    for attr in attrs:
        if len(candidates) == 1 and rng.random() < _STOP_WHEN_UNIQUE_P:
            break
        value = me[attr]
        candidates = [i for i in candidates if view.objects[i][attr] == value]
        desc[attr] = value
    return desc if len(candidates) == 1 else None


def _set_desc(
    view: _View,
    pool: Sequence[int],
    exclude: Iterable[str],
    rng: random.Random,
    min_filters: int,
    copy_p: float = _COPY_OBJECT_P,
) -> Description:
    """A random description of some objects: copied from an object of `pool` (probability
    `copy_p`) or random values."""
    attrs = [a for a in _ORDER if a not in exclude]
    sizes = range(min_filters, len(attrs) + 1)
    k = rng.choices(sizes, weights=[_FILTER_WEIGHTS[s] for s in sizes])[0]
    chosen = rng.sample(attrs, k)
    if pool and rng.random() < copy_p:
        source = view.objects[rng.choice(pool)]
        return {a: source[a] for a in chosen}
    return {a: rng.choice(clevr.ATTRIBUTES[a]) for a in chosen}


def _nested(d1: Description, d2: Description) -> bool:
    """Whether one description's filters contain the other's (then one set contains the other)."""
    s1, s2 = set(d1.items()), set(d2.items())
    return s1 <= s2 or s2 <= s1


def _word(value: str, rng: random.Random) -> str:
    return rng.choice(clevr.SYNONYMS.get(value, (value,)))


def _phrases(name: str, desc: Description, rng: random.Random) -> dict[str, str]:
    """Text slots of one description: `name` (singular), `{name}s` (plural), `{name}_a`."""
    adjectives = [_word(desc[a], rng) for a in _ORDER[:3] if a in desc]
    noun = _word(desc.get("shape", "thing"), rng)
    singular = " ".join([*adjectives, noun])
    article = "an" if singular[0] in "aeiou" else "a"
    return {name: singular, f"{name}s": f"{singular}s", f"{name}_a": f"{article} {singular}"}


def _relation(relation: str, rng: random.Random) -> str:
    return rng.choice(_RELATION_WORDS[relation])


def _that_is(rng: random.Random) -> str:
    return rng.choice(("", "that is "))


class _Program:
    """Appends release-dialect nodes; every method returns the index of its last node."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []

    def add(self, function: str, inputs: Sequence[int] = (), values: Sequence[str] = ()) -> int:
        self.nodes.append(
            {"function": function, "inputs": list(inputs), "value_inputs": list(values)}
        )
        return len(self.nodes) - 1

    def filters(self, source: int, desc: Description) -> int:
        for attr in _ORDER:
            if attr in desc:
                source = self.add(f"filter_{attr}", [source], [desc[attr]])
        return source

    def unique(self, source: int, desc: Description) -> int:
        return self.add("unique", [self.filters(source, desc)])


Instance = tuple[list[dict[str, Any]], dict[str, str]]  # program, text slots
Build = Callable[[_View, random.Random], Instance | None]


def _anchor(view: _View, p: _Program, rng: random.Random, exclude: Iterable[str] = ()):
    """A unique reference to a random object: (object, its `unique` node, its noun phrase)."""
    obj = rng.choice(view.all)
    desc = _unique_desc(view, obj, view.all, exclude, rng)
    if desc is None:
        return None
    node = p.unique(p.add("scene"), desc)
    return obj, node, _phrases("X", desc, rng)["X"]


def _relate_chain(view: _View, p: _Program, rng: random.Random, hops: int):
    """`hops` relations from an anchor: (final relate node, its objects, "left of the ..." text,
    anchor object).

    Every intermediate object is referred to uniquely within the previous relation's output,
    like CLEVR's "the sphere [that is] behind the red cube".
    """
    anchor = _anchor(view, p, rng)
    if anchor is None:
        return None
    first, node, phrase = anchor
    current, ref = first, f"the {phrase}"
    for step in range(hops):
        relation = rng.choice(clevr.RELATIONS)
        pool = view.relationships[relation][current]
        node = p.add("relate", [node], [relation])
        text = f"{_relation(relation, rng)} {ref}"
        if step == hops - 1:
            return node, tuple(pool), text, first
        if not pool:
            return None
        current = rng.choice(pool)
        desc = _unique_desc(view, current, pool, (), rng)
        if desc is None:
            return None
        node = p.unique(node, desc)
        ref = f"the {_phrases('X', desc, rng)['X']} {_that_is(rng)}{text}"
    raise AssertionError("unreachable")


def _finish_on_set(
    view: _View,
    p: _Program,
    rng: random.Random,
    node: int,
    pool: Sequence[int],
    terminal: str,
    exclude: Sequence[str] = (),
    min_filters: int = 0,
) -> dict[str, str] | None:
    """Close a program on a set of objects: count/exist of a filtered subset or query of one."""
    if terminal in ("count", "exist"):
        desc = _set_desc(view, pool, exclude, rng, min_filters)
        p.add(terminal, [p.filters(node, desc)])
        return _phrases("D", desc, rng)
    attr = terminal.removeprefix("query_")
    if not pool:
        return None
    desc = _unique_desc(view, rng.choice(pool), pool, (*exclude, attr), rng)
    if desc is None:
        return None
    p.add(terminal, [p.unique(node, desc)])
    return _phrases("U", desc, rng)


# --- Template builders, one per group shape ------------------------------------------------------
def _hop(hops: int, terminal: str) -> Build:
    def build(view: _View, rng: random.Random) -> Instance | None:
        p = _Program()
        slots: dict[str, str] = {}
        if hops:
            chain = _relate_chain(view, p, rng, hops)
            if chain is None:
                return None
            node, pool, slots["REL"], _ = chain
        else:
            node, pool = p.add("scene"), view.all
        # A zero-hop set needs a filter: "How many things are there?" would be trivial.
        more = _finish_on_set(view, p, rng, node, pool, terminal, min_filters=0 if hops else 1)
        return None if more is None else (p.nodes, slots | more)

    return build


def _two_relations(view: _View, p: _Program, rng: random.Random, combine: str):
    """Objects related to two distinct anchors, combined by `union` or `intersect`."""
    first = _relate_chain(view, p, rng, 1)
    second = _relate_chain(view, p, rng, 1)
    if first is None or second is None or first[3] == second[3]:
        return None
    (n1, pool1, rel1, _), (n2, pool2, rel2, _) = first, second
    node = p.add(combine, [n1, n2])
    pool = sorted(set(pool1) & set(pool2) if combine == "intersect" else set(pool1) | set(pool2))
    return node, pool, {"REL1": rel1, "REL2": rel2}


def _relations(combine: str, terminal: str) -> Build:
    """Objects related to two others, combined by `combine` (intersect: and; union: or)."""

    def build(view: _View, rng: random.Random) -> Instance | None:
        p = _Program()
        both = _two_relations(view, p, rng, combine)
        if both is None:
            return None
        node, pool, slots = both
        more = _finish_on_set(view, p, rng, node, pool, terminal)
        return None if more is None else (p.nodes, slots | more)

    return build


def _or_filters(terminal: str) -> Build:
    # A union of two sets is rarely empty; narrower, random descriptions make "no" reachable.
    min_filters, copy_p = (2, 0.3) if terminal == "exist" else (1, _COPY_OBJECT_P)

    def build(view: _View, rng: random.Random) -> Instance | None:
        d1 = _set_desc(view, view.all, (), rng, min_filters, copy_p)
        d2 = _set_desc(view, view.all, (), rng, min_filters, copy_p)
        if _nested(d1, d2):
            return None
        p = _Program()
        a = p.filters(p.add("scene"), d1)
        b = p.filters(p.add("scene"), d2)
        p.add(terminal, [p.add("union", [a, b])])
        return p.nodes, _phrases("D1", d1, rng) | _phrases("D2", d2, rng)

    return build


def _compare_attribute(attr: str, related: bool) -> Build:
    def build(view: _View, rng: random.Random) -> Instance | None:
        p = _Program()
        slots: dict[str, str] = {}
        if related:
            chain = _relate_chain(view, p, rng, 1)
            if chain is None or not chain[1]:
                return None
            node, pool, slots["REL"], _ = chain
        else:
            node, pool = p.add("scene"), view.all
        a = rng.choice(pool)
        # Half the time the second object shares the attribute, else "yes" would be rare (the
        # attribute is named for neither object, so the text does not reveal this choice).
        alike = [i for i in view.all if i != a and view.objects[i][attr] == view.objects[a][attr]]
        b = rng.choice(alike) if alike and rng.random() < 0.5 else rng.choice(view.all)
        if a == b:  # "Is the cube the same color as the cube?" is no question
            return None
        da = _unique_desc(view, a, pool, (attr,), rng)
        db = _unique_desc(view, b, view.all, (attr,), rng)
        if da is None or db is None:
            return None
        qa = p.add(f"query_{attr}", [p.unique(node, da)])
        qb = p.add(f"query_{attr}", [p.unique(p.add("scene"), db)])
        p.add(f"equal_{attr}", [qa, qb])
        return p.nodes, slots | _phrases("A", da, rng) | _phrases("B", db, rng)

    return build


def _compare_integer(terminal: str, related: bool) -> Build:
    def build(view: _View, rng: random.Random) -> Instance | None:
        p = _Program()
        slots: dict[str, str] = {}
        if related:
            chain = _relate_chain(view, p, rng, 1)
            if chain is None:
                return None
            node, pool, rel, _ = chain
            d1 = _set_desc(view, pool, (), rng, 0)
            slots["REL"] = rng.choice(("", "that are ")) + rel
        else:
            node = p.add("scene")
            d1 = _set_desc(view, view.all, (), rng, 1)
        d2 = _set_desc(view, view.all, (), rng, 1)
        if not related and _nested(d1, d2):
            return None
        c1 = p.add("count", [p.filters(node, d1)])
        c2 = p.add("count", [p.filters(p.add("scene"), d2)])
        p.add(terminal, [c1, c2])
        return p.nodes, slots | _phrases("D1", d1, rng) | _phrases("D2", d2, rng)

    return build


def _same(attr: str, terminal: str) -> Build:
    def build(view: _View, rng: random.Random) -> Instance | None:
        p = _Program()
        # The shared attribute is named neither for the anchor nor for the others.
        anchor = _anchor(view, p, rng, exclude=(attr,))
        if anchor is None:
            return None
        obj, node, ref = anchor
        node = p.add(f"same_{attr}", [node])
        pool = [
            i for i in view.all if i != obj and view.objects[i][attr] == view.objects[obj][attr]
        ]
        more = _finish_on_set(view, p, rng, node, pool, terminal, exclude=(attr,))
        return None if more is None else (p.nodes, {"A": ref} | more)

    return build


# --- The family table -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """One question family: its group, terminal function, text templates and builder."""

    index: int
    group: str
    terminal: str
    texts: tuple[str, ...]
    build: Build = field(repr=False, compare=False)


_SAME_SINGULAR = {
    "color": ("has the same color as", "is the same color as"),
    "shape": ("has the same shape as", "is the same shape as"),
    "size": ("has the same size as", "is the same size as"),
    "material": ("is made of the same material as", "has the same material as"),
}
_SAME_PLURAL = {
    "color": ("have the same color as", "are the same color as"),
    "shape": ("have the same shape as", "are the same shape as"),
    "size": ("have the same size as", "are the same size as"),
    "material": ("are made of the same material as", "have the same material as"),
}
_QUERY_EXTRA = {
    "size": ("How big is the {U}?",),
    "material": ("What is the {U} made of?",),
}
_EQUAL_TEXTS = {
    "color": (
        "Does the {A} have the same color as the {B}?",
        "Is the color of the {A} the same as the {B}?",
        "Do the {A} and the {B} have the same color?",
    ),
    "shape": (
        "Does the {A} have the same shape as the {B}?",
        "Is the {A} the same shape as the {B}?",
        "Do the {A} and the {B} have the same shape?",
    ),
    "size": (
        "Is the {A} the same size as the {B}?",
        "Does the {A} have the same size as the {B}?",
        "Are the {A} and the {B} the same size?",
    ),
    "material": (
        "Is the {A} made of the same material as the {B}?",
        "Are the {A} and the {B} made of the same material?",
        "Does the {A} have the same material as the {B}?",
    ),
}
_INTEGER_TEXTS = {
    "equal_integer": (
        "Are there the same number of {D1s} and {D2s}?",
        "Is the number of {D1s} the same as the number of {D2s}?",
        "Are there an equal number of {D1s} and {D2s}?",
    ),
    "less_than": (
        "Are there fewer {D1s} than {D2s}?",
        "Is the number of {D1s} less than the number of {D2s}?",
    ),
    "greater_than": (
        "Are there more {D1s} than {D2s}?",
        "Is the number of {D1s} greater than the number of {D2s}?",
    ),
}


def _hop_texts(hops: int, terminal: str) -> tuple[str, ...]:
    rel = " {REL}" if hops else ""
    if terminal == "count":
        end = " are {REL}?" if hops else " are there?"
        return (f"How many {{Ds}}{end}", f"What number of {{Ds}}{end}")
    if terminal == "exist":
        return (f"Are there any {{Ds}}{rel}?", f"Is there {{D_a}}{rel}?")
    attr = terminal.removeprefix("query_")
    if hops:
        return (
            f"What {attr} is the {{U}} {{REL}}?",
            f"What {attr} is the {{U}} that is {{REL}}?",
            f"There is {{U_a}} {{REL}}; what {attr} is it?",
        )
    return (
        f"What {attr} is the {{U}}?",
        f"There is {{U_a}}; what {attr} is it?",
        f"The {{U}} is what {attr}?",
        *_QUERY_EXTRA.get(attr, ()),
    )


def _and_texts(terminal: str) -> tuple[str, ...]:
    if terminal == "count":
        return (
            "How many {Ds} are both {REL1} and {REL2}?",
            "What number of {Ds} are {REL1} and {REL2}?",
        )
    if terminal == "exist":
        return (
            "Are there any {Ds} that are both {REL1} and {REL2}?",
            "Is there {D_a} that is {REL1} and {REL2}?",
        )
    attr = terminal.removeprefix("query_")
    return (
        f"What {attr} is the {{U}} that is {{REL1}} and {{REL2}}?",
        f"There is {{U_a}} that is both {{REL1}} and {{REL2}}; what {attr} is it?",
    )


def _same_texts(attr: str, terminal: str) -> tuple[str, ...]:
    sg, pl = _SAME_SINGULAR[attr], _SAME_PLURAL[attr]
    if terminal == "count":
        return (
            f"How many other {{Ds}} {pl[0]} the {{A}}?",
            f"What number of other {{Ds}} {pl[1]} the {{A}}?",
        )
    if terminal == "exist":
        return (
            f"Is there another {{D}} that {sg[0]} the {{A}}?",
            f"Are there any other {{Ds}} that {pl[1]} the {{A}}?",
        )
    q = terminal.removeprefix("query_")
    return (
        f"What {q} is the other {{U}} that {sg[0]} the {{A}}?",
        f"The other {{U}} that {sg[1]} the {{A}} is what {q}?",
    )


def _with_rel_a(texts: tuple[str, ...]) -> tuple[str, ...]:
    """Comparison texts whose first object is related to an anchor: "the {A} {REL}"."""
    return tuple(t.replace("the {A}", "the {A} {REL}", 1) for t in texts)


def _with_rel_d1(texts: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(t.replace("{D1s}", "{D1s} {REL}", 1) for t in texts)


def _families() -> tuple[Family, ...]:
    specs: list[tuple[str, str, tuple[str, ...], Build]] = []
    for hops, group in enumerate(("zero_hop", "one_hop", "two_hop", "three_hop")):
        for terminal in (
            "count",
            "exist",
            "query_color",
            "query_shape",
            "query_size",
            "query_material",
        ):
            specs.append((group, terminal, _hop_texts(hops, terminal), _hop(hops, terminal)))
    for terminal in ("count", "exist", "query_color", "query_shape", "query_material"):
        specs.append(
            ("single_and", terminal, _and_texts(terminal), _relations("intersect", terminal))
        )
    specs += [
        (
            "single_or",
            "count",
            ("How many things are either {D1s} or {D2s}?", "How many {D1s} or {D2s} are there?"),
            _or_filters("count"),
        ),
        (
            "single_or",
            "exist",
            ("Are there any {D1s} or {D2s}?", "Is there either {D1_a} or {D2_a}?"),
            _or_filters("exist"),
        ),
        (
            "single_or",
            "count",
            (
                "How many {Ds} are {REL1} or {REL2}?",
                "What number of {Ds} are either {REL1} or {REL2}?",
            ),
            _relations("union", "count"),
        ),
    ]
    for attr in ("color", "shape", "size", "material"):
        specs.append(
            ("comparison", f"equal_{attr}", _EQUAL_TEXTS[attr], _compare_attribute(attr, False))
        )
    for attr in ("color", "material"):
        texts = _with_rel_a(_EQUAL_TEXTS[attr])
        specs.append(("comparison", f"equal_{attr}", texts, _compare_attribute(attr, True)))
    for related in (False, True):
        for terminal in ("equal_integer", "less_than", "greater_than"):
            texts = _INTEGER_TEXTS[terminal]
            specs.append(
                (
                    "compare_integer",
                    terminal,
                    _with_rel_d1(texts) if related else texts,
                    _compare_integer(terminal, related),
                )
            )
    for terminal in ("count", "exist"):
        for attr in ("color", "shape", "size", "material"):
            specs.append(
                ("same_relate", terminal, _same_texts(attr, terminal), _same(attr, terminal))
            )
    for attr, query in (
        ("color", "shape"),
        ("shape", "color"),
        ("size", "material"),
        ("material", "size"),
    ):
        terminal = f"query_{query}"
        specs.append(("same_relate", terminal, _same_texts(attr, terminal), _same(attr, terminal)))
    return tuple(Family(i, *spec) for i, spec in enumerate(specs))


FAMILIES: tuple[Family, ...] = _families()


def family_table() -> str:
    """The family table, one line per family: index, group, terminal function: first text."""
    return "\n".join(f"{f.index:2d} {f.group} {f.terminal}: {f.texts[0]}" for f in FAMILIES)


# --- Balanced sampling ----------------------------------------------------------------------------
QUESTION_MIXES: tuple[str, ...] = ("uniform", "clevr")  # or a mapping: `question_type_weights`
QuestionMix = str | Mapping[str, float]


def question_type_weights(question_mix: QuestionMix) -> dict[str, float] | None:
    """The share of each question type that `question_mix` asks for, or None for "uniform".

    "clevr" gives CLEVR v1.0's shares (`clevr.question_type_shares`); a mapping from question
    type to a weight >= 0 (types left out get 0) gives those weights normalised to sum 1, e.g.
    {"compare_attribute": 1} for a split of Compare Attribute questions only.
    """
    if isinstance(question_mix, str):
        if question_mix not in QUESTION_MIXES:
            raise ValueError(
                f"question_mix must be one of {QUESTION_MIXES} or a mapping from question type "
                f"to weight, got {question_mix!r}"
            )
        return clevr.question_type_shares() if question_mix == "clevr" else None
    if not isinstance(question_mix, Mapping):
        raise ValueError(f"question_mix must be a string or a mapping, got {question_mix!r}")
    unknown = sorted(set(question_mix) - set(clevr.QUESTION_TYPES))
    if unknown:
        raise ValueError(
            f"question_mix: unknown question type(s) {unknown}; "
            f"the types are {list(clevr.QUESTION_TYPES)}"
        )
    weights = {t: question_mix.get(t, 0) for t in clevr.QUESTION_TYPES}
    numbers = all(isinstance(w, (int, float)) and not isinstance(w, bool) for w in weights.values())
    if not numbers or min(weights.values()) < 0 or not sum(weights.values()) > 0:
        raise ValueError(
            "question_mix: weights must be numbers >= 0, at least one > 0, "
            f"got {dict(question_mix)}"
        )
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items() if w > 0}


def release_question(
    scene: dict[str, Any],
    text: str,
    answer: str,
    family: int,
    question_index: int,
    program: list[dict[str, Any]],
) -> dict[str, Any]:
    """A question about `scene` in the release's format (SPEC §1), keys in the release's order."""
    split = scene.get("split", "")
    index = int(scene["image_index"])
    return {
        "image_index": index,
        "image_filename": scene.get("image_filename") or clevr.image_filename(split, index),
        "split": split,
        "question": text,
        "answer": answer,
        "question_family_index": family,
        "question_index": question_index,
        "program": program,
    }


class QuestionSampler:
    """Samples well-posed questions for scenes, balancing answers per family over a split.

    Keep one sampler per split: its answer counts span every scene it has seen, and
    `question_index` numbers its questions 0, 1, 2, ... in order.

    Args:
        rng: the only source of randomness (seed it for reproducible questions).
        question_mix: "uniform" draws each question's family uniformly (templates that fail
            more often, such as Compare Attribute's two unique references, end up rarer);
            "clevr" first draws the question type with CLEVR v1.0's shares
            (`clevr.question_type_shares`), then a family of that type, and keeps the type
            until a question of it is accepted, so the split has CLEVR's mix of types; a
            mapping from type to weight does the same with those shares
            (`question_type_weights`).
        max_ratio, slack: an answer is refused while its count in the family would exceed
            `max_ratio` times the count of the family's next most frequent answer plus `slack`
            (CLEVR's generator uses 1.1 times the runner-up).
        max_attempts_per_question: template instantiations tried per requested question before
            a scene is given fewer questions (with "clevr", before another type is drawn).
    """

    def __init__(
        self,
        rng: random.Random,
        *,
        question_mix: QuestionMix = "uniform",
        max_ratio: float = 1.1,
        slack: int = 1,
        max_attempts_per_question: int = 60,
    ) -> None:
        self.type_shares = question_type_weights(question_mix)
        self.rng = rng
        self.max_ratio = max_ratio
        self.slack = slack
        self.max_attempts_per_question = max_attempts_per_question
        self.answer_counts: dict[int, dict[str, int]] = {
            f.index: dict.fromkeys(_ANSWER_SPACE.get(f.terminal, ("yes", "no")), 0)
            for f in FAMILIES
        }
        self.next_question_index = 0
        if self.type_shares is not None:  # drawn once per question: the lists are made once
            self._types = list(self.type_shares)
            self._type_weights = list(self.type_shares.values())
        self.families_of_type = {
            t: [f for f in FAMILIES if clevr.TYPE_OF_FUNCTION[f.terminal] == t]
            for t in clevr.QUESTION_TYPES
        }

    def _accepts(self, family: int, answer: str) -> bool:
        counts = self.answer_counts[family]
        runner_up = max(c for a, c in counts.items() if a != answer)
        return counts.get(answer, 0) + 1 <= self.max_ratio * runner_up + self.slack

    def _draw_type(self) -> str:
        return self.rng.choices(self._types, weights=self._type_weights)[0]

    def _attempt(
        self, family: Family, view: _View, scene: dict[str, Any], texts: set[str]
    ) -> tuple[str, str, list[dict[str, Any]]] | None:
        """One instantiation of `family`: (text, answer, program), or None if it is refused."""
        instance = family.build(view, self.rng)
        if instance is None:
            return None
        program, slots = instance
        try:
            answer = execute(program, scene)
        except IllPosedError:  # the builders aim for unique references; never trust them
            return None
        if not self._accepts(family.index, answer):
            return None
        text = self.rng.choice(family.texts).format(**slots)
        if text in texts:
            return None
        return text, answer, program

    def sample(self, scene: dict[str, Any], n: int) -> list[dict[str, Any]]:
        """Up to `n` questions about `scene` (fewer only if the templates keep failing).

        Returns release-format questions (`image_index`, `image_filename`, `split`, `question`,
        `answer`, `question_family_index`, `question_index`, `program`), texts distinct.
        """
        view = _View(scene)
        questions: list[dict[str, Any]] = []
        texts: set[str] = set()
        wanted: str | None = None  # with a CLEVR mix: the type of the question being sought
        misses = 0
        for _ in range(n * self.max_attempts_per_question):
            if len(questions) == n:
                break
            if self.type_shares is None:
                family = self.rng.choice(FAMILIES)
            else:
                wanted = wanted or self._draw_type()
                family = self.rng.choice(self.families_of_type[wanted])
            attempt = self._attempt(family, view, scene, texts)
            if attempt is None:
                misses += 1
                if misses == self.max_attempts_per_question:  # this scene cannot ask that type
                    wanted, misses = None, 0
                continue
            wanted, misses = None, 0
            text, answer, program = attempt
            texts.add(text)
            counts = self.answer_counts[family.index]
            counts[answer] = counts.get(answer, 0) + 1
            questions.append(
                release_question(
                    scene, text, answer, family.index, self.next_question_index, program
                )
            )
            self.next_question_index += 1
        return questions


def sample_questions(
    scenes: Iterable[dict[str, Any]],
    rng: random.Random,
    questions_per_image: int,
    question_mix: QuestionMix = "uniform",
) -> list[dict[str, Any]]:
    """Questions for every scene of one split, balanced over the split (one sampler; the mix
    of question types as `QuestionSampler`'s `question_mix`)."""
    sampler = QuestionSampler(rng, question_mix=question_mix)
    questions: list[dict[str, Any]] = []
    for scene in scenes:
        questions += sampler.sample(scene, questions_per_image)
    return questions


def baseline_keys(questions: Iterable[dict[str, Any]]) -> list[tuple[int, str | None, Any]]:
    """(family, terminal function, answer) of each question: all the Q-type prior needs, so a
    split's questions need not be kept whole to score it."""
    keys = []
    for q in questions:
        program = q.get("program")
        keys.append(
            (q["question_family_index"], program[-1]["function"] if program else None, q["answer"])
        )
    return keys


def prior_accuracy(
    train: Iterable[tuple[int, str | None, Any]], evaluation: Iterable[tuple[int, str | None, Any]]
) -> float:
    """Accuracy on `evaluation` (`baseline_keys`) of the Q-type prior built on `train`."""
    predict = clevr.majority_answer_by_family(train)
    total = correct = 0
    for family, function, answer in evaluation:
        total += 1
        correct += predict(family, function) == answer
    if not total:
        raise ValueError("majority_baseline: no evaluation questions")
    return correct / total


def majority_baseline(
    train: Iterable[dict[str, Any]], evaluation: Iterable[dict[str, Any]]
) -> float:
    """Accuracy on `evaluation` of CLEVR's Q-type prior (`clevr.majority_answer_by_family`)
    built on `train`: a balance check, low when no family's answer is a safe guess."""
    return prior_accuracy(baseline_keys(train), baseline_keys(evaluation))
