"""RICE (ICCV 2023): image-clip contrastive learning, pairwise matching, feature reconstruction."""
from mmf.models.rice import rice  # noqa: F401
