"""Nothing a user has is lost: a run folder is not overwritten by mistake, Ctrl-C saves, a
full disk, a bad resume file or a bad weights file is one line, and resume is exact also
with loader workers.

Runs that must die or exit go through ``tests/fixtures/reliability/run_killable.py`` (the
CLI with the hooks of ``killer.py``) in a subprocess.
"""
import os
import pickle
import signal
import subprocess
import sys
import warnings
from fractions import Fraction

import pytest
import torch
from toy_helpers import REPO, max_abs_diff, run_cli, subprocess_env, toy_opts, train_toy

from mmf.common.errors import CheckpointError, ConfigError, WriteError
from mmf.modules.encoders import load_weights_file
from mmf.utils.checkpoint import load_checkpoint_file
from mmf.utils.file_io import atomic_write

KILLABLE = REPO / "tests" / "fixtures" / "reliability" / "run_killable.py"
FAST = ("run_type=train", "training.max_updates=2", "training.checkpoint_interval=1")
# Dropout, a random augmentation and shuffling are on, with two loader workers; an epoch is
# 8 updates, checkpoints at 3, 6, 9.
WORKERS = (
    "run_type=train",
    "training.shuffle=true",
    "training.num_workers=2",
    "model_config.toy_mlp.dropout=0.2",
    "dataset_config.toy.processors.feature_processor.params.std=0.3",
    "training.checkpoint_interval=3",
    "training.max_updates=10",
)


def run_killable(save_dir, *extra, expect, **env):
    """The CLI in its own session (a Ctrl-C to its process group reaches nobody else)."""
    result = subprocess.run(
        [sys.executable, str(KILLABLE), *toy_opts(save_dir, *extra)],
        cwd=REPO,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )
    assert result.returncode == expect, result.stderr[-3000:]
    return result


def kill_callback(**params):
    """Command-line option adding the ``reliability_kill`` callback of the fixture."""
    return "training.callbacks=" + repr([{"type": "reliability_kill", "params": params}])


def last_line(result):
    return result.stderr.strip().splitlines()[-1]


def snapshot(folder):
    """``{relative path: bytes}`` of every file under ``folder`` but train.log."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "train.log"
    }


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """``current.ckpt`` of an uninterrupted 10-update run with two loader workers."""
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    train_toy(save_dir, *WORKERS)
    return load_checkpoint_file(save_dir / "current.ckpt")


def resume_to_10(save_dir, *extra):
    trainer = train_toy(save_dir, *WORKERS, "checkpoint.resume=true", *extra)
    assert trainer.state.num_updates == 10
    return load_checkpoint_file(save_dir / "current.ckpt")


def assert_bitwise_equal(expected, got):
    assert max_abs_diff(expected["model"], got["model"]) == 0.0
    for key, state in expected["optimizer"]["state"].items():
        assert torch.equal(state["exp_avg"], got["optimizer"]["state"][key]["exp_avg"])
    assert expected["trainer_state"] == got["trainer_state"]


# ------------------------------------------------------------------ overwriting a run
def test_training_into_a_run_folder_is_refused_and_changes_nothing(tmp_path):
    train_toy(tmp_path, *FAST)
    before = snapshot(tmp_path)
    result = run_cli(toy_opts(tmp_path, *FAST), cwd=tmp_path)
    assert result.returncode == 1
    assert last_line(result) == (
        f"mmf_run: error: env.save_dir {tmp_path} already holds a run (current.ckpt); "
        f"continue it with checkpoint.resume=true, or replace it with checkpoint.overwrite=true"
    )
    assert "Traceback" not in result.stderr
    assert snapshot(tmp_path) == before


def test_overwrite_replaces_the_previous_run(tmp_path):
    # The first run validates (best.ckpt) and keeps history; the second only trains: none of
    # the first run's checkpoints may survive, and its final weights are its last ones.
    train_toy(tmp_path, "run_type=train_val", "training.max_updates=4",
              "training.checkpoint_interval=2", "training.evaluation_interval=2")
    assert {"best.ckpt", "models/model_4.ckpt"} <= set(snapshot(tmp_path))
    trainer = train_toy(tmp_path, *FAST, "checkpoint.max_to_keep=-1",
                        "checkpoint.overwrite=true")
    assert sorted(name for name in snapshot(tmp_path) if name.endswith((".ckpt", ".pth"))) == [
        "current.ckpt", "models/model_1.ckpt", "models/model_2.ckpt", "toy_mlp_final.pth"
    ]
    assert load_checkpoint_file(tmp_path / "current.ckpt")["num_updates"] == 2
    final = load_checkpoint_file(tmp_path / "toy_mlp_final.pth")
    assert max_abs_diff(final, trainer.model.state_dict()) == 0.0


def test_resume_and_overwrite_together_are_refused(tmp_path):
    train_toy(tmp_path, *FAST)
    with pytest.raises(ConfigError, match="checkpoint.resume and checkpoint.overwrite are both"):
        train_toy(tmp_path, *FAST, "checkpoint.resume=true", "checkpoint.overwrite=true")
    assert load_checkpoint_file(tmp_path / "current.ckpt")["num_updates"] == 2


def test_overwrite_refuses_to_remove_its_own_resume_file(tmp_path):
    train_toy(tmp_path, *FAST)
    best = tmp_path / "current.ckpt"
    with pytest.raises(ConfigError, match="is a checkpoint of the run that checkpoint.overwrite"):
        train_toy(tmp_path, *FAST, "checkpoint.overwrite=true", f"checkpoint.resume_file={best}")
    assert best.is_file()


@pytest.mark.parametrize("resume", ["false", "true"])
def test_missing_resume_file_is_one_line_and_writes_nothing(tmp_path, resume):
    missing = tmp_path / "nowhere.ckpt"
    save_dir = tmp_path / "run"
    result = run_cli(
        toy_opts(save_dir, *FAST, f"checkpoint.resume={resume}",
                 f"checkpoint.resume_file={missing}"),
        cwd=tmp_path,
    )
    assert result.returncode == 1
    assert last_line(result) == (
        f"mmf_run: error: checkpoint.resume_file: checkpoint file not found: {missing}"
    )
    assert sorted(os.listdir(save_dir)) == ["train.log"]


def test_resume_file_is_checked_even_when_current_ckpt_wins(tmp_path):
    train_toy(tmp_path, *FAST)
    missing = tmp_path / "nowhere.ckpt"
    with pytest.raises(CheckpointError, match=f"checkpoint file not found: {missing}"):
        train_toy(tmp_path, *FAST, "checkpoint.resume=true", f"checkpoint.resume_file={missing}")


def test_current_ckpt_that_is_a_directory_is_an_error_at_start(tmp_path):
    (tmp_path / "current.ckpt").mkdir()
    result = run_cli(toy_opts(tmp_path, *FAST, "checkpoint.resume=true"), cwd=tmp_path)
    assert result.returncode == 1
    assert last_line(result) == (
        f"mmf_run: error: {tmp_path}/current.ckpt is not a checkpoint file (a directory?); "
        f"move it away"
    )
    assert sorted(os.listdir(tmp_path)) == ["current.ckpt", "train.log"]


def test_orphan_temporary_files_are_removed_on_the_next_start(tmp_path):
    train_toy(tmp_path, *FAST)
    orphans = [".current.ckpt.k1ll3d.tmp", ".config.yaml.x.tmp", ".toy_mlp_final.pth.y.tmp"]
    for name in orphans + [".notes.tmp", "current.ckpt.tmp"]:
        (tmp_path / name).write_bytes(b"partial")
    train_toy(tmp_path, *FAST, "training.max_updates=3", "checkpoint.resume=true")
    names = set(os.listdir(tmp_path))
    assert not names & set(orphans)
    assert {".notes.tmp", "current.ckpt.tmp"} <= names  # not ours: kept


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_and_config_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        train_toy(tmp_path, "run_type=train_val", "training.max_updates=2",
                  "training.checkpoint_interval=1", "training.evaluation_interval=1")
    finally:
        os.umask(previous)
    written = ["config.yaml", "current.ckpt", "best.ckpt", "toy_mlp_final.pth",
               "models/model_1.ckpt", "models/model_2.ckpt"]
    assert {name: oct((tmp_path / name).stat().st_mode & 0o777) for name in written} == {
        name: oct(mode) for name in written
    }


# ------------------------------------------------------------------ full disk
def test_full_disk_is_one_line_naming_the_path_and_keeps_the_last_checkpoint(tmp_path):
    result = run_killable(tmp_path, *WORKERS, "training.num_workers=0", expect=1,
                          RELIABILITY_DISK_FULL_DURING_SAVE="6")
    assert last_line(result) == (
        f"mmf_run: error: cannot write {tmp_path}/current.ckpt: No space left on device"
    )
    assert "Traceback" not in result.stderr
    assert load_checkpoint_file(tmp_path / "current.ckpt")["num_updates"] == 3
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_atomic_write_error_names_the_path_and_leaves_no_file(tmp_path):
    target = tmp_path / "config.yaml"
    target.write_text("old\n")

    def fail(handle):
        handle.write(b"new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(WriteError) as caught:
        atomic_write(target, fail)
    assert str(caught.value) == f"cannot write {target}: No space left on device"
    assert isinstance(caught.value, OSError)
    assert os.listdir(tmp_path) == ["config.yaml"] and target.read_text() == "old\n"
    blocked = tmp_path / "dir.yaml"
    blocked.mkdir()
    with pytest.raises(WriteError, match=f"cannot write {blocked}: Is a directory"):
        atomic_write(blocked, lambda handle: handle.write(b"x"))
    assert sorted(os.listdir(tmp_path)) == ["config.yaml", "dir.yaml"]


# ------------------------------------------------------------------ exact resume, Ctrl-C
def test_resume_with_workers_is_bitwise_exact_after_kill_9(tmp_path, uninterrupted):
    save_dir = tmp_path / "run"
    run_killable(save_dir, *WORKERS, kill_callback(at_update=5), expect=-signal.SIGKILL)
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == 3
    assert_bitwise_equal(uninterrupted, resume_to_10(save_dir))


def test_augmentation_does_not_depend_on_the_number_of_workers(tmp_path, uninterrupted):
    train_toy(tmp_path, *WORKERS, "training.num_workers=0")
    assert_bitwise_equal(uninterrupted, load_checkpoint_file(tmp_path / "current.ckpt"))


def test_ctrl_c_saves_the_last_update_exits_130_and_resumes_exactly(tmp_path, uninterrupted):
    # SIGINT goes to the whole process group, loader workers included, as from a terminal.
    save_dir = tmp_path / "run"
    result = run_killable(
        save_dir, *WORKERS, kill_callback(at_update=5, how="sigint"), expect=130
    )
    assert last_line(result) == (
        f"mmf_run: interrupted after update 5: saved {save_dir}/current.ckpt; "
        f"continue with checkpoint.resume=true"
    )
    assert "Traceback" not in result.stderr
    assert load_checkpoint_file(save_dir / "current.ckpt")["num_updates"] == 5
    assert not (save_dir / "toy_mlp_final.pth").exists()
    assert_bitwise_equal(uninterrupted, resume_to_10(save_dir))


# ------------------------------------------------------------------ weights files
class Unlisted:
    """A class torch's weights-only unpickler does not allow."""


EXPECTED_WEIGHTS_ERROR = {
    "text": "cannot read checkpoint {path} (truncated or not a torch checkpoint): ",
    "plain_pickle": "cannot read checkpoint {path} (truncated or not a torch checkpoint): ",
    "pickled_object": "refusing to load {path}: it holds a pickled Python object "
    "(fractions.Fraction)",
    "torch_object": "refusing to load {path}: it holds a pickled Python object "
    "(fractions.Fraction)",
}


@pytest.mark.parametrize("kind", ["text", "plain_pickle", "pickled_object", "torch_object"])
def test_non_checkpoint_weights_file_is_one_line(tmp_path, kind):
    path = tmp_path / "weights.pth"
    if kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "plain_pickle":
        path.write_bytes(pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    elif kind == "pickled_object":
        path.write_bytes(pickle.dumps({"w": Fraction(1, 3)}, protocol=2))
    else:
        torch.save({"w": torch.zeros(2), "extra": Fraction(1, 3)}, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(CheckpointError) as caught:
            load_weights_file(path)
    message = str(caught.value)
    assert message.startswith(EXPECTED_WEIGHTS_ERROR[kind].format(path=path)), message
    assert "\n" not in message
    assert "weights_only=False" not in message and "Re-running" not in message
