"""How the HTML report writes values: percentages, intervals, durations, a dash for what was not measured.

Every function returns plain text; the report's templates escape it. A value
that was not measured (None, NaN, a rate over no items) is written as
:data:`DASH`, never as ``nan``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from engine.evaluate.metrics import Rate
from engine.evaluate.report import ModelResult

__all__ = [
    "DASH",
    "PALETTE",
    "Palette",
    "confidence",
    "duration",
    "finite",
    "measured",
    "num",
    "pct",
    "pp",
    "rate_text",
    "short",
    "value_text",
]

DASH = "\u2013"
"""What a value that was not measured (None, NaN, a rate over no items) renders as."""

# Okabe-Ito: distinguishable under the common colour-vision deficiencies. Yellow last (weak on white).
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
UNKNOWN_COLOUR = "#8c959f"
"""The colour of a model the report does not list."""


def finite(value: Any) -> float | None:
    """The value as a finite float, or None (None, a bool, NaN, infinity, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def measured(rate: Rate | None) -> Rate | None:
    """The rate if it was measured: not None, over at least one item, and a number."""
    if rate is None or rate.n == 0 or finite(rate.value) is None:
        return None
    return rate


def pct(value: float | None) -> str:
    """A rate as a percentage with one decimal: ``12.5%``."""
    number = finite(value)
    return DASH if number is None else f"{number:.1%}"


def pp(value: float | None) -> str:
    """A difference of two rates in percentage points, signed: ``+20.0 pp``."""
    number = finite(value)
    return DASH if number is None else f"{number * 100:+.1f} pp"


def num(value: float | None, spec: str = ".3f") -> str:
    """A number in a format spec (three decimals by default)."""
    number = finite(value)
    return DASH if number is None else format(number, spec)


def rate_text(rate: Rate | None) -> str:
    """A rate with its interval and count, in words: ``12.0% [8.0%, 16.0%], n=50``."""
    r = measured(rate)
    if r is None:
        return "not measured"
    return f"{pct(r.value)} [{pct(r.low)}, {pct(r.high)}], n={r.n}"


def confidence(rate: Rate) -> str:
    """The interval's coverage as a percentage (``95%``), or nothing."""
    return f"{rate.confidence:.0%}" if finite(rate.confidence) is not None else ""


def short(text: str, limit: int) -> str:
    """The text cut to ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def value_text(value: Any) -> str:
    """A settings or scorer value, readable: numbers rounded, containers as compact JSON."""
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else DASH
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return num(value, ".4g")
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def duration(seconds: float) -> str:
    """Wall time: ``12.5 s``, ``3 min 05 s``, ``1 h 06 min``."""
    s = finite(seconds)
    if s is None:
        return DASH
    if s < 60:
        return f"{s:.1f} s"
    minutes, sec = divmod(round(s), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Palette:
    """One colour per model (by position in the report); a baseline is drawn hollow."""

    def __init__(self, models: Sequence[ModelResult]) -> None:
        """Give each model the colour of its first position in the report."""
        self.colour = {m.name: PALETTE[i % len(PALETTE)] for i, m in reversed(list(enumerate(models)))}

    def of(self, name: str) -> str:
        """The colour of a model by name."""
        return self.colour.get(name, UNKNOWN_COLOUR)

    def fill(self, model: ModelResult, hollow: str = "transparent") -> str:
        """The fill of a model's marker: its colour, or ``hollow`` for the baseline."""
        return hollow if model.role == "baseline" else self.of(model.name)
