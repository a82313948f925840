"""``MMFDataset``: a dataset reading annotation file ``annotations.<split>[index]``."""
import os

from mmf.datasets.base_dataset import BaseDataset


class MMFDataset(BaseDataset):
    """Resolves the annotation and image paths of entry ``index`` against ``config.data_dir``.

    Attributes: ``annotation_path`` (absolute path of the annotation file) and
    ``image_dir`` (``data_dir/images.<split>[index]``, or ``data_dir`` when unset).
    """

    def __init__(self, dataset_name, config, dataset_type="train", index=0, *args, **kwargs):
        super().__init__(dataset_name, config, dataset_type)
        self.index = index
        self.data_dir = str(config.get("data_dir") or "")
        annotations = _as_list((config.get("annotations") or {}).get(dataset_type))
        images = _as_list((config.get("images") or {}).get(dataset_type))
        if index >= len(annotations):
            raise IndexError(
                f"dataset_config.{dataset_name}.annotations.{dataset_type} has "
                f"{len(annotations)} entries; index {index} requested"
            )
        self.annotation_path = os.path.join(self.data_dir, annotations[index])
        image_rel = images[index] if index < len(images) else ""
        self.image_dir = os.path.join(self.data_dir, image_rel or "")


def _as_list(value):
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)
