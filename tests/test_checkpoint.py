"""Checkpoint files: atomic writes, corrupt files, history, resume_file / pretrained / reset."""
import io
import os

import pytest
import torch
from toy_helpers import TRAIN_YAML, max_abs_diff, toy_opts, train_toy, weights

from mmf.common.errors import CheckpointError
from mmf.trainers.mmf_trainer import MMFTrainer
from mmf.utils.checkpoint import (
    atomic_torch_save,
    load_checkpoint_file,
    load_state_dict_file,
    strip_module_prefix,
)
from mmf.utils.configuration import Configuration

FAST = ("run_type=train", "training.max_updates=4", "training.checkpoint_interval=2")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished toy run: current.ckpt at update 4, history at 2 and 4."""
    save_dir = tmp_path_factory.mktemp("trained")
    trainer = train_toy(save_dir, *FAST)
    return save_dir, trainer


def test_checkpoint_holds_full_state_and_loads_weights_only(trained):
    save_dir, trainer = trained
    data = torch.load(save_dir / "current.ckpt", weights_only=True)
    assert {
        "model",
        "optimizer",
        "lr_scheduler",
        "fp16_scaler",
        "trainer_state",
        "callbacks",
        "rng",
        "config",
    } <= set(data)
    assert data["trainer_state"]["num_updates"] == data["num_updates"] == 4
    assert set(data["callbacks"]) == {
        "LRSchedulerCallback",
        "CheckpointCallback",
        "LogisticsCallback",
        "EarlyStoppingCallback",
    }
    assert len(data["rng"]) == 1 and data["rng"][0]["numpy"]["keys"].shape == (624,)
    assert data["config"]["model"] == "toy_mlp"
    assert max_abs_diff(data["model"], weights(trainer.model)) == 0.0
    final = torch.load(save_dir / "toy_mlp_final.pth", weights_only=True)
    assert set(final) == set(data["model"]) and not any(k.startswith("module.") for k in final)
    assert sorted(os.listdir(save_dir / "models")) == ["model_2.ckpt", "model_4.ckpt"]


def test_crash_during_save_keeps_previous_checkpoint(trained, monkeypatch):
    save_dir, _ = trained
    before = load_checkpoint_file(save_dir / "current.ckpt")["model"]
    real_save = torch.save

    def crash_half_way(obj, handle):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise RuntimeError("simulated crash while writing")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(RuntimeError, match="simulated crash"):
        atomic_torch_save({"model": {"w": torch.ones(3)}}, save_dir / "current.ckpt")
    monkeypatch.undo()
    assert max_abs_diff(load_checkpoint_file(save_dir / "current.ckpt")["model"], before) == 0.0
    assert not [name for name in os.listdir(save_dir) if name.endswith(".tmp")]


def test_killed_save_leaves_only_a_temp_file(tmp_path, trained):
    # A SIGKILL mid-save leaves a partial temp file; current.ckpt is untouched and a
    # resumed run still loads it.
    save_dir, _ = trained
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "current.ckpt").write_bytes((save_dir / "current.ckpt").read_bytes())
    partial = (save_dir / "current.ckpt").read_bytes()[:1000]
    (run_dir / ".current.ckpt.abc123.tmp").write_bytes(partial)
    trainer = train_toy(run_dir, *FAST, "training.max_updates=5", "checkpoint.resume=true")
    assert trainer.state.num_updates == 5


def test_corrupt_files_raise_checkpoint_error_naming_the_path(tmp_path, trained):
    save_dir, _ = trained
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((save_dir / "current.ckpt").read_bytes()[:5000])
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint\n")
    listing = tmp_path / "list.pth"
    torch.save([1, 2], listing)
    for path in (truncated, garbage, listing, tmp_path / "missing.pth"):
        with pytest.raises(CheckpointError, match=str(path)):
            load_state_dict_file(path)


def test_state_dict_helpers(tmp_path):
    bare = tmp_path / "bare.pth"
    torch.save({"module.a": torch.zeros(2), "b": torch.ones(1)}, bare)
    wrapped = tmp_path / "wrapped.ckpt"
    torch.save({"model": {"a": torch.zeros(2)}, "num_updates": 3}, wrapped)
    assert set(strip_module_prefix(load_state_dict_file(bare))) == {"a", "b"}
    assert set(load_state_dict_file(wrapped)) == {"a"}


@pytest.mark.parametrize("max_to_keep, expected", [(0, []), (2, ["model_4.ckpt", "model_6.ckpt"])])
def test_history_max_to_keep(tmp_path, max_to_keep, expected):
    train_toy(tmp_path, *FAST, "training.max_updates=6", f"checkpoint.max_to_keep={max_to_keep}")
    models = tmp_path / "models"
    assert (sorted(os.listdir(models)) if models.exists() else []) == expected


def test_resume_file_and_reset(tmp_path, trained):
    save_dir, trainer = trained
    resume_file = save_dir / "models" / "model_2.ckpt"
    fresh = train_toy(
        tmp_path / "a", *FAST, f"checkpoint.resume_file={resume_file}", "training.max_updates=2"
    )
    # Loaded counters: already at update 2, so nothing is trained and weights are those of update 2.
    assert fresh.state.num_updates == 2
    assert max_abs_diff(weights(fresh.model), load_state_dict_file(resume_file)) == 0.0
    reset = train_toy(
        tmp_path / "b",
        *FAST,
        f"checkpoint.resume_file={resume_file}",
        "checkpoint.reset.counts=true",
        "training.max_updates=1",
    )
    assert reset.state.num_updates == 1


def test_resume_pretrained_copies_only_mapped_weights(tmp_path, trained):
    save_dir, _ = trained
    final = save_dir / "toy_mlp_final.pth"
    source = load_state_dict_file(final)
    experiment = tmp_path / "pretrained.yaml"
    experiment.write_text(
        f"includes:\n- {TRAIN_YAML}\n"
        "checkpoint:\n  pretrained_state_mapping:\n    net.0.: net.0.\n"
    )
    opts = toy_opts(
        tmp_path, f"checkpoint.resume_file={final}", "checkpoint.resume_pretrained=true"
    )
    opts[0] = f"config={experiment}"
    trainer = MMFTrainer(Configuration(opts).get_config()).load()
    loaded = weights(trainer.model)
    assert torch.equal(loaded["net.0.weight"], source["net.0.weight"])
    assert not torch.equal(loaded["net.3.weight"], source["net.3.weight"])
    assert trainer.state.num_updates == 0


def test_pretrained_mapping_matching_nothing_raises(tmp_path, trained):
    save_dir, _ = trained
    experiment = tmp_path / "pretrained.yaml"
    experiment.write_text(
        f"includes:\n- {TRAIN_YAML}\n"
        "checkpoint:\n  pretrained_state_mapping:\n    head.: classifier.\n"
    )
    final = save_dir / "toy_mlp_final.pth"
    opts = toy_opts(
        tmp_path, f"checkpoint.resume_file={final}", "checkpoint.resume_pretrained=true"
    )
    opts[0] = f"config={experiment}"
    with pytest.raises(CheckpointError, match="matched no weights"):
        MMFTrainer(Configuration(opts).get_config()).load()
