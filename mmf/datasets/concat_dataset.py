"""Concatenation of the datasets built from several annotation files of one split."""
import torch


class MMFConcatDataset(torch.utils.data.ConcatDataset):
    def __init__(self, datasets):
        super().__init__(datasets)
        first = self.datasets[0]
        self.dataset_name = first.dataset_name
        self.dataset_type = first.dataset_type

    def init_processors(self):
        for dataset in self.datasets:
            dataset.init_processors()

    @property
    def collate_fn(self):
        return self.datasets[0].collate_fn
