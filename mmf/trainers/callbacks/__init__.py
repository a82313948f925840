"""Registered trainer callbacks."""
from mmf.trainers.callbacks import checkpoint, early_stopping, logistics, lr_scheduler  # noqa: F401
