"""Registered dataset builders."""
from mmf.datasets.builders import movingfashion, videotoshop  # noqa: F401
