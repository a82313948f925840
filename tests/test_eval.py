"""End to end: train a tiny RICE for 2 updates, then evaluate with lpr_eval.py /
movingfashion_eval.py on small datasets in the LPR4M and MovingFashion test layouts."""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image

from mmf.common.errors import CheckpointError, DataError
from mmf.evaluation import loading
from mmf.evaluation import run as eval_run
from mmf.evaluation.metrics import summarize
from mmf.evaluation.ranking import rank_queries
from mmf.utils.build import build_model
from mmf_cli import evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIVES = ("11111111-2222-3333-4444-555555555555", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
COLORS = [
    (200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)
]
ENCODER = {
    "image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "heads": 2, "output_dim": 16
}
SIZE_32 = {
    "type": "torchvision_transforms",
    "params": {"transforms": [{"type": "Resize", "params": {"size": [32, 32]}}, "ToTensor"]},
}


def _image(path, color, seed):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    noise = np.random.default_rng(seed).normal(0, 20, (32, 32, 3))
    Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(path)


def write_lpr(root):
    """6 train pairs; test: 2 livestreams x (4 gallery images, 3 query clips); ground truth
    for 7 clips (one has no frames on disk or in the query json, one id has '.jpg')."""
    ann = os.path.join(root, "annotations")
    os.makedirs(ann)
    lines = []
    for product in range(6):
        _image(f"{root}/training_images/train{product}.jpg", COLORS[product], product)
        clip = f"{LIVES[product % 2]}-{1000 + product}-{2000 + product}"
        frames = [f"{clip}-{i:04d}" for i in range(2)]
        for i, frame in enumerate(frames):
            _image(f"{root}/training_frames/{clip}/{frame}.jpg", COLORS[product],
                   100 + 10 * product + i)
        columns = [clip, json.dumps(frames), json.dumps([[], []]), f"train{product}", "t", "1",
                   "bags",
                   "asr", "small", "short", "single"]
        lines.append("\t".join(columns))
    with open(f"{ann}/training_videoinfo_tiny.txt", "w") as handle:
        handle.write("\n".join(lines) + "\n")
    gallery, queries, gt = [], {}, {}
    for number, live in enumerate(LIVES):
        for g in range(4):
            _image(f"{root}/gallery/{live}/{live[:4]}img{g}.jpg", COLORS[(g + number) % 6],
                   500 + 10 * number + g)
            gallery.append(f"{live}/{live[:4]}img{g}.jpg")
        for q in range(3):
            clip = f"{live}-{5000 + q}-{6000 + q}"
            frames = [f"{clip}/{clip}-{i:04d}.jpg" for i in range(3)]
            for i, frame in enumerate(frames):
                _image(f"{root}/query/{frame}", COLORS[(q + number) % 6],
                       900 + 10 * number + 3 * q + i)
            target = f"{live[:4]}img{q}"
            queries[clip] = {"frames": frames, "gt": [target], "category": ["bags", "shoes"][q % 2]}
            gt[clip] = [target + ".jpg"] if q == 0 else [target]
    gt[f"{LIVES[0]}-9000-9999"] = [f"{LIVES[0][:4]}img0"]
    with open(f"{ann}/query_tenframes.json", "w") as handle:
        json.dump(queries, handle)
    with open(f"{ann}/gallery_main.txt", "w") as handle:
        handle.write("\n".join(gallery) + "\n")
    with open(f"{ann}/gallery_one_live.txt", "w") as handle:
        handle.write("\n".join(gallery[:4]) + "\n")
    with open(f"{ann}/test_videoid_to_gtimage_{len(gt)}.json", "w") as handle:
        json.dump(gt, handle)


def train_config(data_dir, save_dir):
    return {
        "dataset_config": {
            "videotoshop": {
                "data_dir": data_dir,
                "annotations": {
                    "train": ["annotations/training_videoinfo_tiny.txt"],
                    "val": ["annotations/training_videoinfo_tiny.txt"],
                    "test": ["annotations/query_tenframes.json", "annotations/gallery_main.txt"],
                },
                "processors": {
                    "train_image_processor": SIZE_32,
                    "eval_image_processor": SIZE_32,
                    "masked_video_processor": {
                        "type": "temporal_masked_slice",
                        "params": {"max_temporal_len": 4, "slice_pos": 2, "augment_order": 0,
                                   "cut_tail": False},
                    },
                },
            }
        },
        "model_config": {
            "rice": {
                "training_head_type": "pretraining",
                "tasks": ["vic", "vim"],
                "tasks_sample_ratio": [0.5, 0.5],
                "image_encoder": {"type": "openai_clip", "params": dict(ENCODER)},
                "transformer_model": {"num_attention_heads": 4},
            }
        },
        "optimizer": {"type": "adam_w", "params": {"lr": 1e-4, "weight_decay": 0.0}},
        "evaluation": {"metrics": [{"type": "r@k_general"}]},
        "training": {
            "experiment_name": "tiny_eval", "batch_size": 4, "num_workers": 0,
            "persistent_workers": False, "max_updates": 2, "log_interval": 1,
            "checkpoint_interval": 100, "evaluation_interval": 1,
            "device": "cpu", "tensorboard": False, "progress_bar": False,
            "early_stop": {"enabled": True, "criteria": "videotoshop/r@1", "minimize": False,
                           "patience": 100},
        },
        "env": {"save_dir": save_dir},
        "run_type": "train_val",
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A dataset and a RICE (ICL + PMD) trained for 2 updates by the trainer, validating
    with the ``r@k_general`` metric after each update (early stopping watches R@1)."""
    from mmf_cli.run import main as train_main

    root = tmp_path_factory.mktemp("eval")
    data_dir, save_dir = str(root / "data"), str(root / "save" / "tiny_eval")
    write_lpr(data_dir)
    config_path = root / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(train_config(data_dir, save_dir)))
    train_main([f"config={config_path}", "model=rice", "dataset=videotoshop"])
    assert os.path.isfile(os.path.join(save_dir, "rice_final.pth"))
    with open(os.path.join(save_dir, "train.log")) as handle:
        log = handle.read()
    assert "val/videotoshop/r@1" in log and "new best videotoshop/r@1" in log
    return {"root": root, "data_dir": data_dir, "config": os.path.join(save_dir, "config.yaml")}


def _eval(argv, capsys=None):
    argv = argv + ["--device", "cpu", "--num_workers", "0", "--batch_size", "4"]
    code = evaluate.cli_main(argv, "videotoshop", global_gallery=False, description="lpr_eval")
    output = capsys.readouterr() if capsys is not None else None
    return code, output


def _eval_args(config_file, tmp_path, *extra):
    parser = evaluate.add_eval_arguments(argparse.ArgumentParser())
    argv = ["--config_file", config_file, "--device", "cpu", "--num_workers", "0",
            "--out", str(tmp_path / "o")]
    return evaluate.eval_options(parser.parse_args(argv + list(extra)))


def _load(out_dir):
    with open(os.path.join(out_dir, "metrics.json")) as handle:
        metrics = json.load(handle)
    with open(os.path.join(out_dir, "rankings.jsonl")) as handle:
        rankings = [json.loads(line) for line in handle]
    return metrics, rankings


def test_lpr_eval_end_to_end_with_pmd_rerank(run, tmp_path, capsys):
    out = str(tmp_path / "out")
    argv = ["--config_file", run["config"], "--out", out, "--rerank_topk", "2", "--visualize", "1"]
    code, output = _eval(argv, capsys)
    assert code == 0, output.err
    for text in ("R@1", "R@10", "mAP", "MedR", "icl", "pmd_rerank", "category"):
        assert text in output.out
    metrics, rankings = _load(out)
    icl, pmd = metrics["icl"], metrics["pmd_rerank"]
    assert icl["num_queries"] == 7 and icl["num_missing"] == 1 and pmd["rerank_topk"] == 2
    assert set(icl["by_category"]) == {"bags", "shoes"} and (
        icl["by_category"]["bags"]["num_queries"] == 4
    )
    for section in (icl, pmd):
        assert all(0.0 <= section[f"r@{k}"] <= 100.0 for k in (1, 3, 5, 10))
        assert section["r@10"] == pytest.approx(600 / 7)  # every clip with frames hits within 4
    assert metrics["missing_queries"] == [f"{LIVES[0]}-9000-9999"]
    _check_rankings_lines(rankings)
    _check_cache_and_pictures(out, rankings, icl)


def _check_rankings_lines(rankings):
    # One rankings line per ground-truth query; the missing one is a miss.
    assert len(rankings) == 7
    missing = [line for line in rankings if line["missing"]]
    assert len(missing) == 1 and missing[0]["rank"] is None and missing[0]["topk"] == []
    present = [line for line in rankings if not line["missing"]]
    assert all(len(line["topk"]) == 4 and len(line["pmd_topk"]) == 2 for line in present)
    assert all(line["topk"][0][1] >= line["topk"][-1][1] for line in present)
    assert all(line["pmd_topk"][0][1] >= line["pmd_topk"][1][1] for line in present)
    # Each query was ranked only against its own livestream.
    for line in present:
        assert all(image_id.startswith(line["live_id"][:4]) for image_id, _ in line["topk"])
    # PMD moves ground truth only inside the top 2.
    for line in present:
        if line["rank"] > 2:
            assert line["pmd_rank"] == line["rank"]


def _check_cache_and_pictures(out, rankings, icl):
    # The cached embeddings reproduce the ICL metrics.
    cache = torch.load(os.path.join(out, "embeddings.pt"), weights_only=True)
    assert len(cache["query_ids"]) == 6 and cache["gallery_emb"].shape[0] == 8
    gt = {line["video_id"]: line["gt"] for line in rankings}
    again = summarize(rank_queries(cache["query_emb"], cache["query_ids"], cache["gallery_emb"],
                                   cache["gallery_ids"], gt, cache["query_groups"],
                                   cache["gallery_groups"]))
    assert again["r@1"] == icl["r@1"] and again["map"] == icl["map"]
    pictures = sorted(os.listdir(os.path.join(out, "visualize")))
    assert [p.split("_")[0] for p in pictures] == ["attention", "query"]
    assert all(os.path.getsize(os.path.join(out, "visualize", p)) > 1000 for p in pictures)


def test_authors_checkpoint_and_config_with_data_dir(run, tmp_path, capsys):
    """A released-style run folder: bare state dict with DDP ``module.`` prefixes, and a
    config.yaml with the original's keys, an absolute data_dir that does not exist, the
    BERT tokenizer (no vocabulary on disk) and a processor this framework does not have."""
    ours = str(tmp_path / "ours")
    assert _eval(["--config_file", run["config"], "--out", ours])[0] == 0
    trained = torch.load(os.path.join(os.path.dirname(run["config"]), "rice_final.pth"),
                         weights_only=True)
    authors = tmp_path / "lpr_rice_vic_vim"
    authors.mkdir()
    torch.save({f"module.{key}": value for key, value in trained.items()},
               authors / "rice_final.pth")
    data = train_config("/mnt/csip-113/nowhere/lpr4m", "./save/lpr_rice_vic_vim")
    data["dataset_config"]["videotoshop"]["annotations"]["train"] = [
        "annotations/training_videoinfo_641821.txt"
    ]
    data["dataset_config"]["videotoshop"]["processors"]["text_processor"] = {
        "type": "bert_tokenizer",
        "params": {
            "tokenizer_config": {"type": "pretrained/bert-base-uncased",
                                 "params": {"do_lower_case": True}},
            "max_seq_length": 100,
            "mask_probability": 0,
        },
    }
    data["dataset_config"]["videotoshop"]["processors"]["masked_token_processor"] = {
        "type": "masked_bert_tokenizer", "params": {"max_seq_length": 100},
    }
    clip_file = "pretrained/ViT-B-32.pt"
    data["model_config"]["rice"]["image_encoder"]["params"]["pretrained_model_name"] = clip_file
    data["model_config"]["rice"]["transformer_model"]["pretrained_model_name"] = clip_file
    data["model_config"]["rice"]["bert_model_dir"] = "pretrained/bert-base-uncased"
    data.update(model="rice", datasets="videotoshop", run_type="train_val")
    (authors / "config.yaml").write_text(yaml.safe_dump(data))
    theirs = str(tmp_path / "theirs")
    code, output = _eval(
        ["--config_file", str(authors / "config.yaml"), "--data_dir", run["data_dir"],
         "--out", theirs],
        capsys,
    )
    assert code == 0, output.err
    assert _load(theirs)[0]["icl"] == _load(ours)[0]["icl"]  # same weights, deterministic
    assert _load(theirs)[1] == _load(ours)[1]

    # Without --data_dir the baked-in path is used and the error names it.
    code, output = _eval(["--config_file", str(authors / "config.yaml"), "--out", theirs], capsys)
    assert code == 1 and "/mnt/csip-113/nowhere/lpr4m" in output.err


def test_strict_loading_names_the_keys(run, tmp_path):
    trained = torch.load(os.path.join(os.path.dirname(run["config"]), "rice_final.pth"),
                         weights_only=True)
    key = sorted(trained)[0]
    del trained[key]
    path = tmp_path / "partial.pth"
    torch.save(trained, path)
    config, _ = loading.load_eval_config(run["config"], "videotoshop")
    with pytest.raises(CheckpointError, match="1 missing keys") as error:
        loading.load_eval_model(config, str(path), "cpu")
    assert key in str(error.value)


def test_conditional_restricts_queries(run, tmp_path):
    chosen = [f"{LIVES[1]}-5001-6001", f"{LIVES[0]}-9000-9999"]
    listing = tmp_path / "subset.txt"
    listing.write_text("".join(f"{video_id}\textra column\n" for video_id in chosen))
    out = str(tmp_path / "out")
    argv = ["--config_file", run["config"], "--out", out, "--conditional", str(listing)]
    assert _eval(argv)[0] == 0
    metrics, rankings = _load(out)
    assert metrics["icl"]["num_queries"] == 2 and metrics["icl"]["num_missing"] == 1
    assert metrics["icl"]["num_extra"] == 0
    assert sorted(line["video_id"] for line in rankings) == sorted(chosen)


def test_python_api_gives_what_the_command_line_gives(run, tmp_path):
    config, dataset = loading.load_eval_config(run["config"], "videotoshop")
    data = loading.load_eval_data(config, dataset, global_gallery=False)
    options = eval_run.EvalOptions(
        run["config"], device="cpu", num_workers=0, batch_size=4, out=str(tmp_path / "api")
    )
    report, out_dir = eval_run.run_evaluation(options, config, dataset, data, progress=False)
    assert out_dir == str(tmp_path / "api") and report["icl"]["num_queries"] == 7
    assert _eval(["--config_file", run["config"], "--out", str(tmp_path / "cli")])[0] == 0
    assert _load(out_dir) == _load(str(tmp_path / "cli"))


def test_livestream_without_gallery_is_an_error(run, tmp_path):
    config, dataset = loading.load_eval_config(run["config"], "videotoshop")
    config.dataset_config.videotoshop.annotations.test[1] = "annotations/gallery_one_live.txt"
    data = loading.load_eval_data(config, dataset, global_gallery=False)
    args = _eval_args(run["config"], tmp_path)
    with pytest.raises(DataError, match=LIVES[1]):
        eval_run.run_evaluation(args, config, dataset, data, progress=False)


def test_contrastive_head_checkpoint_and_rerank_error(run, tmp_path, capsys):
    """The LPR vic variant (contrastive head, norm_s) evaluates; asking it to re-rank fails."""
    with open(run["config"]) as handle:
        saved = yaml.safe_load(handle)
    saved["model_config"]["rice"].update(
        training_head_type="contrastive", tasks=["vic"], tasks_sample_ratio=[1.0]
    )
    folder = tmp_path / "vic"
    folder.mkdir()
    saved["env"]["save_dir"] = str(folder)
    (folder / "config.yaml").write_text(yaml.safe_dump(saved))
    config, _ = loading.load_eval_config(str(folder / "config.yaml"), "videotoshop")
    node = OmegaConf.merge(config.model_config.rice, {"model": "rice"})
    torch.manual_seed(0)
    torch.save(build_model(node).state_dict(), folder / "rice_final.pth")
    argv = ["--config_file", str(folder / "config.yaml"), "--out", str(tmp_path / "o")]
    assert _eval(argv)[0] == 0
    code, output = _eval(argv + ["--rerank_topk", "2"], capsys)
    assert code == 1 and "PMD head" in output.err


def write_movingfashion(root, source_dir):
    """MovingFashion test layout reusing the LPR test images: 6 clips, one global gallery of 8
    images, regular / hard labels in video_to_gt.json."""
    ann = os.path.join(root, "annotations")
    os.makedirs(ann)
    with open(os.path.join(source_dir, "annotations", "query_tenframes.json")) as handle:
        lpr_queries = json.load(handle)
    queries, gt = {}, {}
    for number, (_clip, entry) in enumerate(sorted(lpr_queries.items())):
        video_id = f"video{number}"
        frames = [f"query/{frame}" for frame in entry["frames"]]
        queries[video_id] = {"frames": frames, "gt": entry["gt"]}
        difficulty = ["regular", "hard"][number % 2]
        gt[video_id] = {"gt": entry["gt"][0], "source": "x", "difficulty": difficulty}
    with open(os.path.join(source_dir, "annotations", "gallery_main.txt")) as handle:
        gallery = [f"gallery/{line.strip()}" for line in handle if line.strip()]
    with open(f"{ann}/query_tenframes.json", "w") as handle:
        json.dump(queries, handle)
    with open(f"{ann}/gallery_full.txt", "w") as handle:
        handle.write("\n".join(gallery) + "\n")
    with open(f"{ann}/video_to_gt.json", "w") as handle:
        json.dump(gt, handle)
    for folder in ("query", "gallery"):
        os.symlink(os.path.join(source_dir, folder), os.path.join(root, folder))


def test_movingfashion_eval_global_gallery_and_split(run, tmp_path, capsys):
    mf_dir = str(tmp_path / "mf")
    write_movingfashion(mf_dir, run["data_dir"])
    with open(run["config"]) as handle:
        saved = yaml.safe_load(handle)
    lpr = saved["dataset_config"].pop("videotoshop")
    saved["dataset_config"]["movingfashion"] = {"data_dir": mf_dir, "processors": lpr["processors"]}
    saved["datasets"] = "movingfashion"
    config_path = tmp_path / "mf_config.yaml"
    config_path.write_text(yaml.safe_dump(saved))
    out = str(tmp_path / "out")
    checkpoint = os.path.join(os.path.dirname(run["config"]), "rice_final.pth")
    command = [sys.executable, os.path.join(REPO, "movingfashion_eval.py"),
               "--config_file", str(config_path),
               "--checkpoint", checkpoint, "--device", "cpu", "--num_workers", "0", "--out", out,
               "--rerank_topk", "3"]
    output = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path), timeout=300)
    code = output.returncode
    output.out = output.stdout
    assert code == 0, output.stderr
    metrics, rankings = _load(out)
    assert metrics["gallery"] == "global" and metrics["num_gallery_images"] == 8
    icl = metrics["icl"]
    assert icl["num_queries"] == 6 and icl["num_missing"] == 0
    assert set(icl["by_difficulty"]) == {"regular", "hard"}
    assert icl["by_difficulty"]["hard"]["num_queries"] == 3
    assert "difficulty" in output.out and "pmd_rerank" in output.out
    assert all(len(line["pmd_topk"]) == 3 for line in rankings)
    # Global gallery: the top lists mix both livestreams' images.
    assert all(len(line["topk"]) == 8 for line in rankings)
    assert all(math.isfinite(line["rank"]) for line in rankings)
