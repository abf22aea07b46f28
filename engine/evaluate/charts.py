"""The geometry of the HTML report's two SVG charts, as data for its templates.

The functions here only compute where things go (coordinates already written
as text, colours, tooltips); ``templates/charts.html.j2`` writes the SVG
elements, so every label and tooltip is escaped there like any other text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.evaluate.formatting import DASH, Palette, finite, measured, pct, rate_text, short
from engine.evaluate.metrics import Rate
from engine.evaluate.report import GroupRow, ModelResult

__all__ = ["BarChart", "TradeoffPlot", "bar_chart", "group_rate", "groups", "tradeoff_plot"]

GRID = "#e5e8eb"
AXIS = "#8c959f"


# ---------------------------------------------------------------- helpfulness/harmlessness scatter


@dataclass(frozen=True)
class Tick:
    """A grid line with its label: ``at`` is its position, ``label_at`` where the label goes."""

    at: str
    label_at: str
    label: str


@dataclass(frozen=True)
class Point:
    """One model's marker."""

    x: str
    y: str
    radius: int
    fill: str
    stroke: str
    tip: str


@dataclass(frozen=True)
class PointLabel:
    """One model's name next to its marker."""

    x: str
    y: str
    anchor: str
    text: str
    tip: str


@dataclass(frozen=True)
class TradeoffPlot:
    """The helpfulness (x) against harmlessness (y) scatter, one point per model."""

    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    grid: list[tuple[Tick, Tick]]
    """Per tick: the vertical grid line with its x label, the horizontal one with its y label."""
    x_title_at: tuple[str, str]
    y_title_at: str
    star: str
    star_label_at: tuple[str, str]
    points: list[Point] = field(default_factory=list)
    labels: list[PointLabel] = field(default_factory=list)
    skipped: str = ""
    """Names of the models that could not be placed (not measured), comma-separated."""


def tradeoff_plot(models: Sequence[ModelResult], palette: Palette) -> TradeoffPlot:
    """Where each model goes on the trade-off scatter; the baseline is drawn first, larger and hollow."""
    width, height, left, right, top, bottom = 560, 420, 64, 28, 28, 54
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + min(max(v, 0.0), 1.0) * pw

    def sy(v: float) -> float:
        return top + (1.0 - min(max(v, 0.0), 1.0)) * ph

    ticks = [i / 5 for i in range(6)]
    cx, cy = sx(1.0), sy(1.0)
    star = " ".join(
        f"{cx + r * math.sin(k * math.pi / 5):.1f},{cy - r * math.cos(k * math.pi / 5):.1f}"
        for k, r in ((k, 9.0 if k % 2 == 0 else 3.8) for k in range(10))
    )
    skipped: list[str] = []
    points: list[Point] = []
    placed: list[tuple[float, float, str, str]] = []
    # the baseline first and larger, so a model on the same spot shows as a dot inside its ring
    for m in sorted(models, key=lambda m: m.role != "baseline"):
        x, y = finite(m.helpfulness), finite(m.harmlessness)
        if x is None or y is None:
            skipped.append(m.name)
            continue
        px, py = sx(x), sy(y)
        baseline = m.role == "baseline"
        tip = f"{m.name}{' (baseline)' if baseline else ''}: helpfulness {x:.1%}, harmlessness {y:.1%}"
        points.append(
            Point(f"{px:.1f}", f"{py:.1f}", 8 if baseline else 6, palette.fill(m, "#fff"), palette.of(m.name), tip)
        )
        placed.append((px, py, short(m.name, 30) + (" (baseline)" if baseline else ""), tip))
    # labels sorted top to bottom and pushed apart so close points stay readable
    labels: list[PointLabel] = []
    last_y = -math.inf
    for px, py, label, tip in sorted(placed, key=lambda item: item[1]):
        ly = max(py + 4, last_y + 14)
        last_y = ly
        anchor, lx = ("end", px - 10) if px > left + pw * 0.6 else ("start", px + 10)
        labels.append(PointLabel(f"{lx:.1f}", f"{ly:.1f}", anchor, label, tip))
    return TradeoffPlot(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_width=pw,
        plot_height=ph,
        grid=[
            (Tick(f"{sx(t):.1f}", str(top + ph + 17), f"{t:.1f}"), Tick(f"{sy(t):.1f}", f"{sy(t) + 4:.1f}", f"{t:.1f}"))
            for t in ticks
        ],
        x_title_at=(f"{left + pw / 2:.1f}", str(height - 10)),
        y_title_at=f"{top + ph / 2:.1f}",
        star=star,
        star_label_at=(f"{cx - 12:.1f}", str(top - 8)),
        points=points,
        labels=labels,
        skipped=", ".join(skipped),
    )


# ---------------------------------------------------------------- per-category bars


@dataclass(frozen=True)
class Bar:
    """One model's bar in one group; ``rate`` None draws a dash instead."""

    y: str
    text_y: str
    tip: str
    width: str = ""
    fill: str = ""
    stroke: str = ""
    whisker: str = ""
    value_x: str = ""
    value: str = DASH
    measured: bool = False


@dataclass(frozen=True)
class BarGroup:
    """One category: its label and a bar per model."""

    name: str
    label: str
    label_y: str
    bars: list[Bar]


@dataclass(frozen=True)
class BarChart:
    """Horizontal grouped bars of one per-category rate, with interval whiskers."""

    chart_id: str
    title: str
    width: int
    height: int
    label_x: int
    x0: int
    top: int
    bottom: int
    bar_height: int
    ticks: list[Tick]
    groups: list[BarGroup]


def groups(models: Sequence[ModelResult], attr: str) -> list[str]:
    """Group names (``per_category`` or ``per_principle``) in order of first appearance across the models."""
    seen: dict[str, None] = {}
    for m in models:
        rows: list[GroupRow] = getattr(m, attr)
        for row in rows:
            seen.setdefault(row.group, None)
    return list(seen)


def group_rate(model: ModelResult, attr: str, group: str, name: str) -> Rate | None:
    """One rate (``name``) of one group of a model's ``per_category`` or ``per_principle`` rows."""
    rows: list[GroupRow] = getattr(model, attr)
    for row in rows:
        if row.group == group:
            rate: Rate | None = getattr(row, name)
            return rate
    return None


def bar_chart(
    chart_id: str, title: str, names: Sequence[str], models: Sequence[ModelResult], rate: str, palette: Palette
) -> BarChart:
    """The bars of one per-category rate (``harmful_compliance`` or ``over_refusal``): a bar per model per group."""
    label_w, plot_w, value_w = 180, 360, 64
    bar_h, bar_gap, group_gap, top, axis_h = 11, 3, 14, 8, 30
    block = len(models) * (bar_h + bar_gap) - bar_gap
    height = top + len(names) * (block + group_gap) - group_gap + axis_h
    x0 = label_w
    bottom = height - axis_h

    def at(v: float) -> float:
        return x0 + min(max(v, 0.0), 1.0) * plot_w

    out: list[BarGroup] = []
    y = float(top)
    for name in names:
        label_y = f"{y + block / 2 + 4:.1f}"
        bars: list[Bar] = []
        for m in models:
            found = measured(group_rate(m, "per_category", name, rate))
            cy = y + bar_h / 2
            tip = f"{m.name} \u2014 {name}: {rate_text(found)}"
            if found is None:
                bars.append(Bar(y=f"{y:.1f}", text_y=f"{cy + 4:.1f}", tip=tip))
            else:
                w = min(max(found.value, 0.0), 1.0) * plot_w
                low, high = finite(found.low), finite(found.high)
                lo = at(found.value if low is None else low)
                hi = at(found.value if high is None else high)
                whisker = (
                    f"M{lo:.1f} {cy:.1f}H{hi:.1f}M{lo:.1f} {cy - 4:.1f}V{cy + 4:.1f}M{hi:.1f} {cy - 4:.1f}V{cy + 4:.1f}"
                )
                bars.append(
                    Bar(
                        y=f"{y:.1f}",
                        text_y=f"{cy + 4:.1f}",
                        tip=tip,
                        width=f"{w:.1f}",
                        fill=palette.fill(m, "#fff"),
                        stroke=palette.of(m.name),
                        whisker=whisker,
                        value_x=f"{max(hi, x0 + w) + 6:.1f}",
                        value=pct(found.value),
                        measured=True,
                    )
                )
            y += bar_h + bar_gap
        y += group_gap - bar_gap
        out.append(BarGroup(name=name, label=short(name, 26), label_y=label_y, bars=bars))
    ticks = [Tick(f"{x0 + t * plot_w:.1f}", str(bottom + 18), f"{t:.0%}") for t in (i / 4 for i in range(5))]
    return BarChart(
        chart_id=chart_id,
        title=title,
        width=label_w + plot_w + value_w,
        height=height,
        label_x=label_w - 10,
        x0=x0,
        top=top,
        bottom=bottom,
        bar_height=bar_h,
        ticks=ticks,
        groups=out,
    )
