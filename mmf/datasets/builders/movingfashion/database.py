"""Readers of the MovingFashion annotation files written by ``prepare_movingfashion.py``.

- ``training_videoinfo_full.txt`` (train / val; tab-separated, 5 columns): ``[0]`` video_id,
  ``[1]`` JSON list of frame paths, ``[2]`` image_id, ``[3]`` image path, ``[4]`` source id.
  Paths are relative to the split's image root (``data_dir`` by default).
- ``query_tenframes.json``: ``{video_id: {"frames": [...], "gt": image_id or [ids]}}``.
- ``gallery_full.txt``: one image path per line; image_id = file stem.
- ``video_to_gt.json``: ``{video_id: {"gt": image_id or [ids], "source": ..., ...}}``, with an
  optional regular / hard label under ``difficulty`` (or ``type``, or ``source`` when it
  holds ``regular`` / ``hard``, alone or as a list with one label per product).

MovingFashion has one global gallery: every clip and image has ``live_id`` = ``GALLERY_ID``.
"""
import logging

from mmf.common.errors import DataError
from mmf.datasets.builders.videotoshop import database
from mmf.datasets.builders.videotoshop.database import PairRecord
from mmf.datasets.ids import normalize_id

logger = logging.getLogger(__name__)

GALLERY_ID = "movingfashion"
DIFFICULTIES = ("regular", "hard")
_DIFFICULTY_KEYS = ("difficulty", "type", "source")


class MovingFashionPairAnnotations(database.PairFile):
    """5-column pair file, validated at load (``database.PairFile``); ``records[i]`` is a
    ``PairRecord``."""

    def __init__(self, path, max_lines=None, skip_malformed=False):
        super().__init__(path, max_lines, skip_malformed)
        logger.info("%s: %d MovingFashion pairs", path, len(self.lines))

    def parse(self, text, number):
        where = f"{self.path}:{number}"
        columns = text.split("\t")
        if len(columns) < 5:
            raise DataError(
                f"{where}: expected 5 tab-separated columns (video_id, frame list, "
                f"image_id, image path, source), found {len(columns)}"
            )
        fields = [c.strip() for c in columns[:4]]
        for position, name in ((0, "video_id"), (2, "image_id"), (3, "image path")):
            if not fields[position]:
                raise DataError(f"{where}: column {position + 1} ({name}) is empty")
        frames = database.parse_string_list(columns[1], where, "column 2 (frame paths)")
        return PairRecord(
            normalize_id(fields[0]), GALLERY_ID, frames, normalize_id(fields[2]), fields[3],
        )


def read_queries(path):
    return database.read_query_json(path, live_id_fn=lambda video_id: GALLERY_ID)


def read_gallery(path):
    return database.read_gallery_txt(path, live_id=GALLERY_ID)


def read_video_to_gt(path):
    """``video_to_gt.json`` -> (``{video_id: [image_id, ...]}``,
    ``{video_id: "regular"|"hard"}``)."""
    data = database.read_json(path)
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected an object {{video_id: {{\"gt\": image_id}}}}")
    if not data:
        raise DataError(f"{path}: no entries (expected {{video_id: {{\"gt\": image_id}}}})")
    ground_truth, difficulty = {}, {}
    for video_id, entry in data.items():
        where = f"{path}: video {video_id!r}"
        if isinstance(entry, dict):
            if "gt" not in entry:
                raise DataError(f"{where}: no 'gt' key")
            gt = entry["gt"]
            labels = (_difficulty(entry.get(key)) for key in _DIFFICULTY_KEYS)
            label = next(filter(None, labels), None)
        else:
            gt, label = entry, None
        if isinstance(gt, str):
            gt = [gt]
        if not isinstance(gt, list) or not gt or not all(isinstance(g, str) for g in gt):
            raise DataError(f"{where}: 'gt' must be an image id or a non-empty list of ids")
        video_id = normalize_id(video_id)
        if video_id in ground_truth:
            raise DataError(f"{where}: a second entry for video {video_id!r} (ids are file stems)")
        ground_truth[video_id] = [normalize_id(g) for g in gt]
        if label is not None:
            difficulty[video_id] = label
    return ground_truth, difficulty


def _difficulty(value):
    """"regular" / "hard" from a label or a list of identical labels (one per product),
    else None."""
    if isinstance(value, list) and len(set(map(str, value))) == 1:
        value = value[0]
    return value if isinstance(value, str) and value in DIFFICULTIES else None
