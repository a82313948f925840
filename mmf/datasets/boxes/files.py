"""Reading product boxes: the train annotation's box column and box json files.

Two sources share one layout of a box, ``[x1, y1, x2, y2]`` or ``[x1, y1, x2, y2, score]``
(a detector's output, ``scripts/detect_boxes.py``):

- column 3 of an LPR4M train line: one box list per frame of the clip;
- a box json ``{frame_id: [[x1, y1, x2, y2], ...]}`` (``test_frameid2gtbox_*.json`` or a
  predicted-box file); a frame holding a single box may give it unnested.

Units are decided once per file and logged: ``normalised`` when no coordinate exceeds 1
(fractions of the frame, as the original's code treats them), ``pixels`` otherwise. Pixel boxes
refer to the frame as annotated. When img2dataset resized the stored frame (``keep_ratio``), a
frame-size file (``read_frame_sizes``) gives the annotated size and ``BoxTable.boxes`` scales
the boxes to the stored size; without one, pixel boxes are taken to refer to the stored frame.

Checks: a box whose x2 <= x1 or y2 <= y1 (inverted or empty), or that overhangs its frame by
more than ``FAR_OUTSIDE`` of a side, or lies wholly outside, is an error naming the file and
line or frame id; with ``on_error="skip"`` it is dropped and counted (``BoxTable.skipped``).
A frame is checked when its annotated size is known: at reading for normalised boxes and for
pixel boxes with a frame size, else when ``BoxTable.boxes`` first meets the stored frame.
Surviving boxes are clamped to the frame.
"""
import logging
from typing import NamedTuple

import numpy as np

from mmf.common.errors import DataError
from mmf.datasets.ids import normalize_id

logger = logging.getLogger(__name__)

NORMALISED = "normalised"
PIXELS = "pixels"
UNITS = ("auto", NORMALISED, PIXELS)
ON_ERROR = ("raise", "skip")
# How far (fraction of the frame side) a box may overhang its frame before it is an error;
# annotation tools commonly let a box spill a few pixels past the border.
FAR_OUTSIDE = 0.1
SIZE_KEYS = ("width", "height", "original_width", "original_height")


class FrameSize(NamedTuple):
    """Size of a stored frame and, when img2dataset resized it, the size it was annotated at
    (img2dataset's ``original_width`` / ``original_height``)."""

    width: int
    height: int
    original_width: int = None
    original_height: int = None

    @property
    def annotated(self):
        """(width, height) of the frame the pixel boxes refer to."""
        return (self.original_width or self.width, self.original_height or self.height)

    @property
    def resized(self):
        """True when the stored frame is not the size the boxes were annotated at."""
        return self.annotated != (self.width, self.height)


def _read_json(path):
    # Imported here: the builders import this module, so a top-level import would be circular.
    from mmf.datasets.builders.videotoshop.database import read_json

    return read_json(path)


def read_frame_sizes(path):
    """``{frame_id: FrameSize}`` from a json ``{frame_id: {"width": W, "height": H,
    "original_width": W0, "original_height": H0}}`` (the keys of img2dataset's sample json;
    the ``original_`` pair is optional)."""
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{frame_id: {{width, height, ...}}}}")
    sizes = {}
    for frame_id, entry in data.items():
        where = f"{path}: frame {frame_id!r}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object with width and height")
        values = [entry.get(key) for key in SIZE_KEYS]
        if values[0] is None or values[1] is None:
            raise DataError(f"{where}: width and height are required")
        if (values[2] is None) != (values[3] is None):
            raise DataError(f"{where}: original_width and original_height come together")
        for key, value in zip(SIZE_KEYS, values, strict=True):
            if value is not None and (type(value) is not int or value <= 0):
                raise DataError(f"{where}: {key} must be a positive integer, got {value!r}")
        sizes[normalize_id(frame_id)] = FrameSize(*values)
    return sizes


def decide_units(coordinates, units="auto"):
    """Units of a file from all its coordinates (any shape): ``NORMALISED`` when none exceeds
    1, else ``PIXELS``; None for a file without boxes. ``units`` other than ``"auto"`` is
    returned as given."""
    if units not in UNITS:
        raise DataError(f"box units must be one of {UNITS}, got {units!r}")
    if units != "auto":
        return units
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.size == 0:
        return None
    return NORMALISED if np.nanmax(coordinates) <= 1.0 else PIXELS


def _rows(value, where):
    """A frame's box list -> (float64 [n, 5] (x1, y1, x2, y2, score; score 1 when absent),
    whether any box gave a score)."""
    if isinstance(value, (list, tuple)) and value and not isinstance(value[0], (list, tuple)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: expected a list of [x1, y1, x2, y2] boxes, got {value!r:.80}")
    rows = np.ones((len(value), 5), dtype=np.float64)
    for i, box in enumerate(value):
        if not (
            isinstance(box, (list, tuple)) and len(box) in (4, 5)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
        ):
            raise DataError(
                f"{where}: box {i} is not [x1, y1, x2, y2] or [x1, y1, x2, y2, score]: {box!r:.80}"
            )
        rows[i, : len(box)] = box
    return rows, any(len(box) == 5 for box in value)


def _problem(box, frame):
    """Why ``box`` is unusable on a ``frame`` = (width, height) (None: size unknown), or None."""
    x1, y1, x2, y2 = box[:4]
    if not np.all(np.isfinite(box[:4])):
        return "has a non-finite coordinate"
    if x2 <= x1 or y2 <= y1:
        return "is inverted or empty (x2 <= x1 or y2 <= y1)"
    if frame is None:
        return None
    width, height = frame
    overhang = (
        x1 < -FAR_OUTSIDE * width or y1 < -FAR_OUTSIDE * height
        or x2 > (1 + FAR_OUTSIDE) * width or y2 > (1 + FAR_OUTSIDE) * height
    )
    if overhang or x1 >= width or y1 >= height or x2 <= 0 or y2 <= 0:
        return f"lies far outside the {width:g}x{height:g} frame"
    return None


def check_boxes(rows, units, size, where, on_error="raise"):
    """``rows`` [n, 4+] checked on their annotated frame: (1, 1) for normalised boxes,
    ``size.annotated`` for pixel boxes (``size`` a FrameSize or (width, height); None: only the
    inverted-box check). Returns (kept rows, number dropped); raises ``DataError`` naming
    ``where`` unless ``on_error == "skip"``."""
    if units == NORMALISED:
        frame = (1, 1)
    elif size is None:
        frame = None
    else:
        frame = size.annotated if isinstance(size, FrameSize) else tuple(size)
    keep = np.ones(len(rows), dtype=bool)
    for i, box in enumerate(rows):
        problem = _problem(box, frame)
        if problem is None:
            continue
        if on_error != "skip":
            unit = " (normalised)" if units == NORMALISED else ""
            raise DataError(f"{where}: box {np.round(box[:4], 4).tolist()}{unit} {problem}")
        keep[i] = False
    return rows[keep], int((~keep).sum())


def to_pixels(rows, units, width, height, size=None):
    """``rows`` [n, 4+] in ``units`` -> float64 [n, 4] in pixels of the stored ``width`` x
    ``height`` frame, clamped to it. Pixel boxes are scaled from ``size.annotated`` when a
    FrameSize is given, else taken as already on the stored frame."""
    boxes = np.asarray(rows, dtype=np.float64)[:, :4]
    if units == NORMALISED:
        scale = (width, height)
    elif size is not None:
        annotated_w, annotated_h = size.annotated
        scale = (width / annotated_w, height / annotated_h)
    else:
        scale = (1.0, 1.0)
    boxes = boxes * np.array(scale * 2)
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    return boxes


class BoxTable:
    """The boxes of one file by frame id, in the file's ``units``.

    ``frames``: frame_id -> float64 [n, 5] (x1, y1, x2, y2, score); ``where``: frame_id -> the
    file location an error names; ``sizes``: frame_id -> FrameSize, or None; ``skipped``: boxes
    and frames dropped under ``on_error="skip"``; ``has_scores``: the file gave scores.
    """

    def __init__(self, path, units, frames, where, sizes=None, on_error="raise",
                 skipped=0, has_scores=False):
        self.path = path
        self.units = units
        self.frames = frames
        self.where = where
        self.sizes = sizes or {}
        self.on_error = on_error
        self.skipped = skipped
        self.has_scores = has_scores
        self._checked = {
            frame_id for frame_id in frames if units != PIXELS or frame_id in self.sizes
        }

    def __len__(self):
        return len(self.frames)

    def __contains__(self, frame_id):
        return normalize_id(frame_id) in self.frames

    def __iter__(self):
        return iter(self.frames)

    def num_boxes(self):
        return sum(len(rows) for rows in self.frames.values())

    def scored_boxes(self, frame_id, width, height):
        """(boxes float64 [n, 4] in pixels of the stored ``width`` x ``height`` frame, clamped,
        scores [n]); empty for a frame without boxes or not in the file."""
        frame_id = normalize_id(frame_id)
        rows = self.frames.get(frame_id)
        if rows is None or not len(rows):
            return np.zeros((0, 4)), np.zeros(0)
        if frame_id not in self._checked:
            rows, dropped = check_boxes(
                rows, self.units, (width, height), self.where[frame_id], self.on_error
            )
            self.frames[frame_id] = rows
            self.skipped += dropped
            self._checked.add(frame_id)
        size = self.sizes.get(frame_id)
        return to_pixels(rows, self.units, width, height, size), rows[:, 4].copy()

    def boxes(self, frame_id, width, height):
        """float64 [n, 4]: the frame's boxes in pixels of the stored frame (``scored_boxes``)."""
        return self.scored_boxes(frame_id, width, height)[0]


def _finish(path, frames, where, units, sizes, on_error, skipped, has_scores, min_score):
    """Units decision, the checks that need no stored frame, the score filter, the log line."""
    coordinates = [rows[:, :4].ravel() for rows in frames.values()]
    units = decide_units(np.concatenate(coordinates) if coordinates else [], units)
    sizes = sizes or {}
    for frame_id, rows in frames.items():
        rows, dropped = check_boxes(rows, units, sizes.get(frame_id), where[frame_id], on_error)
        skipped += dropped
        frames[frame_id] = rows if min_score is None else rows[rows[:, 4] >= min_score]
    table = BoxTable(path, units, frames, where, sizes, on_error, skipped, has_scores)
    sized = sum(frame_id in sizes for frame_id in frames)
    logger.info(
        "%s: %d boxes on %d frames, units: %s%s%s", path, table.num_boxes(), len(frames),
        units or "none (no boxes)", f"; sized frames: {sized}" if sized else "",
        f"; {skipped} skipped (on_error: skip)" if skipped else "",
    )
    return table


def read_box_json(path, frame_ids=None, sizes=None, units="auto", on_error="raise",
                  min_score=None):
    """A box json ``{frame_id: [[x1, y1, x2, y2(, score)], ...]}`` -> ``BoxTable``.

    frame_ids: the split's frame ids (any iterable); a frame outside them is an error.
    sizes: {frame_id: FrameSize} (``read_frame_sizes``). units: ``"auto"`` or forced.
    on_error: ``"raise"`` or ``"skip"`` (drop and count bad boxes and foreign frames).
    min_score: drop boxes scored below it (predicted-box files).
    """
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{frame_id: [[x1, y1, x2, y2], ...]}}")
    split = None if frame_ids is None else {normalize_id(f) for f in frame_ids}
    frames, where, skipped, has_scores = {}, {}, 0, False
    for raw_id, value in data.items():
        frame_id = normalize_id(raw_id)
        location = f"{path}: frame {raw_id!r}"
        if split is not None and frame_id not in split:
            if on_error != "skip":
                raise DataError(f"{location} is not a frame of the test split")
            skipped += 1
            continue
        frames[frame_id], scored = _rows(value, location)
        where[frame_id] = location
        has_scores = has_scores or scored
    return _finish(path, frames, where, units, sizes, on_error, skipped, has_scores, min_score)


def parse_box_column(text, num_frames, where):
    """Column 3 of an LPR4M train line -> one float64 [n, 5] array per frame (unchecked; see
    ``check_boxes``)."""
    from mmf.datasets.builders.videotoshop.database import parse_list

    lists = parse_list(text, where, "column 3 (boxes)")
    if len(lists) != num_frames:
        raise DataError(f"{where}: column 3 has {len(lists)} box lists for {num_frames} frames")
    return [_rows(value, f"{where}: column 3, frame {i}")[0] for i, value in enumerate(lists)]


def _train_lines(path, max_lines=None):
    """Yields (line number, frame ids, per-frame box rows) of an LPR4M train file."""
    from mmf.datasets.builders.videotoshop.database import parse_list

    try:
        handle = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    with handle:
        for number, line in enumerate(handle, start=1):
            if max_lines is not None and number > max_lines:
                return
            if not line.strip():
                continue
            columns = line.rstrip("\r\n").split("\t")
            where = f"{path}:{number}"
            if len(columns) != 11:
                raise DataError(
                    f"{where}: not an LPR4M train line (11 tab-separated columns; LPR750K lines "
                    f"have no boxes); found {len(columns)} columns"
                )
            frame_ids = [normalize_id(f) for f in parse_list(columns[1], where, "column 2")]
            yield number, frame_ids, parse_box_column(columns[2], len(frame_ids), where)


def train_column_units(path, max_lines=10000, units="auto"):
    """Units of a train file's box column, decided from its first ``max_lines`` lines (for
    files too large to read whole); logged. A later line that contradicts them fails its
    ``check_boxes`` (a normalised file's box beyond 1 lies far outside the unit frame)."""
    coordinates = [
        rows[:, :4].ravel()
        for _, _, per_frame in _train_lines(path, max_lines)
        for rows in per_frame
    ]
    decided = decide_units(np.concatenate(coordinates) if coordinates else [], units)
    logger.info("%s: box units %s (first %d lines)", path, decided or "none", max_lines)
    return decided


def read_train_boxes(path, sizes=None, units="auto", on_error="raise", max_lines=None):
    """The box column of an LPR4M train file -> ``BoxTable`` by frame id (every frame of every
    clip, ``[]`` where the product is out of view). A frame id seen on two lines is an error."""
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    frames, where = {}, {}
    for number, frame_ids, per_frame in _train_lines(path, max_lines):
        for frame_id, rows in zip(frame_ids, per_frame, strict=True):
            location = f"{path}:{number}: frame {frame_id!r}"
            if frame_id in frames:
                raise DataError(f"{location} is also on {where[frame_id]}")
            frames[frame_id] = rows
            where[frame_id] = location
    return _finish(path, frames, where, units, sizes, on_error, 0, False, None)
