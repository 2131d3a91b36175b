"""The run report: every section, in HTML (self-contained) and Markdown, on success and failure."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest
from conftest import make_blobs, tiny_mlp

from satcompress import stages
from satcompress.pipeline.base_model import TrainedModel
from satcompress.pipeline.budget import Budget
from satcompress.pipeline.recipe import Recipe
from satcompress.pipeline.runner import BudgetNotMet, run_recipe
from satcompress.tasks.registry import Task

REGISTERED = stages.load_builtin_stages()
SECTIONS = ["Budget", "Evaluation", "Bytes and metric per stage",
            "Base vs compressed on the test set", "Layers of the final model",
            "Latency distribution", "Stages", "Recipe", "Flight artifact"]
FIGURES = ["waterfall", "confusion", "reliability", "latency"]
RECIPE = Recipe("report-test", (
    REGISTERED["low_rank"](rank_by="layer_ranks", layer_ranks=(("blocks.0.fc1", 3),),
                           finetune_epochs=0),
    REGISTERED["weight_cluster"](n_clusters=8, finetune_epochs=0),
))
BUDGET = Budget.parse("max_bytes=1MB,max_latency_ms=1s,max_metric_drop=accuracy:0.5")


class _Page(HTMLParser):
    """Headings, image sources, table rows and external references of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings, self.images, self.rows, self.external = [], [], [], []
        self._heading = self._row = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("h1", "h2"):
            self._heading = ""
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._row.append("")
        elif tag in ("script", "link", "iframe") or (tag == "a" and "href" in attrs):
            self.external.append(tag)

    def handle_endtag(self, tag):
        if tag in ("h1", "h2"):
            self.headings.append(self._heading)
            self._heading = None
        elif tag == "tr":
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data
        if self._row:
            self._row[-1] += data


def _parse(path) -> _Page:
    page = _Page()
    page.feed(path.read_text())
    return page


@pytest.fixture(scope="module")
def trained():
    task = Task("blobs", "tiny", "satcompress.tasks.user", metric="accuracy")  # a user's task
    return TrainedModel(task=task, model=tiny_mlp(), data=make_blobs(), metrics={})


@pytest.fixture(scope="module")
def passed(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("passed")
    return out, run_recipe(trained, RECIPE, BUDGET, out, latency_repeats=5)


def test_the_html_report_has_every_section_and_embeds_its_figures(passed):
    out, _ = passed
    page = _parse(out / "report.html")
    assert page.headings[0].startswith("satcompress report: blobs")
    assert page.headings[1:] == SECTIONS
    assert len(page.images) == len(FIGURES)
    for source in page.images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG")
    assert page.external == []  # self-contained: no script, stylesheet link or hyperlink


def test_the_budget_table_has_a_row_per_limit_with_value_limit_margin_and_verdict(passed):
    out, _ = passed
    rows = _parse(out / "report.html").rows
    header = next(row for row in rows if row and row[0] == "limit")
    assert header == ["limit", "value", "allowed", "margin", "margin_%_of_limit", "status"]
    budget_rows = {row[0]: row for row in rows if len(row) == len(header) and row[0].startswith("max_")}
    assert set(budget_rows) == {"max_bytes", "max_latency_ms", "max_metric_drop[accuracy]"}
    assert all(row[-1] == "pass" for row in budget_rows.values())
    assert 'class="pass"' in (out / "report.html").read_text()


def test_the_layer_table_shows_the_clusters_and_the_rank_each_stage_left(passed):
    out, result = passed
    rows = _parse(out / "report.html").rows
    header = next(row for row in rows if row and row[0] == "layer")
    assert header == ["layer", "type", "params", "nonzero", "sparsity_%", "weight_bits",
                      "clusters", "rank"]
    layers = {row[0]: dict(zip(header, row)) for row in rows if row and row[0].startswith("blocks.0.fc1")}
    assert set(layers) == {"blocks.0.fc1.0", "blocks.0.fc1.1"}  # the factors of the rank-3 layer
    assert all(layer["rank"] == "3" for layer in layers.values())
    assert all(layer["clusters"] == "8" and layer["weight_bits"] == "3" for layer in layers.values())


def test_the_markdown_report_has_the_same_sections_and_links_its_figure_files(passed):
    out, _ = passed
    text = (out / "report.md").read_text()
    assert re.findall(r"^## (.+)$", text, flags=re.MULTILINE) == SECTIONS
    for name in FIGURES:
        assert f"](figures/{name}.png)" in text
        assert (out / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    assert "| max_bytes |" in text and "| pass |" in text


def test_a_run_that_misses_its_budget_still_reports_the_closest_candidate_and_the_miss(trained, tmp_path):
    with pytest.raises(BudgetNotMet):
        run_recipe(trained, RECIPE, Budget(max_bytes=10), tmp_path, latency_repeats=3)
    page = _parse(tmp_path / "report.html")
    assert page.headings[1:] == SECTIONS
    assert [row[-1] for row in page.rows if row and row[0] == "max_bytes"] == ["FAIL"]
    html = (tmp_path / "report.html").read_text()
    assert 'class="verdict-fail"' in html and "Closest candidate: stage" in html
    assert "Budget NOT met" in (tmp_path / "report.md").read_text()
