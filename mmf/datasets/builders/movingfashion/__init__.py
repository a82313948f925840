"""MovingFashion video-to-shop dataset (registered as ``movingfashion``)."""
from mmf.datasets.builders.movingfashion import builder  # noqa: F401
