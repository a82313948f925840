"""``VideoToShopDataset``: LPR clips and shop images as ``Sample``s.

One dataset reads one annotation file (``annotations.<split>[index]``); what it yields
follows from the file (``database.annotation_kind``):

- ``pairs`` (tab-separated train/val file, LPR4M or LPR750K layout):
  ``video`` [F,3,H,W] float, ``video_temporal_mask`` [F] long (1 = real frame),
  ``image`` [3,H,W] float, ``video_id``, ``image_id``, ``live_id``, ``title``, ``category``, ``asr``;
- ``query`` (``query_tenframes.json``; no image): ``video``, ``video_temporal_mask``,
  ``video_id``, ``live_id``, plus ``asr`` when ``asr_file`` matches a file and ``category``
  when the json has categories ("" for clips without one);
- ``gallery`` (``gallery_main.txt``; no video): ``image``, ``image_id``, ``live_id``, plus
  ``title`` when ``title_file`` matches a file.

With a ``masked_image_processor``, ``image_masks`` [h,w] and ``video_masks`` [F,h,w]
(temporal mask x block-wise mask) come along; RICE does not read them.

Frames are transformed one by one by ``train_image_processor`` (train split) or
``eval_image_processor`` (val / test) and only the frames that ``masked_video_processor``
keeps are decoded. Augmentation (random crops, flips, frame cuts, patch masks) happens only
in the train split, so val / test items are deterministic.

A missing or corrupt image raises ``DataError`` naming its path; with ``on_error: skip`` the
item is logged and ``__getitem__`` returns None (the ``BatchCollator`` drops and counts it).
A malformed annotation line always raises, naming file and line.
"""
import logging
import os

from mmf.common.errors import ConfigError
from mmf.common.sample import Sample
from mmf.datasets.builders.videotoshop import database
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, load_rgb
from mmf.datasets.mmf_dataset import MMFDataset

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")
DEBUG_MAX_LINES = 10000


class VideoToShopDataset(MMFDataset):
    dataset_name = "videotoshop"

    def __init__(self, config, dataset_type="train", index=0, *args, **kwargs):
        super().__init__(self.dataset_name, config, dataset_type, index)
        self.on_error = str(config.get("on_error", "raise"))
        if self.on_error not in ON_ERROR_CHOICES:
            raise ConfigError(
                f"dataset_config.{self.dataset_name}.on_error must be one of {ON_ERROR_CHOICES}, "
                f"got {self.on_error!r}"
            )
        if config.get("use_features"):
            raise ConfigError(f"dataset_config.{self.dataset_name}.use_features: features are not supported")
        self.use_augments = dataset_type == "train"
        self.kind = database.annotation_kind(self.annotation_path)
        self.asr = {}
        self.title = {}
        if self.kind == "pairs":
            self.records = self._read_pairs(DEBUG_MAX_LINES if config.get("debug") else None)
        elif self.kind == "query":
            self.records = self._read_queries()
            self.asr = self._optional_text_map("asr_file")
        else:
            self.records = self._read_gallery()
            self.title = self._optional_text_map("title_file")
        self.has_category = self.kind == "query" and any(r.category is not None for r in self.records)
        logger.info(
            "%s %s[%d]: %d items (%s) from %s",
            self.dataset_name, dataset_type, index, len(self.records), self.kind, self.annotation_path,
        )

    def _read_pairs(self, max_lines):
        return database.LPRPairAnnotations(
            self.annotation_path,
            frames_dir=self.config.get("train_frames_dir", "training_frames"),
            images_dir=self.config.get("train_images_dir", "training_images"),
            read_boxes=bool(self.config.get("crop_to_box", False)),
            max_lines=max_lines,
        )

    def _read_queries(self):
        return database.read_query_json(self.annotation_path)

    def _read_gallery(self):
        return database.read_gallery_txt(self.annotation_path)

    def _optional_text_map(self, key):
        path = database.find_annotation_file(
            self.data_dir, self.config.get(key), f"dataset_config.{self.dataset_name}.{key}", required=False
        )
        return database.read_text_map(path) if path else {}

    def __len__(self):
        return len(self.records)

    def __getitem__(self, idx):
        record = self.records[idx]
        try:
            if self.kind == "pairs":
                return self._pair_sample(record)
            if self.kind == "query":
                return self._query_sample(record)
            return self._gallery_sample(record)
        except UnreadableImageError as err:
            if self.on_error == "skip":
                logger.warning(
                    "skipping %s item %d of %s: %s", self.dataset_type, idx, self.annotation_path, err
                )
                return None
            raise

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
        """Frame paths -> ``video`` [F,3,H,W], ``video_temporal_mask`` [F] (+ ``video_masks``)."""
        slicer = self._processor("masked_video_processor")
        transform = self._image_transform()
        keep = slicer.select(len(frames), use_augments=self.use_augments)
        fields = slicer.pad(
            [
                transform(load_rgb(os.path.join(self.image_dir, frames[i]), boxes[i] if boxes else None))
                for i in keep
            ]
        )
        masker = getattr(self, "masked_image_processor", None)
        if masker is not None:
            patches = masker(use_augments=self.use_augments)
            fields["video_masks"] = fields["video_temporal_mask"][:, None, None] * patches
        return fields

    def _image_fields(self, path):
        fields = {"image": self._image_transform()(load_rgb(os.path.join(self.image_dir, path)))}
        masker = getattr(self, "masked_image_processor", None)
        if masker is not None:
            fields["image_masks"] = masker(use_augments=self.use_augments)
        return fields

    def _image_transform(self):
        return self._processor("train_image_processor" if self.use_augments else "eval_image_processor")

    def _processor(self, key):
        processor = getattr(self, key, None)
        if processor is None:
            raise ConfigError(
                f"dataset_config.{self.dataset_name}.processors.{key} is required "
                f"(and init_processors() must have run)"
            )
        return processor

