"""Bootstrap intervals of mmf.evaluation.bootstrap on inputs with a known answer."""
import math

import numpy as np
import pytest

from mmf.evaluation import bootstrap
from mmf.evaluation.bootstrap import bootstrap_interval, bootstrap_intervals, paired_difference


def test_constant_values_give_a_zero_width_interval():
    assert bootstrap_interval(np.ones(50)) == (1.0, 1.0)
    assert bootstrap_interval([100.0] * 7, num_resamples=10) == (100.0, 100.0)


def test_fixed_seed_reproduces_and_another_seed_differs():
    values = np.random.default_rng(3).random(200)
    first = bootstrap_interval(values, seed=5)
    assert bootstrap_interval(values, seed=5) == first
    assert bootstrap_interval(values, seed=6) != first
    low, high = first
    assert low < values.mean() < high


def test_large_bernoulli_sample_matches_the_normal_approximation(monkeypatch):
    """n = 10,000 hits with p = 0.3 (resampled in several chunks): the percentile interval is
    within 0.004 of p_hat -/+ 1.96 * sqrt(p_hat (1 - p_hat) / n) (half-width 0.009)."""
    monkeypatch.setattr(bootstrap, "_MAX_DRAWS", 10_000 * 300)  # 300 resamples per chunk
    n = 10_000
    values = (np.random.default_rng(0).random(n) < 0.3).astype(float)
    p_hat = values.mean()
    half_width = 1.959964 * math.sqrt(p_hat * (1 - p_hat) / n)
    low, high = bootstrap_interval(values, num_resamples=2000, seed=1)
    assert low == pytest.approx(p_hat - half_width, abs=0.004)
    assert high == pytest.approx(p_hat + half_width, abs=0.004)


def test_level_widens_the_interval():
    values = np.random.default_rng(1).random(300)
    low95, high95 = bootstrap_interval(values, level=0.95)
    low50, high50 = bootstrap_interval(values, level=0.5)
    assert low95 < low50 < high50 < high95


def test_several_metrics_share_the_resamples():
    values = np.random.default_rng(2).random(100)
    both = bootstrap_intervals({"a": values, "b": 2 * values}, num_resamples=500, seed=3)
    assert both["a"] == pytest.approx(bootstrap_interval(values, num_resamples=500, seed=3))
    assert both["b"] == pytest.approx(tuple(2 * v for v in both["a"]))


def test_paired_difference():
    # A constant shift on every query: the paired interval has zero width.
    base = np.random.default_rng(4).random(80)
    assert paired_difference(base + 0.25, base) == pytest.approx((0.25, 0.25, 0.25))
    # The same ranking twice: no difference, the interval is [0, 0] and holds 0.
    difference, low, high = paired_difference(base, base)
    assert (difference, low, high) == (0.0, 0.0, 0.0)
    # One query of 80 changes from a miss to a hit: +1/80, and the interval holds 0.
    before = np.zeros(80)
    after = before.copy()
    after[7] = 1.0
    change = paired_difference(after, before, seed=0)
    assert change.difference == pytest.approx(1 / 80)
    assert change.low <= 0.0 <= change.high
    # 30 of 80 change to hits: a difference (the interval excludes 0).
    after[:30] = 1.0
    assert paired_difference(after, before).low > 0.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_interval([])
    with pytest.raises(ValueError, match="finite"):
        bootstrap_interval([1.0, math.inf])
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap_interval([1.0], num_resamples=0)
    with pytest.raises(ValueError, match="same queries"):
        paired_difference([1.0, 0.0], [1.0])
