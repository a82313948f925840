"""scripts/download_lpr750k.sh (resumable fetch, unpack) and scripts/download_lpr4m.sh
(img2dataset flags)."""

import os
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LPR750K = ROOT / "scripts" / "download_lpr750k.sh"
LPR4M = ROOT / "scripts" / "download_lpr4m.sh"


def _tar(remote, part, files):
    src = remote.parent / "src" / part
    for name, text in files.items():
        path = src / part / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    with tarfile.open(remote / f"{part}.tar", "w") as archive:
        archive.add(src / part, arcname=part)


def _run(script, *args, **env):
    return subprocess.run(
        ["bash", str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def test_lpr750k_download_resumes_unpacks_and_skips_done_parts(tmp_path):
    remote = tmp_path / "remote"
    remote.mkdir()
    _tar(remote, "annotations", {"query_tenframes.json": "{}", "gallery_main.txt": "a/b.jpg\n"})
    _tar(remote, "query", {f"clip/{i:04d}.jpg": "x" * 3000 for i in range(5)})
    dest = tmp_path / "lpr750k"
    # An interrupted download: the first bytes of query.tar are already there.
    (dest / ".downloads").mkdir(parents=True)
    whole = (remote / "query.tar").read_bytes()
    (dest / ".downloads" / "query.tar").write_bytes(whole[:4096])
    base = {"LPR750K_BASE_URL": f"file://{remote}"}

    result = _run(LPR750K, dest, "annotations", "query", **base)
    assert result.returncode == 0, result.stderr
    assert (dest / ".downloads" / "query.tar").read_bytes() == whole
    assert (dest / "annotations" / "gallery_main.txt").read_text() == "a/b.jpg\n"
    assert len(list((dest / "query" / "clip").glob("*.jpg"))) == 5

    result = _run(LPR750K, dest, "annotations", "query", "gallery", **base)
    assert result.returncode == 1
    assert (
        "query already unpacked" in result.stdout
        and "annotations already unpacked" in result.stdout
    )
    assert "1 part(s) failed: gallery" in result.stderr


def test_lpr4m_download_runs_img2dataset_on_the_four_lists(tmp_path):
    urls = tmp_path / "urls"
    urls.mkdir()
    names = [
        "training_frame_url_full_473402226.txt",
        "training_image_url_full_332438.txt",
        "test_frame_url_501656.txt",
        "test_image_url_66358.txt",
    ]
    for name in names:
        (urls / name).write_text("https://example.com/a.jpg\n")
    log = tmp_path / "calls.txt"
    fake = tmp_path / "fake_img2dataset"
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" >> "{log}"\n')
    fake.chmod(0o755)

    result = _run(
        LPR4M,
        urls,
        tmp_path / "lpr4m",
        "webdataset",
        IMG2DATASET=str(fake),
        SKIP_CONVERT="1",
        PROCESSES="3",
        THREADS="16",
    )
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 4
    for call, name, folder in zip(
        calls, names, ["training_frame", "training_image", "test_frame", "test_image"], strict=True
    ):
        assert f"--url_list={urls / name}" in call
        assert f"--output_folder={tmp_path / 'lpr4m' / 'img2dataset' / folder}" in call
        for flag in (
            "--input_format=txt",
            "--output_format=webdataset",
            "--image_size=256",
            "--resize_mode=keep_ratio",
            "--number_sample_per_shard=50000",
            "--timeout=10",
            "--retries=0",
            "--incremental_mode=incremental",
            "--processes_count=3",
            "--thread_count=16",
            "--distributor=multiprocessing",
        ):
            assert flag in call.split(), (flag, call)

    result = _run(LPR4M, urls, tmp_path / "lpr4m", "tfrecord", IMG2DATASET=str(fake))
    assert result.returncode == 2 and "files or webdataset" in result.stderr
