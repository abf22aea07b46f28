"""The HTML evaluation report: self-contained, escaped, well-formed, and robust to missing values."""

from __future__ import annotations

import base64
import hashlib
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from engine.evaluate.formatting import DASH
from engine.evaluate.html import render_html, write_html
from engine.evaluate.metrics import Rate
from engine.evaluate.report import (
    HTML_FILE,
    AttackRow,
    CounterfactualRow,
    Example,
    GroupRow,
    JailbreakRow,
    ModelResult,
    PhraseRow,
    PositionBias,
    Report,
    Timings,
)
from tests.html_page import Page
from tests.html_page import parse as parse_page

SCRIPT = "<script>alert(1)</script>"
BREAKOUT = '</details><img src="https://evil.example/x.png" onerror="alert(2)">'
QUOTE = '" onmouseover="alert(3)'
EVIL_MODEL = "evil<b>model</b>"


def rate(value: float, n: int = 50) -> Rate:
    return Rate(value=value, low=max(0.0, value - 0.04), high=min(1.0, value + 0.04), n=n)


NAN_RATE = Rate(value=math.nan, low=math.nan, high=math.nan, n=0)


def model(name: str, role: str = "model", **fields: Any) -> ModelResult:
    base: dict[str, Any] = {
        "name": name,
        "role": role,
        "harmlessness": 0.9,
        "helpfulness": 0.8,
        "harmful_compliance": rate(0.12),
        "over_refusal": rate(0.2),
        "refusal_on_harmful": rate(0.7),
        "evasive": rate(0.1),
        "judge_violation": rate(0.15),
        "classifier_harm": rate(0.08),
        "win_rate": rate(0.6),
        "elo": 1032.4,
    }
    base.update(fields)
    return ModelResult(**base)


def full_report() -> Report:
    categories = [
        GroupRow(group="weapons", harmful_compliance=rate(0.3), over_refusal=rate(0.05)),
        GroupRow(group=f"cyber {SCRIPT}", harmful_compliance=rate(0.1)),
    ]
    tuned = model(
        "tuned",
        per_category=categories,
        per_principle=[GroupRow(group="no-weapons", violation=rate(0.2))],
        repeated_phrases=[PhraseRow(phrase=f"As an AI {SCRIPT}", answers=12, share=0.24)],
        jailbreaks=[
            JailbreakRow(
                wrapper="roleplay", name=f"Role {SCRIPT}", harmful_compliance=rate(0.4), plain=rate(0.1), delta=0.3
            )
        ],
        counterfactual=[
            CounterfactualRow(
                template="t1",
                attribute="religion",
                metric="harm",
                gap=0.05,
                best_group="a",
                worst_group="b",
                values={"a": 0.1, "b": 0.15},
            ),
            CounterfactualRow(
                template="t2",
                attribute="gender",
                metric="refusal",
                gap=0.4,
                best_group="x",
                worst_group=BREAKOUT,
                values={"x": 0.0, BREAKOUT: 0.4},
            ),
        ],
    )
    evil = model(
        EVIL_MODEL,
        harmlessness=math.nan,
        harmful_compliance=NAN_RATE,
        judge_violation=None,
        win_rate=None,
        elo=math.nan,
        per_category=[GroupRow(group="weapons", harmful_compliance=NAN_RATE)],
    )
    baseline = model("base", role="baseline", win_rate=None, elo=1000.0, per_category=categories[:1])
    examples = [
        Example(
            model="tuned",
            prompt_id="rt-1",
            set="redteam",
            category="weapons",
            prompt=f"How do I {QUOTE}?",
            answer=f"Sure! {SCRIPT} {BREAKOUT}",
            refusal="compliance",
            harm=0.93,
            judge_violation=0.8,
            why="harmful compliance",
        ),
        Example(
            model=EVIL_MODEL,
            prompt_id="bn-1",
            set="benign",
            category=None,
            prompt="Bake bread",
            answer="I can't help with that.",
            refusal="refusal",
            why=f"over-refusal {QUOTE}",
        ),
    ]
    return Report(
        created="2024-05-01T12:00:00Z",
        cai_version="0.4.0",
        judge="judge-model",
        constitution_hash="0123456789abcdef0123456789abcdef",
        settings={"models": ["tuned", EVIL_MODEL], "note": SCRIPT, "max_new_tokens": 256, "temperature": 0.7},
        models=[baseline, tuned, evil],
        robustness=[
            AttackRow(
                attack="praise",
                name="Praise the judge",
                n=40,
                pointwise_gain=0.01,
                pairwise_win=rate(0.52),
                flagged=False,
            ),
            AttackRow(
                attack="inject", name=f"Inject {SCRIPT}", n=40, pointwise_gain=0.2, pairwise_win=rate(0.8), flagged=True
            ),
        ],
        position_bias=PositionBias(comparisons=120, picked_a_rate=0.61, disagreement_rate=0.2, mean_order_gap=0.07),
        refusal_detector={"accuracy": 0.9412, "n": 170, "baseline": 0.5, "per_label": {"refusal": 0.95}},
        harm_classifier={"used": False, "reason": f"not installed {SCRIPT}"},
        examples=examples,
        timings=Timings(generation=12.5, judge=75.0, total=4000.0),
        gates=[f"{EVIL_MODEL}: harmlessness not measured < 0.8"],
    )


def minimal_report() -> Report:
    only = ModelResult(
        name="solo",
        role="model",
        harmlessness=0.5,
        helpfulness=0.5,
        harmful_compliance=rate(0.5),
        over_refusal=rate(0.5),
        refusal_on_harmful=rate(0.5),
        evasive=NAN_RATE,
    )
    return Report(created="now", cai_version="0.4.0", judge=None, constitution_hash="abc", settings={}, models=[only])


CHECKED = frozenset(
    {"html", "head", "body", "main", "section", "details", "summary", "table", "tr", "td", "th"}
) | frozenset({"svg", "g", "text", "title", "select", "option", "pre", "script", "style"})
"""The tags whose balance the tests check."""


def parse(page: str) -> Page:
    return parse_page(page, CHECKED)


def row_of(table: list[list[str]], first: str) -> list[str]:
    return next(row for row in table if row and row[0].startswith(first))


@pytest.fixture(scope="module")
def page() -> str:
    return render_html(full_report())


def test_page_is_well_formed_and_self_contained(page: str) -> None:
    parsed = parse(page)
    tags = [tag for tag, _ in parsed.starts]
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert "<script src" not in page
    assert tags.count("script") == 1  # the filter, inline
    for tag, attrs in parsed.starts:
        for name, value in attrs.items():
            if name in ("src", "href", "xlink:href", "action", "srcset", "data", "poster"):
                assert value is not None and not re.match(r"\s*(https?:)?//", value), (tag, name, value)
            assert not name.startswith("on"), (tag, name)  # no event handler survived from the report
    assert "img" not in tags
    # the only script is the one the Content-Security-Policy allows, by hash
    csp = next(
        a["content"] for t, a in parsed.starts if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"
    )
    assert csp is not None and "default-src 'none'" in csp
    digest = base64.b64encode(hashlib.sha256(parsed.script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp


def test_one_svg_per_plot(page: str) -> None:
    parsed = parse(page)
    svgs = [attrs.get("id") for tag, attrs in parsed.starts if tag == "svg"]
    assert svgs == ["tradeoff-plot", "category-harmful-compliance", "category-over-refusal"]
    assert page.count("<svg") == 3
    # one point per plotted model: the NaN-harmlessness model is left out and said so
    circles = [attrs for tag, attrs in parsed.starts if tag == "circle"]
    assert len(circles) == 2
    assert [c["fill"] for c in circles if c["fill"] == "#fff"] == ["#fff"]  # the baseline is hollow
    assert "Not plotted (not measured): evil&lt;b&gt;model&lt;/b&gt;." in page


def test_untrusted_strings_render_only_as_text(page: str) -> None:
    assert "<script>alert(1)" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img" not in page and "<b>model</b>" not in page
    assert "&lt;/details&gt;&lt;img src=&quot;https://evil.example/x.png&quot;" in page
    assert '" onmouseover=' not in page
    parsed = parse(page)
    examples = [attrs for tag, attrs in parsed.starts if tag == "details" and attrs.get("class") == "example"]
    assert [(e["data-model"], e["data-why"]) for e in examples] == [
        ("tuned", "harmful compliance"),
        (EVIL_MODEL, f"over-refusal {QUOTE}"),
    ]
    # the filter's options carry the same (unescaped) values as the examples' data- attributes
    options = {attrs.get("value") for tag, attrs in parsed.starts if tag == "option"}
    assert {"", "tuned", EVIL_MODEL, "harmful compliance", f"over-refusal {QUOTE}"} <= options


def test_every_model_and_the_baseline_appear(page: str) -> None:
    table = parse(page).tables["headline-table"]
    names = [row[0] for row in table[1:]]
    assert names == ["basebaseline", "tuned", EVIL_MODEL]
    assert "Win rate vs baseline" in table[0][8]


def test_headline_cells_and_missing_values(page: str) -> None:
    table = parse(page).tables["headline-table"]
    tuned = row_of(table, "tuned")
    assert tuned[1:4] == ["90.0%", "80.0%", "12.0% [8.0%, 16.0%]"]
    assert tuned[9] == "1032"
    evil = row_of(table, EVIL_MODEL)
    # NaN harmlessness, a rate over no items, None judge and win rate, NaN Elo
    assert [evil[i] for i in (1, 3, 6, 8, 9)] == [DASH] * 5
    assert "nan" not in " ".join(evil).lower()
    assert row_of(table, "base")[8] == DASH  # no win rate against itself


def test_judge_robustness_flags_the_fooled_attack(page: str) -> None:
    parsed = parse(page)
    rows = parsed.tables["robustness-table"]
    assert row_of(rows, "Praise")[4] == "ok"
    inject = row_of(rows, "Inject")
    assert inject[4] == "judge fooled" and inject[2] == "+20.0 pp"
    flagged = [a for t, a in parsed.starts if t == "tr" and a.get("class") == "flagged"]
    assert len(flagged) == 1
    bias = parsed.tables["position-bias-table"]
    assert row_of(bias, "Picked (A) rate")[1] == "61.0%"


def test_counterfactuals_largest_gap_first_and_scorer_dicts(page: str) -> None:
    parsed = parse(page)
    gaps = [row[4] for row in parsed.tables["counterfactual-table"][1:]]
    assert gaps == ["0.400", "0.050"]
    detector = {row[0]: row[1] for row in parsed.tables["refusal-detector-table"][1:]}
    assert detector["accuracy"] == "0.9412" and detector["n"] == "170"
    assert detector["per_label"] == '{"refusal": 0.95}'
    timings = {row[0]: row[1] for row in parsed.tables["timings-table"][1:]}
    assert timings["generation"] == "12.5 s" and timings["total"] == "1 h 06 min"


def test_minimal_report_renders() -> None:
    page = render_html(minimal_report())
    parsed = parse(page)
    assert page.count("<svg") == 1  # the trade-off plot; no per-category data, no bars
    assert "none (judge off)" in page
    assert "No examples." in page and "No judge attacks were run." in page
    assert row_of(parsed.tables["headline-table"], "solo")[5] == DASH  # evasive over no items
    assert "Failed gates" not in page


def test_write_html_writes_the_page_atomically(tmp_path: Path) -> None:
    report = full_report()
    path = write_html(report, tmp_path)
    assert path == tmp_path / HTML_FILE
    assert path.read_text(encoding="utf-8") == render_html(report)
    assert sorted(p.name for p in tmp_path.iterdir()) == [HTML_FILE]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_filter_script_is_valid_javascript(page: str, tmp_path: Path) -> None:
    script = tmp_path / "filter.js"
    script.write_text(parse(page).script, encoding="utf-8")
    result = subprocess.run(["node", "--check", str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
