"""Reading frames and shop images from disk with PIL."""
import os

from PIL import Image

from mmf.common.errors import DataError
from mmf.datasets.ids import IMAGE_EXTENSIONS


class UnreadableImageError(DataError):
    """An image or frame file is missing or cannot be decoded (the message names the path)."""


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
