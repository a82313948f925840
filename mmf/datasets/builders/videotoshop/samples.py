"""How a ``videotoshop`` item becomes a ``Sample``: the one home shared by the files path
(``VideoToShopDataset``) and the shards path (``shards.ShardDataset``).

A class mixing ``VideoToShopSamples`` in provides ``dataset_name``, ``use_augments``, the
processors (``init_processors``) and ``read_image(ref, boxes=None, decode="pil")``, where
``ref`` is whatever its records hold for a frame or image (a path relative to the image root,
or the stored bytes of a shard member) and ``decode`` what the image processor takes
(``images.load_image``). Query and gallery samples also read ``asr``, ``title`` and
``has_category``.

With an image processor whose ``output`` is ``uint8`` or ``jpeg``, ``video`` / ``image`` are
uint8 (or ``EncodedVideo`` / ``EncodedImage``) and ``pixel_normalize`` [2,3] carries the
processor's (mean, std): ``mmf.datasets.prefetch.to_device`` finishes them on the device.
"""
import torch

from mmf.common.errors import ConfigError
from mmf.common.sample import Sample
from mmf.datasets.processors.image_processors import EncodedVideo


class VideoToShopSamples:
    def read_image(self, ref, boxes=None, decode="pil"):
        raise NotImplementedError(f"{type(self).__name__} must implement read_image()")

    def _pair_sample(self, record):
        sample = Sample()
        sample.update(self._video_fields(record.frames, record.boxes))
        sample.update(self._image_fields(record.image_path))
        sample.video_id = record.video_id
        sample.image_id = record.image_id
        sample.live_id = record.live_id
        for key in ("title", "category", "asr"):
            if getattr(record, key) is not None:
                sample[key] = getattr(record, key)
        return sample

    def _query_sample(self, record):
        sample = Sample()
        sample.update(self._video_fields(record.frames))
        sample.video_id = record.video_id
        sample.live_id = record.live_id
        if self.asr:
            sample.asr = self.asr.get(record.video_id, "")
        if self.has_category:
            sample.category = record.category or ""
        return sample

    def _gallery_sample(self, record):
        sample = Sample()
        sample.update(self._image_fields(record.path))
        sample.image_id = record.image_id
        sample.live_id = record.live_id
        if self.title:
            sample.title = self.title.get(record.image_id, "")
        return sample

    def _video_fields(self, frames, boxes=None):
        """Frame refs -> ``video`` [F,3,H,W], ``video_temporal_mask`` [F] (+ ``video_masks``)."""
        slicer = self._processor("masked_video_processor")
        transform = self._image_transform()
        keep = slicer.select(len(frames), use_augments=self.use_augments)
        images = [self._read(transform, frames[i], boxes[i] if boxes else None) for i in keep]
        if getattr(transform, "output", "float") == "jpeg":
            fields = slicer.pad(torch.zeros(len(images), 1, dtype=torch.uint8))
            fields["video"] = EncodedVideo(images, slicer.max_temporal_len)
        else:
            fields = slicer.pad(images)
        fields.update(_normalization(transform))
        masker = getattr(self, "masked_image_processor", None)
        if masker is not None:
            patches = masker(use_augments=self.use_augments)
            fields["video_masks"] = fields["video_temporal_mask"][:, None, None] * patches
        return fields

    def _image_fields(self, ref):
        transform = self._image_transform()
        fields = {"image": self._read(transform, ref), **_normalization(transform)}
        masker = getattr(self, "masked_image_processor", None)
        if masker is not None:
            fields["image_masks"] = masker(use_augments=self.use_augments)
        return fields

    def _read(self, transform, ref, boxes=None):
        return transform(self.read_image(ref, boxes, getattr(transform, "decode", "pil")))

    def _image_transform(self):
        key = "train_image_processor" if self.use_augments else "eval_image_processor"
        return self._processor(key)

    def _processor(self, key):
        processor = getattr(self, key, None)
        if processor is None:
            raise ConfigError(
                f"dataset_config.{self.dataset_name}.processors.{key} is required "
                f"(and init_processors() must have run)"
            )
        return processor


def _normalization(transform):
    """``{"pixel_normalize": [2,3]}`` for a processor that leaves normalising to the device."""
    constants = getattr(transform, "normalization", None)
    return {} if constants is None else {"pixel_normalize": constants}
