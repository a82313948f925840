"""``VideoToShopDataset``: LPR clips and shop images as ``Sample``s.

One dataset reads one annotation file (``annotations.<split>[index]``); what it yields
follows from the file (``database.annotation_kind``):

- ``pairs`` (tab-separated train/val file, LPR4M or LPR750K layout):
  ``video`` [F,3,H,W] float, ``video_temporal_mask`` [F] long (1 = real frame),
  ``image`` [3,H,W] float, ``video_id``, ``image_id``, ``live_id``, ``title``, ``category``,
  ``asr``;
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
Every line of a pair file is validated when the dataset is built (before training starts):
a malformed line raises, naming file and line; with ``on_error: skip`` it is left out, and
the count and the first lines are logged. Query and gallery files always raise.
"""
import logging
import os

from mmf.common.errors import ConfigError
from mmf.datasets.builders.videotoshop import database
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, load_image
from mmf.datasets.builders.videotoshop.samples import VideoToShopSamples
from mmf.datasets.mmf_dataset import MMFDataset

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")
DEBUG_MAX_LINES = 10000


class VideoToShopDataset(VideoToShopSamples, MMFDataset):
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
            raise ConfigError(
                f"dataset_config.{self.dataset_name}.use_features: features are not supported"
            )
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
        self.has_category = self.kind == "query" and any(
            r.category is not None for r in self.records
        )
        logger.info(
            "%s %s[%d]: %d items (%s) from %s",
            self.dataset_name, dataset_type, index, len(self.records), self.kind,
            self.annotation_path,
        )

    def _read_pairs(self, max_lines):
        return database.LPRPairAnnotations(
            self.annotation_path,
            frames_dir=self.config.get("train_frames_dir", "training_frames"),
            images_dir=self.config.get("train_images_dir", "training_images"),
            read_boxes=bool(self.config.get("crop_to_box", False)),
            max_lines=max_lines,
            skip_malformed=self.on_error == "skip",
        )

    def _read_queries(self):
        return database.read_query_json(self.annotation_path)

    def _read_gallery(self):
        return database.read_gallery_txt(self.annotation_path)

    def _optional_text_map(self, key):
        path = database.find_annotation_file(
            self.data_dir, self.config.get(key), f"dataset_config.{self.dataset_name}.{key}",
            required=False,
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
                    "skipping %s item %d of %s: %s",
                    self.dataset_type, idx, self.annotation_path, err,
                )
                return None
            raise

    def read_image(self, ref, boxes=None, decode="pil"):
        """``ref``: a frame or image path relative to ``image_dir``."""
        return load_image(os.path.join(self.image_dir, ref), boxes, decode)
