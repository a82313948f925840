"""Samplers whose order depends only on (seed, epoch), so a run can resume mid-epoch."""
import torch
from torch.utils.data import DistributedSampler, Sampler


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after its first ``n`` indices.

    Used for training also with one process (``num_replicas=1``): the permutation of an
    epoch is ``randperm(len, seed + epoch)`` whatever the launch, and ``skip(n)`` before
    iterating replays a partly consumed epoch from where a checkpoint left it.
    """

    def __init__(self, dataset, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=False):
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.start = 0

    def skip(self, num_indices):
        """Leave out the first ``num_indices`` indices of the next pass (this epoch only)."""
        self.start = max(0, int(num_indices))

    def set_epoch(self, epoch):
        super().set_epoch(epoch)
        self.start = 0

    def __iter__(self):
        indices = list(super().__iter__())[self.start :]
        return iter(indices)

    def __len__(self):
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler):
    """Indices ``rank, rank + W, ...`` in order, without the padding ``DistributedSampler``
    adds: every sample is evaluated exactly once over all ranks."""

    def __init__(self, dataset, num_replicas=1, rank=0):
        self.indices = range(rank, len(dataset), num_replicas)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def seeded_generator(seed):
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator
