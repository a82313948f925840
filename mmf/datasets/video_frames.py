"""Frames of a video file at a fixed rate, as ``ffmpeg -i <video> -vf fps=<fps>`` writes them.

PyAV runs libavfilter's own ``fps`` filter, so the frames are those the original's
``ffmpeg -vf fps=1`` command extracted for training (``prepare_movingfashion.py``) without an
ffmpeg binary. ``read_video_frames`` returns them as PIL images (``mmf.predict``).
"""
from fractions import Fraction

import av

from mmf.common.errors import DataError


class NotAVideoError(ValueError):
    """A file named like a video that holds an image (a JPEG renamed ``.mp4``)."""


def _drain(graph):
    """The frames a filter graph has ready."""
    frames = []
    while True:
        try:
            frames.append(graph.pull())
        except (av.BlockingIOError, av.EOFError):
            return frames


def _open_video_stream(container):
    """The first video stream; an image renamed to a video name is ``NotAVideoError``."""
    name = container.format.name
    if name == "image2" or name.endswith("_pipe"):
        raise NotAVideoError(f"the file is an image ({container.format.long_name})")
    if not container.streams.video:
        raise ValueError("no video stream")
    return container.streams.video[0]


def sampled_frames(container, fps):
    """Yields the frames ``ffmpeg -i <video> -vf fps=<fps>`` writes, as the original did.

    PyAV runs libavfilter's own ``fps`` filter (rounding to the nearest output tick, so at
    1 fps it keeps the last frame before 0.5 s, 1.5 s, ...); timestamps start at the file's
    start time as in the ffmpeg command line.
    """
    stream = _open_video_stream(container)
    graph = av.filter.Graph()
    buffer = graph.add_buffer(template=stream)
    fps_filter = graph.add("fps", str(Fraction(fps).limit_denominator(1_000_000)))
    sink = graph.add("buffersink")
    buffer.link_to(fps_filter)
    fps_filter.link_to(sink)
    graph.configure()
    time_base = stream.time_base
    offset = round((container.start_time or 0) / av.time_base / time_base)
    rate = float(stream.average_rate or 25)
    for index, frame in enumerate(container.decode(stream)):
        pts = frame.pts if frame.pts is not None else round(index / rate / time_base)
        frame.pts = pts - offset
        graph.push(frame)
        yield from _drain(graph)
    graph.push(None)
    yield from _drain(graph)


def read_video_frames(path, fps=1):
    """The frames of the video at ``path`` that ``sampled_frames`` keeps, as RGB PIL images.

    Raises ``DataError`` naming the file when it cannot be decoded or has no frame."""
    try:
        with av.open(str(path)) as container:
            frames = [frame.to_image().convert("RGB") for frame in sampled_frames(container, fps)]
    except (av.FFmpegError, ValueError, OSError) as error:
        raise DataError(f"cannot decode video {path}: {error}") from None
    if not frames:
        raise DataError(f"cannot decode video {path}: no frame")
    return frames
