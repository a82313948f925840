"""Re-ranking: re-score the ICL top K of each query with the cross model's pair score.

``PMDReranker`` runs during query encoding (``mmf.evaluation.encoding.encode_queries`` calls
it after each batch): it picks each query's top K in its own gallery by embedding score
(the ranking's tie rule) and scores those (clip, image) pairs with ``model.pair_score``
(10 * cos, the PMD training score), reading the gallery tokens from a ``TokenStore``.
``rerank_top`` then re-orders the final ranking's top K by a ``Fusion`` of the scores:

- ``pmd``: the PMD score alone (the original's re-ranking);
- ``sum``: ``icl_logit + weight * pmd_score`` with ``icl_logit = s^2 * cos``, the ICL score
  as the model's ``logit_scale`` s makes it in training (LAVIS's retrieval: matching score
  plus contrastive score). ``weight = 0`` keeps the ICL order.

``choose_weight`` picks the ``sum`` weight from ``WEIGHT_GRID`` by R@1 on a validation ranking.
"""
import dataclasses
import math

import numpy as np
import torch

from mmf.common.errors import ConfigError
from mmf.evaluation.metrics import retrieval_metrics
from mmf.evaluation.ranking import average_precision_from_ranks, stable_topk

FUSIONS = ("pmd", "sum")
WEIGHT_GRID = (0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@dataclasses.dataclass(frozen=True)
class Fusion:
    """Re-ranking score ``icl_scale * cos + weight * pmd_score`` (``pmd``: 0 and 1)."""

    icl_scale: float = 0.0
    weight: float = 1.0


def icl_logit_scale(model):
    """``s^2``: the ICL logit of a pair is ``s^2 * cos`` (``s * clip`` against ``s * image``,
    ``s`` the pretraining head's raw ``logit_scale``, as in ``vic_loss``)."""
    require_pair_score(model)
    return float(model.transformer.logit_scale.detach().float()) ** 2


def require_pair_score(model, needed_by="--rerank_topk"):
    """``ConfigError`` naming ``needed_by`` unless ``model`` has a PMD head."""
    if not getattr(model, "has_pair_score", False):
        raise ConfigError(
            f"{needed_by} needs a model with a PMD head (training_head_type 'pretraining' "
            "with the 'vim' task); this checkpoint's model has no PMD head"
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
    def __call__(self, ids, groups, emb, tokens, mask, asr=None):
        """Score one encoded query batch: ids [B], groups [B], emb [B,E], tokens [B,F,T,D],
        mask [B,F], asr: the clips' ``TextVectors`` (text models with ``tokens`` fusion)."""
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
            text = {} if asr is None else {"asr": asr[query]}
            scores = self.model.pair_score(image_tokens, tokens[query], mask[query], **text)
            values.append(scores.float().cpu())
        values = torch.cat(values)
        for query_id, offset, count in spans:
            self.scores[query_id] = values[offset : offset + count]


def rerank_top(result, candidates, candidate_scores, k, fusion=None):
    """Re-order each query's top ``k`` by new scores (PMD re-ranking).

    Args:
        result: the first-stage ranking (``topk`` >= ``k``).
        candidates: ``{query_id: [k'] gallery indices}``, the top-k the new scores were
            computed for (in first-stage order); ``candidate_scores``: ``{query_id: [k']}``.
        k: how many first-stage entries are re-ordered.
        fusion: a ``Fusion``, how the new score combines ICL and PMD (default: PMD alone).
    Returns ``(reranked, mismatched)``: a ``RankingResult`` whose top lists are the top ``k``
    in the new order with the fused scores (ties keep first-stage order; entries without a
    new score go last), whose ranks move only ground truth inside the top ``k``, and the
    number of queries whose candidates differed from the first-stage top ``k``.
    """
    num = len(result.query_ids)
    top = result.topk_indices[:, :k]
    fusion = fusion or Fusion()
    pmd, mismatched = _aligned_scores(result.query_ids, top, candidates, candidate_scores)
    icl = result.topk_scores[:, :k].float().nan_to_num(0.0)
    fused = fusion.icl_scale * icl + fusion.weight * pmd.nan_to_num(0.0, neginf=0.0)
    fused = torch.where(torch.isfinite(pmd), fused, -math.inf)  # no PMD score: last
    order = fused.sort(dim=1, descending=True, stable=True).indices  # [Q, k]
    new_position = order.argsort(dim=1)  # first-stage column -> new column
    positive = result.positive_ranks
    inside = positive <= top.shape[1]
    column = (positive.clamp(max=top.shape[1]) - 1).clamp(min=0).long()
    moved = new_position.gather(1, column).to(torch.float64) + 1
    ranks = torch.where(inside, moved, positive).sort(dim=1).values
    new_top = top.gather(1, order)
    new_scores = fused.gather(1, order)
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


def _aligned_scores(query_ids, top, candidates, candidate_scores):
    """The new scores in the columns of ``top`` [Q, k] (-inf where none), and the number of
    queries whose candidates differ from ``top`` (matched by gallery index)."""
    aligned = torch.full(top.shape, -math.inf, dtype=torch.float32)
    mismatched = 0
    for row, query_id in enumerate(query_ids):
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
    return aligned, mismatched


def choose_weight(result, candidates, candidate_scores, k, icl_scale, grid=WEIGHT_GRID):
    """The ``sum`` weight of ``grid`` with the best R@1 of ``result`` re-ranked (a validation
    ranking), ties to the better mAP, then the smaller weight.

    Returns ``(weight, table)`` with ``table`` one ``{"weight", "r@1", "map"}`` per grid value.
    """
    table = []
    for weight in grid:
        fusion = Fusion(icl_scale, float(weight))
        reranked, _ = rerank_top(result, candidates, candidate_scores, k, fusion)
        metrics = retrieval_metrics(reranked.ranks, reranked.average_precision, ks=(1,))
        table.append({"weight": float(weight), "r@1": metrics["r@1"], "map": metrics["map"]})
    best = max(table, key=lambda row: (row["r@1"], row["map"], -row["weight"]))
    return best["weight"], table
