"""``VideoToShopDataset``: LPR clips and shop images as ``Sample``s.

One dataset reads one annotation file (``annotations.<split>[index]``); what it yields
follows from the file (``database.annotation_kind``):

- ``pairs`` (tab-separated train/val file, LPR4M or LPR750K layout):
  ``video`` [F,3,H,W] float, ``video_temporal_mask`` [F] long (1 = real frame),
  ``image`` [3,H,W] float, ``video_id``, ``image_id``, ``live_id``, ``title``, ``category``,
  ``asr``;
- ``query`` (``query_tenframes.json``; no image): ``video``, ``video_temporal_mask``,
  ``video_id``, ``live_id``, plus ``asr`` when the split's ASR file (``asr_file``, for val
  ``val_asr_file``) matches a file and ``category`` when the json has categories ("" for clips
  without one);
- ``gallery`` (``gallery_main.txt``; no video): ``image``, ``image_id``, ``live_id``, plus
  ``title`` when the split's title file (``title_file``, for val ``val_title_file``) matches.

With a ``masked_image_processor``, ``image_masks`` [h,w] and ``video_masks`` [F,h,w]
(temporal mask x block-wise mask) come along; RICE does not read them.

Frames are transformed one by one by ``train_image_processor`` (train split) or
``eval_image_processor`` (val / test) and only the frames that ``masked_video_processor``
keeps are decoded. Augmentation (random crops, flips, frame cuts, patch masks) happens only
in the train split, so val / test items are deterministic.

Boxes (``clip_boxes``; ``box_mode`` follows ``model_config.rice.box_mode``): train / val pair
files give them in column 3 (units decided per file from its first lines and logged); query
clips get them from a box json through ``use_box_table`` (the evaluation's ``--boxes``).
``video_boxes`` [F,4] comes along with ``box_mode: patch_mask``. Pixel boxes of a frame listed
in the frame-size file of the file's kind (``frame_sizes_file.pairs`` / ``.query``,
``load_frame_sizes``) are scaled from its annotated size to its stored size.

A missing or corrupt image raises ``DataError`` naming its path; with ``on_error: skip`` the
item is logged and ``__getitem__`` returns None (the ``BatchCollator`` drops and counts it).
Every line of a pair file is validated when the dataset is built (before training starts):
a malformed line raises, naming file and line; with ``on_error: skip`` it is left out, and
the count and the first lines are logged. Query and gallery files always raise.
"""
import logging
import os
from collections.abc import Mapping

from PIL import Image

from mmf.common.errors import ConfigError
from mmf.datasets.boxes import PIXELS, read_frame_sizes, select_boxes, train_column_units
from mmf.datasets.builders.videotoshop import database
from mmf.datasets.builders.videotoshop.clip_boxes import BoxSettings, ColumnBoxes, TableBoxes
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, load_image
from mmf.datasets.builders.videotoshop.samples import VideoToShopSamples
from mmf.datasets.ids import normalize_id
from mmf.datasets.mmf_dataset import MMFDataset

logger = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("raise", "skip")
# The original's threshold: a product whose box covers at most 20 % of the frame is "small".
SMALL_AREA = 0.2
DEBUG_MAX_LINES = 10000
# The annotation kinds whose frames carry boxes: the keys of frame_sizes_file.
SIZED_KINDS = ("pairs", "query")


def frame_sizes_of(path):
    """``read_frame_sizes(path)``, with one log line."""
    sizes = read_frame_sizes(path)
    resized = sum(size.resized for size in sizes.values())
    logger.info(
        "%s: sizes of %d frames (%d resized after annotation); their pixel boxes are scaled "
        "from the annotated to the stored size", path, len(sizes), resized,
    )
    return sizes


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
        self.box_settings = BoxSettings(config, self.dataset_name)
        self.box_units = None
        self.box_table = None
        self.frame_sizes = {}
        self.kind = database.annotation_kind(self.annotation_path)
        self.asr = {}
        self.title = {}
        if self.kind == "pairs":
            self.records = self._read_pairs(DEBUG_MAX_LINES if config.get("debug") else None)
        elif self.kind == "query":
            self.records = self._read_queries()
            self.asr = self._optional_text_map("asr")
        else:
            self.records = self._read_gallery()
            self.title = self._optional_text_map("title")
        self.has_category = self.kind == "query" and any(
            r.category is not None for r in self.records
        )
        logger.info(
            "%s %s[%d]: %d items (%s) from %s",
            self.dataset_name, dataset_type, index, len(self.records), self.kind,
            self.annotation_path,
        )

    def _read_pairs(self, max_lines):
        read_boxes = self.box_settings.mode is not None
        pairs = database.LPRPairAnnotations(
            self.annotation_path,
            frames_dir=self.config.get("train_frames_dir", "training_frames"),
            images_dir=self.config.get("train_images_dir", "training_images"),
            read_boxes=read_boxes,
            max_lines=max_lines,
            skip_malformed=self.on_error == "skip",
        )
        if read_boxes and pairs.layout == database.LPR4M:
            self.box_units = train_column_units(self.annotation_path)
            self.frame_sizes = self.load_frame_sizes()
        return pairs

    def load_frame_sizes(self):
        """``{frame_id: FrameSize}`` from the file matching ``frame_sizes_file.<kind>`` (kind
        ``pairs`` or ``query``, this file's); {} when unset or no file matches."""
        key = f"dataset_config.{self.dataset_name}.frame_sizes_file"
        node = self.config.get("frame_sizes_file") or {}
        if not isinstance(node, Mapping) or not set(node) <= set(SIZED_KINDS):
            raise ConfigError(
                f"{key} must map {' and / or '.join(SIZED_KINDS)} to a file pattern, got {node!r}"
            )
        path = database.find_annotation_file(
            self.data_dir, node.get(self.kind), f"{key}.{self.kind}", required=False
        )
        return frame_sizes_of(path) if path else {}

    def use_box_table(self, table):
        """Query clips take their boxes from ``table`` (a ``BoxTable``; None: no boxes)."""
        self.box_table = table

    def box_counts(self):
        """``(frames with a box, frames on the full frame)`` over the frames the query clips
        encode (the evaluation's frame selection), under ``box_rule``; (0, 0) without a table."""
        if self.box_table is None or self.kind != "query":
            return 0, 0
        slicer = self._processor("masked_video_processor")
        boxed = total = 0
        for record in self.records:
            has_box = TableBoxes(self.box_table, record.frames).has_box(self.box_settings.rule)
            keep = slicer.select(len(record.frames), use_augments=False)
            boxed += sum(has_box[i] for i in keep)
            total += len(keep)
        return boxed, total - boxed

    def derived_scale(self, table, small=SMALL_AREA):
        """``{video_id: "small" | "large"}`` from ``table``'s boxes: the mean, over a clip's
        frames with a box, of the intended box's area over the frame's (``box_rule``); at most
        ``small`` (the original's 0.2) is small. Clips without a box get no label."""
        labels = {}
        for record in self.records:
            if table.units == PIXELS:
                with Image.open(os.path.join(self.image_dir, record.frames[0])) as header:
                    width, height = header.size
            else:
                width, height = 1, 1
            chosen = select_boxes(
                TableBoxes(table, record.frames).pixels(width, height), self.box_settings.rule,
                (width, height),
            )
            areas = [(b[2] - b[0]) * (b[3] - b[1]) / (width * height) for b in chosen
                     if b is not None]
            if areas:
                labels[record.video_id] = "small" if sum(areas) / len(areas) <= small else "large"
        return labels

    def clip_boxes(self, record):
        """The ``ClipBoxes`` of a pair or query record, or None."""
        if self.kind == "query":
            return None if self.box_table is None else TableBoxes(self.box_table, record.frames)
        if record.boxes is None or self.box_units is None:
            return None
        sizes = None
        if self.frame_sizes:
            sizes = [self.frame_sizes.get(normalize_id(frame)) for frame in record.frames]
        return ColumnBoxes(record.boxes, self.box_units, record.where, self.on_error, sizes)

    def _read_queries(self):
        return database.read_query_json(self.annotation_path)

    def _read_gallery(self):
        return database.read_gallery_txt(self.annotation_path)

    def _optional_text_map(self, side):
        """``{id: text}`` from this split's ``side`` file (``database.side_file_key``), {}
        when no file matches."""
        key = database.side_file_key(side, self.dataset_type)
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

    def read_image(self, ref, decode="pil"):
        """``ref``: a frame or image path relative to ``image_dir``."""
        return load_image(os.path.join(self.image_dir, ref), decode)
