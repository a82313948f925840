"""Exact resume: N updates, stop, resume to 2N == an uninterrupted 2N run."""
import torch
from toy_helpers import max_abs_diff, train_toy

from mmf.utils.checkpoint import load_checkpoint_file

# Dropout, a random augmentation (global torch RNG) and shuffling are all on; an epoch is
# 8 updates, so the stop at update 5 is mid-epoch and the resumed run crosses an epoch.
COMMON = (
    "run_type=train_val",
    "training.shuffle=true",
    "model_config.toy_mlp.dropout=0.2",
    "dataset_config.toy.processors.feature_processor.params.std=0.3",
    "training.checkpoint_interval=3",
    "training.evaluation_interval=4",
)


def test_resume_continues_exactly(tmp_path):
    full = train_toy(tmp_path / "full", *COMMON, "training.max_updates=10")
    train_toy(tmp_path / "split", *COMMON, "training.max_updates=5")
    first = load_checkpoint_file(tmp_path / "split" / "current.ckpt")
    assert first["trainer_state"]["num_updates"] == 5
    assert first["trainer_state"]["batches_in_epoch"] == 5
    resumed = train_toy(
        tmp_path / "split", *COMMON, "training.max_updates=10", "checkpoint.resume=true"
    )
    assert resumed.state.current_epoch == 1 and resumed.state.num_updates == 10

    expected = load_checkpoint_file(tmp_path / "full" / "current.ckpt")
    got = load_checkpoint_file(tmp_path / "split" / "current.ckpt")
    assert max_abs_diff(expected["model"], got["model"]) == 0.0
    for key, state in expected["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], got["optimizer"]["state"][key]["exp_avg"])
    assert expected["lr_scheduler"]["last_epoch"] == got["lr_scheduler"]["last_epoch"] == 10
    # best_* differ: the split run also validated at its stop (update 5).
    counters = ("num_updates", "current_epoch", "current_iteration", "batches_in_epoch")
    assert [expected["trainer_state"][k] for k in counters] == [
        got["trainer_state"][k] for k in counters
    ]
    assert full.state.current_iteration == resumed.state.current_iteration


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    trainer = train_toy(
        tmp_path, "run_type=train", "training.max_updates=2", "checkpoint.resume=true"
    )
    assert trainer.state.num_updates == 2
