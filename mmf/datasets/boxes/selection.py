"""Which box of a frame is the intended product: the rules a researcher compares.

A frame can hold several boxes (669,374 boxes on 501,656 LPR4M test frames): the presented
product and other products on the table, or a detector's false positives. Each rule maps the
per-frame box lists of one clip to one box or None per frame:

- ``union``: the union of the frame's boxes (what ``crop_to_box`` did); spans distant boxes.
- ``largest``: the box of largest area (the default: the salesperson holds the product up to
  the camera, so it is usually the largest object; the rule needs no frame size and no
  neighbouring frames, and never spans two products as ``union`` does).
- ``most_central``: the box whose centre is nearest the frame centre.
- ``track``: boxes linked frame to frame by IoU >= ``iou_threshold`` (greedy, highest IoU
  first, across up to ``max_gap`` frames without a link) form tracks; the longest track wins
  (ties: larger summed area, then the earlier start), and each frame gets its box on that track,
  None where the track has none. The product persists through the clip; clutter and detector
  false positives come and go.
"""
import numpy as np
import torch
from torchvision.ops import box_iou

from mmf.common.errors import ConfigError

RULES = ("union", "largest", "most_central", "track")
DEFAULT_RULE = "largest"


def _as_array(boxes):
    if boxes is None:
        return np.zeros((0, 4))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def _area(boxes):
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _union(boxes):
    return np.concatenate([boxes[:, :2].min(0), boxes[:, 2:].max(0)])


def _largest(boxes):
    return boxes[int(np.argmax(_area(boxes)))]


def _most_central(boxes, frame_size):
    width, height = frame_size
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    distance = np.hypot(centres[:, 0] - width / 2, centres[:, 1] - height / 2)
    return boxes[int(np.argmin(distance))]


def _tracks(frames, iou_threshold, max_gap):
    """Tracks as dicts {frame index: box index}, linking each frame's boxes to the tracks whose
    last box is at most ``max_gap`` + 1 frames back."""
    tracks = []
    for t, boxes in enumerate(frames):
        if not len(boxes):
            continue
        alive = [track for track in tracks if t - max(track) <= max_gap + 1]
        taken = set()
        if alive:
            last = torch.as_tensor(np.stack([frames[max(k)][k[max(k)]] for k in alive]))
            iou = box_iou(last, torch.as_tensor(boxes)).numpy()
            for flat in np.argsort(-iou, axis=None, kind="stable"):
                track_index, box_index = np.unravel_index(flat, iou.shape)
                if iou[track_index, box_index] < iou_threshold:
                    break
                track = alive[track_index]
                if t in track or box_index in taken:
                    continue
                track[t] = int(box_index)
                taken.add(int(box_index))
        tracks.extend({t: i} for i in range(len(boxes)) if i not in taken)
    return tracks


def _track(frames, iou_threshold, max_gap):
    tracks = _tracks(frames, iou_threshold, max_gap)
    if not tracks:
        return [None] * len(frames)

    def rank(indexed):
        index, track = indexed
        area = sum(_area(frames[t][[i]])[0] for t, i in track.items())
        return (len(track), area, -min(track), -index)

    _, best = max(enumerate(tracks), key=rank)
    return [frames[t][best[t]] if t in best else None for t in range(len(frames))]


def select_boxes(frames, rule=DEFAULT_RULE, frame_size=None, iou_threshold=0.3, max_gap=1):
    """The intended product's box in each frame of one clip.

    frames: per frame, the boxes [n, 4] (x1, y1, x2, y2, pixels; an empty list or None when
        the frame has none).
    rule: one of ``RULES`` (module docstring). frame_size: (width, height), needed by
        ``most_central``. iou_threshold, max_gap: the ``track`` rule's linking.
    Returns a list with, per frame, a float64 array [4] or None (no box).
    """
    if rule not in RULES:
        raise ConfigError(f"box selection rule must be one of {RULES}, got {rule!r}")
    frames = [_as_array(boxes) for boxes in frames]
    if rule == "track":
        return _track(frames, iou_threshold, max_gap)
    if rule == "most_central" and frame_size is None:
        raise ConfigError("box selection rule 'most_central' needs the frame size")
    choose = {
        "union": _union,
        "largest": _largest,
        "most_central": lambda boxes: _most_central(boxes, frame_size),
    }[rule]
    return [choose(boxes) if len(boxes) else None for boxes in frames]
