"""Agreement between several judges on the same items: Cohen's kappa, Krippendorff's alpha, majority vote.

Labels are any hashable values compared for equality (nominal data); None
marks a missing judgment. Standard library only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from fractions import Fraction


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
