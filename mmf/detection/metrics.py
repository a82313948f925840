"""Detection AP of product boxes, with pycocotools' COCOeval (class-agnostic, one class)."""
import contextlib
import io

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def _xywh(box):
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    return [x1, y1, x2 - x1, y2 - y1]


def detection_ap(ground_truth, predictions):
    """COCO AP (IoU 0.5:0.95) and AP50 of predicted boxes against ground-truth boxes.

    ground_truth: {frame_id: float [n, 4]} (x1, y1, x2, y2 in one frame's pixels).
    predictions: {frame_id: (boxes [m, 4], scores [m])} in the same pixels; frames missing
        from it have no predictions; frames not in ``ground_truth`` are ignored.
    Returns {"ap", "ap50", "frames", "gt_boxes", "pred_boxes"}; AP is nan without any
    ground-truth box and 0 without any prediction.
    """
    frame_ids = list(ground_truth)
    images = [{"id": i} for i in range(len(frame_ids))]
    annotations, detections = [], []
    for image_id, frame_id in enumerate(frame_ids):
        for box in np.asarray(ground_truth[frame_id]).reshape(-1, 4):
            xywh = _xywh(box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": 1,
                "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0,
            })
        boxes, scores = predictions.get(frame_id, (np.zeros((0, 4)), np.zeros(0)))
        for box, score in zip(np.asarray(boxes).reshape(-1, 4), scores, strict=True):
            detections.append({
                "image_id": image_id, "category_id": 1, "bbox": _xywh(box), "score": float(score),
            })
    counts = {"frames": len(frame_ids), "gt_boxes": len(annotations),
              "pred_boxes": len(detections)}
    if not annotations:
        return {"ap": float("nan"), "ap50": float("nan"), **counts}
    if not detections:
        return {"ap": 0.0, "ap50": 0.0, **counts}
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": images, "annotations": annotations,
                        "categories": [{"id": 1, "name": "product"}]}
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(detections), "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    return {"ap": float(evaluation.stats[0]), "ap50": float(evaluation.stats[1]), **counts}


def table_boxes(table, frame_sizes):
    """{frame_id: float [n, 4]} of a ``BoxTable``'s frames that have a size in
    ``frame_sizes`` ({frame_id: (width, height)} of the stored frames), in their pixels."""
    return {
        frame_id: table.boxes(frame_id, *frame_sizes[frame_id])
        for frame_id in table if frame_id in frame_sizes
    }


def box_table_ap(ground_truth, predictions, frame_sizes):
    """``detection_ap`` of two ``BoxTable`` files over the ground truth's frames that have a
    size in ``frame_sizes``."""
    predicted = {
        frame_id: predictions.scored_boxes(frame_id, *frame_sizes[frame_id])
        for frame_id in predictions if frame_id in frame_sizes
    }
    return detection_ap(table_boxes(ground_truth, frame_sizes), predicted)
