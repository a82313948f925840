"""``box_mode: patch_mask`` on the model side: which encoder tokens a frame's box keeps, and
the pooling over the kept patch tokens.

The rule (testable by hand):

- the encoder's tokens are ``P`` prefix tokens (CLS; 1 for CLIP and timm ViTs, 0 for CNNs)
  followed by a ``G x G`` grid of patch tokens in row-major order; ``P`` and ``G`` come from the
  token count ``T``: ``T = G²`` (a CNN's feature map) or ``T = 1 + G²`` (ViT-B/32 at 224 px:
  50 = 1 + 7²). Any other count is a ``ConfigError``;
- a patch is kept when the frame's box (on the encoder input, ``video_boxes``) covers more than
  2 % of its area, and the patch holding the box centre is always kept
  (``mmf.datasets.boxes.patch_mask``); prefix tokens are always kept;
- frame pooling: the frame's embedding is the mean of its kept patch tokens mapped to the
  embedding space (``token_projection``: CLIP's ``ln_post`` then ``proj``; the identity for
  encoders whose global output is the mean of their tokens); shop images pool all their
  patch tokens the same way, so both views share one space;
- PMD / PFR keys: a frame's tokens outside the box are not keys (``key_valid`` False).
"""
import math

import torch

from mmf.common.errors import ConfigError
from mmf.datasets.boxes import patch_mask
from mmf.modules.encoders import OpenAICLIPEncoder


def token_grid(num_tokens):
    """(prefix tokens P, grid side G) with ``num_tokens == P + G²`` and P in (0, 1)."""
    for prefix in (0, 1):
        side = math.isqrt(max(num_tokens - prefix, 0))
        if side > 0 and side * side == num_tokens - prefix:
            return prefix, side
    raise ConfigError(
        f"box_mode patch_mask: the encoder gives {num_tokens} tokens per image, neither a "
        "square grid nor a class token plus a square grid"
    )


def token_keep(boxes, num_tokens, height, width):
    """Tokens a box keeps: boxes [..., 4] (x1, y1, x2, y2 on the ``width`` x ``height``
    encoder input) -> bool [..., T] (prefix tokens True, then the G x G patches row-major)."""
    prefix, grid = token_grid(num_tokens)
    patches = patch_mask(boxes, width, height, grid).flatten(-2)
    return torch.cat([patches.new_ones(*patches.shape[:-1], prefix), patches], dim=-1)


def token_projection(encoder):
    """The map from ``encoder``'s tokens [..., D] to its embedding space [..., E]."""
    if isinstance(encoder, OpenAICLIPEncoder):
        tower = encoder.model
        return lambda tokens: tower.vit.norm(tokens) @ tower.proj
    if encoder.token_dim == encoder.embed_dim:
        return lambda tokens: tokens
    raise ConfigError(
        f"box_mode patch_mask: cannot map the {encoder.token_dim}-wide tokens of "
        f"{type(encoder).__name__} to its {encoder.embed_dim}-wide embedding"
    )


def pool_patches(projected, keep):
    """Mean of the kept patch tokens: projected [..., T, E], keep [..., T] bool -> [..., E]
    (prefix tokens, always kept, are left out of the mean)."""
    prefix, _ = token_grid(projected.shape[-2])
    weights = keep[..., prefix:].to(projected.dtype).unsqueeze(-1)
    return (projected[..., prefix:, :] * weights).sum(-2) / weights.sum(-2).clamp_min(1)
