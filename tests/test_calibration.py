"""engine.audit.calibration against values worked out by hand."""

from __future__ import annotations

import random

import pytest

from engine.audit.calibration import (
    COVERAGE_MARGINS,
    ReliabilityBin,
    brier_score,
    coverage_curve,
    expected_calibration_error,
    mirrored,
    reliability_bins,
    wilson_interval,
)

# z for 95% is 1.959964, z^2 = 3.841459. Wilson:
#   centre = (p + z^2/(2n)) / (1 + z^2/n)
#   half   = z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/(4n^2))


def test_wilson_zero_successes() -> None:
    # p = 0: half = z/(1+z^2/n) * z/(2n) = centre, so low = 0 and
    # high = 2 * centre = z^2 / (n + z^2) = 3.841459 / 13.841459 = 0.277533
    low, high = wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12)
    assert high == pytest.approx(0.277533, abs=1e-5)


def test_wilson_all_successes_mirrors_zero() -> None:
    # symmetric to 0/10: (1 - 0.277533, 1) = (0.722467, 1)
    low, high = wilson_interval(10, 10)
    assert low == pytest.approx(0.722467, abs=1e-5)
    assert high == pytest.approx(1.0, abs=1e-12)


def test_wilson_half() -> None:
    # p = 0.5, n = 100: centre = 0.5
    # half = 1.959964 / 1.0384146 * sqrt(0.0025 + 3.841459/40000)
    #      = 1.887458 * sqrt(0.0025960365) = 1.887458 * 0.0509513 = 0.096168
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(0.403832, abs=1e-5)
    assert high == pytest.approx(0.596168, abs=1e-5)


def test_wilson_46_of_64() -> None:
    # p = 0.71875, z^2/n = 0.0600228, denom = 1.0600228
    # centre = (0.71875 + 0.0300114) / 1.0600228 = 0.7487614 / 1.0600228 = 0.706364
    # p(1-p)/n = 0.2021484/64 = 0.0031586; z^2/(4n^2) = 3.841459/16384 = 0.0002345
    # half = (1.959964 / 1.0600228) * sqrt(0.0033930) = 1.848983 * 0.0582498 = 0.107703
    low, high = wilson_interval(46, 64)
    assert low == pytest.approx(0.598661, abs=1e-4)
    assert high == pytest.approx(0.814066, abs=1e-4)


def test_wilson_confidence_changes_width() -> None:
    # a higher confidence level gives a wider interval around the same data
    low95, high95 = wilson_interval(30, 50)
    low99, high99 = wilson_interval(30, 50, confidence=0.99)
    assert low99 < low95 < 0.6 < high95 < high99


def test_wilson_no_trials_and_bad_input() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(-1, 4)
    with pytest.raises(ValueError):
        wilson_interval(1, 4, confidence=1.0)


def test_coin_flip_judge_is_not_above_chance() -> None:
    # A judge that only ever says 0.5 plus or minus a hair is right about half
    # the time; its interval must not exclude chance.
    rng = random.Random(0)
    p_correct: list[float | None] = [0.5 + rng.uniform(-0.01, 0.01) for _ in range(400)]
    (point,) = coverage_curve(p_correct, margins=(0.0,))
    assert point.kept > 390  # only exact ties (within 1e-6) are dropped
    assert point.low <= 0.5 <= point.high


def test_clearly_better_than_chance() -> None:
    # 300/400 = 0.75; the lower bound is about 0.705 (half-width ~0.042)
    low, _ = wilson_interval(300, 400)
    assert low > 0.5


def test_wilson_coverage_near_nominal() -> None:
    # Wilson's exact coverage oscillates with n and p; at n = 100, p = 0.7 it is
    # about 0.937 (sum of Binomial(100, 0.7) over the covered x), just under 95%.
    rng = random.Random(0)
    runs, n, p = 2000, 100, 0.7
    covered = 0
    for _ in range(runs):
        successes = sum(rng.random() < p for _ in range(n))
        low, high = wilson_interval(successes, n)
        covered += low <= p <= high
    assert 0.93 <= covered / runs <= 0.97


def test_brier_three_items() -> None:
    # (0.9 - 1)^2 + (0.2 - 0)^2 + (0.6 - 0)^2 = 0.01 + 0.04 + 0.36 = 0.41; / 3 = 0.136667
    assert brier_score([0.9, 0.2, 0.6], [True, False, False]) == pytest.approx(0.41 / 3)


def test_brier_empty_and_mismatch() -> None:
    assert brier_score([], []) is None
    with pytest.raises(ValueError):
        brier_score([0.5], [True, False])
    with pytest.raises(ValueError):
        brier_score([1.5], [True])


# Four bins: [0, .25) [.25, .5) [.5, .75) [.75, 1]
#   0.1  F -> bin 0
#   0.25 T -> bin 1 (on an inner edge: upper bin)
#   0.4  F -> bin 1
#   0.8  T -> bin 3
#   1.0  T -> bin 3 (1.0 goes to the last bin)
#   0.9  F -> bin 3
PROBS = [0.1, 0.25, 0.4, 0.8, 1.0, 0.9]
OUTCOMES = [False, True, False, True, True, False]


def test_reliability_bins_hand_example() -> None:
    table = reliability_bins(PROBS, OUTCOMES, bins=4)
    assert [(b.low, b.high, b.n) for b in table] == [(0.0, 0.25, 1), (0.25, 0.5, 2), (0.5, 0.75, 0), (0.75, 1.0, 3)]
    # bin 0: mean 0.1, 0/1 True
    assert table[0].mean_p == pytest.approx(0.1)
    assert table[0].frequency == 0.0
    # bin 1: mean (0.25 + 0.4)/2 = 0.325, 1/2 True
    assert table[1].mean_p == pytest.approx(0.325)
    assert table[1].frequency == 0.5
    # bin 2: empty
    assert table[2] == ReliabilityBin(low=0.5, high=0.75, n=0, mean_p=None, frequency=None)
    # bin 3: mean (0.8 + 1.0 + 0.9)/3 = 0.9, 2/3 True
    assert table[3].mean_p == pytest.approx(0.9)
    assert table[3].frequency == pytest.approx(2 / 3)


def test_ece_hand_example() -> None:
    # (1/6)|0.1 - 0| + (2/6)|0.325 - 0.5| + (3/6)|0.9 - 2/3|
    # = (0.1 + 0.35 + 0.7) / 6 = 1.15 / 6 = 0.191667
    assert expected_calibration_error(PROBS, OUTCOMES, bins=4) == pytest.approx(1.15 / 6)


def test_ece_perfect_and_empty() -> None:
    # four points at 0.25 (1 of 4 True) and four at 0.75 (3 of 4 True): each bin matches
    probs = [0.25] * 4 + [0.75] * 4
    outcomes = [True, False, False, False, True, True, True, False]
    assert expected_calibration_error(probs, outcomes) == pytest.approx(0.0)
    assert expected_calibration_error([], []) is None


def test_every_decimal_edge_lands_in_its_upper_bin() -> None:
    # k/10 is the lower edge of bin k, whatever rounding k/10 * 10 does
    probs = [k / 10 for k in range(10)] + [1.0]
    table = reliability_bins(probs, [True] * len(probs), bins=10)
    assert [b.n for b in table] == [1] * 9 + [2]
    assert [b.n for b in reliability_bins([0.3, 0.6, 0.7], [True] * 3)] == [0, 0, 0, 1, 0, 0, 1, 1, 0, 0]
    # 15/22 * 22 is 14.999999999999998 in floats, yet 15/22 is bin 15's lower edge
    assert reliability_bins([15 / 22], [True], bins=22)[15].n == 1


def test_reliability_bins_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        reliability_bins([0.5], [True], bins=0)
    with pytest.raises(ValueError):
        reliability_bins([-0.1], [True])
    with pytest.raises(ValueError):
        reliability_bins([float("nan")], [True])


def test_coverage_curve_hand_example() -> None:
    # p:      0.9   0.3   None  0.5   0.6   0.52  0.05
    # |2p-1|: 0.8   0.4   -     0     0.2   0.04  0.9
    # right:  yes   no    -     tie   yes   yes   no
    p_correct = [0.9, 0.3, None, 0.5, 0.6, 0.52, 0.05]
    points = coverage_curve(p_correct, margins=(0.0, 0.1, 0.2, 0.5, 0.9, 0.95))
    summary = [(pt.min_margin, pt.kept, pt.accuracy) for pt in points]
    assert summary == [
        (0.0, 5, pytest.approx(3 / 5)),  # all but None and the tie; 0.9, 0.6, 0.52 right
        (0.1, 4, pytest.approx(2 / 4)),  # 0.52 drops out
        (0.2, 4, pytest.approx(2 / 4)),  # 0.6 sits exactly on the margin and stays
        (0.5, 2, pytest.approx(1 / 2)),  # 0.9 and 0.05
        (0.9, 1, 0.0),  # 0.05 only, wrong
        (0.95, 0, None),
    ]
    assert [pt.coverage for pt in points] == pytest.approx([5 / 7, 4 / 7, 4 / 7, 2 / 7, 1 / 7, 0.0])
    assert (points[0].low, points[0].high) == wilson_interval(3, 5)
    assert (points[-1].low, points[-1].high) == (0.0, 1.0)


def test_coverage_curve_ties_and_empty() -> None:
    # within `tie` of 0.5 counts as a tie and is never kept
    (point,) = coverage_curve([0.5 + 1e-9, 0.5 - 1e-9, 0.5], margins=(0.0,))
    assert (point.kept, point.coverage, point.accuracy) == (0, 0.0, None)
    points = coverage_curve([])
    assert len(points) == len(COVERAGE_MARGINS)
    assert all(pt.kept == 0 and pt.coverage == 0.0 and pt.accuracy is None for pt in points)
    with pytest.raises(ValueError):
        coverage_curve([1.2])


def test_mirrored_gives_both_sides() -> None:
    probs, outcomes = mirrored([0.8, None, 0.3])
    assert probs == pytest.approx([0.8, 0.2, 0.3, 0.7])
    assert outcomes == [True, False, True, False]
    # a judge right 3 times in 4 at p = 0.75 (its wrong item reads 0.25) is
    # calibrated; seen from both sides the bins at 0.25 and 0.75 each hold
    # 1 True in 4 and 3 True in 4
    probs, outcomes = mirrored([0.75, 0.75, 0.75, 0.25])
    assert expected_calibration_error(probs, outcomes) == pytest.approx(0.0)
    assert mirrored([None]) == ([], [])
