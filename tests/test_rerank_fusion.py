"""Score fusion for re-ranking (``--rerank_fusion sum``, ``--rerank_weight BETA|auto``): hand-made
rankings where the best weight is known, then the evaluation scripts end to end."""
import os

import pytest
import torch
import yaml
from test_eval import LIVES, _eval, _load, run  # noqa: F401 (run: the trained-model fixture)

from mmf.evaluation.loading import load_eval_config, load_val_data
from mmf.evaluation.ranking import rank_queries
from mmf.evaluation.rerank import WEIGHT_GRID, Fusion, choose_weight, rerank_top

# Two livestreams of two images. Cosine of the query with each image (the query is [1, 0]):
# q1 (live A): negative 0.9, positive 0.87; PMD 0.0 / 0.1: the positive wins iff beta > 0.3.
# q2 (live B): positive 0.9, negative 0.83; PMD 0.0 / 0.1: the positive stays iff beta < 0.7.
GALLERY = [("a_neg", "A", 0.9), ("a_pos", "A", 0.87), ("b_pos", "B", 0.9), ("b_neg", "B", 0.83)]
PMD = {"q1": [0.0, 0.1], "q2": [0.0, 0.1]}
CANDIDATES = {"q1": [0, 1], "q2": [2, 3]}


def _fixture_ranking():
    gallery_emb = torch.tensor([[cos, (1 - cos**2) ** 0.5] for _, _, cos in GALLERY])
    return rank_queries(
        torch.tensor([[1.0, 0.0], [1.0, 0.0]]), ["q1", "q2"],
        gallery_emb, [name for name, _, _ in GALLERY],
        {"q1": ["a_pos"], "q2": ["b_pos"]},
        query_groups=["A", "B"], gallery_groups=[live for _, live, _ in GALLERY], topk=2,
    )


def test_sum_fusion_ranks_by_icl_logit_plus_weight_times_pmd():
    result = _fixture_ranking()
    assert result.ranks.tolist() == [2.0, 1.0]
    # icl_scale 10: the window of weights that get both right is (3, 7).
    reranked, mismatched = rerank_top(result, CANDIDATES, PMD, 2, Fusion(icl_scale=10.0, weight=5))
    assert mismatched == 0 and reranked.ranks.tolist() == [1.0, 1.0]
    # The top list holds the fused scores: 10 * cos + 5 * pmd.
    assert reranked.topk_ids(0) == [("a_pos", pytest.approx(9.2)), ("a_neg", pytest.approx(9.0))]
    assert reranked.topk_ids(1) == [("b_pos", pytest.approx(9.0)), ("b_neg", pytest.approx(8.8))]
    too_much, _ = rerank_top(result, CANDIDATES, PMD, 2, Fusion(icl_scale=10.0, weight=8))
    assert too_much.ranks.tolist() == [1.0, 2.0]
    # Weight 0 keeps the ICL order; PMD alone (the default) follows PMD only.
    same, _ = rerank_top(result, CANDIDATES, PMD, 2, Fusion(icl_scale=10.0, weight=0.0))
    assert same.ranks.tolist() == [2.0, 1.0]
    assert same.topk_indices.tolist() == result.topk_indices.tolist()
    pmd_only, _ = rerank_top(result, CANDIDATES, PMD, 2)
    assert pmd_only.ranks.tolist() == [1.0, 2.0]
    assert pmd_only.topk_ids(0)[0] == ("a_pos", pytest.approx(0.1))


def test_candidates_without_a_pmd_score_go_last_whatever_the_weight():
    result = _fixture_ranking()
    reranked, _ = rerank_top(result, {"q1": [0, 1]}, {"q1": [0.0, 0.1]}, 2, Fusion(10.0, 0.0))
    assert reranked.topk_indices[1].tolist() == [2, 3]  # q2 has no candidates: ICL order kept
    assert reranked.topk_scores[1].tolist() == [float("-inf")] * 2


def test_auto_picks_the_only_grid_weight_that_gets_both_queries_right():
    result = _fixture_ranking()
    weight, grid = choose_weight(result, CANDIDATES, PMD, 2, icl_scale=1.0)
    assert weight == 0.5
    assert [row["weight"] for row in grid] == list(WEIGHT_GRID)
    expected = {w: 100.0 if 0.3 < w < 0.7 else 50.0 for w in WEIGHT_GRID}
    assert {row["weight"]: row["r@1"] for row in grid} == expected
    # The weight scales with the ICL logit scale: s^2 = 4 moves the window to (1.2, 2.8).
    assert choose_weight(result, CANDIDATES, PMD, 2, icl_scale=4.0)[0] == 2.0
    # Ties (no weight helps) go to the smallest weight: the ICL order.
    tie, _ = choose_weight(result, CANDIDATES, {"q1": [0.0, 0.0], "q2": [0.0, 0.0]}, 2, 1.0)
    assert tie == 0.0


def test_sum_fusion_weight_zero_end_to_end_keeps_the_icl_ranking(run, tmp_path, capsys):  # noqa: F811
    out = str(tmp_path / "sum0")
    argv = ["--config_file", run["config"], "--out", out, "--rerank_topk", "3",
            "--rerank_fusion", "sum", "--rerank_weight", "0"]
    code, output = _eval(argv, capsys)
    assert code == 0, output.err
    metrics, rankings = _load(out)
    rerank = metrics["pmd_rerank"]
    assert rerank["rerank_fusion"] == "sum" and rerank["rerank_weight"] == 0.0
    assert rerank["icl_logit_scale"] > 0 and "weight_search" not in rerank
    assert rerank["r@1"] == metrics["icl"]["r@1"] and rerank["map"] == metrics["icl"]["map"]
    assert rerank["r@1_vs_icl"] == {"difference": 0.0, "ci95": [0.0, 0.0]}
    for line in rankings:
        assert [i for i, _ in line["pmd_topk"]] == [i for i, _ in line["topk"][:3]]
        for (_, fused), (_, cos) in zip(line["pmd_topk"], line["topk"], strict=False):
            assert fused == pytest.approx(rerank["icl_logit_scale"] * cos, abs=1e-4)
    assert "pmd_rerank score:" in output.out and "no difference" in output.out


def test_auto_weight_is_chosen_on_the_val_split(run, tmp_path, capsys):  # noqa: F811
    out = str(tmp_path / "auto")
    argv = ["--config_file", run["config"], "--out", out, "--rerank_topk", "3",
            "--rerank_fusion", "sum", "--rerank_weight", "auto"]
    code, output = _eval(argv, capsys)
    assert code == 0, output.err
    metrics, rankings = _load(out)
    search = metrics["pmd_rerank"]["weight_search"]
    # The val split is the run's annotations.val (6 train pairs, 6 clips), not the 7 test queries.
    assert search["split"] == "val" and search["num_queries"] == 6
    assert [row["weight"] for row in search["grid"]] == list(WEIGHT_GRID)
    best = max(search["grid"], key=lambda row: (row["r@1"], row["map"], -row["weight"]))
    chosen = metrics["pmd_rerank"]["rerank_weight"]
    assert chosen == best["weight"]
    assert "weight chosen on val" in output.out
    # The test numbers are those of the fixed weight that auto chose.
    fixed = str(tmp_path / "fixed")
    argv[-1] = str(chosen)
    argv[3] = fixed
    assert _eval(argv)[0] == 0
    again, again_rankings = _load(fixed)
    assert again["pmd_rerank"]["r@1"] == metrics["pmd_rerank"]["r@1"]
    assert again_rankings == rankings


def test_auto_without_a_val_split_is_one_line(run, tmp_path, capsys):  # noqa: F811
    with open(run["config"]) as handle:
        saved = yaml.safe_load(handle)
    saved["dataset_config"]["videotoshop"]["annotations"]["val"] = []
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(saved))
    checkpoint = os.path.join(os.path.dirname(run["config"]), "rice_final.pth")
    argv = ["--config_file", str(config), "--checkpoint", checkpoint, "--out",
            str(tmp_path / "o"), "--rerank_topk", "3", "--rerank_fusion", "sum",
            "--rerank_weight", "auto"]
    code, output = _eval(argv, capsys)
    assert code == 1
    assert output.err.strip().splitlines() == [
        "error: --rerank_weight auto chooses the weight on the validation split, but "
        "dataset_config.videotoshop.annotations.val lists no file"
    ]
    assert not os.path.exists(tmp_path / "o" / "metrics.json")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--rerank_topk", "3", "--rerank_weight", "2"],
         "error: --rerank_weight 2.0 weighs the PMD score of --rerank_fusion sum; "
         "--rerank_fusion is 'pmd'"),
        (["--rerank_fusion", "sum"],
         "error: --rerank_fusion sum re-ranks the ICL top K: set --rerank_topk K > 0"),
    ],
)
def test_fusion_options_that_do_nothing_are_refused(tmp_path, capsys, extra, message):
    argv = ["--config_file", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")]
    code, output = _eval(argv + extra, capsys)
    assert code == 1 and output.err.strip().splitlines() == [message]


def test_val_split_in_both_layouts(run):  # noqa: F811
    """Pair files (the in-training validation's): each clip once, each image once per
    livestream; a query json + gallery list (the demo's): the json's ground truth."""
    config, _ = load_eval_config(run["config"], "videotoshop")
    pairs = load_val_data(config, "videotoshop", global_gallery=False)
    assert len(pairs.query_dataset) == 6 and len(pairs.gallery_dataset) == 6
    assert pairs.ground_truth[f"{LIVES[0]}-1000-2000"] == ["train0"]
    assert pairs.gallery_dataset[0]["live_id"] == LIVES[0]
    node = config.dataset_config.videotoshop
    node.annotations.val = ["annotations/query_tenframes.json", "annotations/gallery_main.txt"]
    node.images.val = ["query", "gallery"]
    retrieval = load_val_data(config, "videotoshop", global_gallery=False)
    assert len(retrieval.query_dataset) == 6 and len(retrieval.gallery_dataset) == 8
    assert retrieval.ground_truth[f"{LIVES[1]}-5002-6002"] == [f"{LIVES[1][:4]}img2"]
