"""How several judges agree on the same labelled items, and how good their combined label is.

The statistics (nominal labels, None for a missing one; standard library only):
:func:`cohen_kappa` for two raters, :func:`krippendorff_alpha` for any number,
:func:`majority` for a vote. :func:`agreement` takes one :class:`~engine.audit.accuracy.JudgeEval`
per judge (same items, same protocol) and gives Cohen's kappa for each pair of
judges, Krippendorff's alpha over all of them, the accuracy of the aggregate
label (mean probability, and majority vote), and for each pair how often the
two are right and wrong together: side by side, a weak judge against a strong
one shows how often the weak supervisor agrees with the strong, and where the
strong one is right and the weak one wrong.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Any

from engine.audit.accuracy import JudgeEval, right
from engine.audit.calibration import wilson_interval
from engine.judge.pairwise import mean, vote
from engine.judge.panel import panel_names
from engine.judge.stats import pct


def cohen_kappa(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float | None:
    """Cohen's kappa between two raters, over the items both of them labelled.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the share of items on
    which they agree and ``p_e`` the agreement expected from each rater's own
    label frequencies.

    When ``p_e`` is 1 the formula is 0/0. That happens only when both raters
    used one and the same category throughout; this returns 1.0 then if the
    observed agreement is 1 (which it then always is) and 0.0 otherwise,
    treating identical constant labels as perfect agreement rather than as
    undefined.

    Args:
        a: First rater's labels, one per item; None where missing.
        b: Second rater's labels for the same items.

    Returns:
        Kappa in [-1, 1], or None when no item has both labels.

    Raises:
        ValueError: ``a`` and ``b`` differ in length.
    """
    if len(a) != len(b):
        raise ValueError(f"raters labelled different numbers of items: {len(a)} != {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    n = len(pairs)
    if n == 0:
        return None
    agree = sum(1 for x, y in pairs if x == y)
    count_a = Counter(x for x, _ in pairs)
    count_b = Counter(y for _, y in pairs)
    # Whole numbers scaled by n * n so the p_e == 1 test is exact.
    expected = sum(count_a[c] * count_b[c] for c in count_a)
    if expected == n * n:
        return 1.0 if agree == n else 0.0
    return (agree * n - expected) / (n * n - expected)


def krippendorff_alpha(ratings: Sequence[Sequence[Hashable | None]]) -> float | None:
    """Krippendorff's alpha for nominal data, from the coincidence matrix.

    Units with fewer than two values are not pairable and are left out. Each
    pairable unit with ``m`` values adds ``1 / (m - 1)`` to ``o[c][k]`` for every
    ordered pair of its values from different coders; ``n_c`` is the number of
    pairable values equal to ``c`` and ``n`` their total. Then
    ``alpha = 1 - (n - 1) * sum_{c != k} o[c][k] / sum_{c != k} n_c * n_k``.

    When the expected disagreement is 0 (a single category is used throughout)
    the formula is 0/0; this returns 1.0 then if the observed disagreement is
    also 0 (which it then always is) and 0.0 otherwise, as :func:`cohen_kappa`
    does.

    Args:
        ratings: ``ratings[unit][coder]``, None where that coder gave no value.
            Every unit lists the same coders.

    Returns:
        Alpha (1 is perfect agreement, 0 is chance, below 0 systematic
        disagreement), or None when fewer than two values are pairable.

    Raises:
        ValueError: Units have different numbers of coders.
    """
    coders = {len(unit) for unit in ratings}
    if len(coders) > 1:
        raise ValueError(f"units have different numbers of coders: {sorted(coders)}")
    totals: Counter[Hashable] = Counter()
    observed = Fraction(0)
    for unit in ratings:
        values = Counter(v for v in unit if v is not None)
        m = sum(values.values())
        if m < 2:
            continue
        totals.update(values)
        # Ordered pairs of this unit's values that differ, weighted 1 / (m - 1).
        observed += Fraction(m * m - sum(k * k for k in values.values()), m - 1)
    n = sum(totals.values())
    if n < 2:
        return None
    expected = n * n - sum(k * k for k in totals.values())
    if expected == 0:
        return 1.0 if observed == 0 else 0.0
    return float(1 - (n - 1) * observed / expected)


def majority(votes: Sequence[Hashable | None]) -> Hashable | None:
    """The most common non-None vote.

    Args:
        votes: One vote per judge; None where a judge did not vote.

    Returns:
        The winning vote, or None on an exact tie for first place or when
        every vote is None.
    """
    top = Counter(v for v in votes if v is not None).most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


@dataclass(frozen=True)
class PairAgreement:
    """Two judges on the same items."""

    first: str
    second: str
    kappa: float | None
    agree: int
    """Items on which both voted, and voted alike."""
    voted: int
    """Items on which both voted."""
    both_right: int
    first_only: int
    """Items the first judge got right and the second wrong."""
    second_only: int
    both_wrong: int


@dataclass(frozen=True)
class Agreement:
    """Agreement between several judges, and the accuracy of their aggregate label."""

    judges: tuple[str, ...]
    n: int
    alpha: float | None
    """Krippendorff's alpha (nominal) over all judges' votes."""
    pairs: tuple[PairAgreement, ...]
    mean_correct: int
    """Items the aggregate label (mean probability over the judges) gets right."""
    majority_correct: int
    """Items the majority vote gets right (an even split counts as wrong)."""
    disagreed: tuple[str, ...]
    """Ids of the items the judges' votes split on."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_accuracy"] = self.mean_correct / self.n if self.n else 0.0
        data["majority_accuracy"] = self.majority_correct / self.n if self.n else 0.0
        data["mean_interval"] = list(wilson_interval(self.mean_correct, self.n))
        return data

    def render(self) -> str:
        alpha = "n/a" if self.alpha is None else f"{self.alpha:.3f}"
        low, high = wilson_interval(self.mean_correct, self.n)
        lines = [
            f"agreement of {len(self.judges)} judges on {self.n} items: Krippendorff's alpha {alpha}; "
            f"votes split on {len(self.disagreed)}",
            f"  aggregate label (mean probability): {pct(self.mean_correct / self.n if self.n else 0)} "
            f"({self.mean_correct}/{self.n}), 95% interval {pct(low)}-{pct(high)}; "
            f"majority vote: {pct(self.majority_correct / self.n if self.n else 0)}",
        ]
        for p in self.pairs:
            kappa = "n/a" if p.kappa is None else f"{p.kappa:.3f}"
            lines.append(
                f"  {p.first} vs {p.second}: Cohen's kappa {kappa}, agree on {p.agree} of {p.voted}; "
                f"both right {p.both_right}, only {p.first} right {p.first_only}, "
                f"only {p.second} right {p.second_only}, both wrong {p.both_wrong}"
            )
        return "\n".join(lines)


def agreement(evals: Sequence[JudgeEval]) -> Agreement:
    """Agreement between judges scored on the same items (in the same order).

    Raises:
        ValueError: Fewer than two judges, or they were scored on different items.
    """
    if len(evals) < 2:
        raise ValueError("agreement needs at least two judges")
    ids = [s.id for s in evals[0].results]
    if any([s.id for s in e.results] != ids for e in evals):
        raise ValueError("the judges were scored on different items")
    names = panel_names([e.judge_model for e in evals])
    ps = [[s.p for s in e.results] for e in evals]
    votes = [[vote(p) for p in row] for row in ps]
    by_item = list(zip(*votes, strict=True))
    pairs = []
    for i in range(len(evals)):
        for j in range(i + 1, len(evals)):
            both = [(a, b) for a, b in zip(votes[i], votes[j], strict=True) if a is not None and b is not None]
            ok_i, ok_j = [s.right for s in evals[i].results], [s.right for s in evals[j].results]
            pairs.append(
                PairAgreement(
                    first=names[i],
                    second=names[j],
                    kappa=cohen_kappa(votes[i], votes[j]),
                    agree=sum(a == b for a, b in both),
                    voted=len(both),
                    both_right=sum(a and b for a, b in zip(ok_i, ok_j, strict=True)),
                    first_only=sum(a and not b for a, b in zip(ok_i, ok_j, strict=True)),
                    second_only=sum(b and not a for a, b in zip(ok_i, ok_j, strict=True)),
                    both_wrong=sum(not a and not b for a, b in zip(ok_i, ok_j, strict=True)),
                )
            )
    means = [mean([p for p in column if p is not None]) for column in zip(*ps, strict=True)]
    return Agreement(
        judges=tuple(names),
        n=len(ids),
        alpha=krippendorff_alpha(by_item),
        pairs=tuple(pairs),
        mean_correct=sum(right(p) for p in means),
        majority_correct=sum(majority(item) == "first" for item in by_item),  # p is P(the human's choice)
        disagreed=tuple(i for i, item in zip(ids, by_item, strict=True) if len({v for v in item if v}) > 1),
    )
