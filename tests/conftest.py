"""Test-wide settings (offline hubs, quiet albumentations, small thread pools) and the
shared LPR4M fixture folder."""
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def lpr_root(tmp_path_factory):
    """A small LPR4M-layout folder (``test_datasets.write_lpr_dataset``), one per module."""
    from test_datasets import write_lpr_dataset

    root = tmp_path_factory.mktemp("lpr")
    write_lpr_dataset(root)
    return root


@pytest.fixture
def lpr_copy(lpr_root, tmp_path):
    """A private copy of ``lpr_root``, for tests that damage files."""
    root = tmp_path / "lpr"
    shutil.copytree(lpr_root, root)
    return root
