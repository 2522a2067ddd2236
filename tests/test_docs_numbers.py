"""Generated numbers in the pages: each marker kind, the errors, and the repository's pages
against the committed files they quote."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from filmclevr import docs_numbers
from filmclevr.docs_numbers import DocsNumbersError, fill, main

ROOT = Path(__file__).resolve().parents[1]

METRICS = {
    "overall": 51.3612,
    "columns": {
        "count": 40.41,
        "exist": 65.5,
        "compare_numbers": 68.3,
        "query_attribute": 46.54,
        "compare_attribute": 53.85,
    },
    "counts": {"overall": 5000},
    "prior": {"overall": 41.36},
    "context": {"questions": 5000, "commit": "8989e1e", "machine": {"processor": "AMD EPYC"}},
    "history": [{"val_accuracy": 0.42}, {"val_accuracy": 0.5136}],
    "tolerance": {"overall": 2.5},
    "flag": True,
}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    run = tmp_path / "results" / "run"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps(METRICS))
    (run / "table.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    other = {
        "model": {**METRICS, "overall": 49.62, "prior": None},
        "prior": {"overall": 41.8},
    }
    (run / "side.json").write_text(json.dumps({"sides": {"genuine": other}}))
    dotted = {"the model, from step2.pt": other["model"], "prior": {"overall": 41.8}}
    (run / "dotted.json").write_text(json.dumps({**dotted, "a": {"b.c": {"d": [1, 2]}}}))
    (tmp_path / "paper.csv").write_text(
        "model,overall,count,exist,compare_numbers,query_attribute,compare_attribute,questions\n"
        "Human,92.6,86.7,96.6,86.5,95.0,96.0,10\n"
        '"CNN+GRU+FiLM (raw pixels)",97.6,94.3,99.3,93.4,99.3,99.3,15000\n'
    )
    (tmp_path / "params.yaml").write_text("regression:\n  tolerance:\n    overall: 2.5\n")
    (run / "train_model.tsv").write_text("s\th:m:s\tmax_rss\n395.14\t0:06:35\t935.10\n")
    (run / "get_data.tsv").write_text("s\th:m:s\tmax_rss\n65.88\t0:01:05\t206.48\n")
    return tmp_path


def filled(text: str, root: Path) -> str:
    return fill(text, "page.md", root)[0]


def value(args: str, root: Path) -> str:
    text = f"a <!-- value {args} -->old<!-- /value --> b"
    out = filled(text, root)
    assert out.startswith(f"a <!-- value {args} -->") and out.endswith("<!-- /value --> b")
    return out[len(f"a <!-- value {args} -->") : -len("<!-- /value --> b")]


# --- values -------------------------------------------------------------------------------


def test_value_default_formats_round_floats_to_two_decimals_and_keep_the_rest(root):
    assert value("results/run/metrics.json overall", root) == "51.36"
    assert value("results/run/metrics.json columns.exist", root) == "65.5"  # as written
    assert value("results/run/metrics.json context.questions", root) == "5000"
    assert value("results/run/metrics.json context.commit", root) == "8989e1e"
    assert value("results/run/metrics.json context.machine.processor", root) == "AMD EPYC"
    assert value("results/run/metrics.json tolerance", root) == '{"overall": 2.5}'
    assert value("results/run/metrics.json flag", root) == "true"


def test_value_from_a_yaml_file(root):
    assert value("params.yaml regression.tolerance.overall", root) == "2.5"
    assert value("params.yaml regression.tolerance", root) == '{"overall": 2.5}'


def test_value_from_a_profile_is_resolved_on_its_bases(root):
    """A profile (a YAML file with `profile:`) reads as every stage reads it: what it inherits
    from its base is found; a YAML file that is not a profile is read as it is."""
    (root / "config").mkdir()
    for name in ("demo.yaml", "mini-large.yaml"):
        (root / "config" / name).write_text((ROOT / "config" / name).read_text())
    assert value("config/mini-large.yaml train_model.max_epochs", root) == "40"  # its own
    assert value("config/mini-large.yaml model.stem_channels", root) == "32"  # the demo's
    assert value("config/mini-large.yaml get_data.mini.images.train ,", root) == "12,000"
    assert value("config/mini-large.yaml get_data.mini.seed", root) == "0"  # merged: the demo's
    assert value("config/demo.yaml get_data.mini.images.train ,", root) == "6,000"
    (root / "config/bad.yaml").write_text("base: demo.yaml\nprofile: bad\nmodel: {depth: 1}\n")
    with pytest.raises(DocsNumbersError, match=r"^page\.md:1: .*config/bad\.yaml: invalid"):
        value("config/bad.yaml model.depth", root)


def test_value_at_a_key_holding_dots_goes_in_brackets(root):
    """`["a.b"]` (the quotes, as any marker argument's, only needed for spaces)."""
    dotted = "results/run/dotted.json"
    assert value(f'{dotted} ["the model, from step2.pt"].overall', root) == "49.62"
    assert value(f"{dotted} '[the model, from step2.pt]'.columns.exist", root) == "65.5"
    assert value(f'{dotted} a["b.c"].d.-1', root) == "2"
    assert value(f"{dotted} a.[b.c].d[0]", root) == "1"
    assert docs_numbers.key_parts("a[b.c].d", "w") == ["a", "b.c", "d"]
    assert docs_numbers.key_parts("history.-1", "w") == ["history", "-1"]
    with pytest.raises(DocsNumbersError, match=r"has no key 'a\[b\.x\]' \(there: b\.c\)"):
        value(f"{dotted} a[b.x].d", root)
    for key, message in [
        ("a[b.c", "the bracket at 1 is not closed"),
        ("a..b", "a part is empty at 2"),
        ("a.", "a part is empty at 2"),
        ("a[b]c", "expected '.' or '\\[' at 4"),
    ]:
        with pytest.raises(DocsNumbersError, match=rf"^page\.md:1: key '{re.escape(key)}': "):
            value(f"{dotted} {key}", root)
        with pytest.raises(DocsNumbersError, match=message):
            value(f"{dotted} {key}", root)


def test_value_list_indices_negative_too(root):
    assert value("results/run/metrics.json history.0.val_accuracy", root) == "0.42"
    assert value("results/run/metrics.json history.-1.val_accuracy", root) == "0.51"


def test_value_format_spec_and_x100(root):
    assert value("results/run/metrics.json overall .1f", root) == "51.4"
    assert value("results/run/metrics.json context.questions ,", root) == "5,000"
    assert value("results/run/metrics.json history.-1.val_accuracy x100 .1f", root) == "51.4"
    assert value("results/run/metrics.json history.-1.val_accuracy x100", root) == "51.36"


def test_value_csv_cell_by_first_column_or_a_named_one(root):
    assert value('paper.csv row="CNN+GRU+FiLM (raw pixels)" col=Overall', root) == "97.6"
    assert value("paper.csv row=Human col=count", root) == "86.7"
    assert value("paper.csv row=questions=15000 col=model", root) == "CNN+GRU+FiLM (raw pixels)"
    assert value("paper.csv row=Human col=questions ,", root) == "10"
    assert value("paper.csv row=Human col=overall x100 .0f", root) == "9260"


def test_the_markers_own_text_stays_and_the_rest_of_the_page_is_untouched(root):
    text = "# T\n\nx <!-- value results/run/metrics.json overall -->1<!-- /value --> y\n\nend\n"
    assert filled(text, root) == text.replace(">1<", ">51.36<")


def test_value_tsv_of_one_row_needs_no_row_and_duration_reads_seconds(root):
    assert value("results/run/train_model.tsv col=h:m:s", root) == "0:06:35"
    assert value("results/run/train_model.tsv col=max_rss .0f", root) == "935"
    assert value("results/run/train_model.tsv col=s duration", root) == "6 min 35 s"
    assert docs_numbers.duration(51.1) == "51 s"
    assert docs_numbers.duration(4331) == "1 h 12 min"
    with pytest.raises(DocsNumbersError, match=r"page\.md:1: .*2 rows: name one"):
        value("paper.csv col=overall", root)


def test_value_with_a_wildcard_sums_over_the_files_it_matches(root):
    assert value("results/run/*.tsv col=s duration", root) == "7 min 41 s"  # 395.14 + 65.88
    assert value("results/run/*.tsv col=max_rss .0f", root) == "1142"
    with pytest.raises(DocsNumbersError, match=r"page\.md:1: results/none/\*\.tsv: no file"):
        value("results/none/*.tsv col=s", root)
    with pytest.raises(DocsNumbersError, match=r"a sum needs numbers"):
        value("results/run/*.tsv col=h:m:s", root)


# --- includes and tables --------------------------------------------------------------------


def test_include_puts_the_file_verbatim_between_its_comments(root):
    text = "before\n<!-- include results/run/table.md -->\nold\n<!-- /include -->\nafter\n"
    assert filled(text, root) == (
        "before\n<!-- include results/run/table.md -->\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /include -->\nafter\n"
    )


def test_accuracy_table_from_a_json_key_holding_dots(root):
    text = (
        '<!-- table accuracy x=results/run/dotted.json#["the model, from step2.pt"] -->\n'
        "<!-- /table -->\n"
    )
    row = filled(text, root).splitlines()[3]
    assert row.startswith("| x | 5,000 | 49.62 | 40.41 |")
    assert row.endswith("| 41.80 |")  # the prior beside it, as in sim_to_real.json


def test_accuracy_table_from_a_folder_a_json_key_and_a_csv_row(root):
    text = (
        "<!-- table accuracy demo=results/run"
        ' "on genuine"=results/run/side.json#sides.genuine.model'
        ' "the paper"=paper.csv#"CNN+GRU+FiLM (raw pixels)" -->\n<!-- /table -->\n'
    )
    lines = filled(text, root).splitlines()
    assert lines[1] == (
        "| result | questions | Overall | Count | Exist | Compare Numbers | Query Attribute"
        " | Compare Attribute | Q-type prior |"
    )
    assert lines[2] == "|---" + "|---:" * 8 + "|"
    assert lines[3] == "| demo | 5,000 | 51.36 | 40.41 | 65.50 | 68.30 | 46.54 | 53.85 | 41.36 |"
    # the prior beside the model's accuracy, as sim_to_real.json holds it
    assert lines[4].startswith("| on genuine | 5,000 | 49.62 |") and lines[4].endswith("| 41.80 |")
    assert lines[5] == "| the paper | 15,000 | 97.60 | 94.30 | 99.30 | 93.40 | 99.30 | 99.30 | — |"
    assert lines[6] == "<!-- /table -->"


def test_a_filled_page_is_not_stale_and_filling_again_changes_nothing(root):
    text = (
        "<!-- value results/run/metrics.json overall -->0<!-- /value -->\n"
        "<!-- include results/run/table.md -->\n<!-- /include -->\n"
        "<!-- table accuracy demo=results/run -->\n<!-- /table -->\n"
    )
    once, stale = fill(text, "page.md", root)
    assert [s.line for s in stale] == [1, 2, 4]
    again, stale = fill(once, "page.md", root)
    assert again == once and stale == []


def test_markers_in_code_are_examples_and_are_left_alone(root):
    text = (
        "`<!-- value nowhere.json key -->`\n"
        "```markdown\n<!-- value nowhere.json key -->x<!-- /value -->\n"
        "<!-- table accuracy -->\n```\n"
    )
    assert fill(text, "page.md", root) == (text, [])


# --- errors name the page and the line ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "\n<!-- value results/run/nope.json overall -->x<!-- /value -->",
            r"page\.md:2: nope\.json",
        ),
        (
            "\n\n<!-- value results/run/metrics.json columns.nope -->x<!-- /value -->",
            r"page\.md:3: results/run/metrics\.json has no key 'columns\.nope'",
        ),
        (
            "<!-- value results/run/metrics.json history.5.val_accuracy -->x<!-- /value -->",
            r"page\.md:1: .*'history\.5' is out of range",
        ),
        ("<!-- value paper.csv row=Robot col=overall -->x<!-- /value -->", r"page\.md:1: .*no row"),
        ("<!-- value paper.csv row=Human col=speed -->x<!-- /value -->", r"no column 'speed'"),
        ("<!-- value results/run/metrics.json -->x<!-- /value -->", r"page\.md:1: expected"),
        ("<!-- value results/run/metrics.json context.commit x100 -->x<!-- /value -->", "x100"),
        (
            "<!-- value results/run/metrics.json context.commit duration -->x<!-- /value -->",
            "secon",
        ),
        ("<!-- include results/run/none.md -->\n<!-- /include -->", r"page\.md:1: .*not found"),
        ("<!-- table accuracy demo=results/none -->\n<!-- /table -->", r"page\.md:1: .*not found"),
        ("<!-- table accuracy results/run -->\n<!-- /table -->", r"not LABEL=RESULT"),
        ("<!-- table speed a=results/run -->\n<!-- /table -->", r"page\.md:1: expected"),
    ],
)
def test_a_marker_that_cannot_be_filled_names_page_line_and_problem(root, text, message):
    with pytest.raises(DocsNumbersError, match=message):
        fill(text, "page.md", root)


def test_an_unclosed_marker_is_named_with_its_line(root):
    with pytest.raises(DocsNumbersError, match=r"page\.md:3: .*not closed.*end of the page"):
        fill("a\n\n<!-- value results/run/metrics.json overall -->51.36\n", "page.md", root)
    text = "<!-- table accuracy a=results/run -->\n<!-- value x y -->1<!-- /value -->\n"
    with pytest.raises(DocsNumbersError, match=r"page\.md:1: .*not closed.*before line 2"):
        fill(text, "page.md", root)
    with pytest.raises(DocsNumbersError, match=r"page\.md:2: <!-- /include --> closes no marker"):
        fill("x\n<!-- /include -->\n", "page.md", root)


# --- the command ----------------------------------------------------------------------------


def test_command_writes_in_place_and_check_names_each_stale_place(root, capsys):
    page = root / "README.md"
    page.write_text("x <!-- value results/run/metrics.json overall -->1<!-- /value -->\n")
    argv = ["--root", str(root), str(page)]
    assert main(["--check", *argv]) == 1
    assert "README.md:1:" in capsys.readouterr().err
    assert page.read_text().startswith("x <!-- value results/run/metrics.json overall -->1<")
    assert main(argv) == 0
    assert "-->51.36<!--" in page.read_text()
    assert main(["--check", *argv]) == 0


def test_command_with_a_bad_marker_writes_no_page(root, capsys):
    good = root / "docs" / "a.md"
    good.parent.mkdir()
    good.write_text("<!-- value results/run/metrics.json overall -->1<!-- /value -->\n")
    bad = root / "README.md"
    bad.write_text("\n<!-- value results/run/metrics.json nope -->1<!-- /value -->\n")
    assert main(["--root", str(root)]) == 2
    assert "README.md:2:" in capsys.readouterr().err
    assert good.read_text().endswith("-->1<!-- /value -->\n")


def test_pages_are_the_readme_docs_and_studies(root):
    for name in ("README.md", "docs/x.md", "docs/sub/y.md", "studies/s/README.md", "other/z.md"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    found = [p.relative_to(root).as_posix() for p in docs_numbers.pages(root)]
    assert found == ["README.md", "docs/sub/y.md", "docs/x.md", "studies/s/README.md"]


# --- the repository's own pages -------------------------------------------------------------


def test_the_repositorys_generated_numbers_are_up_to_date():
    """Fails when a committed result changed and its pages were not regenerated: run
    `python -m filmclevr.docs_numbers` and commit the pages."""
    stale = docs_numbers.run(docs_numbers.pages(ROOT), ROOT, check=True)
    assert not stale, "stale numbers (python -m filmclevr.docs_numbers):\n" + "\n".join(
        map(str, stale)
    )
