"""Registered trainer callbacks."""
from mmf.trainers.callbacks import (  # noqa: F401
    best_checkpoint,
    checkpoint,
    early_stopping,
    logistics,
    lr_scheduler,
)
