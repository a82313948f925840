"""Issue 14's evaluation cases: the checkpoint beside the config is the one evaluated, two
evaluations never share an output folder's files, and bad output options fail in one line
before anything is encoded."""
import os
import shutil

import pytest
import torch
import yaml
from omegaconf import OmegaConf
from test_eval import _eval, _load, run  # noqa: F401 (run: the trained-model fixture)

from mmf.evaluation import encoding, outputs
from mmf.evaluation import run as eval_run
from mmf.evaluation.loading import load_eval_config
from mmf.evaluation.outputs import claim_out_dir, default_out_dir
from mmf.utils.build import build_model
from mmf_cli import evaluate


@pytest.fixture
def no_encoding(monkeypatch):
    """Fails the test if anything is encoded."""

    def fail(*args, **kwargs):
        raise AssertionError("encoding started")

    monkeypatch.setattr(eval_run, "encode_gallery", fail)


def _one_line(output):
    lines = output.err.strip().splitlines()
    assert len(lines) == 1, output.err
    return lines[0]


def test_checkpoint_beside_the_config_wins_over_a_local_run_of_the_same_name(
    run, tmp_path, monkeypatch, capsys  # noqa: F811
):
    """The run folder's config says ``env.save_dir: ./save/tiny_eval`` (relative, as the
    original writes it); the current folder holds another run of that name (other weights)."""
    run_dir = tmp_path / "published" / "tiny_eval"
    run_dir.mkdir(parents=True)
    trained = os.path.join(os.path.dirname(run["config"]), "rice_final.pth")
    shutil.copy(trained, run_dir / "rice_final.pth")
    with open(run["config"]) as handle:
        saved = yaml.safe_load(handle)
    saved["env"]["save_dir"] = "./save/tiny_eval"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    local = tmp_path / "cwd" / "save" / "tiny_eval"
    local.mkdir(parents=True)
    config, _ = load_eval_config(str(run_dir / "config.yaml"), "videotoshop")
    torch.manual_seed(1)
    node = OmegaConf.merge(config.model_config.rice, {"model": "rice"})
    other = build_model(node).state_dict()
    torch.save(other, local / "rice_final.pth")
    monkeypatch.chdir(tmp_path / "cwd")

    code, output = _eval(["--config_file", str(run_dir / "config.yaml"), "--out", "beside"], capsys)
    assert code == 0, output.err
    expected = str(run_dir / "rice_final.pth")
    assert f"checkpoint: {expected}" in output.out.splitlines()
    metrics, rankings = _load("beside")
    assert metrics["checkpoint"] == expected
    # Same numbers as naming that checkpoint explicitly; the local run's differ.
    argv = ["--config_file", str(run_dir / "config.yaml"), "--checkpoint"]
    assert _eval(argv + [expected, "--out", "explicit"])[0] == 0
    assert _load("explicit")[1] == rankings
    assert _eval(argv + [str(local / "rice_final.pth"), "--out", "local"])[0] == 0
    assert _load("local")[0]["checkpoint"] == str(local / "rice_final.pth")
    assert _load("local")[1] != rankings


def test_default_out_folder_names_the_checkpoint(run, tmp_path, monkeypatch, capsys):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    trained = os.path.join(os.path.dirname(run["config"]), "rice_final.pth")
    copy = tmp_path / "model_7.pth"
    shutil.copy(trained, copy)
    for checkpoint in (trained, str(copy)):
        code, output = _eval(["--config_file", run["config"], "--checkpoint", checkpoint], capsys)
        assert code == 0, output.err
    folders = sorted(os.listdir(tmp_path / "results" / "tiny_eval"))
    assert folders == sorted(
        os.path.basename(default_out_dir("tiny_eval", path)) for path in (trained, str(copy))
    )
    assert folders[0].startswith("model_7-") and folders[1].startswith("rice_final-")
    for folder in folders:
        metrics, _ = _load(tmp_path / "results" / "tiny_eval" / folder)
        assert os.path.basename(metrics["checkpoint"]).split(".")[0] == folder.split("-")[0]


def test_second_evaluation_into_a_busy_folder_is_refused(run, tmp_path, capsys, no_encoding):  # noqa: F811
    out = tmp_path / "shared"
    with claim_out_dir(str(out)):
        code, output = _eval(["--config_file", run["config"], "--out", str(out),
                              "--rerank_topk", "2"], capsys)
    assert code == 1
    assert _one_line(output) == (
        f"error: --out {out}: another evaluation is writing there; wait for it to finish or "
        "pass another --out"
    )
    assert os.listdir(out) == [outputs.LOCK_FILE]
    # Once the first one is done, the folder can be claimed again.
    with claim_out_dir(str(out)):
        pass


def test_gallery_tokens_are_private_to_each_evaluation(run, tmp_path, capsys):  # noqa: F811
    first = encoding.TokenStore(str(tmp_path), 4)
    second = encoding.TokenStore(str(tmp_path), 4)
    assert first.path != second.path and os.path.dirname(first.path) == str(tmp_path)
    first.append(torch.ones(4, 3, 2))
    second.append(torch.zeros(4, 3, 2))
    assert first.get([0, 3]).float().sum().item() == 12.0
    first.close()
    second.close()
    assert os.listdir(tmp_path) == []
    out = tmp_path / "out"
    code, output = _eval(["--config_file", run["config"], "--out", str(out), "--rerank_topk", "2"],
                         capsys)
    assert code == 0, output.err
    assert sorted(os.listdir(out)) == sorted(
        [outputs.LOCK_FILE, "embeddings.pt", "metrics.json", "rankings.jsonl"]
    )


def test_out_pointing_at_a_file_is_one_line(run, tmp_path, capsys, no_encoding):  # noqa: F811
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    code, output = _eval(["--config_file", run["config"], "--out", str(target)], capsys)
    assert code == 1
    assert _one_line(output) == f"error: --out {target}: is a file, not a folder"
    assert target.read_text() == "keep me\n"


def test_unwritable_out_is_one_line(run, tmp_path, capsys, no_encoding):  # noqa: F811
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    # root may write anywhere; /sys/kernel refuses new files even to root.
    out = str(locked) if not os.access(locked, os.W_OK) else "/sys/kernel"
    try:
        code, output = _eval(["--config_file", run["config"], "--out", out], capsys)
    finally:
        locked.chmod(0o755)
    assert code == 1
    line = _one_line(output)
    assert line.startswith(f"error: --out {out}: cannot write there (")
    assert line.endswith("ermission denied)") or line.endswith("Operation not permitted)")
    assert os.listdir(locked) == []


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--batch_size", "0", "error: --batch_size must be an integer >= 1, got 0"),
        ("--num_workers", "-1", "error: --num_workers must be an integer >= 0, got -1"),
        ("--rerank_topk", "-2", "error: --rerank_topk must be an integer >= 0, got -2"),
    ],
)
def test_bad_sizes_fail_before_anything_is_loaded(tmp_path, capsys, no_encoding, option, value,
                                                  message):
    argv = ["--config_file", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "o"),
            option, value]
    code = evaluate.cli_main(argv, "videotoshop", global_gallery=False, description="lpr_eval")
    output = capsys.readouterr()
    assert code == 1 and _one_line(output) == message
    assert not os.path.exists(tmp_path / "o")
