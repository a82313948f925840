"""A real img2dataset run on local file:// URLs, then scripts/img2dataset_to_lpr4m.py.

Train URLs are downloaded with ``--output_format files``, test URLs with ``webdataset``; some
URLs point to files that do not exist, so img2dataset records failed samples.
"""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmf.common.errors import DataError
from mmf.datasets import lpr4m_urls
from mmf.datasets.boxes import FrameSize, read_frame_sizes

pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ROOT / "scripts" / "img2dataset_to_lpr4m.py"

TRAIN_LIVE = str(uuid.UUID(int=11, version=4))
TEST_LIVE = str(uuid.UUID(int=22, version=4))
CLIP_FULL = f"{TRAIN_LIVE}-1667916122888-1667916252390"
CLIP_PARTIAL = f"{TRAIN_LIVE}-1667916300000-1667916360000"
CLIP_LOST = f"{TRAIN_LIVE}-1667916400000-1667916460000"
TEST_CLIP = f"{TEST_LIVE}-1667900000000-1667900090000"
TEST_CLIP_LOST = f"{TEST_LIVE}-1667900100000-1667900190000"
TRAIN_IMAGES = [str(uuid.UUID(int=100 + i, version=4)) for i in range(3)]
TEST_IMAGES = [str(uuid.UUID(int=200 + i, version=4)) for i in range(3)]


def _image(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((48, 64, 3), value, dtype=np.uint8)).save(path, quality=90)
    return f"file://{path}"


def _download(url_list, output, output_format):
    import img2dataset

    img2dataset.download(
        url_list=str(url_list),
        output_folder=str(output),
        input_format="txt",
        output_format=output_format,
        image_size=32,
        resize_mode="keep_ratio",
        number_sample_per_shard=5,
        timeout=5,
        retries=0,
        incremental_mode="incremental",
        processes_count=1,
        thread_count=4,
        distributor="multiprocessing",
    )


def convert(*args):
    result = subprocess.run(
        [sys.executable, str(CONVERT), *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def downloads(tmp_path_factory):
    """Source images named like the LPR4M URLs, both URL lists, both img2dataset outputs."""
    root = tmp_path_factory.mktemp("i2d")
    remote = root / "remote" / "lpr4m"
    train_urls, test_urls = [], []
    for clip, present in ((CLIP_FULL, 3), (CLIP_PARTIAL, 2), (CLIP_LOST, 0)):
        for index in range(3):
            name = f"{clip}-{index * 5:04d}.jpg"
            if index < present:
                train_urls.append(_image(remote / "frames" / name, 40 * index))
            else:
                train_urls.append(f"file://{remote / 'frames' / name}")
    train_urls += [_image(remote / "images" / f"{i}.jpg", 200) for i in TRAIN_IMAGES[:2]]
    train_urls.append(f"file://{remote / 'images' / TRAIN_IMAGES[2]}.jpg")
    test_urls += [_image(remote / "test" / f"{TEST_CLIP}-{i:04d}.jpg", 20 * i) for i in range(12)]
    test_urls.append(f"file://{remote / 'test' / TEST_CLIP_LOST}-0000.jpg")
    test_urls += [_image(remote / "test_images" / f"{i}.jpg", 150) for i in TEST_IMAGES]
    (root / "train_urls.txt").write_text("\n".join(train_urls) + "\n")
    (root / "test_urls.txt").write_text("\n".join(test_urls) + "\n")
    _download(root / "train_urls.txt", root / "dl_train", "files")
    _download(root / "test_urls.txt", root / "dl_test", "webdataset")
    return root


@pytest.fixture(scope="module")
def train_converted(downloads):
    data_dir = downloads / "lpr4m"
    ann = data_dir / "annotations"
    ann.mkdir(parents=True)
    lines = []
    for clip in (CLIP_FULL, CLIP_PARTIAL, CLIP_LOST):
        frame_ids = [f"{clip}-{i * 5:04d}" for i in range(3)]
        boxes = [[[i, i, 10 + i, 10 + i]] for i in range(3)]
        lines.append(
            "\t".join(
                [
                    clip,
                    json.dumps(frame_ids),
                    json.dumps(boxes),
                    TRAIN_IMAGES[0],
                    "title",
                    "3",
                    "apparel",
                    "asr",
                    "large",
                    "long",
                    "single",
                ]
            )
        )
    (ann / "training_videoinfo_full_3.txt").write_text("\n".join(lines) + "\n")
    stdout = convert(
        "--input",
        downloads / "dl_train",
        "--data_dir",
        data_dir,
        "--split",
        "train",
        "--train_annotation",
        ann / "training_videoinfo_full_3.txt",
    )
    return data_dir, stdout


def test_url_anatomy():
    url = f"https://cdn.example.com/lpr4m/{CLIP_FULL}-0081.jpg?sig=1"
    ref = lpr4m_urls.parse_frame_url(url)
    assert ref == (TRAIN_LIVE, CLIP_FULL, 81, f"{CLIP_FULL}-0081")
    assert lpr4m_urls.parse_image_url(f"https://x/y/{TRAIN_IMAGES[0]}.jpg") == TRAIN_IMAGES[0]
    assert lpr4m_urls.parse_clip_id(CLIP_FULL) == (TRAIN_LIVE, 1667916122888, 1667916252390)
    assert lpr4m_urls.live_id_of(CLIP_FULL) == TRAIN_LIVE
    assert lpr4m_urls.is_frame_url(url) and not lpr4m_urls.is_image_url(url)
    assert lpr4m_urls.is_image_url(f"file:///a/{TEST_IMAGES[1]}.png")
    with pytest.raises(DataError, match="not an LPR4M frame URL"):
        lpr4m_urls.parse_frame_url(f"https://x/{TRAIN_IMAGES[0]}.jpg")
    with pytest.raises(DataError, match="shop image URL"):
        lpr4m_urls.parse_image_url(url)
    with pytest.raises(DataError):
        lpr4m_urls.parse_frame_id("not-a-frame-0001")


def test_train_files_output_to_lpr4m_layout(train_converted):
    data_dir, stdout = train_converted
    report = json.loads((data_dir / "img2dataset_report_train.json").read_text())
    assert report["counts"] == {
        "samples": 12,
        "success": 7,
        "failed": 5,
        "written": 7,
        "already_present": 0,
    }
    assert sum(report["failed_by_error"].values()) == 5
    assert report["clips_without_frames"] == [CLIP_LOST]
    assert report["clips_with_missing_frames"] == {CLIP_PARTIAL: 1}
    assert "1 without frames" in stdout

    frames = sorted(
        p.relative_to(data_dir).as_posix() for p in (data_dir / "training_frames").rglob("*.jpg")
    )
    assert frames == [
        f"training_frames/{CLIP_FULL}/{CLIP_FULL}-{i * 5:04d}.jpg" for i in range(3)
    ] + [f"training_frames/{CLIP_PARTIAL}/{CLIP_PARTIAL}-{i * 5:04d}.jpg" for i in range(2)]
    images = sorted(p.name for p in (data_dir / "training_images").iterdir())
    assert images == sorted(f"{i}.jpg" for i in TRAIN_IMAGES[:2])
    with Image.open(data_dir / "training_frames" / CLIP_FULL / f"{CLIP_FULL}-0005.jpg") as frame:
        assert min(frame.size) == 32, "keep_ratio resize: the shorter side is image_size"
        assert abs(np.asarray(frame, dtype=float).mean() - 40) < 3, "the right source image"

    available_file = data_dir / "annotations" / "training_videoinfo_full_3_available.txt"
    available = available_file.read_text().splitlines()
    assert [line.split("\t")[0] for line in available] == [CLIP_FULL, CLIP_PARTIAL]
    partial = available[1].split("\t")
    assert len(partial) == 11
    assert json.loads(partial[1]) == [f"{CLIP_PARTIAL}-0000", f"{CLIP_PARTIAL}-0005"]
    assert json.loads(partial[2]) == [[[0, 0, 10, 10]], [[1, 1, 11, 11]]]


def _stored_sizes(frame_root):
    """{frame_id: the size entry expected for it} from the frames on disk (64x48 sources)."""
    expected = {}
    for path in frame_root.rglob("*.jpg"):
        with Image.open(path) as frame:
            width, height = frame.size
        expected[path.stem] = {
            "width": width, "height": height, "original_width": 64, "original_height": 48,
        }
    return expected


def test_frame_sizes_from_the_sample_json(train_converted):
    """annotations/frame_sizes_train.json: every downloaded frame (no shop image) with the size
    on disk and the 64x48 of its source, from img2dataset's json; the box readers take it."""
    data_dir, stdout = train_converted
    path = data_dir / "annotations" / "frame_sizes_train.json"
    sizes = json.loads(path.read_text())
    expected = _stored_sizes(data_dir / "training_frames")
    assert len(expected) == 5 and sizes == expected
    assert {(s["width"], s["height"]) for s in sizes.values()} == {(43, 32)}  # keep_ratio 32
    report = json.loads((data_dir / "img2dataset_report_train.json").read_text())
    assert report["frame_sizes"] == {
        "file": str(path), "frames": 5, "resized": 5, "frames_without_size": 0,
    }
    assert "sizes of 5 frames (5 resized)" in stdout
    assert read_frame_sizes(str(path))[f"{CLIP_FULL}-0005"] == FrameSize(43, 32, 64, 48)


def test_conversion_is_idempotent(train_converted, downloads):
    """A rerun writes no frame again and keeps the frame sizes of earlier runs."""
    data_dir, _ = train_converted
    sizes_path = data_dir / "annotations" / "frame_sizes_train.json"
    earlier = {**json.loads(sizes_path.read_text()), "other-run-0001": {"width": 8, "height": 6}}
    sizes_path.write_text(json.dumps(earlier))
    stdout = convert("--input", downloads / "dl_train", "--data_dir", data_dir, "--split", "train")
    report = json.loads((data_dir / "img2dataset_report_train.json").read_text())
    assert report["counts"]["written"] == 0 and report["counts"]["already_present"] == 7
    assert report["clips_without_frames"] == [CLIP_LOST]
    assert "0 written" in stdout
    assert json.loads(sizes_path.read_text()) == earlier
    assert report["frame_sizes"]["frames"] == 6 and report["frame_sizes"]["resized"] == 5


def test_test_webdataset_output_to_lpr4m_layout(downloads):
    data_dir = downloads / "lpr4m_test"
    ann = data_dir / "annotations"
    ann.mkdir(parents=True)
    (ann / "test_liveid_to_gallery_1.json").write_text(json.dumps({TEST_LIVE: TEST_IMAGES[:2]}))
    (ann / "test_videoid_to_gtimage_2.json").write_text(
        json.dumps({TEST_CLIP: [TEST_IMAGES[0]], TEST_CLIP_LOST: [TEST_IMAGES[1]]})
    )
    convert("--input", downloads / "dl_test", "--data_dir", data_dir, "--split", "test")
    report = json.loads((data_dir / "img2dataset_report_test.json").read_text())
    assert report["counts"]["failed"] == 1 and report["counts"]["written"] == 14
    assert report["clips_without_frames"] == [TEST_CLIP_LOST]
    assert [Path(u).stem for u in report["unassigned_images"]] == [TEST_IMAGES[2]]
    assert report["index"]["gt_clips_without_frames"] == [TEST_CLIP_LOST]

    assert len(list((data_dir / "query" / TEST_CLIP).glob("*.jpg"))) == 12
    sizes = json.loads((ann / "frame_sizes_test.json").read_text())
    assert len(sizes) == 12 and sizes == _stored_sizes(data_dir / "query")  # from the tar's json
    assert sorted(p.name for p in (data_dir / "gallery" / TEST_LIVE).iterdir()) == sorted(
        f"{i}.jpg" for i in TEST_IMAGES[:2]
    )
    queries = json.loads((ann / "query_tenframes.json").read_text())
    indices = np.linspace(0, 11, 10).astype(int)
    assert queries == {
        TEST_CLIP: {
            "frames": [f"{TEST_CLIP}/{TEST_CLIP}-{i:04d}.jpg" for i in indices],
            "gt": [TEST_IMAGES[0]],
        }
    }
    assert (ann / "gallery_main.txt").read_text().splitlines() == sorted(
        f"{TEST_LIVE}/{i}.jpg" for i in TEST_IMAGES[:2]
    )
