"""Readers of the LPR (LPR4M / LPR750K) annotation files.

Pair files (train / val; tab-separated, one (clip, shop image) pair per line) come in two
layouts, told apart per line; a file mixing them raises ``DataError``:

- **LPR4M** (official release, exactly 11 columns): ``[0]`` video_id, ``[1]`` JSON list of
  frame ids ``<clip_id>-<4-digit index>``, ``[2]`` JSON list (one per frame) of box lists
  ``[[x1,y1,x2,y2], ...]``, ``[3]`` image_id, ``[4]`` title, ``[5]`` category id, ``[6]``
  category name, ``[7]`` ASR, ``[8..10]`` scale / visible-duration / product-count types.
  Frames: ``<frames_dir>/<clip_id>/<frame_id>.jpg``; images: ``<images_dir>/<image_id>.jpg``.
- **LPR750K** (what the original code reads, >= 10 columns): ``[0]`` video_id, ``[1]`` list
  of frame paths (Python literal or JSON), ``[3]`` image_id, ``[4]`` image path, ``[5]``
  title, ``[7]`` category name, ``[9]`` ASR. Paths are relative to the image root.

A line is LPR750K when its column 2 holds a path (contains ``/``), LPR4M otherwise.
Pair files are indexed at load (every line's byte offset and line number; its column count
and layout are checked) and a line's lists are parsed when its item is read: 16 bytes of
memory per line, in numpy arrays that forked DataLoader workers share without copying.
Errors name file and line.

Test files: ``query_tenframes.json`` (``{video_id: {"frames": [...], "gt": [...],
"category": ...}}``), ``gallery_main.txt`` (``live_id/<image file>`` per line), and id maps
``{id: [id, ...]}`` / ``id<TAB>text`` files. Ids are file stems (``mmf.datasets.ids``), so
``<uuid>.jpg`` and ``<uuid>`` match.
"""
import array
import ast
import dataclasses
import glob
import json
import logging
import os

import numpy as np

from mmf.common.errors import ConfigError, DataError
from mmf.datasets.ids import live_id_of, normalize_id

logger = logging.getLogger(__name__)

LPR4M = "LPR4M"
LPR750K = "LPR750K"


def find_annotation_file(data_dir, pattern, key, required):
    """The one file under ``data_dir`` matching glob ``pattern`` (config key ``key``).

    No match: ``DataError`` if ``required`` else None. Several matches: ``DataError``.
    An empty pattern: ``ConfigError`` if ``required`` else None.
    """
    if not pattern:
        if required:
            raise ConfigError(f"{key} is not set")
        return None
    full = os.path.join(data_dir, pattern)
    matches = sorted(glob.glob(full))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        if required:
            raise DataError(f"{key}: no file matches {full}")
        return None
    raise DataError(
        f"{key}: {len(matches)} files match {full} ({matches}); set {key} to one of them"
    )


def annotation_kind(path):
    """``"query"`` for a ``.json`` file, else ``"pairs"`` if the first line has tabs, else
    ``"gallery"``."""
    if path.lower().endswith(".json"):
        if not os.path.isfile(path):
            raise DataError(f"annotation file not found: {path}")
        return "query"
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                if raw.strip():
                    return "pairs" if b"\t" in raw else "gallery"
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    raise DataError(f"annotation file is empty: {path}")


class LineIndex:
    """Byte ranges of the non-blank lines of a text file; ``text(i)`` reads line ``i`` on demand.

    ``check(raw_bytes, line_number)`` runs on every kept line during the scan. ``max_lines``
    keeps only the first lines. The file is reopened in each process that reads it.
    """

    def __init__(self, path, check=None, max_lines=None):
        # Compact arrays during the scan too: a list of 4M Python ints would take ~150 MB.
        starts, lengths, numbers = array.array("q"), array.array("i"), array.array("i")
        position = 0
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                if raw.strip():
                    if max_lines is not None and len(starts) >= max_lines:
                        break
                    if check is not None:
                        check(raw, number)
                    starts.append(position)
                    lengths.append(len(raw))
                    numbers.append(number)
                position += len(raw)
        self.path = path
        self._starts = np.frombuffer(starts, dtype=np.int64)
        self._lengths = np.frombuffer(lengths, dtype=np.int32)
        self._numbers = np.frombuffer(numbers, dtype=np.int32)
        self._handle = None
        self._pid = None

    def __len__(self):
        return len(self._starts)

    def line_number(self, index):
        return int(self._numbers[index])

    def text(self, index):
        """Line ``index`` without its line break; ``DataError`` if it is not UTF-8."""
        if self._handle is None or self._pid != os.getpid():
            self._handle = open(self.path, "rb")
            self._pid = os.getpid()
        self._handle.seek(int(self._starts[index]))
        raw = self._handle.read(int(self._lengths[index]))
        try:
            return raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as err:
            where = f"{self.path}:{self.line_number(index)}"
            raise DataError(f"{where}: not UTF-8 text ({err})") from None

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            self._handle.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_pid"] = None
        return state


@dataclasses.dataclass
class PairRecord:
    """One training pair. Paths are relative to the split's image root; ``boxes`` is one box
    list per frame (LPR4M with ``crop_to_box``) or None; text fields are None when the
    format has none."""

    video_id: str
    live_id: str
    frames: list
    image_id: str
    image_path: str
    title: str = None
    category: str = None
    asr: str = None
    boxes: list = None


class LPRPairAnnotations:
    """Lazily parsed LPR pair file of either layout; ``records[i]`` is a ``PairRecord``."""

    def __init__(self, path, frames_dir="training_frames", images_dir="training_images",
                 read_boxes=False, max_lines=None):
        self.path = path
        self.frames_dir = frames_dir
        self.images_dir = images_dir
        self.read_boxes = read_boxes
        self.layout = None
        self._first_line = None
        self.lines = LineIndex(path, self._check_line, max_lines)
        logger.info("%s: %d pairs in the %s layout", path, len(self.lines), self.layout)
        if read_boxes and self.layout == LPR750K:
            logger.warning("%s: crop_to_box has no effect, LPR750K lines have no boxes", path)

    def _check_line(self, raw, number):
        columns = raw.rstrip(b"\r\n").split(b"\t")
        layout = None
        if len(columns) >= 2:
            if b"/" in columns[1]:
                layout = LPR750K if len(columns) >= 10 else None
            elif len(columns) == 11:
                layout = LPR4M
        if layout is None:
            raise DataError(
                f"{self.path}:{number}: neither an LPR4M line (11 tab-separated columns, column 2 "
                f"a list of frame ids) nor an LPR750K line (>= 10 columns, column 2 a list of "
                f"frame paths); found {len(columns)} columns"
            )
        if self.layout is None:
            self.layout, self._first_line = layout, number
        elif layout != self.layout:
            raise DataError(
                f"{self.path}:{number}: line in the {layout} layout, but line {self._first_line} "
                f"is in the {self.layout} layout; a file must use one layout"
            )

    def __len__(self):
        return len(self.lines)

    def __getitem__(self, index):
        number = self.lines.line_number(index)
        columns = self.lines.text(index).split("\t")
        where = f"{self.path}:{number}"
        video_id = _required_field(columns[0], where, "column 1 (video_id)")
        if self.layout == LPR4M:
            frame_ids = _parse_string_list(columns[1], where, "column 2 (frame ids)")
            frames = [self._frame_path(frame_id) for frame_id in frame_ids]
            image_id = normalize_id(_required_field(columns[3], where, "column 4 (image_id)"))
            boxes = None
            if self.read_boxes:
                boxes = _parse_boxes(columns[2], len(frames), where)
            return PairRecord(
                video_id, live_id_of(video_id), frames, image_id,
                f"{self.images_dir}/{image_id}.jpg",
                title=columns[4], category=columns[6], asr=columns[7], boxes=boxes,
            )
        frames = _parse_string_list(columns[1], where, "column 2 (frame paths)")
        image_path = _required_field(columns[4], where, "column 5 (image path)")
        image_id = normalize_id(_required_field(columns[3], where, "column 4 (image_id)"))
        return PairRecord(
            video_id, live_id_of(video_id), frames, image_id, image_path,
            title=columns[5], category=columns[7], asr=columns[9],
        )

    def _frame_path(self, frame_id):
        stem = normalize_id(frame_id)
        name = frame_id if stem != frame_id else frame_id + ".jpg"
        clip_id = stem.rsplit("-", 1)[0]
        return f"{self.frames_dir}/{clip_id}/{name}"


def _required_field(text, where, what):
    value = text.strip()
    if not value:
        raise DataError(f"{where}: {what} is empty")
    return value


def parse_list(text, where, what):
    """A JSON list, or else a Python-literal list (``ast.literal_eval``; never ``eval``)."""
    text = text.strip()
    try:
        value = json.loads(text)
    except RecursionError:
        raise DataError(f"{where}: {what} is nested too deeply: {text[:80]!r}") from None
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataError(
                f"{where}: {what} is not a JSON or Python list: {text[:80]!r}"
            ) from None
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: {what} is a {type(value).__name__}, expected a list")
    return list(value)


def _parse_string_list(text, where, what):
    values = parse_list(text, where, what)
    if not values:
        raise DataError(f"{where}: {what} is empty")
    if not all(isinstance(v, str) and v.strip() for v in values):
        raise DataError(f"{where}: {what} must hold non-empty strings")
    return [v.strip() for v in values]


def _parse_boxes(text, num_frames, where):
    boxes = parse_list(text, where, "column 3 (boxes)")
    if len(boxes) != num_frames:
        raise DataError(f"{where}: column 3 has {len(boxes)} box lists for {num_frames} frames")
    for frame_boxes in boxes:
        if not isinstance(frame_boxes, list) or not all(
            isinstance(box, (list, tuple)) and len(box) == 4
            and all(isinstance(v, (int, float)) for v in box)
            for box in frame_boxes
        ):
            raise DataError(
                f"{where}: column 3 must hold, per frame, a list of [x1, y1, x2, y2] boxes"
            )
    return boxes


@dataclasses.dataclass
class QueryRecord:
    """A test clip; ``frames`` are relative to the query image root."""

    video_id: str
    live_id: str
    frames: list
    gt: list
    category: str = None


def read_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None


def _id_list(value, where):
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise DataError(f"{where}: expected an id or a list of ids, got {value!r}")
    return [normalize_id(v) for v in value]


def read_query_json(path, live_id_fn=live_id_of):
    """``query_tenframes.json`` -> list of ``QueryRecord`` (file order)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{video_id: {{frames, gt}}}}")
    records = []
    for video_id, entry in data.items():
        where = f"{path}: query {video_id!r}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object with 'frames'")
        frames = entry.get("frames")
        if not (isinstance(frames, list) and frames and all(isinstance(f, str) for f in frames)):
            raise DataError(f"{where}: 'frames' must be a non-empty list of frame paths")
        video_id = normalize_id(video_id)
        category = entry.get("category")
        records.append(
            QueryRecord(
                video_id, live_id_fn(video_id), frames,
                _id_list(entry.get("gt", []), where + " 'gt'"),
                None if category is None else str(category),
            )
        )
    return records


@dataclasses.dataclass
class GalleryRecord:
    """A shop image; ``path`` is relative to the gallery image root."""

    image_id: str
    live_id: str
    path: str


def read_gallery_txt(path, live_id=None):
    """Gallery list, one image path per line -> list of ``GalleryRecord``.

    With ``live_id`` None (LPR) each line is ``<live_id>/<image file>`` and the livestream is
    the first path component; otherwise every image belongs to ``live_id``. Repeated lines are
    kept once (with a warning).
    """
    records, seen, repeated = [], set(), 0
    for number, line in _text_lines(path):
        relative = line.strip()
        if live_id is None:
            line_live_id = relative.split("/", 1)[0] if "/" in relative else ""
            if not line_live_id or not normalize_id(relative):
                raise DataError(
                    f"{path}:{number}: expected '<live_id>/<image file>', got {relative!r}"
                )
        else:
            line_live_id = live_id
            if not normalize_id(relative):
                raise DataError(f"{path}:{number}: expected an image path, got {relative!r}")
        if relative in seen:
            repeated += 1
            continue
        seen.add(relative)
        records.append(GalleryRecord(normalize_id(relative), line_live_id, relative))
    if repeated:
        logger.warning("%s: %d repeated lines ignored", path, repeated)
    return records


def read_id_lists_json(path):
    """``{key: [id, ...]}`` json (ground truth, per-livestream gallery) with normalized ids."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{id: [id, ...]}}")
    return {
        normalize_id(key): _id_list(value, f"{path}: key {key!r}") for key, value in data.items()
    }


def read_text_map(path):
    """``id<TAB>text`` lines -> ``{id: text}`` (ASR of clips, titles of images)."""
    mapping = {}
    for number, line in _text_lines(path):
        key, tab, text = line.partition("\t")
        if not tab or not key.strip():
            raise DataError(f"{path}:{number}: expected '<id><TAB><text>'")
        mapping[normalize_id(key)] = text
    return mapping


def _text_lines(path):
    """``(line number, line)`` of the non-blank lines; a line that is not UTF-8 raises
    ``DataError`` naming it."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    with handle:
        for number, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not UTF-8 text ({err})") from None
            if line.strip():
                yield number, line
