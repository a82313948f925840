"""Convert img2dataset output of the LPR4M URL lists into the LPR4M on-disk layout.

img2dataset names samples by a running key (``00000/000000001.jpg``); the LPR4M ids survive
only in the ``url`` field of each sample's metadata. This script maps every downloaded sample
back through its URL (see ``mmf/datasets/lpr4m_urls.py``) and writes, under ``--data_dir``:

    train frames   training_frames/<clip_id>/<frame_id>.jpg
    train images   training_images/<image_id>.jpg
    test frames    query/<clip_id>/<frame_id>.jpg
    test images    gallery/<live_id>/<image_id>.jpg   (live id from test_liveid_to_gallery_*.json)

Both img2dataset output formats are read: ``files`` (shard folders with ``<key>.jpg`` +
``<key>.json``) and ``webdataset`` (``<shard>.tar``). The per-shard parquet files list every
sample, downloaded or not, and give the failure counts; samples whose ``status`` is not
``success`` are counted by error message. Clips keep the frames that were downloaded; clips with
no frame at all are listed in the report. Existing destination files are kept, so a rerun (for
example after ``img2dataset --incremental_mode incremental`` finished more shards) only adds
what is new.

With ``--split test`` it also writes ``annotations/query_tenframes.json`` (``--num_frames``
evenly spaced frames per clip among those on disk, ``linspace(0, n-1, num_frames)``, gt from
``annotations/test_videoid_to_gtimage_*.json`` when present) and ``annotations/gallery_main.txt``
from the files on disk. With ``--train_annotation FILE`` (LPR4M 11-column train file) it writes
``annotations/<stem>_available.txt``: the same lines restricted to the frames on disk (frame and
box lists filtered together), dropping clips with none.

Frame sizes: ``annotations/frame_sizes_<split>.json``, ``{frame_id: {"width", "height",
"original_width", "original_height"}}`` from img2dataset's sample json (the stored size, and
the size before its resize when the json has it; entries of earlier runs are kept). Boxes are
annotated on the original frames: the ``videotoshop`` dataset scales the pixel boxes of the
frames listed there to the stored size (``dataset_config.videotoshop.frame_sizes_file``,
docs/config.md "Boxes"). The report's ``frame_sizes`` gives the file, its frame count, how
many were resized and the frames of this run whose json had no size.

Report: ``--report`` (default ``<data_dir>/img2dataset_report_<split>.json``).

    python scripts/img2dataset_to_lpr4m.py --input dl/test_frames --input dl/test_images \\
        --data_dir lpr4m --split test
"""

import argparse
import glob
import json
import os
import sys
import tarfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow
import pyarrow.parquet as pq

from mmf.common.errors import DataError
from mmf.datasets.boxes import FrameSize, read_frame_sizes
from mmf.datasets.lpr4m_urls import is_frame_url, is_image_url, parse_frame_url, parse_image_url
from mmf.utils.file_io import atomic_write

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
FRAME_DIRS = {"train": "training_frames", "test": "query"}
IMAGE_DIRS = {"train": "training_images", "test": "gallery"}
COUNT_KEYS = ("samples", "success", "failed", "written", "already_present")
STORED_SIZE = ("width", "height")
ORIGINAL_SIZE = ("original_width", "original_height")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--input", action="append", required=True, help="img2dataset output folder (repeatable)"
    )
    parser.add_argument("--data_dir", required=True, help="LPR4M data_dir to write into")
    parser.add_argument("--split", choices=("train", "test"), required=True)
    parser.add_argument(
        "--liveid_to_gallery",
        help="test_liveid_to_gallery_*.json (default: found in data_dir/annotations)",
    )
    parser.add_argument(
        "--train_annotation",
        action="append",
        default=[],
        help="LPR4M 11-column train file to restrict to the frames on disk (repeatable)",
    )
    parser.add_argument(
        "--num_frames", type=int, default=10, help="frames per clip in query_tenframes.json"
    )
    parser.add_argument(
        "--report", help="report json (default: <data_dir>/img2dataset_report_<split>.json)"
    )
    return parser.parse_args(argv)


def _find_one(pattern):
    matches = sorted(glob.glob(pattern))
    if len(matches) > 1:
        raise DataError(f"several files match {pattern}: {matches}; pass the one to use explicitly")
    return matches[0] if matches else None


def load_image_to_live(path):
    """test_liveid_to_gallery json -> {image_id: live_id}."""
    with open(path, encoding="utf-8") as handle:
        live_to_images = json.load(handle)
    if not isinstance(live_to_images, dict):
        raise DataError(f"{path}: expected a {{live_id: [image_id, ...]}} object")
    mapping = {}
    for live_id, image_ids in live_to_images.items():
        for image_id in image_ids:
            mapping[os.path.splitext(image_id)[0]] = live_id
    return mapping


def read_statuses(input_dir):
    """All rows of the shard parquet files: list of (url, status, error_message)."""
    paths = sorted(Path(input_dir).glob("*.parquet"))
    if not paths:
        return None
    rows = []
    for path in paths:
        try:
            table = pq.read_table(path, columns=["url", "status", "error_message"]).to_pydict()
        except (pyarrow.ArrowException, OSError) as error:
            raise DataError(
                f"{path}: unreadable img2dataset shard parquet ({error}); rerun img2dataset"
            ) from error
        rows.extend(
            zip(
                (url or "" for url in table["url"]),
                table["status"],
                table["error_message"],
                strict=True,
            )
        )
    return rows


def iter_downloaded(input_dir):
    """Yields (metadata dict, image extension, image bytes) of every downloaded sample."""
    root = Path(input_dir)
    for tar_path in sorted(root.glob("*.tar")):
        pending = defaultdict(dict)
        with tarfile.open(tar_path) as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                pending[key]["." + ext] = archive.extractfile(member).read()
                sample = pending[key]
                image_ext = next((e for e in IMAGE_EXTENSIONS if e in sample), None)
                if ".json" in sample and image_ext:
                    yield json.loads(sample[".json"]), image_ext, sample[image_ext]
                    del pending[key]
    for shard in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")):
        for meta_path in sorted(shard.glob("*.json")):
            image_path = next(
                (
                    meta_path.with_suffix(e)
                    for e in IMAGE_EXTENSIONS
                    if meta_path.with_suffix(e).exists()
                ),
                None,
            )
            if image_path is None:
                continue
            with open(meta_path, encoding="utf-8") as handle:
                meta = json.load(handle)
            yield meta, image_path.suffix, image_path.read_bytes()


def _write_if_new(path, data):
    if path.exists() and path.stat().st_size == len(data):
        return False
    atomic_write(path, lambda handle: handle.write(data))
    return True


def _disk_frames(frame_root, clip_id):
    clip_dir = frame_root / clip_id
    if not clip_dir.is_dir():
        return []
    return sorted(p.name for p in clip_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


@dataclass
class Tally:
    """What a conversion saw: sample counts, failures by error message, per clip the number of
    [downloaded, failed] frames (insertion order), the urls that could not be placed, by
    reason ("unrecognized": not an LPR4M url, "unassigned": a test image of no livestream),
    the ``FrameSize`` of each downloaded frame by frame id and the frames whose json gave
    no size."""

    counts: Counter = field(default_factory=lambda: Counter({key: 0 for key in COUNT_KEYS}))
    errors: Counter = field(default_factory=Counter)
    frames_seen: dict = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    skipped: dict = field(default_factory=lambda: {"unrecognized": [], "unassigned": []})
    frame_sizes: dict = field(default_factory=dict)
    frames_without_size: int = 0

    def add_sample(self, url, ok, error=None):
        """Counts one listed sample; ``error`` is its failure message when not ``ok``."""
        self.counts["samples"] += 1
        self.counts["success" if ok else "failed"] += 1
        if not ok:
            self.errors[error] += 1
        if is_frame_url(url):
            self.frames_seen[parse_frame_url(url).clip_id][0 if ok else 1] += 1

    def add_frame_size(self, url, meta):
        """Keeps the size entry of a downloaded frame (``url``, its sample json ``meta``)."""
        size = frame_size_of(meta)
        if size is None:
            self.frames_without_size += 1
        else:
            self.frame_sizes[parse_frame_url(url).frame_id] = size


def _positive_ints(meta, keys):
    values = [meta.get(key) for key in keys]
    return all(type(v) is int and v > 0 for v in values)


def frame_size_of(meta):
    """The ``FrameSize`` in img2dataset's sample json ``meta`` (``width``, ``height`` and, when
    the json has them, ``original_width``, ``original_height``), or None without a size."""
    if not _positive_ints(meta, STORED_SIZE):
        return None
    keys = STORED_SIZE + ORIGINAL_SIZE if _positive_ints(meta, ORIGINAL_SIZE) else STORED_SIZE
    return FrameSize(*(meta[key] for key in keys))


@dataclass
class Layout:
    """Where the downloaded samples of one split go under ``data_dir``."""

    split: str
    frame_root: Path
    image_root: Path
    image_to_live: dict

    def destination(self, url, ext):
        """(file the sample goes to, None), or (None, "unrecognized" | "unassigned")."""
        if is_frame_url(url):
            ref = parse_frame_url(url)
            return self.frame_root / ref.clip_id / f"{ref.frame_id}{ext}", None
        if not is_image_url(url):
            return None, "unrecognized"
        image_id = parse_image_url(url)
        if self.split == "train":
            return self.image_root / f"{image_id}{ext}", None
        if image_id in self.image_to_live:
            return self.image_root / self.image_to_live[image_id] / f"{image_id}{ext}", None
        return None, "unassigned"


def layout_of(args):
    """The Layout of ``--split``; test images need the live id of ``test_liveid_to_gallery``."""
    data_dir = Path(args.data_dir)
    image_to_live = {}
    if args.split == "test":
        mapping_path = args.liveid_to_gallery or _find_one(
            str(data_dir / "annotations" / "test_liveid_to_gallery_*.json")
        )
        if mapping_path:
            image_to_live = load_image_to_live(mapping_path)
    return Layout(
        args.split,
        data_dir / FRAME_DIRS[args.split],
        data_dir / IMAGE_DIRS[args.split],
        image_to_live,
    )


def copy_input(input_dir, layout, tally):
    """Counts the samples of one img2dataset output and copies the downloaded ones into place."""
    if not Path(input_dir).is_dir():
        raise DataError(f"img2dataset output folder {input_dir} does not exist")
    statuses = read_statuses(input_dir)
    for url, status, error in statuses or ():
        ok = status == "success"
        tally.add_sample(url, ok, None if ok else str(error or status))
    for meta, ext, data in iter_downloaded(input_dir):
        url = meta.get("url") or ""
        if statuses is None:
            tally.add_sample(url, ok=True)
        destination, problem = layout.destination(url, ext)
        if destination is None:
            tally.skipped[problem].append(url)
            continue
        written = _write_if_new(destination, data)
        tally.counts["written" if written else "already_present"] += 1
        if is_frame_url(url):
            tally.add_frame_size(url, meta)


def build_report(args, tally, frame_root):
    """The report dict: counts, failures, clips without (or missing some) frames, skipped urls."""
    clips_without_frames = sorted(
        c for c, (ok, _) in tally.frames_seen.items() if ok == 0 and not _disk_frames(frame_root, c)
    )
    partial = {c: failed for c, (ok, failed) in tally.frames_seen.items() if ok and failed}
    return {
        "split": args.split,
        "inputs": [str(p) for p in args.input],
        "counts": dict(tally.counts),
        "clips": len(tally.frames_seen),
        "failed_by_error": dict(tally.errors.most_common()),
        "clips_without_frames": clips_without_frames,
        "clips_with_missing_frames": dict(sorted(partial.items())),
        "unrecognized_urls": tally.skipped["unrecognized"],
        "unassigned_images": tally.skipped["unassigned"],
    }


def convert(args):
    data_dir = Path(args.data_dir)
    layout = layout_of(args)
    tally = Tally()
    for input_dir in args.input:
        copy_input(input_dir, layout, tally)

    report = build_report(args, tally, layout.frame_root)
    report["frame_sizes"] = write_frame_sizes(data_dir, args.split, tally)
    if args.split == "test":
        report["index"] = write_test_index(data_dir, args.num_frames)
    if args.train_annotation:
        restricted = [
            restrict_train_annotation(Path(p), data_dir, layout.frame_root)
            for p in args.train_annotation
        ]
        dropped = {clip_id for result in restricted for clip_id in result.pop("dropped")}
        report["train_annotations"] = restricted
        report["clips_without_frames"] = sorted(set(report["clips_without_frames"]) | dropped)
    report_path = Path(args.report or data_dir / f"img2dataset_report_{args.split}.json")
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    counts = tally.counts
    print(
        f"img2dataset_to_lpr4m: {args.split}: {counts['samples']} samples, "
        f"{counts['success']} downloaded, {counts['failed']} failed, {counts['written']} written, "
        f"{counts['already_present']} already present, "
        f"{len(tally.frames_seen)} clips ({len(report['clips_without_frames'])} without frames), "
        f"{len(tally.skipped['unrecognized'])} unrecognized urls, "
        f"{len(tally.skipped['unassigned'])} images without a livestream, "
        f"sizes of {report['frame_sizes']['frames']} frames "
        f"({report['frame_sizes']['resized']} resized); report {report_path}"
    )
    return report


def write_frame_sizes(data_dir, split, tally):
    """Merges the frame sizes of this run into ``annotations/frame_sizes_<split>.json``
    (atomically; frames of earlier runs are kept) and returns the report's ``frame_sizes``."""
    path = data_dir / "annotations" / f"frame_sizes_{split}.json"
    sizes = read_frame_sizes(str(path)) if path.exists() else {}
    sizes.update(tally.frame_sizes)
    if tally.frame_sizes:
        entries = {
            frame_id: {key: value for key, value in size._asdict().items() if value is not None}
            for frame_id, size in sizes.items()
        }
        text = json.dumps(entries, sort_keys=True)
        atomic_write(path, lambda handle: handle.write(text), mode="w")
    return {
        "file": str(path) if sizes else None,
        "frames": len(sizes),
        "resized": sum(size.resized for size in sizes.values()),
        "frames_without_size": tally.frames_without_size,
    }


def write_test_index(data_dir, num_frames):
    """query_tenframes.json and gallery_main.txt from the test frames and images on disk."""
    annotations = data_dir / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    gt_path = _find_one(str(annotations / "test_videoid_to_gtimage_*.json"))
    gt = {}
    if gt_path:
        with open(gt_path, encoding="utf-8") as handle:
            gt = json.load(handle)
    query_root = data_dir / "query"
    queries = {}
    if query_root.is_dir():
        for clip_dir in sorted(p for p in query_root.iterdir() if p.is_dir()):
            frames = _disk_frames(query_root, clip_dir.name)
            if not frames:
                continue
            if len(frames) > num_frames:
                frames = [
                    frames[i] for i in np.linspace(0, len(frames) - 1, num_frames).astype(int)
                ]
            queries[clip_dir.name] = {
                "frames": [f"{clip_dir.name}/{name}" for name in frames],
                "gt": [os.path.splitext(g)[0] for g in gt.get(clip_dir.name, [])],
            }
    gallery_root = data_dir / "gallery"
    gallery = []
    if gallery_root.is_dir():
        for live_dir in sorted(p for p in gallery_root.iterdir() if p.is_dir()):
            gallery.extend(
                f"{live_dir.name}/{p.name}"
                for p in sorted(live_dir.iterdir())
                if p.suffix.lower() in IMAGE_EXTENSIONS
            )
    with open(annotations / "query_tenframes.json", "w", encoding="utf-8") as handle:
        json.dump(queries, handle, indent=1)
    with open(annotations / "gallery_main.txt", "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in gallery)
    missing_gt = sorted(set(gt) - set(queries))
    return {
        "queries": len(queries),
        "gallery_images": len(gallery),
        "gt_clips_without_frames": missing_gt,
    }


def restrict_train_annotation(path, data_dir, frame_root):
    """Writes annotations/<stem>_available.txt: lines restricted to the frames on disk."""
    kept, dropped = [], []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\n")
            if not line:
                continue
            columns = line.split("\t")
            if len(columns) < 3:
                raise DataError(
                    f"{path}:{line_number}: expected the LPR4M 11-column layout, "
                    f"got {len(columns)} columns"
                )
            try:
                frame_ids = json.loads(columns[1])
                boxes = json.loads(columns[2]) if columns[2] else [[] for _ in frame_ids]
            except json.JSONDecodeError as error:
                raise DataError(
                    f"{path}:{line_number}: column 2 or 3 is not JSON ({error})"
                ) from error
            clip_id = columns[0]
            on_disk = {os.path.splitext(name)[0] for name in _disk_frames(frame_root, clip_id)}
            keep = [i for i, frame_id in enumerate(frame_ids) if frame_id in on_disk]
            if not keep:
                dropped.append(clip_id)
                continue
            columns[1] = json.dumps([frame_ids[i] for i in keep])
            if len(boxes) == len(frame_ids):
                columns[2] = json.dumps([boxes[i] for i in keep])
            kept.append("\t".join(columns))
    destination = data_dir / "annotations" / f"{path.stem}_available.txt"
    destination.parent.mkdir(parents=True, exist_ok=True)
    with open(destination, "w", encoding="utf-8") as handle:
        handle.writelines(line + "\n" for line in kept)
    return {"written": str(destination), "clips_kept": len(kept), "dropped": dropped}


def main(argv=None):
    convert(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
