"""The uint8 loader (``output: uint8``) and the decode after the loader (``output: jpeg``)
against today's float path, on real JPEGs, through the dataset, the DataLoader and
``mmf.datasets.prefetch.to_device``.

Tolerance: torchvision's JPEG decode gives PIL's pixels exactly, and its uint8 antialiased
resize differs from PIL's by at most one level (different fixed-point rounding). After
normalisation one level is 1 / (255 * std), at most 1 / (255 * 0.26130258) = 0.01501 for
the CLIP constants; the float arithmetic is the same (``x / 255 - mean) / std``), so
``1 / (255 * min std) + 1e-6`` bounds every element.
"""
import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image
from test_datasets import builder, load_val, lpr_config, write_lpr_dataset
from test_shards import pack, rice_run
from toy_helpers import max_abs_diff, weights

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.builders.videotoshop.images import UnreadableImageError, load_rgb, load_uint8
from mmf.datasets.prefetch import to_device
from mmf.utils.configuration import get_mmf_root, load_yaml
from mmf.utils.samplers import seeded_rngs

STD = (0.26862954, 0.26130258, 0.27577711)
TOLERANCE = 1 / (255 * min(STD)) + 1e-6


def with_output(config, output):
    for key in ("train_image_processor", "eval_image_processor"):
        config.processors[key].params.output = output
    return config


def batch_of(dataset, workers=0, batch_size=2):
    """Every item of ``dataset`` in order, through a DataLoader, finished by ``to_device``."""
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=dataset.collate_fn
    )
    batches = [to_device(batch, torch.device("cpu")) for batch in loader]
    return {key: torch.cat([b[key] for b in batches]) for key in ("video", "image")}


def seeded_items(dataset, seed=100):
    """Every item with its own seed (as ``SeededSamples`` seeds them), collated and finished."""
    items = []
    for index in range(len(dataset)):
        with seeded_rngs(seed + index):
            items.append(dataset[index])
    return to_device(dataset.collate_fn(items), torch.device("cpu"))


def default_processor(key, output):
    defaults = load_yaml(get_mmf_root() / "configs/datasets/videotoshop/defaults.yaml")
    node = defaults.dataset_config.videotoshop.processors[key]
    node.params.output = output
    return registry.get_processor_class(node.type)(node.params)


@pytest.mark.parametrize("size", [(256, 455), (720, 1280), (180, 150)])
def test_uint8_eval_transform_equals_float_within_one_level(tmp_path, size):
    """The released eval processor (224 px): PIL float path vs torchvision uint8 path + device
    normalisation, on a real photo stored at livestream frame sizes."""
    path = tmp_path / "frame.jpg"
    Image.fromarray(skimage.data.astronaut()).resize(size).save(path, quality=90)
    expected = default_processor("eval_image_processor", "float")(load_rgb(str(path)))
    uint8 = default_processor("eval_image_processor", "uint8")
    pixels = uint8(load_uint8(str(path)))
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 224, 224)
    batch = to_device({"image": pixels[None], "pixel_normalize": uint8.normalization[None]}, "cpu")
    assert "pixel_normalize" not in batch and batch["image"].dtype == torch.float32
    diff = (batch["image"][0] - expected).abs()
    assert diff.max().item() <= TOLERANCE
    assert diff.mean().item() < 0.25 * TOLERANCE  # most pixels are the same


def test_uint8_decode_is_pil_decode(tmp_path):
    for index, name in enumerate(("chelsea", "coffee", "rocket")):
        path = tmp_path / f"{index}.jpg"
        Image.fromarray(getattr(skimage.data, name)()).save(path, quality=85)
        pil = torch.from_numpy(np.array(load_rgb(str(path)))).permute(2, 0, 1)
        assert torch.equal(load_uint8(str(path)), pil)
    png = tmp_path / "gray.bmp"  # a format torchvision does not decode: PIL does it
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(png)
    assert load_uint8(str(png)).shape == (3, 6, 8)


@pytest.mark.parametrize("crop_to_box", [False, True])
def test_dataset_uint8_and_jpeg_match_float(lpr_root, crop_to_box):
    """Eval (val split) and seeded train items: uint8 within one level of float (the v2
    transforms draw the same crops and flips from the same seed), the decode after the
    loader (jpeg) equal to uint8 for eval."""
    def load(output, split):
        config = with_output(lpr_config(lpr_root, crop_to_box=crop_to_box), output)
        return load_val(config) if split == "val" else builder().load_dataset(config, "train")

    for split in ("val", "train"):
        float_items = seeded_items(load("float", split))
        uint8_items = seeded_items(load("uint8", split))
        for field in ("video", "image"):
            assert uint8_items[field].dtype == torch.float32
            assert (float_items[field] - uint8_items[field]).abs().max() <= TOLERANCE
        assert torch.equal(float_items["video_temporal_mask"], uint8_items["video_temporal_mask"])
        padded = float_items["video_temporal_mask"] == 0
        assert padded.any() and uint8_items["video"][padded].abs().max() == 0
    jpeg_items = seeded_items(load("jpeg", "val"))
    for field in ("video", "image"):
        assert torch.equal(jpeg_items[field], seeded_items(load("uint8", "val"))[field])


def test_decode_after_loader_with_workers(lpr_root):
    """``output: jpeg``: the workers hand over bytes, ``to_device`` decodes (on the CPU here,
    on the GPU with CUDA); the train augmentation follows the per-sample seed whatever the
    workers, and the uint8 batch crosses the loader."""
    config = with_output(lpr_config(lpr_root, crop_to_box=True), "jpeg")
    dataset = builder().load_dataset(config, "train")
    raw = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3,
                                                collate_fn=dataset.collate_fn)))
    assert type(raw["video"][0]).__name__ == "EncodedVideo" and raw["pixel_normalize"].shape == (
        3, 2, 3)
    first, again = seeded_items(dataset), seeded_items(dataset)
    assert torch.equal(first["video"], again["video"])
    other = seeded_items(dataset, seed=7)
    assert not torch.equal(first["video"], other["video"])  # the augmentation is random
    val = with_output(lpr_config(lpr_root), "jpeg")
    in_workers = batch_of(load_val(val), workers=2)
    in_process = batch_of(load_val(with_output(lpr_config(lpr_root), "uint8")), workers=0)
    for field in ("video", "image"):
        assert torch.equal(in_workers[field], in_process[field])


def test_unreadable_image_in_uint8_and_jpeg_paths(lpr_root, tmp_path):
    bad = tmp_path / "bad.jpg"
    data = next((lpr_root / "training_images").glob("*.jpg")).read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(UnreadableImageError, match="bad.jpg"):
        load_uint8(str(bad))
    processor = default_processor("eval_image_processor", "jpeg")
    encoded = processor(type("Source", (), {
        "data": torch.frombuffer(bytearray(b"\xff\xd8not a jpeg"), dtype=torch.uint8),
        "crop": None, "name": "shard-3.tar:000000001.frame000.jpg"})())
    with pytest.raises(UnreadableImageError, match="shard-3.tar:000000001.frame000.jpg"):
        to_device({"image": [encoded], "pixel_normalize": processor.normalization[None]}, "cpu")


def test_training_uint8_equals_float_and_shards_equal_files(lpr_root, tmp_path):
    """2 updates of RICE: uint8 losses close to float (one-level pixel differences), and the
    uint8 shards path gives exactly the uint8 files path (same samples, order, seeds)."""
    root = tmp_path / "data"
    write_lpr_dataset(root)
    (root / "annotations/train.txt").write_text((root / "annotations/train_lpr4m.txt").read_text())
    pack("--annotation", root / "annotations/train.txt", "--data_dir", root,
         "--out", root / "shards", "--samples_per_shard", 2)
    uint8 = [f"dataset_config.videotoshop.processors.{key}.params.output=uint8"
             for key in ("train_image_processor", "eval_image_processor")]
    common = ("training.shuffle=false", "training.max_updates=2", "training.batch_size=1")
    float_run, float_losses = rice_run(root, tmp_path / "float", *common)
    files, file_losses = rice_run(root, tmp_path / "files", *common, *uint8)
    shards, shard_losses = rice_run(
        root, tmp_path / "shards", *common, *uint8,
        "dataset_config.videotoshop.shards=shards/lpr-{000000..000001}.tar",
    )
    assert file_losses == shard_losses
    assert max_abs_diff(weights(files.model), weights(shards.model)) == 0.0
    for uint8_loss, float_loss in zip(file_losses, float_losses, strict=True):
        for name, value in float_loss.items():
            assert uint8_loss[name] == pytest.approx(value, rel=1e-3, abs=1e-4)


def test_processor_output_errors():
    make = registry.get_processor_class("torchvision_transforms")
    with pytest.raises(ConfigError, match="output must be one of"):
        make(OmegaConf.create({"transforms": ["ToTensor"], "output": "half"}))
    with pytest.raises(ConfigError, match=r"transforms\[0\].*must be the last"):
        make(OmegaConf.create({"output": "uint8", "transforms": [
            {"type": "Normalize", "params": {"mean": [0, 0, 0], "std": [1, 1, 1]}},
            "RandomHorizontalFlip"]}))
    plain = make(OmegaConf.create({"output": "uint8", "transforms": ["ToTensor"]}))
    assert plain.normalization.tolist() == [[0.0] * 3, [1.0] * 3]
    pixels = plain(torch.tensor([[[255] * 4] * 2, [[0] * 4] * 2, [[51] * 4] * 2],
                                dtype=torch.uint8))
    out = to_device({"image": pixels[None], "pixel_normalize": plain.normalization[None]}, "cpu")
    assert out["image"][0, :, 0, 0].tolist() == pytest.approx([1.0, 0.0, 0.2])
