"""``BaseDatasetBuilder``: builds the dataset of one split from the dataset's config node.

Builders are registered with ``@registry.register_builder(name)`` and constructed without
arguments. ``config_path()`` names their default yaml; ``load_dataset(config, split)``
returns a dataset with processors initialised (or None when the split has no annotations).
"""


class BaseDatasetBuilder:
    def __init__(self, dataset_name):
        self.dataset_name = dataset_name

    @classmethod
    def config_path(cls):
        return None

    def build(self, config, dataset_type="train"):
        """Prepare data on disk (runs on rank 0 before ``load``); a no-op by default."""

    def load(self, config, dataset_type="train"):
        raise NotImplementedError(f"{type(self).__name__} must implement load()")

    def load_dataset(self, config, dataset_type="train"):
        dataset = self.load(config, dataset_type)
        if dataset is not None:
            dataset.init_processors()
        return dataset
