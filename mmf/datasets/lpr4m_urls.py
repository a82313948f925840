"""Anatomy of LPR4M URLs and ids.

Frame URL: ``<prefix>/<live_id>-<start_ts>-<end_ts>-<frame_index>.jpg`` where ``live_id`` is a
UUID (5 dash-separated hex fields), ``<live_id>-<start_ts>-<end_ts>`` (millisecond timestamps)
is the clip id and ``<clip_id>-<frame_index>`` (4 digits) is the frame id.
Shop image URL: ``<prefix>/<image_id>.jpg`` where ``image_id`` is a UUID.

img2dataset keeps the original name only in the ``url`` field of its metadata, so these helpers
map a URL back to the LPR4M ids.
"""

import posixpath
import re
import urllib.parse
from typing import NamedTuple

from mmf.common.errors import DataError
from mmf.datasets.ids import live_id_of

UUID_PATTERN = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_CLIP_RE = re.compile(rf"^(?P<live_id>{UUID_PATTERN})-(?P<start_ts>\d+)-(?P<end_ts>\d+)$")
_FRAME_RE = re.compile(rf"^(?P<clip_id>{UUID_PATTERN}-\d+-\d+)-(?P<frame_index>\d+)$")
_IMAGE_RE = re.compile(rf"^{UUID_PATTERN}$")


class FrameRef(NamedTuple):
    """Ids of one livestream frame."""

    live_id: str
    clip_id: str
    frame_index: int
    frame_id: str


def url_stem(url):
    """File name of a URL (or plain path) without query, fragment and extension."""
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    name = posixpath.basename(path)
    stem, _ = posixpath.splitext(name)
    return stem


def parse_clip_id(clip_id):
    """``<live_id>-<start_ts>-<end_ts>`` -> (live_id, start_ts, end_ts)."""
    match = _CLIP_RE.match(clip_id)
    if not match:
        raise DataError(
            f"'{clip_id}' is not a clip id of the form <live_id uuid>-<start_ts>-<end_ts>"
        )
    return match.group("live_id"), int(match.group("start_ts")), int(match.group("end_ts"))


def parse_frame_id(frame_id):
    """``<clip_id>-<frame_index>`` -> FrameRef."""
    match = _FRAME_RE.match(frame_id)
    if not match:
        raise DataError(
            f"'{frame_id}' is not a frame id of the form <live_id>-<start_ts>-<end_ts>-<index>"
        )
    clip_id = match.group("clip_id")
    return FrameRef(live_id_of(clip_id), clip_id, int(match.group("frame_index")), frame_id)


def is_frame_url(url):
    return _FRAME_RE.match(url_stem(url)) is not None


def is_image_url(url):
    return _IMAGE_RE.match(url_stem(url)) is not None


def parse_frame_url(url):
    """Frame URL -> FrameRef(live_id, clip_id, frame_index, frame_id); DataError otherwise."""
    stem = url_stem(url)
    if _FRAME_RE.match(stem) is None:
        raise DataError(
            f"URL '{url}' is not an LPR4M frame URL "
            f"(<prefix>/<live_id>-<start_ts>-<end_ts>-<index>.jpg)"
        )
    return parse_frame_id(stem)


def parse_image_url(url):
    """Shop image URL -> image_id (the UUID file stem); DataError otherwise."""
    stem = url_stem(url)
    if _IMAGE_RE.match(stem) is None:
        raise DataError(f"URL '{url}' is not an LPR4M shop image URL (<prefix>/<image uuid>.jpg)")
    return stem
