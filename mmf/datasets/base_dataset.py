"""``BaseDataset``: a torch Dataset that knows its name, split and processors."""
import torch

from mmf.common.batch_collator import BatchCollator
from mmf.utils.build import build_processors


class BaseDataset(torch.utils.data.Dataset):
    """Subclasses implement ``__len__`` and ``__getitem__`` returning a ``Sample``.

    ``init_processors`` turns ``config.processors.<key>: {type, params}`` into attributes
    ``self.<key>`` (for example ``self.train_image_processor``).
    """

    def __init__(self, dataset_name, config, dataset_type="train", *args, **kwargs):
        super().__init__()
        self.dataset_name = dataset_name
        self.config = config
        self.dataset_type = dataset_type

    def init_processors(self):
        processors = build_processors(
            self.config.get("processors") or {},
            where=f"dataset_config.{self.dataset_name}.processors",
            data_dir=self.config.get("data_dir"),
        )
        for key, processor in processors.items():
            setattr(self, key, processor)

    @property
    def collate_fn(self):
        return BatchCollator(self.dataset_name, self.dataset_type)
