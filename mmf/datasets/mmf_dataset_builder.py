"""``MMFDatasetBuilder``: one dataset per entry of ``annotations.<split>``, concatenated."""
from mmf.datasets.base_dataset_builder import BaseDatasetBuilder
from mmf.datasets.concat_dataset import MMFConcatDataset
from mmf.datasets.mmf_dataset import annotation_files


class MMFDatasetBuilder(BaseDatasetBuilder):
    def __init__(self, dataset_name, dataset_class):
        super().__init__(dataset_name)
        self.dataset_class = dataset_class

    def load(self, config, dataset_type="train"):
        annotations = annotation_files(config, dataset_type, self.dataset_name, log=True)
        if not annotations:
            return None
        datasets = [
            self.dataset_class(config, dataset_type, index) for index in range(len(annotations))
        ]
        return datasets[0] if len(datasets) == 1 else MMFConcatDataset(datasets)
