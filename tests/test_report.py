"""`snakemake --report report.html` on a tiny mini-CoGenT run: the results table, the accuracy
figure, the learning curves, the analysis and the CoGenT figures, each with its caption, in its
category, and the workflow's description."""

from __future__ import annotations

import base64
import json
import re
import sys
from pathlib import Path

import pytest

from tests.test_pipeline import cogent_project, run, snakemake

pytestmark = pytest.mark.slow

# What the report shows of a CoGenT run (transfer split valB), by category and subcategory
# (Snakemake's "Other" where a rule names none).
EXPECTED = {
    "1. Results": {"Other": ["results/accuracy.png", "results/table.html"]},
    "2. Learning curves": {
        "Other": ["results/learning_curve_vs_paper.png", "results/learning_curves.png"]
    },
    "3. What FiLM learned": {
        "Other": [
            "results/analysis/ablations.png",
            "results/analysis/examples.png",
            "results/analysis/film_histograms.png",
            "results/analysis/tsne.png",
        ]
    },
    "4. CLEVR-CoGenT": {"transfer to valB": ["results/cogent/valB/sample_efficiency.png"]},
}
# A phrase of each caption that only that result's caption has: what the figure shows.
SHOWS = {
    "results/table.html": "below every row of the paper's Table 1",
    "results/accuracy.png": "its Q-type prior on the same questions",
    "results/learning_curves.png": "the loss and the accuracy on the",
    "results/learning_curve_vs_paper.png": "the paper's appendix Figure 11",
    "results/analysis/examples.png": "the paper's Figure 4",
    "results/analysis/film_histograms.png": "Figures 5, 16 and 17",
    "results/analysis/tsne.png": "the paper's Figure 6",
    "results/analysis/ablations.png": "the paper's Figure 7",
    "results/cogent/valB/sample_efficiency.png": "fine-tuned on 30,000 valB questions",
}
# Where each result's data comes from, as its caption names it.
DATA = {
    "results/table.html": "results/metrics.json",
    "results/accuracy.png": "results/accuracy.csv",
    "results/learning_curves.png": "models/film.json",
    "results/learning_curve_vs_paper.png": "filmclevr/paper/learning_curve.csv",
    "results/analysis/examples.png": "results/analysis/examples.csv",
    "results/analysis/film_histograms.png": "results/analysis/film_statistics.json",
    "results/analysis/tsne.png": "data/shards",
    "results/analysis/ablations.png": "results/analysis/ablations.csv",
    "results/cogent/valB/sample_efficiency.png": "results/cogent/valB.json",
}


def report_variable(page: str, name: str):
    """A JSON value the report's page assigns (`var <name> = ...;`)."""
    match = re.search(rf'^\s*var {name} = ([{{["].*);\s*$', page, re.M)  # a value, not code
    assert match, f"the report has no {name}"
    return json.loads(match.group(1))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, str]:
    """A tiny CoGenT run and its report, as a user makes it (no --cores)."""
    project = cogent_project(tmp_path_factory.mktemp("report") / "project")
    snakemake(project)
    run([sys.executable, "-m", "snakemake", "--report", "report.html"], project)
    return project, (project / "report.html").read_text(encoding="utf-8")


def test_the_report_shows_each_result_in_its_category(report):
    _, page = report
    categories = report_variable(page, "categories")
    assert {name: {sub: sorted(files) for sub, files in subs.items()}
            for name, subs in categories.items()} == EXPECTED  # fmt: skip


def test_each_result_has_a_caption_saying_what_it_shows_and_its_data(report):
    project, page = report
    results = report_variable(page, "results")
    assert set(results) == set(SHOWS)
    for path, result in results.items():
        caption = re.sub(r"<[^>]+>|\s+", " ", result["caption"])  # text, one space between
        caption = re.sub(r" +", " ", caption)
        assert SHOWS[path] in caption, (path, caption)
        assert DATA[path] in caption, (path, caption)
        assert "tiny-cogent" in caption, (path, caption)  # the profile that ran
        assert sum(SHOWS[other] in caption for other in SHOWS) == 1, (path, caption)
        # The report embeds the file the pipeline wrote, byte for byte.
        encoded = result["data_uri"].partition("base64,")[2]
        assert base64.b64decode(encoded) == (project / path).read_bytes(), path
    assert results["results/analysis/tsne.png"]["labels"] == {"figure": "tsne"}
    assert "valA" in results["results/table.html"]["caption"]  # the split scored


def test_the_results_table_is_the_run_s(report):
    project, page = report
    table = report_variable(page, "results")["results/table.html"]
    shown = base64.b64decode(table["data_uri"].partition("base64,")[2]).decode()
    metrics = json.loads((project / "results/metrics.json").read_text())
    overall = f"{metrics['overall']:.2f}"
    assert f"<td>This run: CNN+GRU+FiLM (raw pixels)</td><td>{metrics['context']['dataset']} " \
        f"/ valA (profile tiny-cogent)</td><td>{overall}</td>" in shown  # fmt: skip
    assert metrics["context"]["dataset"].startswith("mini-CoGenT")


def test_the_workflow_description_names_the_data_and_links_the_categories(report):
    _, page = report
    description = report_variable(page, "workflow_desc")
    assert "profile <strong>tiny-cogent</strong>" in description
    assert "<strong>Data: mini-CoGenT</strong>" in description
    for category in EXPECTED:
        quoted = category.replace(" ", "%20")
        assert f"app.showCategory('{quoted}')" in description, category
