"""``videotoshop`` builder (LPR4M / LPR750K) and the helpers the evaluation scripts use.

``load_dataset(config, split)`` builds one ``VideoToShopDataset`` per entry of
``annotations.<split>`` (concatenated when there are several; None when the split lists
none). The test split lists the query json (index 0) and the gallery txt (index 1).

Helper API (``config`` is the dataset's config node, ``dataset_config.videotoshop``)::

    builder = registry.get_builder_class("videotoshop")()
    queries = builder.load_query(config)        # dataset of query clips (no image)
    gallery = builder.load_gallery(config)      # dataset of gallery images (no video)
    builder.ground_truth(config)      # {video_id: [image_id, ...]} from ground_truth_file
    builder.live_galleries(config)    # {live_id: [image_id, ...]} from live_gallery_file,
                                      #   else from the live_id/ prefix of the gallery lines
    builder.query_categories(config)  # {video_id: category} for the clips that have one

Ids are file stems everywhere (``mmf.datasets.ids.normalize_id``), so they compare as plain strings.
"""
import collections
import os

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.builders.videotoshop import database
from mmf.datasets.builders.videotoshop.dataset import VideoToShopDataset
from mmf.datasets.mmf_dataset_builder import MMFDatasetBuilder


@registry.register_builder("videotoshop")
class VideoToShopBuilder(MMFDatasetBuilder):
    def __init__(self, dataset_name="videotoshop", dataset_class=VideoToShopDataset, *args, **kwargs):
        super().__init__(dataset_name, dataset_class)

    @classmethod
    def config_path(cls):
        return "configs/datasets/videotoshop/defaults.yaml"

    def load_query(self, config, dataset_type="test"):
        """The query-clip dataset of ``dataset_type``, processors initialised."""
        return self._load_kind(config, dataset_type, "query")

    def load_gallery(self, config, dataset_type="test"):
        """The gallery-image dataset of ``dataset_type``, processors initialised."""
        return self._load_kind(config, dataset_type, "gallery")

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
        entries = (config.get("annotations") or {}).get(dataset_type) or []
        return [entries] if isinstance(entries, str) else list(entries)

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
        return os.path.join(str(config.get("data_dir") or ""), self._entries(config, dataset_type)[index])

    def _load_kind(self, config, dataset_type, kind):
        dataset = self.dataset_class(config, dataset_type, self._kind_index(config, dataset_type, kind))
        dataset.init_processors()
        return dataset
