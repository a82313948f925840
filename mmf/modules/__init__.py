"""Registered building blocks: encoders, losses, metrics, optimizers, schedulers."""
from mmf.modules import encoders, losses, metrics, optimizers, schedulers  # noqa: F401
