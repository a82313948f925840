"""LPR4M / LPR750K video-to-shop dataset (registered as ``videotoshop``)."""
from mmf.datasets.builders.videotoshop import builder  # noqa: F401
