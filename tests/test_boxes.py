"""Product boxes: both units (normalised, pixels, pixels of an img2dataset-resized frame), the
checks and bad input of the readers, the selection rules on hand-made clips, and the crop and
patch-mask geometry on hand-made frames."""
import json

import numpy as np
import pytest
import torch

from mmf.common.errors import ConfigError, DataError
from mmf.datasets.boxes import (
    NORMALISED,
    PIXELS,
    FrameSize,
    box_or_frame,
    crop_rect,
    patch_mask,
    read_box_json,
    read_frame_sizes,
    read_train_boxes,
    select_boxes,
    train_column_units,
)

CLIP = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0-1667916122888-1667916252390"
F0, F1, F2 = (f"{CLIP}-{i:04d}" for i in range(3))


def write_json(path, data):
    path.write_text(json.dumps(data))
    return str(path)


# --- units ------------------------------------------------------------------------------


def test_normalised_boxes_scale_to_the_stored_frame(tmp_path):
    # The example: fractions of a 455 x 256 frame, not a 1 x 1-pixel crop.
    table = read_box_json(write_json(tmp_path / "gt.json", {F0: [[0.2, 0.3, 0.6, 0.8]], F1: []}))
    assert table.units == NORMALISED and len(table) == 2 and table.num_boxes() == 1
    np.testing.assert_allclose(table.boxes(F0, 455, 256), [[91.0, 76.8, 273.0, 204.8]])
    assert table.boxes(F1, 455, 256).shape == (0, 4)
    assert table.boxes("not-in-file", 455, 256).shape == (0, 4)
    assert crop_rect(table.boxes(F0, 455, 256)[0], 455, 256, margin=0.0) == (91, 76, 273, 205)


def test_pixel_boxes_stay_on_the_stored_frame(tmp_path):
    table = read_box_json(write_json(tmp_path / "gt.json", {F0: [[10, 20, 110, 220]]}))
    assert table.units == PIXELS
    np.testing.assert_allclose(table.boxes(F0, 256, 320), [[10, 20, 110, 220]])
    # The frame id may carry an extension in the file; lookups use the normalised id.
    table = read_box_json(write_json(tmp_path / "ext.json", {F0 + ".jpg": [[10, 20, 110, 220]]}))
    assert F0 in table and F0 + ".jpg" in table


def test_pixel_boxes_of_a_resized_frame_are_scaled(tmp_path):
    # Annotated on the 1280 x 720 original; img2dataset keep_ratio stored 256 x 144.
    sizes = read_frame_sizes(write_json(tmp_path / "sizes.json", {
        F0: {"width": 256, "height": 144, "original_width": 1280, "original_height": 720},
        F1: {"width": 256, "height": 144},
    }))
    assert sizes[F0] == FrameSize(256, 144, 1280, 720) and sizes[F0].annotated == (1280, 720)
    boxes = {F0: [[640, 360, 1280, 720]], F1: [[64, 36, 128, 72]]}
    table = read_box_json(write_json(tmp_path / "gt.json", boxes), sizes=sizes)
    np.testing.assert_allclose(table.boxes(F0, 256, 144), [[128, 72, 256, 144]])
    np.testing.assert_allclose(table.boxes(F1, 256, 144), [[64, 36, 128, 72]])
    # Checked against the annotated frame: 1300 overhangs 1280 by under 10 %, so it is clamped.
    edge = write_json(tmp_path / "edge.json", {F0: [[0, 0, 1300, 720]]})
    table = read_box_json(edge, sizes=sizes)
    np.testing.assert_allclose(table.boxes(F0, 256, 144), [[0, 0, 256, 144]])


def test_units_can_be_forced(tmp_path):
    table = read_box_json(write_json(tmp_path / "gt.json", {F0: [[0, 0, 1, 1]]}), units="pixels")
    np.testing.assert_allclose(table.boxes(F0, 100, 100), [[0, 0, 1, 1]])
    with pytest.raises(DataError, match="units must be one of"):
        read_box_json(str(tmp_path / "gt.json"), units="inches")


# --- checks -----------------------------------------------------------------------------


def test_slight_overhang_is_clamped_far_outside_is_an_error(tmp_path):
    sizes = {F0: FrameSize(256, 320)}
    path = write_json(tmp_path / "gt.json", {F0: [[-5, 0, 260, 100]]})
    clamped = read_box_json(path, sizes=sizes).boxes(F0, 256, 320)
    np.testing.assert_allclose(clamped, [[0, 0, 256, 100]])
    path = write_json(tmp_path / "far.json", {F0: [[0, 0, 400, 100], [0, 0, 50, 50]]})
    message = rf"far\.json: frame '{F0}': box \[0.0, 0.0, 400.0, 100.0\] lies far outside the 256x"
    with pytest.raises(DataError, match=message):
        read_box_json(path, sizes=sizes)
    table = read_box_json(path, sizes=sizes, on_error="skip")
    assert table.skipped == 1
    np.testing.assert_allclose(table.boxes(F0, 256, 320), [[0, 0, 50, 50]])


def test_pixel_boxes_without_sizes_are_checked_on_the_stored_frame(tmp_path):
    path = write_json(tmp_path / "gt.json", {F0: [[0, 0, 400, 100]], F1: [[300, 0, 330, 10]]})
    table = read_box_json(path)  # no frame size yet: nothing to check against
    with pytest.raises(DataError, match="lies far outside the 256x320 frame"):
        table.boxes(F0, 256, 320)
    assert table.boxes(F0, 512, 320).shape == (1, 4)
    table = read_box_json(path, on_error="skip")
    assert table.boxes(F1, 256, 320).shape == (0, 4) and table.skipped == 1  # wholly outside


def test_normalised_box_beyond_the_unit_frame_is_an_error(tmp_path):
    path = write_json(tmp_path / "gt.json", {F0: [[0.1, 0.1, 0.5, 0.5]], F1: [[0.5, 0.5, 1, 1]]})
    assert read_box_json(path).units == NORMALISED
    path = write_json(tmp_path / "bad.json", {F0: [[-0.3, 0.1, 0.5, 0.5]]})
    with pytest.raises(DataError, match=r"\(normalised\) lies far outside the 1x1 frame"):
        read_box_json(path)


def test_inverted_boxes_name_file_and_frame(tmp_path):
    path = write_json(tmp_path / "gt.json", {F0: [[10, 10, 50, 50]], F1: [[50, 10, 20, 40]]})
    with pytest.raises(DataError, match=rf"gt\.json: frame '{F1}': box .* is inverted or empty"):
        read_box_json(path)
    assert read_box_json(path, on_error="skip").skipped == 1


def test_box_file_bad_input(tmp_path):
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"%s": [[1, 2, 3, 4]], "%s": [[1, 2' % (F0, F1))
    with pytest.raises(DataError, match=r"truncated\.json:1: malformed JSON"):
        read_box_json(str(truncated))
    with pytest.raises(DataError, match=r"expected an object"):
        read_box_json(write_json(tmp_path / "list.json", [[1, 2, 3, 4]]))
    with pytest.raises(DataError, match=rf"frame '{F0}': box 0 is not \[x1, y1, x2, y2\]"):
        read_box_json(write_json(tmp_path / "three.json", {F0: [[1, 2, 3]]}))
    with pytest.raises(DataError, match="annotation file not found"):
        read_box_json(str(tmp_path / "missing.json"))


def test_frame_outside_the_test_split(tmp_path):
    path = write_json(tmp_path / "gt.json", {F0: [[1, 2, 30, 40]], "other-0001": [[1, 2, 3, 4]]})
    message = r"gt\.json: frame 'other-0001' is not a frame of the test split"
    with pytest.raises(DataError, match=message):
        read_box_json(path, frame_ids=[F0 + ".jpg", F1])
    table = read_box_json(path, frame_ids=[F0, F1], on_error="skip")
    assert list(table) == [F0] and table.skipped == 1


def test_frame_size_file_bad_input(tmp_path):
    cases = [
        ({F0: {"width": -256, "height": 144}}, "width must be a positive integer, got -256"),
        ({F0: {"width": 256, "height": 144, "original_width": 0, "original_height": 720}},
         "original_width must be a positive integer"),
        ({F0: {"width": 256, "height": 144, "original_width": 1280}},
         "original_width and original_height come together"),
        ({F0: {"height": 144}}, "width and height are required"),
        ({F0: [256, 144]}, "expected an object with width and height"),
    ]
    for data, message in cases:
        with pytest.raises(DataError, match=rf"sizes\.json: frame '{F0}': {message}"):
            read_frame_sizes(write_json(tmp_path / "sizes.json", data))


def test_scores_and_min_score(tmp_path):
    boxes = {F0: [[0, 0, 50, 50, 0.9], [10, 10, 60, 60, 0.2]], F1: [10, 10, 20, 20]}
    path = write_json(tmp_path / "pred.json", boxes)
    table = read_box_json(path)
    assert table.has_scores
    boxes, scores = table.scored_boxes(F0, 256, 320)
    np.testing.assert_allclose(scores, [0.9, 0.2])
    np.testing.assert_allclose(table.boxes(F1, 256, 320), [[10, 10, 20, 20]])  # a bare single box
    assert read_box_json(path, min_score=0.5).boxes(F0, 256, 320).shape == (1, 4)


# --- the train column -------------------------------------------------------------------


def write_train(path, rows):
    lines = []
    for video_id, frame_ids, boxes in rows:
        columns = [video_id, json.dumps(frame_ids), json.dumps(boxes), "img", "t", "1", "c"]
        columns += ["asr", "small", "short", "single"]
        lines.append("\t".join(columns))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_train_column_in_pixels_and_normalised(tmp_path):
    other = "8c601b02-2c63-11ee-bb6d-b8cef60c2fd0-1-2"
    path = write_train(tmp_path / "train.txt", [
        (CLIP, [F0, F1], [[[10, 10, 100, 200]], []]),
        (other, [other + "-0000"], [[[5, 5, 50, 50], [60, 60, 90, 90]]]),
    ])
    table = read_train_boxes(path)
    assert table.units == PIXELS and len(table) == 3 and table.num_boxes() == 3
    assert train_column_units(path, max_lines=1) == PIXELS
    np.testing.assert_allclose(table.boxes(other + "-0000", 256, 320)[1], [60, 60, 90, 90])
    path = write_train(tmp_path / "norm.txt", [(CLIP, [F0, F1], [[[0.1, 0.2, 0.5, 0.6]], []])])
    table = read_train_boxes(path)
    assert table.units == NORMALISED
    np.testing.assert_allclose(table.boxes(F0, 200, 100), [[20, 20, 100, 60]])


def test_train_column_errors_name_the_line(tmp_path):
    path = write_train(tmp_path / "train.txt", [
        (CLIP, [F0], [[[10, 10, 100, 200]]]),
        (CLIP + "x", [F1], [[[100, 10, 10, 200]]]),
    ])
    with pytest.raises(DataError, match=rf"train\.txt:2: frame '{F1}': box .* is inverted"):
        read_train_boxes(path)
    path = write_train(tmp_path / "count.txt", [(CLIP, [F0, F1], [[[10, 10, 100, 200]]])])
    with pytest.raises(DataError, match=r"count\.txt:1: column 3 has 1 box lists for 2 frames"):
        read_train_boxes(path)
    path = write_train(tmp_path / "twice.txt", [(CLIP, [F0], [[]]), (CLIP, [F0], [[]])])
    with pytest.raises(DataError, match=rf"twice\.txt:2: frame '{F0}' is also on .*twice\.txt:1"):
        read_train_boxes(path)
    short = tmp_path / "lpr750k.txt"
    short.write_text("a\tb/c.jpg\tx\n")
    with pytest.raises(DataError, match=r"lpr750k\.txt:1: not an LPR4M train line"):
        read_train_boxes(str(short))


# --- selection --------------------------------------------------------------------------


def test_union_largest_most_central():
    frame = [[0, 0, 40, 40], [100, 100, 200, 180], [120, 140, 150, 170]]
    clip = [frame, [], None]
    union = select_boxes(clip, "union")
    np.testing.assert_allclose(union[0], [0, 0, 200, 180])
    assert union[1] is None and union[2] is None
    np.testing.assert_allclose(select_boxes(clip, "largest")[0], [100, 100, 200, 180])
    central = select_boxes(clip, "most_central", (256, 320))
    np.testing.assert_allclose(central[0], [120, 140, 150, 170])
    np.testing.assert_allclose(select_boxes(clip, "most_central", (60, 60))[0], [0, 0, 40, 40])
    with pytest.raises(ConfigError, match="needs the frame size"):
        select_boxes(clip, "most_central")
    with pytest.raises(ConfigError, match="must be one of"):
        select_boxes(clip, "biggest")


def test_track_follows_the_persistent_product():
    product = [[50 + 4 * t, 60, 150 + 4 * t, 200] for t in range(6)]
    flash = [0, 0, 256, 120]       # a large false positive in two frames
    shelf = [200, 250, 250, 300]   # clutter seen in three frames
    clip = [
        [product[0], shelf],
        [flash, product[1]],
        [],                          # the product is hidden: the track bridges one frame
        [product[3], flash, shelf],
        [shelf, product[4]],
        [product[5]],
    ]
    largest = select_boxes(clip, "largest")
    np.testing.assert_allclose(largest[1], flash)
    track = select_boxes(clip, "track")
    assert track[2] is None
    for t in (0, 1, 3, 4, 5):
        np.testing.assert_allclose(track[t], product[t])
    # Without bridging, the product's track breaks at frame 2 and the longest is frames 3-5.
    short = select_boxes(clip, "track", max_gap=0)
    assert short[0] is None and short[1] is None
    np.testing.assert_allclose(short[4], product[4])
    assert select_boxes([[], None], "track") == [None, None]


def test_track_ties_go_to_the_larger_track():
    small, big = [0, 0, 10, 10], [100, 100, 200, 200]
    chosen = select_boxes([[small, big], [big, small]], "track")
    np.testing.assert_allclose(chosen[0], big)
    np.testing.assert_allclose(chosen[1], big)


# --- geometry ---------------------------------------------------------------------------


def test_crop_rect_margin_and_clamping():
    assert crop_rect([100, 100, 200, 150], 256, 320, margin=0.1) == (90, 95, 210, 155)
    assert crop_rect([100, 100, 200, 150], 256, 320, margin=0.0) == (100, 100, 200, 150)
    assert crop_rect([0, 300, 250, 320], 256, 320, margin=0.5) == (0, 290, 256, 320)
    assert crop_rect([10.2, 20.7, 10.4, 20.9], 256, 320, margin=0.0) == (10, 20, 11, 21)
    assert crop_rect([256, 320, 256.5, 320.5], 256, 320, margin=0.0) == (255, 319, 256, 320)


def test_patch_mask_keeps_the_patches_the_box_covers():
    # 224 px input, 7 x 7 grid: patches are 32 px. Box exactly on patch (row 1, column 2).
    mask = patch_mask(torch.tensor([64.0, 32.0, 96.0, 64.0]), 224, 224)
    assert mask.shape == (7, 7) and mask.dtype == torch.bool
    assert mask.nonzero().tolist() == [[1, 2]]
    # 4 px into column 1: 4/32 = 12.5 % of that patch > 2 %: kept.
    mask = patch_mask(torch.tensor([60.0, 32.0, 96.0, 64.0]), 224, 224)
    assert mask.nonzero().tolist() == [[1, 1], [1, 2]]
    # 0.5 px into column 1: 1.6 % of the patch <= 2 %: dropped.
    mask = patch_mask(torch.tensor([63.5, 32.0, 96.0, 64.0]), 224, 224)
    assert mask.nonzero().tolist() == [[1, 2]]
    # A 2 x 2 px box covers 0.4 % of its patch; the patch of its centre is kept anyway.
    mask = patch_mask(torch.tensor([100.0, 200.0, 102.0, 202.0]), 224, 224)
    assert mask.nonzero().tolist() == [[6, 3]]


def test_patch_mask_batches_and_full_frames():
    boxes = torch.stack([
        box_or_frame(None, 224, 224),
        box_or_frame([0, 0, 112, 112], 224, 224),
        box_or_frame([112, 0, 224, 224, 0.9], 224, 224),
    ]).view(3, 1, 4)
    mask = patch_mask(boxes, 224, 224)
    assert mask.shape == (3, 1, 7, 7)
    assert mask.flatten(1).sum(1).tolist() == [49, 16, 28]  # 112 = 3.5 patches: 4 x 4, 4 x 7
    assert mask[1, 0, :4, :4].all() and not mask[1, 0, 4:].any()
    # A 200 x 100 input, 4 x 4 grid of 50 x 25 px patches. Coverage: (0,2) 0.6, (0,3) 1.0,
    # (1,2) 0.6 * 0.6 = 0.36, (1,3) 0.6; above 0.5 survive.
    mask = patch_mask(torch.tensor([120.0, 0.0, 200.0, 40.0]), 200, 100, grid=4, min_coverage=0.5)
    assert mask.int().tolist() == [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
