"""Process setup: explicit component imports and seeding."""
import importlib
import random

import numpy as np
import torch

# Packages whose modules register components; imported explicitly, never globbed.
COMPONENT_PACKAGES = (
    "mmf.datasets.processors",
    "mmf.datasets.builders",
    "mmf.modules",
    "mmf.models",
    "mmf.trainers",
)


def setup_imports():
    """Import the packages that register models, builders, processors and trainers."""
    for package in COMPONENT_PACKAGES:
        importlib.import_module(package)


def set_seed(seed, deterministic=False):
    """Seed python, numpy and torch; returns the seed (None leaves RNGs as they are)."""
    if seed is None:
        return None
    if seed == -1:
        seed = random.SystemRandom().randint(1, 100000)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return seed
