"""Distributed evaluation: ``lpr_eval.py`` / ``movingfashion_eval.py`` under torchrun with 2
gloo processes write the metrics.json, rankings.jsonl and embeddings.pt of one process, with
and without PMD re-ranking; a data error on rank 1 ends both ranks with rank 0's one line."""
import os
import shutil
import subprocess

import torch
import yaml
from test_eval import LIVES, _load, run, write_movingfashion  # noqa: F401 (run: the fixture)
from toy_helpers import REPO, subprocess_env, torchrun

from mmf.evaluation.sharding import shard_rows
from mmf_cli import evaluate

# 8 gallery images in 4 batches: 2 per rank; 6 query clips in 3 batches: 1 on rank 0, 2 on
# rank 1, so the shards are uneven.
BATCH_SIZE = "2"


def _torchrun(script, config, out, *extra):
    """``script`` under torchrun with 2 gloo processes (one thread each)."""
    command = [*torchrun(script), "--config_file", str(config), *_options(out, *extra)]
    return subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=240)


def _options(out, *extra):
    return ["--device", "cpu", "--num_workers", "0", "--batch_size", BATCH_SIZE,
            "--out", str(out), *extra]


def _one_process(dataset, config, out, *extra):
    """The same evaluation in this process, on one thread like each torchrun process."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["--config_file", str(config), *_options(out, *extra)]
        return evaluate.cli_main(argv, dataset, dataset == "movingfashion", description="eval")
    finally:
        torch.set_num_threads(threads)


def _same_outputs(script, dataset, config, tmp_path, *extra):
    """Evaluate in one process and in two; assert identical outputs; returns the metrics."""
    assert _one_process(dataset, config, tmp_path / "one", *extra) == 0
    two = _torchrun(script, config, tmp_path / "two", *extra)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-4000:]
    metrics, rankings = _load(tmp_path / "two")
    assert (metrics, rankings) == _load(tmp_path / "one")
    cache = [torch.load(tmp_path / side / "embeddings.pt", weights_only=True)
             for side in ("one", "two")]
    assert cache[0].keys() == cache[1].keys()
    for key, value in cache[0].items():
        same = torch.equal if isinstance(value, torch.Tensor) else (lambda a, b: a == b)
        assert same(value, cache[1][key]), key
    # Rank 0 alone prints the report; no token file is left behind.
    assert two.stdout.count("checkpoint: ") == 1 and "R@1" in two.stdout
    assert not [name for name in os.listdir(tmp_path / "two") if "gallery_tokens" in name]
    return metrics, rankings


def test_shard_rows_are_whole_batches_in_order():
    for length, batch_size, world_size in ((8, 2, 2), (6, 2, 2), (7, 3, 4), (1, 4, 3), (0, 2, 2)):
        parts = [shard_rows(length, batch_size, r, world_size) for r in range(world_size)]
        assert [row for part in parts for row in part] == list(range(length))
        assert all(part.start % batch_size == 0 for part in parts)
    assert [len(shard_rows(6, 2, r, 2)) for r in range(2)] == [2, 4]


def test_lpr_eval_two_ranks_equals_one_process(run, tmp_path):  # noqa: F811
    metrics, rankings = _same_outputs(REPO / "lpr_eval.py", "videotoshop", run["config"],
                                      tmp_path / "icl")
    assert metrics["icl"]["num_queries"] == 7 and "pmd_rerank" not in metrics
    assert metrics["num_gallery_images"] == 8 and metrics["num_encoded_queries"] == 6

    extra = ("--rerank_topk", "3", "--rerank_fusion", "sum", "--rerank_weight", "auto")
    metrics, rankings = _same_outputs(REPO / "lpr_eval.py", "videotoshop", run["config"],
                                      tmp_path / "sum", *extra)
    section = metrics["pmd_rerank"]
    assert section["rerank_fusion"] == "sum" and section["weight_search"]["split"] == "val"
    assert section["num_candidate_mismatch"] == 0
    assert all(len(line["pmd_topk"]) == 3 for line in rankings if not line["missing"])


def test_movingfashion_eval_two_ranks_equals_one_process(run, tmp_path):  # noqa: F811
    mf_dir = tmp_path / "mf"
    write_movingfashion(str(mf_dir), run["data_dir"])
    with open(run["config"]) as handle:
        saved = yaml.safe_load(handle)
    lpr = saved["dataset_config"].pop("videotoshop")
    saved["dataset_config"]["movingfashion"] = {"data_dir": str(mf_dir),
                                                "processors": lpr["processors"]}
    saved["datasets"] = "movingfashion"
    config = tmp_path / "mf_config.yaml"
    config.write_text(yaml.safe_dump(saved))
    checkpoint = os.path.join(os.path.dirname(run["config"]), "rice_final.pth")
    metrics, rankings = _same_outputs(
        REPO / "movingfashion_eval.py", "movingfashion", config, tmp_path,
        "--checkpoint", checkpoint, "--rerank_topk", "3",
    )
    assert metrics["gallery"] == "global" and metrics["icl"]["num_queries"] == 6
    # One global gallery: rank 1's queries were re-ranked with rank 0's gallery tokens too.
    assert metrics["pmd_rerank"]["num_candidate_mismatch"] == 0
    assert {image_id[:4] for line in rankings for image_id, _ in line["pmd_topk"]} == {
        live[:4] for live in LIVES
    }


def test_data_error_on_rank_1_ends_both_ranks_in_one_line(run, tmp_path):  # noqa: F811
    """The last gallery image (encoded by rank 1) is not an image: rank 0 reports it, naming
    rank 1, instead of waiting for rank 1's embeddings."""
    data_dir = tmp_path / "data"
    shutil.copytree(run["data_dir"], data_dir)
    broken = data_dir / "gallery" / LIVES[1] / f"{LIVES[1][:4]}img3.jpg"
    broken.write_bytes(b"not a jpeg")
    result = _torchrun(REPO / "lpr_eval.py", run["config"], tmp_path / "out", "--data_dir",
                       str(data_dir), "--rerank_topk", "2")
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith("error: rank 1: "), result.stderr[-3000:]
    assert broken.name in errors[0]
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not [name for name in os.listdir(tmp_path / "out") if "gallery_tokens" in name]
