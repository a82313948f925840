"""Reading frames and shop images: as PIL images, as uint8 tensors or as their stored bytes.

``source`` is a path, or a file object holding the stored bytes (a shard member) whose
``str()`` names it. ``load_image(source, boxes, decode)`` hands over what the image
processor asks for (its ``decode``): ``pil`` (``load_rgb``), ``uint8`` (``load_uint8``) or
``jpeg`` (``load_encoded``: nothing is decoded; the device does it after the transfer).
"""
import io
import os
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image

from mmf.common.errors import DataError
from mmf.datasets.ids import IMAGE_EXTENSIONS


class UnreadableImageError(DataError):
    """An image or frame file is missing or cannot be decoded (the message names the path)."""


def load_image(source, boxes=None, decode="pil"):
    """``source`` read as ``decode`` asks: a PIL image, a uint8 [3,H,W] tensor or, for
    ``jpeg``, a namespace (``data`` uint8 [n] bytes, ``boxes``, ``name``) to decode later."""
    if decode == "pil":
        return load_rgb(source, boxes)
    if decode == "uint8":
        return load_uint8(source, boxes)
    if decode == "jpeg":
        return load_encoded(source, boxes)
    raise ValueError(f"decode must be pil, uint8 or jpeg, got {decode!r}")


def load_rgb(path, boxes=None):
    """PIL RGB image at ``path``.

    The exact path is opened; only if it does not exist are the other image extensions
    (``mmf.datasets.ids.IMAGE_EXTENSIONS``, in order) tried on the same stem. ``boxes``
    ([[x1,y1,x2,y2], ...] in pixels) crops the image to their union, clipped to the image;
    no boxes (or a degenerate union) keeps it whole.
    Raises ``UnreadableImageError`` naming the path for a missing or corrupt file.
    """
    try:
        image = _decode(path)
    except FileNotFoundError:
        image = _decode(_probe_extensions(path))
    if boxes:
        box = union_box(boxes, image.width, image.height)
        if box is not None:
            image = image.crop(box)
    return image


def load_uint8(source, boxes=None):
    """uint8 [3,H,W] RGB tensor of ``source`` (found and cropped as ``load_rgb`` does).

    JPEG, PNG, WEBP and GIF are decoded by ``torchvision.io.decode_image`` (libjpeg-turbo: the
    same pixels as PIL); other formats, and bytes it rejects, go through PIL, so a corrupt
    file raises ``UnreadableImageError`` as in ``load_rgb``.
    """
    data = read_bytes(source)
    try:
        image = decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:
        rgb = _decode(NamedBytes(data.numpy().tobytes(), str(source)))
        image = torch.from_numpy(np.array(rgb)).permute(2, 0, 1).contiguous()
    return crop_to_boxes(image, boxes)


def load_encoded(source, boxes=None):
    """The stored bytes of ``source`` (uint8 [n]) with ``boxes`` and ``name``, undecoded."""
    return SimpleNamespace(data=read_bytes(source), boxes=boxes or None, name=str(source))


def read_bytes(source):
    """uint8 [n] tensor of the stored bytes of ``source`` (a path, probed like ``load_rgb``,
    or a file object)."""
    if hasattr(source, "getvalue"):
        raw = source.getvalue()
    else:
        try:
            raw = _read_file(source)
        except FileNotFoundError:
            raw = _read_file(_probe_extensions(source))
    if not raw:
        raise UnreadableImageError(f"cannot decode image {source}: empty file")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def crop_to_boxes(image, boxes):
    """[C,H,W] ``image`` cropped to the union of ``boxes`` (as ``load_rgb`` crops)."""
    if not boxes:
        return image
    box = union_box(boxes, image.shape[-1], image.shape[-2])
    if box is None:
        return image
    x1, y1, x2, y2 = box
    return image[:, y1:y2, x1:x2].contiguous()


def union_box(boxes, width, height):
    """Union of ``boxes`` clipped to a ``width`` x ``height`` image, as integer (x1, y1, x2, y2);
    None if the clipped union is empty."""
    x1 = max(0, int(min(box[0] for box in boxes)))
    y1 = max(0, int(min(box[1] for box in boxes)))
    x2 = min(width, int(round(max(box[2] for box in boxes))))
    y2 = min(height, int(round(max(box[3] for box in boxes))))
    if x2 - x1 < 1 or y2 - y1 < 1:
        return None
    return (x1, y1, x2, y2)


class NamedBytes(io.BytesIO):
    """Stored image bytes that print as their source (a path, or ``<shard>:<member>``), so
    that decode errors name where the bytes came from."""

    def __init__(self, data, name):
        super().__init__(data)
        self.name = name

    def __str__(self):
        return self.name


def _read_file(path):
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise
    except OSError as err:
        raise UnreadableImageError(f"cannot read image {path}: {err}") from None


def _decode(path):
    try:
        with Image.open(path) as image:
            image.load()
            return image if image.mode == "RGB" else image.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise UnreadableImageError(f"cannot decode image {path}: {err}") from None


def _probe_extensions(path):
    stem = os.path.splitext(path)[0]
    for extension in IMAGE_EXTENSIONS:
        candidate = stem + extension
        if candidate != path and os.path.isfile(candidate):
            return candidate
    raise UnreadableImageError(f"image file not found: {path}")
