"""Pack LPR training pairs into clip-level WebDataset shards (``videotoshop.shards``).

Reads a train annotation file of either layout (LPR4M 11 columns, LPR750K 10 columns) through
the dataset's own reader, and takes the frames and shop images either from the image root
(``--data_dir``, the files layout) or straight from img2dataset output folders
(``--img2dataset``, repeatable: the frame and the image downloads, ``files`` or ``webdataset``
format; files are found through the ``url`` of their metadata, see
``mmf/datasets/lpr4m_urls.py``). The img2dataset index is held in memory: for the full 473M
frames convert with ``scripts/img2dataset_to_lpr4m.py`` first, or pack one annotation part
at a time.

Shard ``k`` holds annotation pairs ``[k*S, (k+1)*S)`` (``S = --samples_per_shard``): the stored
frame and image bytes (not re-encoded) and a json with ids, boxes, title, ASR and category;
the format is in ``mmf/datasets/builders/videotoshop/shards.py``. A pair with a missing frame or
image is not packed; every such pair is named in ``<out>/pack_report.json`` and on the console.

Resumable: the tar and then its ``.json`` index are written atomically, and a shard whose
index exists is kept; a shard interrupted mid-write is packed again.

    python scripts/pack_shards.py --annotation annotations/training_videoinfo_750k.txt \\
        --data_dir $MMF_DATA_DIR/lpr4m --out $MMF_DATA_DIR/lpr4m/shards --workers 8
    # then: dataset_config.videotoshop.shards=shards/lpr-{000000..000640}.tar
"""
import argparse
import glob
import io
import json
import logging
import multiprocessing
import os
import sys
import tarfile

from mmf.common.errors import DataError, MMFError
from mmf.datasets.builders.videotoshop.database import LPR4M, LPRPairAnnotations
from mmf.datasets.builders.videotoshop.images import UnreadableImageError
from mmf.datasets.builders.videotoshop.shards import sidecar_path
from mmf.datasets.ids import IMAGE_EXTENSIONS, normalize_id
from mmf.datasets.lpr4m_urls import url_stem
from mmf.utils.file_io import atomic_write, temporary_name_prefix

REPORT_NAME = "pack_report.json"
SHOWN_PROBLEMS = 20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--annotation", required=True, help="train pair file (either layout)")
    parser.add_argument("--out", required=True, help="folder of the shards")
    parser.add_argument("--data_dir", default="", help="image root of the files layout")
    parser.add_argument(
        "--img2dataset", action="append", default=[], help="img2dataset output folder (repeatable)"
    )
    parser.add_argument("--train_frames_dir", default="training_frames")
    parser.add_argument("--train_images_dir", default="training_images")
    parser.add_argument("--samples_per_shard", type=int, default=1000)
    parser.add_argument("--prefix", default="lpr", help="shard names: <prefix>-NNNNNN.tar")
    parser.add_argument("--workers", type=int, default=1, help="shards packed in parallel")
    args = parser.parse_args(argv)
    if args.samples_per_shard < 1 or args.workers < 1:
        parser.error("--samples_per_shard and --workers must be >= 1")
    return args


class FileSource:
    """Stored bytes of ``<root>/<relative path>``; like ``load_rgb``, the other image
    extensions are tried on the same stem only when the exact file does not exist."""

    def __init__(self, root):
        self.root = root

    def read(self, relative):
        """``(bytes, extension)``; ``UnreadableImageError`` when absent."""
        path = os.path.join(self.root, relative)
        stem = os.path.splitext(path)[0]
        for candidate in (path, *(stem + ext for ext in IMAGE_EXTENSIONS)):
            if os.path.isfile(candidate):
                with open(candidate, "rb") as handle:
                    return handle.read(), os.path.splitext(candidate)[1].lower()
        raise UnreadableImageError(f"image file not found: {path}")


class Img2DatasetSource:
    """Stored bytes of the img2dataset samples, found by the file stem of their ``url``
    (the LPR4M frame id or image id)."""

    def __init__(self, folders):
        self.where = {}
        self._archive = (None, None)
        for folder in folders:
            if not os.path.isdir(folder):
                raise DataError(f"img2dataset output folder {folder} does not exist")
            for tar_path in sorted(glob.glob(os.path.join(folder, "*.tar"))):
                self._index_tar(tar_path)
            for meta_path in sorted(glob.glob(os.path.join(folder, "*", "*.json"))):
                self._index_file(meta_path)

    def _index_tar(self, tar_path):
        urls, images = {}, {}
        with tarfile.open(tar_path) as archive:
            for member in archive:
                key, _, ext = member.name.partition(".")
                if ext == "json":
                    urls[key] = json.load(archive.extractfile(member)).get("url") or ""
                elif "." + ext.lower() in IMAGE_EXTENSIONS:
                    images[key] = member.name
        for key, name in images.items():
            if key in urls:
                self.where[url_stem(urls[key])] = (tar_path, name)

    def _index_file(self, meta_path):
        stem = os.path.splitext(meta_path)[0]
        image = next((stem + e for e in IMAGE_EXTENSIONS if os.path.isfile(stem + e)), None)
        if image is not None:
            with open(meta_path, encoding="utf-8") as handle:
                self.where[url_stem(json.load(handle).get("url") or "")] = (None, image)

    def read(self, relative):
        location = self.where.get(normalize_id(os.path.basename(relative)))
        if location is None:
            raise UnreadableImageError(f"not in the img2dataset output: {relative}")
        tar_path, name = location
        extension = os.path.splitext(name)[1].lower()
        if tar_path is None:
            with open(name, "rb") as handle:
                return handle.read(), extension
        if self._archive[0] != tar_path:
            if self._archive[1] is not None:
                self._archive[1].close()
            self._archive = (tar_path, tarfile.open(tar_path))
        return self._archive[1].extractfile(name).read(), extension


def _add_member(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o444
    archive.addfile(info, io.BytesIO(data))


class Packer:
    """Writes shard ``k`` of the annotation (see the module docstring)."""

    def __init__(self, args, annotations, source):
        self.args, self.annotations, self.source = args, annotations, source

    def shard_path(self, shard):
        return os.path.join(self.args.out, f"{self.args.prefix}-{shard:06d}.tar")

    def pack(self, shard):
        """Packs shard ``shard`` unless finished; returns its index dict."""
        tar_path = self.shard_path(shard)
        index_path = sidecar_path(tar_path)
        if os.path.isfile(tar_path) and os.path.isfile(index_path):
            with open(index_path, encoding="utf-8") as handle:
                return self._check_finished(json.load(handle), index_path)
        size = self.args.samples_per_shard
        first, last = shard * size, min(len(self.annotations), (shard + 1) * size)
        index = {"annotation": self.args.annotation, "samples_per_shard": size,
                 "records": [first, last], "samples": 0, "offsets": [], "not_packed": []}

        def write(handle):
            with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive:
                for number in range(first, last):
                    members = self._members(number, index["not_packed"])
                    if members is None:
                        continue
                    index["offsets"].append(archive.offset)
                    for name, data in members:
                        _add_member(archive, name, data)
                index["offsets"].append(archive.offset)
                index["samples"] = len(index["offsets"]) - 1

        atomic_write(tar_path, write)
        atomic_write(index_path, lambda h: h.write(json.dumps(index).encode("utf-8")))
        return index

    def _check_finished(self, index, index_path):
        expected = (self.args.annotation, self.args.samples_per_shard)
        if (index.get("annotation"), index.get("samples_per_shard")) != expected:
            raise DataError(
                f"{index_path} was packed from {index.get('annotation')} with "
                f"{index.get('samples_per_shard')} pairs per shard, not {expected[0]} with "
                f"{expected[1]}; choose another --out"
            )
        return index

    def _members(self, number, not_packed):
        """``[(member name, bytes), ...]`` of pair ``number``, or None (noted) if a file is
        missing."""
        record = self.annotations[number]
        key = f"{number:09d}"
        where = f"{self.annotations.path}:{self.annotations.lines.line_number(number)}"
        try:
            frames = [self.source.read(path) for path in record.frames]
            image, image_ext = self.source.read(record.image_path)
        except UnreadableImageError as err:
            not_packed.append({"line": where, "video_id": record.video_id, "error": str(err)})
            return None
        frame_names = [f"frame{i:03d}{ext}" for i, (_, ext) in enumerate(frames)]
        meta = {
            "key": key, "video_id": record.video_id, "live_id": record.live_id,
            "image_id": record.image_id, "title": record.title, "category": record.category,
            "asr": record.asr, "boxes": _box_lists(record.boxes), "frames": frame_names,
            "image": f"image{image_ext}", "source": where,
        }
        members = [(f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))]
        members += [(f"{key}.{n}", data) for n, (data, _) in zip(frame_names, frames, strict=True)]
        members.append((f"{key}.image{image_ext}", image))
        return members


_PACKER = None


def _pack_in_worker(shard):
    return _PACKER.pack(shard)


def _set_packer(packer):
    global _PACKER
    _PACKER = packer


def remove_stale_temporaries(out, prefix):
    """Temporary files a killed run left (``atomic_write`` removes them on errors)."""
    for path in glob.glob(os.path.join(out, temporary_name_prefix(f"{prefix}-*") + "*.tmp")):
        os.remove(path)


def pack(args):
    """Packs every shard of ``args``; returns the report dict (also written to the out
    folder)."""
    annotations = LPRPairAnnotations(
        args.annotation, frames_dir=args.train_frames_dir, images_dir=args.train_images_dir
    )
    annotations.read_boxes = annotations.layout == LPR4M
    source = Img2DatasetSource(args.img2dataset) if args.img2dataset else FileSource(args.data_dir)
    os.makedirs(args.out, exist_ok=True)
    remove_stale_temporaries(args.out, args.prefix)
    packer = Packer(args, annotations, source)
    shards = range(-(-len(annotations) // args.samples_per_shard))
    if args.workers > 1:
        context = multiprocessing.get_context("fork")
        with context.Pool(args.workers, initializer=_set_packer, initargs=(packer,)) as pool:
            indexes = pool.map(_pack_in_worker, shards, chunksize=1)
    else:
        indexes = [packer.pack(shard) for shard in shards]
    not_packed = [item for index in indexes for item in index["not_packed"]]
    report = {
        "annotation": args.annotation, "layout": annotations.layout,
        "shards": [packer.shard_path(shard) for shard in shards],
        "pairs": len(annotations), "packed": sum(index["samples"] for index in indexes),
        "not_packed": not_packed,
    }
    report_path = os.path.join(args.out, REPORT_NAME)
    atomic_write(report_path, lambda h: h.write(json.dumps(report, indent=1).encode("utf-8")))
    print(
        f"pack_shards: {report['packed']} of {report['pairs']} pairs packed in "
        f"{len(report['shards'])} shards under {args.out}; {len(not_packed)} not packed; "
        f"report {report_path}"
    )
    for item in not_packed[:SHOWN_PROBLEMS]:
        print(f"  not packed: {item['line']} {item['video_id']}: {item['error']}")
    if len(not_packed) > SHOWN_PROBLEMS:
        print(f"  and {len(not_packed) - SHOWN_PROBLEMS} more (see the report)")
    return report


def _box_lists(boxes):
    """Per-frame box rows (float [n, 5]) -> [[x1, y1, x2, y2], ...] per frame, or None."""
    return None if boxes is None else [rows[:, :4].tolist() for rows in boxes]


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        pack(parse_args(argv))
    except MMFError as err:
        print(f"pack_shards: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
