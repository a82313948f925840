"""videotoshop / movingfashion builders on small datasets written by the tests (real JPEGs).

Covers both LPR train layouts, query / gallery / MovingFashion files, the evaluation helpers,
bad data (missing / corrupt frames, malformed lines, mixed layouts), crop_to_box, the default
configs and a DataLoader with 2 workers. Default file names, load-time validation and the
evaluation-input checks are in test_annotation_files.py.
"""
import json
import logging
import os
import pickle
import shutil

import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image

from mmf.common.errors import ConfigError, DataError
from mmf.common.registry import registry
from mmf.datasets.builders.videotoshop.database import LineIndex
from mmf.utils.build import build_dataloader_and_sampler
from mmf.utils.configuration import Configuration, get_mmf_root, load_yaml
from mmf.utils.env import setup_imports

setup_imports()

LIVE_A = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
LIVE_B = "0c119f3c-3da7-41f0-ada9-434e4ad8b4a9"
TRAIN_CLIPS = [  # (clip_id, number of frames, image_id)
    (f"{LIVE_A}-1667916122888-1667916252390", 12, "a1b2c3d4-0000-4000-8000-000000000001"),
    (f"{LIVE_A}-1667916300000-1667916390000", 3, "a1b2c3d4-0000-4000-8000-000000000002"),
    (f"{LIVE_B}-1667917000000-1667917060000", 1, "a1b2c3d4-0000-4000-8000-000000000003"),
]
QUERY_A = f"{LIVE_A}-1667920000000-1667920030000"
QUERY_B = f"{LIVE_B}-1667920100000-1667920130000"
FRAME_SIZE = (48, 40)
SIZE = 32
PHOTOS = None


def write_jpeg(path, index, size=FRAME_SIZE):
    """A real photo crop (scikit-image), different for each ``index``."""
    global PHOTOS
    if PHOTOS is None:
        names = ("astronaut", "chelsea", "coffee", "rocket")
        PHOTOS = [getattr(skimage.data, name)() for name in names]
    photo = PHOTOS[index % len(PHOTOS)]
    top = (index * 37) % (photo.shape[0] - 160)
    left = (index * 53) % (photo.shape[1] - 160)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(photo[top : top + 160, left : left + 160]).resize(size).save(path, quality=90)


def frame_ids(clip_id, count):
    return [f"{clip_id}-{i:04d}" for i in range(count)]


def train_boxes(count):
    boxes = [[] for _ in range(count)]
    boxes[0] = [[4, 6, 20, 30]]
    if count > 1:
        boxes[1] = [[2, 2, 10, 10], [30, 20, 50, 42]]  # union clipped to the 48x40 frame
    return boxes


def lpr4m_line(clip_id, count, image_id):
    return "\t".join([
        clip_id, json.dumps(frame_ids(clip_id, count)), json.dumps(train_boxes(count)), image_id,
        f"title {image_id[-1]}", "3", "apparel", f"asr of {clip_id[-5:]}",
        "small", "long", "single",
    ])


def lpr750k_line(clip_id, count, image_id):
    paths = [f"training_frames/{clip_id}/{f}.jpg" for f in frame_ids(clip_id, count)]
    return "\t".join([
        clip_id, str(paths), "unused", image_id, f"training_images/{image_id}.jpg",
        f"title {image_id[-1]}", "7", "food", "spu9", f"asr of {clip_id[-5:]}",
    ])


def write_lines(path, lines):
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


def write_lpr_dataset(root):
    index = 0
    for clip_id, count, image_id in TRAIN_CLIPS:
        for frame_id in frame_ids(clip_id, count):
            write_jpeg(root / "training_frames" / clip_id / f"{frame_id}.jpg", index)
            index += 1
        write_jpeg(root / "training_images" / f"{image_id}.jpg", index, (36, 44))
        index += 1
    (root / "annotations").mkdir()
    write_lines(root / "annotations/train_lpr4m.txt", [lpr4m_line(*clip) for clip in TRAIN_CLIPS])
    write_lines(root / "annotations/train_750k.txt", [lpr750k_line(*clip) for clip in TRAIN_CLIPS])

    queries = {}
    query_clips = ((QUERY_A, 10, ["gA0"], "apparel"), (QUERY_B, 4, ["gB0.jpg"], None))
    for clip_id, count, gt, category in query_clips:
        frames = []
        for frame_id in frame_ids(clip_id, count):
            write_jpeg(root / "query" / clip_id / f"{frame_id}.jpg", index)
            frames.append(f"{clip_id}/{frame_id}.jpg")
            index += 1
        queries[clip_id] = {"frames": frames, "gt": gt}
        if category:
            queries[clip_id]["category"] = category
    (root / "annotations/query_tenframes.json").write_text(json.dumps(queries))
    gallery = [f"{LIVE_A}/gA0.jpg", f"{LIVE_A}/gA1.jpg", f"{LIVE_B}/gB0.jpg"]
    for line in gallery:
        write_jpeg(root / "gallery" / line, index, (40, 40))
        index += 1
    write_lines(root / "annotations/gallery_main.txt", gallery + [gallery[0]])
    (root / "annotations/test_videoid_to_gtimage_2.json").write_text(
        json.dumps({QUERY_A: ["gA0.jpg"], QUERY_B: ["gB0"]})
    )
    (root / "annotations/test_liveid_to_gallery_2.json").write_text(
        json.dumps({LIVE_A: ["gA0", "gA1", "gA9"], LIVE_B: ["gB0"]})
    )
    write_lines(
        root / "annotations/test_videoid_asr_2.txt", [f"{QUERY_A}\tbuy this bag", f"{QUERY_B}\t"]
    )
    write_lines(root / "annotations/test_image_title_1.txt", ["gA1.jpg\tred bag"])


def small_processors(node):
    """The default processors with 32 px images instead of 224 px."""
    for key in ("train_image_processor", "eval_image_processor"):
        transforms = node.processors[key].params.transforms
        transforms[0].params.size = [SIZE + 4, SIZE + 4]
        transforms[1].params.size = [SIZE, SIZE]


def dataset_config(name, root, **overrides):
    defaults = load_yaml(get_mmf_root() / f"configs/datasets/{name}/defaults.yaml")
    node = defaults.dataset_config[name]
    node.data_dir = str(root)
    small_processors(node)
    for key, value in overrides.items():
        OmegaConf.update(node, key, value, force_add=True)
    return node


def lpr_config(root, train="annotations/train_lpr4m.txt", **overrides):
    return dataset_config("videotoshop", root, **{"annotations.train": [train], **overrides})


def builder(name="videotoshop"):
    return registry.get_builder_class(name)()


def load_val(config):
    """The config's train file loaded as the val split (eval processors, no augmentation)."""
    config.annotations.val = list(config.annotations.train)
    config.images.val = [""]
    return builder().load_dataset(config, "val")


def test_lpr4m_train_layout(lpr_root, caplog):
    with caplog.at_level(logging.INFO):
        dataset = builder().load_dataset(lpr_config(lpr_root), "train")
    assert "3 pairs in the LPR4M layout" in caplog.text
    assert len(dataset) == 3
    torch.manual_seed(0)
    for (clip_id, count, image_id), sample in zip(TRAIN_CLIPS, dataset, strict=True):
        assert sample.video.shape == (10, 3, SIZE, SIZE) and sample.video.dtype == torch.float32
        assert sample.image.shape == (3, SIZE, SIZE)
        mask = sample.video_temporal_mask
        assert mask.dtype == torch.long and mask.shape == (10,)
        kept = int(mask.sum())
        assert mask[:kept].all() and not mask[kept:].any()
        assert kept == min(count, 10) or (count >= 10 and 1 <= kept <= 10)
        assert sample.video[kept:].abs().sum() == 0
        assert sample.video_masks.shape == (10, 7, 7) and sample.image_masks.shape == (7, 7)
        assert (sample.video_id, sample.image_id) == (clip_id, image_id)
        assert sample.live_id == clip_id[:36]
        assert (sample.title, sample.category) == (f"title {image_id[-1]}", "apparel")
        assert sample.asr == f"asr of {clip_id[-5:]}"


def test_lpr750k_train_layout_matches_lpr4m(lpr_root, caplog):
    config_750k = lpr_config(lpr_root, "annotations/train_750k.txt")
    with caplog.at_level(logging.INFO):
        dataset_750k = load_val(config_750k)
    assert "3 pairs in the LPR750K layout" in caplog.text
    dataset_4m = load_val(lpr_config(lpr_root))
    record = dataset_750k.records[0]
    assert record.frames[0] == f"training_frames/{TRAIN_CLIPS[0][0]}/{TRAIN_CLIPS[0][0]}-0000.jpg"
    assert dataset_4m.records[0].frames == record.frames
    for index in range(3):
        a, b = dataset_750k[index], dataset_4m[index]
        assert torch.equal(a.video, b.video) and torch.equal(a.image, b.image)
        assert torch.equal(a.video_temporal_mask, b.video_temporal_mask)
        assert (a.category, a.asr, a.title) == ("food", b.asr, b.title)


def test_val_split_is_deterministic_and_evenly_sliced(lpr_root):
    dataset = load_val(lpr_config(lpr_root))
    first, second = dataset[0], dataset[0]
    assert torch.equal(first.video, second.video) and torch.equal(first.image, second.image)
    assert first.video_temporal_mask.tolist() == [1] * 10
    assert first.image_masks.all() and first.video_masks.all()


def test_query_and_gallery_load_alone(lpr_root):
    config = lpr_config(lpr_root)
    queries = builder().load_query(config)
    gallery = builder().load_gallery(config)
    assert (len(queries), len(gallery)) == (2, 3)  # the repeated gallery line is dropped
    query = queries[0]
    assert "image" not in query and "image_id" not in query
    assert query.video.shape == (10, 3, SIZE, SIZE)
    assert (query.video_id, query.live_id) == (QUERY_A, LIVE_A)
    assert (query.asr, query.category) == ("buy this bag", "apparel")
    short = queries[1]
    assert short.video_temporal_mask.tolist() == [1] * 4 + [0] * 6
    assert (short.asr, short.category) == ("", "")
    assert torch.equal(queries[1].video, short.video)
    image = gallery[1]
    assert "video" not in image and "video_id" not in image
    assert image.image.shape == (3, SIZE, SIZE)
    assert (image.image_id, image.live_id, image.title) == ("gA1", LIVE_A, "red bag")
    assert gallery[2].live_id == LIVE_B and gallery[2].title == ""
    test = builder().load_dataset(config, "test")
    assert len(test.datasets) == 2
    assert test.datasets[0].kind == "query" and test.datasets[1].kind == "gallery"


def test_query_and_gallery_batches(lpr_root):
    config = lpr_config(lpr_root)
    queries = builder().load_query(config)
    batch = queries.collate_fn([queries[0], queries[1]])
    assert batch.video.shape == (2, 10, 3, SIZE, SIZE)
    assert batch.video_temporal_mask.sum(1).tolist() == [10, 4]
    assert batch.video_id == [QUERY_A, QUERY_B] and batch.dataset_type == "test"


def test_evaluation_helpers(lpr_copy):
    config = lpr_config(lpr_copy)
    assert builder().ground_truth(config) == {QUERY_A: ["gA0"], QUERY_B: ["gB0"]}
    assert builder().live_galleries(config) == {LIVE_A: ["gA0", "gA1", "gA9"], LIVE_B: ["gB0"]}
    assert builder().query_categories(config) == {QUERY_A: "apparel"}
    os.remove(lpr_copy / "annotations/test_liveid_to_gallery_2.json")
    assert builder().live_galleries(config) == {LIVE_A: ["gA0", "gA1"], LIVE_B: ["gB0"]}
    annotations = lpr_copy / "annotations"
    shutil.copy(
        annotations / "test_videoid_to_gtimage_2.json",
        annotations / "test_videoid_to_gtimage_3.json",
    )
    with pytest.raises(DataError, match="2 files match"):
        builder().ground_truth(config)
    with pytest.raises(DataError, match="no file matches"):
        builder().ground_truth(lpr_config(lpr_copy, ground_truth_file="annotations/nothing_*.json"))


def test_missing_split_and_missing_file(lpr_root):
    config = lpr_config(lpr_root, **{"annotations.val": ["annotations/missing_val.txt"]})
    assert builder().load_dataset(lpr_config(lpr_root), "val") is None
    assert len(builder().load_dataset(config, "train")) == 3
    with pytest.raises(DataError, match="annotation file not found: .*missing_val.txt"):
        builder().load_dataset(config, "val")


def test_missing_frame_raises_or_skips(lpr_copy, caplog):
    clip_id = TRAIN_CLIPS[1][0]
    missing = lpr_copy / "training_frames" / clip_id / f"{clip_id}-0001.jpg"
    os.remove(missing)
    dataset = builder().load_dataset(lpr_config(lpr_copy), "train")
    with pytest.raises(DataError, match=f"image file not found: {missing}"):
        dataset[1]
    skipping = builder().load_dataset(lpr_config(lpr_copy, on_error="skip"), "train")
    with caplog.at_level(logging.WARNING):
        assert skipping[1] is None
    assert str(missing) in caplog.text
    batch = skipping.collate_fn([skipping[0], skipping[1], skipping[2]])
    assert batch.skipped_samples == 1 and batch.video_id == [TRAIN_CLIPS[0][0], TRAIN_CLIPS[2][0]]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_raises_or_skips(lpr_copy, damage):
    image = lpr_copy / "gallery" / LIVE_A / "gA1.jpg"
    data = image.read_bytes()
    image.write_bytes(b"not a jpeg at all" if damage == "garbage" else data[: len(data) // 2])
    gallery = builder().load_gallery(lpr_config(lpr_copy))
    with pytest.raises(DataError, match=f"cannot decode image {image}"):
        gallery[1]
    assert gallery[0].image_id == "gA0"
    assert builder().load_gallery(lpr_config(lpr_copy, on_error="skip"))[1] is None


def test_malformed_annotation_lines(lpr_copy):
    path = lpr_copy / "annotations/bad.txt"
    good = lpr4m_line(*TRAIN_CLIPS[0])
    write_lines(path, [good, "only\ttwo columns"])
    with pytest.raises(DataError, match=r"bad.txt:2: neither an LPR4M line .* found 2 columns"):
        builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")
    write_lines(path, [good, "", lpr750k_line(*TRAIN_CLIPS[1])])
    with pytest.raises(
        DataError, match=r"bad.txt:3: line in the LPR750K layout, but line 1 is in the LPR4M"
    ):
        builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")
    columns = good.split("\t")
    columns[1] = "[__import__('os').system('echo hacked')]"
    write_lines(path, [good, "\t".join(columns)])
    with pytest.raises(
        DataError, match=r"bad.txt:2: column 2 \(frame ids\) is not a JSON or Python list"
    ):
        builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")
    columns[1] = "[]"
    write_lines(path, ["\t".join(columns)])
    with pytest.raises(DataError, match=r"bad.txt:1: column 2 \(frame ids\) is empty"):
        builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")[0]
    columns = good.split("\t")
    columns[2] = "[[]]"
    write_lines(path, ["\t".join(columns)])
    assert len(builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")) == 1
    with pytest.raises(DataError, match=r"bad.txt:1: column 3 has 1 box lists for 12 frames"):
        builder().load_dataset(
            lpr_config(lpr_copy, "annotations/bad.txt", crop_to_box=True), "train"
        )
    (lpr_copy / "annotations/query_tenframes.json").write_text('{"a": {"frames": []}}')
    with pytest.raises(DataError, match=r"query 'a': 'frames' must be a non-empty list"):
        builder().load_query(lpr_config(lpr_copy))
    (lpr_copy / "annotations/query_tenframes.json").write_text('{"a":\n {"frames": [1,]}}')
    with pytest.raises(DataError, match=r"query_tenframes.json:2: malformed JSON"):
        builder().load_query(lpr_config(lpr_copy))
    write_lines(lpr_copy / "annotations/gallery_main.txt", [f"{LIVE_A}/gA0.jpg", "gA1.jpg"])
    with pytest.raises(DataError, match=r"gallery_main.txt:2: expected '<live_id>/<image file>'"):
        builder().load_gallery(lpr_config(lpr_copy))


def test_debug_reads_first_10000_lines(lpr_copy):
    line = lpr4m_line(*TRAIN_CLIPS[1])
    write_lines(lpr_copy / "annotations/long.txt", [line] * 10003 + ["malformed"])
    config = lpr_config(lpr_copy, "annotations/long.txt", debug=True)
    assert len(builder().load_dataset(config, "train")) == 10000
    with pytest.raises(DataError, match="long.txt:10004"):
        builder().load_dataset(lpr_config(lpr_copy, "annotations/long.txt"), "train")


def test_crop_to_box(lpr_root):
    config = lpr_config(lpr_root, crop_to_box=True)
    config.processors.eval_image_processor.params.transforms = [
        {"type": "Resize", "params": {"size": [16, 16]}}, "ToTensor",
    ]
    dataset = load_val(config)
    clip_id = TRAIN_CLIPS[1][0]
    video = dataset[1].video
    resize = dataset.eval_image_processor
    frames = [
        Image.open(lpr_root / "training_frames" / clip_id / f"{f}.jpg")
        for f in frame_ids(clip_id, 3)
    ]
    assert torch.equal(video[0], resize(frames[0].convert("RGB").crop((4, 6, 20, 30))))
    assert torch.equal(video[1], resize(frames[1].convert("RGB").crop((2, 2, 48, 40))))
    assert torch.equal(video[2], resize(frames[2].convert("RGB")))
    config.crop_to_box = False
    uncropped = load_val(config)
    assert not torch.equal(uncropped[1].video[0], video[0])
    assert torch.equal(uncropped[1].video[2], video[2])


def test_frame_extension_probe_only_on_miss(lpr_copy):
    clip_id = TRAIN_CLIPS[2][0]
    jpeg = lpr_copy / "training_frames" / clip_id / f"{clip_id}-0000.jpg"
    expected = load_val(lpr_config(lpr_copy))[2].video
    write_jpeg(jpeg.with_suffix(".png"), 99)  # a different picture: ignored while the .jpg exists
    assert torch.equal(load_val(lpr_config(lpr_copy))[2].video, expected)
    Image.open(jpeg).save(jpeg.with_suffix(".png"))  # same pixels, lossless
    os.remove(jpeg)
    sample = load_val(lpr_config(lpr_copy))[2]
    assert sample.video_temporal_mask.tolist() == [1] + [0] * 9
    assert torch.equal(sample.video, expected)


def test_line_index_reads_lines_in_any_process(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_bytes("first\n\n  \nsecond \u00e9\r\nthird".encode())
    index = LineIndex(str(path))
    assert len(index) == 3 and [index.line_number(i) for i in range(3)] == [1, 4, 5]
    assert [index.text(i) for i in range(3)] == ["first", "second \u00e9", "third"]
    assert pickle.loads(pickle.dumps(index)).text(2) == "third"


def write_movingfashion(root):
    frames = []
    for video, count in (("vid1", 12), ("vid2", 2)):
        for i in range(count):
            write_jpeg(root / "frames" / video / f"{video}_{i + 1:04d}.png", i, (40, 48))
        frames.append([f"frames/{video}/{video}_{i + 1:04d}.png" for i in range(count)])
    for index, name in enumerate(("imgA", "imgB", "imgC")):
        write_jpeg(root / "imgs" / f"{name}.jpg", 20 + index, (40, 40))
    (root / "annotations").mkdir()
    write_lines(root / "annotations/training_videoinfo_full.txt", [
        f"vid1\t{json.dumps(frames[0])}\timgA\timgs/imgA.jpg\t11",
        f"vid2.mp4\t{json.dumps(frames[1])}\timgB\timgs/imgB.jpg\t12",
    ])
    (root / "annotations/query_tenframes.json").write_text(json.dumps({
        "vid1": {"frames": frames[0][:10], "gt": "imgA"},
        "vid2": {"frames": frames[1], "gt": ["imgB", "imgC"]},
    }))
    write_lines(root / "annotations/gallery_full.txt", [f"imgs/img{n}.jpg" for n in "ABCA"])
    (root / "annotations/video_to_gt.json").write_text(json.dumps({
        "vid1": {"gt": "imgA", "source": "11", "difficulty": "hard"},
        "vid2": {"gt": ["imgB.jpg", "imgC"], "source": ["regular", "regular"]},
    }))


def test_movingfashion(tmp_path):
    write_movingfashion(tmp_path)
    config = dataset_config("movingfashion", tmp_path)
    mf = builder("movingfashion")
    assert mf.config_path() == "configs/datasets/movingfashion/defaults.yaml"
    train = mf.load_dataset(config, "train")
    assert train.dataset_name == "movingfashion" and len(train) == 2
    sample = train[1]
    assert (sample.video_id, sample.image_id, sample.live_id) == ("vid2", "imgB", "movingfashion")
    assert sample.video_temporal_mask.tolist() == [1, 1] + [0] * 8
    assert "asr" not in sample and sample.image.shape == (3, SIZE, SIZE)
    queries, gallery = mf.load_query(config), mf.load_gallery(config)
    assert len(queries) == 2 and len(gallery) == 3
    assert queries[0].video_temporal_mask.sum() == 10 and queries[0].live_id == "movingfashion"
    assert [gallery[i].image_id for i in range(3)] == ["imgA", "imgB", "imgC"]
    assert mf.ground_truth(config) == {"vid1": ["imgA"], "vid2": ["imgB", "imgC"]}
    assert mf.query_difficulty(config) == {"vid1": "hard", "vid2": "regular"}
    assert mf.live_galleries(config) == {"movingfashion": ["imgA", "imgB", "imgC"]}
    write_lines(tmp_path / "annotations/training_videoinfo_full.txt", ["vid1\t[]\timgA"])
    with pytest.raises(
        DataError, match=r"training_videoinfo_full.txt:1: expected 5 tab-separated columns"
    ):
        mf.load_dataset(config, "train")


def test_default_configs(lpr_root):
    config = Configuration(["dataset=videotoshop,movingfashion", "env.data_dir=/data"]).get_config()
    lpr, mf = config.dataset_config.videotoshop, config.dataset_config.movingfashion
    assert lpr.data_dir == "/data/lpr4m" and mf.data_dir == "/data/movingfashion"
    assert (lpr.annotations.train, lpr.annotations.val) == ("auto", "auto")
    assert list(lpr.known_annotations.train) == [
        "annotations/training_videoinfo_750k.txt", "annotations/training_videoinfo_641821.txt",
        "annotations/training_videoinfo_full_part_*.txt",
    ]
    assert list(lpr.known_annotations.val) == ["annotations/training_videoinfo_val.txt"]
    assert list(lpr.images.test) == ["query", "gallery"]
    assert (lpr.on_error, lpr.crop_to_box, lpr.debug) == ("raise", False, False)
    assert builder().config_path() == "configs/datasets/videotoshop/defaults.yaml"
    OmegaConf.set_struct(lpr, False)
    lpr.data_dir = str(lpr_root)
    queries = builder().load_query(lpr)
    first, again = queries[0], queries[0]
    assert first.video.shape == (10, 3, 224, 224)
    assert torch.equal(first.video, again.video)
    with pytest.raises(ConfigError, match="on_error"):
        builder().load_query(lpr_config(lpr_root, on_error="ignore"))


def test_dataloader_two_workers(lpr_copy):
    clip_id = TRAIN_CLIPS[1][0]
    os.remove(lpr_copy / "training_frames" / clip_id / f"{clip_id}-0002.jpg")
    lines = [lpr4m_line(*clip) for clip in TRAIN_CLIPS] * 3
    write_lines(lpr_copy / "annotations/train9.txt", lines)
    dataset = builder().load_dataset(
        lpr_config(lpr_copy, "annotations/train9.txt", on_error="skip"), "train"
    )
    run = OmegaConf.create({"training": {
        "batch_size": 3, "num_workers": 2, "drop_last": False, "shuffle": False,
        "pin_memory": False, "persistent_workers": False,
    }})
    loader, _ = build_dataloader_and_sampler(dataset, run, "train", seed=0)
    assert loader.num_workers == 2
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch.skipped_samples == 1
        assert batch.video.shape == (2, 10, 3, SIZE, SIZE)
        assert batch.image.shape == (2, 3, SIZE, SIZE)
        assert batch.video_temporal_mask.shape == (2, 10)
        assert batch.video_temporal_mask.dtype == torch.long
        assert batch.video_temporal_mask[1].tolist() == [1] + [0] * 9
        assert 1 <= batch.video_temporal_mask[0].sum() <= 10
        assert batch.video_id == [TRAIN_CLIPS[0][0], TRAIN_CLIPS[2][0]]
        assert batch.live_id == [LIVE_A, LIVE_B] and batch.dataset_name == "videotoshop"
