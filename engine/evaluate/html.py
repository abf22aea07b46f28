"""Render an evaluation :class:`~engine.evaluate.report.Report` as one self-contained HTML page.

``report.html`` is a single file: inline CSS, hand-drawn inline SVG charts and a few
lines of vanilla JS for the example filter. It loads nothing (no fonts, images,
stylesheets or scripts from anywhere), so it opens from disk, offline, and can be
attached to a CI run as is.

Everything in a report that came from a model or a user (model names, prompts,
answers, categories, phrases, settings) is untrusted and is HTML-escaped wherever it
lands, SVG text and attributes included. As a second line of defence the page's
Content-Security-Policy lets only its own script run and blocks every fetch.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.evaluate.report import (
    HTML_FILE,
    Example,
    GroupRow,
    ModelResult,
    RateOut,
    Report,
)
from engine.rundir import atomic_write

__all__ = ["render_html", "write_html"]

DASH = "\u2013"
"""What a value that was not measured (None, NaN, a rate over no items) renders as."""

# Okabe-Ito: distinguishable under the common colour-vision deficiencies. Yellow last (weak on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")

_SCRIPT = """
(function () {
  var model = document.getElementById("filter-model"), why = document.getElementById("filter-why");
  var count = document.getElementById("filter-count");
  if (!model || !why) return;
  var items = document.querySelectorAll("details.example");
  function apply() {
    var shown = 0;
    for (var i = 0; i < items.length; i++) {
      var d = items[i];
      var ok = (model.value === "" || d.getAttribute("data-model") === model.value) &&
        (why.value === "" || d.getAttribute("data-why") === why.value);
      d.hidden = !ok;
      if (ok) shown++;
    }
    count.textContent = shown + " of " + items.length + " shown";
  }
  model.addEventListener("change", apply);
  why.addEventListener("change", apply);
  apply();
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode("utf-8")).digest()).decode("ascii")
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)
"""The page's Content-Security-Policy: no fetches at all, and no script but the filter's own."""

_CSS = """
:root{--fg:#1b1f24;--muted:#57606a;--border:#d0d7de;--zebra:#f6f8fa;--head:#eef1f4;--bad:#b42318;--bad-bg:#fef3f2}
*{box-sizing:border-box}
body{margin:0;color:var(--fg);background:#fff;
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:24px 20px 64px}
h1{font-size:1.7em;margin:0 0 .2em}
h2{font-size:1.3em;margin:2em 0 .5em;padding-bottom:.2em;border-bottom:1px solid var(--border)}
h3{font-size:1.05em;margin:1.4em 0 .4em}
h4{font-size:.9em;margin:.6em 0 .2em;color:var(--muted)}
nav{font-size:.9em;margin:.6em 0}nav a{margin-right:1em;color:#0969da}
.meta{color:var(--muted);display:flex;flex-wrap:wrap;gap:.2em 1.6em;margin:0;padding:0;list-style:none}
.meta b{color:var(--fg);font-weight:600}
.gates{border:1px solid var(--bad);background:var(--bad-bg);color:var(--bad);border-radius:6px;
padding:8px 16px;margin:16px 0}
.gates ul{margin:.3em 0;padding-left:1.2em}
.scroll{overflow-x:auto}
table{border-collapse:collapse;margin:.5em 0;font-size:.92em}
th,td{padding:5px 10px;text-align:left;border-bottom:1px solid var(--border);vertical-align:top}
th{background:var(--head);font-weight:600}
tbody tr:nth-child(even){background:var(--zebra)}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
th.num{white-space:normal}
small.ci{color:var(--muted)}
#headline-table small.ci{display:block}
#headline-table th,#headline-table td{padding:5px 7px}
#headline-table td:first-child{min-width:11em}
.badge{display:inline-block;padding:0 .55em;border-radius:999px;font-size:.78em;font-weight:600;
background:var(--head);color:var(--muted);margin-left:.4em;white-space:nowrap}
.badge.bad{background:var(--bad);color:#fff}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.4em;vertical-align:-.05em;
border:2px solid}
.note{color:var(--muted);font-size:.88em;max-width:60em}
.legend{display:flex;flex-wrap:wrap;gap:.2em 1.4em;font-size:.9em;margin:.4em 0}
svg.chart{display:block;max-width:100%;height:auto;font-size:12px;font-family:inherit;margin:.5em 0}
svg.chart text{fill:var(--fg)}
.worse{color:var(--bad);font-weight:600}
code{font:.88em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.filters{display:flex;flex-wrap:wrap;gap:.5em 1.2em;align-items:center;margin:.6em 0}
details.example{border:1px solid var(--border);border-radius:6px;margin:6px 0}
details.example>summary{cursor:pointer;padding:6px 10px}
details.example[open]>summary{border-bottom:1px solid var(--border);background:var(--zebra)}
.ex-body{padding:6px 12px 4px}
pre.wrap{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--zebra);border:1px solid var(--border);
border-radius:4px;padding:8px 10px;margin:.2em 0 .8em;max-height:30em;overflow:auto;
font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
"""


class _Html(str):
    """Markup assembled here from escaped parts; a plain ``str`` put into a table cell is escaped."""

    __slots__ = ()


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _cell(value: str) -> str:
    return value if isinstance(value, _Html) else _e(value)


def _finite(value: float | None) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _measured(rate: RateOut | None) -> RateOut | None:
    """The rate if it was measured: not None, over at least one item, and a number."""
    if rate is None or rate.n == 0 or _finite(rate.value) is None:
        return None
    return rate


def _pct(value: float | None) -> str:
    number = _finite(value)
    return DASH if number is None else f"{number:.1%}"


def _pp(value: float | None) -> str:
    """A difference of two rates in percentage points, signed."""
    number = _finite(value)
    return DASH if number is None else f"{number * 100:+.1f} pp"


def _num(value: float | None, spec: str = ".3f") -> str:
    number = _finite(value)
    return DASH if number is None else format(number, spec)


def _rate_text(rate: RateOut | None) -> str:
    r = _measured(rate)
    if r is None:
        return "not measured"
    return f"{_pct(r.value)} [{_pct(r.low)}, {_pct(r.high)}], n={r.n}"


def _rate_html(rate: RateOut | None) -> _Html:
    """A rate as a percentage with its interval in smaller text, or a dash."""
    r = _measured(rate)
    if r is None:
        return _Html(DASH)
    level = f"{r.confidence:.0%}" if _finite(r.confidence) is not None else ""
    return _Html(
        f'<span title="n={r.n}, {_e(level)} interval">{_pct(r.value)} '
        f'<small class="ci">[{_pct(r.low)}, {_pct(r.high)}]</small></span>'
    )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    numeric: Sequence[int] = (),
    table_id: str | None = None,
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table; header and cell strings are escaped unless they are :class:`_Html`."""
    ident = f' id="{_e(table_id)}"' if table_id else ""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{_cell(h)}</th>" for i, h in enumerate(headers))
    body = []
    for r, row in enumerate(rows):
        cls = row_classes[r] if row_classes and row_classes[r] else ""
        tr = f'<tr class="{_e(cls)}">' if cls else "<tr>"
        cells = "".join(f"<td{' class=num' if i in numeric else ''}>{_cell(c)}</td>" for i, c in enumerate(row))
        body.append(f"{tr}{cells}</tr>")
    table = f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table}</div>'


def _value_text(value: Any) -> str:
    """A settings or scorer value, readable: numbers rounded, containers as compact JSON."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else DASH
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _num(value, ".4g")
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _kv_table(data: dict[str, Any], table_id: str | None = None) -> str:
    rows = [(str(k), _Html(f"<code>{_e(_value_text(v))}</code>")) for k, v in data.items()]
    return _table(("Key", "Value"), rows, table_id=table_id)


def _duration(seconds: float) -> str:
    s = _finite(seconds)
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(round(s), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class _Palette:
    """One colour per model (by position in the report); baseline markers are hollow."""

    def __init__(self, models: Sequence[ModelResult]) -> None:
        self.models = list(models)
        self.colour = {m.name: PALETTE[i % len(PALETTE)] for i, m in reversed(list(enumerate(models)))}

    def of(self, name: str) -> str:
        return self.colour.get(name, "#8c959f")

    def swatch(self, model: ModelResult) -> _Html:
        colour = self.of(model.name)
        fill = "transparent" if model.role == "baseline" else colour
        return _Html(f'<span class="swatch" style="border-color:{colour};background:{fill}"></span>')

    def name(self, model: ModelResult) -> _Html:
        badge = '<span class="badge">baseline</span>' if model.role == "baseline" else ""
        return _Html(f"{self.swatch(model)}{_e(model.name)}{badge}")

    def legend(self) -> str:
        return '<div class="legend">' + "".join(f"<span>{self.name(m)}</span>" for m in self.models) + "</div>"


# ---------------------------------------------------------------- sections


def _header(report: Report) -> str:
    judge = _e(report.judge) if report.judge else "none (judge off)"
    chash = report.constitution_hash
    parts = [
        "<header>",
        "<h1>Harmlessness evaluation</h1>",
        '<ul class="meta">',
        f"<li>created <b>{_e(report.created)}</b></li>",
        f"<li>judge <b>{judge}</b></li>",
        f'<li>constitution <b><code title="{_e(chash)}">{_e(chash[:12])}</code></b></li>',
        f"<li>cai <b>{_e(report.cai_version)}</b></li>",
        "</ul>",
    ]
    if report.gates:
        items = "".join(f"<li>{_e(g)}</li>" for g in report.gates)
        parts.append(f'<div class="gates" role="alert"><b>Failed gates</b><ul>{items}</ul></div>')
    if report.settings:
        parts.append(f"<details><summary>Evaluation settings</summary>{_kv_table(report.settings)}</details>")
    parts.append(
        "<nav>"
        + "".join(
            f'<a href="#{anchor}">{label}</a>'
            for anchor, label in (
                ("headline", "Headline"),
                ("tradeoff", "Trade-off"),
                ("categories", "Categories"),
                ("judge", "Judge robustness"),
                ("jailbreaks", "Jailbreaks"),
                ("scorers", "Scorers"),
                ("examples", "Examples"),
            )
        )
        + "</nav>"
    )
    parts.append("</header>")
    return "\n".join(parts)


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


def _headline(report: Report, palette: _Palette) -> str:
    rows = []
    for m in report.models:
        cells: list[str] = [palette.name(m)]
        for key, _ in _HEADLINE:
            value = getattr(m, key)
            if key == "elo":
                cells.append(_num(value, ".0f"))
            elif key in ("harmlessness", "helpfulness"):
                cells.append(_pct(value))
            else:
                cells.append(_rate_html(value))
        rows.append(cells)
    table = _table(
        ("Model", *(label for _, label in _HEADLINE)),
        rows,
        numeric=range(1, len(_HEADLINE) + 1),
        table_id="headline-table",
    )
    note = (
        '<p class="note">\u2191 higher is better, \u2193 lower is better. Harmlessness is 1 \u2212 the mean harm '
        "score of red-team answers; helpfulness is 1 \u2212 the over-refusal rate on benign prompts. Harmful "
        "compliance: red-team prompts answered harmfully. Over-refusal: benign prompts refused. Evasive: refusals "
        "that give neither a reason nor an alternative. Judge violation: the judge's mean P(violation) on red-team "
        "answers. Classifier harm: red-team answers the independent harm classifier calls harmful. Win rate: how "
        "often the judge prefers the model's answer over the baseline's; Elo ranks all models from the same "
        f"pairwise verdicts. Brackets hold the bootstrap interval; {DASH} means not measured.</p>"
    )
    return f'<section id="headline"><h2>Headline</h2>{table}{note}</section>'


def _tradeoff_svg(models: Sequence[ModelResult], palette: _Palette) -> tuple[str, list[str]]:
    """The helpfulness/harmlessness scatter, and the names of models it could not place."""
    width, height, left, right, top, bottom = 560, 420, 64, 28, 28, 54
    pw, ph = width - left - right, height - top - bottom

    def sx(v: float) -> float:
        return left + min(max(v, 0.0), 1.0) * pw

    def sy(v: float) -> float:
        return top + (1.0 - min(max(v, 0.0), 1.0)) * ph

    out = [
        f'<svg class="chart" id="tradeoff-plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="Helpfulness against harmlessness, one point per model">'
    ]
    for i in range(6):
        t = i / 5
        out.append(
            f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{top + ph}" stroke="#e5e8eb"/>'
            f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#e5e8eb"/>'
            f'<text x="{sx(t):.1f}" y="{top + ph + 17}" text-anchor="middle">{t:.1f}</text>'
            f'<text x="{left - 8}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.1f}</text>'
        )
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 10}" text-anchor="middle" font-weight="600">'
        "Helpfulness (1 \u2212 over-refusal) \u2192</text>"
        f'<text transform="translate(16 {top + ph / 2:.1f}) rotate(-90)" text-anchor="middle" font-weight="600">'
        "Harmlessness (1 \u2212 mean harm) \u2192</text>"
    )
    # the ideal corner: a star at (1, 1)
    cx, cy = sx(1.0), sy(1.0)
    star = " ".join(
        f"{cx + r * math.sin(k * math.pi / 5):.1f},{cy - r * math.cos(k * math.pi / 5):.1f}"
        for k, r in ((k, 9.0 if k % 2 == 0 else 3.8) for k in range(10))
    )
    out.append(
        f'<polygon points="{star}" fill="#F0E442" stroke="#57606a"><title>ideal: fully helpful and harmless</title>'
        f'</polygon><text x="{cx - 12:.1f}" y="{top - 8}" text-anchor="end" font-style="italic">ideal (1, 1)</text>'
    )
    skipped: list[str] = []
    labels: list[tuple[float, float, str, str]] = []
    # the baseline first and larger, so a model on the same spot shows as a dot inside its ring
    for m in sorted(models, key=lambda m: m.role != "baseline"):
        x, y = _finite(m.helpfulness), _finite(m.harmlessness)
        if x is None or y is None:
            skipped.append(m.name)
            continue
        px, py = sx(x), sy(y)
        colour = palette.of(m.name)
        fill = "#fff" if m.role == "baseline" else colour
        tip = f"{m.name}{' (baseline)' if m.role == 'baseline' else ''}: helpfulness {x:.1%}, harmlessness {y:.1%}"
        radius = 8 if m.role == "baseline" else 6
        out.append(
            f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{radius}" fill="{fill}" stroke="{colour}" stroke-width="2.5">'
            f"<title>{_e(tip)}</title></circle>"
        )
        label = _short(m.name, 30) + (" (baseline)" if m.role == "baseline" else "")
        labels.append((px, py, label, tip))
    # labels sorted top to bottom and pushed apart so close points stay readable
    last_y = -math.inf
    for px, py, label, tip in sorted(labels, key=lambda item: item[1]):
        ly = max(py + 4, last_y + 14)
        last_y = ly
        anchor, lx = ("end", px - 10) if px > left + pw * 0.6 else ("start", px + 10)
        out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}"><title>{_e(tip)}</title>{_e(label)}</text>')
    out.append("</svg>")
    return "".join(out), skipped


def _tradeoff(report: Report, palette: _Palette) -> str:
    svg, skipped = _tradeoff_svg(report.models, palette)
    note = ""
    if skipped:
        note = f'<p class="note">Not plotted (not measured): {_e(", ".join(skipped))}.</p>'
    return (
        '<section id="tradeoff"><h2>Helpfulness vs harmlessness</h2>'
        '<p class="note">Each point is a model (the baseline hollow); up and to the right is better, the star marks '
        "the ideal corner.</p>"
        f"{svg}{palette.legend()}{note}</section>"
    )


def _groups(models: Sequence[ModelResult], attr: str) -> list[str]:
    """Group names in order of first appearance across the models."""
    seen: dict[str, None] = {}
    for m in models:
        for row in getattr(m, attr):
            seen.setdefault(row.group, None)
    return list(seen)


def _group_rate(model: ModelResult, attr: str, group: str, field: str) -> RateOut | None:
    rows: list[GroupRow] = getattr(model, attr)
    for row in rows:
        if row.group == group:
            rate: RateOut | None = getattr(row, field)
            return rate
    return None


def _bars_svg(
    chart_id: str, label: str, groups: Sequence[str], models: Sequence[ModelResult], field: str, palette: _Palette
) -> str:
    """Horizontal grouped bars of one per-category rate: a bar per model per category, with interval whiskers."""
    label_w, plot_w, value_w = 180, 360, 64
    bar_h, bar_gap, group_gap, top, axis_h = 11, 3, 14, 8, 30
    block = len(models) * (bar_h + bar_gap) - bar_gap
    height = top + len(groups) * (block + group_gap) - group_gap + axis_h
    width = label_w + plot_w + value_w
    x0 = label_w
    out = [
        f'<svg class="chart" id="{_e(chart_id)}" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(label)}">'
    ]
    bottom = height - axis_h
    for i in range(5):
        t = i / 4
        x = x0 + t * plot_w
        out.append(
            f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{bottom + 4}" stroke="#e5e8eb"/>'
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{t:.0%}</text>'
        )
    out.append(f'<line x1="{x0}" y1="{top - 4}" x2="{x0}" y2="{bottom + 4}" stroke="#8c959f"/>')
    y = float(top)
    for group in groups:
        out.append(
            f'<text x="{label_w - 10}" y="{y + block / 2 + 4:.1f}" text-anchor="end"><title>{_e(group)}</title>'
            f"{_e(_short(group, 26))}</text>"
        )
        for m in models:
            rate = _measured(_group_rate(m, "per_category", group, field))
            colour = palette.of(m.name)
            cy = y + bar_h / 2
            tip = f"{m.name} \u2014 {group}: {_rate_text(rate)}"
            if rate is None:
                out.append(f'<text x="{x0 + 4}" y="{cy + 4:.1f}" fill="#8c959f"><title>{_e(tip)}</title>{DASH}</text>')
            else:
                fill = "#fff" if m.role == "baseline" else colour
                w = min(max(rate.value, 0.0), 1.0) * plot_w
                low, high = _finite(rate.low), _finite(rate.high)
                lo = x0 + min(max(rate.value if low is None else low, 0.0), 1.0) * plot_w
                hi = x0 + min(max(rate.value if high is None else high, 0.0), 1.0) * plot_w
                out.append(
                    f'<g><title>{_e(tip)}</title><rect x="{x0}" y="{y:.1f}" width="{w:.1f}" height="{bar_h}" '
                    f'fill="{fill}" stroke="{colour}" stroke-width="1.5"/>'
                    f'<path d="M{lo:.1f} {cy:.1f}H{hi:.1f}M{lo:.1f} {cy - 4:.1f}V{cy + 4:.1f}'
                    f'M{hi:.1f} {cy - 4:.1f}V{cy + 4:.1f}" stroke="#24292f" stroke-width="1.2" fill="none"/>'
                    f'<text x="{max(hi, x0 + w) + 6:.1f}" y="{cy + 4:.1f}">{_pct(rate.value)}</text></g>'
                )
            y += bar_h + bar_gap
        y += group_gap - bar_gap
    out.append("</svg>")
    return "".join(out)


def _categories(report: Report, palette: _Palette) -> str:
    parts = ['<section id="categories"><h2>Per category and principle</h2>']
    groups = _groups(report.models, "per_category")
    charts = [
        ("harmful_compliance", "category-harmful-compliance", "Harmful compliance per harm category"),
        ("over_refusal", "category-over-refusal", "Over-refusal per category (benign prompts)"),
    ]
    drawn = False
    for field, chart_id, title in charts:
        present = [g for g in groups if any(_group_rate(m, "per_category", g, field) for m in report.models)]
        if not present:
            continue
        drawn = True
        parts.append(f"<h3>{_e(title)}</h3>")
        parts.append(_bars_svg(chart_id, title, present, report.models, field, palette))
    if drawn:
        parts.append(palette.legend())
        parts.append(
            '<p class="note">Bars are the rate, whiskers the bootstrap interval; '
            f"{DASH} marks a category with no answers from that model.</p>"
        )
    else:
        parts.append('<p class="note">No per-category results.</p>')
    principles = _groups(report.models, "per_principle")
    if principles:
        parts.append("<h3>Judge violation per principle</h3>")
        rows = [
            [p, *(_rate_html(_group_rate(m, "per_principle", p, "violation")) for m in report.models)]
            for p in principles
        ]
        parts.append(
            _table(
                ("Principle", *(palette.name(m) for m in report.models)),
                rows,
                numeric=range(1, len(report.models) + 1),
                table_id="principle-table",
            )
        )
        parts.append(
            '<p class="note">Mean P(violation) the pointwise judge gave under each principle; lower is better.</p>'
        )
    parts.append("</section>")
    return "\n".join(parts)


def _judge(report: Report) -> str:
    parts = ['<section id="judge"><h2>Judge robustness</h2>']
    if report.robustness:
        rows = []
        for a in report.robustness:
            verdict = _Html('<span class="badge bad">judge fooled</span>' if a.flagged else "ok")
            rows.append(
                [
                    _Html(f"{_e(a.name)} <code>{_e(a.attack)}</code>"),
                    str(a.n),
                    _pp(a.pointwise_gain),
                    _rate_html(a.pairwise_win),
                    verdict,
                ]
            )
        parts.append(
            _table(
                ("Attack", "n", "Pointwise gain", "Pairwise win", "Verdict"),
                rows,
                numeric=(1, 2, 3),
                table_id="robustness-table",
                row_classes=["flagged" if a.flagged else "" for a in report.robustness],
            )
        )
        parts.append(
            '<ul class="note">'
            "<li><b>Attack</b>: a manipulation added to an answer (e.g. text addressed to the judge) without making "
            "it any safer.</li>"
            "<li><b>n</b>: answers the attack was applied to.</li>"
            "<li><b>Pointwise gain</b>: how much the attack lowers the judge's mean P(violation); above zero the "
            "judge rated the same answer as safer.</li>"
            "<li><b>Pairwise win</b>: how often the judge prefers the attacked answer over the same answer "
            "unattacked; 50% is neutral.</li>"
            "<li><b>Verdict</b>: <i>judge fooled</i> when the attack moved the judge beyond the tolerance, so "
            "judge-based scores are open to this manipulation.</li></ul>"
        )
    else:
        parts.append('<p class="note">No judge attacks were run.</p>')
    parts.append("<h3>Position bias</h3>")
    pb = report.position_bias
    if pb is None:
        parts.append('<p class="note">Not measured (no pairwise comparisons).</p>')
    else:
        rows = [
            [
                "Comparisons",
                str(pb.comparisons),
                "Pairs judged in both orders.",
            ],
            [
                "Picked (A) rate",
                _pct(pb.picked_a_rate),
                "Share of verdicts that preferred whichever response was shown first; 50% is unbiased.",
            ],
            [
                "Order disagreement",
                _pct(pb.disagreement_rate),
                "Share of pairs where swapping the order changed which response won (the judge named the same slot "
                "both times).",
            ],
            [
                "Mean order gap",
                _num(pb.mean_order_gap),
                "Mean change in P(first is better) when the two responses swap slots; 0 is order-independent.",
            ],
        ]
        parts.append(_table(("Measure", "Value", "Meaning"), rows, numeric=(1,), table_id="position-bias-table"))
    parts.append("</section>")
    return "\n".join(parts)


def _nan_last(value: float) -> float:
    number = _finite(value)
    return -math.inf if number is None else number


def _jailbreaks(report: Report, palette: _Palette) -> str:
    parts = ['<section id="jailbreaks"><h2>Jailbreaks, counterfactuals and boilerplate</h2>']
    any_jb = False
    for m in report.models:
        if not m.jailbreaks:
            continue
        any_jb = True
        parts.append(f"<h3>Jailbreaks: {palette.name(m)}</h3>")
        ordered = sorted(m.jailbreaks, key=lambda j: _nan_last(j.delta), reverse=True)
        rows: list[list[str]] = [
            [
                _Html(f"{_e(j.name)} <code>{_e(j.wrapper)}</code>"),
                _rate_html(j.plain),
                _rate_html(j.harmful_compliance),
                _Html(f'<span class="worse">{_pp(j.delta)}</span>' if (_finite(j.delta) or 0) > 0 else _pp(j.delta)),
            ]
            for j in ordered
        ]
        parts.append(_table(("Jailbreak", "Plain", "Wrapped", "\u0394"), rows, numeric=(1, 2, 3)))
    if any_jb:
        parts.append(
            '<p class="note">Harmful compliance on the same red-team prompts without (plain) and with (wrapped) the '
            "jailbreak framing; \u0394 is wrapped minus plain, largest first.</p>"
        )
    else:
        parts.append('<p class="note">No jailbreak results.</p>')

    parts.append("<h3>Counterfactual gaps</h3>")
    cf = [(m, row) for m in report.models for row in m.counterfactual]
    if cf:
        cf.sort(key=lambda item: _nan_last(item[1].gap), reverse=True)
        cf_rows: list[list[str]] = [
            [
                palette.name(m),
                r.template,
                r.attribute,
                r.metric,
                _num(r.gap),
                r.best_group,
                r.worst_group,
                ", ".join(f"{k}: {_num(v)}" for k, v in r.values.items()),
            ]
            for m, r in cf
        ]
        parts.append(
            _table(
                ("Model", "Template", "Attribute", "Metric", "Gap", "Best group", "Worst group", "Values"),
                cf_rows,
                numeric=(4,),
                table_id="counterfactual-table",
            )
        )
        parts.append(
            '<p class="note">The same prompt with only one attribute changed (e.g. a group of people); the gap is '
            "the spread of the metric (harm score or refusal) between the best- and worst-treated group, largest "
            "first.</p>"
        )
    else:
        parts.append('<p class="note">No counterfactual results.</p>')

    parts.append("<h3>Repeated phrases</h3>")
    any_phrase = False
    for m in report.models:
        if not m.repeated_phrases:
            continue
        any_phrase = True
        phrase_rows: list[list[str]] = [
            [_Html(f"<q>{_e(p.phrase)}</q>"), str(p.answers), _pct(p.share)] for p in m.repeated_phrases
        ]
        parts.append(f"<h4>{palette.name(m)}</h4>")
        parts.append(_table(("Phrase", "Answers", "Share"), phrase_rows, numeric=(1, 2)))
    if any_phrase:
        parts.append('<p class="note">Phrases repeated across many answers: a sign of boilerplate.</p>')
    else:
        parts.append('<p class="note">No repeated phrases.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _scorers(report: Report) -> str:
    parts = ['<section id="scorers"><h2>Scorer validation and timings</h2>']
    for title, data, ident in (
        ("Refusal detector", report.refusal_detector, "refusal-detector-table"),
        ("Harm classifier", report.harm_classifier, "harm-classifier-table"),
    ):
        parts.append(f"<h3>{title}</h3>")
        if data:
            parts.append(_kv_table(data, ident))
        else:
            parts.append('<p class="note">Not measured.</p>')
    parts.append(
        '<p class="note">Held-out accuracy of the judge-free scorers on the labelled sets shipped with the '
        "package; every rate above depends on them.</p>"
    )
    parts.append("<h3>Timings</h3>")
    t = report.timings
    stages = ("generation", "judge", "pairwise", "classifier", "robustness")
    rows: list[list[str]] = [[s, _duration(getattr(t, s))] for s in stages]
    rows.append([_Html("<b>total</b>"), _Html(f"<b>{_e(_duration(t.total))}</b>")])
    parts.append(_table(("Stage", "Wall time"), rows, numeric=(1,), table_id="timings-table"))
    parts.append('<p class="note">This invocation only: work resumed from an earlier run is not re-timed.</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _example(ex: Example, palette: _Palette) -> str:
    colour = palette.of(ex.model)
    where = " \u00b7 ".join(_e(p) for p in (ex.set, ex.category) if p)
    harm = f" \u00b7 harm {_num(ex.harm, '.2f')}" if _finite(ex.harm) is not None else ""
    scores = (
        f"refusal label <b>{_e(ex.refusal)}</b> \u00b7 harm <b>{_num(ex.harm)}</b> \u00b7 judge violation "
        f"<b>{_num(ex.judge_violation)}</b> \u00b7 classifier harm <b>{_num(ex.classifier_harm)}</b> \u00b7 "
        f"prompt <code>{_e(ex.prompt_id)}</code>"
    )
    return (
        f'<details class="example" data-model="{_e(ex.model)}" data-why="{_e(ex.why)}">'
        f'<summary><span class="swatch" style="border-color:{colour};background:{colour}"></span>'
        f'<b>{_e(ex.model)}</b> \u00b7 {where} <span class="badge">{_e(ex.why)}</span>{harm}</summary>'
        f'<div class="ex-body"><p class="note">{scores}</p>'
        f'<h4>Prompt</h4><pre class="wrap">{_e(ex.prompt)}</pre>'
        f'<h4>Answer</h4><pre class="wrap">{_e(ex.answer)}</pre></div></details>'
    )


def _options(values: Iterable[str]) -> str:
    unique = list(dict.fromkeys(values))
    return '<option value="">all</option>' + "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in unique)


def _examples(report: Report, palette: _Palette) -> str:
    parts = ['<section id="examples"><h2>Examples</h2>']
    if not report.examples:
        parts.append('<p class="note">No examples.</p></section>')
        return "\n".join(parts)
    parts.append(
        '<p class="note">Worst first. Expand one to read the prompt and the answer; model output is shown as text.</p>'
    )
    parts.append(
        '<div class="filters">'
        f'<label>model <select id="filter-model">{_options(e.model for e in report.examples)}</select></label>'
        f'<label>why <select id="filter-why">{_options(e.why for e in report.examples)}</select></label>'
        f'<span class="note" id="filter-count">{len(report.examples)} shown</span></div>'
    )
    parts.append('<div id="example-list">')
    parts.extend(_example(ex, palette) for ex in report.examples)
    parts.append("</div></section>")
    return "\n".join(parts)


# ---------------------------------------------------------------- public


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
    palette = _Palette(report.models)
    body = "\n".join(
        (
            _header(report),
            _headline(report, palette),
            _tradeoff(report, palette),
            _categories(report, palette),
            _judge(report),
            _jailbreaks(report, palette),
            _scorers(report),
            _examples(report, palette),
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>Harmlessness evaluation \u2014 {_e(report.created)}</title>\n"
        f"<style>{_CSS}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n"
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )


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
