"""PMD re-ranking: re-score the ICL top K of each query with the cross model's pair score.

``PMDReranker`` runs during query encoding (``mmf.evaluation.encoding.encode_queries`` calls
it after each batch): it picks each query's top K in its own gallery by embedding score
(the ranking's tie rule) and scores those (clip, image) pairs with ``model.pair_score``
(10 * cos, the PMD training score), reading the gallery tokens from a ``TokenStore``.
``rerank_top`` then re-orders the final ranking's top K by those scores.
"""
import dataclasses
import math

import numpy as np
import torch

from mmf.common.errors import ConfigError
from mmf.evaluation.ranking import average_precision_from_ranks, stable_topk


def require_pair_score(model):
    if not getattr(model, "has_pair_score", False):
        raise ConfigError(
            "--rerank_topk needs a model with a PMD head (training_head_type 'pretraining' "
            "with the 'vim' task); this checkpoint's model has none"
        )


class PMDReranker:
    """Re-scores each query batch's ICL top ``k`` with ``model.pair_score`` (10 * cos).

    The candidates are the batch's top-k in its own gallery by embedding score (same tie
    rule as the final ranking); their gallery tokens come from ``token_store``. Results are
    kept by query id: ``candidates[qid]`` [k'] gallery rows, ``scores[qid]`` [k'] PMD scores.
    """

    def __init__(self, model, gallery, token_store, k, device, pair_batch=256):
        require_pair_score(model)
        self.model = model
        self.k = k
        self.device = device
        self.pair_batch = pair_batch
        self.token_store = token_store
        self.gallery_emb = gallery.emb.to(device)
        self.rows_of_group = {}
        for row, group in enumerate(gallery.groups):
            self.rows_of_group.setdefault(group, []).append(row)
        self.rows_of_group = {g: torch.as_tensor(r) for g, r in self.rows_of_group.items()}
        self.candidates = {}
        self.scores = {}

    @torch.inference_mode()
    def __call__(self, ids, groups, emb, tokens, mask):
        """Score one encoded query batch: ids [B], groups [B], emb [B,E], tokens [B,F,T,D],
        mask [B,F]."""
        positions_of_group = {}
        for position, group in enumerate(groups):
            positions_of_group.setdefault(group, []).append(position)
        pair_query, pair_rows, spans = [], [], []
        for group, positions in positions_of_group.items():
            rows = self.rows_of_group.get(group)
            if rows is None:
                continue  # rank_queries reports the missing gallery, naming the live id
            scores = emb[positions].float() @ self.gallery_emb[rows.to(self.device)].T
            index, _ = stable_topk(scores, self.k)
            for position, candidates in zip(positions, rows[index.cpu()], strict=True):
                self.candidates[ids[position]] = candidates
                spans.append((ids[position], len(pair_rows), len(candidates)))
                pair_query.extend([position] * len(candidates))
                pair_rows.extend(candidates.tolist())
        if not pair_rows:
            return
        pair_query = torch.as_tensor(pair_query)
        pair_rows = np.asarray(pair_rows)
        values = []
        for start in range(0, len(pair_rows), self.pair_batch):
            query = pair_query[start : start + self.pair_batch].to(self.device)
            image_tokens = self.token_store.get(pair_rows[start : start + self.pair_batch])
            image_tokens = image_tokens.to(self.device, tokens.dtype)
            scores = self.model.pair_score(image_tokens, tokens[query], mask[query])
            values.append(scores.float().cpu())
        values = torch.cat(values)
        for query_id, offset, count in spans:
            self.scores[query_id] = values[offset : offset + count]


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
        score_of = dict(zip(cand.tolist(), scores.tolist(), strict=True))
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
