"""Boxes in training and evaluation (issue 12): ``model_config.rice.box_mode`` crop and
patch_mask through the dataset and the model, 2 training updates with each, ``lpr_eval.py
--boxes none|gt|FILE`` with the full-frame fallback count, and the scale breakdown derived from
the ground-truth boxes. Real frames from ``test_datasets``' fixture writer."""
import json
import logging
import os

import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image
from test_datasets import (
    LIVE_A,
    LIVE_B,
    QUERY_A,
    QUERY_B,
    TRAIN_CLIPS,
    builder,
    frame_ids,
    load_val,
    lpr_config,
    small_processors,
    write_jpeg,
    write_lpr_dataset,
)
from test_rice_model import tiny_batch, tiny_rice

from mmf.common.errors import ConfigError, DataError
from mmf.models.rice.boxes import token_grid, token_keep
from mmf_cli import evaluate

ENCODER = dict(image_size=32, patch_size=16, width=32, layers=1, heads=2, output_dim=16)


@pytest.fixture(scope="module")
def lpr_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    write_lpr_dataset(root)
    (root / "annotations/train.txt").write_text((root / "annotations/train_lpr4m.txt").read_text())
    gt = {f: [[0, 0, 40, 36]] for f in frame_ids(QUERY_A, 10)}  # 75 % of the 48x40 frame
    gt.update({f: [[0, 0, 10, 10]] for f in frame_ids(QUERY_B, 2)})  # 5 %; 2 frames without
    (root / "annotations/test_frameid2gtbox_2.json").write_text(json.dumps(gt))
    predicted = {f: [[8, 8, 30, 30, 0.9]] for f in frame_ids(QUERY_A, 5)}
    (root / "predicted.json").write_text(json.dumps(predicted))
    return root


def test_patch_rule_on_a_hand_made_box():
    assert token_grid(50) == (1, 7) and token_grid(49) == (0, 7) and token_grid(17) == (1, 4)
    with pytest.raises(ConfigError, match="52 tokens"):
        token_grid(52)
    # ViT-B/32 at 224: 32 px patches. [0, 0, 64, 64] covers patches (0,0), (0,1), (1,0), (1,1);
    # [100, 100, 110, 110] sits inside patch (3, 3): kept although its IoU is tiny.
    keep = token_keep(torch.tensor([[0.0, 0.0, 64.0, 64.0], [100.0, 100.0, 110.0, 110.0]]),
                      50, 224, 224)
    assert keep[:, 0].all()  # the class token
    assert torch.nonzero(keep[0, 1:]).flatten().tolist() == [0, 1, 7, 8]
    assert torch.nonzero(keep[1, 1:]).flatten().tolist() == [3 * 7 + 3]
    # A CNN's 7x7 map: no prefix token.
    assert token_keep(torch.tensor([0.0, 0.0, 64.0, 64.0]), 49, 224, 224).sum() == 4


def _frames(root, clip_id, count):
    return [Image.open(root / "training_frames" / clip_id / f"{f}.jpg").convert("RGB")
            for f in frame_ids(clip_id, count)]


def test_crop_through_the_dataset(lpr_root):
    """Frame 1 holds [2,2,10,10] and [30,20,50,42]: largest picks the second, clamped to the
    48x40 frame, grown by 10 % a side: (28, 18, 48, 40). Frame 2 has no box: whole."""
    config = lpr_config(lpr_root, box_mode="crop")
    dataset = load_val(config)
    clip_id = TRAIN_CLIPS[1][0]
    frames = _frames(lpr_root, clip_id, 3)
    transform = dataset.eval_image_processor
    video = dataset[1].video
    assert torch.equal(video[0], transform(frames[0].crop((2, 3, 22, 33))))
    assert torch.equal(video[1], transform(frames[1].crop((28, 18, 48, 40))))
    assert torch.equal(video[2], transform(frames[2]))
    config.box_rule, config.box_margin = "union", 0.0
    assert torch.equal(load_val(config)[1].video[1], transform(frames[1].crop((2, 2, 48, 40))))


def test_patch_mask_through_the_dataset(lpr_root):
    """The frame stays whole; its box follows Resize(36) and CenterCrop(32)."""
    boxed = load_val(lpr_config(lpr_root, box_mode="patch_mask"))[1]
    plain = load_val(lpr_config(lpr_root))[1]
    assert torch.allclose(boxed.video, plain.video, atol=1e-6)  # v2 vs v1 float rounding
    # [4, 6, 20, 30] on 48x40 -> x * 36/48, y * 36/40 -> minus the crop offset 2.
    expected = torch.tensor([4 * 0.75 - 2, 6 * 0.9 - 2, 20 * 0.75 - 2, 30 * 0.9 - 2])
    assert torch.allclose(boxed.video_boxes[0], expected, atol=1e-4)
    assert boxed.video_boxes.shape == (10, 4)
    assert torch.equal(boxed.video_boxes[2], torch.tensor([0.0, 0.0, 32.0, 32.0]))  # no box
    assert torch.equal(boxed.video_boxes[5], torch.tensor([0.0, 0.0, 32.0, 32.0]))  # padding


def test_patch_mask_pooling_is_the_masked_mean():
    model = tiny_rice(box_mode="patch_mask").eval()
    batch = tiny_batch(batch=2, frames=2)
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 32.0, 32.0]],
                          [[16.0, 16.0, 32.0, 32.0], [0.0, 0.0, 32.0, 32.0]]])
    with torch.no_grad():
        emb, tokens = model.encode_video(batch["video"], batch["video_temporal_mask"], boxes=boxes)
        tower = model.image_encoder.model
        projected = tower.vit.norm(tokens) @ tower.proj  # [2, 2, 17, E]; grid 4x4 of 8 px
        by_hand = []
        for clip in range(2):
            frames = []
            for frame in range(2):
                if not batch["video_temporal_mask"][clip, frame]:
                    frames.append(torch.zeros_like(projected[0, 0, 0]))
                    continue
                x1, y1, x2, y2 = (int(v) // 8 for v in boxes[clip, frame])
                kept = [1 + r * 4 + c for r in range(y1, y2) for c in range(x1, x2)]
                frames.append(projected[clip, frame, kept].mean(0))
            real = batch["video_temporal_mask"][clip].sum().clamp_min(1)
            by_hand.append(torch.stack(frames).sum(0) / real)
        assert torch.allclose(emb, F.normalize(torch.stack(by_hand), dim=-1), atol=1e-5)
        image_emb, image_tokens = model.encode_image(batch["image"])
        every = (tower.vit.norm(image_tokens) @ tower.proj)[:, 1:].mean(1)
        assert torch.allclose(image_emb, F.normalize(every, dim=-1), atol=1e-5)
        keys = model.key_mask(batch["video"], batch["video_temporal_mask"], 17, boxes)
        assert [int(keys[c, f].sum()) for c, f in ((0, 0), (0, 1), (1, 0), (1, 1))] == [2, 0, 5, 17]


def test_box_mode_off_changes_nothing():
    off, crop, masked = (tiny_rice(box_mode=mode) for mode in (None, "crop", "patch_mask"))
    shapes = {k: v.shape for k, v in off.state_dict().items()}
    for other in (crop, masked):
        assert {k: v.shape for k, v in other.state_dict().items()} == shapes
    batch = tiny_batch()
    losses = []
    for model in (off, crop):
        model.train()
        torch.manual_seed(3)
        losses.append({k: v.item() for k, v in model(batch)["losses"].items()})
    assert losses[0] == losses[1]
    with pytest.raises(DataError, match="video_boxes"):
        masked.train()(batch)
    with pytest.raises(ConfigError, match="box_mode must be"):
        tiny_rice(box_mode="mask")


def _train(root, save_dir, box_mode):
    from mmf.trainers.mmf_trainer import MMFTrainer
    from mmf.utils.configuration import Configuration

    config = {
        "dataset_config": {"videotoshop": {
            "data_dir": str(root),
            "annotations": {"train": ["annotations/train.txt"], "val": []},
            "processors": {"masked_video_processor": {"type": "temporal_masked_slice", "params": {
                "max_temporal_len": 3, "slice_pos": 2, "augment_order": 0, "cut_tail": True}}},
        }},
        "model_config": {"rice": {
            "training_head_type": "pretraining", "tasks": ["vic", "vim", "rec"],
            "tasks_sample_ratio": [0.4, 0.3, 0.3], "box_mode": box_mode,
            "image_encoder": {"type": "openai_clip", "params": ENCODER},
            "transformer_model": {"num_attention_heads": 4},
        }},
        "optimizer": {"type": "adam_w", "params": {"lr": 1e-3, "weight_decay": 0.0}},
        "training": {
            "experiment_name": f"box_{box_mode}", "batch_size": 3, "num_workers": 0,
            "max_updates": 2, "log_interval": 1, "checkpoint_interval": 100,
            "evaluation_interval": 100, "device": "cpu", "tensorboard": False,
            "progress_bar": False, "seed": 5,
        },
        "env": {"save_dir": str(save_dir)},
        "run_type": "train",
    }
    path = save_dir.parent / f"{save_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    parsed = Configuration([f"config={path}", "model=rice", "dataset=videotoshop"]).get_config()
    assert parsed.dataset_config.videotoshop.box_mode == box_mode  # follows the model's key
    small_processors(parsed.dataset_config.videotoshop)
    trainer = MMFTrainer(parsed).load()
    trainer.train()
    assert trainer.state.num_updates == 2
    return str(save_dir / "config.yaml")


@pytest.fixture(scope="module")
def runs(lpr_root, tmp_path_factory):
    save = tmp_path_factory.mktemp("box_runs")
    return {mode: _train(lpr_root, save / mode, mode) for mode in ("crop", "patch_mask")}


def _evaluate(config_file, out, *extra):
    argv = ["--config_file", config_file, "--out", str(out), "--device", "cpu",
            "--num_workers", "0", "--batch_size", "2", *extra]
    code = evaluate.cli_main(argv, "videotoshop", global_gallery=False, description="lpr_eval")
    assert code == 0
    with open(os.path.join(out, "metrics.json")) as handle:
        return json.load(handle)


@pytest.mark.parametrize("mode", ["crop", "patch_mask"])
def test_evaluation_box_sources(runs, lpr_root, tmp_path, capsys, mode):
    """The queries encode frames [0, 4, 9] of A and [0, 1, 3] of B. gt (the default for a box
    model) boxes all of A's and B's first two: 5 with a box, 1 on the full frame; the predicted
    file boxes A's frames 0-4: 2 and 4; none reads no file."""
    gt = _evaluate(runs[mode], tmp_path / "gt")
    assert gt["boxes"]["source"] == "gt" and gt["boxes"]["box_mode"] == mode
    assert (gt["boxes"]["frames_with_box"], gt["boxes"]["frames_full_frame"]) == (5, 1)
    assert "5 encoded query frames with a box, 1 without one" in capsys.readouterr().out
    predicted = _evaluate(
        runs[mode], tmp_path / "file", "--boxes", str(lpr_root / "predicted.json")
    )
    assert predicted["boxes"]["source"] == "file"
    assert (predicted["boxes"]["frames_with_box"], predicted["boxes"]["frames_full_frame"]) == (
        2, 4)
    none = _evaluate(runs[mode], tmp_path / "none", "--boxes", "none")
    assert none["boxes"] == {"source": "none", "box_mode": mode}
    for metrics in (gt, predicted, none):  # the derived scale: A covers 75 %, B 5 %
        assert {k: v["num_queries"] for k, v in metrics["icl"]["by_scale"].items()} == {
            "large": 1, "small": 1}
        assert "derived from the ground-truth boxes" in metrics["breakdown_sources"]["scale"]
    embeddings = [torch.load(tmp_path / name / "embeddings.pt", weights_only=True)["query_emb"]
                  for name in ("gt", "none")]
    assert not torch.allclose(*embeddings)  # the boxes change what the queries encode


def test_evaluation_box_errors(runs, tmp_path):
    argv = ["--config_file", runs["crop"], "--out", str(tmp_path / "x"), "--device", "cpu",
            "--num_workers", "0", "--boxes", str(tmp_path / "missing.json")]
    assert evaluate.cli_main(argv, "videotoshop", False, "lpr_eval") == 1


# Frame sizes (issue 12, item 1): img2dataset stored the 512x640 frames at 256x320 (keep_ratio).
STORED, ANNOTATED = (256, 320), (512, 640)
SIZED_CLIP = f"{LIVE_A}-1667930000000-1667930020000"
SIZED_QUERY = f"{LIVE_B}-1667930100000-1667930120000"
# Pixels of the annotated frame. INSIDE also fits the stored frame, so read as stored pixels
# it silently crops elsewhere; OUTSIDE starts beyond the stored frame (an error there).
INSIDE, INSIDE_STORED = [60, 80, 240, 300], (30, 40, 120, 150)
OUTSIDE, OUTSIDE_STORED = [300, 400, 500, 620], (150, 200, 250, 310)


def _write_sized_frames(folder, clip_id, first_index):
    for index, frame_id in enumerate(frame_ids(clip_id, 2)):
        write_jpeg(folder / clip_id / f"{frame_id}.jpg", first_index + index, STORED)
    sizes = dict(zip(("width", "height", "original_width", "original_height"),
                     STORED + ANNOTATED, strict=True))
    return {frame_id: sizes for frame_id in frame_ids(clip_id, 2)}


@pytest.fixture
def sized_root(tmp_path):
    """One train clip and one query clip of 2 frames each, stored at 256x320, their pixel boxes
    annotated at 512x640, and the converter's frame-size files under their default names."""
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    train_sizes = _write_sized_frames(tmp_path / "training_frames", SIZED_CLIP, 0)
    image_id = "a1b2c3d4-0000-4000-8000-000000000009"
    write_jpeg(tmp_path / "training_images" / f"{image_id}.jpg", 2, (36, 44))
    line = [SIZED_CLIP, json.dumps(frame_ids(SIZED_CLIP, 2)), json.dumps([[INSIDE], [OUTSIDE]]),
            image_id, "title", "3", "apparel", "asr", "small", "long", "single"]
    (annotations / "train_sized.txt").write_text("\t".join(line) + "\n")
    query_sizes = _write_sized_frames(tmp_path / "query", SIZED_QUERY, 3)
    queries = {SIZED_QUERY: {"frames": [f"{SIZED_QUERY}/{f}.jpg"
                                        for f in frame_ids(SIZED_QUERY, 2)], "gt": ["g0"]}}
    (annotations / "query_tenframes.json").write_text(json.dumps(queries))
    first, second = frame_ids(SIZED_QUERY, 2)
    (annotations / "test_frameid2gtbox_1.json").write_text(json.dumps({first: [INSIDE],
                                                                       second: []}))
    (annotations / "frame_sizes_train.json").write_text(json.dumps(train_sizes))
    (annotations / "frame_sizes_test.json").write_text(json.dumps(query_sizes))
    return tmp_path


def _sized_config(root, **overrides):
    """box_mode crop without margin; the train split with the deterministic eval transform."""
    config = lpr_config(root, "annotations/train_sized.txt", box_mode="crop", box_margin=0.0,
                        **overrides)
    config.processors.train_image_processor = config.processors.eval_image_processor
    return config


def _stored_frames(folder, clip_id):
    return [Image.open(folder / clip_id / f"{f}.jpg").convert("RGB")
            for f in frame_ids(clip_id, 2)]


def test_frame_sizes_scale_train_boxes(sized_root, caplog):
    """With the default frame_sizes_file the train pair's boxes are halved before the crop,
    and the val pair file reads the same sizes (logged by each dataset); without it INSIDE
    would be read as stored pixels and OUTSIDE lies beyond the 256x320 frame: an error naming
    the line."""
    config = _sized_config(sized_root)
    with caplog.at_level(logging.INFO):
        sample = builder().load_dataset(config, "train")[0]
        assert torch.equal(load_val(config)[0].video, sample.video)  # val reads the same file
    assert caplog.text.count("sizes of 2 frames (2 resized after annotation)") == 2
    frames = _stored_frames(sized_root / "training_frames", SIZED_CLIP)
    transform = builder().load_dataset(config, "train").eval_image_processor
    assert torch.equal(sample.video[0], transform(frames[0].crop(INSIDE_STORED)))
    assert torch.equal(sample.video[1], transform(frames[1].crop(OUTSIDE_STORED)))
    assert not torch.equal(sample.video[0], transform(frames[0].crop(tuple(INSIDE))))

    unsized = _sized_config(sized_root, frame_sizes_file={"pairs": None, "query": None})
    with pytest.raises(DataError, match=r"train_sized.txt:1: column 3, frame 1: .* far outside "
                                        r"the 256x320 frame"):
        builder().load_dataset(unsized, "train")[0]


def test_frame_sizes_scale_query_boxes(sized_root):
    """attach_query_boxes(gt) scales the ground-truth box with frame_sizes_file.query, and so
    does the derived scale breakdown (12 % of the annotated frame: small); without the file
    the box is read as stored pixels: another crop, 48 % of the frame, large."""
    config = _sized_config(sized_root)
    frames = _stored_frames(sized_root / "query", SIZED_QUERY)
    crops = {}
    for name, node in (("sized", config),
                       ("unsized", _sized_config(sized_root, frame_sizes_file={"query": None}))):
        queries = builder().load_query(node)
        report = builder().attach_query_boxes(node, queries, "gt")
        assert (report["units"], report["frames_with_box"], report["frames_full_frame"]) == (
            "pixels", 1, 1)
        video = queries[0].video
        transform = queries.eval_image_processor
        assert torch.equal(video[1], transform(frames[1]))  # no box: the whole frame
        crops[name] = video[0]
        labels, _ = builder().query_breakdowns(node, queries)
        assert labels["scale"] == {SIZED_QUERY: "small" if name == "sized" else "large"}
    assert torch.equal(crops["sized"], transform(frames[0].crop(INSIDE_STORED)))
    assert torch.equal(crops["unsized"], transform(frames[0].crop(tuple(INSIDE))))


def test_val_queries_read_val_box_file(sized_root, caplog):
    """Val query clips (a val split in the test form) take their ground-truth boxes from
    val_box_file, never test_box_file: without one their frames stay whole (a warning)."""
    config = _sized_config(sized_root)
    config.annotations.val = ["annotations/query_tenframes.json"]
    config.images.val = ["query"]
    queries = builder().load_query(config, "val")
    with caplog.at_level(logging.WARNING):
        assert builder().attach_query_boxes(config, queries, "gt")["source"] == "none"
    assert "no file matches dataset_config.videotoshop.val_box_file" in caplog.text
    frames = _stored_frames(sized_root / "query", SIZED_QUERY)
    transform = queries.eval_image_processor
    assert torch.equal(queries[0].video[0], transform(frames[0]))
    first, second = frame_ids(SIZED_QUERY, 2)
    (sized_root / "annotations" / "val_frameid2gtbox_1.json").write_text(
        json.dumps({first: [], second: [INSIDE]}))
    queries = builder().load_query(config, "val")
    report = builder().attach_query_boxes(config, queries, "gt")
    assert report["file"].endswith("val_frameid2gtbox_1.json")
    assert (report["frames_with_box"], report["frames_full_frame"]) == (1, 1)
    video = queries[0].video
    assert torch.equal(video[0], transform(frames[0]))
    assert torch.equal(video[1], transform(frames[1].crop(INSIDE_STORED)))


def test_frame_sizes_file_must_map_kinds(sized_root):
    """Keys by split would be silently ignored and one plain path fits only one kind: both are
    refused, naming the key."""
    for value in ({"train": "annotations/frame_sizes_train.json"},
                  "annotations/frame_sizes_train.json"):
        config = _sized_config(sized_root)
        config.frame_sizes_file = value
        with pytest.raises(ConfigError, match="frame_sizes_file must map pairs and / or query"):
            builder().load_dataset(config, "train")
