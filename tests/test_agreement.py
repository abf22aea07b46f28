"""engine.audit.agreement against values worked out by hand."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Hashable, Sequence

import pytest

from engine.audit.agreement import cohen_kappa, krippendorff_alpha, majority


def test_kappa_two_by_two() -> None:
    #            b=yes  b=no
    #   a=yes      4      1     (a: 5 yes)
    #   a=no       2      3     (a: 5 no)
    #   (b: 6 yes, 4 no)
    # p_o = (4 + 3)/10 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5
    # kappa = (0.7 - 0.5)/(1 - 0.5) = 0.4
    a = ["y", "y", "y", "y", "y", "n", "n", "n", "n", "n"]
    b = ["y", "y", "y", "y", "n", "y", "y", "n", "n", "n"]
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_kappa_perfect_and_systematic_disagreement() -> None:
    assert cohen_kappa([1, 2, 3, 1], [1, 2, 3, 1]) == pytest.approx(1.0)
    # p_o = 0; p_e = 0.5*0.5 + 0.5*0.5 = 0.5; kappa = (0 - 0.5)/0.5 = -1
    assert cohen_kappa(["x", "y", "x", "y"], ["y", "x", "y", "x"]) == pytest.approx(-1.0)


def test_kappa_single_category() -> None:
    # both raters used "a" only: p_e = 1, defined as 1.0 since they always agree
    assert cohen_kappa(["a", "a", "a"], ["a", "a", "a"]) == 1.0
    # one rater constant, the other not: p_o = 3/4, p_e = 1*3/4; kappa = 0
    assert cohen_kappa(["a", "a", "a", "a"], ["a", "a", "a", "b"]) == pytest.approx(0.0)


def test_kappa_skips_missing() -> None:
    # only items 1, 2 and 5 have both labels: (y,y) (n,n) (y,n)
    # p_o = 2/3; a: 2 y 1 n, b: 1 y 2 n; p_e = (2*1 + 1*2)/9 = 4/9
    # kappa = (2/3 - 4/9)/(1 - 4/9) = (2/9)/(5/9) = 0.4
    a = ["y", "n", None, "y", "y"]
    b = ["y", "n", "n", None, "n"]
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa([None, "y"], ["n", None]) is None
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["y"], ["y", "n"])


def test_alpha_hand_example() -> None:
    # unit:   1  2  3  4  5     6
    # coder1: a  a  b  b  a     a
    # coder2: a  b  b  b  None  a
    # unit 5 has one value: not pairable. n = 10 values, n_a = 5, n_b = 5
    # observed: unit 2 gives the ordered pairs (a,b) and (b,a), each 1/(2-1): sum = 2
    # expected: n^2 - sum n_c^2 = 100 - 25 - 25 = 50
    # alpha = 1 - (10 - 1) * 2 / 50 = 1 - 18/50 = 0.64
    ratings = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"], ["a", None], ["a", "a"]]
    assert krippendorff_alpha(ratings) == pytest.approx(0.64)


def test_alpha_krippendorff_textbook_example() -> None:
    # Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011): four
    # observers, twelve units, published nominal alpha = 0.743.
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    c = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    ratings = [list(unit) for unit in zip(a, b, c, d, strict=True)]
    # by hand: unit 12 has one value and drops; n_1..n_5 = 9, 13, 10, 5, 3 (n = 40)
    # observed: unit 2 (2,2,3,2): (16 - 9 - 1)/3 = 2; unit 6 (1,2,3,4): (16 - 4)/3 = 4;
    #           unit 8 (1,1,2,1): 2; total 8
    # expected: 1600 - (81 + 169 + 100 + 25 + 9) = 1216
    # alpha = 1 - 39 * 8 / 1216 = 1 - 312/1216 = 0.743421
    assert krippendorff_alpha(ratings) == pytest.approx(1 - 312 / 1216)
    assert round(krippendorff_alpha(ratings) or 0.0, 3) == 0.743


def _scott_pi(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    # Scott's pi: p_e from the pooled label frequencies of both coders
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pooled = Counter(a) + Counter(b)
    p_e = sum((k / (2 * n)) ** 2 for k in pooled.values())
    return (p_o - p_e) / (1 - p_e)


def test_alpha_two_coders_relation_to_scott_pi() -> None:
    # With 2 coders, N units and no missing values, n = 2N and each disagreeing
    # unit adds 2 to the observed sum, so with D disagreements and pooled p_e:
    #   alpha = 1 - (2N - 1) * 2D / (4N^2 (1 - p_e)) = 1 - (1 - 1/(2N)) * (1 - pi)
    rng = random.Random(0)
    for _ in range(20):
        units = rng.randint(3, 30)
        a = [rng.choice("xyz") for _ in range(units)]
        b = [x if rng.random() < 0.6 else rng.choice("xyz") for x in a]
        if len(set(a) | set(b)) < 2:
            continue
        pi = _scott_pi(a, b)
        expected = 1 - (1 - 1 / (2 * units)) * (1 - pi)
        assert krippendorff_alpha([[x, y] for x, y in zip(a, b, strict=True)]) == pytest.approx(expected)


def test_alpha_all_agree_and_single_category() -> None:
    assert krippendorff_alpha([["a", "a", "a"], ["b", "b", None], ["c", "c", "c"]]) == pytest.approx(1.0)
    # one category only: expected disagreement 0, defined as 1.0
    assert krippendorff_alpha([["a", "a"], ["a", "a"], ["a", None]]) == 1.0


def test_alpha_skips_units_without_pairs() -> None:
    base = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"], ["a", "a"]]
    thin = [*base, ["a", None], [None, "b"], [None, None]]
    assert krippendorff_alpha(thin) == pytest.approx(krippendorff_alpha(base) or 0.0)
    assert krippendorff_alpha([["a", None], [None, None]]) is None
    assert krippendorff_alpha([]) is None


def test_alpha_rejects_ragged_units() -> None:
    with pytest.raises(ValueError):
        krippendorff_alpha([["a", "b"], ["a", "b", "c"]])


def test_majority() -> None:
    assert majority(["a", "b", "a", None]) == "a"
    assert majority([None, "b", None]) == "b"
    assert majority(["a", "b"]) is None  # exact tie
    assert majority(["a", "b", "b", "a", "c"]) is None  # tie for first place
    assert majority([None, None]) is None
    assert majority([]) is None
