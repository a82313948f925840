"""Checkpoint files that are truncated, not checkpoints, do not fit the run, or carry pickled
code: a ``CheckpointError`` naming the file (one line and exit status 1 through the CLI), and
the pickled code never runs, because every loader uses ``torch.load(weights_only=True)``.

The malicious files hold an object whose unpickling calls ``os.system("touch <marker>")``;
each test checks the marker file was never created.
"""
import io
import json
import os
import pickle
import shlex
import subprocess
import sys
import zipfile

import pytest
import torch
import yaml
from toy_helpers import REPO, run_cli, subprocess_env, toy_opts, train_toy

from mmf.common.errors import CheckpointError
from mmf.utils.checkpoint import load_checkpoint_file, load_state_dict_file
from mmf_cli.run import run

LIVE = "0a1b2c3d-1111-2222-3333-444455556666"


class Payload:
    """Unpickling this object runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.marker))}",))


def _torch_bytes(obj, **kwargs):
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


MALICIOUS = {
    # A real-looking checkpoint with one extra entry.
    "zip_extra_key": lambda model, payload: _torch_bytes({"model": model, "payload": payload}),
    # The payload as a "weight" of a bare state dict.
    "zip_state_dict_value": lambda model, payload: _torch_bytes({**model, "net.0.weight": payload}),
    "legacy_torch_format": lambda model, payload: _torch_bytes(
        {"model": model, "payload": payload}, _use_new_zipfile_serialization=False
    ),
    "raw_pickle_protocol_2": lambda model, payload: pickle.dumps({"model": payload}, protocol=2),
    "raw_pickle_protocol_5": lambda model, payload: pickle.dumps(payload, protocol=5),
}


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    """Bytes of the ``current.ckpt`` of a 2-update toy run, and its model state dict."""
    save_dir = tmp_path_factory.mktemp("toy")
    train_toy(
        save_dir, "run_type=train", "training.max_updates=2", "training.checkpoint_interval=2"
    )
    data = (save_dir / "current.ckpt").read_bytes()
    return data, load_checkpoint_file(save_dir / "current.ckpt")["model"]


def write_malicious(tmp_path, kind, model):
    marker = tmp_path / f"MARKER_{kind}"
    path = tmp_path / f"{kind}.pth"
    path.write_bytes(MALICIOUS[kind](model, Payload(marker)))
    return path, marker


def test_payload_runs_when_unpickled_unsafely(tmp_path):
    """The premise: plain unpickling of these files runs the command."""
    marker = tmp_path / "MARKER"
    pickle.loads(MALICIOUS["raw_pickle_protocol_2"]({}, Payload(marker)))
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind", sorted(MALICIOUS))
def test_load_state_dict_file_never_runs_pickled_code(tmp_path, toy_checkpoint, kind):
    path, marker = write_malicious(tmp_path, kind, toy_checkpoint[1])
    with pytest.raises(CheckpointError) as err:
        load_state_dict_file(path)
    assert not marker.exists()
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    if kind != "raw_pickle_protocol_5":  # torch's unpickler stops earlier on protocol 5 frames
        assert "refusing to load" in message and "posix.system" in message, message


def test_cli_resume_file_with_pickled_code_exits_1(tmp_path, toy_checkpoint):
    path, marker = write_malicious(tmp_path, "zip_extra_key", toy_checkpoint[1])
    result = run_cli(
        toy_opts(tmp_path / "save", "run_type=train", f"checkpoint.resume_file={path}"), cwd=REPO
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"mmf_run: error: refusing to load {path}")
    assert not marker.exists()


def test_resume_of_current_ckpt_with_pickled_code_exits_1(tmp_path, toy_checkpoint, capsys):
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    path, marker = write_malicious(tmp_path, "zip_extra_key", toy_checkpoint[1])
    (save_dir / "current.ckpt").write_bytes(path.read_bytes())
    with pytest.raises(SystemExit) as exit_info:
        run(toy_opts(save_dir, "run_type=train", "checkpoint.resume=true"))
    assert exit_info.value.code == 1
    assert "refusing to load" in capsys.readouterr().err
    assert not marker.exists()


def _write_lpr_eval_run(root):
    """Test annotations of one clip and one gallery image, and the config of a tiny RICE."""
    clip = f"{LIVE}-1000-2000"
    annotations = root / "data" / "annotations"
    annotations.mkdir(parents=True)
    (annotations / "query_tenframes.json").write_text(
        json.dumps({clip: {"frames": [f"{clip}/{clip}-0000.jpg"], "gt": ["img0"]}})
    )
    (annotations / "gallery_main.txt").write_text(f"{LIVE}/img0.jpg\n")
    (annotations / "test_videoid_to_gtimage_1.json").write_text(json.dumps({clip: ["img0"]}))
    encoder = {
        "image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "heads": 2, "output_dim": 16
    }
    config = {
        "model": "rice",
        "datasets": "videotoshop",
        "model_config": {
            "rice": {
                "training_head_type": "pretraining",
                "tasks": ["vic"],
                "tasks_sample_ratio": [1.0],
                "image_encoder": {"type": "openai_clip", "params": encoder},
                "transformer_model": {"num_attention_heads": 4},
            }
        },
        "dataset_config": {
            "videotoshop": {
                "data_dir": str(root / "data"),
                "annotations": {
                    "test": ["annotations/query_tenframes.json", "annotations/gallery_main.txt"]
                },
            }
        },
        "training": {"experiment_name": "malicious"},
    }
    config_file = root / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def test_lpr_eval_checkpoint_with_pickled_code_exits_1(tmp_path, toy_checkpoint):
    config_file = _write_lpr_eval_run(tmp_path)
    path, marker = write_malicious(tmp_path, "zip_state_dict_value", toy_checkpoint[1])
    command = [
        sys.executable, str(REPO / "lpr_eval.py"), "--config_file", str(config_file),
        "--checkpoint", str(path), "--device", "cpu", "--num_workers", "0",
        "--out", str(tmp_path / "out"),
    ]
    result = subprocess.run(
        command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: refusing to load {path}")
    assert not marker.exists()


def _bad_checkpoints(good, model):
    """``{name: (bytes or None for a missing file, part of the expected message)}``."""
    not_torch_zip = io.BytesIO()
    with zipfile.ZipFile(not_torch_zip, "w") as archive:
        archive.writestr("data.txt", "hello")
    unreadable = "truncated or not a torch checkpoint"
    wrong_shape = {"model": {"net.0.weight": torch.zeros(5)}}
    return {
        "missing": (None, "not found"),
        "empty": (b"", unreadable),
        "truncated_half": (good[: len(good) // 2], unreadable),
        "truncated_header": (good[:100], unreadable),
        "text": (b"model: not a checkpoint\n", unreadable),
        "foreign_zip": (not_torch_zip.getvalue(), unreadable),
        "list": (_torch_bytes([1, 2]), "holds a list"),
        "wrong_shapes": (_torch_bytes(wrong_shape), "size mismatch"),
        "not_tensors": (_torch_bytes({k: "text" for k in model}), "does not fit this run"),
        "foreign_weights": (_torch_bytes({"enc.weight": torch.zeros(2)}), "none of the weights"),
        "bad_optimizer": (_torch_bytes({"model": model, "optimizer": {"state": 3}}), "not fit"),
        "bad_trainer_state": (_torch_bytes({"model": model, "trainer_state": [1]}), "does not fit"),
    }


def test_cli_bad_resume_file_exits_1_with_one_line(tmp_path, toy_checkpoint, capsys):
    for name, (data, expected) in _bad_checkpoints(*toy_checkpoint).items():
        path = tmp_path / f"{name}.ckpt"
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(SystemExit) as exit_info:
            run(toy_opts(tmp_path / name, "run_type=train", f"checkpoint.resume_file={path}"))
        err = capsys.readouterr().err
        assert exit_info.value.code == 1, (name, err[-2000:])
        assert "Traceback" not in err, name
        errors = [line for line in err.splitlines() if line.startswith("mmf_run: error:")]
        assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], (name, err[-2000:])
        assert str(path) in errors[0] and expected in errors[0], (name, errors[0])


def test_truncated_current_ckpt_on_resume_exits_1(tmp_path, toy_checkpoint, capsys):
    save_dir = tmp_path / "save"
    save_dir.mkdir()
    (save_dir / "current.ckpt").write_bytes(toy_checkpoint[0][:-200])
    with pytest.raises(SystemExit) as exit_info:
        run(toy_opts(save_dir, "run_type=train", "checkpoint.resume=true"))
    assert exit_info.value.code == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"mmf_run: error: cannot read checkpoint {save_dir / 'current.ckpt'}")
