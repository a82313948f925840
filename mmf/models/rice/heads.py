"""RICE task heads: shared ICL pooling and the ICL-only contrastive head.

Notation: B local batch, F frames, E embedding width.
"""
import torch
import torch.nn.functional as F
from torch import nn

from mmf.modules.losses import ContrastiveLoss


def pool_video(frame_embeddings, video_mask):
    """Masked temporal mean: [B,F,E], mask [B,F] (1 = real frame) -> [B,E].

    A clip without any real frame gives a zero vector instead of NaN.
    """
    mask = video_mask.to(frame_embeddings.dtype).unsqueeze(-1)
    return (frame_embeddings * mask).sum(1) / mask.sum(1).clamp_min(1)


def embed_image(image_global):
    """[N,E] -> unit-norm [N,E]."""
    return F.normalize(image_global, dim=-1)


def embed_video(frame_embeddings, video_mask):
    """[N,F,E], [N,F] -> unit-norm clip embedding [N,E]."""
    return F.normalize(pool_video(frame_embeddings, video_mask), dim=-1)


class TaskBaseModel(nn.Module):
    """Holds the learnable raw ``logit_scale`` (init 4, used as s * x on both sides: s^2 * cos)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.logit_scale = nn.Parameter(torch.tensor(4.0))
        self.contrastive_loss = ContrastiveLoss()

    def vic_loss(self, image_emb, video_emb, scale, exclude=None):
        """ICL: symmetric contrastive loss of (scale * video, scale * image) over the global
        batch."""
        return self.contrastive_loss(scale * video_emb, scale * image_emb, exclude)


class NormalizationLayer(nn.Module):
    """``norm_s * normalize(x)``, ``norm_s`` [1] init 4."""

    def __init__(self, init=4.0):
        super().__init__()
        self.norm_s = nn.Parameter(torch.full((1,), float(init)))

    def forward(self, x):
        return self.norm_s * F.normalize(x, dim=-1)


class RICEForContrastive(TaskBaseModel):
    """ICL only, scaled by ``contrastive_norm.norm_s`` (the LPR vic variant). ``logit_scale``
    exists for checkpoint compatibility and is unused."""

    def __init__(self, config):
        super().__init__(config)
        self.contrastive_norm = NormalizationLayer()

    def training_losses(
        self,
        image_global,
        image_tokens,
        video_global,
        video_tokens,
        video_mask,
        exclude=None,
        tasks=None,
        embeddings=None,
    ):
        """``{"vic_loss"}`` of (norm_s * clip embedding, norm_s * image embedding); ``tasks``
        can only be vic here; ``embeddings``: the text-fused (image, clip) embeddings to use.
        Returns ``(losses, metrics)`` like the pretraining head."""
        if embeddings is None:
            embeddings = image_global, pool_video(video_global, video_mask)
        scores = self.contrastive_norm(embeddings[1])
        targets = self.contrastive_norm(embeddings[0])
        return {"vic_loss": self.contrastive_loss(scores, targets, exclude)}, {}
