"""Rank-based retrieval metrics of a ``RankingResult`` (``mmf.evaluation.ranking``).

Metrics are percentages: ``r@k`` is the share of queries whose best ground truth ranks at
most ``k`` (rank-k accuracy, the original's TopK hit), ``map`` the mean average precision over
the ground-truth images present in the gallery, ``median_rank`` the median best rank.
"""
import math

import torch

from mmf.datasets.ids import normalize_id

DEFAULT_KS = (1, 3, 5, 10)


def retrieval_metrics(ranks, average_precision, ks=DEFAULT_KS):
    """Rank-k accuracy, mAP and median rank (percentages except the rank).

    Args:
        ranks: [Q] best rank per query, ``inf`` for misses.
        average_precision: [Q] in [0, 1].
    Returns ``{"r@k": %, ..., "map": %, "median_rank": float or None, "num_queries": Q}``;
    ``median_rank`` is None when more than half of the queries are misses.
    """
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    num = ranks.numel()
    metrics = {}
    for k in ks:
        metrics[f"r@{k}"] = 100.0 * (ranks <= k).sum().item() / num if num else 0.0
    metrics["map"] = 100.0 * float(torch.as_tensor(average_precision).sum()) / num if num else 0.0
    median = ranks.quantile(0.5).item() if num else math.inf
    metrics["median_rank"] = median if math.isfinite(median) else None
    metrics["num_queries"] = num
    return metrics


def metrics_by_label(result, labels, ks=DEFAULT_KS, ranks=None, average_precision=None):
    """``{label: metrics}`` over the queries of each label (e.g. category, hard/regular).

    ``labels`` maps query ids to a label; queries without one are left out. ``ranks`` and
    ``average_precision`` default to the result's own (pass re-ranked ones to reuse rows).
    """
    ranks = result.ranks if ranks is None else ranks
    average_precision = result.average_precision if average_precision is None else average_precision
    labels = {normalize_id(q): label for q, label in labels.items()}
    rows_of_label = {}
    for row, query_id in enumerate(result.query_ids):
        label = labels.get(query_id)
        if label is not None:
            rows_of_label.setdefault(str(label), []).append(row)
    report = {}
    for label in sorted(rows_of_label):
        rows = torch.as_tensor(rows_of_label[label], dtype=torch.long)
        report[label] = retrieval_metrics(ranks[rows], average_precision[rows], ks)
    return report


def summarize(result, ks=DEFAULT_KS, ranks=None, average_precision=None):
    """Metrics of ``result`` plus the counts of missing / unscored queries."""
    ranks = result.ranks if ranks is None else ranks
    average_precision = result.average_precision if average_precision is None else average_precision
    metrics = retrieval_metrics(ranks, average_precision, ks)
    metrics["num_missing"] = len(result.missing)
    metrics["num_no_positive_in_gallery"] = len(result.no_positive_in_gallery)
    metrics["num_extra"] = len(result.extra)
    return metrics
