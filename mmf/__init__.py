"""Lean MMF-style framework for Livestreaming Product Recognition (RICE).

Importing ``mmf`` has no side effects: components register themselves when their
modules are imported, which ``mmf.utils.env.setup_imports`` does explicitly.
"""
from mmf.version import __version__

__all__ = ["__version__"]
