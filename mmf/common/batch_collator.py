"""Collate function that builds a ``SampleList`` and stamps dataset name and split.

A dataset running with ``on_error: skip`` returns ``None`` for an item it could not read;
the collator drops such items and records how many in ``batch.skipped_samples`` so that the
count reaches the main process even when items are loaded in worker processes.
"""
from mmf.common.sample import SampleList


class BatchCollator:
    def __init__(self, dataset_name, dataset_type):
        self.dataset_name = dataset_name
        self.dataset_type = dataset_type

    def __call__(self, samples):
        kept = [sample for sample in samples if sample is not None]
        batch = SampleList(kept) if kept else SampleList()
        batch.dataset_name = self.dataset_name
        batch.dataset_type = self.dataset_type
        batch.skipped_samples = len(samples) - len(kept)
        return batch
