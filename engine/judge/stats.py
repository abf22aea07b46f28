"""How trustworthy a labelling run's labels are: counts, rates and margin quantiles, streamed."""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.records.labels import DROPPED, Label

QUANTILE_NAMES = ("min", "p10", "p25", "median", "p75", "p90", "max")


def quantiles(values: Sequence[float], points: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)) -> list[float]:
    """Linear-interpolated quantiles of ``values`` (empty when there are none)."""
    data = sorted(values)
    if not data:
        return []
    out = []
    for q in points:
        pos = q * (len(data) - 1)
        low = math.floor(pos)
        high = min(low + 1, len(data) - 1)
        out.append(data[low] + (data[high] - data[low]) * (pos - low))
    return out


def named_quantiles(values: Sequence[float]) -> dict[str, float]:
    """The :data:`QUANTILE_NAMES` quantiles of ``values``, rounded to 4 places (empty when there are none)."""
    return dict(zip(QUANTILE_NAMES, (round(m, 4) for m in quantiles(values)), strict=False))


@dataclass(frozen=True)
class LabelStats:
    """How trustworthy a labelling run's labels are."""

    rows: int
    labelled: int
    dropped: dict[str, int]
    """Rows without a label, by reason: tie, low-margin, unparsed."""
    single: int
    """Rows with one distinct candidate (no revision changed the answer): nothing to judge."""
    revision_chosen: int
    """Labelled rows whose chosen response is a revision."""
    revision_beat_initial: int
    """Judged (initial, revision) comparisons that the revision won."""
    initial_comparisons: int
    """Judged (initial, revision) comparisons that were not ties."""
    comparisons: int
    disagreements: int
    """Comparisons whose two orders pointed at different responses."""
    unparsed_judgments: int
    margins: dict[str, float]
    """Quantiles of the margin over rows with a judged pair (labelled, tie, low-margin)."""

    @classmethod
    def of(cls, labels: Sequence[Label]) -> LabelStats:
        """Statistics of a labelling run's results."""
        tally = LabelTally()
        for label in labels:
            tally.add(label)
        return tally.stats()

    @property
    def pairs(self) -> int:
        """Rows that had something to judge."""
        return self.rows - self.single

    @property
    def dropped_rate(self) -> float | None:
        return sum(self.dropped.values()) / self.pairs if self.pairs else None

    @property
    def revision_chosen_rate(self) -> float | None:
        return self.revision_chosen / self.labelled if self.labelled else None

    @property
    def revision_win_rate(self) -> float | None:
        return self.revision_beat_initial / self.initial_comparisons if self.initial_comparisons else None

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.comparisons if self.comparisons else None

    def to_dict(self) -> dict[str, Any]:
        """Counts, rates and margin quantiles, JSON-ready."""
        return asdict(self) | {
            "pairs": self.pairs,
            "dropped_rate": self.dropped_rate,
            "revision_chosen_rate": self.revision_chosen_rate,
            "revision_win_rate": self.revision_win_rate,
            "disagreement_rate": self.disagreement_rate,
        }

    def render(self) -> str:
        """A short plain-text report."""
        dropped = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items() if n) or "none"
        margins = " ".join(f"{k} {v:.2f}" for k, v in self.margins.items()) or "n/a"
        return "\n".join(
            [
                f"label quality: {self.labelled} of {self.pairs} pairs labelled "
                f"({self.single} rows had no revision to compare)",
                f"  dropped: {dropped} ({pct(self.dropped_rate)} of pairs)",
                f"  revision chosen: {pct(self.revision_chosen_rate)} of labelled pairs; "
                f"revision beat the first answer in {pct(self.revision_win_rate)} "
                f"of {self.initial_comparisons} direct comparisons",
                f"  orders disagreed (position bias): {pct(self.disagreement_rate)} of {self.comparisons} comparisons"
                + (f"; {self.unparsed_judgments} judgments unparsed" if self.unparsed_judgments else ""),
                f"  margin: {margins}",
            ]
        )


class LabelTally:
    """Label-quality counts gathered one labelled row at a time, so a run of any length streams through."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.revision_chosen = 0
        self.revision_beat_initial = 0
        self.initial_comparisons = 0
        self.comparisons = 0
        self.disagreements = 0
        self.unparsed = 0
        self.margins = array("d")

    def add(self, label: Label) -> None:
        """Count one row's label: its status, chosen candidate, margin and each comparison."""
        status = label.status
        self.status[status] += 1
        self.revision_chosen += status == "labelled" and (label.chosen_from or "").startswith("revision")
        for c in label.comparisons:
            self.comparisons += 1
            self.disagreements += c.disagreed
            self.unparsed += c.unparsed
            winner = c.winner
            if c.first == "initial" and winner in ("first", "second"):
                self.initial_comparisons += 1
                self.revision_beat_initial += winner == "second"
        if label.margin is not None:
            self.margins.append(label.margin)

    def stats(self) -> LabelStats:
        """The statistics of everything counted."""
        return LabelStats(
            rows=sum(self.status.values()),
            labelled=self.status["labelled"],
            dropped={reason: self.status[reason] for reason in DROPPED},
            single=self.status["single"],
            revision_chosen=self.revision_chosen,
            revision_beat_initial=self.revision_beat_initial,
            initial_comparisons=self.initial_comparisons,
            comparisons=self.comparisons,
            disagreements=self.disagreements,
            unparsed_judgments=self.unparsed,
            margins=named_quantiles(self.margins),
        )


def pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.0f}%"
