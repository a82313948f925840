"""Clip-level shards: scripts/pack_shards.py in the three input layouts, the ``videotoshop``
shards path against the files path, ranks x workers, resume mid-epoch."""
import collections
import contextlib
import importlib.util
import io
import json
import os
import random
import shutil
import tarfile
import types

import pytest
import torch
import webdataset
import yaml
from test_datasets import (
    TRAIN_CLIPS,
    builder,
    frame_ids,
    lpr4m_line,
    lpr_config,
    write_jpeg,
    write_lines,
)
from test_img2dataset import (  # noqa: F401  (downloads: the real img2dataset run)
    CLIP_FULL,
    CLIP_PARTIAL,
    TEST_CLIP,
    TEST_IMAGES,
    TRAIN_IMAGES,
    downloads,
)
from toy_helpers import max_abs_diff, weights

from mmf.common.errors import DataError
from mmf.datasets.builders.videotoshop.shards import (
    ShardDataset,
    buffer_shuffle_order,
    read_sample,
    read_sidecar,
    record_of,
)
from mmf.trainers.callbacks.base import Callback
from mmf.trainers.mmf_trainer import MMFTrainer
from mmf.utils.checkpoint import load_checkpoint_file
from mmf.utils.configuration import Configuration

pytestmark = pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = os.path.join(REPO, "scripts", "pack_shards.py")
LIVE = "5e7d2a10-1111-4222-8333-944455556666"
CLIPS = [(f"{LIVE}-{1000 + i}-{2000 + i}", 1 + i % 3, f"img-{i:02d}") for i in range(22)]


def _load_pack_shards():
    spec = importlib.util.spec_from_file_location("pack_shards", PACK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pack_shards = _load_pack_shards()


def pack(*args, check=True):
    """``scripts/pack_shards.py *args`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = pack_shards.main([str(arg) for arg in args])
    if check:
        assert code == 0, err.getvalue()
    return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def tar_samples(path):
    """``{key: {extension: bytes}}`` as WebDataset groups the members of a tar."""
    samples = collections.defaultdict(dict)
    with tarfile.open(path) as archive:
        for member in archive:
            key, _, ext = member.name.partition(".")
            samples[key][ext] = archive.extractfile(member).read()
    return dict(samples)


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """22 clips of 1-3 frames (LPR4M layout), packed in shards of 5 (the last holds 2)."""
    root = tmp_path_factory.mktemp("many")
    index = 0
    for clip_id, count, image_id in CLIPS:
        for frame_id in frame_ids(clip_id, count):
            write_jpeg(root / "training_frames" / clip_id / f"{frame_id}.jpg", index)
            index += 1
        write_jpeg(root / "training_images" / f"{image_id}.jpg", index, (36, 44))
        index += 1
    (root / "annotations").mkdir()
    write_lines(root / "annotations/train.txt", [lpr4m_line(*clip) for clip in CLIPS])
    pack("--annotation", root / "annotations/train.txt", "--data_dir", root,
         "--out", root / "shards", "--samples_per_shard", 5)
    return root


@pytest.mark.parametrize("layout", ["lpr4m", "750k"])
def test_pack_both_train_layouts(lpr_root, tmp_path, layout):
    annotation = lpr_root / "annotations" / f"train_{layout}.txt"
    out = tmp_path / "shards"
    stdout = pack("--annotation", annotation, "--data_dir", lpr_root, "--out", out,
                  "--samples_per_shard", 2).stdout
    assert "3 of 3 pairs packed in 2 shards" in stdout
    samples = {**tar_samples(out / "lpr-000000.tar"), **tar_samples(out / "lpr-000001.tar")}
    assert sorted(samples) == ["000000000", "000000001", "000000002"]
    for key, (clip_id, count, image_id) in zip(sorted(samples), TRAIN_CLIPS, strict=True):
        members = samples[key]
        meta = json.loads(members["json"])
        assert (meta["video_id"], meta["image_id"]) == (clip_id, image_id)
        assert meta["asr"] == f"asr of {clip_id[-5:]}" and meta["title"] == f"title {image_id[-1]}"
        assert meta["category"] == ("apparel" if layout == "lpr4m" else "food")
        assert (meta["boxes"] is None) == (layout == "750k")
        stored = [(lpr_root / "training_frames" / clip_id / f"{f}.jpg").read_bytes()
                  for f in frame_ids(clip_id, count)]
        assert [members[name] for name in meta["frames"]] == stored  # not re-encoded
        image = (lpr_root / "training_images" / f"{image_id}.jpg").read_bytes()
        assert members[meta["image"]] == image
    # Any WebDataset reader groups the members by key.
    read = list(webdataset.WebDataset(str(out / "lpr-{000000..000001}.tar"), shardshuffle=False))
    assert [s["__key__"] for s in read] == sorted(samples)


def test_pack_reports_missing_files_and_resumes(lpr_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(lpr_root, data)
    clip_id = TRAIN_CLIPS[1][0]
    os.remove(data / "training_frames" / clip_id / f"{clip_id}-0002.jpg")
    os.remove(data / "training_images" / f"{TRAIN_CLIPS[2][2]}.jpg")
    out = tmp_path / "shards"
    args = ("--annotation", data / "annotations/train_lpr4m.txt", "--data_dir", data,
            "--out", out, "--samples_per_shard", 2)
    stdout = pack(*args).stdout
    assert "1 of 3 pairs packed in 2 shards" in stdout and "2 not packed" in stdout
    assert f"{clip_id}-0002.jpg" in stdout and f"{TRAIN_CLIPS[2][2]}.jpg" in stdout
    report = json.loads((out / "pack_report.json").read_text())
    assert [item["video_id"] for item in report["not_packed"]] == [clip_id, TRAIN_CLIPS[2][0]]
    assert report["not_packed"][0]["line"].endswith("train_lpr4m.txt:2")

    # Rerun: finished shards are kept; a shard without its index (killed mid-write) is redone.
    first = (out / "lpr-000000.tar").stat().st_mtime_ns
    os.remove(out / "lpr-000001.json")
    (out / ".lpr-000001.tar.abc123.tmp").write_bytes(b"partial")
    stdout = pack(*args).stdout
    assert (out / "lpr-000000.tar").stat().st_mtime_ns == first
    assert (out / "lpr-000001.json").is_file() and not (out / ".lpr-000001.tar.abc123.tmp").exists()
    assert "2 not packed" in stdout  # the kept shard's problems are still reported

    other = pack(*args[:-1], 3, check=False)
    assert other.returncode == 1 and "choose another --out" in other.stderr
    assert other.stderr.strip().splitlines()[-1].startswith("pack_shards: error: ")
    assert "Traceback" not in other.stderr


def test_pack_img2dataset_output(downloads, tmp_path):  # noqa: F811
    """Frames and images straight from img2dataset output (train: files format, test:
    webdataset format); a clip with a frame that failed to download is not packed."""
    lines = []
    for clip, frames, image in (
        (CLIP_FULL, [f"{CLIP_FULL}-{i * 5:04d}" for i in range(3)], TRAIN_IMAGES[0]),
        (CLIP_PARTIAL, [f"{CLIP_PARTIAL}-{i * 5:04d}" for i in range(3)], TRAIN_IMAGES[1]),
        (TEST_CLIP, [f"{TEST_CLIP}-{i:04d}" for i in range(4)], TEST_IMAGES[0]),
    ):
        boxes = [[[1, 1, 20, 20]] for _ in frames]
        lines.append("\t".join([clip, json.dumps(frames), json.dumps(boxes), image, "t", "3",
                                "apparel", "asr", "large", "long", "single"]))
    write_lines(tmp_path / "train.txt", lines)
    out = tmp_path / "shards"
    stdout = pack("--annotation", tmp_path / "train.txt", "--img2dataset",
                  downloads / "dl_train", "--img2dataset", downloads / "dl_test",
                  "--out", out).stdout
    assert "2 of 3 pairs packed in 1 shards" in stdout and f"{CLIP_PARTIAL}-0010" in stdout
    samples = tar_samples(out / "lpr-000000.tar")
    assert sorted(samples) == ["000000000", "000000002"]
    test_meta = json.loads(samples["000000002"]["json"])
    assert test_meta["video_id"] == TEST_CLIP and len(test_meta["frames"]) == 4
    assert all(samples["000000002"][name][:2] == b"\xff\xd8" for name in test_meta["frames"])
    assert pack("--annotation", tmp_path / "train.txt", "--img2dataset", tmp_path / "nowhere",
                "--out", out, check=False).returncode == 1


def shard_config(root, **overrides):
    return lpr_config(root, "annotations/train.txt", shards="shards/lpr-{000000..000004}.tar",
                      **overrides)


def loader_ids(dataset, workers, batch_size=2):
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=dataset.collate_fn
    )
    batches = [batch.video_id for batch in loader]
    assert len(batches) == len(loader) or dataset.start
    return batches


def test_ranks_and_workers_see_each_sample_once(many):
    config = shard_config(many)
    seen = []
    for rank in range(2):
        dataset = ShardDataset(config, "train", rank=rank, world_size=2)
        dataset.init_processors()
        dataset.configure_loader(batch_size=2, shuffle=True, seed=7)
        dataset.set_epoch(3)
        assert len(dataset) == 11
        batches = loader_ids(dataset, workers=2)
        assert [len(b) for b in batches] == [2, 2, 2, 2, 2, 1]
        seen += [video_id for batch in batches for video_id in batch]
    assert sorted(seen) == sorted(clip[0] for clip in CLIPS)
    # A different epoch, a different order; the same epoch, the same order.
    orders = {}
    for epoch in (3, 3, 4):
        dataset = ShardDataset(config, "train", rank=0, world_size=2)
        dataset.configure_loader(batch_size=2, shuffle=True, seed=7)
        dataset.set_epoch(epoch)
        orders.setdefault(epoch, []).append(
            [p for w in range(2) for _, p in dataset.worker_order(w, 2)]
        )
    assert orders[3][0] == orders[3][1] != orders[4][0]


def test_uneven_split_pads_like_distributed_sampler(many):
    config = shard_config(many)
    seen = []
    for rank in range(3):  # 22 = 3 x 8 - 2: the last rank repeats the first two samples
        dataset = ShardDataset(config, "train", rank=rank, world_size=3)
        dataset.configure_loader(batch_size=3, shuffle=False)
        locate = dataset.locator(0, 1)
        seen += [locate(p) for _, p in dataset.worker_order(0, 1)]
    assert len(seen) == 24 and len(set(seen)) == 22 and seen[-2:] == seen[:2]


def test_skip_resumes_at_the_saved_position(many):
    """3 batches consumed with 2 workers, then a fresh dataset skips them: together the
    epoch, in the same order."""
    config = shard_config(many, shard_shuffle_buffer=4)

    def epoch_batches(skip):
        dataset = ShardDataset(config, "train", rank=0, world_size=1)
        dataset.init_processors()
        dataset.configure_loader(batch_size=4, shuffle=True, seed=1)
        dataset.set_epoch(2)
        dataset.skip(skip)
        return loader_ids(dataset, workers=2, batch_size=4)

    full = epoch_batches(0)
    assert sorted(v for b in full for v in b) == sorted(clip[0] for clip in CLIPS)
    assert epoch_batches(3 * 4) == full[3:]


def test_buffer_shuffle_order():
    assert buffer_shuffle_order(5, 1, random.Random(0)) == [0, 1, 2, 3, 4]
    order = buffer_shuffle_order(50, 8, random.Random(0))
    assert sorted(order) == list(range(50)) and order != list(range(50))
    # An item leaves at the earliest when the buffer is full.
    assert all(index <= place + 7 for place, index in enumerate(order))


def test_shard_errors(many, tmp_path):
    with pytest.raises(DataError, match="lpr-000009.json not found"):
        os.link(many / "shards/lpr-000000.tar", tmp_path / "lpr-000009.tar")
        ShardDataset(lpr_config(many, shards=[str(tmp_path / "lpr-000009.tar")]), "train")
    with pytest.raises(DataError, match="shard not found"):
        ShardDataset(lpr_config(many, shards="shards/none-{0..1}.tar"), "train")


class LossRecorder(Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_update_end(self, report):
        self.losses.append({k: v.item() for k, v in report["losses"].items()})


def rice_run(root, save_dir, *extra):
    config = {
        "dataset_config": {"videotoshop": {
            "data_dir": str(root),
            "annotations": {"train": ["annotations/train.txt"], "val": [], "test": []},
            "processors": {"masked_video_processor": {"type": "temporal_masked_slice", "params": {
                "max_temporal_len": 3, "slice_pos": 2, "augment_order": 0, "cut_tail": True}}},
        }},
        "model_config": {"rice": {
            "training_head_type": "pretraining", "tasks": ["vic", "vim"],
            "tasks_sample_ratio": [0.5, 0.5],
            "image_encoder": {"type": "openai_clip", "params": {
                "image_size": 32, "patch_size": 16, "width": 32, "layers": 1, "heads": 2,
                "output_dim": 16}},
            "transformer_model": {"num_attention_heads": 4},
        }},
        "optimizer": {"type": "adam_w", "params": {"lr": 1e-3, "weight_decay": 0.0}},
        "training": {
            "batch_size": 4, "num_workers": 0, "drop_last": True, "log_interval": 1,
            "checkpoint_interval": 100, "evaluation_interval": 100, "device": "cpu",
            "tensorboard": False, "progress_bar": False, "seed": 5,
        },
        "env": {"save_dir": str(save_dir)},
        "run_type": "train",
    }
    path = save_dir.parent / f"{save_dir.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    opts = [f"config={path}", "model=rice", "dataset=videotoshop", *extra]
    # The 32 px processors of the dataset tests.
    from test_datasets import small_processors

    parsed = Configuration(opts).get_config()
    small_processors(parsed.dataset_config.videotoshop)
    trainer = MMFTrainer(parsed).load()
    recorder = LossRecorder()
    trainer.callbacks.append(recorder)
    trainer.train()
    return trainer, recorder.losses


def test_training_from_shards_equals_files(many, tmp_path):
    """Same samples, order and augmentation: the same losses and weights after 2 updates."""
    no_shuffle = ("training.shuffle=false", "training.max_updates=2")
    files, file_losses = rice_run(many, tmp_path / "files", *no_shuffle)
    shards, shard_losses = rice_run(
        many, tmp_path / "shards", *no_shuffle,
        "dataset_config.videotoshop.shards=shards/lpr-{000000..000004}.tar",
    )
    assert isinstance(shards.train_loader.dataset, ShardDataset)
    assert len(file_losses) == 2 and file_losses == shard_losses
    assert max_abs_diff(weights(files.model), weights(shards.model)) == 0.0


def test_shards_resume_mid_epoch(many, tmp_path):
    """Shuffled, 2 workers: stop at update 2 of a 5-update epoch, resume to 6 (the next
    epoch) == 6 updates in one go."""
    common = ("dataset_config.videotoshop.shards=shards/lpr-{000000..000004}.tar",
              "dataset_config.videotoshop.shard_shuffle_buffer=3", "training.num_workers=2")
    full, full_losses = rice_run(many, tmp_path / "full", *common, "training.max_updates=6")
    rice_run(many, tmp_path / "split", *common, "training.max_updates=2")
    state = load_checkpoint_file(tmp_path / "split" / "current.ckpt")["trainer_state"]
    assert (state["current_epoch"], state["batches_in_epoch"]) == (0, 2)
    resumed, resumed_losses = rice_run(
        many, tmp_path / "split", *common, "training.max_updates=6", "checkpoint.resume=true"
    )
    assert resumed.state.current_epoch == 1 and resumed_losses == full_losses[2:]
    assert max_abs_diff(weights(full.model), weights(resumed.model)) == 0.0


def test_crop_to_box_from_shards_crops_as_the_files_path(lpr_root, tmp_path):
    """The legacy ``crop_to_box`` on shards: the shard json's boxes through the one crop
    (``clip_boxes``, union, margin 0), the frames the files path gives."""
    pack("--annotation", lpr_root / "annotations/train_lpr4m.txt", "--data_dir", lpr_root,
         "--out", tmp_path / "shards", "--samples_per_shard", 3)
    tar = str(tmp_path / "shards" / "lpr-000000.tar")
    offsets = read_sidecar(tar)["offsets"]
    with open(tar, "rb") as handle:
        records = [record_of(read_sample(handle, tar, offsets[i], offsets[i + 1]), tar)
                   for i in range(3)]
    videos = {}
    for crop in (True, False):
        files = builder().load_dataset(
            lpr_config(lpr_root, "annotations/train_lpr4m.txt", crop_to_box=crop), "train")
        shards = ShardDataset(lpr_config(lpr_root, "annotations/train_lpr4m.txt",
                                         crop_to_box=crop, shards=tar), "train", 0, 1)
        shards.init_processors()
        for dataset in (files, shards):
            dataset.use_augments = False  # the eval transforms: deterministic
        assert torch.equal(shards._pair_sample(records[1]).video, files[1].video)
        videos[crop] = files[1].video
    assert not torch.equal(videos[True][0], videos[False][0])
