"""Two gloo processes under torchrun train the toy model like one process with the same
global batch, and validation sees every sample exactly once."""

import subprocess

import torch
from toy_helpers import (
    REPO,
    RUN_SCRIPT,
    max_abs_diff,
    subprocess_env,
    torchrun,
    toy_opts,
    train_toy,
)

# Global batch 8 (4 per rank), two micro-batches per update (DDP no_sync on the first); no
# dropout or noise, so the runs differ only in how the batch is split. 23 val samples do not
# split evenly over 2 ranks: a padding sampler would evaluate one twice.
OPTS = (
    "run_type=train_val_inference",
    "training.max_updates=4",
    "training.update_frequency=2",
    "training.evaluation_interval=2",
    "training.checkpoint_interval=2",
    "model_config.toy_mlp.dropout=0.0",
    "dataset_config.toy.processors.feature_processor.params.std=0.0",
    "dataset_config.toy.num_samples.val=23",
)


def test_two_process_ddp_matches_single_process(tmp_path):
    ddp_dir = tmp_path / "ddp"
    command = [
        *torchrun(RUN_SCRIPT),
        *toy_opts(ddp_dir, *OPTS),
    ]
    result = subprocess.run(
        command, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    train_toy(tmp_path / "single", *OPTS)
    single = torch.load(tmp_path / "single" / "current.ckpt", weights_only=True)
    ddp = torch.load(ddp_dir / "current.ckpt", weights_only=True)
    assert len(ddp["rng"]) == 2 and ddp["num_updates"] == single["num_updates"] == 4
    assert max_abs_diff(ddp["model"], single["model"]) < 1e-6
    final = torch.load(ddp_dir / "toy_mlp_final.pth", weights_only=True)
    assert not any(key.startswith("module.") for key in final)

    log = (ddp_dir / "train.log").read_text()
    # 23 val samples over 2 ranks: gathered once each, no sampler padding.
    assert "val/toy/num_samples: 23, val/toy/num_unique: 23" in log
    assert "test/toy/num_samples: 20, test/toy/num_unique: 20" in log
    assert log.count("progress: 4/4") == 1  # rank 0 logs alone
