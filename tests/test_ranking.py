"""Hand-built ranking cases for mmf.evaluation.ranking and mmf.evaluation.metrics."""
import math

import pytest
import torch

from mmf.common.errors import DataError
from mmf.datasets.ids import normalize_id
from mmf.evaluation.metrics import metrics_by_label, retrieval_metrics, summarize
from mmf.evaluation.ranking import rank_queries, stable_topk


def _gallery(scores_by_id):
    """Gallery whose item scores against the query [1, 0] are the given values, exactly."""
    ids = list(scores_by_id)
    emb = torch.tensor([[scores_by_id[i], 0.0] for i in ids])
    return ids, emb


QUERY = torch.tensor([[1.0, 0.0]])


def test_ties_keep_gallery_order():
    ids, emb = _gallery({"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.25})
    for gt, expected in (("a", 1), ("b", 2), ("c", 3), ("d", 4)):
        result = rank_queries(QUERY, ["q"], emb, ids, {"q": [gt]})
        assert result.ranks.tolist() == [expected]
    assert [i for i, _ in result.topk_ids(0)] == ["a", "b", "c", "d"]


def test_several_ground_truth_images_best_rank_and_ap():
    ids, emb = _gallery({"a": 0.5, "b": 0.875, "c": 0.75, "d": 0.25})
    result = rank_queries(QUERY, ["q"], emb, ids, {"q": ["c", "a"]})
    # Order b, c, a, d: positives at ranks 2 and 3.
    assert result.ranks.tolist() == [2.0]
    assert result.average_precision.item() == pytest.approx((1 / 2 + 2 / 3) / 2)
    metrics = retrieval_metrics(result.ranks, result.average_precision)
    assert metrics["r@1"] == 0.0 and metrics["r@3"] == 100.0
    assert metrics["map"] == pytest.approx(100 * (1 / 2 + 2 / 3) / 2)


def test_missing_query_is_a_miss_and_reported():
    ids, emb = _gallery({"a": 0.5, "b": 0.25})
    gt = {"q1": ["a"], "q2": ["b"], "q3": ["a"]}
    queries = torch.cat([QUERY, QUERY, QUERY])
    result = rank_queries(queries, ["q1", "q2", "extra"], emb, ids, gt)
    assert result.query_ids == ["q1", "q2", "q3"]
    assert result.ranks[:2].tolist() == [1.0, 2.0] and math.isinf(result.ranks[2])
    assert result.missing == ["q3"] and result.extra == ["extra"]
    assert result.topk_indices[2].tolist() == [-1] * 10
    metrics = summarize(result, ks=(1, 2))
    assert metrics["r@1"] == pytest.approx(100 / 3)
    assert metrics["r@2"] == pytest.approx(200 / 3)
    assert metrics["num_missing"] == 1 and metrics["num_extra"] == 1
    assert metrics["num_queries"] == 3


def test_livestream_without_gallery_names_the_live_id():
    ids, emb = _gallery({"a": 0.5})
    with pytest.raises(DataError, match="live-without-gallery"):
        rank_queries(
            QUERY, ["q"], emb, ids, {"q": ["a"]},
            query_groups=["live-without-gallery"], gallery_groups=["other-live"],
        )


def test_each_query_ranked_in_its_own_livestream():
    # Gallery item "x" of live B scores highest for everybody but must not count for live A.
    ids = ["a1", "a2", "x", "b1"]
    emb = torch.tensor([[0.5, 0.0], [0.25, 0.0], [1.0, 0.0], [0.125, 0.0]])
    groups = ["A", "A", "B", "B"]
    result = rank_queries(
        torch.cat([QUERY, QUERY]), ["qa", "qb"], emb, ids, {"qa": ["a2"], "qb": ["b1"]},
        query_groups=["A", "B"], gallery_groups=groups,
    )
    assert result.ranks.tolist() == [2.0, 2.0]
    assert [i for i, _ in result.topk_ids(0)] == ["a1", "a2"]
    assert result.gallery_sizes.tolist() == [2, 2]


def test_ids_match_with_or_without_extension():
    ids, emb = _gallery({"live/a.jpg": 0.25, "b": 0.5})
    result = rank_queries(QUERY, ["q.mp4"], emb, ids, {"q.mp4": ["a.JPG", "a"]})
    assert result.ranks.tolist() == [2.0]
    assert result.average_precision.item() == 0.5  # "a.JPG" and "a" are one image
    assert normalize_id("x/y/abc.jpeg") == "abc" and normalize_id("abc") == "abc"
    assert normalize_id("a-b-c.1234") == "a-b-c.1234"


def test_ground_truth_absent_from_gallery_is_a_miss():
    ids, emb = _gallery({"a": 0.5})
    result = rank_queries(QUERY, ["q"], emb, ids, {"q": ["zzz"]})
    assert math.isinf(result.ranks.item()) and result.no_positive_in_gallery == ["q"]


def test_median_rank_and_categories():
    ids, emb = _gallery({"a": 0.875, "b": 0.75, "c": 0.5, "d": 0.25})
    gt = {"q1": ["a"], "q2": ["b"], "q3": ["c"], "q4": ["d"], "q5": ["d"]}
    queries = torch.cat([QUERY] * 5)
    result = rank_queries(queries, list(gt), emb, ids, gt)
    assert result.ranks.tolist() == [1.0, 2.0, 3.0, 4.0, 4.0]
    metrics = summarize(result)
    assert metrics["median_rank"] == 3.0
    assert metrics["r@1"] == pytest.approx(20.0) and metrics["r@3"] == pytest.approx(60.0)
    by_category = metrics_by_label(result, {"q1": "bags", "q2": "bags", "q4": "shoes"})
    assert set(by_category) == {"bags", "shoes"}
    assert by_category["bags"]["r@1"] == 50.0 and by_category["bags"]["num_queries"] == 2
    assert by_category["shoes"]["median_rank"] == 4.0
    # More than half missed: no finite median.
    assert retrieval_metrics(torch.tensor([1.0, math.inf, math.inf]), torch.zeros(3))[
        "median_rank"
    ] is None


def test_matches_python_stable_sort_on_random_ties():
    generator = torch.Generator().manual_seed(0)
    gallery = torch.randint(0, 4, (40, 3), generator=generator).float()
    queries = torch.randint(0, 3, (30, 3), generator=generator).float()
    ids = [f"g{i}" for i in range(40)]
    gt = {f"q{r}": [f"g{(r * 7) % 40}", f"g{(r * 3 + 1) % 40}"] for r in range(30)}
    result = rank_queries(queries, list(gt), gallery, ids, gt, topk=5, max_scores=7 * 40)
    scores = queries @ gallery.T
    for row, query in enumerate(gt):
        order = sorted(range(40), key=lambda j: -scores[row, j].item())  # stable
        positions = sorted(order.index(int(g[1:])) + 1 for g in gt[query])
        assert result.ranks[row].item() == positions[0]
        ap = sum((i + 1) / r for i, r in enumerate(positions)) / len(positions)
        assert result.average_precision[row].item() == pytest.approx(ap)
        assert result.topk_indices[row].tolist()[:5] == order[:5]


def test_stable_topk_small_gallery_and_duplicates():
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    index, value = stable_topk(scores, 3)
    assert index.tolist() == [[1, 2, 3], [0, 1, 2]]
    assert value.tolist() == [[3.0, 3.0, 2.0], [0.0, 0.0, 0.0]]
    index, _ = stable_topk(scores, 10)
    assert index.shape == (2, 4)


def test_non_finite_embeddings_raise():
    ids, emb = _gallery({"a": 0.5})
    with pytest.raises(DataError, match="not finite"):
        rank_queries(torch.tensor([[math.nan, 0.0]]), ["q"], emb, ids, {"q": ["a"]})


def test_rerank_top_moves_only_the_top_k():
    from mmf.evaluation.rerank import rerank_top

    ids, emb = _gallery({"a": 0.875, "b": 0.75, "c": 0.5, "d": 0.25, "e": 0.125})
    gt = {"q1": ["c"], "q2": ["b", "e"], "q3": ["a"]}
    result = rank_queries(torch.cat([QUERY] * 2), ["q1", "q2"], emb, ids, gt, topk=5)
    assert result.ranks[:2].tolist() == [3.0, 2.0]
    candidates = {"q1": [0, 1, 2], "q2": [0, 1, 2]}
    # q1: c gets the best PMD score; q2: a and b tie (first-stage order kept), c last.
    scores = {"q1": [1.0, 2.0, 3.0], "q2": [5.0, 5.0, 0.0]}
    reranked, mismatched = rerank_top(result, candidates, scores, 3)
    assert mismatched == 0
    assert reranked.ranks[0].item() == 1.0
    assert [i for i, _ in reranked.topk_ids(0)] == ["c", "b", "a"]
    assert reranked.topk_ids(0)[0][1] == 3.0
    # q2: b stays 2nd, e (outside the top 3) keeps rank 5.
    assert reranked.positive_ranks[1, :2].tolist() == [2.0, 5.0]
    assert reranked.average_precision[1].item() == pytest.approx((1 / 2 + 2 / 5) / 2)
    # q3 has no embedding: still a miss.
    assert math.isinf(reranked.ranks[2].item())
    # Candidates that differ from the first-stage top-k are matched by gallery index.
    _, mismatched = rerank_top(result, {"q1": [0, 2, 1]}, {"q1": [1.0, 3.0, 2.0]}, 3)
    assert mismatched == 1


@pytest.mark.parametrize("max_scores", [50, 1 << 20])
def test_groups_of_different_sizes_match_python_per_group_sort(max_scores):
    """Padded batches of livestreams of different sizes give the per-livestream answer."""
    generator = torch.Generator().manual_seed(1)
    sizes = {"L0": 3, "L1": 7, "L2": 12, "L3": 1}
    gallery_groups = [live for live, size in sizes.items() for _ in range(size)]
    ids = [f"g{i}" for i in range(len(gallery_groups))]
    gallery = torch.randint(0, 3, (len(ids), 2), generator=generator).float()
    queries = torch.randint(0, 3, (25, 2), generator=generator).float()
    query_groups = [list(sizes)[i % 4] for i in range(25)]
    members = {live: [i for i, g in enumerate(gallery_groups) if g == live] for live in sizes}
    gt = {f"q{i}": [ids[members[live][(i * 5) % len(members[live])]], ids[members[live][-1]]]
          for i, live in enumerate(query_groups)}
    result = rank_queries(queries, list(gt), gallery, ids, gt, query_groups, gallery_groups,
                          topk=4, max_scores=max_scores)
    for row, (query, live) in enumerate(zip(gt, query_groups, strict=True)):
        scores = {j: (queries[row] @ gallery[j]).item() for j in members[live]}
        order = sorted(members[live], key=lambda j: -scores[j])
        positions = sorted({order.index(int(g[1:])) + 1 for g in gt[query]})
        assert result.ranks[row].item() == positions[0]
        ap = sum((i + 1) / r for i, r in enumerate(positions)) / len(positions)
        assert result.average_precision[row].item() == pytest.approx(ap)
        expected = order[:4] + [-1] * (4 - len(order[:4]))
        assert result.topk_indices[row].tolist() == expected
        assert result.gallery_sizes[row].item() == sizes[live]


def _reference_ranking(queries, query_groups, gallery, gallery_ids, gallery_groups, gt, topk):
    """Per query: Python's stable sort of its own livestream's gallery, ranks and AP."""
    out = []
    for row, query in enumerate(gt):
        members = [j for j, g in enumerate(gallery_groups) if g == query_groups[row]]
        scores = {j: float(queries[row] @ gallery[j]) for j in members}
        order = sorted(members, key=lambda j: -scores[j])
        ranks = sorted(i + 1 for i, j in enumerate(order) if gallery_ids[j] in gt[query])
        ap = sum((i + 1) / r for i, r in enumerate(ranks)) / len(ranks) if ranks else 0.0
        top = order[:topk] + [-1] * (topk - len(order[:topk]))
        out.append((ranks[0] if ranks else math.inf, ap, ranks, top, len(members)))
    return out


@pytest.mark.parametrize("max_scores", [1, 300, 1 << 20])
def test_optimised_ranking_equals_reference_on_random_ties(max_scores):
    """Interleaved and contiguous galleries, galleries larger than 8k (the bounded top-k)
    and smaller than k, duplicate gallery ids and integer scores with many ties."""
    generator = torch.Generator().manual_seed(3)
    sizes = {"A": 130, "B": 3, "C": 95}
    gallery_groups = ["A"] * 60 + ["C"] * 95 + ["B"] * 3 + ["A"] * 70  # A is split
    ids = [f"g{i}" for i in range(len(gallery_groups))]
    ids[5] = ids[200]  # one image twice in livestream A
    gallery = torch.randint(-2, 3, (len(ids), 3), generator=generator).float()
    queries = torch.randint(-2, 3, (40, 3), generator=generator).float()
    query_groups = [("A", "B", "C")[i % 3] for i in range(40)]
    members = {live: [ids[j] for j, g in enumerate(gallery_groups) if g == live] for live in sizes}
    picks = torch.randint(0, 1000, (40, 3), generator=generator).tolist()
    gt = {f"q{i}": [members[live][p % len(members[live])] for p in picks[i][: 1 + i % 3]]
          for i, live in enumerate(query_groups)}
    result = rank_queries(queries, list(gt), gallery, ids, gt, query_groups, gallery_groups,
                          topk=12, max_scores=max_scores)
    reference = _reference_ranking(queries, query_groups, gallery, ids, gallery_groups, gt, 12)
    for row, (best, ap, ranks, top, size) in enumerate(reference):
        assert result.ranks[row].item() == best
        assert result.average_precision[row].item() == pytest.approx(ap)
        assert result.positive_ranks[row, : len(ranks)].tolist() == ranks
        assert result.topk_indices[row].tolist() == top
        assert result.gallery_sizes[row].item() == size


def test_stable_topk_equals_stable_sort_on_wide_rows_with_ties():
    generator = torch.Generator().manual_seed(4)
    scores = torch.randint(0, 6, (50, 400), generator=generator).float()
    scores[0] = 1.0  # one row all tied
    index, value = stable_topk(scores, 10)
    for row in range(50):
        order = sorted(range(400), key=lambda j: -scores[row, j].item())[:10]
        assert index[row].tolist() == order
        assert value[row].tolist() == scores[row, order].tolist()


def test_ids_of_other_types_and_repeated_ground_truth_keys():
    """Non-string ids compare by their string; a ground-truth key given twice (with and
    without extension) keeps its first place and its last targets; a tuple of targets."""
    ids = [1, "2", "live/3.jpg"]
    emb = torch.tensor([[0.5, 0.0], [0.75, 0.0], [0.25, 0.0]])
    gt = {"q.mp4": ["1"], 7: ("2", "3"), "q": (1, "3.JPG")}
    result = rank_queries(torch.cat([QUERY, QUERY]), ["q", "7"], emb, ids, gt, topk=2)
    assert result.query_ids == ["q", "7"] and result.gallery_ids == ["1", "2", "3"]
    assert result.positive_ranks.tolist() == [[2.0, 3.0], [1.0, 3.0]]
    assert result.topk_indices.tolist() == [[1, 0], [1, 0]]
