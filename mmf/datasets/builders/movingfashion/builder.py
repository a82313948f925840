"""``movingfashion`` builder: the files written by ``prepare_movingfashion.py``.

Same helper API as the ``videotoshop`` builder (``load_query``, ``load_gallery``,
``ground_truth``, ``live_galleries``, ``query_categories``), plus::

    builder.query_difficulty(config)  # {video_id: "regular" | "hard"}, {} if not recorded

``ground_truth`` reads ``video_to_gt.json`` (``ground_truth_file``); ``live_galleries`` is
``{"movingfashion": [every gallery image id]}``.
"""
from mmf.common.registry import registry
from mmf.datasets.builders.movingfashion import database
from mmf.datasets.builders.movingfashion.dataset import MovingFashionDataset
from mmf.datasets.builders.videotoshop.builder import VideoToShopBuilder


@registry.register_builder("movingfashion")
class MovingFashionBuilder(VideoToShopBuilder):
    def __init__(
        self, dataset_name="movingfashion", dataset_class=MovingFashionDataset, *args, **kwargs
    ):
        super().__init__(dataset_name, dataset_class)

    @classmethod
    def config_path(cls):
        return "configs/datasets/movingfashion/defaults.yaml"

    def ground_truth(self, config):
        return database.read_video_to_gt(self._find(config, "ground_truth_file", required=True))[0]

    def query_difficulty(self, config):
        return database.read_video_to_gt(self._find(config, "ground_truth_file", required=True))[1]

    def live_galleries(self, config, dataset_type="test"):
        records = self._read_gallery(self._kind_path(config, dataset_type, "gallery"))
        return {database.GALLERY_ID: [record.image_id for record in records]}

    def _read_queries(self, path):
        return database.read_queries(path)

    def _read_gallery(self, path):
        return database.read_gallery(path)
