"""How well a judge agrees with human labels: ``cai judge-eval``'s measurements for one judge.

Two protocols score a judge. *Ours* (:func:`evaluate_judge`) is the judge the
engine labels with: the constitution's comparison prompt under a principle,
both orders, soft label. *As written* (:func:`evaluate_as_written`) scores a
published multiple-choice file's own prompt by the log-probability of each
option label, once in the file's order and once with the option texts
reversed. Both give one :class:`Scored` per item, and :func:`measure` turns
those into a :class:`JudgeEval`: accuracy with its 95% interval, accuracy per
order, the position-bias rate, Brier score and calibration error of the soft
label, accuracy against coverage, and accuracy per category and principle.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from constitution import Constitution, Principle
from constitution.errors import did_you_mean
from engine.audit.calibration import (
    CoveragePoint,
    ReliabilityBin,
    brier_score,
    coverage_curve,
    expected_calibration_error,
    mirrored,
    reliability_bins,
    wilson_interval,
)
from engine.audit.comparisons import JudgeDataError, LabelledComparison
from engine.backends.base import Backend
from engine.judge.pairwise import Pair, mean, opposed, vote
from engine.judge.panel import PairJudge
from engine.judge.principles import sample_principles
from engine.judge.stats import named_quantiles, pct
from engine.records.labels import TIE, Comparison

if TYPE_CHECKING:
    from engine.audit.choice_files import ChoiceItem

OURS = "ours"
AS_WRITTEN = "as-written"
PROTOCOLS = {
    OURS: "the constitution's comparison prompt under a principle, both orders averaged (the judge cai labels with)",
    AS_WRITTEN: "the file's own prompt, log-probability of each option label, file order and options reversed averaged",
}
"""The protocols a judge is scored by, and what each one is, for reports."""


@dataclass(frozen=True)
class Scored:
    """One labelled item as a protocol scored it."""

    id: str
    p: float | None
    """P(the human-preferred response is better), both orders averaged; None: the judge gave none."""
    better_as_a: float | None
    """The same with the better response shown first, as (A) (None: not scored that way)."""
    better_as_b: float | None
    """The same with the better response shown second."""
    category: str | None = None
    principles: dict[str, float | None] = field(default_factory=dict)
    """Per principle the item was judged under, its own two-order probability (ours only)."""
    detail: dict[str, Any] = field(default_factory=dict)
    """What the protocol recorded about this item (the judgment, the option probabilities...)."""
    hit: bool | None = None
    """Whether the judge got it right, where ``p`` alone does not say (with more than two options: the top one is)."""

    @property
    def right(self) -> bool:
        return self.hit if self.hit is not None else right(self.p)


def right(p: float | None) -> bool:
    """Whether a probability of the human choice counts as the judge agreeing (a tie does not)."""
    return vote(p) == "first"


@dataclass(frozen=True)
class Group:
    """Accuracy on a part of the items (a category, a principle)."""

    n: int
    correct: int
    low: float
    high: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def _group(hits: Sequence[bool]) -> Group:
    correct = sum(hits)
    low, high = wilson_interval(correct, len(hits))
    return Group(len(hits), correct, low, high)


@dataclass(frozen=True)
class JudgeEval:
    """How well one judge, under one protocol, agrees with human labels."""

    protocol: str
    file: str
    judge_model: str
    settings: dict[str, Any]
    n: int
    correct: int
    low: float
    high: float
    """The 95% (Wilson) interval of the accuracy."""
    chance: float
    """The accuracy of a judge that guesses: 0.5 for two responses, the share of correct options for more."""
    ties: int
    """Items the judge scored exactly even (counted as wrong)."""
    unparsed: int
    """Items without a probability (counted as wrong)."""
    better_as_a: Group | None
    """Accuracy with the better response shown as (A); None when no item was scored that way."""
    better_as_b: Group | None
    position_biased: int
    """Items whose two orders disagreed: the judge named the same slot both times."""
    both_orders: int
    """Items scored in both orders (the position-bias rate's denominator)."""
    brier: float | None
    """Mean squared error of P(human choice) (0 is perfect, 0.25 a judge that always says 0.5)."""
    ece: float | None
    """Expected calibration error of the soft label (10 bins, both sides of each pair)."""
    reliability: tuple[ReliabilityBin, ...]
    coverage: tuple[CoveragePoint, ...]
    """Accuracy of the items kept when only margins ``|2p - 1| >= m`` are kept (the curve that sets --min-margin)."""
    min_margin: float
    kept: int
    kept_correct: int
    margins: dict[str, float]
    """Quantiles of the margin over items with a probability."""
    mean_p_correct: float | None
    by_category: dict[str, Group]
    by_principle: dict[str, Group]
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    """Protocol-specific counts (single-order picks of (A), chain-of-thought verdicts...)."""
    results: tuple[Scored, ...] = field(default=(), repr=False)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def position_bias_rate(self) -> float | None:
        return self.position_biased / self.both_orders if self.both_orders else None

    @property
    def kept_accuracy(self) -> float | None:
        return self.kept_correct / self.kept if self.kept else None

    @property
    def at_chance(self) -> bool:
        """The interval reaches chance: the judge is not shown to be better than a guess."""
        return self.low <= self.chance

    @property
    def name(self) -> str:
        """The judge and protocol, for headings."""
        return f"{self.judge_model} ({self.protocol})"

    def to_dict(self) -> dict[str, Any]:
        """Counts and rates, JSON-ready (per-item results included)."""
        data = asdict(self)
        data["results"] = [
            {"id": s.id, "p_correct": s.p, "better_as_a": s.better_as_a, "better_as_b": s.better_as_b} | s.detail
            for s in self.results
        ]
        for key in ("better_as_a", "better_as_b"):
            group = getattr(self, key)
            data[key] = None if group is None else asdict(group) | {"accuracy": group.accuracy}
        for key in ("by_category", "by_principle"):
            data[key] = {name: asdict(g) | {"accuracy": g.accuracy} for name, g in getattr(self, key).items()}
        return data | {
            "protocol_description": PROTOCOLS[self.protocol],
            "accuracy": self.accuracy,
            "interval": [self.low, self.high],
            "at_chance": self.at_chance,
            "position_bias_rate": self.position_bias_rate,
            "kept_accuracy": self.kept_accuracy,
        }

    def render(self) -> str:
        """A short plain-text report."""
        mean_p = "n/a" if self.mean_p_correct is None else f"{self.mean_p_correct:.3f}"
        lines = [
            f"judge {self.judge_model}, protocol {self.protocol}: {PROTOCOLS[self.protocol]}",
            f"  {self.n} items from {self.file}, {self.seconds:.1f} s",
            f"  accuracy: {pct(self.accuracy)} ({self.correct}/{self.n}), 95% interval "
            f"{pct(self.low)}-{pct(self.high)}; ties {self.ties}, unparsed {self.unparsed}; "
            f"mean P(human choice) {mean_p}",
        ]
        if self.at_chance:
            lines.append(f"  NOT SHOWN BETTER THAN CHANCE: the interval reaches {pct(self.chance)}")
        if self.better_as_a is not None and self.better_as_b is not None:
            lines.append(
                f"  accuracy with the better response as (A): {pct(self.better_as_a.accuracy)}; "
                f"as (B): {pct(self.better_as_b.accuracy)}"
            )
        if self.both_orders:
            picked = self.extra.get("picked_a_rate")
            tail = f"; (A) named in {pct(picked)} of single-order answers" if picked is not None else ""
            lines.append(f"  position bias: orders disagreed on {pct(self.position_bias_rate)} of items{tail}")
        brier = "n/a" if self.brier is None else f"{self.brier:.3f}"
        if self.ece is None:
            lines.append(f"  Brier score of P(correct) {brier}; no calibration curve (more than two options)")
        else:
            lines.append(f"  calibration: Brier {brier} (0.25 = always 0.5), expected calibration error {self.ece:.3f}")
        if self.margins:
            lines.append("  margin |2p-1|: " + " ".join(f"{k} {v:.3f}" for k, v in self.margins.items()))
            lines.append(
                f"  at min margin {self.min_margin:g}: {self.kept} of {self.n} would be labelled, "
                f"{pct(self.kept_accuracy)} of them right"
            )
        curve = [p for p in self.coverage if p.kept]
        if curve:
            lines.append(
                "  accuracy vs coverage: "
                + ", ".join(f">={p.min_margin:g}: {pct(p.accuracy)} of {pct(p.coverage)}" for p in curve)
            )
        if "verdicts_written" in self.extra:
            written, replies = self.extra["verdicts_written"], self.extra["replies"]
            lines.append(f"  chain of thought: {written} of {replies} replies wrote a verdict")
        for title, groups in (("by category", self.by_category), ("by principle", self.by_principle)):
            if len(groups) > 1:
                lines.append(
                    f"  {title}: "
                    + ", ".join(f"{name} {pct(g.accuracy)} of {g.n}" for name, g in sorted(groups.items()))
                )
        return "\n".join(lines)


def measure(
    scored: Sequence[Scored],
    *,
    protocol: str,
    file: str,
    judge_model: str,
    settings: dict[str, Any],
    seconds: float,
    min_margin: float = 0.0,
    extra: dict[str, Any] | None = None,
    chance: float = 0.5,
    binary: bool = True,
) -> JudgeEval:
    """The measurements of a judge from its scores on labelled items.

    Args:
        chance: The accuracy of guessing (see :attr:`JudgeEval.chance`).
        binary: Every item is a choice between two responses, so ``p`` is a soft
            pairwise label: calibration, margins and coverage are measured. With
            more options they are not (a probability of 0.3 may still be the top one).
    """
    ps = [s.p for s in scored]
    correct = sum(s.right for s in scored)
    low, high = wilson_interval(correct, len(ps))
    known = [p for p in ps if p is not None]
    as_a = [s.better_as_a for s in scored if s.better_as_a is not None]
    as_b = [s.better_as_b for s in scored if s.better_as_b is not None]
    both = [s for s in scored if s.better_as_a is not None and s.better_as_b is not None]
    biased = sum(opposed(s.better_as_a, s.better_as_b) for s in both)
    probs, outcomes = mirrored(ps) if binary else ([], [])
    margins = [abs(2 * p - 1) for p in known] if binary else []
    kept = [p for p in known if abs(p - 0.5) > TIE and abs(2 * p - 1) >= min_margin] if binary else []
    categories: dict[str, list[bool]] = {}
    principles: dict[str, list[bool]] = {}
    for s in scored:
        categories.setdefault(s.category or "uncategorised", []).append(s.right)
        for principle, p in s.principles.items():
            principles.setdefault(principle, []).append(right(p))
    return JudgeEval(
        protocol=protocol,
        file=file,
        judge_model=judge_model,
        settings=settings,
        n=len(scored),
        correct=correct,
        low=low,
        high=high,
        ties=sum(p is not None and abs(p - 0.5) <= TIE for p in ps),
        unparsed=len(ps) - len(known),
        chance=chance,
        better_as_a=_group([right(p) for p in as_a]) if as_a else None,
        better_as_b=_group([right(p) for p in as_b]) if as_b else None,
        position_biased=biased,
        both_orders=len(both),
        brier=brier_score(known, [True] * len(known)),
        ece=expected_calibration_error(probs, outcomes) if binary else None,
        reliability=tuple(reliability_bins(probs, outcomes)) if binary else (),
        coverage=tuple(coverage_curve(ps)) if binary else (),
        min_margin=min_margin,
        kept=len(kept),
        kept_correct=sum(p > 0.5 for p in kept),
        margins=named_quantiles(margins),
        mean_p_correct=mean(known),
        by_category={name: _group(values) for name, values in categories.items()},
        by_principle={name: _group(values) for name, values in principles.items()},
        seconds=round(seconds, 3),
        extra=extra or {},
        results=tuple(scored),
    )


# ------------------------------------------------------------------ our protocol


def comparison_principles(
    items: Sequence[LabelledComparison], constitution: Constitution, k: int, seed: int, *, strict: bool = True
) -> list[tuple[Principle, ...]]:
    """The principles each comparison is judged under: its own, or ``k`` sampled by weight.

    Args:
        strict: A comparison naming a principle the constitution lacks is an
            error; when False, principles are sampled for it instead (the judge
            gate, under a constitution of the user's own).

    Raises:
        JudgeDataError: A comparison names a principle the constitution lacks (strict only).
    """
    known = {p.id: p for p in constitution.principles}
    out: list[tuple[Principle, ...]] = []
    for item in items:
        if item.principle in known:
            out.append((known[item.principle],))
        elif item.principle is None or not strict:
            out.append(sample_principles(constitution, k, seed, item.id))
        else:
            hint = did_you_mean(item.principle, known)
            raise JudgeDataError(
                f"principle: {item.principle!r} is not in constitution {constitution.id!r}{hint}",
                file=item.file,
                line=item.line,
            )
    return out


def evaluate_judge(
    judge: PairJudge,
    items: Sequence[LabelledComparison],
    principles: Sequence[tuple[Principle, ...]],
    *,
    file: str = "",
    chunk: int = 256,
) -> JudgeEval:
    """Run the judge on human-labelled comparisons with our protocol (both orders, batched) and measure agreement.

    Args:
        judge: The judge to check.
        items: The comparisons (see :func:`~engine.audit.comparisons.load_comparisons`).
        principles: Principles per comparison (see :func:`comparison_principles`).
        file: Name of the source, for the report.
        chunk: Most comparisons per :meth:`Judge.compare` call.
    """
    start = time.perf_counter()
    judged: list[Comparison] = []
    pairs = [Pair(i.conversation, i.response_a, i.response_b, p) for i, p in zip(items, principles, strict=True)]
    for begin in range(0, len(pairs), chunk):
        judged.extend(judge.compare(pairs[begin : begin + chunk]))
    seconds = time.perf_counter() - start
    scored = [_scored(item, r) for item, r in zip(items, judged, strict=True)]
    readable = [j.p_a for r in judged for j in r.judgments if j.p_a is not None and abs(j.p_a - 0.5) > TIE]
    extra: dict[str, Any] = {
        "picked_a": sum(p > 0.5 for p in readable),
        "picked": len(readable),
        "picked_a_rate": sum(p > 0.5 for p in readable) / len(readable) if readable else None,
    }
    if judge.settings.cot:
        extra["verdicts_written"] = sum(j.stated is not None for r in judged for j in r.judgments)
        extra["replies"] = sum(len(r.judgments) for r in judged)
    return measure(
        scored,
        protocol=OURS,
        file=file,
        judge_model=judge.model,
        settings=judge.settings.model_dump(mode="json"),
        seconds=seconds,
        min_margin=judge.settings.min_margin,
        extra=extra,
    )


def _scored(item: LabelledComparison, r: Comparison) -> Scored:
    """One comparison's judgment, turned toward the human choice."""

    def toward(p_first: float | None) -> float | None:
        if p_first is None:
            return None
        return p_first if item.better == "A" else 1.0 - p_first

    # p_first_shown_first: response_a shown as (A); so the better one is (A) there iff better == "A".
    shown_a, shown_b = (
        (r.p_first_shown_first, r.p_first_shown_second)
        if item.better == "A"
        else (r.p_first_shown_second, r.p_first_shown_first)
    )
    orders: dict[str, dict[str, float | None]] = {}
    for j in r.judgments:
        orders.setdefault(j.principle_id, {})[j.first_as] = j.p_first
    principles = {}
    for principle, found in orders.items():
        a, b = found.get("A"), found.get("B")
        principles[principle] = toward(None if a is None or b is None else (a + b) / 2)
    detail = {"judgment": r.model_dump(exclude={"first", "second"})}
    return Scored(item.id, toward(r.p_first), toward(shown_a), toward(shown_b), item.category, principles, detail)


# ------------------------------------------------------------- the file's own prompt


def evaluate_as_written(
    backend: Backend, items: Sequence[ChoiceItem], *, file: str = "", chunk: int = 256
) -> JudgeEval:
    """Score a published multiple-choice file as written (option-label log-probabilities) and measure agreement."""
    from engine.audit.choice_files import score_as_written

    start = time.perf_counter()
    found = score_as_written(backend, items, chunk=chunk)
    seconds = time.perf_counter() - start
    scored = []
    first = 0
    binary = all(len(item.labels) == 2 for item in items)
    for item, result in zip(items, found, strict=True):
        # In the file's order the correct option sits where the file put it; reversed, at the other end.
        correct_first = bool(item.correct) and item.correct[0] == 0
        as_a, as_b = (result.p_correct, result.p_correct_swapped)
        if not correct_first:
            as_a, as_b = as_b, as_a
        if result.p_correct_swapped is None:  # options are not responses: scored in the file's order only
            as_a = as_b = None
        first += result.picked == 0
        detail = {"p_file_order": result.p_correct, "p_reversed": result.p_correct_swapped, "picked": result.picked}
        hit = None if binary else result.picked is not None and result.picked in item.correct
        scored.append(Scored(item.id, result.p, as_a, as_b, item.category, {}, detail, hit))
    picks = sum(r.picked is not None for r in found)
    extra = {"picked_first": first, "picked": picks, "picked_first_rate": first / picks if picks else None}
    chance = sum(len(i.correct) / len(i.labels) for i in items) / len(items) if items else 0.5
    return measure(
        scored,
        protocol=AS_WRITTEN,
        file=file,
        judge_model=backend.name,
        settings={},
        seconds=seconds,
        extra=extra,
        chance=chance,
        binary=binary,
    )
