"""Samplers whose order depends only on (seed, epoch), so a run can resume mid-epoch, and
per-sample seeds, so that its random augmentation does too (also with loader workers)."""
import contextlib
import hashlib
import itertools
import random
import signal
import struct

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler


def sample_seed(seed, epoch, position):
    """The seed of the sample at ``position`` of ``epoch``'s order: a 64-bit hash of the
    three numbers."""
    key = struct.pack("<qqq", int(seed), int(epoch), int(position))
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


class ResumableDistributedSampler(DistributedSampler):
    """``DistributedSampler`` that can start an epoch after its first ``n`` indices and
    yields ``(index, sample_seed)`` pairs for ``SeededSamples``.

    Used for training also with one process (``num_replicas=1``): the permutation of an
    epoch is ``randperm(len, seed + epoch)`` whatever the launch, and ``skip(n)`` before
    iterating replays a partly consumed epoch from where a checkpoint left it. A sample's
    seed is ``sample_seed(seed, epoch, position)``, ``position`` being its place in the
    epoch's order over all ranks (``rank + i * num_replicas``).
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
        positions = range(self.rank, self.total_size, self.num_replicas)
        pairs = itertools.islice(zip(super().__iter__(), positions, strict=True), self.start, None)
        return _seeded(pairs, self.seed, self.epoch)

    def __len__(self):
        return max(0, self.num_samples - self.start)


def _seeded(pairs, seed, epoch):
    for index, position in pairs:
        yield index, sample_seed(seed, epoch, position)


class SeededSamples(Dataset):
    """``dataset`` for a loader whose sampler yields ``(index, seed)`` pairs.

    Each item is drawn with the python, numpy and torch (CPU) RNGs seeded with its own
    ``seed``: a sample's random augmentation depends on (run seed, epoch, position) only,
    not on the number of loader workers nor on where a resumed run restarted. The RNG
    states are put back after each batch, so that in the main process (``num_workers=0``)
    the training RNGs (dropout, ...) do not depend on data loading.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.collate_fn = dataset.collate_fn

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        """The items of a batch (the ``DataLoader`` calls this once per batch)."""
        states = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            items = []
            for index, seed in keys:
                _seed_all(seed)
                items.append(self.dataset[index])
            return items
        finally:
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])


@contextlib.contextmanager
def seeded_rngs(seed):
    """Run the block with the python, numpy and torch (CPU) RNGs seeded with ``seed``, then
    put their states back (one sample of an iterable dataset, like ``SeededSamples``)."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        _seed_all(seed)
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    # The CPU generator only: torch.manual_seed would reseed CUDA's (dropout on the GPU).
    torch.default_generator.manual_seed(seed)


def ignore_interrupts(worker_id):
    """``worker_init_fn`` of the train loader: a Ctrl-C in the terminal reaches the loader's
    workers too; they ignore it, so that the trainer can finish its update and save."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
