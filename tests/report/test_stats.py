"""The report's statistics: t-intervals of a few seeds, and Welch's comparison of two cells."""

import math

import pytest

from src.report.stats import difference, summarise


def test_the_interval_is_students_t_of_the_seeds():
    summary = summarise([0.1, 0.2, 0.3])
    # sd 0.1, t(0.975, df=2) = 4.3027
    assert summary.mean == pytest.approx(0.2)
    assert summary.sd == pytest.approx(0.1)
    assert summary.ci95 == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-6)
    assert (summary.low, summary.high, summary.n) == (0.1, 0.3, 3)


def test_one_seed_has_no_interval():
    summary = summarise([0.9])
    assert (summary.mean, summary.sd, summary.ci95, summary.n) == (0.9, None, None, 1)


def test_separated_cells_differ_beyond_their_spread():
    gru, lstm = [0.99, 0.991, 0.989, 0.992, 0.99], [0.95, 0.96, 0.94, 0.955, 0.95]
    diff = difference("gru", gru, "lstm", lstm)
    assert diff.delta == pytest.approx(0.0394)
    assert diff.low > 0 and diff.beyond_spread
    assert diff.p_value < 0.001


def test_overlapping_cells_are_within_their_spread():
    diff = difference("gru", [0.90, 0.99, 0.95, 0.97, 0.92], "lstm", [0.93, 0.96, 0.91, 0.98, 0.94])
    assert diff.low < 0 < diff.high
    assert not diff.beyond_spread and diff.p_value > 0.5


def test_cells_without_spread_differ_by_exactly_their_gap():
    assert difference("a", [1.0, 1.0], "b", [1.0, 1.0]).beyond_spread is False
    diff = difference("a", [1.0, 1.0], "b", [0.5, 0.5])
    assert (diff.low, diff.high, diff.beyond_spread) == (0.5, 0.5, True)


def test_a_single_seed_cannot_be_compared():
    diff = difference("a", [0.9], "b", [0.5, 0.6])
    assert diff.low is None and not diff.beyond_spread
