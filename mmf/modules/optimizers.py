"""Registered optimizers, built as ``cls(parameter_groups, **optimizer.params)``.

Any ``torch.optim`` class name (``Adam``, ``SGD``, ...) works too; see
``mmf.utils.build.build_optimizer``.
"""
import torch

from mmf.common.registry import registry


@registry.register_optimizer("adam_w")
def adam_w(
    params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, **kwargs
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the defaults of the ``transformers.AdamW`` MMF used.

    Same update as ``transformers.AdamW(correct_bias=True)`` (decoupled weight decay);
    only the defaults differ from torch's (``eps`` 1e-6 and ``weight_decay`` 0).
    """
    return torch.optim.AdamW(
        params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, **kwargs
    )
