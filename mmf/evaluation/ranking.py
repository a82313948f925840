"""Ranking of query embeddings against galleries.

Each query is ranked against one gallery: the images of its own group (its livestream on
LPR4M) or, with ``query_groups=None``, one global gallery (MovingFashion). Scores are dot
products of the embeddings (cosine similarity for unit-norm embeddings). Queries are sorted
by group once ("slots"), so a group's queries are one contiguous block; groups of similar
gallery size are scored together into one padded score block, one matrix product per group
written in place, and ranks and top-k lists come from whole-tensor operations on that
block, so the LPR4M test set (20,079 queries, 110 livestreams) takes a few dozen blocks, not
a loop over queries.

Tie rule (deterministic, the original's stable sort): gallery items with equal scores keep
their gallery order, so the 1-based rank of gallery item ``j`` for a query is::

    rank(j) = 1 + #{i : s_i > s_j} + #{i < j : s_i == s_j}

A query with several ground-truth images is ranked by its best one. A ground-truth query that
has no embedding, or none of whose ground-truth images is in its gallery, is a miss: its rank
is ``inf`` and its average precision 0. Ids are compared after ``mmf.datasets.ids.normalize_id``
(a file name and its stem match). The metrics of a ranking are in ``mmf.evaluation.metrics``.
"""

import dataclasses
import itertools
import math
from typing import NamedTuple

import numpy as np
import torch

from mmf.common.errors import DataError
from mmf.datasets.ids import normalize_id, normalize_ids

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


class _Layout(NamedTuple):
    """The ground-truth queries that have an embedding ("slots") and the gallery, sorted by
    group. Slots are ordered by the gallery size of their group (a group's queries are
    consecutive, in ground-truth order), so that groups of similar size are neighbours and
    a batch of groups is a range of slots."""

    slot_positions: torch.Tensor  # [S] position of each slot in the ground-truth list
    slot_rows: torch.Tensor  # [S] its row in the query embeddings
    slot_gallery_begin: torch.Tensor  # [S] where its group's gallery begins in gallery_rows
    slot_gallery_size: torch.Tensor  # [S] the size of that gallery
    gallery_rows: torch.Tensor  # [G] gallery rows, grouped, in gallery order within a group
    positive_columns: torch.Tensor  # [S, P] ground-truth columns in the group's gallery, -1 pad
    positive_counts: torch.Tensor  # [S] ground-truth images of each slot in its gallery


class _Unit(NamedTuple):
    """Slots ``slot_begin:slot_end`` of one group and the group's gallery
    ``gallery_rows[gallery_begin:gallery_end]``; ``first_row``: the first of those gallery
    rows when they are consecutive, else -1."""

    slot_begin: int
    slot_end: int
    gallery_begin: int
    gallery_end: int
    first_row: int


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
        ground_truth: ``{query_id: id or [gallery ids]}``; its keys are the queries that count.
        query_groups, gallery_groups: [N] / [G] group names (live ids), or both None for one
            global gallery.
        topk: length of the top lists kept per query.
        device: where scores are computed ("cpu" or "cuda").
        max_scores: score-matrix elements computed at once. Groups of similar gallery size
            are scored together into one block (padded to the largest gallery), so many
            small livestreams cost a few tensor operations; a group larger than this is split
            by queries. The default keeps a block's scores (1 MiB) in a CPU's cache while
            they are compared and counted.

    Raises ``DataError`` for a query (with ground truth) whose group has no gallery, for
    duplicate query ids and for non-finite embeddings.
    """
    raw_query_ids, raw_gallery_ids = list(query_ids), list(gallery_ids)
    query_ids, gallery_ids = _check_inputs(
        query_emb, raw_query_ids, gallery_emb, raw_gallery_ids, query_groups, gallery_groups
    )
    gt_queries, owners, targets = _flat_ground_truth(
        ground_truth, dict(zip(raw_query_ids, query_ids, strict=True)),
        dict(zip(raw_gallery_ids, gallery_ids, strict=True)),
    )
    row_of_query = _row_of_query(query_ids)
    rows = _long(map(row_of_query.get, gt_queries, itertools.repeat(-1)))
    query_group, gallery_group = _group_codes(
        query_groups, gallery_groups, len(query_ids), len(gallery_ids)
    )
    # -1 (no embedding) picks the appended -2: group codes are -2 (no embedding), -1 (a
    # group without gallery) or the group.
    group = torch.cat([query_group, _long([-2])])[rows]
    _check_groups(group, rows, gt_queries, query_groups)
    gallery_code, target_code = _id_codes(gallery_ids, targets)
    layout = _layout(
        group, rows, gallery_group, torch.bincount(gallery_group), gallery_code, target_code,
        owners,
    )
    counts = layout.positive_counts
    width = max(1, int(counts.max()) if len(counts) else 0)
    ranked = _filled(len(layout.slot_positions), topk, width)
    for bucket in _buckets(_work_units(layout, max_scores), max_scores):
        _rank_bucket(bucket, query_emb, gallery_emb, layout, topk, device, ranked)
    ranked["ranks"] = ranked["positive_ranks"][:, 0]
    ranked["gallery_sizes"] = layout.slot_gallery_size
    result = _filled(len(gt_queries), topk, width)
    for name, values in ranked.items():
        result[name][layout.slot_positions] = values
    no_positive = (torch.isinf(result["ranks"]) & (rows >= 0)).nonzero()[:, 0].tolist()
    known = set(gt_queries)
    return RankingResult(
        query_ids=gt_queries,
        gallery_ids=gallery_ids,
        missing=[gt_queries[p] for p in (rows < 0).nonzero()[:, 0].tolist()],
        no_positive_in_gallery=[gt_queries[p] for p in no_positive],
        extra=[q for q in query_ids if q not in known],
        **result,
    )


def _long(values):
    """[n] long tensor of an iterable of ints (numpy reads an iterable ~3x faster than
    ``torch.tensor`` reads a list)."""
    return torch.from_numpy(np.fromiter(values, dtype=np.int64))


def _check_inputs(query_emb, query_ids, gallery_emb, gallery_ids, query_groups, gallery_groups):
    """Normalised query and gallery ids; ``ValueError`` for mismatched lengths."""
    if (query_groups is None) != (gallery_groups is None):
        raise ValueError("query_groups and gallery_groups must both be given or both be None")
    query_ids = normalize_ids(query_ids)
    gallery_ids = normalize_ids(gallery_ids)
    if query_emb.shape[0] != len(query_ids) or gallery_emb.shape[0] != len(gallery_ids):
        raise ValueError(
            f"{query_emb.shape[0]} query embeddings for {len(query_ids)} ids, "
            f"{gallery_emb.shape[0]} gallery embeddings for {len(gallery_ids)} ids"
        )
    if query_groups is not None and (
        len(query_groups) != len(query_ids) or len(gallery_groups) != len(gallery_ids)
    ):
        raise ValueError(
            f"{len(query_groups)} query groups for {len(query_ids)} queries, "
            f"{len(gallery_groups)} gallery groups for {len(gallery_ids)} gallery images"
        )
    _check_finite(query_emb, "query")
    _check_finite(gallery_emb, "gallery")
    return query_ids, gallery_ids


def _flat_ground_truth(ground_truth, query_ids, gallery_ids):
    """``{query_id: id or [ids]}`` -> the normalised query ids (first occurrence order; an
    id given twice keeps its last targets) and their targets, flat: [T] long positions of
    the owning query and [T] normalised ids. ``query_ids`` and ``gallery_ids`` map the
    given ids to their normalised ones (most ground-truth ids are among them)."""
    keys = _normalized(ground_truth, query_ids)
    merged = dict(zip(keys, ground_truth.values(), strict=True))
    targets = [[t] if isinstance(t, (str, bytes)) else list(t) for t in merged.values()]
    owners = torch.repeat_interleave(_long(map(len, targets)))
    flat = _normalized(itertools.chain.from_iterable(targets), gallery_ids)
    return list(merged), owners, flat


def _normalized(ids, known):
    """``[normalize_id(i) for i in ids]``, looked up in ``{id: normalised id}`` first (only
    for strings: a string equals no other type, so the lookup cannot confuse 1 and "1")."""
    return [
        (known.get(i) or normalize_id(i)) if isinstance(i, str) else normalize_id(i)
        for i in ids
    ]


def _row_of_query(query_ids):
    row_of_query = dict(zip(query_ids, itertools.count()))
    if len(row_of_query) < len(query_ids):
        seen = set()
        for query_id in query_ids:
            if query_id in seen:
                raise DataError(f"query id {query_id!r} has two embeddings")
            seen.add(query_id)
    return row_of_query


def _group_codes(query_groups, gallery_groups, num_queries, num_gallery):
    """[N] and [G] long codes of the query and gallery groups (compared as strings); -1 for
    a query group without gallery images."""
    if query_groups is None:
        code = 0 if num_gallery else -1
        return (
            torch.full((num_queries,), code, dtype=torch.long),
            torch.zeros(num_gallery, dtype=torch.long),
        )
    names = list(map(str, gallery_groups))
    vocabulary = dict(zip(dict.fromkeys(names), itertools.count()))
    gallery = _long(map(vocabulary.__getitem__, names))
    query = _long(map(vocabulary.get, map(str, query_groups), itertools.repeat(-1)))
    return query, gallery


def _check_groups(group, rows, gt_queries, query_groups):
    """``DataError`` naming the first group (in ground-truth order) that has queries but no
    gallery."""
    bad = (group == -1).nonzero()[:, 0].tolist()
    if not bad:
        return
    rows = rows.tolist()
    name = GLOBAL_GROUP if query_groups is None else str(query_groups[rows[bad[0]]])
    count = sum(
        1 for p in bad if query_groups is None or str(query_groups[rows[p]]) == name
    )
    raise DataError(
        f"livestream {name!r} has no gallery images, but {count} "
        f"ground-truth queries (e.g. {gt_queries[bad[0]]!r}) belong to it"
    )


def _id_codes(gallery_ids, targets):
    """[G] long codes of the gallery ids (equal ids, equal codes; codes < G) and [T] codes of
    the target ids (-1 for an id in no gallery)."""
    vocabulary = dict(zip(gallery_ids, itertools.count()))  # an id's code: its last row
    if len(vocabulary) == len(gallery_ids):
        gallery = torch.arange(len(gallery_ids))
    else:
        gallery = _long(map(vocabulary.__getitem__, gallery_ids))
    return gallery, _long(map(vocabulary.get, targets, itertools.repeat(-1)))


def _layout(group, rows, gallery_group, counts, gallery_code, target_code, owners):
    """``_Layout`` of the ground-truth queries with an embedding (``group`` >= 0);
    ``counts``: gallery images per group."""
    gallery_sorted, gallery_rows = gallery_group.sort(stable=True)
    gallery_begin = counts.cumsum(0) - counts
    column_of_row = torch.empty_like(gallery_rows)
    column_of_row[gallery_rows] = torch.arange(len(gallery_rows)) - gallery_begin[gallery_sorted]
    slots = (group >= 0).nonzero()[:, 0]
    place_by_size = torch.empty_like(counts)
    place_by_size[counts.sort(stable=True).indices] = torch.arange(len(counts))
    slot_positions = slots[place_by_size[group[slots]].sort(stable=True).indices]
    slot_group = group[slot_positions]
    # (group, id) keys of the gallery items, sorted, looked up for every target.
    size = max(1, len(gallery_rows))
    gallery_keys, by_key = (gallery_group * size + gallery_code).sort()
    slot_of_position = torch.full((len(group),), -1, dtype=torch.long)
    slot_of_position[slot_positions] = torch.arange(len(slot_positions))
    owner_slot = slot_of_position[owners]
    target_keys = group[owners] * size + target_code
    low = torch.searchsorted(gallery_keys, target_keys)
    high = torch.searchsorted(gallery_keys, target_keys, right=True)
    hits = torch.where((owner_slot >= 0) & (target_code >= 0), high - low, 0)
    first = torch.repeat_interleave(low, hits)
    offset = torch.arange(len(first)) - torch.repeat_interleave(hits.cumsum(0) - hits, hits)
    columns = column_of_row[by_key[first + offset]]
    # One pair per (query, gallery item): a target named twice counts once.
    pairs = torch.unique(torch.repeat_interleave(owner_slot, hits) * size + columns)
    pair_slots = pairs // size
    return _Layout(
        slot_positions=slot_positions,
        slot_rows=rows[slot_positions],
        slot_gallery_begin=gallery_begin[slot_group],
        slot_gallery_size=counts[slot_group],
        gallery_rows=gallery_rows,
        positive_columns=_pad_ragged(pair_slots, pairs % size, len(slots), fill=-1),
        positive_counts=torch.bincount(pair_slots, minlength=len(slots)),
    )


def _filled(num, topk, width):
    """The ``RankingResult`` tensors of ``num`` queries, all misses."""
    return dict(
        ranks=torch.full((num,), math.inf, dtype=torch.float64),
        average_precision=torch.zeros(num, dtype=torch.float64),
        topk_indices=torch.full((num, topk), -1, dtype=torch.long),
        topk_scores=torch.full((num, topk), math.nan, dtype=torch.float32),
        gallery_sizes=torch.zeros(num, dtype=torch.long),
        positive_ranks=torch.full((num, width), math.inf, dtype=torch.float64),
    )


def _work_units(layout, max_scores):
    """The ``_Unit`` of each group with queries, in slot order (ascending gallery size),
    split by queries where its scores exceed ``max_scores``."""
    begin, size = layout.slot_gallery_begin, layout.slot_gallery_size
    if not len(begin):
        return []
    starts = torch.ones(len(begin), dtype=torch.bool)
    starts[1:] = begin[1:] != begin[:-1]  # groups of queries have distinct gallery ranges
    starts = starts.nonzero()[:, 0]
    begin, size = begin[starts], size[starts]
    first = layout.gallery_rows[begin]
    first = torch.where(layout.gallery_rows[begin + size - 1] - first == size - 1, first, -1)
    ends = starts[1:].tolist() + [len(layout.slot_positions)]
    units = []
    for start, end, gallery_begin, count, first_row in zip(
        starts.tolist(), ends, begin.tolist(), size.tolist(), first.tolist(), strict=True
    ):
        step = max(1, max_scores // count)
        for part in range(start, end, step):
            units.append(
                _Unit(part, min(part + step, end), gallery_begin, gallery_begin + count, first_row)
            )
    return units


def _buckets(units, max_scores):
    """Consecutive work units (ascending gallery size) whose block [their queries, largest
    gallery] holds at most ``max_scores`` elements (a unit alone may exceed it by its rows)."""
    bucket, queries = [], 0
    for unit in units:
        count, size = unit.slot_end - unit.slot_begin, unit.gallery_end - unit.gallery_begin
        if bucket and (queries + count) * size > max_scores:
            yield bucket
            bucket, queries = [], 0
        bucket.append(unit)
        queries += count
    if bucket:
        yield bucket


def _rank_bucket(bucket, query_emb, gallery_emb, layout, topk, device, ranked):
    """Score and rank the slots of one bucket (a range) into ``ranked`` (the
    ``RankingResult`` tensors of the slots)."""
    span = slice(bucket[0].slot_begin, bucket[-1].slot_end)
    scores = _scores(bucket, query_emb, gallery_emb, layout.slot_rows[span], layout, device)
    width = int(layout.positive_counts[span].max())
    columns = layout.positive_columns[span, :width].to(scores.device)
    positive_ranks, ap, index, value = _rank_rows(scores, columns, topk)
    index, value = index.cpu(), value.cpu()
    real = (index >= 0) & (index < layout.slot_gallery_size[span, None])
    rows = layout.gallery_rows[torch.where(real, layout.slot_gallery_begin[span, None] + index, 0)]
    ranked["positive_ranks"][span, : positive_ranks.shape[1]] = positive_ranks.cpu()
    ranked["average_precision"][span] = ap.cpu()
    ranked["topk_indices"][span, : index.shape[1]] = torch.where(real, rows, -1)
    ranked["topk_scores"][span, : index.shape[1]] = torch.where(real, value, math.nan)


def _scores(bucket, query_emb, gallery_emb, query_rows, layout, device):
    """[R, S] float32 scores of the bucket's R queries (rows ``query_rows``) against their
    group's gallery, S the largest gallery; -inf beyond a smaller gallery."""
    queries = query_emb.index_select(0, query_rows).to(device=device, dtype=torch.float32)
    galleries = [_gallery(unit, gallery_emb, layout, device) for unit in bucket]
    if len(bucket) == 1:
        return queries @ galleries[0].T
    size = max(len(gallery) for gallery in galleries)
    scores = torch.full((len(queries), size), -math.inf, device=device)
    offset = 0
    for unit, gallery in zip(bucket, galleries, strict=True):
        count = unit.slot_end - unit.slot_begin
        rows = slice(offset, offset + count)
        torch.mm(queries[rows], gallery.T, out=scores[rows, : len(gallery)])
        offset += count
    return scores


def _gallery(unit, gallery_emb, layout, device):
    """[S, E] float32 gallery embeddings of a unit's group (a view when consecutive)."""
    if unit.first_row >= 0:
        size = unit.gallery_end - unit.gallery_begin
        gallery = gallery_emb[unit.first_row : unit.first_row + size]
    else:
        gallery = gallery_emb.index_select(
            0, layout.gallery_rows[unit.gallery_begin : unit.gallery_end]
        )
    return gallery.to(device=device, dtype=torch.float32)


def _pad_ragged(rows, values, num, fill):
    """Entries ``values[i]`` of row ``rows[i]`` (rows ascending) -> [num, most entries of a
    row], each row's entries first, in order, then ``fill``."""
    slot, width = _ragged_slots(rows, num)
    padded = torch.full((num, width), fill, dtype=values.dtype, device=values.device)
    padded[rows, slot] = values
    return padded


def _ragged_slots(rows, num, width=0):
    """Place of each entry within its row (``rows`` ascending, [n] long) and max(width, most
    entries of a row)."""
    counts = torch.bincount(rows, minlength=num)
    width = max(width, int(counts.max())) if rows.numel() else width
    return torch.arange(rows.numel(), device=rows.device) - (counts.cumsum(0) - counts)[rows], width


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
    slot, width = _ragged_slots(rows, scores.shape[0], k)
    values = scores.new_full((scores.shape[0], width), -math.inf)
    values[rows, slot] = scores[rows, cols]
    index = torch.full(values.shape, -1, dtype=torch.long, device=scores.device)
    index[rows, slot] = cols
    values, order = values.sort(dim=1, descending=True, stable=True)
    return index.gather(1, order[:, :k]), values[:, :k]
