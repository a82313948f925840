"""Per-sample seeds of mmf.utils.samplers: the vectorised and scalar forms agree, and a
resumed epoch hands out the same (index, seed) pairs as the uninterrupted one."""
import random

import numpy as np
import torch

from mmf.utils.samplers import (
    ResumableDistributedSampler,
    SeededSamples,
    sample_seed,
    sample_seeds,
)


def test_vectorised_seeds_equal_scalar_seeds_and_are_distinct():
    for seed, epoch in ((0, 0), (7, 3), (2**40 + 5, 11)):
        positions = range(3, 4000, 2)
        seeds = sample_seeds(seed, epoch, positions)
        assert seeds == [sample_seed(seed, epoch, p) for p in positions]
        assert len(set(seeds)) == len(seeds)
        assert all(0 <= s < 2**64 for s in seeds)
    assert sample_seed(0, 0, 5) != sample_seed(0, 1, 5) != sample_seed(1, 0, 5)
    assert sample_seeds(0, 0, range(10, 5)) == []


def test_resumed_epoch_yields_the_same_pairs_on_every_rank():
    data = list(range(103))
    for rank in (0, 1, 2):
        sampler = ResumableDistributedSampler(data, num_replicas=3, rank=rank, seed=4)
        sampler.set_epoch(2)
        full = list(sampler)
        assert len(full) == len(sampler) == 35
        sampler.skip(9)
        assert list(sampler) == full[9:] and len(sampler) == 26
        # A sample's seed is that of its place in the epoch's order over all ranks.
        assert full[1][1] == sample_seed(4, 2, rank + 3)


class _Draws(torch.utils.data.Dataset):
    collate_fn = None

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_items_depend_on_their_seed_only_and_main_process_rngs_are_put_back():
    samples = SeededSamples(_Draws())
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    before = torch.rand(()), random.random(), np.random.rand()
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    batch = samples.__getitems__([(0, 11), (1, 12), (2, 11)])
    assert batch[0] == batch[2] != batch[1]
    assert samples[(5, 12)] == batch[1]
    assert (torch.rand(()), random.random(), np.random.rand()) == before
