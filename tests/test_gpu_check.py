"""bench/gpu_check.sh: every part of it on the CPU (``--device cpu --tiny``: tiny encoder,
fp32, gloo), and its one-line failure where CUDA is missing."""
import os
import subprocess

from toy_helpers import subprocess_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")


def run(*args, **env):
    return subprocess.run(
        ["bash", SCRIPT, *args], capture_output=True, text=True, timeout=300,
        env=subprocess_env(**env),
    )


def test_gpu_check_without_cuda_fails_in_one_line():
    result = run(CUDA_VISIBLE_DEVICES="")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("gpu_check: no CUDA device")


def test_gpu_check_cpu_rehearsal(tmp_path):
    result = run("--device", "cpu", "--tiny", "--workdir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check on CPU")
    training = next(line for line in lines if "RICE (ICL+PMD+PFR)" in line)
    rice, backbone = (float(training.split()[i]) for i in (2, 6))
    assert 0 < rice < backbone  # the heads cost something on top of the backbone
    assert any(line.startswith("JPEG decode of demo frames, 40 a call: CPU") for line in lines)
    assert any("images/s" in line and line.startswith("evaluation encode_image") for line in lines)
    assert "torchrun --nproc_per_node=1, gloo, 2 updates of the demo config: ok" in result.stdout
    saves = [name for name in os.listdir(tmp_path) if name.startswith("save_")]
    assert len(saves) == 1 and os.path.isfile(tmp_path / saves[0] / "rice_final.pth")
