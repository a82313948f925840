"""prepare_movingfashion.py on mp4 files written by scripts/make_movingfashion_demo.py."""

import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripts" / "make_movingfashion_demo.py"
PREPARE = ROOT / "prepare_movingfashion.py"
VIDEO_FPS = 2


def run(*command):
    result = subprocess.run([sys.executable, *map(str, command)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout


def decoded_frame_count(path):
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Demo with a corrupt and a missing test video, plus hand-made duplicates in the json files."""
    root = tmp_path_factory.mktemp("mf")
    run(
        DEMO,
        "--out",
        root,
        "--seed",
        "1",
        "--num_train_products",
        "3",
        "--num_test_products",
        "3",
        "--seconds",
        "11",
        "13",
        "--video_fps",
        VIDEO_FPS,
        "--num_corrupt",
        "1",
        "--num_missing",
        "1",
    )
    test = json.loads((root / "test.json").read_text())
    train = json.loads((root / "train.json").read_text())
    first = next(iter(test.values()))
    other_video = list(test.values())[2]["video_paths"]
    # Another video of the same shop image: its gallery line must appear once.
    test["dup"] = {"img_path": first["img_path"], "source": "regular", "video_paths": other_video}
    key, entry = next(iter(train.items()))
    entry["video_paths"] = entry["video_paths"] + entry["video_paths"][:1]
    (root / "test.json").write_text(json.dumps(test))
    (root / "train.json").write_text(json.dumps(train))
    first_run = run(PREPARE, "--data_root", root, "--workers", "2")
    return root, first_run, train, test


def test_frames_and_annotations(dataset):
    root, stdout, train, test = dataset
    ann = root / "annotations"
    assert "1 failed, 1 missing" in stdout
    videos = sorted((root / "videos").glob("*.mp4"))
    corrupt = missing = 0
    for entry in test.values():
        path = root / entry["video_paths"][0]
        corrupt += path.exists() and not (root / "frames" / path.stem / ".done").exists()
        missing += not path.exists()
    assert (corrupt, missing) == (1, 1)

    for video in videos:
        frame_dir = root / "frames" / video.stem
        if not (frame_dir / ".done").exists():
            assert not frame_dir.exists(), "a failed video leaves no partial frames"
            continue
        assert not (root / "frames" / video.name).exists(), "no frames/<name>.mp4 folder"
        names = sorted(p.name for p in frame_dir.glob("*.jpg"))
        # 1 fps: one frame per started second of the video.
        expected = (decoded_frame_count(video) - 1) // VIDEO_FPS + 1
        assert len(names) == expected == json.loads((frame_dir / ".done").read_text())["frames"]
        assert names[0] == f"{video.stem}_0001.jpg"

    gallery = (ann / "gallery_full.txt").read_text().splitlines()
    assert len(gallery) == len(set(gallery))
    assert set(gallery) == {e["img_path"] for e in test.values()}, "gallery = every test shop image"
    assert all((root / line).exists() for line in gallery)

    queries = json.loads((ann / "query_tenframes.json").read_text())
    video_to_gt = json.loads((ann / "video_to_gt.json").read_text())
    assert set(queries) == set(video_to_gt)
    decodable = {
        Path(v).stem
        for e in test.values()
        for v in e["video_paths"]
        if (root / "frames" / Path(v).stem / ".done").exists()
    }
    assert set(queries) == decodable
    two_products = [v for v, e in video_to_gt.items() if len(e["gt"]) == 2]
    assert len(two_products) == 2, "the demo's two-product video and the duplicated image's video"
    subsampled = 0
    for video_id, entry in queries.items():
        frames = entry["frames"]
        all_frames = sorted((root / "frames" / video_id).glob("*.jpg"))
        subsampled += len(all_frames) > 10
        expected = [
            all_frames[i] for i in np.linspace(0, len(all_frames) - 1, min(10, len(all_frames))).astype(int)
        ]
        assert frames == [p.relative_to(root).as_posix() for p in expected]
        assert entry["gt"] == video_to_gt[video_id]["gt"]
        assert len(video_to_gt[video_id]["source"]) == len(entry["gt"])
    assert subsampled, "some video has more than 10 frames"

    lines = [line.split("\t") for line in (ann / "training_videoinfo_full.txt").read_text().splitlines()]
    assert all(len(columns) == 5 for columns in lines)
    pairs = [(c[0], c[2]) for c in lines]
    assert len(pairs) == len(set(pairs)), "no duplicate (video, image) pairs"
    expected_pairs = {
        (Path(v).stem, Path(e["img_path"]).stem) for e in train.values() for v in e["video_paths"]
    }
    assert set(pairs) == expected_pairs
    for video_id, frames, image_id, image_path, source in lines:
        assert all((root / f).exists() for f in json.loads(frames))
        assert (
            Path(image_path).stem == image_id
            and (root / image_path).exists()
            and source in ("hard", "regular")
        )

    report = (root / "prepare_movingfashion_report.txt").read_text().splitlines()
    problems = sorted(line.split("\t")[1].split(":")[0] for line in report)
    assert problems == ["failed", "missing"]


def test_second_run_is_idempotent_and_resumes(dataset):
    root, _, _, _ = dataset
    ann = root / "annotations"
    before = {p.name: p.read_bytes() for p in ann.iterdir()}
    frame_files = sorted((root / "frames").rglob("*.jpg"))
    mtimes = [p.stat().st_mtime_ns for p in frame_files]

    stdout = run(PREPARE, "--data_root", root, "--workers", "1")
    assert "(0 decoded," in stdout
    assert {p.name: p.read_bytes() for p in ann.iterdir()} == before
    assert [p.stat().st_mtime_ns for p in frame_files] == mtimes

    # An interrupted video (frames, no .done marker) is decoded again from scratch.
    video_dir = next(p.parent for p in (root / "frames").glob("*/.done"))
    (video_dir / ".done").unlink()
    (video_dir / "stray_9999.jpg").write_bytes(b"partial")
    stdout = run(PREPARE, "--data_root", root)
    assert "(1 decoded," in stdout
    assert not (video_dir / "stray_9999.jpg").exists()
    assert {p.name: p.read_bytes() for p in ann.iterdir()} == before

    # Another --fps re-extracts every finished video.
    done = len(list((root / "frames").glob("*/.done")))
    stdout = run(PREPARE, "--data_root", root, "--fps", "2")
    assert f"({done} decoded," in stdout
    video = next(
        p for p in sorted((root / "videos").glob("*.mp4")) if (root / "frames" / p.stem / ".done").exists()
    )
    assert len(list((root / "frames" / video.stem).glob("*.jpg"))) == decoded_frame_count(
        video
    ), "every frame at 2 fps"
