"""Registered models."""
from mmf.models import rice  # noqa: F401
