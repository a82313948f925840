"""Samplers whose order depends only on (seed, epoch), so a run can resume mid-epoch, and
per-sample seeds, so that its random augmentation does too (also with loader workers)."""
import contextlib
import random
import signal

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler, get_worker_info

_MASK = 2**64 - 1


def _mix(value):
    """splitmix64's step: a bijection of 64-bit values that scatters nearby inputs. Works on
    a python int and on a numpy uint64 array alike (numpy wraps where the int is masked)."""
    value = (value + 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


def _epoch_key(seed, epoch):
    return _mix(_mix(int(seed) & _MASK) ^ (int(epoch) & _MASK))


def sample_seed(seed, epoch, position):
    """The 64-bit seed of the sample at ``position`` of ``epoch``'s order: splitmix64 steps
    over the three numbers (distinct positions of an epoch get distinct seeds)."""
    return int(_mix(_epoch_key(seed, epoch) ^ (int(position) & _MASK)))


def sample_seeds(seed, epoch, positions):
    """``[sample_seed(seed, epoch, p) for p in positions]`` ([n] ints) for a ``range``,
    computed on one numpy array."""
    positions = np.arange(positions.start, positions.stop, positions.step, dtype=np.uint64)
    return _mix(np.uint64(_epoch_key(seed, epoch)) ^ positions).tolist()


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
        indices = list(super().__iter__())[self.start :]
        first = self.rank + self.start * self.num_replicas
        positions = range(first, self.total_size, self.num_replicas)
        seeds = sample_seeds(self.seed, self.epoch, positions)
        return zip(indices, seeds, strict=True)

    def __len__(self):
        return max(0, self.num_samples - self.start)


class SeededSamples(Dataset):
    """``dataset`` for a loader whose sampler yields ``(index, seed)`` pairs.

    Each item is drawn with the python, numpy and torch (CPU) RNGs seeded with its own
    ``seed``: a sample's random augmentation depends on (run seed, epoch, position) only,
    not on the number of loader workers nor on where a resumed run restarted. In the main
    process (``num_workers=0``) the RNG states are put back after each batch, so that the
    training RNGs (dropout, ...) do not depend on data loading.
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
        dataset = self.dataset
        with _states_put_back():
            items = []
            for index, seed in keys:
                _seed_all(seed)
                items.append(dataset[index])
            return items


@contextlib.contextmanager
def seeded_rngs(seed):
    """Run the block with the python, numpy and torch (CPU) RNGs seeded with ``seed`` (one
    sample of an iterable dataset, like ``SeededSamples``); in the main process their states
    are put back afterwards."""
    with _states_put_back():
        _seed_all(seed)
        yield


@contextlib.contextmanager
def _states_put_back():
    """Put the python, numpy and torch (CPU) RNG states back after the block, in the main
    process only: a loader worker's RNGs serve data loading alone, and each of its items
    re-seeds them (numpy's state costs ~30 us to read and as much to write)."""
    if get_worker_info() is not None:
        yield
        return
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _seed_all(seed):
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
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
