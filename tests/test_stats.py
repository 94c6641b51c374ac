"""Mean, spread and 95% interval of repeated measurements, against scipy's t distribution."""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from scipy import stats as scipy_stats

from evalbench.stats import sample_stats, t95


@pytest.mark.parametrize("dof", [1, 2, 3, 5, 10, 20, 30, 60, 120])
def test_t_quantile_matches_scipy_where_tabled(dof):
    assert t95(dof) == pytest.approx(scipy_stats.t.ppf(0.975, dof), abs=1e-3)


@pytest.mark.parametrize("dof", [11, 17, 45, 100, 500])
def test_t_quantile_between_table_entries_is_conservative(dof):
    exact = scipy_stats.t.ppf(0.975, dof)
    assert exact - 1e-3 <= t95(dof) <= exact + 0.06


@given(st.lists(st.floats(min_value=1, max_value=1e4), min_size=2, max_size=30))
@example([5462.209478305571] * 3)  # equal values: scipy finds a rounding-sized spread
def test_interval_is_scipys_t_interval(values):
    stats = sample_stats(values)
    mean, sem = sum(values) / len(values), scipy_stats.sem(values)
    tiny = 1e-9 * mean  # equal values: either side may compute a rounding-sized spread
    if sem <= tiny:
        assert stats.ci_high - stats.ci_low <= 10 * tiny and stats.ci_low <= mean * (1 + 1e-12)
        return
    low, high = scipy_stats.t.interval(0.95, len(values) - 1, loc=mean, scale=sem)
    width = high - low
    assert stats.ci_low <= mean * (1 + 1e-12) and stats.ci_high >= mean * (1 - 1e-12)
    # table rounding, conservative between tabled degrees of freedom
    assert stats.ci_high - stats.ci_low == pytest.approx(width, rel=0.03, abs=10 * tiny)
    assert stats.cv == pytest.approx(stats.std / stats.mean)


def test_one_sample_has_no_spread():
    stats = sample_stats([5.0])
    assert stats.mean == 5.0 and stats.n == 1
    assert math.isnan(stats.std) and math.isnan(stats.ci_low) and math.isnan(stats.cv)
