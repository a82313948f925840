"""Registered processors."""
from mmf.datasets.processors import (  # noqa: F401
    image_processors,
    mask_processors,
    temporal_processors,
    text_processors,
)
