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
Pair files are indexed at load: every line is validated as its item will be read (UTF-8,
columns, layout, required fields, list syntax; boxes with ``read_boxes``) and only its byte
offset and line number are kept: 16 bytes of memory per line, in numpy arrays that forked
DataLoader workers share without copying. A malformed line raises ``DataError`` naming file
and line, or with ``skip_malformed`` is dropped, counted and logged (``bench/annotation_load.py``
measures the cost of the validation).

Test files: ``query_tenframes.json`` (``{video_id: {"frames": [...], "gt": [...],
"category": ...}}``), ``gallery_main.txt`` (``live_id/<image file>`` per line), and id maps
``{id: [id, ...]}`` / ``id<TAB>text`` files. Ids are file stems (``mmf.datasets.ids``), so
``<uuid>.jpg`` and ``<uuid>`` match. A json object with a repeated key, a query file with
two entries of one id and an empty id map raise ``DataError``.
"""
import array
import ast
import collections
import dataclasses
import glob
import json
import logging
import os

import numpy as np

from mmf.common.errors import ConfigError, DataError
from mmf.datasets.boxes import check_boxes, parse_box_column
from mmf.datasets.ids import live_id_of, normalize_id

logger = logging.getLogger(__name__)

LPR4M = "LPR4M"
LPR750K = "LPR750K"
# LPR4M columns 9-11: product scale, visible duration and number-of-products types.
BREAKDOWNS = ("scale", "duration", "products")


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


# The side files of a query / gallery split (query json + gallery txt), by split: the config
# key of each split's glob pattern. The test keys are the original layout's names.
SIDE_FILE_KEYS = {
    "asr": {"test": "asr_file", "val": "val_asr_file"},
    "title": {"test": "title_file", "val": "val_title_file"},
    "boxes": {"test": "test_box_file", "val": "val_box_file"},
}


def side_file_key(side, dataset_type):
    """The config key of the ``side`` file (``asr``, ``title`` or ``boxes``) of the split
    ``dataset_type``: ``val_*`` for val, the test key otherwise."""
    keys = SIDE_FILE_KEYS[side]
    return keys.get(dataset_type, keys["test"])


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

    ``check(raw_bytes, line_number)`` runs on every non-blank line during the scan and returns
    whether to keep it. ``max_lines`` keeps only the first kept lines. The file is reopened in
    each process that reads it.
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
                    if check is None or check(raw, number):
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
        return decode_line(self._handle.read(int(self._lengths[index])), self.path,
                           self.line_number(index))

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            self._handle.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle"] = None
        state["_pid"] = None
        return state


def decode_line(raw, path, number):
    """UTF-8 ``raw`` bytes without the line break; ``DataError`` naming ``path:number``."""
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}:{number}: not UTF-8 text ({err})") from None


MALFORMED_SHOWN = 5


class PairFile:
    """Base of the pair-file readers: ``lines`` indexes the file at load, every line validated
    by ``parse(text, number)`` (the same parse that reads an item later).

    A malformed line raises ``DataError``; with ``skip_malformed`` it is left out of the index,
    and ``malformed`` holds the messages (logged once: the count and the first lines).
    """

    def __init__(self, path, max_lines=None, skip_malformed=False):
        self.path = path
        self.skip_malformed = skip_malformed
        self.malformed = []
        self.lines = LineIndex(path, self._check_line, max_lines)
        if self.malformed:
            shown = "; ".join(self.malformed[:MALFORMED_SHOWN])
            more = len(self.malformed) - MALFORMED_SHOWN
            logger.warning(
                "%s: skipped %d malformed lines (on_error: skip): %s%s", path,
                len(self.malformed), shown, f"; and {more} more" if more > 0 else "",
            )
            if not len(self.lines):
                raise DataError(f"{path}: no valid line ({len(self.malformed)} malformed)")

    def _check_line(self, raw, number):
        try:
            self.parse(decode_line(raw, self.path, number), number)
        except DataError as err:
            if not self.skip_malformed:
                raise
            self.malformed.append("line " + str(err).removeprefix(f"{self.path}:"))
            return False
        return True

    def parse(self, text, number):
        raise NotImplementedError

    def __len__(self):
        return len(self.lines)

    def __getitem__(self, index):
        return self.parse(self.lines.text(index), self.lines.line_number(index))


@dataclasses.dataclass
class PairRecord:
    """One training pair. Paths are relative to the split's image root; ``boxes`` is one float
    [n, 5] array of box rows per frame, in the file's units (LPR4M with ``read_boxes``) or None;
    text fields are None when the format has none; ``breakdowns`` the LPR4M columns 9-11
    (``scale``, ``duration``, ``products``); ``where`` the file and line."""

    video_id: str
    live_id: str
    frames: list
    image_id: str
    image_path: str
    title: str = None
    category: str = None
    asr: str = None
    boxes: list = None
    breakdowns: dict = None
    where: str = None


class LPRPairAnnotations(PairFile):
    """LPR pair file of either layout, validated at load; ``records[i]`` is a ``PairRecord``."""

    def __init__(self, path, frames_dir="training_frames", images_dir="training_images",
                 read_boxes=False, max_lines=None, skip_malformed=False):
        self.frames_dir = frames_dir
        self.images_dir = images_dir
        self.read_boxes = read_boxes
        self.layout = None
        self._first_line = None
        super().__init__(path, max_lines, skip_malformed)
        logger.info("%s: %d pairs in the %s layout", path, len(self.lines), self.layout)
        if read_boxes and self.layout == LPR750K:
            logger.warning("%s: box_mode has no effect, LPR750K lines have no boxes", path)

    def _layout(self, columns, where):
        layout = None
        if len(columns) >= 2:
            if "/" in columns[1]:
                layout = LPR750K if len(columns) >= 10 else None
            elif len(columns) == 11:
                layout = LPR4M
        if layout is None:
            raise DataError(
                f"{where}: neither an LPR4M line (11 tab-separated columns, column 2 "
                f"a list of frame ids) nor an LPR750K line (>= 10 columns, column 2 a list of "
                f"frame paths); found {len(columns)} columns"
            )
        if self.layout is not None and layout != self.layout:
            raise DataError(
                f"{where}: line in the {layout} layout, but line {self._first_line} "
                f"is in the {self.layout} layout; a file must use one layout"
            )
        return layout

    def parse(self, text, number):
        columns = text.split("\t")
        where = f"{self.path}:{number}"
        layout = self._layout(columns, where)
        video_id = _required_field(columns[0], where, "column 1 (video_id)")
        image_id = normalize_id(_required_field(columns[3], where, "column 4 (image_id)"))
        if layout == LPR4M:
            frame_ids = parse_string_list(columns[1], where, "column 2 (frame ids)")
            boxes = _parse_boxes(columns[2], len(frame_ids), where) if self.read_boxes else None
            record = PairRecord(
                video_id, live_id_of(video_id), frame_ids, image_id,
                f"{self.images_dir}/{image_id}.jpg",
                title=columns[4], category=columns[6], asr=columns[7], boxes=boxes,
                breakdowns=dict(zip(BREAKDOWNS, (c.strip() for c in columns[8:11]), strict=True)),
                where=where,
            )
        else:
            record = PairRecord(
                video_id, live_id_of(video_id),
                parse_string_list(columns[1], where, "column 2 (frame paths)"), image_id,
                _required_field(columns[4], where, "column 5 (image path)"),
                title=columns[5], category=columns[7], asr=columns[9],
            )
        if self.layout is None:
            self.layout, self._first_line = layout, number
        return record

    def __getitem__(self, index):
        record = super().__getitem__(index)
        if self.layout == LPR4M:
            record.frames = [self._frame_path(frame_id) for frame_id in record.frames]
        return record

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


_JSON = json.JSONDecoder()


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


def parse_string_list(text, where, what):
    """A non-empty list of non-empty strings (stripped), JSON or Python literal.

    Fast path for the original's Python lists (``str(list)``, which json rejects and
    ``ast.literal_eval`` reads slowly): a text without ``"`` or backslashes holds no JSON
    string, and swapping its ``'`` for ``"`` gives JSON with the strings Python reads; any
    text that json does not read goes through ``parse_list``.
    """
    text = text.strip()
    swapped = text.replace("'", '"') if '"' not in text and "\\" not in text else text
    try:
        values = _JSON.decode(swapped)
    except (ValueError, RecursionError):
        values = parse_list(text, where, what)
    if not isinstance(values, list):
        raise DataError(f"{where}: {what} is a {type(values).__name__}, expected a list")
    if not values:
        raise DataError(f"{where}: {what} is empty")
    stripped = [v.strip() for v in values if isinstance(v, str)]
    if len(stripped) != len(values) or not all(stripped):
        raise DataError(f"{where}: {what} must hold non-empty strings")
    return stripped


def _parse_boxes(text, num_frames, where):
    """Column 3: per frame, float [n, 5] box rows (``mmf.datasets.boxes.parse_box_column``),
    inverted boxes rejected here; the frame-size checks wait for the stored frame."""
    per_frame = parse_box_column(text, num_frames, where)
    for index, rows in enumerate(per_frame):
        check_boxes(rows, None, None, f"{where}: column 3, frame {index}")
    return per_frame


@dataclasses.dataclass
class QueryRecord:
    """A test clip; ``frames`` are relative to the query image root; ``breakdowns`` the
    LPR4M columns 9-11 when the json entry carries them (keys ``scale``, ``duration``,
    ``products``)."""

    video_id: str
    live_id: str
    frames: list
    gt: list
    category: str = None
    breakdowns: dict = None


class _RepeatedKeys(Exception):
    pass


def _unique_keys(pairs):
    """``object_pairs_hook`` of ``read_json``: a json object may not repeat a key (json.load
    would keep the last value silently)."""
    data = dict(pairs)
    if len(data) != len(pairs):
        raise _RepeatedKeys(_repeated(key for key, _ in pairs))
    return data


def _repeated(values):
    """The values that occur more than once, in first-occurrence order."""
    return [value for value, count in collections.Counter(values).items() if count > 1]


def read_json(path):
    """The parsed json file; ``DataError`` if it is missing, malformed or repeats a key."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle, object_pairs_hook=_unique_keys)
    except FileNotFoundError:
        raise DataError(f"annotation file not found: {path}") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    except _RepeatedKeys as err:
        keys = err.args[0]
        raise DataError(f"{path}: repeated keys {keys[:10]}{_more(keys, 10)}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err})") from None


def _more(values, shown):
    return f" and {len(values) - shown} more" if len(values) > shown else ""


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
                {name: str(entry[name]) for name in BREAKDOWNS if entry.get(name) is not None},
            )
        )
    repeated = _repeated(record.video_id for record in records)
    if repeated:
        raise DataError(
            f"{path}: {len(repeated)} query ids occur more than once (ids are file stems): "
            f"{repeated[:10]}{_more(repeated, 10)}"
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
    """``{key: [id, ...]}`` json (ground truth, per-livestream gallery) with normalized ids.

    ``DataError`` if it has no key, or two keys with one stem (``q1`` and ``q1.mp4``).
    """
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{id: [id, ...]}}")
    if not data:
        raise DataError(f"{path}: no entries (expected {{id: [id, ...]}})")
    repeated = _repeated(normalize_id(key) for key in data)
    if repeated:
        raise DataError(
            f"{path}: {len(repeated)} keys occur more than once (ids are file stems): "
            f"{repeated[:10]}{_more(repeated, 10)}"
        )
    return {
        normalize_id(key): _id_list(value, f"{path}: key {key!r}") for key, value in data.items()
    }


def gallery_differences(listed, grouped, shown=3):
    """How two ``{live_id: [image_id, ...]}`` maps differ (the per-livestream gallery json
    ``listed`` and the gallery list grouped by prefix ``grouped``): one phrase per kind of
    difference, naming up to ``shown`` livestreams or images; [] when they agree."""
    phrases = []
    for name, live_ids in (
        ("livestreams only in the json", [k for k in listed if k not in grouped]),
        ("livestreams only in the gallery list", [k for k in grouped if k not in listed]),
    ):
        if live_ids:
            phrases.append(f"{len(live_ids)} {name} {live_ids[:shown]}{_more(live_ids, shown)}")
    common = [k for k in listed if k in grouped]
    for name, first, second in (
        ("images only in the json", listed, grouped),
        ("images only in the gallery list", grouped, listed),
    ):
        images = []
        for live_id in common:
            other = set(second[live_id])
            images += [f"{live_id}/{image}" for image in first[live_id] if image not in other]
        if images:
            phrases.append(f"{len(images)} {name} {images[:shown]}{_more(images, shown)}")
    return phrases


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
