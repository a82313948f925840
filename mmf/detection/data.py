"""Frames for the detector: frames with their boxes (training) and bare frames (detection).

LPR4M frames live at ``<frames_dir>/<clip_id>/<frame_id>.jpg`` (``training_frames/`` for the
train split, ``query/`` for the test split), with clip_id the frame id less its last
``-<index>`` field.
"""
import glob
import os

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from mmf.datasets.builders.videotoshop.images import load_rgb
from mmf.datasets.ids import IMAGE_EXTENSIONS, normalize_id

_TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])


def frame_path(frames_dir, frame_id):
    """``<frames_dir>/<clip_id>/<frame_id>.jpg`` (``load_rgb`` tries the other extensions)."""
    clip_id = frame_id.rsplit("-", 1)[0]
    return os.path.join(frames_dir, clip_id, f"{frame_id}.jpg")


def frames_on_disk(frames_dir):
    """{frame_id: path} of every image under ``frames_dir/<clip_id>/`` (sorted by path)."""
    paths = sorted(
        path for path in glob.glob(os.path.join(glob.escape(frames_dir), "*", "*"))
        if path.lower().endswith(IMAGE_EXTENSIONS)
    )
    return {normalize_id(path): path for path in paths}


def collate(batch):
    """A list of samples -> a tuple per field (detection images differ in size)."""
    return tuple(zip(*batch, strict=True))


class FrameBoxes(Dataset):
    """Frames of a ``BoxTable`` with their boxes.

    item -> (image float [3, H, W] in [0, 1], target {"boxes": float [n, 4] pixels of the
    stored frame, "labels": int64 [n], all 1}). ``train`` adds a random horizontal flip.
    Frames without boxes are kept: they teach the detector that no product is there.
    """

    def __init__(self, table, frames_dir, frame_ids=None, train=False):
        self.table = table
        self.frames_dir = frames_dir
        self.frame_ids = sorted(table) if frame_ids is None else list(frame_ids)
        flip = [v2.RandomHorizontalFlip()] if train else []
        self.transform = v2.Compose([*flip, _TO_TENSOR])

    def __len__(self):
        return len(self.frame_ids)

    def __getitem__(self, index):
        frame_id = self.frame_ids[index]
        image = load_rgb(frame_path(self.frames_dir, frame_id))
        boxes = self.table.boxes(frame_id, image.width, image.height)
        boxes = tv_tensors.BoundingBoxes(
            torch.as_tensor(boxes, dtype=torch.float32), format="XYXY",
            canvas_size=(image.height, image.width),
        )
        image, boxes = self.transform(image, boxes)
        return image, {"boxes": boxes.as_subclass(torch.Tensor),
                       "labels": torch.ones(len(boxes), dtype=torch.int64)}


class FrameImages(Dataset):
    """Bare frames for detection: item -> (frame_id, image float [3, H, W] in [0, 1])."""

    def __init__(self, paths):
        self.items = list(paths.items())

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        frame_id, path = self.items[index]
        return frame_id, _TO_TENSOR(load_rgb(path))
