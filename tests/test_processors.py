"""Processors: temporal slicing semantics, block-wise masks, torchvision transform lists."""

import collections

import numpy as np
import pytest
import skimage.data
import torch
from omegaconf import OmegaConf
from PIL import Image

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.utils.build import build_processors
from mmf.utils.env import setup_imports

setup_imports()


def make(name, **params):
    return registry.get_processor_class(name)(OmegaConf.create(params))


def slicer(**params):
    defaults = dict(max_temporal_len=10, slice_pos=2, augment_order=0, cut_tail=True)
    defaults.update(params)
    return make("temporal_masked_slice", **defaults)


@pytest.mark.parametrize(
    "slice_pos, expected",
    [
        (0, list(range(10))),
        (1, list(range(15, 25))),
        (2, [0, 2, 5, 8, 10, 13, 16, 18, 21, 24]),
    ],
)
def test_temporal_slice_positions(slice_pos, expected):
    assert slicer(slice_pos=slice_pos).select(25) == expected


def test_temporal_slice_linspace_keeps_first_and_last():
    for n in (11, 17, 60, 301):
        picked = slicer().select(n)
        assert len(picked) == 10 and picked[0] == 0 and picked[-1] == n - 1
        assert picked == sorted(picked)


def test_temporal_slice_short_and_single_frame():
    processor = slicer()
    assert processor.select(4, use_augments=True) == [0, 1, 2, 3]
    generator = torch.Generator().manual_seed(0)
    # A single frame goes to slot 0 even with augmentation (no order change, no cut).
    assert all(processor.select(1, True, generator) == [0] for _ in range(50))
    out = processor(torch.ones(1, 3, 2, 2), use_augments=True)
    assert out["video"].shape == (10, 3, 2, 2)
    assert out["video_temporal_mask"].tolist() == [1] + [0] * 9
    assert out["video"][1:].abs().sum() == 0


def test_temporal_order_augments():
    generator = torch.Generator().manual_seed(1)
    reverse = slicer(augment_order=1, cut_tail=False)
    assert reverse.select(25, use_augments=True) == [24, 21, 18, 16, 13, 10, 8, 5, 2, 0]
    assert reverse.select(25, use_augments=False) == [0, 2, 5, 8, 10, 13, 16, 18, 21, 24]
    shuffle = slicer(augment_order=2, cut_tail=False)
    orders = {tuple(shuffle.select(10, True, generator)) for _ in range(20)}
    assert all(sorted(order) == list(range(10)) for order in orders)
    assert len(orders) > 1


def test_cut_tail_distribution():
    processor = slicer()
    generator = torch.Generator().manual_seed(123)
    draws = 6000
    counts = collections.Counter(len(processor.select(30, True, generator)) for _ in range(draws))
    assert set(counts) <= set(range(1, 11))
    assert abs(counts[10] / draws - 0.55) < 0.03
    for kept in range(1, 10):
        assert abs(counts[kept] / draws - 0.05) < 0.015
    # The kept frames are a prefix of the slice.
    generator = torch.Generator().manual_seed(5)
    for _ in range(20):
        kept = processor.select(30, True, generator)
        assert kept == processor.select(30)[: len(kept)]


def test_cut_tail_only_on_full_slices_and_only_with_augments():
    processor = slicer()
    generator = torch.Generator().manual_seed(0)
    assert {len(processor.select(7, True, generator)) for _ in range(200)} == {7}
    assert {len(processor.select(30, False, generator)) for _ in range(200)} == {10}
    assert {len(slicer(cut_tail=False).select(30, True, generator)) for _ in range(200)} == {10}


def test_temporal_call_pads_and_masks():
    video = torch.arange(25, dtype=torch.float32).view(25, 1, 1, 1).expand(25, 3, 2, 2)
    out = slicer(max_temporal_len=10, slice_pos=0)(video[:6])
    assert out["video"].shape == (10, 3, 2, 2)
    assert out["video_temporal_mask"].dtype == torch.long
    assert out["video_temporal_mask"].tolist() == [1] * 6 + [0] * 4
    assert out["video"][:6, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert out["video"][6:].abs().sum() == 0
    out = slicer(max_temporal_len=4, slice_pos=2)(video)
    assert out["video"][:, 0, 0, 0].tolist() == [0, 8, 16, 24]


def test_temporal_bad_params():
    with pytest.raises(ConfigError, match="slice_pos"):
        slicer(slice_pos=3)
    with pytest.raises(ConfigError, match="augment_order"):
        slicer(augment_order=5)


def test_blockwise_mask():
    processor = make(
        "blockwise_masked_patch",
        input_size=7,
        num_masking_patches=8,
        min_num_patches=4,
        max_num_patches=8,
        min_aspect=0.3,
    )
    assert torch.equal(processor(), torch.ones(7, 7, dtype=torch.long))
    generator = torch.Generator().manual_seed(0)
    masked_counts = []
    for _ in range(200):
        mask = processor(use_augments=True, generator=generator)
        assert mask.shape == (7, 7) and mask.dtype == torch.long
        assert set(mask.unique().tolist()) <= {0, 1}
        masked_counts.append(int((mask == 0).sum()))
    assert min(masked_counts) >= 1 and max(masked_counts) <= 8
    assert np.mean(masked_counts) > 4
    first = processor(use_augments=True, generator=torch.Generator().manual_seed(7))
    again = processor(use_augments=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, again)


def _photo():
    return Image.fromarray(skimage.data.astronaut()[100:260, 150:330])


TRANSFORMS = {
    "train": {
        "type": "torchvision_transforms",
        "params": {
            "transforms": [
                {"type": "Resize", "params": {"size": [40, 40], "interpolation": "bicubic"}},
                {"type": "RandomCrop", "params": {"size": [32, 32]}},
                "RandomHorizontalFlip",
                "ToTensor",
                {
                    "type": "Normalize",
                    "params": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                },
            ]
        },
    },
    "eval": {
        "type": "torchvision_transforms",
        "params": {
            "transforms": [
                {"type": "Resize", "params": {"size": [40, 40]}},
                {"type": "CenterCrop", "params": {"size": [32, 32]}},
                "ToTensor",
                {
                    "type": "Normalize",
                    "params": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                },
            ]
        },
    },
}


def test_torchvision_transforms_train_and_eval():
    processors = build_processors(OmegaConf.create(TRANSFORMS))
    image = _photo()
    torch.manual_seed(0)
    train = [processors["train"](image) for _ in range(6)]
    assert all(t.shape == (3, 32, 32) for t in train)
    assert any(not torch.equal(train[0], t) for t in train[1:])
    evals = [processors["eval"](image) for _ in range(3)]
    assert all(torch.equal(evals[0], t) for t in evals)
    assert torch.equal(processors["eval"]({"image": image})["image"], evals[0])
    resized = np.array(image.resize((40, 40), Image.BILINEAR))
    expected = torch.from_numpy(resized).permute(2, 0, 1).float() / 255
    expected = (expected[:, 4:36, 4:36] - 0.5) / 0.25
    assert torch.allclose(evals[0], expected, atol=0.05)


def test_torchvision_transforms_errors():
    with pytest.raises(ConfigError, match=r"transforms\[0\].*NoSuchTransform"):
        make("torchvision_transforms", transforms=["NoSuchTransform"])
    with pytest.raises(ConfigError, match=r"transforms\[1\].*Resize"):
        make(
            "torchvision_transforms",
            transforms=["ToTensor", {"type": "Resize", "params": {"bogus": 1}}],
        )
    with pytest.raises(ConfigError, match="interpolation"):
        resize = {"type": "Resize", "params": {"size": 8, "interpolation": "cubicle"}}
        make("torchvision_transforms", transforms=[resize])


def test_bert_tokenizer_from_local_vocab(tmp_path):
    vocab = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "video",
        "to",
        "image",
        "retrieval",
        "un",
        "##aff",
        "##able",
        ",",
        "!",
        "hello",
        "\u5546",
        "\u54c1",
    ]
    folder = tmp_path / "bert-base-uncased"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer_config = {"type": str(folder), "params": {"do_lower_case": True}}
    processor = make(
        "bert_tokenizer", tokenizer_config=tokenizer_config, max_seq_length=16, mask_probability=0
    )
    out = processor({"text": "Video to IMAGE, unaffable!\tHéllo xyz \u5546\u54c1"})
    assert out["tokens"] == [
        "[CLS]",
        "video",
        "to",
        "image",
        ",",
        "un",
        "##aff",
        "##able",
        "!",
        "hello",
        "[UNK]",
        "\u5546",
        "\u54c1",
        "[SEP]",
    ]
    assert out["input_ids"].tolist() == [vocab.index(t) for t in out["tokens"]] + [0, 0]
    assert out["input_mask"].tolist() == [1] * 14 + [0, 0]
    assert out["segment_ids"].shape == out["lm_label_ids"].shape == (16,)
    short = make(
        "bert_tokenizer", tokenizer_config={"type": str(folder / "vocab.txt")}, max_seq_length=4
    )
    assert short("video to image retrieval")["tokens"] == ["[CLS]", "video", "to", "[SEP]"]


def test_bert_tokenizer_missing_vocab_fails_on_use():
    processor = make("bert_tokenizer", tokenizer_config={"type": "pretrained/no-such-bert"})
    with pytest.raises(ConfigError, match="no-such-bert"):
        processor("video to image retrieval")
