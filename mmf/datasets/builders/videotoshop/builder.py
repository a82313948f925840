"""``videotoshop`` builder (LPR4M / LPR750K) and the helpers the evaluation scripts use.

``load_dataset(config, split)`` builds one ``VideoToShopDataset`` per entry of
``annotations.<split>`` (concatenated when there are several; None when the split lists
none; ``auto``, the default of train and val, picks the files of the first
``known_annotations.<split>`` entry that exists: ``mmf_dataset.annotation_files``). The
test split lists the query json (index 0) and the gallery txt (index 1).

Helper API (``config`` is the dataset's config node, ``dataset_config.videotoshop``)::

    builder = registry.get_builder_class("videotoshop")()
    queries = builder.load_query(config)        # dataset of query clips (no image)
    gallery = builder.load_gallery(config)      # dataset of gallery images (no video)
    builder.ground_truth(config)      # {video_id: [image_id, ...]} from ground_truth_file
    builder.live_galleries(config)    # {live_id: [image_id, ...]} from live_gallery_file,
                                      #   else from the live_id/ prefix of the gallery lines
                                      #   (load_gallery logs where the two differ)
    builder.query_categories(config)  # {video_id: category} for the clips that have one
    builder.attach_query_boxes(config, queries, "gt")   # boxes of the query frames (--boxes)
    builder.query_breakdowns(config, queries)  # scale / duration / products labels, sources

Ids are file stems everywhere (``mmf.datasets.ids.normalize_id``), so they compare as plain strings.
"""
import collections
import logging
import os

from mmf.common.errors import ConfigError, DataError
from mmf.common.registry import registry
from mmf.datasets.boxes import read_box_json
from mmf.datasets.builders.videotoshop import database
from mmf.datasets.builders.videotoshop.dataset import VideoToShopDataset
from mmf.datasets.builders.videotoshop.shards import ShardDataset
from mmf.datasets.mmf_dataset import annotation_files
from mmf.datasets.mmf_dataset_builder import MMFDatasetBuilder

logger = logging.getLogger(__name__)


@registry.register_builder("videotoshop")
class VideoToShopBuilder(MMFDatasetBuilder):
    def __init__(
        self, dataset_name="videotoshop", dataset_class=VideoToShopDataset, *args, **kwargs
    ):
        super().__init__(dataset_name, dataset_class)

    @classmethod
    def config_path(cls):
        return "configs/datasets/videotoshop/defaults.yaml"

    def load(self, config, dataset_type="train"):
        """The train split reads ``shards`` when set (``shards.ShardDataset``), else files."""
        if dataset_type == "train" and config.get("shards"):
            return ShardDataset(config, dataset_type)
        return super().load(config, dataset_type)

    def load_query(self, config, dataset_type="test"):
        """The query-clip dataset of ``dataset_type``, processors initialised."""
        return self._load_kind(config, dataset_type, "query")

    def load_gallery(self, config, dataset_type="test"):
        """The gallery-image dataset of ``dataset_type``, processors initialised. When
        ``live_gallery_file`` (a test-split file) matches a file, how it differs from the test
        gallery list's ``live_id/`` prefixes (what the ranking uses) is logged as a warning."""
        dataset = self._load_kind(config, dataset_type, "gallery")
        path = self._find(config, "live_gallery_file", required=False)
        if path and dataset_type == "test":
            grouped = collections.defaultdict(list)
            for record in dataset.records:
                grouped[record.live_id].append(record.image_id)
            differences = database.gallery_differences(database.read_id_lists_json(path), grouped)
            if differences:
                logger.warning(
                    "%s and %s disagree (the ranking uses the gallery list): %s",
                    path, dataset.annotation_path, "; ".join(differences),
                )
        return dataset

    def ground_truth(self, config):
        """``{video_id: [image_id, ...]}`` from the file matching ``ground_truth_file``."""
        path = self._find(config, "ground_truth_file", required=True)
        return database.read_id_lists_json(path)

    def live_galleries(self, config, dataset_type="test"):
        """``{live_id: [image_id, ...]}``: ``live_gallery_file`` when a file matches, else the
        gallery list of ``dataset_type`` grouped by its ``live_id/`` prefix."""
        path = self._find(config, "live_gallery_file", required=False)
        if path:
            return database.read_id_lists_json(path)
        galleries = collections.defaultdict(list)
        for record in self._read_gallery(self._kind_path(config, dataset_type, "gallery")):
            galleries[record.live_id].append(record.image_id)
        return dict(galleries)

    def query_categories(self, config, dataset_type="test"):
        """``{video_id: category}`` for the query clips whose json entry has a category."""
        records = self._read_queries(self._kind_path(config, dataset_type, "query"))
        return {r.video_id: r.category for r in records if r.category is not None}

    def attach_query_boxes(self, config, queries, source="auto"):
        """Give the query dataset ``queries`` the boxes of ``source`` and describe them.

        source: ``none``; ``gt`` (the file matching ``test_box_file``, for val queries
        ``val_box_file``, whose absence leaves a val split's frames whole; pixel boxes scaled
        to the stored frames with ``frame_sizes_file.query``); a path (a predicted-box json, same
        layout, pixels of the stored frame: ``scripts/detect_boxes.py``); ``auto``: ``gt`` when
        the model has a ``box_mode``, else ``none``. Returns ``{"source", "box_mode", ...}``
        with, for a file, ``file``, ``units``, ``box_rule`` and the encoded frames with a box
        (``frames_with_box``) and on the full frame (``frames_full_frame``, no box there)."""
        mode = queries.box_settings.mode
        if source == "auto":
            source = "gt" if mode else "none"
        if source == "none":
            return {"source": "none", "box_mode": mode}
        if mode is None:
            raise ConfigError(
                f"--boxes {source}: the model has no box_mode (model_config.rice.box_mode is "
                "null), so boxes would change nothing; use --boxes none"
            )
        if source == "gt":
            key = database.side_file_key("boxes", queries.dataset_type)
            path = self._find(config, key, required=queries.dataset_type == "test")
            if path is None:
                logger.warning(
                    "%s split: no file matches dataset_config.%s.%s; its query frames stay "
                    "whole", queries.dataset_type, self.dataset_name, key,
                )
                return {"source": "none", "box_mode": mode}
        elif os.path.isfile(source):
            path = source
        else:
            raise DataError(f"--boxes {source}: no such box file (none, gt or a json file)")
        # A predicted-box file is in pixels of the stored frame already (detect_boxes.py).
        sizes = queries.load_frame_sizes() if source == "gt" else None
        table = read_box_json(
            path, frame_ids=_query_frame_ids(queries), sizes=sizes, on_error=queries.on_error
        )
        queries.use_box_table(table)
        boxed, full = queries.box_counts()
        logger.info(
            "query boxes from %s (%s): %d encoded frames with a box, %d on the full frame",
            path, source, boxed, full,
        )
        return {
            "source": "gt" if source == "gt" else "file", "file": path, "units": table.units,
            "box_mode": mode, "box_rule": queries.box_settings.rule,
            "frames_with_box": boxed, "frames_full_frame": full,
        }

    def query_breakdowns(self, config, queries):
        """``(labels, sources)``: ``{name: {video_id: label}}`` of the LPR4M breakdowns the
        query json carries (``scale``, ``duration``, ``products``), and how each was obtained.
        Without ``scale`` in the json, scale is derived from the ground-truth boxes
        (``test_box_file``, when a file matches, with ``frame_sizes_file.query``:
        ``VideoToShopDataset.derived_scale``)."""
        labels, sources = {}, {}
        for name in database.BREAKDOWNS:
            mapping = {
                r.video_id: r.breakdowns[name] for r in queries.records
                if r.breakdowns and name in r.breakdowns
            }
            if mapping:
                labels[name], sources[name] = mapping, "annotation (query json)"
        path = self._find(config, "test_box_file", required=False)
        if "scale" not in labels and path:
            table = queries.box_table
            if table is None or table.path != path:
                table = read_box_json(
                    path, frame_ids=_query_frame_ids(queries), sizes=queries.load_frame_sizes(),
                    on_error=queries.on_error,
                )
            labels["scale"] = queries.derived_scale(table)
            sources["scale"] = (
                f"derived from the ground-truth boxes of {path}: mean area fraction of the "
                f"intended box ({queries.box_settings.rule}) <= 0.2 is small"
            )
        return labels, sources

    def _read_queries(self, path):
        return database.read_query_json(path)

    def _read_gallery(self, path):
        return database.read_gallery_txt(path)

    def _find(self, config, key, required):
        return database.find_annotation_file(
            str(config.get("data_dir") or ""), config.get(key),
            f"dataset_config.{self.dataset_name}.{key}", required,
        )

    def _entries(self, config, dataset_type):
        return annotation_files(config, dataset_type, self.dataset_name)

    def _kind_index(self, config, dataset_type, kind):
        data_dir = str(config.get("data_dir") or "")
        entries = self._entries(config, dataset_type)
        for index, entry in enumerate(entries):
            if database.annotation_kind(os.path.join(data_dir, entry)) == kind:
                return index
        raise ConfigError(
            f"dataset_config.{self.dataset_name}.annotations.{dataset_type} has no {kind} "
            f"annotation file (entries: {entries})"
        )

    def _kind_path(self, config, dataset_type, kind):
        index = self._kind_index(config, dataset_type, kind)
        entry = self._entries(config, dataset_type)[index]
        return os.path.join(str(config.get("data_dir") or ""), entry)

    def _load_kind(self, config, dataset_type, kind):
        index = self._kind_index(config, dataset_type, kind)
        dataset = self.dataset_class(config, dataset_type, index)
        dataset.init_processors()
        return dataset


def _query_frame_ids(queries):
    """Every frame id of the query clips (a box file may name no other frame)."""
    return [frame for record in queries.records for frame in record.frames]
