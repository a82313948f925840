"""Collate function that builds a ``SampleList`` and stamps dataset name and split."""
from mmf.common.sample import SampleList


class BatchCollator:
    def __init__(self, dataset_name, dataset_type):
        self.dataset_name = dataset_name
        self.dataset_type = dataset_type

    def __call__(self, samples):
        batch = SampleList(samples)
        batch.dataset_name = self.dataset_name
        batch.dataset_type = self.dataset_type
        return batch
