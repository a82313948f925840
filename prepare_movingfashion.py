"""Extract MovingFashion frames and write the annotation files the movingfashion builder reads.

Input (the SEAM release) under ``--data_root``: ``videos/*.mp4``, ``imgs/*.jpg``, ``train.json``
(``{key: {"img_path", "source", "video_paths": [...]}}``, one entry per shop image) and
``test.json`` (``{key: {"img_path", "source", "video_paths": [one video]}}``, one entry per
(video, product)). Paths in the json files are relative to ``--data_root``.

Steps:
1. Decode every video referenced by train.json / test.json with PyAV (no ffmpeg binary) at
   ``--fps`` frames per second (the first frame at or after each multiple of 1/fps) into
   ``frames/<stem>/<stem>_0001.jpg, ...`` and mark it finished with ``frames/<stem>/.done``
   (``{"frames": n, "fps": fps}``). Finished videos are skipped on the next run with the same
   ``--fps``; an unfinished folder (or one extracted at another fps) is decoded again from
   scratch, so the script can be interrupted and rerun. Videos run in ``--workers`` processes.
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
   Frame lists hold at most ``--num_frames`` frames chosen like the temporal processor does,
   ``linspace(0, n - 1, num_frames)`` cast to int. video_id = video file stem, image_id =
   image file stem.
3. Report every video that could not be decoded (or is missing) and every missing shop image in
   ``prepare_movingfashion_report.txt`` (``path \\t problem``), plus a one-line summary.

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

DONE_MARKER = ".done"
REPORT_NAME = "prepare_movingfashion_report.txt"
JPEG_QUALITY = 95


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data_root", required=True, help="MovingFashion root (videos/, imgs/, train.json, test.json)"
    )
    parser.add_argument("--fps", type=float, default=1.0, help="frames extracted per second of video")
    parser.add_argument("--num_frames", type=int, default=10, help="frames per clip in the annotation files")
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    args = parser.parse_args(argv)
    if args.fps <= 0 or args.num_frames <= 0:
        parser.error("--fps and --num_frames must be positive")
    return args


def load_split(path):
    """Reads train.json / test.json -> list of (key, img_path, source, [video paths])."""
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except FileNotFoundError as error:
        raise DataError(f"{path} does not exist") from error
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected an object keyed by product, got {type(entries).__name__}")
    rows = []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or "img_path" not in entry or "video_paths" not in entry:
            raise DataError(f"{path}: entry '{key}' needs 'img_path' and 'video_paths'")
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


def _finished_at(marker):
    """The fps recorded in a ``.done`` marker, or None when it is absent or unreadable."""
    try:
        return json.loads(marker.read_text()).get("fps")
    except (OSError, ValueError, AttributeError):
        return None


def decode_video(job):
    """Decodes one video to JPEG frames at ``fps``. Returns (stem, status, frames or error)."""
    source, frame_dir, fps = job
    frame_dir = Path(frame_dir)
    stem = frame_dir.name
    marker = frame_dir / DONE_MARKER
    if _finished_at(marker) == fps:
        return stem, "skipped", None
    if not Path(source).exists():
        return stem, "missing", "video file not found"
    if frame_dir.exists():
        shutil.rmtree(frame_dir)
    frame_dir.mkdir(parents=True)
    written = 0
    try:
        with av.open(str(source)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            first_time = None
            for index, frame in enumerate(container.decode(stream)):
                time = frame.time
                if time is None:
                    rate = float(stream.average_rate or 25)
                    time = index / rate
                if first_time is None:
                    first_time = time
                if time - first_time + 1e-6 >= written / fps:
                    written += 1
                    frame.to_image().save(frame_dir / f"{stem}_{written:04d}.jpg", quality=JPEG_QUALITY)
        if written == 0:
            raise ValueError("no decodable frame")
    except (av.FFmpegError, ValueError, OSError) as error:
        shutil.rmtree(frame_dir, ignore_errors=True)
        return stem, "failed", f"{type(error).__name__}: {error}".replace("\t", " ").replace("\n", " ")
    marker.write_text(json.dumps({"frames": written, "fps": fps}) + "\n")
    return stem, "decoded", None


def extract_frames(jobs, workers):
    """Runs ``decode_video`` on all jobs; returns {stem: (status, error)}."""
    if workers <= 1 or len(jobs) <= 1:
        results = [decode_video(job) for job in jobs]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            results = list(pool.imap_unordered(decode_video, jobs))
    return {stem: (status, error) for stem, status, error in results}


def sample_frames(frame_dir, data_root, num_frames):
    """Frame paths relative to data_root, at most num_frames, evenly spaced (first and last kept)."""
    names = sorted(p.name for p in frame_dir.iterdir() if p.suffix == ".jpg")
    if len(names) > num_frames:
        names = [names[i] for i in np.linspace(0, len(names) - 1, num_frames).astype(int)]
    return [(frame_dir / name).relative_to(data_root).as_posix() for name in names]


def _write_atomic(path, text):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def prepare(args):
    data_root = Path(args.data_root)
    train = load_split(data_root / "train.json")
    test = load_split(data_root / "test.json")

    videos = {}
    for split_name, rows in (("train.json", train), ("test.json", test)):
        for key, _, _, video_paths in rows:
            for video_path in video_paths:
                stem = stem_of(video_path)
                source = resolve(data_root, video_path)
                if stem in videos and videos[stem] != source:
                    raise DataError(
                        f"{split_name}: entry '{key}' names video {video_path}, whose stem '{stem}' "
                        f"is also used by {videos[stem]}"
                    )
                videos[stem] = source
    frame_root = data_root / "frames"
    jobs = [(str(source), str(frame_root / stem), args.fps) for stem, source in sorted(videos.items())]
    results = extract_frames(jobs, args.workers)
    frames = {
        stem: sample_frames(frame_root / stem, data_root, args.num_frames)
        for stem, (status, _) in results.items()
        if status in ("decoded", "skipped")
    }

    problems = [
        (str(videos[stem]), f"{status}: {error}")
        for stem, (status, error) in sorted(results.items())
        if status in ("failed", "missing")
    ]

    train_lines, seen_pairs = [], set()
    for _, img_path, source, video_paths in train:
        image_id = stem_of(img_path)
        for video_path in video_paths:
            stem = stem_of(video_path)
            if stem not in frames or (image_id, stem) in seen_pairs:
                continue
            seen_pairs.add((image_id, stem))
            train_lines.append("\t".join([stem, json.dumps(frames[stem]), image_id, img_path, source]))

    video_to_gt, gallery, missing_images = {}, [], []
    for _, img_path, source, video_paths in test:
        if img_path not in gallery and img_path not in missing_images:
            (gallery if resolve(data_root, img_path).exists() else missing_images).append(img_path)
        for video_path in video_paths:
            stem = stem_of(video_path)
            if stem not in frames:
                continue
            entry = video_to_gt.setdefault(stem, {"gt": [], "source": []})
            if stem_of(img_path) not in entry["gt"]:
                entry["gt"].append(stem_of(img_path))
                entry["source"].append(source)
    problems.extend((path, "missing: shop image not found") for path in missing_images)
    queries = {stem: {"frames": frames[stem], "gt": list(entry["gt"])} for stem, entry in video_to_gt.items()}

    annotations = data_root / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    _write_atomic(annotations / "training_videoinfo_full.txt", "".join(line + "\n" for line in train_lines))
    _write_atomic(annotations / "query_tenframes.json", json.dumps(queries, indent=1) + "\n")
    _write_atomic(annotations / "video_to_gt.json", json.dumps(video_to_gt, indent=1) + "\n")
    _write_atomic(annotations / "gallery_full.txt", "".join(path + "\n" for path in gallery))
    report = data_root / REPORT_NAME
    _write_atomic(report, "".join(f"{path}\t{problem}\n" for path, problem in problems))

    counts = {
        status: sum(1 for s, _ in results.values() if s == status)
        for status in ("decoded", "skipped", "failed", "missing")
    }
    print(
        f"prepare_movingfashion: {len(videos)} videos ({counts['decoded']} decoded, "
        f"{counts['skipped']} already done, {counts['failed']} failed, {counts['missing']} missing), "
        f"{len(train_lines)} train pairs, {len(queries)} test "
        f"queries, {len(gallery)} gallery images, {len(missing_images)} missing shop images; report {report}"
    )
    return {
        "counts": counts,
        "problems": problems,
        "train_lines": len(train_lines),
        "queries": len(queries),
        "gallery": len(gallery),
    }


def main(argv=None):
    prepare(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
