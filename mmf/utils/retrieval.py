"""Ranking of query embeddings against galleries, and rank-based retrieval metrics.

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
is ``inf`` and its average precision 0. Ids are compared after ``normalize_id`` (a file name
and its stem match).

Metrics are percentages: ``r@k`` is the share of queries whose best ground truth ranks at
most ``k`` (rank-k accuracy, the original's TopK hit), ``map`` the mean average precision over
the ground-truth images present in the gallery, ``median_rank`` the median best rank.
"""
import dataclasses
import math

import torch

from mmf.common.errors import DataError

IMAGE_EXTENSIONS = frozenset((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"))
DEFAULT_KS = (1, 3, 5, 10)
GLOBAL_GROUP = "__global__"


def normalize_id(item_id):
    """Image or clip id as the file stem: ``"live/abc.jpg"`` -> ``"abc"``, ``"abc"`` -> ``"abc"``."""
    name = str(item_id).strip().rsplit("/", 1)[-1]
    dot = name.rfind(".")
    if dot > 0 and name[dot:].lower() in IMAGE_EXTENSIONS:
        return name[:dot]
    return name


def live_id_of(video_id):
    """Livestream id of an LPR4M clip id ``<uuid (5 fields)>-<start>-<end>``."""
    return "-".join(str(video_id).split("-")[:5])


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
        pairs = zip(self.topk_indices[row].tolist(), self.topk_scores[row].tolist())
        return [(self.gallery_ids[index], score) for index, score in pairs if index >= 0]


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
    ground_truth = normalize_ground_truth(ground_truth)

    row_of_query = {}
    for row, query_id in enumerate(query_ids):
        if query_id in row_of_query:
            raise DataError(f"query id {query_id!r} has two embeddings")
        row_of_query[query_id] = row
    gt_queries = list(ground_truth)
    extra = [q for q in query_ids if q not in ground_truth]
    missing = [q for q in gt_queries if q not in row_of_query]

    gallery_rows = {}
    for row, group in enumerate(gallery_groups):
        gallery_rows.setdefault(str(group), []).append(row)
    queries_of_group = {}
    for position, query_id in enumerate(gt_queries):
        row = row_of_query.get(query_id)
        if row is not None:
            queries_of_group.setdefault(str(query_groups[row]), []).append(position)

    # Work units: (query positions, gallery rows, {gallery id: [local columns]}).
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
            units.append((positions[begin : begin + step], rows, columns_of_id))

    num = len(gt_queries)
    ranks = torch.full((num,), math.inf, dtype=torch.float64)
    average_precision = torch.zeros(num, dtype=torch.float64)
    topk_indices = torch.full((num, topk), -1, dtype=torch.long)
    topk_scores = torch.full((num, topk), math.nan, dtype=torch.float32)
    gallery_sizes = torch.zeros(num, dtype=torch.long)
    positive_chunks = []
    no_positive = []
    for bucket in _buckets(units, max_scores):
        positions, best, ap, positive, index, value, sizes = _rank_bucket(
            bucket, query_emb, gallery_emb, row_of_query, gt_queries, ground_truth, topk, device
        )
        ranks[positions] = best
        average_precision[positions] = ap
        positive_chunks.append((positions, positive))
        topk_indices[positions, : index.shape[1]] = index
        topk_scores[positions, : value.shape[1]] = value
        gallery_sizes[positions] = sizes
        no_positive.extend(positions[~torch.isfinite(best)].tolist())

    width = max([1] + [chunk.shape[1] for _, chunk in positive_chunks])
    positive_ranks = torch.full((num, width), math.inf, dtype=torch.float64)
    for positions, chunk in positive_chunks:
        positive_ranks[positions, : chunk.shape[1]] = chunk
    return RankingResult(
        query_ids=gt_queries,
        ranks=ranks,
        average_precision=average_precision,
        topk_indices=topk_indices,
        topk_scores=topk_scores,
        gallery_ids=gallery_ids,
        gallery_sizes=gallery_sizes,
        positive_ranks=positive_ranks,
        missing=missing,
        no_positive_in_gallery=[gt_queries[p] for p in sorted(no_positive)],
        extra=extra,
    )


def _buckets(units, max_scores):
    """Group work units of similar gallery size so that each padded batch [B, Qmax, Gmax]
    holds at most ``max_scores`` elements (a unit alone may exceed it only by its rows)."""
    units = sorted(units, key=lambda unit: len(unit[1]))
    bucket, queries, gallery = [], 0, 0
    for unit in units:
        new_queries, new_gallery = max(queries, len(unit[0])), max(gallery, len(unit[1]))
        if bucket and (len(bucket) + 1) * new_queries * new_gallery > max_scores:
            yield bucket
            bucket, new_queries, new_gallery = [], len(unit[0]), len(unit[1])
        bucket.append(unit)
        queries, gallery = new_queries, new_gallery
    if bucket:
        yield bucket


def _rank_bucket(bucket, query_emb, gallery_emb, row_of_query, gt_queries, ground_truth, topk, device):
    """Score and rank the units of one bucket with one batched matrix product.

    Returns, for the bucket's Q real queries: positions [Q] (into the ground-truth list),
    best rank [Q], AP [Q], positive ranks [Q, P], top-k gallery rows [Q, k'] (-1 padded),
    top-k scores [Q, k'] (NaN padded) and gallery sizes [Q].
    """
    width = max(len(unit[0]) for unit in bucket)
    size = max(len(unit[1]) for unit in bucket)
    query_rows = torch.zeros(len(bucket), width, dtype=torch.long)
    query_valid = torch.zeros(len(bucket), width, dtype=torch.bool)
    gallery_index = torch.zeros(len(bucket), size, dtype=torch.long)
    gallery_valid = torch.zeros(len(bucket), size, dtype=torch.bool)
    positives, positions, sizes = [], [], []
    for slot, (unit_positions, rows, columns_of_id) in enumerate(bucket):
        count = len(unit_positions)
        query_rows[slot, :count] = torch.as_tensor([row_of_query[gt_queries[p]] for p in unit_positions])
        query_valid[slot, :count] = True
        gallery_index[slot, : len(rows)] = torch.as_tensor(rows)
        gallery_valid[slot, : len(rows)] = True
        for p in unit_positions:
            positives.append([c for gt in ground_truth[gt_queries[p]] for c in columns_of_id.get(gt, ())])
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
    return (
        torch.as_tensor(positions, dtype=torch.long),
        positive_ranks[:, 0].cpu()[keep],
        ap.cpu()[keep],
        positive_ranks.cpu()[keep],
        rows[keep],
        value[keep],
        torch.as_tensor(sizes, dtype=torch.long),
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


def rerank_top(result, candidates, candidate_scores, k):
    """Re-order each query's top ``k`` by new scores (PMD re-ranking).

    Args:
        result: the first-stage ranking (``topk`` >= ``k``).
        candidates: ``{query_id: [k'] gallery indices}``, the top-k the new scores were
            computed for (in first-stage order); ``candidate_scores``: ``{query_id: [k']}``.
        k: how many first-stage entries are re-ordered.
    Returns ``(reranked, mismatched)``: a ``RankingResult`` whose top lists are the top ``k``
    in the new order with the new scores (ties keep first-stage order; entries without a
    new score go last), whose ranks move only ground truth inside the top ``k``, and the
    number of queries whose candidates differed from the first-stage top ``k``.
    """
    num = len(result.query_ids)
    top = result.topk_indices[:, :k]
    aligned = torch.full(top.shape, -math.inf, dtype=torch.float32)
    mismatched = 0
    for row, query_id in enumerate(result.query_ids):
        cand = candidates.get(query_id)
        if cand is None:
            continue
        cand = torch.as_tensor(cand, dtype=torch.long)
        scores = torch.as_tensor(candidate_scores[query_id], dtype=torch.float32)
        valid = top[row] >= 0
        if len(cand) == int(valid.sum()) and torch.equal(cand, top[row, : len(cand)]):
            aligned[row, : len(cand)] = scores
            continue
        mismatched += 1
        score_of = dict(zip(cand.tolist(), scores.tolist()))
        for column, index in enumerate(top[row].tolist()):
            if index in score_of:
                aligned[row, column] = score_of[index]
    order = aligned.sort(dim=1, descending=True, stable=True).indices  # [Q, k]
    new_position = order.argsort(dim=1)  # first-stage column -> new column
    positive = result.positive_ranks
    inside = positive <= top.shape[1]
    column = (positive.clamp(max=top.shape[1]) - 1).clamp(min=0).long()
    moved = new_position.gather(1, column).to(torch.float64) + 1
    ranks = torch.where(inside, moved, positive).sort(dim=1).values
    new_top = top.gather(1, order)
    new_scores = aligned.gather(1, order)
    new_scores = torch.where(new_top >= 0, new_scores, math.nan)
    reranked = dataclasses.replace(
        result,
        ranks=ranks[:, 0] if num else torch.zeros(0, dtype=torch.float64),
        average_precision=average_precision_from_ranks(ranks),
        topk_indices=new_top,
        topk_scores=new_scores,
        positive_ranks=ranks,
    )
    return reranked, mismatched
