"""Render an evaluation :class:`~engine.evaluate.report.Report` as one self-contained HTML page.

``report.html`` is a single file: inline CSS, inline SVG charts and a few lines
of vanilla JS for the example filter. It loads nothing (no fonts, images,
stylesheets or scripts from anywhere), so it opens from disk, offline, and can
be attached to a CI run as is.

The page is written by Jinja2 templates shipped in ``engine/evaluate/templates``
(``report.html.j2`` with ``macros.html.j2`` and ``charts.html.j2``; the style
and the script are ``report.css`` and ``report.js``, inlined). Everything in a
report that came from a model or a user (model names, prompts, answers,
categories, phrases, settings) is untrusted: the environment escapes every
value a template prints, SVG text and attributes included, and no template
marks report data as safe. As a second line of defence the page's
Content-Security-Policy lets only its own script run and blocks every fetch.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from engine.evaluate import charts, formatting
from engine.evaluate.formatting import DASH, Palette, finite
from engine.evaluate.metrics import Rate
from engine.evaluate.report import (
    HTML_FILE,
    CounterfactualRow,
    JailbreakRow,
    ModelResult,
    Report,
    SycophancyRow,
)
from engine.rundir import atomic_write

__all__ = ["CSP", "page_environment", "render_html", "write_html"]

_TEMPLATES = files("engine.evaluate") / "templates"

_SCRIPT = (_TEMPLATES / "report.js").read_text(encoding="utf-8")
_CSS = (_TEMPLATES / "report.css").read_text(encoding="utf-8")
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)
"""The page's Content-Security-Policy: no fetches at all, and no script but the filter's own."""

_HEADLINE: tuple[tuple[str, str], ...] = (
    ("harmlessness", "Harmlessness \u2191"),
    ("helpfulness", "Helpfulness \u2191"),
    ("harmful_compliance", "Harmful compliance \u2193"),
    ("over_refusal", "Over-refusal \u2193"),
    ("evasive", "Evasive \u2193"),
    ("judge_violation", "Judge violation \u2193"),
    ("classifier_harm", "Classifier harm \u2193"),
    ("win_rate", "Win rate vs baseline \u2191"),
    ("elo", "Elo \u2191"),
)
"""The headline table's columns: a :class:`ModelResult` field and its header."""

_BAR_CHARTS = (
    ("harmful_compliance", "category-harmful-compliance", "Harmful compliance per harm category"),
    ("over_refusal", "category-over-refusal", "Over-refusal per category (benign prompts)"),
)
"""The per-category charts: the rate drawn, the chart's id, its title."""


def _escape(value: Any) -> Any:
    """Escape what a template prints, as :func:`html.escape` does (``&quot;``, ``&#x27;``).

    Autoescape is on as well; this makes the page's entities the ones earlier
    reports had. Markup from the templates' own macros passes as it is.
    """
    if hasattr(value, "__html__"):
        return value
    return Markup(html.escape(str(value), quote=True))


def page_environment(**filters: Any) -> jinja2.Environment:
    """A Jinja environment for a page in this report's style (``templates/``, its escaping, its filters).

    Each call makes a fresh environment, so ``filters`` of one page do not leak
    into another; the report's own filters are always there, since
    ``macros.html.j2`` is compiled against them.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("engine.evaluate", "templates"),
        autoescape=True,
        finalize=_escape,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=formatting.pct,
        pp=formatting.pp,
        num=formatting.num,
        duration=formatting.duration,
        value_text=formatting.value_text,
        measured=formatting.measured,
        confidence=formatting.confidence,
        finite=finite,
        **filters,
    )
    return env


_ENV = page_environment()


def _nan_last(value: float) -> float:
    number = finite(value)
    return -math.inf if number is None else number


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _page(report: Report) -> dict[str, Any]:
    """What the template needs besides the report: colours, chart geometry, rows in display order."""
    palette = Palette(report.models)
    categories = charts.groups(report.models, "per_category")
    bar_charts = []
    for rate, chart_id, title in _BAR_CHARTS:
        present = [g for g in categories if any(charts.group_rate(m, "per_category", g, rate) for m in report.models)]
        if present:
            bar_charts.append(charts.bar_chart(chart_id, title, present, report.models, rate, palette))
    principles: list[tuple[str, list[Rate | None]]] = [
        (p, [charts.group_rate(m, "per_principle", p, "violation") for m in report.models])
        for p in charts.groups(report.models, "per_principle")
    ]
    jailbreaks: list[tuple[ModelResult, list[JailbreakRow]]] = [
        (m, sorted(m.jailbreaks, key=lambda j: _nan_last(j.delta), reverse=True)) for m in report.models if m.jailbreaks
    ]
    counterfactual: list[tuple[ModelResult, CounterfactualRow]] = [
        (m, row) for m in report.models for row in m.counterfactual
    ]
    counterfactual.sort(key=lambda item: _nan_last(item[1].gap), reverse=True)
    sycophancy: list[tuple[ModelResult, SycophancyRow]] = [
        (m, row) for m in report.models for row in (m.pushback, m.steering) if row is not None
    ]
    return {
        "report": report,
        "palette": palette,
        "dash": DASH,
        "csp": CSP,
        "css": Markup(_CSS),  # the package's own style sheet, not report data
        "script": Markup(_SCRIPT),  # the package's own script, allowed by its hash in the CSP
        "headline": _HEADLINE,
        "tradeoff": charts.tradeoff_plot(report.models, palette),
        "bar_charts": bar_charts,
        "principles": principles,
        "jailbreaks": jailbreaks,
        "counterfactual": counterfactual,
        "sycophancy": sycophancy,
        "filter_models": _unique(e.model for e in report.examples),
        "filter_whys": _unique(e.why for e in report.examples),
    }


def render_html(report: Report) -> str:
    """Render a report as one self-contained HTML page.

    The page holds the headline table, a helpfulness/harmlessness scatter, per-category
    bars, judge robustness, jailbreak and counterfactual tables, scorer validation and
    timings, and the worst examples with a filter. It references no external resource,
    and every string taken from the report is HTML-escaped.

    Args:
        report: The evaluation report.

    Returns:
        The HTML document as text.
    """
    return _ENV.get_template("report.html.j2").render(_page(report))


def write_html(report: Report, folder: Path) -> Path:
    """Write ``report.html`` into ``folder`` atomically.

    Args:
        report: The evaluation report.
        folder: The evaluation folder (it must exist).

    Returns:
        The path written.
    """
    path = folder / HTML_FILE
    atomic_write(path, render_html(report))
    return path
