"""Bootstrap intervals of per-query retrieval metrics (resampling queries, seeded).

A metric such as R@1 or mAP is the mean of a per-query value (100 for a hit at rank 1 else
0; 100 * average precision). Its 95 % interval is the percentile interval of that mean over
``num_resamples`` resamples of the queries drawn with replacement from a generator seeded by
``seed``, so the same inputs always give the same interval. Scripts use it directly::

    from mmf.evaluation.bootstrap import bootstrap_interval, paired_difference

    low, high = bootstrap_interval(hits)                  # hits [Q], e.g. 100.0 * (ranks <= 1)
    difference, low, high = paired_difference(reranked_hits, icl_hits)  # same queries, order
    same = low <= 0.0 <= high                             # "no difference" at the 95 % level

Resamples are drawn in chunks of at most ``_MAX_DRAWS`` indices, vectorised with numpy.
"""
from typing import NamedTuple

import numpy as np

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95
_MAX_DRAWS = 1 << 22


def _resampled_means(columns, num_resamples, seed):
    """Means of each column of ``columns`` [Q, C] over the same ``num_resamples`` resamples of
    the Q rows: [num_resamples, C]."""
    num = columns.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAWS // num)
    means = []
    for start in range(0, num_resamples, chunk):
        rows = rng.integers(0, num, size=(min(chunk, num_resamples - start), num))
        means.append(columns[rows].mean(axis=1))
    return np.concatenate(means)


def _check(values, num_resamples, level, name="values"):
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"bootstrap: {name} must be a non-empty 1-d array, got {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"bootstrap: {name} must be finite (per-query values, not ranks)")
    if int(num_resamples) < 1:
        raise ValueError(f"bootstrap: num_resamples must be >= 1, got {num_resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap: level must be in (0, 1), got {level}")
    return values


def _percentiles(samples, level):
    tail = 50.0 * (1.0 - level)
    return np.percentile(samples, [tail, 100.0 - tail], axis=0)


def bootstrap_interval(values, num_resamples=DEFAULT_RESAMPLES, seed=0, level=DEFAULT_LEVEL):
    """Percentile bootstrap interval of ``mean(values)``.

    Args:
        values: [Q] per-query values (e.g. 100 * hit at rank 1).
        num_resamples: B, resamples of the Q queries with replacement.
        seed: seed of the generator (same inputs and seed -> same interval).
        level: coverage, 0.95 for a 95 % interval.
    Returns ``(low, high)`` as floats.
    """
    values = _check(values, num_resamples, level)
    means = _resampled_means(values[:, None], int(num_resamples), seed)[:, 0]
    low, high = _percentiles(means, level)
    return float(low), float(high)


def bootstrap_intervals(columns, num_resamples=DEFAULT_RESAMPLES, seed=0, level=DEFAULT_LEVEL):
    """``bootstrap_interval`` of several metrics of the same queries, resampled together:
    ``{name: [Q] values}`` -> ``{name: (low, high)}``."""
    names = list(columns)
    stacked = np.stack([_check(columns[n], num_resamples, level, n) for n in names], axis=1)
    means = _resampled_means(stacked, int(num_resamples), seed)
    bounds = _percentiles(means, level)
    return {name: (float(bounds[0, i]), float(bounds[1, i])) for i, name in enumerate(names)}


class Difference(NamedTuple):
    """``mean(a) - mean(b)`` and its paired bootstrap interval ``[low, high]``."""

    difference: float
    low: float
    high: float


def paired_difference(values_a, values_b, num_resamples=DEFAULT_RESAMPLES, seed=0,
                      level=DEFAULT_LEVEL):
    """``mean(a) - mean(b)`` of two rankings' per-query values on the same queries (same
    order), with the paired bootstrap interval (each resample draws the same queries for both).

    Returns a ``Difference`` ``(difference, low, high)``; an interval holding 0 means no
    difference at ``level``.
    """
    values_a = _check(values_a, num_resamples, level, "values_a")
    values_b = _check(values_b, num_resamples, level, "values_b")
    if values_a.shape != values_b.shape:
        raise ValueError(
            f"bootstrap: paired values need the same queries, got {values_a.size} and "
            f"{values_b.size}"
        )
    low, high = bootstrap_interval(values_a - values_b, num_resamples, seed, level)
    return Difference(float(values_a.mean() - values_b.mean()), low, high)
