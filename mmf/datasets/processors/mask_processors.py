"""``blockwise_masked_patch``: BEiT-style block-wise mask over the patch grid.

Returns a [H,W] long mask with 1 = keep, 0 = masked. Without augments (eval) every patch
is kept. RICE computes these masks for parity with the original batches but never reads them.
"""
import math

import torch

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.processors.base import BaseProcessor


@registry.register_processor("blockwise_masked_patch")
class BlockwiseMaskedPatchProcessor(BaseProcessor):
    """Params: ``input_size`` (int or [H,W], default 7), ``num_masking_patches`` (8),
    ``min_num_patches`` (4), ``max_num_patches`` (defaults to num_masking_patches),
    ``min_aspect`` (0.3), ``max_aspect`` (1 / min_aspect)."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config)
        size = config.get("input_size", 7)
        if isinstance(size, int):
            size = (size, size)
        self.height, self.width = (int(v) for v in size)
        self.num_masking_patches = int(config.get("num_masking_patches", 8))
        self.min_num_patches = int(config.get("min_num_patches", 4))
        max_patches = config.get("max_num_patches")
        self.max_num_patches = int(max_patches) if max_patches else self.num_masking_patches
        min_aspect = float(config.get("min_aspect", 0.3))
        max_aspect = config.get("max_aspect")
        max_aspect = float(max_aspect) if max_aspect else 1.0 / min_aspect
        if min_aspect <= 0 or max_aspect < min_aspect:
            raise ConfigError(
                f"blockwise_masked_patch: need 0 < min_aspect <= max_aspect, "
                f"got {min_aspect}, {max_aspect}"
            )
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))

    def _mask_block(self, mask, budget, generator):
        """Mask one random block of at most ``budget`` new patches; returns how many it masked."""
        for _ in range(10):
            area = self.min_num_patches + (budget - self.min_num_patches) * _uniform(generator)
            low, high = self.log_aspect
            aspect = math.exp(low + (high - low) * _uniform(generator))
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if not (0 < h < self.height and 0 < w < self.width):
                continue
            top = int(torch.randint(self.height - h + 1, (1,), generator=generator))
            left = int(torch.randint(self.width - w + 1, (1,), generator=generator))
            block = mask[top : top + h, left : left + w]
            new = h * w - int(block.sum())
            if 0 < new <= budget:
                block.fill_(1)
                return new
        return 0

    def __call__(self, item=None, use_augments=False, generator=None):
        """-> [H,W] long mask, 1 = keep. ``item`` is ignored (kept for the processor call style)."""
        if not use_augments:
            return torch.ones(self.height, self.width, dtype=torch.long)
        masked = torch.zeros(self.height, self.width, dtype=torch.long)
        count = 0
        while count < self.num_masking_patches:
            budget = min(self.num_masking_patches - count, self.max_num_patches)
            added = self._mask_block(masked, budget, generator)
            if added == 0:
                break
            count += added
        return 1 - masked


def _uniform(generator):
    return float(torch.rand((), generator=generator))
