"""``mmf_cli/run.py`` end to end (subprocess) and its one-line errors for bad input."""

import os

import pytest
import torch
from omegaconf import OmegaConf
from toy_helpers import REPO, TOY_DIR, TRAIN_YAML, run_cli, toy_opts

from mmf.common.errors import ConfigError
from mmf.utils.logger import close_handlers
from mmf_cli.run import parse_args, run


@pytest.fixture(autouse=True)
def _close_log_files():
    yield
    close_handlers()


def test_run_script_writes_the_whole_save_layout(tmp_path):
    experiment = tmp_path / "experiment.yaml"
    experiment.write_text(
        f"includes:\n- {TRAIN_YAML}\ntraining:\n  callbacks:\n  - type: toy_recorder\n"
    )
    result = run_cli(
        [
            "--local-rank=0",
            f"config={experiment}",
            "model=toy_mlp",
            "dataset=toy",
            f"env.user_dir={TOY_DIR}",
            "training.progress_bar=true",
            "--debug",
        ],
        cwd=REPO,
        MMF_SAVE_DIR=str(tmp_path / "save"),
        MMF_DATA_DIR=str(tmp_path / "data"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    save = tmp_path / "save" / "toy"
    config = OmegaConf.load(save / "config.yaml")
    assert config.env.save_dir == str(save) and config.env.data_dir == str(tmp_path / "data")
    assert config.model == "toy_mlp" and config.training.max_updates == 6
    current = torch.load(save / "current.ckpt", weights_only=True)
    assert current["num_updates"] == 6
    assert sorted(os.listdir(save / "models")) == ["model_3.ckpt", "model_6.ckpt"]
    assert (save / "best.ckpt").is_file()
    final = torch.load(save / "toy_mlp_final.pth", weights_only=True)
    assert set(final) == {"net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"}
    log = (save / "train.log").read_text()
    assert (
        "progress: 6/6" in log and "validation at update 6" in log and "evaluation of test" in log
    )
    assert "test/toy/num_samples: 20" in log
    events = os.listdir(save / "logs" / "tensorboard")
    assert any(name.startswith("events.out.tfevents") for name in events)
    assert (save / "updates.txt").read_text() == "1 2 3 4 5 6"
    assert "train" in result.stderr  # the tqdm bar


def test_missing_config_file_exits_with_one_line(tmp_path):
    result = run_cli(["config=does/not/exist.yaml", "model=toy_mlp", "dataset=toy"], cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "mmf_run: error: config file not found: does/not/exist.yaml"
    ]


def _bad_input(tmp_path, capsys, opts):
    with pytest.raises(SystemExit) as exit_info:
        run(opts)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_bad_input_gives_one_clear_line(tmp_path, capsys):
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("training:\n  batch_size: 8\n   oops: [\n")
    line = _bad_input(tmp_path, capsys, [f"config={malformed}", "model=toy_mlp", "dataset=toy"])
    assert f"malformed YAML in {malformed}:3" in line

    opts = toy_opts(tmp_path / "save")
    line = _bad_input(
        tmp_path, capsys, [o if o != "model=toy_mlp" else "model=toy_mpl" for o in opts]
    )
    assert "unknown model 'toy_mpl'. Did you mean 'toy_mlp'?" in line
    line = _bad_input(tmp_path, capsys, [o if o != "dataset=toy" else "dataset=nope" for o in opts])
    assert "unknown builder 'nope'" in line
    line = _bad_input(
        tmp_path, capsys, [*opts, "dataset_config.toy.processors.feature_processor.type=blur"]
    )
    assert "dataset_config.toy.processors.feature_processor.type: unknown processor 'blur'" in line
    line = _bad_input(tmp_path, capsys, [*opts, "training.batch_sise=4"])
    assert "unknown config key 'training.batch_sise'" in line
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    line = _bad_input(tmp_path, capsys, [*opts, f"env.save_dir={blocker / 'exp'}"])
    assert f"env.save_dir '{blocker / 'exp'}' is not writable" in line


def test_debug_flag_shows_the_exception(tmp_path):
    with pytest.raises(ConfigError, match="training.batch_sise"):
        run(["--debug", *toy_opts(tmp_path), "training.batch_sise=4"])


def test_launcher_flags_are_accepted_anywhere():
    args = parse_args(["--local_rank", "1", "model=a", "--local-rank=2", "--debug", "x.y=1"])
    assert args.opts == ["model=a", "x.y=1"] and args.debug


def test_distributed_debug_means_single_process(tmp_path):
    from mmf_cli.run import main

    trainer = main(
        [*toy_opts(tmp_path), "distributed.debug=true", "run_type=train", "training.max_updates=1"]
    )
    assert trainer.state.num_updates == 1 and not trainer.distributed
