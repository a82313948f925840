"""kill -9 a training run, between checkpoint writes and in the middle of one, then resume
with ``checkpoint.resume=true``: the run ends with the weights of an uninterrupted run.

The killed runs are subprocesses of ``tests/fixtures/reliability/run_killable.py`` (the CLI
plus the hooks of ``killer.py``); the process really dies by SIGKILL, with no cleanup.
"""

import os
import signal
import subprocess
import sys

import pytest
import torch
from toy_helpers import REPO, max_abs_diff, subprocess_env, toy_config, toy_opts, train_toy

from mmf.common.errors import CheckpointError
from mmf.trainers.mmf_trainer import MMFTrainer
from mmf.utils.checkpoint import load_checkpoint_file

KILLABLE = REPO / "tests" / "fixtures" / "reliability" / "run_killable.py"

# Dropout, random augmentation and shuffling are on, so an exact resume needs the RNG and
# data-loader state too. Checkpoints at updates 3, 6, 9; an epoch is 8 updates.
COMMON = (
    "run_type=train",
    "training.shuffle=true",
    "model_config.toy_mlp.dropout=0.2",
    "dataset_config.toy.processors.feature_processor.params.std=0.3",
    "training.checkpoint_interval=3",
    "training.log_interval=1",
    "training.max_updates=10",
)


def kill_callback(**params):
    """Command-line option adding the ``reliability_kill`` callback of the fixture."""
    return "training.callbacks=" + repr([{"type": "reliability_kill", "params": params}])


def run_killed(save_dir, *extra, **env):
    result = subprocess.run(
        [sys.executable, str(KILLABLE), *toy_opts(save_dir, *COMMON, *extra)],
        cwd=REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    train_toy(save_dir, *COMMON)
    return load_checkpoint_file(save_dir / "current.ckpt")


def resume(save_dir):
    """Resume the killed run to update 10; it must continue from update 3, not restart."""
    trainer = MMFTrainer(toy_config(save_dir, *COMMON, "checkpoint.resume=true")).load()
    assert trainer.state.num_updates == 3 and trainer.state.batches_in_epoch == 3
    trainer.train()
    assert trainer.state.num_updates == 10
    return load_checkpoint_file(save_dir / "current.ckpt")


def assert_same_run(expected, got):
    assert got["trainer_state"]["num_updates"] == 10
    assert max_abs_diff(expected["model"], got["model"]) < 1e-6
    for key, state in expected["optimizer"]["state"].items():
        got_state = got["optimizer"]["state"][key]
        assert torch.allclose(state["exp_avg"], got_state["exp_avg"], atol=1e-6)
    assert expected["lr_scheduler"]["last_epoch"] == got["lr_scheduler"]["last_epoch"]
    for key in ("current_epoch", "current_iteration", "batches_in_epoch"):
        assert expected["trainer_state"][key] == got["trainer_state"][key], key


def test_kill_between_checkpoint_writes_then_resume(tmp_path, uninterrupted):
    save_dir = tmp_path / "run"
    run_killed(save_dir, kill_callback(at_update=5))
    survivor = load_checkpoint_file(save_dir / "current.ckpt")
    assert survivor["num_updates"] == 3
    assert "progress: 5/10" in (save_dir / "train.log").read_text()  # it did get past 3
    assert sorted(os.listdir(save_dir / "models")) == ["model_3.ckpt"]

    assert_same_run(uninterrupted, resume(save_dir))


def test_kill_during_checkpoint_write_then_resume(tmp_path, uninterrupted):
    save_dir = tmp_path / "run"
    run_killed(save_dir, RELIABILITY_KILL_DURING_SAVE="6")
    # The kill left half a checkpoint in the temporary file; current.ckpt is the one of update 3.
    partial = [name for name in os.listdir(save_dir) if name.startswith(".current.ckpt.")]
    assert len(partial) == 1 and partial[0].endswith(".tmp")
    partial = save_dir / partial[0]
    assert 0 < partial.stat().st_size < (save_dir / "current.ckpt").stat().st_size
    with pytest.raises(CheckpointError, match="truncated or not a torch checkpoint"):
        load_checkpoint_file(partial)
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == 3
    assert sorted(os.listdir(save_dir / "models")) == ["model_3.ckpt"]

    assert_same_run(uninterrupted, resume(save_dir))
    assert sorted(os.listdir(save_dir / "models")) == [f"model_{n}.ckpt" for n in (10, 3, 6, 9)]
    assert not [name for name in os.listdir(save_dir) if name.endswith(".tmp")]  # removed
