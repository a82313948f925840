"""The annotation files a user actually has: default train / val names, every line validated
at load (``on_error: skip`` drops malformed lines), and the checks of the evaluation inputs
(ground truth, query ids, per-livestream gallery json). Data from test_datasets' writers."""
import json
import logging
import os
import shutil

import pytest
import yaml
from test_datasets import (
    LIVE_A,
    LIVE_B,
    QUERY_A,
    TRAIN_CLIPS,
    builder,
    dataset_config,
    lpr4m_line,
    lpr750k_line,
    lpr_config,
    write_lines,
    write_movingfashion,
)

from mmf.common.errors import DataError
from mmf.datasets.builders.videotoshop.database import LPRPairAnnotations, parse_string_list

TINY_ENCODER = {
    "image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "heads": 2, "output_dim": 16,
}
SIZE_32 = {
    "type": "torchvision_transforms",
    "params": {"transforms": [{"type": "Resize", "params": {"size": [32, 32]}}, "ToTensor"]},
}


def default_names(root, **overrides):
    """The default config's ``annotations`` (train / val ``auto``) on ``root``."""
    return dataset_config("videotoshop", root, **overrides)


# --- A. the default train / val files -------------------------------------------------------


def test_original_layout_trains_with_no_annotation_override(lpr_copy, tmp_path, caplog):
    """A data folder as the original code expects (training_videoinfo_641821.txt +
    training_videoinfo_val.txt): mmf_cli/run.py trains 2 updates and validates on it."""
    from mmf_cli.run import main as train_main

    annotations = lpr_copy / "annotations"
    shutil.copy(annotations / "train_lpr4m.txt", annotations / "training_videoinfo_641821.txt")
    shutil.copy(annotations / "train_lpr4m.txt", annotations / "training_videoinfo_val.txt")
    save_dir = tmp_path / "save"
    config = {
        "dataset_config": {"videotoshop": {
            "data_dir": str(lpr_copy),
            "processors": {
                "train_image_processor": SIZE_32, "eval_image_processor": SIZE_32,
                "masked_video_processor": {"type": "temporal_masked_slice", "params": {
                    "max_temporal_len": 4, "slice_pos": 2, "augment_order": 0, "cut_tail": False,
                }},
            },
        }},
        "model_config": {"rice": {
            "training_head_type": "pretraining", "tasks": ["vic"], "tasks_sample_ratio": [1.0],
            "image_encoder": {"type": "openai_clip", "params": TINY_ENCODER},
        }},
        "optimizer": {"type": "adam_w", "params": {"lr": 1e-4, "weight_decay": 0.0}},
        "evaluation": {"metrics": [{"type": "r@k_general"}]},
        "training": {
            "batch_size": 2, "num_workers": 0, "persistent_workers": False, "max_updates": 2,
            "log_interval": 1, "checkpoint_interval": 100, "evaluation_interval": 2,
            "device": "cpu", "tensorboard": False, "progress_bar": False,
        },
        "env": {"save_dir": str(save_dir)},
        "run_type": "train_val",
    }
    config_path = tmp_path / "original_names.yaml"
    config_path.write_text(yaml.safe_dump(config))
    with caplog.at_level(logging.INFO):
        train_main([f"config={config_path}", "model=rice", "dataset=videotoshop"])
    assert os.path.isfile(save_dir / "rice_final.pth")
    known = (
        "['annotations/training_videoinfo_750k.txt', 'annotations/training_videoinfo_641821.txt', "
        "'annotations/training_videoinfo_full_part_*.txt']"
    )
    assert (
        "dataset_config.videotoshop.annotations.train: auto -> "
        f"['annotations/training_videoinfo_641821.txt'] (the first of {known} found in {lpr_copy})"
    ) in caplog.text
    assert (
        "dataset_config.videotoshop.annotations.val: auto -> "
        "['annotations/training_videoinfo_val.txt']"
    ) in caplog.text
    log = (save_dir / "train.log").read_text()
    assert "val/videotoshop/r@1" in log


def test_full_release_parts_are_all_read(lpr_copy, caplog):
    annotations = lpr_copy / "annotations"
    for part, clip in enumerate(TRAIN_CLIPS):
        name = f"training_videoinfo_full_part_{part:02d}.txt"
        write_lines(annotations / name, [lpr4m_line(*clip)])
    with caplog.at_level(logging.INFO):
        train = builder().load_dataset(default_names(lpr_copy), "train")
        val = builder().load_dataset(default_names(lpr_copy), "val")
    assert [d.annotation_path for d in train.datasets] == [
        str(annotations / f"training_videoinfo_full_part_{part:02d}.txt") for part in range(3)
    ]
    assert [train[i].video_id for i in range(3)] == [clip[0] for clip in TRAIN_CLIPS]
    assert val is None
    assert (
        "annotations.val: auto -> no file (none of ['annotations/training_videoinfo_val.txt'] "
        f"in {lpr_copy})"
    ) in caplog.text
    # The LPR750K name comes first when both releases are there.
    write_lines(annotations / "training_videoinfo_750k.txt", [lpr750k_line(*TRAIN_CLIPS[0])])
    train = builder().load_dataset(default_names(lpr_copy), "train")
    assert train.annotation_path == str(annotations / "training_videoinfo_750k.txt")


def test_no_known_train_file_lists_what_is_there(lpr_copy):
    annotations = lpr_copy / "annotations"
    write_lines(annotations / "training_videoinfo_4m.txt", [lpr4m_line(*TRAIN_CLIPS[0])])
    (annotations / "training_videoinfo_full_part_01").mkdir()  # a folder is not a file
    with pytest.raises(DataError) as error:
        builder().load_dataset(default_names(lpr_copy), "train")
    assert str(error.value) == (
        "dataset_config.videotoshop.annotations.train is 'auto' and none of "
        "['annotations/training_videoinfo_750k.txt', 'annotations/training_videoinfo_641821.txt', "
        f"'annotations/training_videoinfo_full_part_*.txt'] exists in {lpr_copy}; "
        "annotations/training_videoinfo* there: ['annotations/training_videoinfo_4m.txt']; "
        "set dataset_config.videotoshop.annotations.train to the file(s) to read"
    )


# --- B. every line validated at load --------------------------------------------------------


def test_malformed_frame_list_raises_at_load(lpr_copy):
    columns = lpr4m_line(*TRAIN_CLIPS[1]).split("\t")
    columns[1] = '{"not": "a list"}'
    write_lines(lpr_copy / "annotations/bad.txt", [lpr4m_line(*TRAIN_CLIPS[0]), "\t".join(columns)])
    with pytest.raises(DataError) as error:
        builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")
    assert str(error.value) == (
        f"{lpr_copy}/annotations/bad.txt:2: column 2 (frame ids) is a dict, expected a list"
    )


def test_skip_drops_malformed_lines_and_names_them(lpr_copy, caplog):
    good = [lpr4m_line(*clip) for clip in TRAIN_CLIPS]
    not_a_list = good[1].split("\t")
    not_a_list[1] = "frame-0001"
    empty = good[2].split("\t")
    empty[1] = "[]"
    lines = (
        [good[0], "\t".join(not_a_list), "", good[1], "only\ttwo"]
        + ["\t".join(empty)] * 5 + [good[2]]
    )
    path = lpr_copy / "annotations/bad.txt"
    write_lines(path, lines)
    with open(path, "ab") as handle:
        handle.write(b"\xff\xfe\tnot UTF-8\n")
    with caplog.at_level(logging.WARNING):
        dataset = builder().load_dataset(
            lpr_config(lpr_copy, "annotations/bad.txt", on_error="skip"), "train"
        )
    assert len(dataset) == 3
    assert [dataset.records.lines.line_number(i) for i in range(3)] == [1, 4, 11]
    assert [dataset[i].video_id for i in range(3)] == [clip[0] for clip in TRAIN_CLIPS]
    assert (
        f"{path}: skipped 8 malformed lines (on_error: skip): "
        "line 2: column 2 (frame ids) is not a JSON or Python list: 'frame-0001'; "
        "line 5: neither an LPR4M line (11 tab-separated columns, column 2 a list of frame ids) "
        "nor an LPR750K line (>= 10 columns, column 2 a list of frame paths); found 2 columns; "
        "line 6: column 2 (frame ids) is empty; line 7: column 2 (frame ids) is empty; "
        "line 8: column 2 (frame ids) is empty; and 3 more"
    ) in caplog.text
    with pytest.raises(DataError, match=r"bad.txt:2: column 2 \(frame ids\) is not a JSON"):
        builder().load_dataset(lpr_config(lpr_copy, "annotations/bad.txt"), "train")


def test_skip_covers_the_val_file_and_a_file_with_no_valid_line(lpr_copy, caplog):
    path = lpr_copy / "annotations/val.txt"
    write_lines(path, [lpr4m_line(*TRAIN_CLIPS[0]), "x\ty"])
    config = lpr_config(
        lpr_copy, on_error="skip",
        **{"annotations.val": ["annotations/val.txt"], "images.val": [""]},
    )
    with caplog.at_level(logging.WARNING):
        assert len(builder().load_dataset(config, "val")) == 1
    assert f"{path}: skipped 1 malformed lines (on_error: skip): line 2: neither" in caplog.text
    write_lines(path, ["x\ty"])
    with pytest.raises(DataError) as error:
        builder().load_dataset(config, "val")
    assert str(error.value) == f"{path}: no valid line (1 malformed)"


def test_movingfashion_lines_are_validated_at_load(tmp_path, caplog):
    write_movingfashion(tmp_path)
    path = tmp_path / "annotations/training_videoinfo_full.txt"
    lines = path.read_text().splitlines()
    write_lines(path, [lines[0], "vid3\t'frames/vid3_0001.png'\timgC\timgs/imgC.jpg\t13"])
    with pytest.raises(DataError) as error:
        builder("movingfashion").load_dataset(dataset_config("movingfashion", tmp_path), "train")
    assert str(error.value) == f"{path}:2: column 2 (frame paths) is a str, expected a list"
    config = dataset_config("movingfashion", tmp_path, on_error="skip")
    with caplog.at_level(logging.WARNING):
        assert len(builder("movingfashion").load_dataset(config, "train")) == 1
    assert f"{path}: skipped 1 malformed lines (on_error: skip): line 2: column 2" in caplog.text


@pytest.mark.parametrize("text, expected", [
    ("['a/1.jpg', 'a/2.jpg']", ["a/1.jpg", "a/2.jpg"]),
    ('["a/1.jpg", " a/2.jpg "]', ["a/1.jpg", "a/2.jpg"]),
    ("['a/1.jpg',]", ["a/1.jpg"]),  # Python allows a trailing comma, json does not
    ("('a', 'b')", ["a", "b"]),
    ("""['it"s', "it's"]""", ['it"s', "it's"]),
    ("['a\\\\b.jpg', 'c\\'d']", ["a\\b.jpg", "c'd"]),
    ("['caf\u00e9', 'x']", ["caf\u00e9", "x"]),
])
def test_string_lists_read_as_python_or_json_reads_them(text, expected):
    assert parse_string_list(text, "f:1", "column 2") == expected


@pytest.mark.parametrize("text, message", [
    ("['a', None]", "must hold non-empty strings"),
    ("['a', true]", "must hold non-empty strings"),
    ("['a', ' ']", "must hold non-empty strings"),
    ("['a' + 'b']", "is not a JSON or Python list"),
    ("'a'", "is a str, expected a list"),
])
def test_string_lists_that_are_not(text, message):
    with pytest.raises(DataError, match=message):
        parse_string_list(text, "f:1", "column 2")


def test_item_reads_what_the_load_validated(lpr_root):
    pairs = LPRPairAnnotations(str(lpr_root / "annotations/train_750k.txt"))
    clip_id, count, image_id = TRAIN_CLIPS[0]
    record = pairs[0]
    assert record.frames == [
        f"training_frames/{clip_id}/{clip_id}-{i:04d}.jpg" for i in range(count)
    ]
    assert (record.video_id, record.image_id, record.image_path) == (
        clip_id, image_id, f"training_images/{image_id}.jpg"
    )


# --- B. evaluation inputs -------------------------------------------------------------------


def test_empty_ground_truth_is_an_error(lpr_copy, tmp_path):
    path = lpr_copy / "annotations/test_videoid_to_gtimage_2.json"
    path.write_text("{}")
    with pytest.raises(DataError) as error:
        builder().ground_truth(lpr_config(lpr_copy))
    assert str(error.value) == f"{path}: no entries (expected {{id: [id, ...]}})"
    write_movingfashion(tmp_path)
    (tmp_path / "annotations/video_to_gt.json").write_text("{}")
    with pytest.raises(DataError) as error:
        builder("movingfashion").ground_truth(dataset_config("movingfashion", tmp_path))
    assert str(error.value) == (
        f"{tmp_path}/annotations/video_to_gt.json: no entries "
        '(expected {video_id: {"gt": image_id}})'
    )


def test_duplicate_query_ids_are_an_error_before_encoding(lpr_copy):
    path = lpr_copy / "annotations/query_tenframes.json"
    queries = json.loads(path.read_text())
    entry = json.dumps(queries[QUERY_A])
    path.write_text(f'{{"{QUERY_A}": {entry},\n "{QUERY_A}": {entry}}}')
    with pytest.raises(DataError) as error:
        builder().load_query(lpr_config(lpr_copy))
    assert str(error.value) == f"{path}: repeated keys ['{QUERY_A}']"
    path.write_text(json.dumps({QUERY_A: queries[QUERY_A], f"{QUERY_A}.mp4": queries[QUERY_A]}))
    with pytest.raises(DataError) as error:
        builder().load_query(lpr_config(lpr_copy))
    assert str(error.value) == (
        f"{path}: 1 query ids occur more than once (ids are file stems): ['{QUERY_A}']"
    )
    ground_truth = lpr_copy / "annotations/test_videoid_to_gtimage_2.json"
    ground_truth.write_text(json.dumps({QUERY_A: ["gA0"], f"{QUERY_A}.mp4": ["gA1"]}))
    with pytest.raises(DataError) as error:
        builder().ground_truth(lpr_config(lpr_copy))
    assert str(error.value) == (
        f"{ground_truth}: 1 keys occur more than once (ids are file stems): ['{QUERY_A}']"
    )


def test_live_gallery_json_is_checked_against_the_gallery_list(lpr_copy, caplog):
    listed = lpr_copy / "annotations/test_liveid_to_gallery_2.json"
    gallery = lpr_copy / "annotations/gallery_main.txt"
    with caplog.at_level(logging.WARNING):
        builder().load_gallery(lpr_config(lpr_copy))
    assert caplog.messages == [
        f"{gallery}: 1 repeated lines ignored",
        f"{listed} and {gallery} disagree (the ranking uses the gallery list): "
        f"1 images only in the json ['{LIVE_A}/gA9']",
    ]
    other = "11111111-2222-3333-4444-555555555555"
    listed.write_text(json.dumps({LIVE_A: ["gA0", "gA1"], other: ["x1"]}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        builder().load_gallery(lpr_config(lpr_copy))
    assert caplog.messages[-1] == (
        f"{listed} and {gallery} disagree (the ranking uses the gallery list): "
        f"1 livestreams only in the json ['{other}']; "
        f"1 livestreams only in the gallery list ['{LIVE_B}']"
    )
    listed.write_text(json.dumps({LIVE_A: ["gA1", "gA0.jpg"], LIVE_B: ["gB0"]}))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        builder().load_gallery(lpr_config(lpr_copy))
    assert caplog.messages == [f"{gallery}: 1 repeated lines ignored"]
