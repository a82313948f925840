"""The RICE cross model (pairwise matching decoder): image tokens attend to video tokens.

Layout (attribute names are checkpoint keys)::

    CrossModel
      embeddings   CrossEmbeddings (class_embedding, position_embedding, layer_norm): kept for
                   checkpoint compatibility, never used in forward (as in the original)
      transformer.layers  [SelfBlock, CrossBlock] * num_hidden_layers
      pooler       LayerNorm -> token 0 -> dense (no bias) -> ReLU

A self block is pre-LN self-attention over the queries (``nn.MultiheadAttention``, LayerNorm
eps 1e-12) + QuickGELU MLP. A cross block is pre-LN cross-attention whose keys/values are the
raw (un-normalised) video tokens, + MLP. Both can be initialised from the last
``2 * num_hidden_layers`` blocks of an OpenAI CLIP image tower, whose 12-head packed
projections are then read as ``num_attention_heads`` heads (8 by default).
"""
import dataclasses
import logging
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from mmf.common.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class CrossConfig:
    """``transformer_model`` config of RICE; unknown keys (use_text, return_dict, ...) are
    ignored."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 1
    num_attention_heads: int = 8
    attention_probs_dropout_prob: float = 0.1
    hidden_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-5
    self_attention_layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    max_position_embeddings: int = 50
    pretrained_model_name: str = None

    @classmethod
    def from_dict(cls, values, **overrides):
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in dict(values or {}).items() if k in names}
        known.update(overrides)
        config = cls(**known)
        if config.hidden_size % config.num_attention_heads:
            raise ConfigError(
                f"transformer_model: hidden_size {config.hidden_size} is not divisible by "
                f"num_attention_heads {config.num_attention_heads}"
            )
        return config


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


def _mlp(width, hidden):
    return nn.Sequential(
        OrderedDict(
            [
                ("c_fc", nn.Linear(width, hidden)),
                ("gelu", QuickGELU()),
                ("c_proj", nn.Linear(hidden, width)),
            ]
        )
    )


def additive_key_mask(key_valid, dtype):
    """key_valid [N,S] bool (True = attend) -> additive mask [N,1,1,S]: 0 or
    ``finfo(dtype).min``."""
    mask = torch.zeros(key_valid.shape, dtype=dtype, device=key_valid.device)
    mask = mask.masked_fill(~key_valid, torch.finfo(dtype).min)
    return mask[:, None, None, :]


class SelfBlock(nn.Module):
    """x <- x + MHA(ln_1 x); x <- x + mlp(ln_2 x). x [N,T,D]."""

    def __init__(self, config):
        super().__init__()
        width = config.hidden_size
        self.attn = nn.MultiheadAttention(width, config.num_attention_heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width, eps=config.self_attention_layer_norm_eps)
        self.mlp = _mlp(width, config.intermediate_size)
        self.ln_2 = nn.LayerNorm(width, eps=config.self_attention_layer_norm_eps)

    def forward(self, x, key_padding_mask=None):
        """key_padding_mask [N,T] bool, True = ignore (none in RICE: all image tokens attend)."""
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class CrossAttention(nn.Module):
    """Multi-head attention with a packed ``in_proj_weight`` [3D, D] (q | k | v thirds, heads
    contiguous inside each third) and ``out_proj``; queries scaled by head_dim^-0.5."""

    def __init__(self, width, heads, dropout):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.scale = self.head_dim**-0.5
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        nn.init.kaiming_uniform_(self.in_proj_weight, a=math.sqrt(5))

    def _split(self, x):
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def _project(self, query, key_value, with_values):
        width = query.size(-1)
        w_q, w_k, w_v = self.in_proj_weight.split(width)
        b_q, b_k, b_v = self.in_proj_bias.split(width)
        q = self._split(F.linear(query, w_q, b_q))
        k = self._split(F.linear(key_value, w_k, b_k))
        v = self._split(F.linear(key_value, w_v, b_v)) if with_values else None
        return q, k, v

    def _maps(self, q, k, key_valid):
        """Post-mask softmax probabilities divided by the query scale: [N,H,T,S]."""
        scores = (q * self.scale) @ k.transpose(-2, -1) + additive_key_mask(key_valid, q.dtype)
        return scores.softmax(dim=-1) / self.scale

    def attention_maps(self, query, key_value, key_valid):
        """Only the maps (no values, no output): [N,T,D], [N,S,D], [N,S] -> [N,H,T,S]."""
        q, k, _ = self._project(query, key_value, with_values=False)
        return self._maps(q, k, key_valid)

    def forward(self, query, key_value, key_valid, return_attention=False):
        """query [N,T,D], key_value [N,S,D], key_valid [N,S] bool -> (out [N,T,D], maps or None).

        ``maps`` [N,H,T,S] are the post-mask, post-softmax, pre-dropout probabilities divided
        by the query scale (probs * sqrt(head_dim)), as the original returns them.
        """
        q, k, v = self._project(query, key_value, with_values=True)
        dropout = self.dropout if self.training else 0.0
        maps = None
        if return_attention:
            maps = self._maps(q, k, key_valid)
            out = F.dropout(maps * self.scale, dropout, self.training) @ v
        else:
            mask = additive_key_mask(key_valid, q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).flatten(2)), maps


class CrossBlock(nn.Module):
    """x <- x + attn(ln_1 x, kv, kv); x <- x + mlp(ln_2 x). Keys/values are not normalised."""

    def __init__(self, config):
        super().__init__()
        width = config.hidden_size
        self.attn = CrossAttention(
            width, config.num_attention_heads, config.attention_probs_dropout_prob
        )
        self.ln_1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.mlp = _mlp(width, config.intermediate_size)
        self.ln_2 = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def forward(self, x, key_value, key_valid, return_attention=False):
        out, maps = self.attn(self.ln_1(x), key_value, key_valid, return_attention)
        x = x + out
        return x + self.mlp(self.ln_2(x)), maps


class CrossEmbeddings(nn.Module):
    """Unused in forward (as in the original); its parameters are part of the checkpoints."""

    def __init__(self, config):
        super().__init__()
        width = config.hidden_size
        self.class_embedding = nn.Parameter(torch.randn(width))
        self.position_embedding = nn.Embedding(config.max_position_embeddings, width)
        self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)


class CrossTransformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        blocks = []
        for _ in range(config.num_hidden_layers):
            blocks += [SelfBlock(config), CrossBlock(config)]
        self.layers = nn.ModuleList(blocks)


class CrossPooler(nn.Module):
    """LayerNorm over the sequence -> token 0 -> dense (no bias) -> ReLU: [N,T,D] -> [N,D]."""

    def __init__(self, config):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.activation = nn.ReLU()

    def forward(self, x):
        return self.activation(self.dense(self.layer_norm(x)[:, 0]))


class CrossModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = CrossEmbeddings(config)
        self.transformer = CrossTransformer(config)
        self.pooler = CrossPooler(config)
        self.apply(self._init_weights)

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, query, key_value, key_valid, return_attention=False):
        """query [N,T,D] image tokens, key_value [N,S,D] video tokens, key_valid [N,S] bool.

        Returns ``(last_hidden_state [N,T,D], pooled [N,D], cross_maps)`` where ``cross_maps`` is
        a list (one per cross block) of [N,H,T,S] maps when ``return_attention``, else empty.
        """
        x = query
        maps = []
        for layer in self.transformer.layers:
            if isinstance(layer, SelfBlock):
                x = layer(x)
            else:
                x, layer_maps = layer(x, key_value, key_valid, return_attention)
                if return_attention:
                    maps.append(layer_maps)
        return x, self.pooler(x), maps

    def cross_attention_maps(self, query, key_value, key_valid):
        """The maps of every cross block, [N,H,T,S] each, computing no more than they need:
        the last cross block stops at its maps (no values, output, MLP or pooler)."""
        layers = list(self.transformer.layers)
        last = max(i for i, layer in enumerate(layers) if isinstance(layer, CrossBlock))
        x = query
        maps = []
        for layer in layers[:last]:
            if isinstance(layer, SelfBlock):
                x = layer(x)
            else:
                x, layer_maps = layer(x, key_value, key_valid, return_attention=True)
                maps.append(layer_maps)
        maps.append(layers[last].attn.attention_maps(layers[last].ln_1(x), key_value, key_valid))
        return maps

    def init_from_clip(self, clip_visual_state, source):
        """Copy CLIP's positional embedding and its last 2*L resblocks (self, cross, self, ...).

        ``clip_visual_state``: OpenAI image-tower names (``transformer.resblocks.{i}...``).
        """
        prefix = "transformer.resblocks."
        indices = sorted({int(k.split(".")[2]) for k in clip_visual_state if k.startswith(prefix)})
        layers = self.transformer.layers
        if len(indices) < len(layers):
            raise ConfigError(
                f"{source}: CLIP has {len(indices)} blocks, the cross model needs {len(layers)}"
            )
        used = indices[-len(layers):]
        for layer, index in zip(layers, used, strict=True):
            prefix = f"transformer.resblocks.{index}."
            block = {
                k[len(prefix):]: v for k, v in clip_visual_state.items() if k.startswith(prefix)
            }
            try:
                layer.load_state_dict(block, strict=True)
            except RuntimeError as err:
                raise ConfigError(
                    f"{source}: CLIP block {index} does not fit the cross model: {err}"
                ) from None
        position = clip_visual_state["positional_embedding"]
        if position.shape != self.embeddings.position_embedding.weight.shape:
            raise ConfigError(
                f"{source}: positional_embedding {tuple(position.shape)} does not fit "
                f"transformer_model.max_position_embeddings x hidden_size "
                f"{tuple(self.embeddings.position_embedding.weight.shape)}"
            )
        with torch.no_grad():
            self.embeddings.position_embedding.weight.copy_(position)
        logger.info("cross model initialised from CLIP blocks %s of %s", used, source)
