"""scripts/pmd_score_stats.py: the statistics on hand-made score matrices with known answers,
then the script on the tiny trained RICE of ``test_eval``, checked against the PMD scores
that lpr_eval.py's re-ranking wrote."""
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from test_eval import _eval, _load, run  # noqa: F401 (run: the trained-model fixture)

from mmf.evaluation import loading
from mmf.utils.build import build_model

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pmd_score_stats.py"
NAN = math.nan


@pytest.fixture(scope="module")
def stats():
    spec = importlib.util.spec_from_file_location("pmd_score_stats", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Anchors (rows) c0..c5, candidates (columns) g0..g5; livestreams: A = c0 c1 c3 / g0 g1 g2,
# B = c2 c4 / g3 g4, C = c5 / g5. ICL picks 1 hard negative: c0 -> g1 (g3, g4 score higher but
# are in B), c1 -> g0 (tie with g2: column order), c2 -> g4, c3 (positives g0, g2) -> g1.
# c4 has no positive, c5 no negative: neither is an anchor.
GROUPS = (["A", "A", "B", "A", "B", "C"], ["A", "A", "A", "B", "B", "C"])
POSITIVE = torch.tensor([
    [1, 0, 0, 0, 0, 0],
    [0, 1, 0, 0, 0, 0],
    [0, 0, 0, 1, 0, 0],
    [1, 0, 1, 0, 0, 0],
    [0, 0, 0, 0, 0, 0],
    [0, 0, 0, 0, 0, 1],
], dtype=torch.bool)
ICL = torch.tensor([
    [5.0, 4.0, 3.0, 9.0, 9.0, 0.0],
    [2.0, 5.0, 2.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0, 2.0, 0.0],
    [3.0, 1.0, 3.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 1.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
])
# PMD where the statistics read it, NaN elsewhere; c1's g2 (9) is not a candidate.
PMD = torch.tensor([
    [1.0, 3.0, NAN, NAN, NAN, NAN],
    [2.0, 2.0, 9.0, NAN, NAN, NAN],
    [NAN, NAN, NAN, 5.0, 0.0, NAN],
    [4.0, 2.0, 1.0, NAN, NAN, NAN],
    [NAN, NAN, NAN, NAN, NAN, NAN],
    [NAN, NAN, NAN, NAN, NAN, 7.0],
])


def test_hard_negatives_stay_in_the_livestream_skip_positives_and_keep_column_order(stats):
    group_mask = stats.same_group(*GROUPS)
    negative = stats.hard_negatives(ICL, POSITIVE, group_mask, 1)
    assert negative.nonzero().tolist() == [[0, 1], [1, 0], [2, 4], [3, 1], [4, 3]]
    two = stats.hard_negatives(ICL, POSITIVE, group_mask, 2)
    assert two[1].nonzero()[:, 0].tolist() == [0, 2] and two[2].nonzero()[:, 0].tolist() == [4]


def test_direction_stats_on_a_hand_made_example(stats):
    result, (pos, neg) = stats.direction_stats(
        {"icl_logit": ICL, "pmd": PMD}, POSITIVE, *GROUPS, topk=1
    )
    assert result["num_anchors"] == 4 and result["num_anchors_without_negatives"] == 1
    assert result["num_triples"] == 5  # c3 has two positives
    assert pos.sum() == 5 and neg.sum() == 4 and not (pos[4:] | neg[4:]).any()
    icl, pmd = result["scores"]["icl_logit"], result["scores"]["pmd"]
    # ICL: c0 5>4, c1 5>2, c2 1<2, c3 3>1 twice.
    assert icl["auc"] == pytest.approx(4 / 5) and icl["top1"] == pytest.approx(3 / 4)
    # PMD: c0 1<3, c1 2=2 (1/2), c2 5>0, c3 4>2 and 1<2; best of c3: 4 > 2.
    assert pmd["auc"] == pytest.approx(2.5 / 5) and pmd["top1"] == pytest.approx(2.5 / 4)
    assert pmd["positive"]["mean"] == pytest.approx(13 / 5) and pmd["positive"]["count"] == 5
    assert pmd["hard_negative"]["mean"] == pytest.approx(7 / 4)
    assert pmd["hard_negative"]["sd"] == pytest.approx(math.sqrt((1.25**2 + 0.25**2 * 2
                                                                  + 1.75**2) / 4))


def test_image_offset_r2_is_the_between_image_share_of_variance(stats):
    pairs = torch.ones(2, 2, dtype=torch.bool)
    # Image 0 scores 0 and 2, image 1 scores 4 and 6: between 16 of total 20.
    result = stats.image_offset_r2(torch.tensor([[0.0, 4.0], [2.0, 6.0]]), pairs)
    assert result == {"r2": pytest.approx(0.8), "num_images": 2, "num_pairs": 4,
                      "chance_r2": pytest.approx(1 / 3)}
    offset_only = stats.image_offset_r2(torch.tensor([[1.0, 3.0], [1.0, 3.0]]), pairs)
    assert offset_only["r2"] == pytest.approx(1.0)
    assert stats.image_offset_r2(torch.ones(2, 2), pairs)["r2"] is None


def _auc(pairs):
    wins = [1.0 if p > n else 0.5 if p == n else 0.0 for p, negatives in pairs for n in negatives]
    return sum(wins) / len(wins)


def test_script_on_a_trained_model_agrees_with_the_rerank_scores(stats, run, tmp_path,  # noqa: F811
                                                                 capsys):
    out = tmp_path / "stats"
    argv = ["--config_file", run["config"], "--out", str(out), "--topk", "3", "--device", "cpu",
            "--num_workers", "0", "--batch_size", "4"]
    assert stats.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| video | query clip | pmd |" in printed and "| image |" in printed
    assert printed.endswith((out / "pmd_score_stats.md").read_text())  # after any log lines
    assert (out / "pmd_scores.png").stat().st_size > 1000
    assert not [name for name in os.listdir(out) if name.startswith(".gallery_tokens")]
    report = json.loads((out / "pmd_score_stats.json").read_text())
    assert report["pmd_directions"] == ["image"] and report["num_gallery_images"] == 8
    video, image = report["directions"]["video"], report["directions"]["image"]
    # 7 ground-truth queries, one without frames: 6 clips, each with 1 image in a livestream
    # of 4 (3 negatives), and 6 images each with 1 clip among 3 in its livestream.
    assert (video["num_anchors"], video["num_triples"]) == (6, 18)
    assert (image["num_anchors"], image["num_triples"]) == (6, 12)
    for section in (video, image):
        for score in section["scores"].values():
            assert 0.0 <= score["auc"] <= 1.0 and 0.0 <= score["top1"] <= 1.0
    assert report["image_offset"]["pmd"]["num_pairs"] == 24
    assert report["image_offset"]["pmd"]["num_images"] == 8

    # Re-ranking each whole livestream gallery (4 images) writes every pair's PMD score.
    rerank = str(tmp_path / "rerank")
    assert _eval(["--config_file", run["config"], "--out", rerank, "--rerank_topk", "4"])[0] == 0
    _, rankings = _load(rerank)
    pmd = {(line["video_id"], image_id): score
           for line in rankings if not line["missing"] for image_id, score in line["pmd_topk"]}
    truth = {line["video_id"]: line["gt"][0].removesuffix(".jpg") for line in rankings
             if not line["missing"]}
    images = {(clip, image) for clip, image in pmd}
    by_clip = [(pmd[c, truth[c]], [pmd[c, i] for d, i in images if d == c and i != truth[c]])
               for c in truth]
    by_image = [(pmd[c, truth[c]], [pmd[d, truth[c]] for d in truth
                                    if d != c and (d, truth[c]) in pmd]) for c in truth]
    scores = video["scores"]["pmd"]
    assert scores["auc"] == pytest.approx(_auc(by_clip))
    assert scores["positive"]["mean"] == pytest.approx(
        sum(p for p, _ in by_clip) / 6, abs=1e-5
    )
    assert scores["hard_negative"]["mean"] == pytest.approx(
        sum(sum(n) for _, n in by_clip) / 18, abs=1e-5
    )
    assert image["scores"]["pmd"]["auc"] == pytest.approx(_auc(by_image))
    metrics = json.loads(open(os.path.join(rerank, "metrics.json")).read())
    # Every negative is a candidate: the top-1 is R@1 over the 6 clips (of 7 queries).
    assert scores["top1"] * 6 == pytest.approx(metrics["pmd_rerank"]["r@1"] * 7 / 100)
    assert video["scores"]["icl_logit"]["top1"] * 6 == pytest.approx(metrics["icl"]["r@1"] * 7
                                                                      / 100)


def test_a_model_without_pmd_head_is_one_line(stats, run, tmp_path, capsys):  # noqa: F811
    saved = yaml.safe_load(open(run["config"]))
    saved["model_config"]["rice"].update(
        training_head_type="contrastive", tasks=["vic"], tasks_sample_ratio=[1.0]
    )
    folder = tmp_path / "vic"
    folder.mkdir()
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    config, _ = loading.load_eval_config(str(folder / "config.yaml"), "videotoshop")
    torch.save(build_model(OmegaConf.merge(config.model_config.rice, {"model": "rice"}))
               .state_dict(), folder / "rice_final.pth")
    argv = ["--config_file", str(folder / "config.yaml"), "--out", str(tmp_path / "o"),
            "--device", "cpu"]
    assert stats.main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "no PMD head" in error[0]
    assert not os.path.exists(tmp_path / "o")
