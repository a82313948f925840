"""Losses used by RICE, built as ``cls(params)``.

- ``ContrastiveLoss``: symmetric InfoNCE over the global batch (all-gather with gradient).
- ``HardNegativeCrossEntropyLoss``: cross-entropy whose positive is column 0 (or the diagonal).
- ``MSELoss``: mean squared error.
"""
import torch
import torch.nn.functional as F
from torch import nn

from mmf.utils.distributed import gather_tensor_along_batch_with_backward, get_rank


class ContrastiveLoss(nn.Module):
    """Symmetric contrastive loss between paired rows of ``scores`` and ``targets``.

    Each rank holds B local pairs. With A, T the all-gathered [W*B, E] tensors, the logits are
    ``scores @ T.T`` and ``targets @ A.T`` (both [B, W*B]); the positive of local row i is
    global column ``rank*B + i``. Loss = (CE(video->image) + CE(image->video)) / 2. The inputs
    carry the scale (RICE feeds ``s * normalize(x)``), so there is no temperature here.

    ``exclude`` [B, W*B] bool (optional) removes columns from the negatives of each row (e.g.
    other clips of the same product); the positive column is never removed.
    """

    def __init__(self, params=None):
        super().__init__()

    def forward(self, scores, targets, exclude=None):
        """scores, targets [B, E] -> scalar. Mismatched row counts give 0 (as the original)."""
        if scores.size(0) != targets.size(0):
            return scores.new_zeros(())
        all_scores = gather_tensor_along_batch_with_backward(scores)
        all_targets = gather_tensor_along_batch_with_backward(targets)
        batch = scores.size(0)
        labels = torch.arange(batch, device=scores.device) + get_rank() * batch
        logits_v2i = scores @ all_targets.t()
        logits_i2v = targets @ all_scores.t()
        if exclude is not None:
            exclude = exclude & ~F.one_hot(labels, logits_v2i.size(1)).bool()
            logits_v2i = logits_v2i.masked_fill(exclude, float("-inf"))
            logits_i2v = logits_i2v.masked_fill(exclude, float("-inf"))
        loss_v2i = F.cross_entropy(logits_v2i, labels)
        loss_i2v = F.cross_entropy(logits_i2v, labels)
        return (loss_v2i + loss_i2v) / 2


class HardNegativeCrossEntropyLoss(nn.Module):
    """``-mean(log_softmax(scores)[positive])`` with the positive in column 0 (``diag: false``,
    the RICE setting) or on the diagonal (``diag: true``). scores [B, K] -> scalar."""

    def __init__(self, params=None):
        super().__init__()
        self.diag = bool((params or {}).get("diag", False))

    def forward(self, scores):
        log_probs = F.log_softmax(scores, dim=-1)
        if self.diag:
            return -torch.diagonal(log_probs).mean()
        return -log_probs[:, 0].mean()


class MSELoss(nn.Module):
    """Mean squared error over all elements."""

    def __init__(self, params=None):
        super().__init__()

    def forward(self, scores, targets):
        return F.mse_loss(scores, targets)
