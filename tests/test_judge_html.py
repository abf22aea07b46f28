"""``cai judge-eval``'s HTML page: self-contained, escaped, well-formed, with the right numbers and charts."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.audit.accuracy import OURS, PROTOCOLS, JudgeEval, Scored, measure
from engine.audit.html import (
    CSP,
    coverage_plot,
    percent,
    reliability_plot,
    render_judge_html,
    write_judge_html,
)
from engine.audit.report import JudgeReport
from engine.evaluate.formatting import DASH
from tests.html_page import Page
from tests.html_page import parse as parse_page

SCRIPT = "<script>alert(1)</script>"
QUOTE = '" onmouseover="alert(3)'
EVIL_MODEL = f"judge{QUOTE} {SCRIPT}"
EVIL_CATEGORY = f'cyber "{SCRIPT}'
EVIL_NOTE = f'note "quoted" {SCRIPT}'
FILE = f'labels"{SCRIPT}.jsonl'


def judged(ps: Sequence[float | None], model: str, *, min_margin: float = 0.1) -> JudgeEval:
    """A judge's evaluation over 40 items: the first 25 in "ethics", the rest in the evil category."""
    scored = [
        Scored(
            id=f"item-{i}",
            p=p,
            better_as_a=None if p is None else min(1.0, p + 0.1),
            better_as_b=None if p is None else max(0.0, p - 0.1),
            category="ethics" if i < 25 else EVIL_CATEGORY,
            principles={"harm": p} | ({"honesty": p} if i < 10 else {}),
        )
        for i, p in enumerate(ps)
    ]
    return measure(
        scored,
        protocol=OURS,
        file=FILE,
        judge_model=model,
        settings={"min_margin": min_margin, "cot": False},
        seconds=2.5,
        min_margin=min_margin,
        extra={"picked_a_rate": 0.5},
    )


GOOD_PS: Sequence[float | None] = [0.9] * 24 + [0.7] * 8 + [0.3] * 8
"""32 of 40 right: margins 0.8 (24 items) and 0.4 (16 items)."""
COIN_PS: Sequence[float | None] = [0.6 if i % 2 else 0.4 for i in range(40)]
"""20 of 40 right."""


def good() -> JudgeEval:
    return judged(GOOD_PS, "strong-judge")


def coin() -> JudgeEval:
    return judged(COIN_PS, EVIL_MODEL)


def wilson(k: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval, worked out here from its formula."""
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


CHECKED = frozenset(
    {"html", "head", "body", "main", "header", "nav", "section", "div", "details", "summary", "ul", "li", "p"}
    | {"h1", "h2", "h3", "h4", "table", "thead", "tbody", "tr", "td", "th", "a", "span", "small", "b", "code"}
    | {"svg", "g", "text", "title", "style", "script"}
)
"""The tags whose balance the tests check."""


def parse(page: str) -> Page:
    return parse_page(page, CHECKED)


def row_of(table: list[list[str]], first: str) -> list[str]:
    return next(row for row in table if row and row[0] == first)


@pytest.fixture(scope="module")
def report() -> JudgeReport:
    return JudgeReport.of(FILE, [good(), coin()], notes=[EVIL_NOTE, "the as-written protocol needs a choice file"])


@pytest.fixture(scope="module")
def page(report: JudgeReport) -> str:
    return render_judge_html(report)


@pytest.fixture(scope="module")
def parsed(page: str) -> Page:
    return parse(page)


def test_page_is_one_self_contained_document_without_script(page: str, parsed: Page) -> None:
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<html") == 1 and page.count("</html>") == 1
    for banned in ("http://", "https://", "src=", "<link", "url(", "@import", "<script", "<img", "<iframe"):
        assert banned not in page, banned
    tags = [tag for tag, _ in parsed.starts]
    assert "script" not in tags
    for tag, attrs in parsed.starts:
        for name in attrs:
            assert not name.startswith("on"), (tag, name)  # no event handler survived from the report
        assert attrs.get("href") is None or str(attrs["href"]).startswith("#"), (tag, attrs)
    csp = parsed.tag("meta", **{"http-equiv": "Content-Security-Policy"})
    assert [m["content"] for m in csp] == [CSP]
    assert "default-src 'none'" in CSP and "script-src" not in CSP
    assert tags.count("style") == 1


def test_report_text_is_escaped_everywhere(page: str, parsed: Page) -> None:
    assert SCRIPT not in page
    assert QUOTE not in page
    assert '"<script' not in page
    for text in (EVIL_MODEL, EVIL_CATEGORY, EVIL_NOTE, FILE):
        assert html.escape(text, quote=True) in page
    # the name reaches attributes (aria-label) and SVG <title>s whole, as text
    labels = [a["aria-label"] for a in parsed.tag("svg")]
    assert any(label is not None and EVIL_MODEL in label for label in labels)
    assert any(EVIL_MODEL in title for title in parsed.titles)
    assert row_of(parsed.tables["evaluation-2-categories"], EVIL_CATEGORY)[1] == "15"


def test_header_shows_file_protocols_and_notes(page: str, parsed: Page) -> None:
    assert f"<code>{html.escape(FILE)}</code>" in page
    assert html.escape(PROTOCOLS[OURS]) in page
    assert html.escape(PROTOCOLS["as-written"]) not in page  # only the protocols used
    assert parsed.tag("div", id="notes")
    assert html.escape(EVIL_NOTE) in page and "choice file" in page


def test_summary_row_shows_hand_computed_accuracy_and_interval(report: JudgeReport, parsed: Page) -> None:
    table = parsed.tables["summary-table"]
    assert table[0][:4] == ["Judge", "Protocol", "n", "Accuracy (95% interval)"]
    row = row_of(table, "strong-judge")
    low, high = wilson(32, 40)
    assert row[1:4] == ["ours", "40", f"80% {100 * low:.0f}%\u2013{100 * high:.0f}%"]
    assert row[3] == "80% 65%\u201390%"
    e = report.evaluations[0]
    brier = (24 * 0.1**2 + 8 * 0.3**2 + 8 * 0.7**2) / 40
    assert e.brier == pytest.approx(brier)
    assert row[4:] == ["80%", "80%", "0%", f"{brier:.3f}", f"{e.ece:.3f}", "0.1", "40 of 40", "80%"]


def test_at_chance_flag_only_for_the_coin_flip_judge(report: JudgeReport, parsed: Page) -> None:
    assert [e.at_chance for e in report.evaluations] == [False, True]
    table = parsed.tables["summary-table"]
    flagged = row_of(table, EVIL_MODEL)
    assert flagged[3].startswith("50% ") and flagged[3].endswith("not shown better than chance")
    assert "chance" not in " ".join(row_of(table, "strong-judge"))
    classes = [a.get("class") for a in parsed.tag("tr") if a.get("class")]
    assert classes == ["flagged"]


def test_one_reliability_and_one_coverage_plot_per_evaluation(parsed: Page) -> None:
    svgs = parsed.tag("svg")
    assert [a["id"] for a in svgs] == ["reliability-1", "coverage-1", "reliability-2", "coverage-2"]
    assert [a["class"] for a in svgs] == ["chart reliability", "chart coverage"] * 2
    assert all(a.get("role") == "img" and a.get("aria-label") for a in svgs)
    assert sum(t.startswith("Reliability diagram of ") for t in parsed.titles) == 2
    assert sum(t.startswith("Accuracy against coverage of ") for t in parsed.titles) == 2
    assert parsed.titles.count("chance: 50%") == 2


def test_reliability_points_sit_where_the_scale_puts_them() -> None:
    e = good()
    plot = reliability_plot(e)
    f = plot.frame
    assert (f.sx(0.0), f.sx(1.0)) == (f.left, f.left + f.plot_width)
    assert (f.sy(0.0), f.sy(1.0)) == (f.top + f.plot_height, f.top)
    assert plot.diagonal == (f.left, f.top + f.plot_height, f.left + f.plot_width, f.top)
    full = [b for b in e.reliability if b.n]
    # p 0.9/0.7/0.3 and their mirrors 0.1/0.3/0.7; 1 - 0.9 is a hair under 0.1, so it bins in [0, 0.1)
    assert [(b.low, b.n) for b in full] == [(0.0, 24), (0.3, 16), (0.7, 16), (0.9, 24)]
    assert len(plot.points) == 4 and plot.empty == 6
    # the [0.7, 0.8) bin: eight 0.7s that came true and eight 1 - 0.3 that did not
    bin7 = plot.points[2]
    assert bin7.n == 16
    assert bin7.x == pytest.approx(f.left + 0.7 * f.plot_width)
    assert bin7.y == pytest.approx(f.top + (1 - 0.5) * f.plot_height)
    top = plot.points[3]
    assert (top.x, top.y) == pytest.approx((f.left + 0.9 * f.plot_width, f.top))
    assert top.radius > bin7.radius
    assert "n=16" in bin7.tip and "observed 50%" in bin7.tip
    bars = {round(b.x): b for b in plot.bars}
    assert bars[round(f.sx(0.9)) + 1].height > bars[round(f.sx(0.7)) + 1].height
    assert all(b.y + b.height == pytest.approx(f.top + f.plot_height) for b in plot.bars)


def test_coverage_points_with_error_bars_and_margin_labels() -> None:
    e = good()
    plot = coverage_plot(e)
    f = plot.frame
    assert plot.chance_y == pytest.approx(f.top + 0.5 * f.plot_height)
    # margins 0..0.4 keep all 40 items (32 right); 0.5..0.8 keep the 24 at margin 0.8 (all right)
    first, second = plot.marks
    assert first.label == "\u22650\u20130.4" and second.label == "\u22650.5\u20130.8"
    low, high = wilson(32, 40)
    assert (first.x, first.y) == pytest.approx((f.left + f.plot_width, f.top + 0.2 * f.plot_height))
    assert first.low_y == pytest.approx(f.top + (1 - low) * f.plot_height)
    assert first.high_y == pytest.approx(f.top + (1 - high) * f.plot_height)
    assert (second.x, second.y) == pytest.approx((f.left + 0.6 * f.plot_width, f.top))
    assert first.used and not second.used  # the judge's min margin 0.1 is in the first
    assert f.top <= first.label_y <= f.top + f.plot_height and f.top <= second.label_y
    assert plot.unkept == []
    assert "kept 40 of 40 (100%)" in first.tip


def test_groups_are_sorted_by_size(parsed: Page) -> None:
    categories = parsed.tables["evaluation-1-categories"]
    assert categories[0] == ["Category", "n", "Right", "Accuracy", "95% interval"]
    assert [row[:2] for row in categories[1:]] == [["ethics", "25"], [EVIL_CATEGORY, "15"]]
    # the first 25 are all right (24 at 0.9, one at 0.7); of the other 15, seven at 0.7 are right
    assert categories[1][2:] == ["25", "100%", f"{100 * wilson(25, 25)[0]:.0f}%\u2013100%"]
    low, high = wilson(7, 15)
    assert categories[2][2:] == ["7", "47%", f"{100 * low:.0f}%\u2013{100 * high:.0f}%"]
    principles = parsed.tables["evaluation-1-principles"]
    assert [row[:3] for row in principles[1:]] == [["harm", "40", "32"], ["honesty", "10", "10"]]


def test_agreement_section_shows_kappa_and_alpha(report: JudgeReport, page: str, parsed: Page) -> None:
    a = report.agreements[OURS]
    assert a.alpha is not None and a.pairs[0].kappa is not None
    assert parsed.tag("section", id="agreement")
    summary = parsed.tables["agreement-1"]
    assert row_of(summary, "Krippendorff's alpha")[1] == f"{a.alpha:.3f}"
    assert row_of(summary, "Items")[1] == "40"
    pair = row_of(parsed.tables["agreement-1-pairs"], "strong-judge")
    p = a.pairs[0]
    assert pair == [
        "strong-judge",
        EVIL_MODEL,
        f"{p.kappa:.3f}",
        f"{p.agree} / {p.voted}",
        str(p.both_right),
        str(p.first_only),
        str(p.second_only),
        str(p.both_wrong),
    ]
    assert p.both_right + p.first_only + p.second_only + p.both_wrong == 40


def test_no_agreement_section_with_one_judge() -> None:
    page = render_judge_html(JudgeReport.of("one.jsonl", [good()]))
    parsed = parse(page)
    assert not parsed.tag("section", id="agreement")
    assert "Krippendorff" not in page and "kappa" not in page
    assert not parsed.tag("div", id="notes")
    assert [a["id"] for a in parsed.tag("svg")] == ["reliability-1", "coverage-1"]


def test_unmeasured_values_show_a_dash() -> None:
    e = judged([None] * 40, "silent")
    page = render_judge_html(JudgeReport.of("x.jsonl", [e]))
    parsed = parse(page)
    row = row_of(parsed.tables["summary-table"], "silent")
    assert row[4:9] == [DASH] * 5  # as (A), as (B), position bias, Brier, ECE
    assert row[-1] == DASH and row[-2] == "0 of 40"
    assert "no probabilities" in page and "no item kept" in page
    assert reliability_plot(e).points == [] and coverage_plot(e).marks == []
    assert percent(None) == DASH and percent(0.125) == "12%" and percent(math.nan) == DASH


def test_write_is_atomic_and_returns_the_path(report: JudgeReport, tmp_path: Path) -> None:
    path = tmp_path / "judge.html"
    assert write_judge_html(report, path) == path
    assert path.read_text(encoding="utf-8") == render_judge_html(report)
    assert [p.name for p in tmp_path.iterdir()] == ["judge.html"]
