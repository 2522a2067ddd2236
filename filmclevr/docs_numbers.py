"""Numbers in the README, docs/ and studies/ pages, generated from the committed files they
come from, so that no number is typed twice and none goes stale.

A page marks each generated number with HTML comments (invisible once rendered); the text
between an opening comment and its closing one is what this module writes there. Paths are
relative to the repository root. Three kinds:

- A value from a JSON (or YAML) file, at a dotted key (list indices allowed, negative too):
  `<!-- value results/reference/demo/metrics.json overall -->51.36<!-- /value -->`.
  A key that itself holds a dot goes in square brackets, which need no dot before them, and
  in quotes as any argument with spaces: `["the model, fine-tuned, from step2.pt"].overall`,
  `sides[mini.v1].overall` (a key holding `]` cannot be named). A YAML file that is a profile
  (it has `profile:`) is read resolved on its bases (`filmclevr.params.load_params`), so a
  value it inherits is found: `<!-- value config/mini-large.yaml model.stem_channels -->`.
  Options after the key: `x100` (multiply, a fraction as a percentage) and a Python format
  spec (`.1f`, `,`), in that order. Without a spec an integer is written as in the file, a
  float as in the file rounded to 2 decimals (68.3 stays 68.3), a string as it is, a list or
  object as compact JSON. `duration` instead writes seconds as "6 min 35 s" ("1 h 12 min").
  A CSV (or tab-separated .tsv) cell:
  `<!-- value FILE.csv row=NAME col=COLUMN [x100] [SPEC] -->`, the row whose first column is
  NAME (`row=COLUMN=NAME` matches another column; no `row=` in a file of one row, as
  Snakemake's benchmark files), COLUMN matched without regard to case; a name with spaces in
  quotes (`row="CNN+GRU+FiLM (raw pixels)"`). A FILE with a wildcard sums the value over the
  files it matches (`results/reference/demo/benchmarks/*.tsv col=s duration`: all stages).
- A whole file, verbatim: `<!-- include results/reference/demo/table.md -->` ...
  `<!-- /include -->`.
- An accuracy table, one row per result with its label (a label with spaces in quotes):
  `<!-- table accuracy demo=results/reference/demo
  "CLEVR-sized run"=results/reference/mini-clevr-size -->` ... `<!-- /table -->`.
  A result is a folder (its metrics.json), a JSON file with an optional `#dotted.key` (an
  object holding `overall` and `columns` as metrics.json does, e.g.
  `sim_to_real.json#sides.genuine.model`) or a CSV file and `#ROW` (the row whose first
  column is ROW, its columns named as metrics.json's keys, e.g. cogent's breakdown.csv).
  Columns: questions, Overall, the paper's five question types, and the Q-type prior's
  overall where the result holds one (`prior.overall`, in the object or beside it).

Markers inside fenced code blocks and inline code spans are left alone (they are examples).
`python -m filmclevr.docs_numbers` fills every page in place; `--check` writes nothing and
exits 1 naming each stale place.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from filmclevr import clevr
from filmclevr.fileio import relative_name, write_text_atomic
from filmclevr.params import ParamsError, load_params

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("value", "include", "table")
# The pages whose numbers are generated, as globs under the repository root.
PAGES = ("README.md", "docs/**/*.md", "studies/**/*.md")

_MARKER = re.compile(r"<!--[ \t]*(/?)(value|include|table)\b(.*?)-->", re.S)
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_COLUMNS = ("overall", *clevr.QUESTION_TYPES)


class DocsNumbersError(ValueError):
    """A marker that cannot be filled: the message names the page, its line and the problem."""


@dataclass(frozen=True)
class Marker:
    """One opening comment and its closing one; `start`/`end` delimit the text between them."""

    kind: str
    args: str
    line: int
    start: int
    end: int


def _mask_code(text: str) -> str:
    """`text` with fenced code blocks and inline code spans blanked (newlines kept), so offsets
    still match and the markers shown there as examples are not filled."""
    out: list[str] = []
    fence: str | None = None
    for line in text.splitlines(keepends=True):
        opening = _FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1)[0] == fence[0] and len(opening.group(1)) >= len(fence):
                fence = None
            out.append(re.sub(r"[^\n]", " ", line))
        elif opening:
            fence = opening.group(1)
            out.append(re.sub(r"[^\n]", " ", line))
        else:
            out.append(_CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line))
    return "".join(out)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def find_markers(text: str, page: str) -> list[Marker]:
    """The markers of a page, in order.

    Raises:
        DocsNumbersError: an opening without its closing (another marker or the end of the
            page comes first), or a closing without an opening.
    """
    markers: list[Marker] = []
    tokens = list(_MARKER.finditer(_mask_code(text)))
    i = 0
    while i < len(tokens):
        opening = tokens[i]
        line = _line_of(text, opening.start())
        closing_slash, kind, args = opening.groups()
        if closing_slash:
            raise DocsNumbersError(f"{page}:{line}: <!-- /{kind} --> closes no marker")
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if following is None or following.group(1) != "/" or following.group(2) != kind:
            where = (
                "the end of the page"
                if following is None
                else f"line {_line_of(text, following.start())}'s {following.group(0)!r}"
            )
            raise DocsNumbersError(
                f"{page}:{line}: <!-- {kind}{args.rstrip()} --> is not closed by"
                f" <!-- /{kind} --> before {where}"
            )
        markers.append(Marker(kind, args.strip(), line, opening.end(), following.start()))
        i += 2
    return markers


# --- values ---------------------------------------------------------------------------------


def _read_json(path: Path, where: str) -> Any:
    """A JSON file, or a YAML one (`.yaml`, `.yml`); a profile (a mapping with `profile:`)
    resolved on its bases, as every stage reads it."""
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        if path.suffix in (".yaml", ".yml") and isinstance(data, dict) and "profile" in data:
            return load_params(path)
        return data
    except FileNotFoundError:
        raise DocsNumbersError(f"{where}: {path.name}: file not found ({path})") from None
    except ParamsError as e:
        raise DocsNumbersError(f"{where}: {e}") from None
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as e:
        raise DocsNumbersError(f"{where}: {path}: not readable ({e})") from None


def _read_csv(path: Path, where: str) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    except FileNotFoundError:
        raise DocsNumbersError(f"{where}: {path.name}: file not found ({path})") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DocsNumbersError(f"{where}: {path}: not readable CSV ({e})") from None
    if not rows:
        raise DocsNumbersError(f"{where}: {path}: no rows")
    return rows


_PLAIN_PART = re.compile(r"[^.\[\]]+")


def key_parts(key: str, where: str) -> list[str]:
    """The parts of a dotted key: `a.b` is [a, b]; a part in square brackets is taken as it is,
    dots and all: `a[b.c].d` (or `a.[b.c].d`) is [a, b.c, d].

    Raises:
        DocsNumbersError: an empty part, a bracket not closed, or text after a closing bracket
            that is neither a dot nor another bracket.
    """
    parts: list[str] = []
    i = 0
    while True:
        if key.startswith("[", i):
            end = key.find("]", i)
            if end < 0:
                raise DocsNumbersError(f"{where}: key {key!r}: the bracket at {i} is not closed")
            parts.append(key[i + 1 : end])
            i = end + 1
        elif plain := _PLAIN_PART.match(key, i):
            parts.append(plain.group())
            i = plain.end()
        else:
            raise DocsNumbersError(f"{where}: key {key!r}: a part is empty at {i}")
        if i == len(key):
            return parts
        if key[i] == ".":
            i += 1
        elif key[i] != "[":
            raise DocsNumbersError(f"{where}: key {key!r}: expected '.' or '[' at {i}")


def _key_text(parts: Sequence[str]) -> str:
    """Parts written back as a key: a part that holds a dot or a bracket in brackets."""
    text = ""
    for part in parts:
        if _PLAIN_PART.fullmatch(part):
            text += f".{part}" if text else part
        else:
            text += f"[{part}]"
    return text


def json_key(data: Any, key: str, where: str, source: str) -> Any:
    """The value at a dotted `key` of `data` (list indices allowed, negative too; a part in
    square brackets may hold dots: `key_parts`)."""
    return _at(data, key_parts(key, where), where, source)


def _at(data: Any, parts: Sequence[str], where: str, source: str) -> Any:
    value = data
    for i, part in enumerate(parts):
        at = _key_text(parts[: i + 1])
        if isinstance(value, dict):
            if part not in value:
                keys = ", ".join(sorted(map(str, value))[:20])
                raise DocsNumbersError(f"{where}: {source} has no key {at!r} (there: {keys})")
            value = value[part]
        elif isinstance(value, list):
            try:
                value = value[int(part)]
            except ValueError:
                raise DocsNumbersError(
                    f"{where}: {source}: {at!r} indexes a list, {part!r} is not an integer"
                ) from None
            except IndexError:
                raise DocsNumbersError(
                    f"{where}: {source}: {at!r} is out of range (the list has {len(value)} items)"
                ) from None
        else:
            raise DocsNumbersError(
                f"{where}: {source}: {at!r} goes inside a {type(value).__name__}"
            )
    return value


def _number(text: str) -> Any:
    """A CSV cell as the number it writes, or the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _column(header: Iterable[str], name: str, where: str, source: str) -> str:
    header = list(header)
    for column in header:
        if column.lower() == name.lower():
            return column
    raise DocsNumbersError(f"{where}: {source} has no column {name!r} (there: {', '.join(header)})")


def csv_row(rows: list[dict[str, str]], selector: str, where: str, source: str) -> dict[str, str]:
    """The one row `selector` names: NAME (first column) or COLUMN=NAME."""
    header = list(rows[0])
    column, name = header[0], selector
    if "=" in selector:
        maybe_column, rest = selector.split("=", 1)
        if any(maybe_column.lower() == h.lower() for h in header):
            column, name = _column(header, maybe_column, where, source), rest
    found = [row for row in rows if row[column] == name]
    if len(found) != 1:
        names = ", ".join(repr(row[column]) for row in rows[:20])
        what = "no row" if not found else f"{len(found)} rows"
        raise DocsNumbersError(f"{where}: {source} has {what} {column}={name!r} (there: {names})")
    return found[0]


def duration(seconds: float) -> str:
    """Seconds as a reader says them: "51 s", "6 min 35 s", "1 h 12 min"."""
    total = round(seconds)
    hours, minutes, secs = total // 3600, total % 3600 // 60, total % 60
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def format_value(value: Any, options: Sequence[str], where: str) -> str:
    """`value` written with the marker's options: `x100` and then a format spec, or
    `duration` (seconds as "6 min 35 s")."""
    options = list(options)
    if options == ["duration"]:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise DocsNumbersError(f"{where}: duration needs a number of seconds, got {value!r}")
        return duration(value)
    if options and options[0] == "x100":
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise DocsNumbersError(f"{where}: x100 needs a number, got {value!r}")
        value = value * 100
        options.pop(0)
    if len(options) > 1:
        raise DocsNumbersError(f"{where}: expected at most x100 and one format spec, got {options}")
    if options:
        try:
            return format(value, options[0])
        except (ValueError, TypeError) as e:
            raise DocsNumbersError(f"{where}: format {options[0]!r} of {value!r}: {e}") from None
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        return repr(round(value, 2))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "))
    return str(value)


def _split_args(args: str, where: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError as e:
        raise DocsNumbersError(
            f"{where}: cannot read the marker's arguments {args!r} ({e})"
        ) from None


def _read_value(path: Path, source: str, rest: list[str], where: str) -> tuple[Any, list[str]]:
    """The value a marker names in one file, and the options left after its key."""
    if source.endswith((".csv", ".tsv")):
        selector = rest.pop(0)[4:] if rest[0].startswith("row=") else None
        if not rest or not rest[0].startswith("col="):
            raise DocsNumbersError(
                f"{where}: a CSV value is `{source} [row=NAME] col=COLUMN`, got {' '.join(rest)!r}"
            )
        rows = _read_csv(path, where)
        if selector is not None:
            row = csv_row(rows, selector, where, source)
        elif len(rows) == 1:
            row = rows[0]
        else:
            raise DocsNumbersError(f"{where}: {source} has {len(rows)} rows: name one, row=NAME")
        return _number(row[_column(row, rest[0][4:], where, source)]), rest[1:]
    return json_key(_read_json(path, where), rest[0], where, source), rest[1:]


def render_value(args: str, root: Path, where: str) -> str:
    """The text of `<!-- value FILE KEY [x100] [SPEC] -->` or of a CSV cell's marker; a FILE
    with a wildcard (`benchmarks/*.tsv`) gives the sum over the files it matches."""
    parts = _split_args(args, where)
    if len(parts) < 2:
        raise DocsNumbersError(
            f"{where}: expected <!-- value FILE KEY [x100] [SPEC] -->, got {args!r}"
        )
    source, rest = parts[0], parts[1:]
    if not any(c in source for c in "*?["):
        value, options = _read_value(root / source, source, list(rest), where)
        return format_value(value, options, where)
    paths = sorted(root.glob(source))
    if not paths:
        raise DocsNumbersError(f"{where}: {source}: no file matches")
    total: float = 0
    for path in paths:
        name = path.relative_to(root).as_posix()
        value, options = _read_value(path, name, list(rest), where)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise DocsNumbersError(f"{where}: {name}: a sum needs numbers, got {value!r}")
        total += value
    return format_value(total, options, where)


# --- includes and tables --------------------------------------------------------------------


def render_include(args: str, root: Path, where: str) -> str:
    """A file's text, verbatim (without its final newline)."""
    parts = _split_args(args, where)
    if len(parts) != 1:
        raise DocsNumbersError(f"{where}: expected <!-- include FILE -->, got {args!r}")
    path = root / parts[0]
    try:
        return path.read_text(encoding="utf-8").rstrip("\n")
    except FileNotFoundError:
        raise DocsNumbersError(f"{where}: {parts[0]}: file not found ({path})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DocsNumbersError(f"{where}: {parts[0]}: not readable ({e})") from None


@dataclass(frozen=True)
class Accuracy:
    """One row of an accuracy table: overall and per question type, in percent."""

    questions: int | None
    values: dict[str, float]
    prior: float | None


def _accuracy_from_json(data: Any, key: str, where: str, source: str) -> Accuracy:
    """The accuracy object at `key` of a JSON file ("" for the whole file)."""
    parts = key_parts(key, where) if key else []
    parent = _at(data, parts[:-1], where, source)
    result = _at(data, parts, where, source)
    named = f"{source}#{key}" if key else source
    if not isinstance(result, dict):
        raise DocsNumbersError(f"{where}: {named} is not an object")
    values = {c: json_key(result, c, where, named) for c in ("overall",)}
    values.update({c: json_key(result, f"columns.{c}", where, named) for c in clevr.QUESTION_TYPES})
    counts = result.get("counts")
    questions = counts.get("overall") if isinstance(counts, dict) else None
    # metrics.json holds its prior; sim_to_real.json holds it beside the model's accuracy.
    prior = result.get("prior")
    if prior is None and key and isinstance(parent, dict):
        prior = parent.get("prior")
    return Accuracy(questions, values, prior.get("overall") if isinstance(prior, dict) else None)


def read_accuracy(result: str, root: Path, where: str) -> Accuracy:
    """One result of an accuracy table: a folder, `FILE.json[#key]` or `FILE.csv#row`."""
    source, _, key = result.partition("#")
    path = root / source
    if path.is_dir():
        if key:
            raise DocsNumbersError(f"{where}: {source} is a folder: #{key} applies to a file")
        return _accuracy_from_json(
            _read_json(path / "metrics.json", where), "", where, f"{source}/metrics.json"
        )
    if source.endswith(".csv"):
        if not key:
            raise DocsNumbersError(f"{where}: {source}: name its row, {source}#ROW")
        rows = _read_csv(path, where)
        row = csv_row(rows, key, where, source)
        values = {c: _number(row[_column(row, c, where, source)]) for c in _COLUMNS}
        questions = row.get("questions")
        return Accuracy(_number(questions) if questions else None, values, None)
    return _accuracy_from_json(_read_json(path, where), key, where, source)


def render_table(args: str, root: Path, where: str) -> str:
    """The markdown table of `<!-- table accuracy LABEL=RESULT ... -->`."""
    parts = _split_args(args, where)
    if not parts or parts[0] != "accuracy" or len(parts) < 2:
        raise DocsNumbersError(
            f"{where}: expected <!-- table accuracy LABEL=RESULT ... -->, got {args!r}"
        )
    rows = []
    for entry in parts[1:]:
        label, sep, result = entry.partition("=")
        if not sep or not label or not result:
            raise DocsNumbersError(f"{where}: {entry!r} is not LABEL=RESULT")
        rows.append((label, read_accuracy(result, root, where)))
    any_prior = any(a.prior is not None for _, a in rows)
    titles = ["result", "questions", *(c.replace("_", " ").title() for c in _COLUMNS)]
    titles += ["Q-type prior"] if any_prior else []
    lines = [
        "| " + " | ".join(titles) + " |",
        "|---" + "|---:" * (len(titles) - 1) + "|",
    ]
    for label, accuracy in rows:
        cells = [label, "—" if accuracy.questions is None else f"{accuracy.questions:,}"]
        cells += [f"{accuracy.values[c]:.2f}" for c in _COLUMNS]
        if any_prior:
            cells.append("—" if accuracy.prior is None else f"{accuracy.prior:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- pages ----------------------------------------------------------------------------------


def _shorten(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


@dataclass(frozen=True)
class Stale:
    """A marker whose text differs from what its file gives."""

    page: str
    line: int
    marker: str
    written: str
    generated: str

    def __str__(self) -> str:
        written, generated = _shorten(self.written), _shorten(self.generated)
        where = f"{self.page}:{self.line}: {self.marker}"
        return f"{where}: reads {written!r}, the files give {generated!r}"


def fill(text: str, page: str, root: Path = ROOT) -> tuple[str, list[Stale]]:
    """A page's text with every marker filled, and the places that were stale.

    Raises:
        DocsNumbersError: a marker that cannot be filled, naming the page and its line.
    """
    pieces: list[str] = []
    stale: list[Stale] = []
    last = 0
    for marker in find_markers(text, page):
        where = f"{page}:{marker.line}"
        if marker.kind == "value":
            generated = render_value(marker.args, root, where)
        else:
            render = render_include if marker.kind == "include" else render_table
            generated = "\n" + render(marker.args, root, where) + "\n"
        written = text[marker.start : marker.end]
        if written != generated:
            label = f"<!-- {marker.kind} {' '.join(marker.args.split())} -->"
            stale.append(Stale(page, marker.line, label, written.strip(), generated.strip()))
        pieces += [text[last : marker.start], generated]
        last = marker.end
    pieces.append(text[last:])
    return "".join(pieces), stale


def pages(root: Path = ROOT, patterns: Sequence[str] = PAGES) -> list[Path]:
    """The markdown pages under `root` whose numbers are generated."""
    found: set[Path] = set()
    for pattern in patterns:
        found.update(p for p in root.glob(pattern) if p.is_file())
    return sorted(found)


def run(paths: Iterable[Path], root: Path = ROOT, check: bool = False) -> list[Stale]:
    """Fill (or, with `check`, only compare) each page; returns the stale places found.

    Every page is read and filled before any is written, so a bad marker anywhere leaves
    every page as it was.
    """
    updates: list[tuple[Path, str]] = []
    stale: list[Stale] = []
    for path in paths:
        name = relative_name(path, root)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DocsNumbersError(f"{name}: cannot read ({e})") from None
        new, found = fill(text, name, root)
        stale += found
        if new != text:
            updates.append((path, new))
    if not check:
        for path, new in updates:
            write_text_atomic(path, new)
            log.info("%s: numbers written", relative_name(path, root))
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m filmclevr.docs_numbers",
        description="Fill the generated numbers of README.md, docs/ and studies/ from the files "
        "they come from (or, with --check, name each stale one and exit 1).",
    )
    parser.add_argument(
        "pages", nargs="*", type=Path, help="pages (default: " + ", ".join(PAGES) + ")"
    )
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if any is stale"
    )
    parser.add_argument(
        "--root", type=Path, default=ROOT, help="the paths' root (default: the repository)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        stale = run(args.pages or pages(args.root), args.root, check=args.check)
    except DocsNumbersError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for place in stale:
        print(("stale: " if args.check else "updated: ") + str(place), file=sys.stderr)
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
