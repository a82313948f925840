"""The device side of the loader: a batch moved to the device and finished there.

Image processors with ``output: uint8`` or ``jpeg`` (``mmf.datasets.processors.
image_processors``) leave the float work to the device, as timm's ``PrefetchLoader`` does:
the loader's workers spend their CPU on the decode, the batch crosses to the device as uint8
(a quarter of the float bytes; pinned when ``training.pin_memory`` is on and CUDA is there,
copied with ``non_blocking``), and ``to_device`` finishes it on the device:

1. ``EncodedVideo`` / ``EncodedImage`` fields (``output: jpeg``) are decoded in one batched
   ``torchvision.io.decode_jpeg(..., device=device)`` call (the GPU's decoder on CUDA; other
   formats on the CPU), cropped to their ``crop`` and transformed with each frame's seed, then
   stacked (videos zero-padded to their slots) into uint8 tensors;
2. uint8 ``video`` [B,F,3,H,W] / ``image`` [B,3,H,W] become ``(x / 255 - mean) / std`` in
   float32 with the batch's ``pixel_normalize`` [B,2,3] (dropped from the batch), and padded
   frames (``video_temporal_mask`` 0) are zero, as the float path yields them.

Batches of float processors pass through unchanged (after the move). The trainer, the
evaluation and predict call ``to_device`` where they move a batch.
"""
import torch
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from mmf.common.sample import SampleList
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, crop_image
from mmf.datasets.processors.image_processors import EncodedImage, EncodedVideo
from mmf.utils.samplers import seeded_rngs

PIXEL_FIELDS = ("image", "video")
NORMALIZE_FIELD = "pixel_normalize"
JPEG_MAGIC = (0xFF, 0xD8)


def to_device(batch, device):
    """``batch`` (a ``SampleList`` or a dict) on ``device``, its pixels decoded and normalised
    there."""
    batch = SampleList(batch).to(device, non_blocking=True)
    for field in PIXEL_FIELDS:
        value = batch.get(field)
        if isinstance(value, list) and value and isinstance(value[0], EncodedVideo):
            batch[field] = decode_videos(value, device)
        elif isinstance(value, list) and value and isinstance(value[0], EncodedImage):
            batch[field] = torch.stack(decode_images(value, device))
    constants = batch.pop(NORMALIZE_FIELD, None)
    if constants is not None:
        for field in PIXEL_FIELDS:
            if isinstance(batch.get(field), torch.Tensor) and batch[field].dtype == torch.uint8:
                batch[field] = normalize(batch[field], constants, batch.get("video_temporal_mask"))
    return batch


def normalize(pixels, constants, temporal_mask=None):
    """uint8 ``pixels`` [B,(F,)3,H,W] -> float32 ``(x / 255 - mean) / std`` with ``constants``
    [B,2,3]; frames where ``temporal_mask`` [B,F] is 0 are set to 0."""
    shape = (pixels.size(0),) + (1,) * (pixels.dim() - 4) + (3, 1, 1)
    mean = constants[:, 0].to(torch.float32).reshape(shape)
    std = constants[:, 1].to(torch.float32).reshape(shape)
    out = pixels.to(torch.float32).div_(255).sub_(mean).div_(std)
    if pixels.dim() == 5 and temporal_mask is not None:
        out.mul_(temporal_mask.to(out.device, torch.bool)[:, :, None, None, None])
    return out


def decode_videos(videos, device):
    """``EncodedVideo`` s -> uint8 [B,F,3,H,W] on ``device`` (missing frames are zeros)."""
    frames = decode_images([frame for video in videos for frame in video.frames], device)
    out = frames[0].new_zeros((len(videos), videos[0].slots) + tuple(frames[0].shape))
    start = 0
    for row, video in enumerate(videos):
        count = len(video.frames)
        out[row, :count] = torch.stack(frames[start : start + count])
        start += count
    return out


def decode_images(images, device):
    """``EncodedImage`` s -> list of transformed uint8 [3,H,W] on ``device``; JPEGs are
    decoded in one batched call."""
    jpegs = [i for i, image in enumerate(images) if _is_jpeg(image.data)]
    decoded = [None] * len(images)
    if jpegs:
        try:
            batch = decode_jpeg(
                [images[i].data for i in jpegs], mode=ImageReadMode.RGB, device=device
            )
        except RuntimeError:
            batch = [_decode_one(images[i], device) for i in jpegs]  # names the bad one
        for i, image in zip(jpegs, batch, strict=True):
            decoded[i] = image
    out = []
    for image, pixels in zip(images, decoded, strict=True):
        pixels = _decode_one(image, device) if pixels is None else pixels
        with seeded_rngs(image.seed):
            if image.crop is not None:
                pixels = crop_image(pixels, image.crop)
            out.append(image.transform(pixels))
    return out


def _is_jpeg(data):
    return data.numel() > 2 and tuple(data[:2].tolist()) == JPEG_MAGIC


def _decode_one(image, device):
    try:
        if _is_jpeg(image.data):
            return decode_jpeg(image.data, mode=ImageReadMode.RGB, device=device)
        return decode_image(image.data, mode=ImageReadMode.RGB).to(device)
    except RuntimeError as err:
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise UnreadableImageError(f"cannot decode image {image.name}: {message}") from None
