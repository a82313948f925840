"""A 2-process torchrun (gloo) toy run where one rank dies or gets stuck: the job ends with a
non-zero status and a message naming the failure, instead of hanging.

- rank 1 is SIGKILLed after update 2: rank 0, waiting in the next collective, sees the
  connection drop, and torchrun reports rank 1's SIGKILL as the root cause.
- rank 1 hangs after update 2 (alive, never joins the next collective): only the
  process-group timeout (``distributed.timeout`` -> ``init_process_group(timeout=...)``)
  can end rank 0's wait; it must fire after that many seconds.
"""

import os
import signal
import subprocess
import time

import pytest
from toy_helpers import REPO, subprocess_env, torchrun, toy_opts

KILLABLE = REPO / "tests" / "fixtures" / "reliability" / "run_killable.py"
# A hung job fails the test through this subprocess timeout (distributed.timeout's default
# is 30 minutes).
DEADLINE_S = 90


def run_two_ranks(save_dir, how, *extra):
    callback = [{"type": "reliability_kill", "params": {"at_update": 2, "rank": 1, "how": how}}]
    command = [
        *torchrun(KILLABLE),
        *toy_opts(
            save_dir,
            "run_type=train",
            "training.max_updates=8",
            "training.checkpoint_interval=0",
            "training.log_interval=1",
            f"training.callbacks={callback!r}",
            *extra,
        ),
    ]
    start = time.monotonic()
    # Own process group: a hung job is killed whole (launcher and both ranks).
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"the job hung for {DEADLINE_S} s:\n{(stdout + stderr)[-3000:]}")
    result = subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
    return result, time.monotonic() - start


def test_rank_killed_mid_run_fails_the_job(tmp_path):
    result, elapsed = run_two_ranks(tmp_path, "sigkill")
    output = result.stdout + result.stderr
    assert result.returncode != 0 and elapsed < 60, output[-3000:]
    assert "progress: 2/8" in output and "progress: 3/8" not in output
    # torchrun names the dead rank and how it died.
    root_cause = output.split("Root Cause", 1)[-1]
    assert "rank      : 1" in root_cause and "SIGKILL" in root_cause, output[-3000:]


def test_stuck_rank_times_out_instead_of_hanging(tmp_path):
    result, elapsed = run_two_ranks(tmp_path, "hang", "distributed.timeout=6")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    # Rank 0 gave up by itself after distributed.timeout (torchrun cannot see a hang).
    assert "[rank0]" in output and "Timed out waiting 6000ms" in output, output[-3000:]
    assert 6 < elapsed < 60
