"""Geometry of the two ways a box enters the model (``model_config.rice.box_mode``).

- ``crop``: ``crop_rect`` gives the frame rectangle to crop before the usual resize.
- ``patch_mask``: ``patch_mask`` gives the encoder patches to keep for a box on the encoder's
  input image. The rule: the input is cut into a ``grid`` x ``grid`` array of equal patches
  (7 x 7 for ViT-B/32 at 224 px); a patch is kept when the box covers more than
  ``min_coverage`` of the patch's area (intersection / patch area, not IoU: a small box inside
  one patch keeps that patch, which the IoU of the original's older code, with its threshold of
  0.02, could drop). The patch holding the box centre is always kept, so no frame loses all its
  tokens.

Boxes are ``[x1, y1, x2, y2]`` in pixels, x to the right, y down. For ``patch_mask`` they must
be on the encoder input, after the processor's resize and crop (``torchvision.transforms.v2``
moves a ``tv_tensors.BoundingBoxes`` through the same transforms as the image).
"""
import math

import torch

DEFAULT_MARGIN = 0.1
DEFAULT_MIN_COVERAGE = 0.02


def box_or_frame(box, width, height):
    """``box`` as a float tensor [4], or the whole ``width`` x ``height`` frame for None."""
    if box is None:
        return torch.tensor([0.0, 0.0, float(width), float(height)])
    return torch.as_tensor(box, dtype=torch.float32)[:4]


def crop_rect(box, width, height, margin=DEFAULT_MARGIN):
    """Integer crop rectangle (x1, y1, x2, y2) of a ``width`` x ``height`` frame for ``box``.

    The box grows by ``margin`` times its width on the left and on the right, and by
    ``margin`` times its height above and below (context around the product), is rounded
    outwards to whole pixels and clamped to the frame; it keeps at least one pixel per side.
    """
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    left = min(max(0, math.floor(x1 - dx)), width - 1)
    top = min(max(0, math.floor(y1 - dy)), height - 1)
    right = max(min(width, math.ceil(x2 + dx)), left + 1)
    bottom = max(min(height, math.ceil(y2 + dy)), top + 1)
    return left, top, right, bottom


def patch_mask(boxes, width, height, grid=7, min_coverage=DEFAULT_MIN_COVERAGE):
    """Patches kept for ``boxes`` on a ``width`` x ``height`` encoder input (rule above).

    boxes: float tensor [..., 4] (x1, y1, x2, y2 in input pixels).
    Returns a bool tensor [..., grid, grid]; row i, column j is the patch
    [j·width/grid, (j+1)·width/grid] x [i·height/grid, (i+1)·height/grid]. Flattened
    row-major it follows the encoder's patch-token order (after any class token).
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    xs = torch.linspace(0, width, grid + 1, dtype=boxes.dtype, device=boxes.device)
    ys = torch.linspace(0, height, grid + 1, dtype=boxes.dtype, device=boxes.device)

    def overlap(lo, hi, edges):
        # [..., grid]: the covered fraction of each patch's extent along one axis.
        inter = torch.minimum(hi[..., None], edges[1:]) - torch.maximum(lo[..., None], edges[:-1])
        return inter.clamp(min=0) / (edges[1:] - edges[:-1])

    coverage = (
        overlap(boxes[..., 1], boxes[..., 3], ys)[..., :, None]
        * overlap(boxes[..., 0], boxes[..., 2], xs)[..., None, :]
    )
    keep = coverage > min_coverage
    centre_x = ((boxes[..., 0] + boxes[..., 2]) / 2 * grid / width).floor().long()
    centre_y = ((boxes[..., 1] + boxes[..., 3]) / 2 * grid / height).floor().long()
    centre = centre_y.clamp(0, grid - 1) * grid + centre_x.clamp(0, grid - 1)
    flat = keep.flatten(-2)
    flat.scatter_(-1, centre[..., None], True)
    return flat.view(keep.shape)
