"""Image encoders, registered by name and built as ``cls(params)``.

Every encoder maps images ``[N, 3, H, W]`` to a pair
``(global_embedding [N, E], tokens [N, T, D])`` and exposes ``embed_dim`` (E) and
``token_dim`` (D), so that heads can size themselves from the encoder.

- ``openai_clip``: the OpenAI CLIP image tower (ViT-B/32, QuickGELU) built with timm. Its
  ``state_dict()`` uses OpenAI's parameter names (``conv1.weight``,
  ``transformer.resblocks.{i}.attn.in_proj_weight``, ...), so RICE checkpoints load as they are.
- ``timm``: any timm model by name; tokens are the sequence before the final norm for ViTs and
  the flattened last feature map for CNNs and Swin.
- ``identity``: precomputed features.

``pretrained_model_name`` null or "" means random init (no file is read); a non-empty path
that does not exist raises ``ConfigError`` naming the key and the path.
"""
import logging
import os
import re
import warnings
import zipfile

import timm
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmf.common.errors import CheckpointError, ConfigError
from mmf.common.registry import registry
from mmf.utils.checkpoint import load_checkpoint_file

logger = logging.getLogger(__name__)


def resolve_weights_path(path, key):
    """``None`` for a null/empty ``path``; the path if it exists; else ``ConfigError`` naming
    ``key``."""
    if path is None or str(path).strip() == "":
        return None
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise ConfigError(f"{key}: weights file {path!r} does not exist")
    return path


def _is_torchscript_archive(path):
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") for name in archive.namelist())


def load_weights_file(path):
    """Tensors of a weights file: a TorchScript archive, safetensors, or a (weights-only) state
    dict.

    A dict holding a ``"state_dict"`` or ``"model"`` entry is unwrapped.
    """
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return dict(load_file(path, device="cpu"))
        if _is_torchscript_archive(path):
            with warnings.catch_warnings():
                # The OpenAI release format; torch deprecates TorchScript but still reads it.
                warnings.simplefilter("ignore", FutureWarning)
                return dict(torch.jit.load(path, map_location="cpu").state_dict())
    except (RuntimeError, OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"cannot read weights file {path}: {err}") from None
    # A text file, a pickle, a list: one line naming the file (load_checkpoint_file).
    state = load_checkpoint_file(path)
    for wrapper in ("state_dict", "model"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    return dict(state)


# ---------------------------------------------------------------------------------------------
# OpenAI CLIP <-> timm key adapter


# OpenAI CLIP image-tower names -> timm VisionTransformer names (explicit, both directions).
_CLIP_TOP_KEYS = {
    "conv1.weight": "patch_embed.proj.weight",
    "class_embedding": "cls_token",
    "positional_embedding": "pos_embed",
    "ln_pre.weight": "norm_pre.weight",
    "ln_pre.bias": "norm_pre.bias",
    "ln_post.weight": "norm.weight",
    "ln_post.bias": "norm.bias",
}
_CLIP_BLOCK_KEYS = {
    "ln_1.weight": "norm1.weight",
    "ln_1.bias": "norm1.bias",
    "attn.in_proj_weight": "attn.qkv.weight",
    "attn.in_proj_bias": "attn.qkv.bias",
    "attn.out_proj.weight": "attn.proj.weight",
    "attn.out_proj.bias": "attn.proj.bias",
    "ln_2.weight": "norm2.weight",
    "ln_2.bias": "norm2.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
}
_TIMM_TOP_KEYS = {v: k for k, v in _CLIP_TOP_KEYS.items()}
_TIMM_BLOCK_KEYS = {v: k for k, v in _CLIP_BLOCK_KEYS.items()}
_OPENAI_BLOCK = re.compile(r"transformer\.resblocks\.(\d+)\.(.+)$")
_TIMM_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)$")


def openai_to_timm_key(key):
    """OpenAI CLIP visual key (without ``visual.``) -> timm VisionTransformer key, or None."""
    if key in _CLIP_TOP_KEYS:
        return _CLIP_TOP_KEYS[key]
    match = _OPENAI_BLOCK.match(key)
    if match and match.group(2) in _CLIP_BLOCK_KEYS:
        return f"blocks.{match.group(1)}.{_CLIP_BLOCK_KEYS[match.group(2)]}"
    return None


def timm_to_openai_key(key):
    """timm VisionTransformer key -> OpenAI CLIP visual key, or None."""
    if key in _TIMM_TOP_KEYS:
        return _TIMM_TOP_KEYS[key]
    match = _TIMM_BLOCK.match(key)
    if match and match.group(2) in _TIMM_BLOCK_KEYS:
        return f"transformer.resblocks.{match.group(1)}.{_TIMM_BLOCK_KEYS[match.group(2)]}"
    return None


class CLIPVisionTower(nn.Module):
    """OpenAI CLIP image tower: a timm ``VisionTransformer`` (no head) plus the ``proj`` matrix.

    ``state_dict()`` and ``load_state_dict()`` speak OpenAI names; internally the parameters
    live in ``self.vit`` under timm names. ``cls_token [1,1,W]`` <-> ``class_embedding [W]`` and
    ``pos_embed [1,T,W]`` <-> ``positional_embedding [T,W]`` are reshaped on the way.
    """

    def __init__(self, vit, output_dim):
        super().__init__()
        self.vit = vit
        width = vit.embed_dim
        self.proj = nn.Parameter(torch.randn(width, output_dim) * width**-0.5)
        self.register_state_dict_post_hook(_tower_state_dict_to_openai)
        self.register_load_state_dict_pre_hook(_tower_state_dict_from_openai)

    def forward(self, pixels):
        """pixels [N,3,H,W] -> (ln_post(CLS) @ proj [N,E], tokens after the last block [N,T,W])."""
        ((patches, prefix),) = self.vit.forward_intermediates(
            pixels.to(self.proj.dtype),
            indices=1,
            output_fmt="NLC",
            return_prefix_tokens=True,
            intermediates_only=True,
        )
        pooled = self.vit.norm(prefix[:, 0]) @ self.proj
        return pooled, torch.cat([prefix, patches], dim=1)


def _tower_state_dict_to_openai(module, state_dict, prefix, local_metadata):
    inner = prefix + "vit."
    for key in [k for k in state_dict if k.startswith(inner)]:
        value = state_dict.pop(key)
        name = timm_to_openai_key(key[len(inner):])
        if name is None:
            raise KeyError(f"no OpenAI CLIP name for timm parameter {key!r}")
        if name == "class_embedding":
            value = value.reshape(-1)
        elif name == "positional_embedding":
            value = value.reshape(value.shape[-2], value.shape[-1])
        state_dict[prefix + name] = value


def _tower_state_dict_from_openai(module, state_dict, prefix, *args):
    for key in [k for k in state_dict if k.startswith(prefix)]:
        local = key[len(prefix):]
        if local == "proj" or local.startswith("vit."):
            continue
        name = openai_to_timm_key(local)
        if name is None:
            continue  # left for load_state_dict to report as unexpected
        value = state_dict.pop(key)
        if name == "cls_token":
            value = value.reshape(1, 1, -1)
        elif name == "pos_embed":
            value = value.reshape(1, *value.shape[-2:])
        state_dict[prefix + "vit." + name] = value


def openai_visual_state_dict(state_dict, source):
    """The image tower's entries of an OpenAI CLIP state dict (``visual.`` stripped)."""
    if any(k.startswith("visual.") for k in state_dict):
        return {k[len("visual."):]: v for k, v in state_dict.items() if k.startswith("visual.")}
    if "conv1.weight" in state_dict:
        return dict(state_dict)
    raise CheckpointError(
        f"{source} is not an OpenAI CLIP checkpoint: no 'visual.conv1.weight' or 'conv1.weight' key"
    )


@registry.register_encoder("openai_clip")
class OpenAICLIPEncoder(nn.Module):
    """OpenAI CLIP image tower; ``self.model`` holds the OpenAI-named parameters.

    params:
        pretrained_model_name: OpenAI weights (``ViT-B-32.pt`` TorchScript archive, a plain
            state dict with or without ``visual.``, or safetensors); null = random init.
        model_name: timm architecture (default ``vit_base_patch32_clip_quickgelu_224``).
        image_size, patch_size, width, layers, heads, output_dim: architecture overrides
            (default ViT-B/32: 224, 32, 768, 12, 12, 512).
    """

    def __init__(self, params):
        super().__init__()
        params = params if params is not None else {}
        overrides = {
            "img_size": params.get("image_size"),
            "patch_size": params.get("patch_size"),
            "embed_dim": params.get("width"),
            "depth": params.get("layers"),
            "num_heads": params.get("heads"),
        }
        overrides = {k: v for k, v in overrides.items() if v is not None}
        path = resolve_weights_path(
            params.get("pretrained_model_name"), "image_encoder.params.pretrained_model_name"
        )
        vit = timm.create_model(
            params.get("model_name", "vit_base_patch32_clip_quickgelu_224"),
            pretrained=False,
            num_classes=0,
            # Every parameter is overwritten by the strict load below: skip timm's slow init.
            weight_init="skip" if path is not None else "",
            **overrides,
        )
        self.model = CLIPVisionTower(vit, int(params.get("output_dim", 512)))
        self.embed_dim = self.model.proj.shape[1]
        self.token_dim = vit.embed_dim
        if path is not None:
            self.load_openai_weights(path)

    def load_openai_weights(self, path):
        visual = openai_visual_state_dict(load_weights_file(path), path)
        try:
            self.model.load_state_dict(visual, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not fit this CLIP image tower: {err}") from None
        logger.info("loaded OpenAI CLIP image tower weights from %s", path)

    def forward(self, pixels):
        """pixels [N,3,H,W] -> (global [N,E], tokens [N,T,D]) with T = 1 + (H/patch)^2."""
        return self.model(pixels)


# ---------------------------------------------------------------------------------------------
# timm models


def convert_efficientnet_pytorch(state_dict, model):
    """lukemelas EfficientNet-PyTorch keys (``_blocks.N._expand_conv...``) -> timm EfficientNet
    keys.

    Blocks are numbered flat in the source and ``blocks.<stage>.<index>`` in timm; a block
    without ``_expand_conv`` is timm's ``DepthwiseSeparableConv``. Shapes are checked. The
    classifier (``_fc``) is dropped when ``model`` has none (``num_classes=0``).
    """
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv

    flat = [(s, i, block) for s, stage in enumerate(model.blocks) for i, block in enumerate(stage)]
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    separable = {
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn1",
        "_project_conv": "conv_pw",
        "_bn2": "bn2",
    }
    inverted = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    squeeze = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
    target = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        match = re.match(r"_blocks\.(\d+)\.(\w+)\.(\w+)$", key)
        if match:
            index, layer, leaf = int(match.group(1)), match.group(2), match.group(3)
            if index >= len(flat):
                raise CheckpointError(f"{key}: the timm model has only {len(flat)} blocks")
            stage, position, block = flat[index]
            layers = separable if isinstance(block, DepthwiseSeparableConv) else inverted
            table = dict(layers, **squeeze)
            name = f"blocks.{stage}.{position}.{table.get(layer, layer)}.{leaf}"
        else:
            layer, _, leaf = key.partition(".")
            if layer not in top:
                raise CheckpointError(f"unknown EfficientNet-PyTorch key {key!r}")
            if layer == "_fc" and not model.num_classes:
                continue
            name = f"{top[layer]}.{leaf}"
        if name not in target:
            raise CheckpointError(f"{key} maps to {name}, which the timm model does not have")
        if target[name].shape != value.shape:
            raise CheckpointError(
                f"{key} -> {name}: shape {tuple(value.shape)} != {tuple(target[name].shape)}"
            )
        out[name] = value
    return out


@registry.register_encoder("timm")
class TimmEncoder(nn.Module):
    """Any timm model as an image encoder.

    params:
        model_name: timm model name (required).
        pretrained_model_name: optional local weights (timm keys, or EfficientNet-PyTorch keys,
            converted by ``convert_efficientnet_pytorch``); null = random init.
        num_classes: 0 (default) makes the global output the pooled features; >0 the logits.
        kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``img_size``).
        token_stage: null (default) takes tokens from the final features; an index into the
            model's ``feature_info`` (e.g. -1, the last stage) takes them from that stage's
            output instead, a narrower map that makes the cross model cheaper (CNNs only).
        freeze: names of submodules (e.g. ``[conv_stem, bn1, blocks.0]``) whose parameters
            and BatchNorm statistics stay fixed (``timm.utils.freeze``).
        frozen_batch_norm: true turns every BatchNorm into a FrozenBatchNorm (fixed statistics
            and affine), the usual choice when fine-tuning a CNN with small batches.

    Tokens: ViT-like models (``num_prefix_tokens``): all tokens after the last block, before
    the final norm [N, prefix + HW, C]; Swin (NHWC) and CNNs (NCHW): the flattened final
    feature map [N, HW, C].
    """

    def __init__(self, params):
        super().__init__()
        model_name = params.get("model_name")
        if not model_name:
            raise ConfigError("image_encoder.params.model_name: a timm model name is required")
        kwargs = params.get("kwargs") or {}
        if isinstance(kwargs, DictConfig):
            kwargs = OmegaConf.to_container(kwargs, resolve=True)
        self.model = timm.create_model(
            model_name, pretrained=False, num_classes=int(params.get("num_classes", 0)), **kwargs
        )
        self._sequence = hasattr(self.model, "num_prefix_tokens")
        self._layout = getattr(self.model, "output_fmt", "NCHW")
        self.token_dim = self.model.num_features
        self._token_stage = params.get("token_stage")
        if self._token_stage is not None:
            if self._sequence or self._layout != "NCHW":
                raise ConfigError(
                    "image_encoder.params.token_stage: only CNN encoders support it, "
                    f"not {model_name}"
                )
            stages = self.model.feature_info
            try:
                self.token_dim = stages[int(self._token_stage)]["num_chs"]
            except IndexError:
                raise ConfigError(
                    f"image_encoder.params.token_stage: {self._token_stage} is out of range; "
                    f"{model_name} has {len(stages)} feature stages"
                ) from None
            self._token_stage = int(self._token_stage) % len(stages)
        self.embed_dim = self.model.num_classes or self.model.num_features
        path = resolve_weights_path(
            params.get("pretrained_model_name"), "image_encoder.params.pretrained_model_name"
        )
        if path is not None:
            self.load_weights(path)
        frozen = params.get("freeze") or []
        if frozen:
            modules = dict(self.model.named_modules())
            unknown = [name for name in frozen if name not in modules]
            if unknown:
                raise ConfigError(
                    f"image_encoder.params.freeze: {model_name} has no submodules {unknown}"
                )
            timm.utils.freeze(self.model, list(frozen))
        if params.get("frozen_batch_norm", False):
            self.model = timm.layers.freeze_batch_norm_2d(self.model)

    def load_weights(self, path):
        state = load_weights_file(path)
        if any(k.startswith("_blocks.") for k in state):
            state = convert_efficientnet_pytorch(state, self.model)
        if not self.model.num_classes:
            classifier = _classifier_prefixes(self.model)
            state = {k: v for k, v in state.items() if not k.startswith(classifier)}
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise CheckpointError(f"{path} does not fit timm model: {err}") from None
        logger.info("loaded timm encoder weights from %s", path)

    def forward(self, pixels):
        """pixels [N,3,H,W] -> (global [N,E], tokens [N,T,C])."""
        if self._sequence:
            final, (last,) = self.model.forward_intermediates(
                pixels, indices=1, norm=False, output_fmt="NLC", return_prefix_tokens=True
            )
            if isinstance(last, tuple):
                spatial, prefix = last
                last = torch.cat([prefix, spatial], dim=1)
            return self.model.forward_head(final), last
        if self._token_stage is not None:
            features, (stage,) = self.model.forward_intermediates(
                pixels, indices=[self._token_stage]
            )
            return self.model.forward_head(features), stage.flatten(2).transpose(1, 2)
        features = self.model.forward_features(pixels)
        if self._layout == "NHWC":
            tokens = features.flatten(1, 2)
        else:
            tokens = features.flatten(2).transpose(1, 2)
        return self.model.forward_head(features), tokens


def _classifier_prefixes(model):
    classifier = model.default_cfg.get("classifier", "head")
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    return tuple(f"{name}." for name in names)


@registry.register_encoder("identity")
class IdentityEncoder(nn.Module):
    """Precomputed features: tokens [N,T,D] -> (tokens[:,0], tokens); vectors [N,D] ->
    (x, x[:,None]).

    params: ``in_dim`` (D; ``out_dim`` is accepted and must equal it).
    """

    def __init__(self, params):
        super().__init__()
        self.token_dim = int(params.get("in_dim", 768))
        self.embed_dim = int(params.get("out_dim", self.token_dim))
        if self.embed_dim != self.token_dim:
            raise ConfigError(
                "image_encoder.params: identity needs out_dim == in_dim, "
                f"got {self.embed_dim} and {self.token_dim}"
            )

    def forward(self, features):
        if features.dim() == 2:
            return features, features.unsqueeze(1)
        return features[:, 0], features
