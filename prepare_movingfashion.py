"""Extract MovingFashion frames and write the annotation files the movingfashion builder reads.

Input (the SEAM release) under ``--data_root``: ``videos/*.mp4``, ``imgs/*.jpg``, ``train.json``
(``{key: {"img_path", "source", "video_paths": [...]}}``, one entry per shop image) and
``test.json`` (``{key: {"img_path", "source", "video_paths": [one video]}}``, one entry per
(video, product)). Paths in the json files are relative to ``--data_root``.

Steps:
1. Decode every video referenced by train.json / test.json with PyAV (no ffmpeg binary) into
   ``frames/<stem>/<stem>_0001.png, ...``: the frames ``ffmpeg -vf fps=<fps>`` keeps (the
   original's command, run through libavfilter's ``fps`` filter), stored losslessly as PNG like
   the original, or as JPEG (quality 95, about a quarter of the size) with
   ``--frame_format jpg``. A finished folder holds ``.done`` (``{"frames", "fps", "format",
   "source": {"size", "mtime_ns"}}``) and is skipped on the next run while all of these match;
   an unfinished folder, or one extracted at another fps, in another format or from a video
   file since replaced, is decoded again from scratch, so the script can be interrupted and
   rerun. Videos run in ``--workers`` processes.
2. Write ``annotations/`` (atomically):
   - ``training_videoinfo_full.txt``: ``video_id \\t JSON frame paths \\t image_id \\t image path
     \\t source``, one line per distinct (shop image, video) pair with frames.
   - ``query_tenframes.json``: ``{video_id: {"frames": [...], "gt": [image_id, ...]}}``.
   - ``video_to_gt.json``: ``{video_id: {"gt": [image_id, ...], "source": [source, ...]}}``.
     A test video showing two products keeps both (the original kept only the last).
   - ``gallery_full.txt``: every distinct test shop image path whose file exists, once, in
     test.json order. The gallery does not depend on which query videos decoded: a shop item
     stays in the shop when its video is broken (RICE/SGMN convention: gallery = all test shop
     images).
   Frame lists hold the original's choice of at most ``--num_frames`` frames: all of a video
   with that many or fewer, else ``np.linspace(0, n, num_frames, endpoint=False, dtype=int)``.
   video_id = video file stem, image_id = image file stem.
3. Report every video that could not be decoded, is not a video or is missing, and every
   missing shop image, in ``prepare_movingfashion_report.txt`` (``path \\t problem``) and on the
   console (the first 20), after a one-line summary.

Input errors (unreadable json, missing data root, two videos with one stem) print one line and
exit with status 1.

    python prepare_movingfashion.py --data_root data/movingfashion --workers 4
"""

import argparse
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import av
import numpy as np

from mmf.common.errors import DataError
from mmf.datasets.video_frames import NotAVideoError, sampled_frames
from mmf.utils.file_io import atomic_write

DONE_MARKER = ".done"
REPORT_NAME = "prepare_movingfashion_report.txt"
# PNG is lossless whatever the level; level 1 writes about four times faster than the default 6.
FRAME_FORMATS = {"png": {"compress_level": 1}, "jpg": {"quality": 95}}
CONSOLE_PROBLEMS = 20
PROBLEM_LABELS = {"failed": "failed", "missing": "missing", "not_video": "not a video"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data_root",
        required=True,
        help="MovingFashion root (videos/, imgs/, train.json, test.json)",
    )
    parser.add_argument(
        "--fps", type=float, default=1.0, help="frames extracted per second of video"
    )
    parser.add_argument(
        "--num_frames", type=int, default=10, help="frames per clip in the annotation files"
    )
    parser.add_argument(
        "--frame_format",
        choices=sorted(FRAME_FORMATS),
        default="png",
        help="png: lossless, as the original (default); jpg: quality 95, about 4x smaller",
    )
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    args = parser.parse_args(argv)
    if args.fps <= 0 or args.num_frames <= 0:
        parser.error("--fps and --num_frames must be positive")
    return args


def _check_entry(path, key, entry):
    """Raises DataError unless ``entry`` has a string img_path and video path(s)."""
    if not isinstance(entry, dict) or "img_path" not in entry or "video_paths" not in entry:
        raise DataError(f"{path}: entry '{key}' needs 'img_path' and 'video_paths'")
    videos = entry["video_paths"]
    videos = [videos] if isinstance(videos, str) else videos
    if not isinstance(entry["img_path"], str) or not isinstance(videos, list):
        raise DataError(f"{path}: entry '{key}': 'img_path' must be a path, 'video_paths' a list")
    if not videos or not all(isinstance(video, str) and video for video in videos):
        raise DataError(f"{path}: entry '{key}': 'video_paths' must be non-empty paths")


def load_split(path):
    """Reads train.json / test.json -> list of (key, img_path, source, [video paths])."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except FileNotFoundError as error:
        raise DataError(f"{path} does not exist") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(entries, dict):
        raise DataError(
            f"{path}: expected an object keyed by product, got {type(entries).__name__}"
        )
    rows = []
    for key, entry in entries.items():
        _check_entry(path, key, entry)
        videos = entry["video_paths"]
        videos = [videos] if isinstance(videos, str) else list(videos)
        rows.append((key, entry["img_path"], str(entry.get("source", "")), videos))
    return rows


def stem_of(path):
    return os.path.splitext(os.path.basename(path))[0]


def resolve(data_root, path):
    """A json path -> the file: relative to data_root, else videos/ or imgs/ by basename."""
    candidate = Path(path) if os.path.isabs(path) else data_root / path
    if candidate.exists():
        return candidate
    for folder in ("videos", "imgs"):
        fallback = data_root / folder / os.path.basename(path)
        if fallback.exists():
            return fallback
    return candidate


def source_signature(source):
    """Size and mtime of a video file: a replaced video gets a new signature."""
    stat = os.stat(source)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _marker_of(frame_dir):
    """The ``.done`` marker of a frame folder as a dict, or None when absent or unreadable."""
    try:
        marker = json.loads((frame_dir / DONE_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def write_frames(source, frame_dir, fps, frame_format):
    """Decodes ``source`` into ``frame_dir/<stem>_0001.<format>, ...``; returns the count."""
    written = 0
    with av.open(str(source)) as container:
        for frame in sampled_frames(container, fps):
            written += 1
            path = frame_dir / f"{frame_dir.name}_{written:04d}.{frame_format}"
            frame.to_image().save(path, **FRAME_FORMATS[frame_format])
    if written == 0:
        raise ValueError("no decodable frame")
    return written


def decode_video(job):
    """Extracts one video's frames unless its marker matches. Returns (stem, status, error).

    status: ``decoded``, ``skipped`` (the ``.done`` marker records the same fps, format and
    source size / mtime), ``missing``, ``not_video`` or ``failed``.
    """
    source, frame_dir, fps, frame_format = job
    frame_dir = Path(frame_dir)
    stem = frame_dir.name
    if not Path(source).is_file():
        return stem, "missing", "video file not found"
    wanted = {"fps": fps, "format": frame_format, "source": source_signature(source)}
    marker = _marker_of(frame_dir)
    if marker is not None and {key: marker.get(key) for key in wanted} == wanted:
        return stem, "skipped", None
    if frame_dir.exists():
        shutil.rmtree(frame_dir)
    frame_dir.mkdir(parents=True)
    try:
        written = write_frames(source, frame_dir, fps, frame_format)
    except (av.FFmpegError, ValueError, OSError) as error:
        shutil.rmtree(frame_dir, ignore_errors=True)
        status = "not_video" if isinstance(error, NotAVideoError) else "failed"
        text = str(error) if status == "not_video" else f"{type(error).__name__}: {error}"
        return stem, status, text.replace("\t", " ").replace("\n", " ")
    _write_text(frame_dir / DONE_MARKER, json.dumps({"frames": written, **wanted}) + "\n")
    return stem, "decoded", None


def extract_frames(jobs, workers):
    """Runs ``decode_video`` on all jobs; returns {stem: (status, error)}."""
    if workers <= 1 or len(jobs) <= 1:
        results = [decode_video(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(pool.imap_unordered(decode_video, jobs))
    return {stem: (status, error) for stem, status, error in results}


def frame_indices(count, num_frames):
    """The frames of ``count`` kept for a clip, as the original chose them.

    More than ``num_frames``: ``np.linspace(0, count, num_frames, endpoint=False, dtype=int)``
    (``floor(i * count / num_frames)``); otherwise all of them.
    """
    if count <= num_frames:
        return list(range(count))
    return np.linspace(0, count, num_frames, endpoint=False, dtype=int).tolist()


def sample_frames(frame_dir, data_root, num_frames, frame_format):
    """Frame paths relative to data_root, at most num_frames (``frame_indices``)."""
    names = sorted(p.name for p in frame_dir.iterdir() if p.suffix == f".{frame_format}")
    names = [names[i] for i in frame_indices(len(names), num_frames)]
    return [(frame_dir / name).relative_to(data_root).as_posix() for name in names]


def _write_text(path, text):
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def collect_videos(data_root, train, test):
    """{video stem: resolved path} of every video the splits name; a stem must name one file."""
    videos = {}
    for split_name, rows in (("train.json", train), ("test.json", test)):
        for key, _, _, video_paths in rows:
            for video_path in video_paths:
                stem = stem_of(video_path)
                source = resolve(data_root, video_path)
                if stem in videos and videos[stem] != source:
                    raise DataError(
                        f"{split_name}: entry '{key}' names video {video_path}, "
                        f"whose stem '{stem}' is also used by {videos[stem]}"
                    )
                videos[stem] = source
    return videos


def train_lines_of(train, frames):
    """One ``training_videoinfo_full.txt`` line per distinct (shop image, video with frames)."""
    lines, seen_pairs = [], set()
    for _, img_path, source, video_paths in train:
        image_id = stem_of(img_path)
        for video_path in video_paths:
            stem = stem_of(video_path)
            if stem not in frames or (image_id, stem) in seen_pairs:
                continue
            seen_pairs.add((image_id, stem))
            lines.append("\t".join([stem, json.dumps(frames[stem]), image_id, img_path, source]))
    return lines


def gallery_and_queries(data_root, test, frames):
    """(video_to_gt, gallery, missing_images) of test.json.

    video_to_gt: {stem: {"gt": [image_id], "source": [source]}} of the videos with frames;
    gallery / missing_images: the distinct shop image paths that exist / do not, in order.
    """
    video_to_gt, gallery, missing_images = {}, [], []
    for _, img_path, source, video_paths in test:
        if img_path not in gallery and img_path not in missing_images:
            (gallery if resolve(data_root, img_path).exists() else missing_images).append(img_path)
        image_id = stem_of(img_path)
        for video_path in video_paths:
            stem = stem_of(video_path)
            if stem not in frames:
                continue
            entry = video_to_gt.setdefault(stem, {"gt": [], "source": []})
            if image_id not in entry["gt"]:
                entry["gt"].append(image_id)
                entry["source"].append(source)
    return video_to_gt, gallery, missing_images


def video_problems(videos, results):
    """(path, problem) of every video that gave no frames, in stem order."""
    return [
        (str(videos[stem]), f"{PROBLEM_LABELS[status]}: {error}")
        for stem, (status, error) in sorted(results.items())
        if status in PROBLEM_LABELS
    ]


def problem_lines(problems, report):
    """Console lines naming the first ``CONSOLE_PROBLEMS`` problems, then how many more."""
    lines = [f"  {path}: {problem}" for path, problem in problems[:CONSOLE_PROBLEMS]]
    if len(problems) > CONSOLE_PROBLEMS:
        lines.append(f"  and {len(problems) - CONSOLE_PROBLEMS} more (all in {report})")
    return lines


def write_annotations(annotations, train_lines, queries, video_to_gt, gallery):
    annotations.mkdir(parents=True, exist_ok=True)
    _write_text(
        annotations / "training_videoinfo_full.txt", "".join(line + "\n" for line in train_lines)
    )
    _write_text(annotations / "query_tenframes.json", json.dumps(queries, indent=1) + "\n")
    _write_text(annotations / "video_to_gt.json", json.dumps(video_to_gt, indent=1) + "\n")
    _write_text(annotations / "gallery_full.txt", "".join(path + "\n" for path in gallery))


def prepare(args):
    data_root = Path(args.data_root)
    if not data_root.is_dir():
        raise DataError(f"--data_root {data_root} is not a directory")
    train = load_split(data_root / "train.json")
    test = load_split(data_root / "test.json")
    videos = collect_videos(data_root, train, test)

    frame_root = data_root / "frames"
    jobs = [
        (str(source), str(frame_root / stem), args.fps, args.frame_format)
        for stem, source in sorted(videos.items())
    ]
    results = extract_frames(jobs, args.workers)
    frames = {
        stem: sample_frames(frame_root / stem, data_root, args.num_frames, args.frame_format)
        for stem, (status, _) in results.items()
        if status in ("decoded", "skipped")
    }
    problems = video_problems(videos, results)

    train_lines = train_lines_of(train, frames)
    video_to_gt, gallery, missing_images = gallery_and_queries(data_root, test, frames)
    problems.extend((path, "missing: shop image not found") for path in missing_images)
    queries = {
        stem: {"frames": frames[stem], "gt": list(entry["gt"])}
        for stem, entry in video_to_gt.items()
    }
    write_annotations(data_root / "annotations", train_lines, queries, video_to_gt, gallery)
    report = data_root / REPORT_NAME
    _write_text(report, "".join(f"{path}\t{problem}\n" for path, problem in problems))

    counts = {
        status: sum(1 for s, _ in results.values() if s == status)
        for status in ("decoded", "skipped", "failed", "missing", "not_video")
    }
    print(
        f"prepare_movingfashion: {len(videos)} videos ({counts['decoded']} decoded, "
        f"{counts['skipped']} already done, {counts['failed']} failed, "
        f"{counts['missing']} missing, {counts['not_video']} not videos), "
        f"{len(train_lines)} train pairs, {len(queries)} test queries, {len(gallery)} gallery "
        f"images, {len(missing_images)} missing shop images; report {report}"
    )
    if problems:
        print(f"prepare_movingfashion: {len(problems)} problems:")
        print("\n".join(problem_lines(problems, report)))
    return {
        "counts": counts,
        "problems": problems,
        "train_lines": len(train_lines),
        "queries": len(queries),
        "gallery": len(gallery),
    }


def main(argv=None):
    """Returns the exit status: 0, or 1 after one line naming a bad input."""
    args = parse_args(argv)
    try:
        prepare(args)
    except DataError as error:
        print(f"prepare_movingfashion: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
