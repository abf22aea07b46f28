"""Render ``cai judge-eval``'s :class:`~engine.audit.report.JudgeReport` as one self-contained HTML page.

The page (``--html``) holds a summary table of every judge under every
protocol, then per evaluation a reliability diagram and an accuracy-coverage
curve side by side with accuracy per category and per principle, then, with
several judges, how they agree. It follows the evaluation report's rules
(:mod:`engine.evaluate.html`): one file, inline CSS and inline SVG, no script
and nothing fetched (the Content-Security-Policy, :data:`CSP`, forbids both),
and every value from the report (model names, file names, categories,
principles, notes, settings) escaped by the Jinja environment, never marked
safe. The charts' geometry is computed here (:func:`reliability_plot`,
:func:`coverage_plot`) and drawn by ``templates/judge_eval.html.j2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from markupsafe import Markup

from engine.audit.accuracy import PROTOCOLS, Group, JudgeEval
from engine.audit.agreement import Agreement
from engine.audit.calibration import CoveragePoint, wilson_interval
from engine.audit.report import JudgeReport
from engine.evaluate.charts import AXIS, GRID, Tick
from engine.evaluate.formatting import DASH, PALETTE, finite, short
from engine.evaluate.html import page_environment
from engine.rundir import atomic_write

__all__ = [
    "CSP",
    "CoveragePlot",
    "Frame",
    "ReliabilityPlot",
    "coverage_plot",
    "percent",
    "reliability_plot",
    "render_judge_html",
    "write_judge_html",
]

_TEMPLATES = files("engine.evaluate") / "templates"
_CSS = (_TEMPLATES / "report.css").read_text(encoding="utf-8") + (_TEMPLATES / "judge_eval.css").read_text(
    encoding="utf-8"
)

CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
"""The page's Content-Security-Policy: no fetches and no script at all (the page has none)."""

POINT = PALETTE[0]
"""The colour of the charts' points."""
USED = PALETTE[1]
"""The colour of the coverage point at the evaluation's own min margin."""


def percent(value: float | None) -> str:
    """A rate as the text report writes it, a percentage with no decimals (``85%``); a dash when not measured."""
    number = finite(value)
    return DASH if number is None else f"{100 * number:.0f}%"


_ENV = page_environment(
    percent=percent,  # whole percentages as in the text report
    px=lambda v: f"{v:.1f}",  # SVG coordinates
)


# ---------------------------------------------------------------- chart geometry


@dataclass(frozen=True)
class Frame:
    """The axes of one chart: both run over [0, 1], with ticks every 0.2 and a title above."""

    chart_id: str
    title: str
    alt: str
    """What the chart shows, in words (its SVG ``<title>``)."""
    x_title: str
    y_title: str
    width: int = 380
    height: int = 330
    left: int = 56
    top: int = 34
    plot_width: int = 300
    plot_height: int = 240

    def sx(self, v: float) -> float:
        """The x coordinate of a value on the horizontal axis (clamped to [0, 1])."""
        return self.left + min(max(v, 0.0), 1.0) * self.plot_width

    def sy(self, v: float) -> float:
        """The y coordinate of a value on the vertical axis (clamped to [0, 1]; up is larger)."""
        return self.top + (1.0 - min(max(v, 0.0), 1.0)) * self.plot_height

    @property
    def right(self) -> float:
        return self.left + self.plot_width

    @property
    def bottom(self) -> float:
        return self.top + self.plot_height

    @property
    def x_ticks(self) -> list[Tick]:
        return [Tick(f"{self.sx(t):.1f}", f"{self.bottom + 16:.1f}", f"{t:.1f}") for t in _TICKS]

    @property
    def y_ticks(self) -> list[Tick]:
        return [Tick(f"{self.sy(t):.1f}", f"{self.sy(t) + 4:.1f}", f"{t:.1f}") for t in _TICKS]

    @property
    def x_title_at(self) -> tuple[float, float]:
        return (self.left + self.plot_width / 2, self.bottom + 38)

    @property
    def y_title_at(self) -> tuple[float, float]:
        return (16.0, self.top + self.plot_height / 2)

    @property
    def title_at(self) -> tuple[float, float]:
        return (self.width / 2, 18.0)


_TICKS = tuple(i / 5 for i in range(6))


@dataclass(frozen=True)
class ReliabilityPoint:
    """One non-empty bin: at (mean predicted probability, observed frequency), its area growing with its count."""

    x: float
    y: float
    radius: float
    n: int
    tip: str


@dataclass(frozen=True)
class CountBar:
    """One non-empty bin's count, as a bar along the bottom of the diagram spanning the bin."""

    x: float
    y: float
    width: float
    height: float
    tip: str


@dataclass(frozen=True)
class ReliabilityPlot:
    """The reliability diagram of one evaluation: observed frequency against mean predicted probability."""

    frame: Frame
    diagonal: tuple[float, float, float, float]
    """The perfectly calibrated line, from (0, 0) to (1, 1): x1, y1, x2, y2."""
    points: list[ReliabilityPoint]
    bars: list[CountBar]
    empty: int
    """Bins with no probability in them (not drawn)."""


_MAX_RADIUS = 9.0
_MIN_RADIUS = 2.5
_HISTOGRAM = 0.18
"""The tallest count bar, as a share of the plot's height."""


def reliability_plot(e: JudgeEval, chart_id: str = "reliability") -> ReliabilityPlot:
    """Where each of an evaluation's reliability bins goes; empty bins are skipped.

    A bin's point sits at ``(frame.sx(mean_p), frame.sy(frequency))``; its
    area is proportional to the bin's count, and a grey bar along the bottom
    spanning the bin shows the same count.
    """
    frame = Frame(
        chart_id=chart_id,
        title="Reliability diagram",
        alt=(
            f"Reliability diagram of {e.name}: observed frequency against mean predicted probability per bin "
            "(both sides of each pair); points on the diagonal are perfectly calibrated"
        ),
        x_title="Mean predicted probability",
        y_title="Observed frequency",
    )
    full = [b for b in e.reliability if b.n and b.mean_p is not None and b.frequency is not None]
    most = max((b.n for b in full), default=1)
    points: list[ReliabilityPoint] = []
    bars: list[CountBar] = []
    for b in full:
        assert b.mean_p is not None and b.frequency is not None
        tip = (
            f"bin {b.low:.1f}\u2013{b.high:.1f}: n={b.n}, mean predicted {b.mean_p:.3f}, "
            f"observed {percent(b.frequency)}"
        )
        radius = max(_MIN_RADIUS, _MAX_RADIUS * math.sqrt(b.n / most))
        points.append(ReliabilityPoint(frame.sx(b.mean_p), frame.sy(b.frequency), radius, b.n, tip))
        height = _HISTOGRAM * frame.plot_height * b.n / most
        x0, x1 = frame.sx(b.low), frame.sx(b.high)
        bars.append(CountBar(x0 + 1, frame.bottom - height, max(x1 - x0 - 2, 1.0), height, tip))
    return ReliabilityPlot(
        frame=frame,
        diagonal=(frame.sx(0.0), frame.sy(0.0), frame.sx(1.0), frame.sy(1.0)),
        points=points,
        bars=bars,
        empty=len(e.reliability) - len(full),
    )


@dataclass(frozen=True)
class CoverageMark:
    """One threshold's point (thresholds keeping the same items share one) with its Wilson interval."""

    x: float
    y: float
    low_y: float
    high_y: float
    """Where the error bar ends: the interval's low and high accuracy."""
    label: str
    """The min margins this point stands for: ``≥0.2`` or ``≥0\u20130.05`` (an en dash)."""
    label_x: float
    label_y: float
    anchor: str
    used: bool
    """The evaluation's own min margin is among them."""
    tip: str

    @property
    def whisker(self) -> str:
        """The error bar, as an SVG path: the vertical stroke and its two caps."""
        x, lo, hi = self.x, self.low_y, self.high_y
        return f"M{x:.1f} {lo:.1f}V{hi:.1f}M{x - 4:.1f} {lo:.1f}H{x + 4:.1f}M{x - 4:.1f} {hi:.1f}H{x + 4:.1f}"


@dataclass(frozen=True)
class CoveragePlot:
    """Accuracy against coverage as the judge abstains on ever larger margins ``|2p - 1|``."""

    frame: Frame
    chance_y: float
    """Where the dashed 50% line is."""
    chance_label_at: tuple[float, float]
    marks: list[CoverageMark]
    line: str
    """The points joined in threshold order, as SVG polyline points (empty with fewer than two)."""
    unkept: list[float] = field(default_factory=list)
    """Thresholds at which no item was kept (not drawn)."""


def _margin_label(margins: Sequence[float]) -> str:
    low, high = margins[0], margins[-1]
    return f"\u2265{low:g}" if low == high else f"\u2265{low:g}\u2013{high:g}"


def coverage_plot(e: JudgeEval, chart_id: str = "coverage") -> CoveragePlot:
    """Where each point of an evaluation's accuracy-coverage curve goes.

    A threshold's point sits at ``(frame.sx(coverage), frame.sy(accuracy))``
    with an error bar from ``frame.sy(low)`` to ``frame.sy(high)``;
    thresholds that keep the same items are one point, labelled with their
    margins; thresholds that keep nothing are left out.
    """
    frame = Frame(
        chart_id=chart_id,
        title="Accuracy vs coverage",
        alt=(
            f"Accuracy against coverage of {e.name}: each point keeps only items with margin |2p-1| at least "
            "the labelled threshold; error bars are 95% Wilson intervals; the dashed line is chance (50%)"
        ),
        x_title="Coverage (share of items kept)",
        y_title="Accuracy of kept items",
    )
    kept = [p for p in e.coverage if p.kept and p.accuracy is not None]
    merged: list[list[CoveragePoint]] = []
    for point in kept:
        if merged and merged[-1][0].kept == point.kept:
            merged[-1].append(point)
        else:
            merged.append([point])
    marks: list[CoverageMark] = []
    for i, same in enumerate(merged):
        first = same[0]
        assert first.accuracy is not None
        margins = [p.min_margin for p in same]
        x, y = frame.sx(first.coverage), frame.sy(first.accuracy)
        low_y, high_y = frame.sy(first.low), frame.sy(first.high)
        anchor, label_x = ("end", x - 7) if x > frame.left + 0.8 * frame.plot_width else ("start", x + 7)
        # alternate above and below the point so the labels of neighbouring thresholds do not collide,
        # keeping them inside the plot
        above, below = y - 7, y + 15
        label_y = above if i % 2 == 0 else below
        if label_y < frame.top + 12:
            label_y = below
        elif label_y > frame.bottom - 4:
            label_y = above
        used = any(math.isclose(m, e.min_margin, abs_tol=1e-9) for m in margins)
        tip = (
            f"min margin {_margin_label(margins)}: kept {first.kept} of {e.n} ({percent(first.coverage)}), "
            f"accuracy {percent(first.accuracy)}, 95% interval {percent(first.low)}\u2013{percent(first.high)}"
            + (" (the min margin this judge used)" if used else "")
        )
        marks.append(CoverageMark(x, y, low_y, high_y, _margin_label(margins), label_x, label_y, anchor, used, tip))
    chance_y = frame.sy(0.5)
    return CoveragePlot(
        frame=frame,
        chance_y=chance_y,
        chance_label_at=(frame.left + 5, chance_y + 14),
        marks=marks,
        line=" ".join(f"{m.x:.1f},{m.y:.1f}" for m in marks) if len(marks) > 1 else "",
        unkept=[p.min_margin for p in e.coverage if not p.kept],
    )


# ---------------------------------------------------------------- the page


@dataclass(frozen=True)
class _Evaluation:
    """One evaluation with what its section draws."""

    e: JudgeEval
    anchor: str
    reliability: ReliabilityPlot
    coverage: CoveragePlot
    categories: list[tuple[str, Group]]
    principles: list[tuple[str, Group]]


@dataclass(frozen=True)
class _Agreement:
    """One protocol's agreement with its rates worked out."""

    protocol: str
    agreement: Agreement
    mean_accuracy: float
    mean_low: float
    mean_high: float
    majority_accuracy: float


def _by_size(groups: dict[str, Group]) -> list[tuple[str, Group]]:
    return sorted(groups.items(), key=lambda item: (-item[1].n, item[0]))


def _evaluation(e: JudgeEval, i: int) -> _Evaluation:
    return _Evaluation(
        e=e,
        anchor=f"evaluation-{i}",
        reliability=reliability_plot(e, f"reliability-{i}"),
        coverage=coverage_plot(e, f"coverage-{i}"),
        categories=_by_size(e.by_category),
        principles=_by_size(e.by_principle),
    )


def _agreement(protocol: str, a: Agreement) -> _Agreement:
    low, high = wilson_interval(a.mean_correct, a.n)
    return _Agreement(
        protocol=protocol,
        agreement=a,
        mean_accuracy=a.mean_correct / a.n if a.n else 0.0,
        mean_low=low,
        mean_high=high,
        majority_accuracy=a.majority_correct / a.n if a.n else 0.0,
    )


def _page(report: JudgeReport) -> dict[str, Any]:
    """What the template needs besides the report: chart geometry, rows in display order."""
    used = {e.protocol for e in report.evaluations}
    return {
        "report": report,
        "dash": DASH,
        "csp": CSP,
        "css": Markup(_CSS),  # the package's own style sheets, not report data
        "grid": GRID,
        "axis": AXIS,
        "point": POINT,
        "used_colour": USED,
        "protocols": [(p, d) for p, d in PROTOCOLS.items() if p in used],
        "evaluations": [_evaluation(e, i) for i, e in enumerate(report.evaluations, start=1)],
        "agreements": [_agreement(p, a) for p, a in report.agreements.items()],
        "short": short,
    }


def render_judge_html(report: JudgeReport) -> str:
    """Render a judge evaluation as one self-contained HTML page.

    The page holds the file, protocols and notes; a summary row per judge and
    protocol (accuracy with its 95% interval and an at-chance flag, accuracy
    per order, position bias, Brier, ECE, what the min margin keeps); per
    evaluation a reliability diagram, an accuracy-coverage curve and accuracy
    per category and principle; and, with several judges, their agreement.
    It references no external resource and runs no script, and every string
    taken from the report is HTML-escaped.

    Args:
        report: The judge evaluation.

    Returns:
        The HTML document as text.
    """
    return _ENV.get_template("judge_eval.html.j2").render(_page(report))


def write_judge_html(report: JudgeReport, path: Path) -> Path:
    """Write the page of :func:`render_judge_html` to ``path`` atomically.

    Args:
        report: The judge evaluation.
        path: The file to write (its folder must exist).

    Returns:
        The path written.
    """
    atomic_write(path, render_judge_html(report))
    return path
