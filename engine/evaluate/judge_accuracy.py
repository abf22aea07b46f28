"""How well a judge agrees with human labels: ``cai judge-eval``'s measurements.

:func:`comparison_principles` gives each comparison its principles,
:func:`evaluate_judge` runs the judge on them (both orders, batched) and
:class:`JudgeEval` holds accuracy, accuracy per order, the position-bias rate
and the margins, with a plain-text report.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from constitution import Constitution, Principle
from constitution.errors import did_you_mean
from engine.evaluate.comparisons import JudgeDataError, LabelledComparison
from engine.judge.pairwise import Judge, Pair, mean
from engine.judge.principles import sample_principles
from engine.judge.stats import QUANTILE_NAMES, pct, quantiles
from engine.records.labels import TIE, Comparison


def comparison_principles(
    items: Sequence[LabelledComparison], constitution: Constitution, k: int, seed: int
) -> list[tuple[Principle, ...]]:
    """The principles each comparison is judged under: its own, or ``k`` sampled by weight.

    Raises:
        JudgeDataError: A comparison names a principle the constitution lacks.
    """
    known = {p.id: p for p in constitution.principles}
    out = []
    for item in items:
        if item.principle is None:
            out.append(sample_principles(constitution, k, seed, item.id))
        elif item.principle in known:
            out.append((known[item.principle],))
        else:
            hint = did_you_mean(item.principle, known)
            raise JudgeDataError(
                f"principle: {item.principle!r} is not in constitution {constitution.id!r}{hint}",
                file=item.file,
                line=item.line,
            )
    return out


@dataclass(frozen=True)
class JudgeEval:
    """How well the judge agrees with human labels, and how much the order of the responses sways it."""

    file: str
    judge_model: str
    settings: dict[str, Any]
    n: int
    correct: int
    ties: int
    """Comparisons the judge scored exactly even (counted as wrong)."""
    unparsed: int
    """Comparisons without a probability (no principle read in both orders); counted as wrong."""
    correct_better_as_a: int
    """Correct when the better response was shown as (A)."""
    correct_better_as_b: int
    """Correct when the better response was shown as (B)."""
    position_biased: int
    """Comparisons whose two orders disagreed: the judge named the same slot both times."""
    picked_a: int
    picked: int
    """Order judgments that named a slot (not tied, read), and how many of them named (A)."""
    mean_p_correct: float | None
    kept: int
    """Comparisons whose margin (``|2p - 1|``) reaches the judge's ``min_margin``: those labelling would keep."""
    kept_correct: int
    """Of those, how many the judge got right."""
    margins: dict[str, float]
    """Quantiles of the margin over all comparisons with a probability."""
    by_category: dict[str, dict[str, float]]
    seconds: float
    verdicts_written: int | None = None
    """Chain of thought: replies that wrote a verdict of their own (of ``2 * n * principles``)."""
    results: tuple[tuple[str, float | None, Comparison], ...] = field(default=(), repr=False)
    """(comparison id, P(the human-preferred response is better), the judgment) for each comparison."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def accuracy_better_as_a(self) -> float:
        return self.correct_better_as_a / self.n if self.n else 0.0

    @property
    def accuracy_better_as_b(self) -> float:
        return self.correct_better_as_b / self.n if self.n else 0.0

    @property
    def position_bias_rate(self) -> float:
        return self.position_biased / self.n if self.n else 0.0

    @property
    def picked_a_rate(self) -> float | None:
        return self.picked_a / self.picked if self.picked else None

    @property
    def kept_accuracy(self) -> float | None:
        return self.kept_correct / self.kept if self.kept else None

    def to_dict(self) -> dict[str, Any]:
        """Counts and rates, JSON-ready (per-comparison results included)."""
        data = asdict(self)
        data["results"] = [
            {"id": i, "p_correct": p, "judgment": r.model_dump(exclude={"first", "second"})} for i, p, r in self.results
        ]
        return data | {
            "accuracy": self.accuracy,
            "accuracy_better_as_a": self.accuracy_better_as_a,
            "accuracy_better_as_b": self.accuracy_better_as_b,
            "position_bias_rate": self.position_bias_rate,
            "picked_a_rate": self.picked_a_rate,
            "kept_accuracy": self.kept_accuracy,
        }

    def render(self) -> str:
        """A short plain-text report."""
        mean = "n/a" if self.mean_p_correct is None else f"{self.mean_p_correct:.3f}"
        lines = [
            f"judge {self.judge_model} on {self.file}: {self.n} comparisons, {self.seconds:.1f} s",
            f"  accuracy (both orders averaged): {pct(self.accuracy)} ({self.correct}/{self.n}); "
            f"ties {self.ties}, unparsed {self.unparsed}; mean P(human choice) {mean}",
            f"  accuracy with the better response as (A): {pct(self.accuracy_better_as_a)}; "
            f"as (B): {pct(self.accuracy_better_as_b)}",
            f"  position bias: orders disagreed on {pct(self.position_bias_rate)} of comparisons; "
            f"(A) named in {pct(self.picked_a_rate)} of {self.picked} single-order answers",
            "  margin |2p-1|: " + (" ".join(f"{k} {v:.3f}" for k, v in self.margins.items()) or "n/a"),
            f"  at min margin {self.settings.get('min_margin', 0):g}: {self.kept} of {self.n} would be labelled, "
            f"{pct(self.kept_accuracy)} of them right",
        ]
        if self.verdicts_written is not None:
            replies = sum(len(r.judgments) for _, _, r in self.results)
            lines.append(f"  chain of thought: {self.verdicts_written} of {replies} replies wrote a verdict")
        if len(self.by_category) > 1:
            lines.append(
                "  by category: "
                + ", ".join(f"{c} {pct(v['accuracy'])} of {int(v['n'])}" for c, v in sorted(self.by_category.items()))
            )
        return "\n".join(lines)


def evaluate_judge(
    judge: Judge,
    items: Sequence[LabelledComparison],
    principles: Sequence[tuple[Principle, ...]],
    *,
    file: str = "",
    chunk: int = 256,
) -> JudgeEval:
    """Run the judge on human-labelled comparisons (both orders, batched) and measure agreement.

    Args:
        judge: The judge to check.
        items: The comparisons (see :func:`load_comparisons`).
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

    def toward(item: LabelledComparison, p_first: float | None) -> float | None:
        """P(the human-preferred response is better) from P(response_a is better)."""
        if p_first is None:
            return None
        return p_first if item.better == "A" else 1.0 - p_first

    def right(p: float | None) -> bool:
        return p is not None and p > 0.5 + TIE

    correct = ties = unparsed = as_a = as_b = biased = 0
    categories: dict[str, list[int]] = {}
    results = []
    for item, r in zip(items, judged, strict=True):
        p = toward(item, r.p_first)
        results.append((item.id, p, r))
        correct += right(p)
        ties += p is not None and abs(p - 0.5) <= TIE
        unparsed += p is None
        # p_first_shown_first: response_a shown as (A); so the better one is (A) there iff better == "A".
        shown_a, shown_b = (
            (r.p_first_shown_first, r.p_first_shown_second)
            if item.better == "A"
            else (r.p_first_shown_second, r.p_first_shown_first)
        )
        as_a += right(toward(item, shown_a))
        as_b += right(toward(item, shown_b))
        biased += r.disagreed
        tally = categories.setdefault(item.category or "uncategorised", [0, 0])
        tally[0] += 1
        tally[1] += right(p)
    readable = [j.p_a for r in judged for j in r.judgments if j.p_a is not None and abs(j.p_a - 0.5) > TIE]
    known = [p for _, p, _ in results if p is not None]
    margins = [abs(2 * p - 1) for p in known]
    kept = [p for p in known if abs(2 * p - 1) > 2 * TIE and abs(2 * p - 1) >= judge.settings.min_margin]
    return JudgeEval(
        file=file,
        judge_model=judge.model,
        settings=judge.settings.model_dump(mode="json"),
        n=len(items),
        correct=correct,
        ties=ties,
        unparsed=unparsed,
        correct_better_as_a=as_a,
        correct_better_as_b=as_b,
        position_biased=biased,
        picked_a=sum(p > 0.5 for p in readable),
        picked=len(readable),
        mean_p_correct=mean(known),
        kept=len(kept),
        kept_correct=sum(p > 0.5 for p in kept),
        margins=dict(zip(QUANTILE_NAMES, (round(m, 4) for m in quantiles(margins)), strict=False)),
        by_category={c: {"n": n, "accuracy": ok / n} for c, (n, ok) in categories.items()},
        seconds=round(seconds, 3),
        verdicts_written=sum(j.stated is not None for r in judged for j in r.judgments) if judge.settings.cot else None,
        results=tuple(results),
    )
