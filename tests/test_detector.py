"""The product detector: AP on fixtures with known answers, the checkpoint round trip, and the
two scripts end to end on real photos (scikit-image samples with boxes defined here):
training 2 iterations, writing a box file, resuming it, and its AP."""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from mmf.common.errors import CheckpointError, ConfigError
from mmf.datasets.boxes import PIXELS, read_box_json
from mmf.detection.data import FrameBoxes, collate
from mmf.detection.metrics import detection_ap
from mmf.detection.model import build_detector, load_detector, save_detector

ROOT = Path(__file__).resolve().parents[1]
LIVE = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
WIDTH, HEIGHT = 160, 200


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- AP -----------------------------------------------------------------------------------


def test_ap_of_perfect_predictions_is_one():
    truth = {"a": np.array([[10, 10, 50, 60]]), "b": np.array([[0, 0, 30, 30], [40, 40, 90, 80]])}
    predictions = {k: (v, np.linspace(0.9, 0.5, len(v))) for k, v in truth.items()}
    result = detection_ap(truth, predictions)
    assert result["ap"] == pytest.approx(1.0) and result["ap50"] == pytest.approx(1.0)
    assert (result["frames"], result["gt_boxes"], result["pred_boxes"]) == (2, 3, 3)


def test_ap_with_one_of_two_boxes_missed():
    truth = {"a": np.array([[10, 10, 50, 60]]), "b": np.array([[0, 0, 30, 30]])}
    predictions = {"a": (truth["a"], np.array([0.8]))}
    result = detection_ap(truth, predictions)
    # Precision 1 up to recall 0.5, then nothing: 51 of COCO's 101 recall points.
    assert result["ap50"] == pytest.approx(51 / 101) and result["ap"] == pytest.approx(51 / 101)


def test_ap_counts_the_iou_thresholds_a_box_passes():
    truth = {"a": np.array([[0, 0, 100, 100]])}
    # IoU 0.62: a hit at the thresholds 0.50, 0.55, 0.60 out of 0.50:0.05:0.95.
    result = detection_ap(truth, {"a": (np.array([[0, 0, 100, 62]]), np.array([0.9]))})
    assert result["ap50"] == pytest.approx(1.0) and result["ap"] == pytest.approx(0.3)
    # A false positive scored above the hit halves the precision at every recall.
    boxes = np.array([[200, 200, 250, 250], [0, 0, 100, 100]])
    result = detection_ap(truth, {"a": (boxes, np.array([0.9, 0.8]))})
    assert result["ap50"] == pytest.approx(0.5)
    assert detection_ap(truth, {})["ap50"] == 0.0
    assert np.isnan(detection_ap({"a": np.zeros((0, 4))}, {})["ap"])


# --- model --------------------------------------------------------------------------------


def test_checkpoint_round_trip_and_errors(tmp_path):
    model = build_detector("fcos", weights=None, image_size=96)
    path = tmp_path / "det.pth"
    save_detector(path, model, {"arch": "fcos", "weights": None, "image_size": 96})
    loaded, config = load_detector(path)
    assert config == {"arch": "fcos", "image_size": 96, "freeze": False, "weights": None}
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], tensor)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_detector(tmp_path / "junk.pth")
    with pytest.raises(ConfigError, match="arch must be one of"):
        build_detector("yolo")
    with pytest.raises(ConfigError, match="ship only for efficientnet_lite0"):
        build_detector(backbone="resnet18", weights="imagenet")


# --- end to end on real photos ------------------------------------------------------------


PHOTOS = {
    # photo: the product box on the 160 x 200 frame (the object each photo shows)
    "chelsea": [40, 20, 130, 150],
    "coffee": [20, 40, 140, 170],
    "astronaut": [30, 10, 120, 120],
    "rocket": [60, 10, 110, 190],
}


@pytest.fixture(scope="module")
def photo_frames(tmp_path_factory):
    """Two clips of two frames each under training_frames/ and query/, an LPR4M train file
    with the box column and a ground-truth box json."""
    root = tmp_path_factory.mktemp("detector")
    lines, truth = [], {}
    for clip_index, pair in enumerate((("chelsea", "coffee"), ("astronaut", "rocket"))):
        clip_id = f"{LIVE}-{1000 + clip_index}-{2000 + clip_index}"
        frame_ids = [f"{clip_id}-{i:04d}" for i in range(2)]
        for frame_id, photo in zip(frame_ids, pair, strict=True):
            image = Image.fromarray(getattr(skdata, photo)()).convert("RGB").resize((WIDTH, HEIGHT))
            for split in ("training_frames", "query"):
                (root / split / clip_id).mkdir(parents=True, exist_ok=True)
                image.save(root / split / clip_id / f"{frame_id}.jpg")
            truth[frame_id] = [PHOTOS[photo]]
        boxes = [[PHOTOS[photo]] for photo in pair]
        lines.append("\t".join([
            clip_id, json.dumps(frame_ids), json.dumps(boxes), "img", "t", "1", "c", "", "", "", "",
        ]))
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "gt.json").write_text(json.dumps(truth))
    return root


def test_frame_boxes_dataset(photo_frames):
    table = read_box_json(str(photo_frames / "gt.json"))
    dataset = FrameBoxes(table, str(photo_frames / "query"))
    images, targets = collate([dataset[0], dataset[1]])
    assert images[0].shape == (3, HEIGHT, WIDTH) and 0 <= images[0].min() <= images[0].max() <= 1
    assert targets[0]["boxes"].tolist() == [PHOTOS["chelsea"]]
    assert targets[1]["labels"].tolist() == [1]


def test_train_two_iterations_then_write_and_resume_a_box_file(photo_frames, tmp_path):
    train = load_script("train_detector")
    checkpoint, metrics = tmp_path / "det.pth", tmp_path / "metrics.json"
    status = train.main([
        "--train_annotation", str(photo_frames / "train.txt"),
        "--frames_dir", str(photo_frames / "training_frames"),
        "--val_boxes", str(photo_frames / "gt.json"),
        "--val_frames_dir", str(photo_frames / "query"),
        "--out", str(checkpoint), "--metrics", str(metrics),
        "--max_steps", "2", "--batch_size", "2", "--image_size", "128", "--workers", "0",
    ])
    assert status == 0 and checkpoint.is_file()
    result = json.loads(metrics.read_text())
    assert (result["steps"], result["images"]) == (2, 4)
    assert np.isfinite(result["loss"]) and result["images_per_s"] > 0
    assert 0.0 <= result["ap50"] <= 1.0 and (result["frames"], result["gt_boxes"]) == (4, 4)

    detect = load_script("detect_boxes")
    out = tmp_path / "pred.json"
    arguments = [
        "--checkpoint", str(checkpoint), "--frames_dir", str(photo_frames / "query"),
        "--out", str(out), "--batch_size", "3", "--workers", "0",
        "--gt_boxes", str(photo_frames / "gt.json"),
    ]
    ap = detect.run(detect.parse_args(arguments))
    written = json.loads(out.read_text())
    truth = json.loads((photo_frames / "gt.json").read_text())
    assert sorted(written) == sorted(truth)
    for boxes in written.values():
        assert len(boxes) <= 10 and all(len(box) == 5 and box[4] >= 0.05 for box in boxes)
        assert [box[4] for box in boxes] == sorted((box[4] for box in boxes), reverse=True)
    assert ap["frames"] == 4 and ap["gt_boxes"] == 4 and 0.0 <= ap["ap"] <= ap["ap50"] <= 1.0
    assert read_box_json(str(out), units=PIXELS).has_scores or not any(written.values())

    # Resume: frames already written are kept as they are, missing ones are detected.
    first, second = sorted(written)[:2]
    partial = {k: v for k, v in written.items() if k != second}
    partial[first] = [[1.0, 2.0, 30.0, 40.0, 0.5]]
    out.write_text(json.dumps(partial))
    assert detect.main(arguments[:-2]) == 0
    resumed = json.loads(out.read_text())
    assert resumed[first] == [[1.0, 2.0, 30.0, 40.0, 0.5]]
    assert resumed[second] == written[second] and sorted(resumed) == sorted(truth)


def test_detect_boxes_reports_bad_input(photo_frames, tmp_path, capsys):
    detect = load_script("detect_boxes")
    out = tmp_path / "pred.json"
    out.write_text('{"a": [[1, 2')
    status = detect.main([
        "--checkpoint", str(tmp_path / "missing.pth"), "--frames_dir", str(photo_frames),
        "--out", str(out),
    ])
    assert status == 1 and "detector checkpoint not found" in capsys.readouterr().err
    checkpoint = tmp_path / "det.pth"
    save_detector(checkpoint, build_detector("fcos", weights=None, image_size=96), {"arch": "fcos"})
    status = detect.main(["--checkpoint", str(checkpoint), "--frames_dir", str(photo_frames),
                          "--out", str(out)])
    assert status == 1 and "pred.json:1: malformed JSON" in capsys.readouterr().err


def test_detect_only_the_frames_the_evaluation_reads(tmp_path):
    """--max_temporal_len 5 --slice_pos 2 keeps linspace(0, 9, 5) = frames 0, 2, 4, 6, 9 of a
    10-frame clip, as the evaluation's temporal_masked_slice does; a short clip keeps all."""
    detect = load_script("detect_boxes")
    clip, short = f"{LIVE}-100-200", f"{LIVE}-300-400"
    frames = {c: [f"{c}/{c}-{i:04d}.jpg" for i in range(n)] for c, n in ((clip, 10), (short, 3))}
    query_json = tmp_path / "query_tenframes.json"
    query_json.write_text(json.dumps({c: {"frames": f, "gt": ["img"]} for c, f in frames.items()}))
    chosen = detect.query_frames(str(tmp_path), str(query_json), max_temporal_len=5, slice_pos=2)
    assert list(chosen) == [f"{clip}-{i:04d}" for i in (0, 2, 4, 6, 9)] + [
        f"{short}-{i:04d}" for i in range(3)
    ]
    assert chosen[f"{clip}-0002"] == str(tmp_path / frames[clip][2])
    assert len(detect.query_frames(str(tmp_path), str(query_json))) == 13
    with pytest.raises(SystemExit):
        detect.parse_args(["--checkpoint", "c", "--frames_dir", "f", "--out", "o",
                           "--max_temporal_len", "5"])
