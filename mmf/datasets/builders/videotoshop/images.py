"""Reading frames and shop images: as PIL images, as uint8 tensors or as their stored bytes.

``source`` is a path, or a file object holding the stored bytes (a shard member) whose
``str()`` names it. ``load_image(source, decode)`` hands over what the image processor asks
for (its ``decode``): ``pil`` (``load_rgb``), ``uint8`` (``load_uint8``) or ``jpeg``
(``load_encoded``: nothing is decoded; the device does it after the transfer).
``crop_image(image, rect)`` crops any of the three to a rectangle (``mmf.datasets.boxes.
crop_rect`` gives it: the one crop of a product box).
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


def load_image(source, decode="pil"):
    """``source`` read as ``decode`` asks: a PIL image, a uint8 [3,H,W] tensor or, for
    ``jpeg``, a namespace (``data`` uint8 [n] bytes, ``crop``, ``name``) to decode later."""
    if decode == "pil":
        return load_rgb(source)
    if decode == "uint8":
        return load_uint8(source)
    if decode == "jpeg":
        return load_encoded(source)
    raise ValueError(f"decode must be pil, uint8 or jpeg, got {decode!r}")


def load_rgb(path):
    """PIL RGB image at ``path``.

    The exact path is opened; only if it does not exist are the other image extensions
    (``mmf.datasets.ids.IMAGE_EXTENSIONS``, in order) tried on the same stem.
    Raises ``UnreadableImageError`` naming the path for a missing or corrupt file.
    """
    try:
        return _decode(path)
    except FileNotFoundError:
        return _decode(_probe_extensions(path))


def load_uint8(source):
    """uint8 [3,H,W] RGB tensor of ``source`` (found as ``load_rgb`` finds it).

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
    return image


def load_encoded(source):
    """The stored bytes of ``source`` (uint8 [n]) with ``name`` and ``crop`` (None: none yet;
    ``crop_image`` sets it), undecoded."""
    return SimpleNamespace(data=read_bytes(source), crop=None, name=str(source))


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


def crop_image(image, rect):
    """``image`` cropped to the integer ``rect`` (x1, y1, x2, y2; ``mmf.datasets.boxes.crop_rect``):
    a PIL image or a [C,H,W] tensor now; undecoded bytes (``load_encoded``) carry ``rect`` as
    their ``crop``, applied after the decode (``mmf.datasets.prefetch``)."""
    x1, y1, x2, y2 = rect
    if isinstance(image, torch.Tensor):
        return image[:, y1:y2, x1:x2].contiguous()
    if isinstance(image, SimpleNamespace):
        return SimpleNamespace(data=image.data, crop=(x1, y1, x2, y2), name=image.name)
    return image.crop((x1, y1, x2, y2))


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
