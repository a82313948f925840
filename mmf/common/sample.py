"""``Sample`` (one dataset item) and ``SampleList`` (a collated batch).

Both are ordered dicts with attribute access. Collation stacks tensors along a new batch
dimension (mismatched shapes raise, naming the field), keeps non-tensors as lists and
collates nested dicts recursively.
"""
import collections
import collections.abc

import torch
from torch.utils.data import default_collate


class Sample(collections.OrderedDict):
    """One dataset item: ``sample.video`` is ``sample["video"]``."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {key!r}") from None

    def __setattr__(self, key, value):
        self[key] = value

    def __delattr__(self, key):
        try:
            del self[key]
        except KeyError:
            raise AttributeError(key) from None


class SampleList(Sample):
    """A batch: a dict of stacked tensors and lists, built from a list of ``Sample``."""

    def __init__(self, samples=None):
        super().__init__()
        if samples is None:
            return
        if isinstance(samples, collections.abc.Mapping):
            self.update(samples)
            return
        samples = list(samples)
        if not samples:
            raise ValueError("cannot build a SampleList from an empty list of samples")
        for key in samples[0].keys():
            values = []
            for position, sample in enumerate(samples):
                if key not in sample:
                    raise ValueError(
                        f"sample {position} of the batch has no field {key!r} "
                        f"(sample 0 has fields {list(samples[0].keys())})"
                    )
                values.append(sample[key])
            self[key] = _collate_field(key, values)

    def get_batch_size(self):
        for value in self.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return value.size(0)
            if isinstance(value, list):
                return len(value)
        raise ValueError("SampleList holds no batched field")

    def to(self, device, non_blocking=False):
        """A new SampleList with every tensor moved to ``device``."""
        return SampleList(
            {key: _to_device(value, device, non_blocking) for key, value in self.items()}
        )

    def pin_memory(self):
        return SampleList(
            {
                key: value.pin_memory() if isinstance(value, torch.Tensor) else value
                for key, value in self.items()
            }
        )


def _collate_field(key, values):
    """Stacked tensors [B, ...] (in shared memory inside a DataLoader worker, via torch's
    ``default_collate``), a ``SampleList`` for dicts, a list for anything else."""
    first = values[0]
    if isinstance(first, torch.Tensor):
        shapes = {tuple(v.shape) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"cannot stack field {key!r}: samples have shapes {sorted(shapes)}")
        return default_collate(values)
    if isinstance(first, collections.abc.Mapping) and not isinstance(first, str):
        return SampleList([Sample(v) for v in values])
    return list(values)


def _to_device(value, device, non_blocking):
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=non_blocking)
    if isinstance(value, SampleList):
        return value.to(device, non_blocking)
    return value

