"""``RICEForPretraining``: ICL (``vic``) + PMD (``vim``) + PFR (``rec``).

Notation: B local batch, W world size, G = W*B global batch, F frames, T tokens per frame,
D token width, E embedding width, H*L cross-attention maps, K hard negatives.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from mmf.models.rice.cross_model import CrossConfig, CrossModel
from mmf.models.rice.heads import TaskBaseModel, embed_image, embed_video
from mmf.models.rice.mining import mine_hard_negatives
from mmf.modules.encoders import load_weights_file, openai_visual_state_dict, resolve_weights_path
from mmf.modules.losses import HardNegativeCrossEntropyLoss, MSELoss
from mmf.utils.distributed import (
    gather_tensor_along_batch,
    gather_tensor_along_batch_with_backward,
    get_rank,
)

logger = logging.getLogger(__name__)

# PMD score = PMD_SCALE * cos(pooled, heads.vim.weight), fixed in the original.
PMD_SCALE = 10.0


def _rec_head(channels):
    """1x1 convs C -> C/2 -> 1 with ReLUs; weights 1.0, biases 0 (the original's init)."""
    head = nn.Sequential(
        nn.Conv2d(channels, channels // 2, 1), nn.ReLU(), nn.Conv2d(channels // 2, 1, 1), nn.ReLU()
    )
    for module in head:
        if isinstance(module, nn.Conv2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return head


class RICEForPretraining(TaskBaseModel):
    """ICL head plus the cross model, with the ``vim`` and ``rec`` heads the tasks ask for.

    Args:
        config: the ``model_config.rice`` node.
        token_dim: width D of the encoder tokens; the cross model's width follows it.
    """

    def __init__(self, config, token_dim):
        super().__init__(config)
        self.tasks = tuple(config.get("tasks") or ("vic",))
        cross = dict(config.get("transformer_model") or {})
        hidden = int(cross.get("hidden_size", 768))
        ratio = int(cross.get("intermediate_size", 3072)) / hidden
        if hidden != token_dim:
            logger.info("cross model width follows the encoder tokens: %d (not %d)", token_dim, hidden)
        self.cross_config = CrossConfig.from_dict(
            cross, hidden_size=int(token_dim), intermediate_size=round(ratio * token_dim)
        )
        self.transformer = CrossModel(self.cross_config)
        self.heads = nn.ModuleDict()
        if "vim" in self.tasks:
            self.heads["vim"] = nn.Linear(token_dim, 1, bias=False)
        if "rec" in self.tasks:
            layers = self.cross_config.num_hidden_layers
            self.heads["rec"] = _rec_head(layers * self.cross_config.num_attention_heads)
        self.num_negatives = int(config.get("num_negatives", 3))
        self.pmd_chunk_size = int(config.get("pmd_chunk_size", 2))
        self.pfr_mask_padding = bool(config.get("pfr_mask_padding", False))
        self.hard_negative_loss = HardNegativeCrossEntropyLoss()
        self.mse_loss = MSELoss()
        path = resolve_weights_path(
            cross.get("pretrained_model_name"), "transformer_model.pretrained_model_name"
        )
        if path is not None:
            clip_visual = openai_visual_state_dict(load_weights_file(path), path)
            self.transformer.init_from_clip(clip_visual, path)

    def training_losses(
        self,
        image_global,
        image_tokens,
        video_global,
        video_tokens,
        video_mask,
        exclude=None,
        tasks=None,
    ):
        """Losses of ``tasks`` (default: every configured task) and detached accuracies.

        image_global [B,E], image_tokens [B,T,D], video_global [B,F,E], video_tokens [B,F,T,D],
        video_mask [B,F], exclude [B,G] bool or None (same-product columns).
        """
        tasks = self.tasks if tasks is None else tasks
        image_emb = embed_image(image_global)
        video_emb = embed_video(video_global, video_mask)
        losses, metrics = {}, {}
        if "vic" in tasks:
            losses["vic_loss"] = self.vic_loss(image_emb, video_emb, self.logit_scale, exclude)
        if "vim" in tasks:
            losses["vim_loss"], metrics = self.pmd_loss(
                image_emb, video_emb, image_tokens, video_tokens, video_mask, exclude
            )
        if "rec" in tasks:
            losses["rec_loss"] = self.pfr_loss(image_tokens, video_tokens, video_mask)
        return losses, metrics

    def pmd_score(self, pooled):
        """pooled [N,D] -> 10 * cos(pooled, heads.vim.weight) [N]."""
        weight = F.normalize(self.heads["vim"].weight, dim=-1)
        return PMD_SCALE * (F.normalize(pooled, dim=-1) @ weight.t()).squeeze(-1)

    def pair_score(self, image_tokens, video_tokens, video_mask):
        """PMD score of each (image, video) pair: [N,T,D], [N,F,T,D], [N,F] -> [N]."""
        key_valid = video_mask.bool().repeat_interleave(video_tokens.size(2), dim=1)
        _, pooled, _ = self.transformer(image_tokens, video_tokens.flatten(1, 2), key_valid)
        return self.pmd_score(pooled)

    def cross_attention(self, image_tokens, video_tokens, video_mask):
        """Attention probabilities of the last cross block: [N,T,D], [N,F,T,D], [N,F] -> [N,H,T,F*T]."""
        key_valid = video_mask.bool().repeat_interleave(video_tokens.size(2), dim=1)
        _, _, maps = self.transformer(
            image_tokens, video_tokens.flatten(1, 2), key_valid, return_attention=True
        )
        # The blocks return probabilities times sqrt(head_dim) (the PFR input); undo the scale.
        return maps[-1] / maps[-1].sum(dim=-1, keepdim=True)

    @torch.no_grad()
    def mine_negatives(self, image_emb, video_emb, exclude=None):
        """Hard negatives of each local image among the global batch's clips (ICL similarity).

        image_emb [B,E], video_emb [B,E] (local, unit-norm), exclude [B,G] bool or None.
        Returns ``(positive [B], negatives [B,K], negative_valid [B,K], dual_accuracy [])``;
        columns index the all-gathered batch (rank-major).
        """
        similarity = image_emb.detach() @ gather_tensor_along_batch(video_emb.detach()).t()
        batch = image_emb.size(0)
        positive = torch.arange(batch, device=similarity.device) + get_rank() * batch
        negatives, negative_valid = mine_hard_negatives(similarity, positive, self.num_negatives, exclude)
        dual_accuracy = (similarity.argmax(dim=1) == positive).float().mean()
        return positive, negatives, negative_valid, dual_accuracy

    def pmd_loss(self, image_emb, video_emb, image_tokens, video_tokens, video_mask, exclude=None):
        """PMD: each local image against its clip and K clips mined from the global batch;
        the clips' tokens are all-gathered with gradient, the cross model runs in chunks of
        ``pmd_chunk_size`` images.

        Returns ``(loss, {"vim/dual_accuracy", "vim/cross_accuracy"})`` (accuracies detached).
        """
        batch, _, num_tokens, _ = video_tokens.shape
        positive, negatives, negative_valid, dual_accuracy = self.mine_negatives(
            image_emb, video_emb, exclude
        )
        all_tokens = gather_tensor_along_batch_with_backward(video_tokens.flatten(1, 2))
        all_valid = gather_tensor_along_batch(video_mask).bool().repeat_interleave(num_tokens, dim=1)
        candidates = torch.cat([positive[:, None], negatives], dim=1)  # [B, 1+K]
        scores = []
        chunks = zip(image_tokens.split(self.pmd_chunk_size), candidates.split(self.pmd_chunk_size))
        for queries, columns in chunks:
            flat = columns.flatten()
            queries = queries.repeat_interleave(columns.size(1), dim=0)
            _, pooled, _ = self.transformer(queries, all_tokens[flat], all_valid[flat])
            scores.append(self.pmd_score(pooled).view_as(columns))
        scores = torch.cat(scores)
        valid = torch.cat([negative_valid.new_ones(batch, 1), negative_valid], dim=1)
        scores = scores.masked_fill(~valid, float("-inf"))
        metrics = {
            "vim/dual_accuracy": dual_accuracy,
            "vim/cross_accuracy": (scores.detach().argmax(dim=1) == 0).float().mean(),
        }
        return self.hard_negative_loss(scores), metrics

    def pfr_loss(self, image_tokens, video_tokens, video_mask):
        """PFR: rebuild the (detached) image tokens from the (detached, padding-zeroed) video
        tokens with cross-attention maps refined by the ``rec`` head; MSE.

        Only the maps enter the loss, so the cross model stops at the last cross block's maps
        (the original also runs its values, output, MLP and pooler, which get no gradient).
        """
        num_tokens = video_tokens.size(2)
        key_value = video_tokens.flatten(1, 2)
        key_valid = video_mask.bool().repeat_interleave(num_tokens, dim=1)  # [B, F*T]
        maps = self.transformer.cross_attention_maps(image_tokens, key_value, key_valid)
        logits = self.heads["rec"](torch.cat(maps, dim=1)).squeeze(1)  # [B, T, F*T]
        if self.pfr_mask_padding:
            logits = logits.masked_fill(~key_valid[:, None, :], float("-inf"))
        attention = logits.softmax(dim=-1)
        values = (key_value * key_valid.unsqueeze(-1)).detach()
        return self.mse_loss(attention @ values, image_tokens.detach())
