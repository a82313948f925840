"""``MovingFashionDataset``: MovingFashion clips and shop images as ``Sample``s.

Same samples as ``VideoToShopDataset`` (see there for fields and shapes) without the text
fields; ``live_id`` is always ``"movingfashion"`` (one global gallery).
"""
from mmf.datasets.builders.movingfashion import database
from mmf.datasets.builders.videotoshop.dataset import VideoToShopDataset


class MovingFashionDataset(VideoToShopDataset):
    dataset_name = "movingfashion"
    has_text = False

    def _read_pairs(self, max_lines):
        return database.MovingFashionPairAnnotations(
            self.annotation_path, max_lines, skip_malformed=self.on_error == "skip"
        )

    def _read_queries(self):
        return database.read_queries(self.annotation_path)

    def _read_gallery(self):
        return database.read_gallery(self.annotation_path)
