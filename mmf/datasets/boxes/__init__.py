"""Product boxes: reading box files (``files``), choosing the intended product of a clip
(``selection``) and the geometry of the two ways a box enters the model (``geometry``).

A box is ``[x1, y1, x2, y2]`` (optionally followed by a detector score) with x to the right and
y down. Readers keep boxes in their file's units; ``BoxTable.boxes`` returns them in pixels of
the frame as stored on disk, which is what selection and geometry take.
"""
from mmf.datasets.boxes.files import (
    FAR_OUTSIDE,
    NORMALISED,
    PIXELS,
    BoxTable,
    FrameSize,
    check_boxes,
    decide_units,
    parse_box_column,
    read_box_json,
    read_frame_sizes,
    read_train_boxes,
    to_pixels,
    train_column_units,
)
from mmf.datasets.boxes.geometry import box_or_frame, crop_rect, patch_mask
from mmf.datasets.boxes.selection import DEFAULT_RULE, RULES, select_boxes

__all__ = [
    "FAR_OUTSIDE", "NORMALISED", "PIXELS", "BoxTable", "FrameSize", "check_boxes",
    "decide_units", "parse_box_column", "read_box_json", "read_frame_sizes", "read_train_boxes",
    "to_pixels", "train_column_units", "box_or_frame", "crop_rect", "patch_mask",
    "DEFAULT_RULE", "RULES", "select_boxes",
]
