"""Train the class-agnostic product detector on LPR4M box annotations.

Training boxes come from an LPR4M train annotation file (column 3, one box list per frame;
frames under ``training_frames/``) or from a box json ``{frame_id: [[x1, y1, x2, y2], ...]}``
(the detection subset) with ``--frames_dir``. ``--val_boxes`` (e.g. the demo's
``test_frameid2gtbox_*.json`` with ``--val_frames_dir .../query``) reports AP and AP50 after
training. The checkpoint is read by ``scripts/detect_boxes.py``.

    D=demo_data/lpr4m
    python scripts/train_detector.py \\
        --train_annotation $D/annotations/training_videoinfo_demo.txt \\
        --frames_dir $D/training_frames --out save/detector.pth --max_minutes 10 \\
        --val_boxes $D/annotations/test_frameid2gtbox_*.json --val_frames_dir $D/query
"""
import argparse
import json
import logging
import sys

import torch
from torch.utils.data import DataLoader

from mmf.common.errors import MMFError
from mmf.datasets.boxes import read_box_json, read_frame_sizes, read_train_boxes
from mmf.detection.data import FrameBoxes, collate, frame_path
from mmf.detection.engine import detect_frames, train_detector
from mmf.detection.metrics import detection_ap, table_boxes
from mmf.detection.model import ARCHS, build_detector, save_detector

logger = logging.getLogger("train_detector")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--train_annotation", help="LPR4M 11-column train file (box column)")
    source.add_argument("--train_boxes", help="box json {frame_id: boxes} (detection subset)")
    parser.add_argument("--frames_dir", required=True, help="frames as <clip_id>/<frame_id>.jpg")
    parser.add_argument("--frame_sizes", help="json {frame_id: {width, height, original_*}}")
    parser.add_argument("--on_error", choices=("raise", "skip"), default="raise",
                        help="bad boxes: stop (default) or drop and count")
    parser.add_argument("--val_boxes", help="box json to report AP on after training")
    parser.add_argument("--val_frames_dir", help="frames of --val_boxes")
    parser.add_argument("--out", required=True, help="detector checkpoint to write")
    parser.add_argument("--arch", choices=ARCHS, default="fasterrcnn")
    parser.add_argument("--backbone", default="efficientnet_lite0", help="timm CNN name")
    parser.add_argument("--backbone_weights", default="imagenet",
                        help="'imagenet' (efficientnet_lite0), 'none', or a weights file")
    parser.add_argument("--image_size", type=int, default=320, help="longer side of the input")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max_steps", type=int, help="stop after this many batches")
    parser.add_argument("--max_minutes", type=float, help="stop after this much training time")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--metrics", help="json file for the training speed and the AP")
    return parser.parse_args(argv)


def load_table(args):
    sizes = read_frame_sizes(args.frame_sizes) if args.frame_sizes else None
    if args.train_annotation:
        return read_train_boxes(args.train_annotation, sizes=sizes, on_error=args.on_error)
    return read_box_json(args.train_boxes, sizes=sizes, on_error=args.on_error)


def validate(model, args):
    """AP and AP50 of ``model`` on the frames of ``--val_boxes``."""
    truth = read_box_json(args.val_boxes, on_error=args.on_error)
    paths = {frame_id: frame_path(args.val_frames_dir, frame_id) for frame_id in truth}
    predicted, sizes = {}, {}
    for batch in detect_frames(model, paths, args.batch_size, args.workers):
        for frame_id, size, boxes, scores in batch:
            predicted[frame_id], sizes[frame_id] = (boxes, scores), size
    return detection_ap(table_boxes(truth, sizes), predicted)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s: %(message)s")
    if args.val_boxes and not args.val_frames_dir:
        raise SystemExit("train_detector: error: --val_boxes needs --val_frames_dir")
    torch.manual_seed(args.seed)
    try:
        table = load_table(args)
        dataset = FrameBoxes(table, args.frames_dir, train=True)
        loader = DataLoader(
            dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
            collate_fn=collate, drop_last=len(dataset) > args.batch_size,
        )
        config = {"arch": args.arch, "backbone": args.backbone, "image_size": args.image_size,
                  "weights": None if args.backbone_weights == "none" else args.backbone_weights}
        model = build_detector(**config)
        max_seconds = None if args.max_minutes is None else 60 * args.max_minutes
        metrics = train_detector(model, loader, args.epochs, args.max_steps, max_seconds, args.lr)
        save_detector(args.out, model, config)
        if args.val_boxes:
            metrics.update(validate(model, args))
            logger.info("AP %.3f, AP50 %.3f on %d frames", metrics["ap"], metrics["ap50"],
                        metrics["frames"])
    except MMFError as err:
        print(f"train_detector: error: {err}", file=sys.stderr)
        return 1
    if args.metrics:
        with open(args.metrics, "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
