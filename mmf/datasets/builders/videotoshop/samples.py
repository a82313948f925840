"""How a ``videotoshop`` item becomes a ``Sample``: the one home shared by the files path
(``VideoToShopDataset``) and the shards path (``shards.ShardDataset``).

A class mixing ``VideoToShopSamples`` in provides ``dataset_name``, ``use_augments``, the
processors (``init_processors``) and ``read_image(ref, decode="pil")``, where
``ref`` is whatever its records hold for a frame or image (a path relative to the image root,
or the stored bytes of a shard member) and ``decode`` what the image processor takes
(``images.load_image``). Query and gallery samples also read ``asr``, ``title`` and
``has_category``.

``box_settings`` (``clip_boxes.BoxSettings``, None: off) says how a clip's boxes enter its
frames; ``clip_boxes(record)`` gives them as a ``ClipBoxes`` (``clip_boxes``) or None.

Text (``text``: the model's ``model_config.rice.text``, null = none): the pair and query
samples carry ``asr_tokens`` and the pair and gallery samples ``title_tokens`` (for the texts
the model reads), the ``text_tokenizer`` output for the text encoder (``has_text`` False for a
missing or blank text; ``build_text_processor`` builds it and names the sides). In the train
split each text is dropped (made empty) with probability ``text_dropout``, drawn after the
images from the sample's seeded RNG (exact resume).

With an image processor whose ``output`` is ``uint8`` or ``jpeg``, ``video`` / ``image`` are
uint8 (or ``EncodedVideo`` / ``EncodedImage``) and ``pixel_normalize`` [2,3] carries the
processor's (mean, std): ``mmf.datasets.prefetch.to_device`` finishes them on the device.
"""
import random

import torch
from omegaconf import OmegaConf

from mmf.common.errors import ConfigError
from mmf.common.sample import Sample
from mmf.datasets.builders.videotoshop.clip_boxes import boxed_frames, pad_boxes
from mmf.datasets.processors.image_processors import EncodedVideo
from mmf.utils.build import build_from_type_params

TEXT_SIDES = {"asr": ("asr",), "title": ("title",), "both": ("asr", "title")}


class VideoToShopSamples:
    box_settings = None

    # False for a dataset without ASR or titles: a text model is then a ConfigError.
    has_text = True
    text_processor = None
    text_sides = ()
    text_dropout = 0.0

    def read_image(self, ref, decode="pil"):
        raise NotImplementedError(f"{type(self).__name__} must implement read_image()")

    def init_processors(self):
        super().init_processors()
        text = self.config.get("text")
        if text is None:
            return
        where = f"dataset_config.{self.dataset_name}.text"
        if not self.has_text:
            raise ConfigError(
                f"{where}: {self.dataset_name} has no ASR or titles; a text model "
                f"(model_config.rice.text) cannot train or evaluate on it"
            )
        self.text_processor, self.text_sides = build_text_processor(text, where)
        if self.use_augments:
            self.text_dropout = float(text.get("text_dropout", 0.0) or 0.0)

    def _text_fields(self, **texts):
        """``{<side>_tokens: tokenized text}`` for the sides the model reads."""
        fields = {}
        for side, text in texts.items():
            if self.text_processor is None or side not in self.text_sides:
                continue
            if self.text_dropout > 0 and random.random() < self.text_dropout:
                text = None
            fields[f"{side}_tokens"] = self.text_processor({"text": text})
        return fields

    def clip_boxes(self, record):
        """The boxes of a record's clip: a ``ClipBoxes`` or None (the subclasses')."""
        return None

    def _pair_sample(self, record):
        sample = Sample()
        sample.update(self._video_fields(record.frames, self.clip_boxes(record)))
        sample.update(self._image_fields(record.image_path))
        sample.video_id = record.video_id
        sample.image_id = record.image_id
        sample.live_id = record.live_id
        for key in ("title", "category", "asr"):
            if getattr(record, key) is not None:
                sample[key] = getattr(record, key)
        sample.update(self._text_fields(asr=record.asr, title=record.title))
        return sample

    def _query_sample(self, record):
        sample = Sample()
        sample.update(self._video_fields(record.frames, self.clip_boxes(record)))
        sample.video_id = record.video_id
        sample.live_id = record.live_id
        if self.asr:
            sample.asr = self.asr.get(record.video_id, "")
        if self.has_category:
            sample.category = record.category or ""
        sample.update(self._text_fields(asr=self.asr.get(record.video_id)))
        return sample

    def _gallery_sample(self, record):
        sample = Sample()
        sample.update(self._image_fields(record.path))
        sample.image_id = record.image_id
        sample.live_id = record.live_id
        if self.title:
            sample.title = self.title.get(record.image_id, "")
        sample.update(self._text_fields(title=self.title.get(record.image_id)))
        return sample

    def _video_fields(self, frames, boxes=None):
        """Frame refs -> ``video`` [F,3,H,W], ``video_temporal_mask`` [F] (+ ``video_masks``,
        + ``video_boxes`` [F,4] with ``box_mode: patch_mask``)."""
        slicer = self._processor("masked_video_processor")
        transform = self._image_transform()
        keep = slicer.select(len(frames), use_augments=self.use_augments)
        settings = self.box_settings
        moved = None
        if boxes is not None and settings is not None and settings.mode:
            decode = getattr(transform, "decode", "pil")
            if decode == "jpeg" and settings.mode == "patch_mask":
                raise ConfigError(
                    f"dataset_config.{self.dataset_name}: box_mode patch_mask needs the image "
                    "processors' output float or uint8, not jpeg"
                )
            decoded = [self.read_image(frames[i], decode) for i in keep]
            images, moved = boxed_frames(decoded, boxes, keep, settings, transform)
        else:
            images = [self._read(transform, frames[i]) for i in keep]
        if getattr(transform, "output", "float") == "jpeg":
            fields = slicer.pad(torch.zeros(len(images), 1, dtype=torch.uint8))
            fields["video"] = EncodedVideo(images, slicer.max_temporal_len)
        else:
            fields = slicer.pad(images)
        if settings is not None and settings.mode == "patch_mask":
            height, width = fields["video"].shape[-2:]
            fields["video_boxes"] = pad_boxes(
                moved if moved is not None else torch.zeros(0, 4), slicer.max_temporal_len,
                width, height,
            )
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

    def _read(self, transform, ref):
        return transform(self.read_image(ref, getattr(transform, "decode", "pil")))

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


def build_text_processor(text, where):
    """``(text_tokenizer processor, sides read)`` for a model's ``text`` node (``where`` names
    it in errors): the texts the samples tokenize."""
    tokenizer = {"type": "text_tokenizer", "params": {"encoder": text.get("encoder")}}
    processor = build_from_type_params(
        "processor", OmegaConf.create(tokenizer), f"{where} (text_tokenizer)"
    )
    return processor, TEXT_SIDES.get(text.get("inputs", "both"), ("asr", "title"))


def _normalization(transform):
    """``{"pixel_normalize": [2,3]}`` for a processor that leaves normalising to the device."""
    constants = getattr(transform, "normalization", None)
    return {} if constants is None else {"pixel_normalize": constants}
