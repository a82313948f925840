"""Write a predicted-box file for query frames with a detector from ``train_detector.py``.

The output has the layout of the ground-truth test box file, ``{frame_id: [[x1, y1, x2, y2,
score], ...]}`` in pixels of the stored frame, boxes best first (``[]``: nothing found); the
box readers (``mmf.datasets.boxes.read_box_json``) take the score as an optional fifth value.
Frames are those under ``--frames_dir/<clip_id>/`` or, with ``--query_json``, the frames of
``query_tenframes.json``; with ``--max_temporal_len`` only the frames of each clip that the
evaluation reads (``temporal_masked_slice`` with that length and ``--slice_pos``, as in the
RICE run's ``masked_video_processor``). The run is resumable: frames already in ``--out``
are skipped, and the file is rewritten atomically every ``--save_every`` batches.
``--gt_boxes`` reports AP and AP50 of the whole output against a ground-truth box file.

    python scripts/detect_boxes.py --checkpoint save/detector.pth \\
        --frames_dir demo_data/lpr4m/query --out save/pred_boxes.json \\
        --gt_boxes demo_data/lpr4m/annotations/test_frameid2gtbox_*.json
"""
import argparse
import json
import logging
import os
import sys

from PIL import Image

from mmf.common.errors import DataError, MMFError
from mmf.datasets.boxes import read_box_json
from mmf.datasets.builders.videotoshop.database import read_query_json
from mmf.datasets.ids import normalize_id
from mmf.datasets.processors.temporal_processors import TemporalMaskedSliceProcessor
from mmf.detection.data import frame_path, frames_on_disk
from mmf.detection.engine import detect_frames
from mmf.detection.metrics import box_table_ap
from mmf.detection.model import load_detector
from mmf.utils.file_io import atomic_write

logger = logging.getLogger("detect_boxes")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True, help="from scripts/train_detector.py")
    parser.add_argument("--frames_dir", required=True, help="frames as <clip_id>/<frame_id>.jpg")
    parser.add_argument("--query_json", help="query_tenframes.json: detect only its frames")
    parser.add_argument(
        "--max_temporal_len", type=int,
        help="with --query_json: detect only the frames a clip of this many slots keeps",
    )
    parser.add_argument(
        "--slice_pos", type=int, default=2, choices=(0, 1, 2),
        help="with --max_temporal_len: which frames (the processor's slice_pos)",
    )
    parser.add_argument("--out", required=True, help="box json to write (resumed if present)")
    parser.add_argument("--min_score", type=float, default=0.05, help="drop boxes below it")
    parser.add_argument("--max_boxes", type=int, default=10, help="boxes kept per frame")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--save_every", type=int, default=50, help="batches between saves")
    parser.add_argument("--gt_boxes", help="ground-truth box json: report AP and AP50")
    parser.add_argument("--metrics", help="json file for the AP and AP50 of --gt_boxes")
    args = parser.parse_args(argv)
    if args.max_temporal_len is not None and not args.query_json:
        parser.error("--max_temporal_len needs --query_json")
    return args


def query_frames(frames_dir, query_json, max_temporal_len=None, slice_pos=2):
    """{frame_id: path} of the frames to detect, in a stable order: every frame under
    ``frames_dir``, or those of ``query_json`` (with ``max_temporal_len``, only the ones the
    evaluation's ``temporal_masked_slice`` keeps)."""
    if not query_json:
        return frames_on_disk(frames_dir)
    keep = None
    if max_temporal_len is not None:
        keep = TemporalMaskedSliceProcessor(
            {"max_temporal_len": max_temporal_len, "slice_pos": slice_pos}
        ).select
    frames = {}
    for record in read_query_json(query_json):
        chosen = record.frames if keep is None else [
            record.frames[index] for index in keep(len(record.frames))
        ]
        frames.update((normalize_id(frame), os.path.join(frames_dir, frame)) for frame in chosen)
    return frames


def read_partial(path):
    """The boxes already written to ``path`` ({} if it does not exist)."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        try:
            done = json.load(handle)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{err.lineno}: malformed JSON: {err.msg}") from None
    if not isinstance(done, dict):
        raise DataError(f"{path}: expected an object {{frame_id: boxes}}")
    logger.info("%s: resuming, %d frames already done", path, len(done))
    return done


def write_boxes(path, boxes):
    atomic_write(path, lambda handle: json.dump(boxes, handle), mode="w")


def run(args):
    model, _ = load_detector(args.checkpoint)
    paths = query_frames(args.frames_dir, args.query_json, args.max_temporal_len, args.slice_pos)
    boxes = read_partial(args.out)
    todo = {frame_id: path for frame_id, path in paths.items() if frame_id not in boxes}
    logger.info("%d frames, %d to detect", len(paths), len(todo))
    for number, batch in enumerate(detect_frames(model, todo, args.batch_size, args.workers)):
        for frame_id, _, found, scores in batch:
            keep = scores >= args.min_score
            boxes[frame_id] = [
                [round(float(v), 2) for v in box] + [round(float(score), 4)]
                for box, score in zip(found[keep][: args.max_boxes], scores[keep], strict=False)
            ]
        if (number + 1) % args.save_every == 0:
            write_boxes(args.out, boxes)
    write_boxes(args.out, boxes)
    logger.info("wrote %d frames to %s", len(boxes), args.out)
    if args.gt_boxes:
        truth = read_box_json(args.gt_boxes)
        predicted = read_box_json(args.out, units="pixels")
        sizes = {}
        for frame_id in predicted:
            path = paths.get(frame_id) or frame_path(args.frames_dir, frame_id)
            with Image.open(path) as image:
                sizes[frame_id] = image.size
        result = box_table_ap(truth, predicted, sizes)
        logger.info("AP %.3f, AP50 %.3f on %d frames (%d ground-truth, %d predicted boxes)",
                    result["ap"], result["ap50"], result["frames"], result["gt_boxes"],
                    result["pred_boxes"])
        return result
    return None


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s: %(message)s")
    if args.metrics and not args.gt_boxes:
        raise SystemExit("detect_boxes: error: --metrics needs --gt_boxes")
    try:
        result = run(args)
    except MMFError as err:
        print(f"detect_boxes: error: {err}", file=sys.stderr)
        return 1
    if args.metrics:
        with open(args.metrics, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
