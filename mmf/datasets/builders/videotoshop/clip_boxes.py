"""How the intended product's box enters a clip's frames (``model_config.rice.box_mode``).

The dataset reads ``box_mode`` from the model (``dataset_config.videotoshop.box_mode``
interpolates ``model_config.rice.box_mode``: one key drives both), ``box_rule`` (which box of a
frame, ``mmf.datasets.boxes.selection``) and ``box_margin`` (context around a crop).

- ``crop``: each frame with a box is cropped to ``crop_rect(box, margin)`` (``images.
  crop_image``; undecoded bytes are cropped after their decode) before the usual resize; a
  frame without one stays whole.
- ``patch_mask``: the frame stays whole; the box goes through the same resize / crop / flip as
  the frame (``TorchvisionTransforms.transform_with_box``) and the sample gains
  ``video_boxes`` [F,4] (x1, y1, x2, y2 in pixels of the encoder input; the whole input for a
  frame without a box and for padding slots). The model turns it into the patches it keeps.

A clip's boxes come from a ``ClipBoxes``: the train annotation's column 3 (``ColumnBoxes``) or a
box json by frame id (``TableBoxes``: the test ground truth or a detector's file).
"""
import io
import logging
from types import SimpleNamespace

import torch
from PIL import Image

from mmf.common.errors import ConfigError
from mmf.datasets.boxes import (
    DEFAULT_RULE,
    RULES,
    box_or_frame,
    check_boxes,
    crop_rect,
    select_boxes,
    to_pixels,
)
from mmf.datasets.boxes.geometry import DEFAULT_MARGIN
from mmf.datasets.builders.videotoshop.images import crop_image
from mmf.datasets.ids import normalize_id

logger = logging.getLogger(__name__)

BOX_MODES = ("crop", "patch_mask")


class BoxSettings:
    """``box_mode`` (None: off), ``rule`` and ``margin`` of a dataset config node, with the
    legacy ``crop_to_box: true`` read as ``box_mode: crop, box_rule: union, box_margin: 0``
    (what it did)."""

    def __init__(self, config, name):
        self.mode = config.get("box_mode")
        self.rule = str(config.get("box_rule") or DEFAULT_RULE)
        self.margin = float(config.get("box_margin", DEFAULT_MARGIN))
        if config.get("crop_to_box"):
            logger.warning(
                "dataset_config.%s.crop_to_box is deprecated; it means model_config.rice."
                "box_mode: crop with dataset_config.%s.box_rule: union and box_margin: 0",
                name, name,
            )
            if self.mode not in (None, "crop"):
                raise ConfigError(
                    f"dataset_config.{name}.crop_to_box: true contradicts box_mode {self.mode!r}"
                )
            self.mode, self.rule, self.margin = "crop", "union", 0.0
        if self.mode is not None and self.mode not in BOX_MODES:
            raise ConfigError(
                f"model_config.rice.box_mode must be null or one of {BOX_MODES}, got {self.mode!r}"
            )
        if self.rule not in RULES:
            raise ConfigError(f"dataset_config.{name}.box_rule must be one of {RULES}, "
                              f"got {self.rule!r}")
        if self.margin < 0:
            raise ConfigError(f"dataset_config.{name}.box_margin must be >= 0, got {self.margin}")


class ColumnBoxes:
    """A train clip's boxes from column 3: ``rows`` one float [n, 5] array per frame (file
    ``units``), checked on their annotated frame when their pixels are asked for.

    sizes: per frame, its ``FrameSize`` (the dataset's ``frame_sizes_file``) or None; a frame
    with one has its pixel boxes checked on and scaled from its annotated size, a frame
    without one is taken as annotated on the stored frame."""

    def __init__(self, rows, units, where, on_error="raise", sizes=None):
        self.rows = rows
        self.units = units
        self.where = where
        self.on_error = on_error
        self.sizes = sizes or [None] * len(rows)

    def __len__(self):
        return len(self.rows)

    def pixels(self, width, height):
        """Per frame, float64 [n, 4] boxes in pixels of the stored ``width`` x ``height`` frame."""
        out = []
        for index, (rows, size) in enumerate(zip(self.rows, self.sizes, strict=True)):
            kept, _ = check_boxes(
                rows, self.units, size or (width, height),
                f"{self.where}: column 3, frame {index}", self.on_error,
            )
            out.append(to_pixels(kept, self.units, width, height, size))
        return out


class TableBoxes:
    """A clip's boxes from a ``BoxTable`` by frame id (a frame path's stem is its id)."""

    def __init__(self, table, frames):
        self.table = table
        self.frame_ids = [normalize_id(frame) for frame in frames]

    def __len__(self):
        return len(self.frame_ids)

    def pixels(self, width, height):
        return [self.table.boxes(frame_id, width, height) for frame_id in self.frame_ids]

    def has_box(self, rule):
        """Per frame, whether ``rule`` gives it a box (rules are unit-free about that)."""
        frames = [self.table.frames.get(f) for f in self.frame_ids]
        frames = [None if rows is None else rows[:, :4] for rows in frames]
        return [box is not None for box in select_boxes(frames, rule, frame_size=(1, 1))]


def image_size(image):
    """(width, height) of a PIL image, a [C,H,W] tensor or undecoded bytes (``images.
    load_encoded``: read from the header)."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-1]), int(image.shape[-2])
    if isinstance(image, SimpleNamespace):
        with Image.open(io.BytesIO(image.data.numpy().tobytes())) as header:
            return header.size
    return image.size


def boxed_frames(images, clip_boxes, keep, settings, transform):
    """The kept frames of a clip through ``transform`` with the intended box applied.

    images: the decoded kept frames (PIL or uint8 [3,H,W]); clip_boxes: the clip's
    ``ClipBoxes`` (every frame, so that ``track`` sees the whole clip); keep: the indices of
    ``images`` in the clip. Returns (transformed frames, boxes [len(keep), 4] on the encoder
    input for ``patch_mask``, else None).
    """
    width, height = image_size(images[0])
    chosen = select_boxes(clip_boxes.pixels(width, height), settings.rule, (width, height))
    out, boxes = [], []
    for image, index in zip(images, keep, strict=True):
        box = chosen[index]
        size = image_size(image)
        if settings.mode == "crop":
            if box is not None:
                image = crop_image(image, crop_rect(box, *size, margin=settings.margin))
            out.append(transform(image))
            continue
        pixels, moved = transform.transform_with_box(image, box_or_frame(box, *size))
        out.append(pixels)
        boxes.append(moved)
    return out, (torch.stack(boxes) if boxes else None)


def pad_boxes(boxes, slots, width, height):
    """[n,4] boxes -> [slots,4], padding slots holding the whole ``width`` x ``height`` input."""
    full = box_or_frame(None, width, height).expand(slots, 4).clone()
    full[: len(boxes)] = boxes
    return full
