"""Ranking of query embeddings against galleries.

Each query is ranked against one gallery: the images of its own group (its livestream on
LPR4M) or, with ``query_groups=None``, one global gallery (MovingFashion). Scores are dot
products of the embeddings (cosine similarity for unit-norm embeddings). Livestreams of
similar gallery size are padded into one batch and scored with one batched matrix product;
ranks and top-k lists come from whole-tensor operations on those scores, so the LPR4M test
set (20,079 queries, 110 livestreams) takes a few batches, not a loop over queries.

Tie rule (deterministic, the original's stable sort): gallery items with equal scores keep
their gallery order, so the 1-based rank of gallery item ``j`` for a query is::

    rank(j) = 1 + #{i : s_i > s_j} + #{i < j : s_i == s_j}

A query with several ground-truth images is ranked by its best one. A ground-truth query that
has no embedding, or none of whose ground-truth images is in its gallery, is a miss: its rank
is ``inf`` and its average precision 0. Ids are compared after ``mmf.datasets.ids.normalize_id``
(a file name and its stem match). The metrics of a ranking are in ``mmf.evaluation.metrics``.
"""
import dataclasses
import math
from typing import NamedTuple

import torch

from mmf.common.errors import DataError
from mmf.datasets.ids import normalize_id

GLOBAL_GROUP = "__global__"


@dataclasses.dataclass
class RankingResult:
    """Outcome of ranking every ground-truth query.

    Attributes:
        query_ids: the ground-truth queries, in ground-truth order ([Q]).
        ranks: [Q] float64, 1-based rank of the best ground truth; ``inf`` for a miss.
        average_precision: [Q] float64 in [0, 1].
        topk_indices: [Q, K] long indices into ``gallery_ids`` (best first); -1 pads rows of
            queries without an embedding and galleries smaller than K.
        topk_scores: [Q, K] float32 scores of ``topk_indices``; NaN where the index is -1.
        gallery_ids: normalised ids of the gallery items, in gallery order.
        missing: ground-truth queries without an embedding (counted as misses).
        no_positive_in_gallery: queries none of whose ground-truth images is in their gallery.
        extra: queries with an embedding but no ground truth (not scored).
        gallery_sizes: [Q] long, size of each query's gallery (0 for missing queries).
        positive_ranks: [Q, P] float64 ranks of every ground-truth image in the gallery,
            ascending, ``inf``-padded.
    """

    query_ids: list
    ranks: torch.Tensor
    average_precision: torch.Tensor
    topk_indices: torch.Tensor
    topk_scores: torch.Tensor
    gallery_ids: list
    gallery_sizes: torch.Tensor
    positive_ranks: torch.Tensor
    missing: list = dataclasses.field(default_factory=list)
    no_positive_in_gallery: list = dataclasses.field(default_factory=list)
    extra: list = dataclasses.field(default_factory=list)

    def topk_ids(self, row):
        """``[(gallery_id, score), ...]`` of query ``row``, best first."""
        pairs = zip(self.topk_indices[row].tolist(), self.topk_scores[row].tolist(), strict=True)
        return [(self.gallery_ids[index], score) for index, score in pairs if index >= 0]


class _Unit(NamedTuple):
    """Queries of one group scored together: positions into the ground-truth list, the
    group's gallery rows, and ``{gallery id: [columns within those rows]}``."""

    positions: list
    rows: list
    columns_of_id: dict


class _BucketRanks(NamedTuple):
    """What ``_rank_bucket`` returns for its Q real queries."""

    positions: torch.Tensor  # [Q] positions in the ground-truth list
    best: torch.Tensor  # [Q] best rank
    average_precision: torch.Tensor  # [Q]
    positive_ranks: torch.Tensor  # [Q, P]
    topk_indices: torch.Tensor  # [Q, k'] gallery rows, -1 padded
    topk_scores: torch.Tensor  # [Q, k'] NaN padded
    gallery_sizes: torch.Tensor  # [Q]


def normalize_ground_truth(ground_truth):
    """``{query_id: id or [ids]}`` -> ``{normalised query id: [normalised ids]}`` (first
    occurrence order, repeats dropped)."""
    normalized = {}
    for query_id, targets in ground_truth.items():
        if isinstance(targets, (str, bytes)):
            targets = [targets]
        normalized[normalize_id(query_id)] = list(dict.fromkeys(normalize_id(t) for t in targets))
    return normalized


def rank_queries(
    query_emb,
    query_ids,
    gallery_emb,
    gallery_ids,
    ground_truth,
    query_groups=None,
    gallery_groups=None,
    topk=10,
    device="cpu",
    max_scores=1 << 23,
):
    """Rank every ground-truth query against the gallery of its group.

    Args:
        query_emb: [N, E] query embeddings; ``query_ids`` [N] their ids (unique).
        gallery_emb: [G, E] gallery embeddings; ``gallery_ids`` [G] their ids, in gallery
            order (the tie order).
        ground_truth: ``{query_id: [gallery ids]}``; its keys are the queries that count.
        query_groups, gallery_groups: [N] / [G] group names (live ids), or both None for one
            global gallery.
        topk: length of the top lists kept per query.
        device: where scores are computed ("cpu" or "cuda").
        max_scores: score-matrix elements computed at once. Groups of similar gallery size
            are scored together with one batched matrix product (padded), so the whole
            LPR4M test set takes a handful of tensor operations rather than a few per
            livestream; a group larger than this is split by queries.

    Raises ``DataError`` for a query (with ground truth) whose group has no gallery, for
    duplicate query ids and for non-finite embeddings.
    """
    query_ids, gallery_ids, query_groups, gallery_groups = _check_inputs(
        query_emb, query_ids, gallery_emb, gallery_ids, query_groups, gallery_groups
    )
    ground_truth = normalize_ground_truth(ground_truth)
    row_of_query = _row_of_query(query_ids)
    gt_queries = list(ground_truth)
    units = _work_units(
        gt_queries, row_of_query, query_groups, gallery_groups, gallery_ids, max_scores
    )
    ranked = [
        _rank_bucket(
            bucket, query_emb, gallery_emb, row_of_query, gt_queries, ground_truth, topk, device
        )
        for bucket in _buckets(units, max_scores)
    ]
    tensors, no_positive = _assemble(ranked, len(gt_queries), topk)
    return RankingResult(
        query_ids=gt_queries,
        gallery_ids=gallery_ids,
        missing=[q for q in gt_queries if q not in row_of_query],
        no_positive_in_gallery=[gt_queries[p] for p in no_positive],
        extra=[q for q in query_ids if q not in ground_truth],
        **tensors,
    )


def _check_inputs(query_emb, query_ids, gallery_emb, gallery_ids, query_groups, gallery_groups):
    """Normalised ids, and the groups (one global group when both are None)."""
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("query_groups and gallery_groups must both be given or both be None")
    query_ids = [normalize_id(q) for q in query_ids]
    gallery_ids = [normalize_id(g) for g in gallery_ids]
    if query_emb.shape[0] != len(query_ids) or gallery_emb.shape[0] != len(gallery_ids):
        raise ValueError(
            f"{query_emb.shape[0]} query embeddings for {len(query_ids)} ids, "
            f"{gallery_emb.shape[0]} gallery embeddings for {len(gallery_ids)} ids"
        )
    if query_groups is None:
        query_groups = [GLOBAL_GROUP] * len(query_ids)
        gallery_groups = [GLOBAL_GROUP] * len(gallery_ids)
    _check_finite(query_emb, "query")
    _check_finite(gallery_emb, "gallery")
    return query_ids, gallery_ids, query_groups, gallery_groups


def _row_of_query(query_ids):
    row_of_query = {}
    for row, query_id in enumerate(query_ids):
        if query_id in row_of_query:
            raise DataError(f"query id {query_id!r} has two embeddings")
        row_of_query[query_id] = row
    return row_of_query


def _work_units(gt_queries, row_of_query, query_groups, gallery_groups, gallery_ids, max_scores):
    """One ``_Unit`` per group with queries (split by queries when its scores exceed
    ``max_scores``); ``DataError`` naming a group that has queries but no gallery."""
    gallery_rows = {}
    for row, group in enumerate(gallery_groups):
        gallery_rows.setdefault(str(group), []).append(row)
    queries_of_group = {}
    for position, query_id in enumerate(gt_queries):
        row = row_of_query.get(query_id)
        if row is not None:
            queries_of_group.setdefault(str(query_groups[row]), []).append(position)
    units = []
    for group, positions in queries_of_group.items():
        rows = gallery_rows.get(group)
        if rows is None:
            raise DataError(
                f"livestream {group!r} has no gallery images, but {len(positions)} "
                f"ground-truth queries (e.g. {gt_queries[positions[0]]!r}) belong to it"
            )
        columns_of_id = {}
        for column, row in enumerate(rows):
            columns_of_id.setdefault(gallery_ids[row], []).append(column)
        step = max(1, max_scores // len(rows))
        for begin in range(0, len(positions), step):
            units.append(_Unit(positions[begin : begin + step], rows, columns_of_id))
    return units


def _assemble(ranked, num, topk):
    """Bucket results -> the ``RankingResult`` tensors of ``num`` queries (misses where no
    bucket wrote) and the sorted positions of queries without a positive in their gallery."""
    ranks = torch.full((num,), math.inf, dtype=torch.float64)
    average_precision = torch.zeros(num, dtype=torch.float64)
    topk_indices = torch.full((num, topk), -1, dtype=torch.long)
    topk_scores = torch.full((num, topk), math.nan, dtype=torch.float32)
    gallery_sizes = torch.zeros(num, dtype=torch.long)
    width = max([1] + [part.positive_ranks.shape[1] for part in ranked])
    positive_ranks = torch.full((num, width), math.inf, dtype=torch.float64)
    no_positive = []
    for part in ranked:
        positions = part.positions
        ranks[positions] = part.best
        average_precision[positions] = part.average_precision
        positive_ranks[positions, : part.positive_ranks.shape[1]] = part.positive_ranks
        topk_indices[positions, : part.topk_indices.shape[1]] = part.topk_indices
        topk_scores[positions, : part.topk_scores.shape[1]] = part.topk_scores
        gallery_sizes[positions] = part.gallery_sizes
        no_positive.extend(positions[~torch.isfinite(part.best)].tolist())
    tensors = dict(
        ranks=ranks, average_precision=average_precision, topk_indices=topk_indices,
        topk_scores=topk_scores, gallery_sizes=gallery_sizes, positive_ranks=positive_ranks,
    )
    return tensors, sorted(no_positive)


def _buckets(units, max_scores):
    """Group work units of similar gallery size so that each padded batch [B, Qmax, Gmax]
    holds at most ``max_scores`` elements (a unit alone may exceed it only by its rows)."""
    units = sorted(units, key=lambda unit: len(unit.rows))
    bucket, queries, gallery = [], 0, 0
    for unit in units:
        new_queries, new_gallery = max(queries, len(unit.positions)), max(gallery, len(unit.rows))
        if bucket and (len(bucket) + 1) * new_queries * new_gallery > max_scores:
            yield bucket
            bucket, new_queries, new_gallery = [], len(unit.positions), len(unit.rows)
        bucket.append(unit)
        queries, gallery = new_queries, new_gallery
    if bucket:
        yield bucket


def _rank_bucket(
    bucket, query_emb, gallery_emb, row_of_query, gt_queries, ground_truth, topk, device
):
    """Score and rank the units of one bucket with one batched matrix product; returns
    ``_BucketRanks`` of the bucket's real (unpadded) queries."""
    width = max(len(unit.positions) for unit in bucket)
    size = max(len(unit.rows) for unit in bucket)
    query_rows = torch.zeros(len(bucket), width, dtype=torch.long)
    query_valid = torch.zeros(len(bucket), width, dtype=torch.bool)
    gallery_index = torch.zeros(len(bucket), size, dtype=torch.long)
    gallery_valid = torch.zeros(len(bucket), size, dtype=torch.bool)
    positives, positions, sizes = [], [], []
    for slot, (unit_positions, rows, columns_of_id) in enumerate(bucket):
        count = len(unit_positions)
        query_rows[slot, :count] = torch.as_tensor(
            [row_of_query[gt_queries[p]] for p in unit_positions]
        )
        query_valid[slot, :count] = True
        gallery_index[slot, : len(rows)] = torch.as_tensor(rows)
        gallery_valid[slot, : len(rows)] = True
        for p in unit_positions:
            targets = ground_truth[gt_queries[p]]
            positives.append([c for gt in targets for c in columns_of_id.get(gt, ())])
        positives.extend([] for _ in range(width - count))
        positions.extend(unit_positions)
        sizes.extend([len(rows)] * count)

    queries = query_emb[query_rows.flatten()].view(len(bucket), width, -1)
    gallery = gallery_emb[gallery_index.flatten()].view(len(bucket), size, -1)
    queries = queries.to(device=device, dtype=torch.float32)
    gallery = gallery.to(device=device, dtype=torch.float32)
    scores = torch.bmm(queries, gallery.transpose(1, 2))
    scores = scores.masked_fill(~gallery_valid.to(device)[:, None, :], -math.inf).flatten(0, 1)

    keep = query_valid.flatten().nonzero()[:, 0]
    positive_ranks, ap = _positive_ranks(scores, positives)
    index, value = stable_topk(scores, topk)
    index, value = index.cpu(), value.cpu()
    slots = torch.arange(len(bucket)).repeat_interleave(width)[:, None].expand_as(index)
    rows = gallery_index[slots, index]
    real = gallery_valid[slots, index]
    rows = torch.where(real, rows, -1)
    value = torch.where(real, value, math.nan)
    return _BucketRanks(
        positions=torch.as_tensor(positions, dtype=torch.long),
        best=positive_ranks[:, 0].cpu()[keep],
        average_precision=ap.cpu()[keep],
        positive_ranks=positive_ranks.cpu()[keep],
        topk_indices=rows[keep],
        topk_scores=value[keep],
        gallery_sizes=torch.as_tensor(sizes, dtype=torch.long),
    )


def _check_finite(embeddings, what):
    if not embeddings.numel() or torch.isfinite(embeddings.sum()):
        return  # one reduction instead of a full mask in the common case
    if not torch.isfinite(embeddings).all():
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero()[:, 0].tolist()
        raise DataError(f"{len(bad)} {what} embeddings are not finite (rows {bad[:10]})")


def _positive_ranks(scores, positives):
    """Ranks (tie rule above) of the positives of each query.

    Args:
        scores: [Q, G] scores of Q queries against one gallery.
        positives: Q lists of gallery columns holding a ground-truth image.
    Returns:
        ranks: [Q, max(P, 1)] float64 ranks of the positives, ascending, inf-padded (column 0
            is the best rank, inf when a query has no positive);
        ap: [Q] float64 average precision over the query's positives.
    """
    num, size = scores.shape
    width = max((len(p) for p in positives), default=0)
    if width == 0:
        ranks = torch.full((num, 1), math.inf, dtype=torch.float64, device=scores.device)
        return ranks, torch.zeros(num, dtype=torch.float64, device=scores.device)
    padded = [cols + [-1] * (width - len(cols)) for cols in positives]
    columns = torch.tensor(padded, dtype=torch.long, device=scores.device)
    valid = columns >= 0
    safe = columns.clamp(min=0)
    target = scores.gather(1, safe)  # [Q, P]
    greater = (scores.unsqueeze(1) > target.unsqueeze(2)).sum(dim=2)
    order = torch.arange(size, device=scores.device)
    earlier_tie = (
        (scores.unsqueeze(1) == target.unsqueeze(2)) & (order.view(1, 1, -1) < safe.unsqueeze(2))
    ).sum(dim=2)
    rank = (greater + earlier_tie + 1).to(torch.float64)
    rank = torch.where(valid, rank, torch.full_like(rank, math.inf)).sort(dim=1).values
    return rank, average_precision_from_ranks(rank)


def average_precision_from_ranks(ranks):
    """[Q, P] ascending positive ranks (inf-padded) -> [Q] AP = mean_i i / r_i."""
    hits = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    finite = torch.isfinite(ranks)
    precision = torch.where(finite, hits / ranks, 0.0)
    return precision.sum(dim=1) / finite.sum(dim=1).clamp(min=1)


def stable_topk(scores, k):
    """Top ``k`` columns of each row, best first, ties in column order.

    Args:
        scores: [Q, G] finite scores.
    Returns:
        indices [Q, min(k, G)] long and values [Q, min(k, G)].
    """
    num, size = scores.shape
    k = min(k, size)
    if k == 0 or num == 0:
        empty = torch.zeros((num, k), dtype=torch.long, device=scores.device)
        return empty, scores.new_zeros((num, k))
    kth = scores.topk(k, dim=1).values[:, -1:]
    above = scores > kth
    tied = scores == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    index = chosen.nonzero()[:, 1].view(num, k)
    value = scores.gather(1, index)
    value, perm = value.sort(dim=1, descending=True, stable=True)
    return index.gather(1, perm), value
