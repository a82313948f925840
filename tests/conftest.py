"""Test-wide settings: offline hubs, quiet albumentations, small thread pools."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

torch.set_num_threads(2)
