"""Registered building blocks: encoders, metrics, optimizers, schedulers."""
from mmf.modules import encoders, metrics, optimizers, schedulers, text_encoders  # noqa: F401
