"""Registered trainers and their callbacks."""
from mmf.trainers import callbacks, mmf_trainer  # noqa: F401
