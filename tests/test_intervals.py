"""The compare report's 95% intervals, against hand computations."""

from __future__ import annotations

import math

import pytest

from peftplug.workload.intervals import bootstrap_ratio_interval, majority_rate, wilson_interval


def test_wilson_matches_the_formula_worked_by_hand() -> None:
    # 70 of 100, z = 1.96: centre (0.7 + 1.96^2/200) / (1 + 1.96^2/100) = 0.69260,
    # half-width 1.96 * sqrt(0.21/100 + 1.96^2/40000) / (1 + 1.96^2/100) = 0.08845
    low, high = wilson_interval(70, 100)
    assert low == pytest.approx(0.69260 - 0.08845, abs=2e-5)
    assert high == pytest.approx(0.69260 + 0.08845, abs=2e-5)


def test_wilson_stays_inside_zero_and_one() -> None:
    assert wilson_interval(0, 10)[0] == 0.0  # centre - half is 0 up to rounding, never below
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0, abs=1e-12)
    assert wilson_interval(10, 10)[1] <= 1.0
    low, high = wilson_interval(0, 10)  # 0 of 10: (0, 1.96^2/10 / (1 + 1.96^2/10)) = (0, 0.27754)
    assert high == pytest.approx(0.27754, abs=2e-5) and low == 0.0


def test_the_bootstrap_of_identical_examples_has_no_width() -> None:
    assert bootstrap_ratio_interval([(6.0, 3)] * 50) == (2.0, 2.0)


def test_the_bootstrap_interval_narrows_as_the_square_root_of_the_examples() -> None:
    pairs = [(float(i % 7), 1 + i % 3) for i in range(100)]
    small = bootstrap_ratio_interval(pairs)
    large = bootstrap_ratio_interval(pairs * 16)
    point = sum(v for v, _ in pairs) / sum(c for _, c in pairs)
    assert small[0] < point < small[1] and large[0] < point < large[1]
    ratio = (small[1] - small[0]) / (large[1] - large[0])
    assert ratio == pytest.approx(math.sqrt(16), rel=0.25)  # Monte-Carlo error of 2,000 draws


def test_the_majority_rate() -> None:
    assert majority_rate([0, 1, 1, 1]) == 0.75
