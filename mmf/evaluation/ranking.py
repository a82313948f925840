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
    group's gallery rows, and the (query, column) pairs of their ground-truth images:
    ``pair_queries[i]`` indexes ``positions``, ``pair_columns[i]`` indexes ``rows``."""

    positions: list
    rows: list
    pair_queries: list
    pair_columns: list


class _BucketRanks(NamedTuple):
    """What ``_rank_bucket`` returns for its Q real queries."""

    positions: torch.Tensor  # [Q] positions in the ground-truth list
    best: torch.Tensor  # [Q] best rank
    average_precision: torch.Tensor  # [Q]
    positive_ranks: torch.Tensor  # [Q, P]
    topk_indices: torch.Tensor  # [Q, k'] gallery rows, -1 padded
    topk_scores: torch.Tensor  # [Q, k'] NaN padded
    gallery_sizes: torch.Tensor  # [Q]


def normalize_ground_truth(ground_truth, normalize=normalize_id):
    """``{query_id: id or [ids]}`` -> ``{normalised query id: [normalised ids]}`` (first
    occurrence order, repeats dropped)."""
    normalized = {}
    for query_id, targets in ground_truth.items():
        if isinstance(targets, (str, bytes)):
            targets = [targets]
        normalized[normalize(query_id)] = list(dict.fromkeys(normalize(t) for t in targets))
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
    max_scores=1 << 18,
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
            are scored together with one batched matrix product (padded), so many small
            livestreams cost a few tensor operations; a group larger than this is split by
            queries. The default keeps a batch's scores (1 MiB) in a CPU's cache while they
            are compared and counted.

    Raises ``DataError`` for a query (with ground truth) whose group has no gallery, for
    duplicate query ids and for non-finite embeddings.
    """
    normalize = _memoized(normalize_id)
    query_ids, gallery_ids, query_groups, gallery_groups = _check_inputs(
        query_emb, query_ids, gallery_emb, gallery_ids, query_groups, gallery_groups, normalize
    )
    ground_truth = normalize_ground_truth(ground_truth, normalize)
    row_of_query = _row_of_query(query_ids)
    gt_queries = list(ground_truth)
    units = _work_units(
        gt_queries, ground_truth, row_of_query, query_groups, gallery_groups, gallery_ids,
        max_scores,
    )
    ranked = [
        _rank_bucket(bucket, query_emb, gallery_emb, row_of_query, gt_queries, topk, device)
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


def _memoized(function):
    """``function`` of one hashable argument, computed once per distinct argument (query ids
    recur as ground-truth keys, gallery ids as ground-truth images)."""
    cache = {}

    def call(value):
        result = cache.get(value)
        if result is None:
            result = cache[value] = function(value)
        return result

    return call


def _check_inputs(
    query_emb, query_ids, gallery_emb, gallery_ids, query_groups, gallery_groups, normalize
):
    """Normalised ids, and the groups (one global group when both are None)."""
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("query_groups and gallery_groups must both be given or both be None")
    query_ids = [normalize(q) for q in query_ids]
    gallery_ids = [normalize(g) for g in gallery_ids]
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


def _work_units(
    gt_queries, ground_truth, row_of_query, query_groups, gallery_groups, gallery_ids, max_scores
):
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
        first, more = _columns_of_ids([gallery_ids[row] for row in rows])
        step = max(1, max_scores // len(rows))
        for begin in range(0, len(positions), step):
            part = positions[begin : begin + step]
            targets = (ground_truth[gt_queries[p]] for p in part)
            units.append(_Unit(part, rows, *_positive_pairs(targets, first, more)))
    return units


def _columns_of_ids(ids):
    """``{id: first column}`` and ``{id: [later columns]}`` for ids that repeat (plain
    dicts of ints: a list per id would make Python's garbage collector walk them all)."""
    first, more = {}, {}
    for column, gallery_id in enumerate(ids):
        if first.setdefault(gallery_id, column) != column:
            more.setdefault(gallery_id, []).append(column)
    return first, more


def _positive_pairs(targets_of_queries, first, more):
    """Flat ``(query index, column)`` pairs of each query's ground-truth images, grouped by
    query in order."""
    queries, columns = [], []
    for index, targets in enumerate(targets_of_queries):
        for target in targets:
            column = first.get(target)
            if column is None:
                continue
            queries.append(index)
            columns.append(column)
            for column in more.get(target, ()):
                queries.append(index)
                columns.append(column)
    return queries, columns


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


def _rank_bucket(bucket, query_emb, gallery_emb, row_of_query, gt_queries, topk, device):
    """Score and rank the units of one bucket with one (batched) matrix product; returns
    ``_BucketRanks`` of the bucket's real (unpadded) queries."""
    width = max(len(unit.positions) for unit in bucket)
    size = max(len(unit.rows) for unit in bucket)
    query_rows = torch.zeros(len(bucket), width, dtype=torch.long)
    query_valid = torch.zeros(len(bucket), width, dtype=torch.bool)
    gallery_index = torch.zeros(len(bucket), size, dtype=torch.long)
    gallery_valid = torch.zeros(len(bucket), size, dtype=torch.bool)
    pair_rows, pair_columns, positions, sizes = [], [], [], []
    for slot, unit in enumerate(bucket):
        count = len(unit.positions)
        query_rows[slot, :count] = torch.as_tensor(
            [row_of_query[gt_queries[p]] for p in unit.positions]
        )
        query_valid[slot, :count] = True
        gallery_index[slot, : len(unit.rows)] = torch.as_tensor(unit.rows)
        gallery_valid[slot, : len(unit.rows)] = True
        pair_rows.append(torch.as_tensor(unit.pair_queries, dtype=torch.long) + slot * width)
        pair_columns.extend(unit.pair_columns)
        positions.extend(unit.positions)
        sizes.extend([len(unit.rows)] * count)

    scores = _scores(query_emb, gallery_emb, query_rows, gallery_index, gallery_valid, device)
    columns = _pad_ragged(
        torch.cat(pair_rows), torch.as_tensor(pair_columns, dtype=torch.long),
        len(bucket) * width, fill=-1,
    )
    keep = query_valid.flatten().nonzero()[:, 0]
    positive_ranks, ap, index, value = _rank_rows(scores, columns.to(scores.device), topk)
    index, value = index.cpu(), value.cpu()
    slots = torch.arange(len(bucket)).repeat_interleave(width)[:, None].expand_as(index)
    safe = index.clamp(min=0)
    real = (index >= 0) & gallery_valid[slots, safe]
    rows = torch.where(real, gallery_index[slots, safe], -1)
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


def _scores(query_emb, gallery_emb, query_rows, gallery_index, gallery_valid, device):
    """[B*W, S] float32 scores of B units' (padded) queries against their (padded)
    galleries; -inf in padding gallery columns. One unit (the common case on LPR4M) is one
    matrix product on a slice of the gallery when its rows are contiguous."""
    num, width = query_rows.shape
    size = gallery_index.shape[1]
    queries = query_emb.index_select(0, query_rows.flatten()).view(num, width, -1)
    queries = queries.to(device=device, dtype=torch.float32)
    first = int(gallery_index[0, 0])
    if num == 1 and torch.equal(gallery_index[0], torch.arange(first, first + size)):
        gallery = gallery_emb[first : first + size].to(device=device, dtype=torch.float32)
        return queries[0] @ gallery.T
    gallery = gallery_emb.index_select(0, gallery_index.flatten()).view(num, size, -1)
    gallery = gallery.to(device=device, dtype=torch.float32)
    scores = torch.bmm(queries, gallery.transpose(1, 2))
    if not bool(gallery_valid.all()):
        scores.masked_fill_(~gallery_valid.to(device)[:, None, :], -math.inf)
    return scores.flatten(0, 1)


def _pad_ragged(rows, values, num, fill, width=0):
    """Entries ``values[i]`` of row ``rows[i]`` (rows ascending) -> [num, max(width, most
    entries of a row)], each row's entries first, in order, then ``fill``."""
    counts = torch.bincount(rows, minlength=num)
    width = max(width, int(counts.max())) if rows.numel() else width
    slot = torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows]
    padded = torch.full((num, width), fill, dtype=values.dtype, device=values.device)
    padded[rows, slot] = values
    return padded


def _check_finite(embeddings, what):
    if not embeddings.numel() or torch.isfinite(embeddings.sum()):
        return  # one reduction instead of a full mask in the common case
    if not torch.isfinite(embeddings).all():
        bad = (~torch.isfinite(embeddings)).any(dim=1).nonzero()[:, 0].tolist()
        raise DataError(f"{len(bad)} {what} embeddings are not finite (rows {bad[:10]})")


def _rank_rows(scores, columns, k):
    """Ranks of the positives (tie rule above) and the stable top ``k`` of each row.

    One comparison of the scores with, per row, the positives' scores ``t`` (``s > t``) and
    the next float below them (``s > t-`` is ``s >= t``) gives the counts: the rank is
    ``#(s > t) + 1`` unless another column ties with ``t`` (then the earlier ties are
    counted on those rows alone). The top k is found among the columns at or above a lower
    bound of the k-th largest score (``kth_lower_bound``).

    Args:
        scores: [Q, G] scores; -inf marks padding columns (never ranked, never in a top k).
        columns: [Q, P] long gallery columns holding a ground-truth image, -1 padded.
    Returns:
        ranks: [Q, max(P, 1)] float64 ranks of the positives, ascending, inf-padded (column 0
            is the best rank, inf when a query has no positive);
        ap: [Q] float64 average precision over the query's positives;
        index: [Q, min(k, G)] long top-k columns, best first (padding columns last);
        values: their scores.
    """
    num, width = columns.shape
    if width == 0:
        rank = torch.full((num, 1), math.inf, dtype=torch.float64, device=scores.device)
    else:
        safe = columns.clamp(min=0)
        target = scores.gather(1, safe)  # [Q, P]
        below = torch.nextafter(target, target.new_tensor(-math.inf))
        # A float comparison result sums about 4x faster than a bool one on CPU; exact
        # below 2**24 columns.
        above = scores.new_empty((num, 2 * width, scores.shape[1]))
        torch.gt(scores.unsqueeze(1), torch.cat([target, below], dim=1).unsqueeze(2), out=above)
        counts = above.sum(dim=2).to(torch.float64)
        greater, at_least = counts[:, :width], counts[:, width:]
        rank = greater + 1 + _ties_before(scores, target, safe, at_least - greater > 1)
        rank = torch.where(columns >= 0, rank, math.inf)
        rank = rank.sort(dim=1).values
    k = min(k, scores.shape[1])
    index, values = _top_of_candidates(scores, scores >= kth_lower_bound(scores, k), k)
    return rank, average_precision_from_ranks(rank), index, values


def _ties_before(scores, target, columns, tied):
    """[Q, P] number of columns before ``columns`` whose score equals ``target``, computed
    only where ``tied`` (another column has the same score)."""
    before = torch.zeros(tied.shape, dtype=torch.float64, device=scores.device)
    if not bool(tied.any()):
        return before
    rows, slots = tied.nonzero(as_tuple=True)
    order = torch.arange(scores.shape[1], device=scores.device)
    equal = scores[rows] == target[rows, slots, None]
    before[rows, slots] = (equal & (order < columns[rows, slots, None])).sum(dim=1).double()
    return before


def average_precision_from_ranks(ranks):
    """[Q, P] ascending positive ranks (inf-padded) -> [Q] AP = mean_i i / r_i."""
    hits = torch.arange(1, ranks.shape[1] + 1, device=ranks.device, dtype=torch.float64)
    finite = torch.isfinite(ranks)
    precision = torch.where(finite, hits / ranks, 0.0)
    return precision.sum(dim=1) / finite.sum(dim=1).clamp(min=1)


def kth_lower_bound(scores, k):
    """[Q, 1] a value at most the k-th largest score of each row (k <= G; +inf for k = 0).

    The k-th largest of the maxima of 4k or more disjoint column sets: those maxima are k
    scores at least that large. Few columns reach it, so the top k is then found among them
    rather than by ``topk`` over every column (``topk`` is the dearest step on CPU). The
    sets are strided (columns j, j + m, j + 2m, ...) so that the maxima reduce contiguous
    rows.
    """
    num, size = scores.shape
    if k == 0:
        return scores.new_full((num, 1), math.inf)
    depth = size // (4 * k)
    if depth < 2:
        return scores.topk(k, dim=1).values[:, -1:]
    sets = size // depth
    maxima = scores[:, : depth * sets].unflatten(1, (depth, sets)).amax(dim=1)
    return maxima.topk(k, dim=1).values[:, -1:]


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
    return _top_of_candidates(scores, scores >= kth_lower_bound(scores, k), k)


def _top_of_candidates(scores, candidates, k):
    """Stable top ``k`` of each row among its ``candidates`` ([Q, G] bool holding every
    column that scores at least the row's k-th largest score): [Q, k] columns (-1 where a
    row has fewer candidates) and their scores (-inf there)."""
    rows, cols = candidates.nonzero(as_tuple=True)  # row-major: columns ascending per row
    num = scores.shape[0]
    values = _pad_ragged(rows, scores[rows, cols], num, fill=-math.inf, width=k)
    index = _pad_ragged(rows, cols, num, fill=-1, width=k)
    values, order = values.sort(dim=1, descending=True, stable=True)
    return index.gather(1, order[:, :k]), values[:, :k]
