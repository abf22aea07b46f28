"""How good and how well calibrated a judge's probabilities are: intervals, Brier, reliability, coverage.

:func:`wilson_interval` bounds an accuracy, :func:`brier_score`,
:func:`reliability_bins` and :func:`expected_calibration_error` measure
calibration, :func:`coverage_curve` trades coverage for accuracy by abstaining
on low-margin items, and :func:`mirrored` turns a pairwise judge's
probabilities into points a reliability diagram can use. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

COVERAGE_MARGINS: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)

# Slack on the margin comparison so that a margin meant to sit exactly on a
# threshold (|2 * 0.6 - 1| is 0.19999999999999996 in floats) is still kept.
_MARGIN_SLACK = 1e-12


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:  # also rejects NaN
        raise ValueError(f"probability must lie in [0, 1], got {p!r}")


def _check_lengths(probs: Sequence[float], outcomes: Sequence[bool]) -> None:
    if len(probs) != len(outcomes):
        raise ValueError(f"probs and outcomes differ in length: {len(probs)} != {len(outcomes)}")
    for p in probs:
        _check_probability(p)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    Args:
        successes: Number of successes, between 0 and ``n`` (a sum of scores in [0, 1] may be fractional).
        n: Number of trials.
        confidence: Two-sided confidence level, strictly between 0 and 1.

    Returns:
        ``(low, high)``, clamped to [0, 1]; ``(0.0, 1.0)`` when ``n`` is 0.

    Raises:
        ValueError: ``n`` is negative, ``successes`` is outside [0, n] or
            ``confidence`` is outside (0, 1).
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    if n == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    z2 = z * z
    p = successes / n
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def brier_score(probs: Sequence[float], outcomes: Sequence[bool]) -> float | None:
    """Mean squared difference between each probability and its 0/1 outcome.

    Args:
        probs: Predicted probabilities that each outcome is True.
        outcomes: What happened.

    Returns:
        The Brier score (0 is perfect), or None when there are no items.

    Raises:
        ValueError: The sequences differ in length or a probability is outside [0, 1].
    """
    _check_lengths(probs, outcomes)
    if not probs:
        return None
    return sum((p - float(o)) ** 2 for p, o in zip(probs, outcomes, strict=True)) / len(probs)


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram.

    Attributes:
        low: Lower edge (inclusive).
        high: Upper edge (exclusive, except 1.0 for the last bin).
        n: Number of probabilities in the bin.
        mean_p: Their mean, or None when the bin is empty.
        frequency: Share of their outcomes that are True, or None when empty.
    """

    low: float
    high: float
    n: int
    mean_p: float | None
    frequency: float | None


def _bin_index(p: float, bins: int) -> int:
    # Compare against the same edges i / bins that the bins report, so a
    # probability written as an edge (0.7 with 10 bins) lands in the upper bin
    # whatever rounding p * bins happens to do.
    i = min(int(p * bins), bins - 1)
    if i + 1 < bins and p >= (i + 1) / bins:
        i += 1
    elif i > 0 and p < i / bins:
        i -= 1
    return i


def reliability_bins(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> list[ReliabilityBin]:
    """Group probabilities into equal-width bins over [0, 1] with their observed frequency.

    A probability exactly on an inner edge goes to the upper bin; 1.0 goes to
    the last bin. Every bin is returned, empty ones with ``n=0`` and None values.

    Args:
        probs: Predicted probabilities that each outcome is True.
        outcomes: What happened.
        bins: Number of bins, at least 1.

    Returns:
        ``bins`` bins, lowest first.

    Raises:
        ValueError: The sequences differ in length, a probability is outside
            [0, 1] or ``bins`` is below 1.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    _check_lengths(probs, outcomes)
    counts = [0] * bins
    sums = [0.0] * bins
    trues = [0] * bins
    for p, o in zip(probs, outcomes, strict=True):
        i = _bin_index(p, bins)
        counts[i] += 1
        sums[i] += p
        trues[i] += bool(o)
    return [
        ReliabilityBin(
            low=i / bins,
            high=(i + 1) / bins,
            n=counts[i],
            mean_p=sums[i] / counts[i] if counts[i] else None,
            frequency=trues[i] / counts[i] if counts[i] else None,
        )
        for i in range(bins)
    ]


def expected_calibration_error(probs: Sequence[float], outcomes: Sequence[bool], bins: int = 10) -> float | None:
    """Expected calibration error: the size-weighted mean gap between confidence and frequency.

    Sums ``(n_bin / n) * |mean_p - frequency|`` over the non-empty bins of
    :func:`reliability_bins`.

    Args:
        probs: Predicted probabilities that each outcome is True.
        outcomes: What happened.
        bins: Number of equal-width bins.

    Returns:
        The ECE (0 is perfectly calibrated), or None when there are no items.

    Raises:
        ValueError: As for :func:`reliability_bins`.
    """
    table = reliability_bins(probs, outcomes, bins)
    if not probs:
        return None
    total = len(probs)
    return sum(
        b.n / total * abs(b.mean_p - b.frequency) for b in table if b.mean_p is not None and b.frequency is not None
    )


@dataclass(frozen=True)
class CoveragePoint:
    """Accuracy of a judge when it only answers items with at least a given margin.

    Attributes:
        min_margin: The threshold on ``|2p - 1|``.
        kept: Number of items answered at this threshold.
        coverage: ``kept`` over all items (0.0 when there are none).
        accuracy: Share of kept items judged the human way, or None when none kept.
        low: Lower bound of the Wilson 95% interval of ``accuracy`` (0.0 when none kept).
        high: Upper bound of that interval (1.0 when none kept).
    """

    min_margin: float
    kept: int
    coverage: float
    accuracy: float | None
    low: float
    high: float


def coverage_curve(
    p_correct: Sequence[float | None], margins: Sequence[float] = COVERAGE_MARGINS, tie: float = 1e-6
) -> list[CoveragePoint]:
    """Coverage and accuracy of a pairwise judge as it abstains on ever larger margins.

    An item is kept at threshold ``m`` when it has a probability ``p``,
    ``|2p - 1| >= m`` and ``|p - 0.5| > tie``, so a tie is never kept, not even
    at ``m = 0``. A kept item is correct when ``p > 0.5``.

    Args:
        p_correct: Per item, the judge's probability that the human-preferred
            response is better; None where the judge gave no probability.
        margins: The thresholds to report, in the order given.
        tie: Distance from 0.5 within which a probability counts as a tie.

    Returns:
        One :class:`CoveragePoint` per threshold.

    Raises:
        ValueError: A probability is outside [0, 1].
    """
    values = [p for p in p_correct if p is not None]
    for p in values:
        _check_probability(p)
    decided = [p for p in values if abs(p - 0.5) > tie]
    total = len(p_correct)
    out = []
    for m in margins:
        kept = [p for p in decided if abs(2 * p - 1) + _MARGIN_SLACK >= m]
        right = sum(1 for p in kept if p > 0.5)
        low, high = wilson_interval(right, len(kept))
        out.append(
            CoveragePoint(
                min_margin=m,
                kept=len(kept),
                coverage=len(kept) / total if total else 0.0,
                accuracy=right / len(kept) if kept else None,
                low=low,
                high=high,
            )
        )
    return out


def mirrored(p_correct: Sequence[float | None]) -> tuple[list[float], list[bool]]:
    """Calibration points for a pairwise judge: each judgment seen from both responses.

    ``p_correct`` is the probability given to the response people preferred, so
    its outcome is True for every item: on its own it would fill only the
    "True" side of a reliability diagram and say nothing about whether a 0.7
    means "right 70% of the time". Seen from the other response the same
    judgment is a probability ``1 - p`` whose outcome is False. Both points go
    in, so every bin has both outcomes to count; the diagram comes out
    symmetric about 0.5.

    Args:
        p_correct: Per item, the judge's probability that the human-preferred
            response is better; None items are left out.

    Returns:
        ``(probs, outcomes)``: for each item with a probability, ``(p, True)``
        then ``(1 - p, False)``.

    Raises:
        ValueError: A probability is outside [0, 1].
    """
    probs: list[float] = []
    outcomes: list[bool] = []
    for p in p_correct:
        if p is None:
            continue
        _check_probability(p)
        probs += [p, 1 - p]
        outcomes += [True, False]
    return probs, outcomes
