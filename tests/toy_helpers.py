"""Helpers for the framework tests that train the toy project (tests/fixtures/toy_project)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

from mmf.trainers.mmf_trainer import MMFTrainer
from mmf.utils.configuration import Configuration
from mmf.utils.general import unwrap_model

REPO = Path(__file__).resolve().parents[1]
TOY_DIR = REPO / "tests" / "fixtures" / "toy_project"
TRAIN_YAML = TOY_DIR / "configs" / "train.yaml"
RUN_SCRIPT = REPO / "mmf_cli" / "run.py"


def toy_opts(save_dir, *extra):
    """Command-line options of a toy run writing to ``save_dir`` (no TensorBoard)."""
    return [
        f"config={TRAIN_YAML}",
        "model=toy_mlp",
        "dataset=toy",
        f"env.user_dir={TOY_DIR}",
        f"env.save_dir={save_dir}",
        "training.tensorboard=false",
        *extra,
    ]


def toy_config(save_dir, *extra):
    return Configuration(toy_opts(save_dir, *extra)).get_config()


def train_toy(save_dir, *extra):
    """Load and train a toy run in this process; returns the trainer."""
    trainer = MMFTrainer(toy_config(save_dir, *extra)).load()
    trainer.train()
    return trainer


def weights(model):
    return {k: v.detach().clone() for k, v in unwrap_model(model).state_dict().items()}


def max_abs_diff(a, b):
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def subprocess_env(**extra):
    env = dict(os.environ, HF_HUB_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run_cli(args, cwd, timeout=120, **env):
    """``python mmf_cli/run.py *args`` in a subprocess."""
    return subprocess.run(
        [sys.executable, str(RUN_SCRIPT), *args],
        cwd=cwd,
        env=subprocess_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script, nproc_per_node=2):
    """Command prefix launching ``script`` with torchrun on this machine (a free port)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc_per_node}",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(script),
    ]
