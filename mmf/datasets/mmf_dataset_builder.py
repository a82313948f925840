"""``MMFDatasetBuilder``: one dataset per entry of ``annotations.<split>``, concatenated."""
from mmf.datasets.base_dataset_builder import BaseDatasetBuilder
from mmf.datasets.concat_dataset import MMFConcatDataset


class MMFDatasetBuilder(BaseDatasetBuilder):
    def __init__(self, dataset_name, dataset_class):
        super().__init__(dataset_name)
        self.dataset_class = dataset_class

    def load(self, config, dataset_type="train"):
        annotations = (config.get("annotations") or {}).get(dataset_type) or []
        if isinstance(annotations, str):
            annotations = [annotations]
        if not annotations:
            return None
        datasets = [
            self.dataset_class(config, dataset_type, index) for index in range(len(annotations))
        ]
        return datasets[0] if len(datasets) == 1 else MMFConcatDataset(datasets)
