"""Small helpers shared by the trainer, the builders and the CLI."""
import os
import tempfile

import torch

from mmf.common.errors import ConfigError


def get_batch_size(training_config, world_size):
    """Per-device batch size: ``batch_size_per_device``, else ``batch_size // world_size``.

    ``training.batch_size`` is the global batch size and must split evenly over the ranks.
    """
    per_device = training_config.get("batch_size_per_device")
    if per_device is not None:
        if int(per_device) < 1:
            raise ConfigError(f"training.batch_size_per_device must be >= 1, got {per_device}")
        return int(per_device)
    batch_size = int(training_config.batch_size)
    if batch_size < 1 or batch_size % world_size != 0:
        raise ConfigError(
            f"training.batch_size={batch_size} must be a positive multiple of the number of "
            f"processes ({world_size}); or set training.batch_size_per_device"
        )
    return batch_size // world_size


def is_batch_empty(batch):
    """True for a batch whose samples were all skipped (only bookkeeping fields are left)."""
    bookkeeping = {"dataset_name", "dataset_type", "skipped_samples"}
    return all(key in bookkeeping for key in batch.keys())


def sum_losses(losses):
    """Total loss: the sum of each loss's mean (a scalar tensor)."""
    if not losses:
        raise ValueError("the model returned no losses in training mode")
    return sum(value.float().mean() for value in losses.values())


def ensure_writable_dir(path, key):
    """Create ``path`` and check that files can be written there; ``ConfigError`` otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test_"):
            pass
    except OSError as err:
        raise ConfigError(f"{key} {str(path)!r} is not writable: {err.strerror or err}") from None


def unwrap_model(model):
    """The module inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
