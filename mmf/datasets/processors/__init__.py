"""Registered processors."""
from mmf.datasets.processors import (  # noqa: F401
    bert_processors,
    image_processors,
    mask_processors,
    temporal_processors,
)
