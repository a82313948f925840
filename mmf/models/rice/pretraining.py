"""``RICEForPretraining``: ICL (``vic``) + PMD (``vim``, one or both directions) + PFR (``rec``).

Notation: B local batch, W world size, G = W*B global batch, F frames, T tokens per frame,
D token width, E embedding width, H*L cross-attention maps, K hard negatives.
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

from mmf.common.errors import ConfigError
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
# PMD directions (``pmd_directions``) and the name of each one's loss (``<name>_loss``) and
# metrics: ``image`` (the original: an image picks its clip) keeps the original's names.
PMD_NAMES = {"image": "vim", "video": "vim_video"}


def read_pmd_directions(config):
    """``model_config.rice.pmd_directions`` -> tuple of distinct directions (default ``image``)."""
    value = config.get("pmd_directions")
    directions = ["image"] if value is None else value
    distinct = not isinstance(directions, str) and len(set(directions)) == len(directions)
    if not directions or not distinct or any(d not in PMD_NAMES for d in directions):
        raise ConfigError(
            f"model_config.rice.pmd_directions: expected a list of distinct directions among "
            f"{list(PMD_NAMES)}, got {value!r}"
        )
    return tuple(directions)


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
            logger.info(
                "cross model width follows the encoder tokens: %d (not %d)", token_dim, hidden
            )
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
        self.num_negatives = negatives = config.get("num_negatives", 3)
        if type(negatives) is not int or negatives < 0:
            raise ConfigError(
                f"model_config.rice.num_negatives must be an integer >= 0, got {negatives!r}"
            )
        self.pmd_chunk_size = int(config.get("pmd_chunk_size", 2))
        self.pmd_directions = read_pmd_directions(config)
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
        embeddings=None,
        asr_keys=None,
    ):
        """Losses of ``tasks`` (default: every configured task) and detached accuracies.

        image_global [B,E], image_tokens [B,T,D], video_global [B,F,E], video_tokens [B,F,T,D],
        video_mask [B,F] (or per token [B,F,T] with ``embeddings``: ``box_mode: patch_mask``
        keys only the tokens a frame's box keeps), exclude [B,G] bool or None (same-product
        columns). With text (``text_fusion``): ``embeddings`` the fused (image, clip)
        embeddings ([B,E] each, or [B,2E]), ``asr_keys`` the clips' ASR keys (tokens [B,1,D],
        valid [B,1]) appended to the PMD keys.

        With PMD and PFR both on, the cross model runs once over the B positive pairs: PMD takes
        its scores and PFR its cross-attention maps.
        """
        tasks = self.tasks if tasks is None else tasks
        if embeddings is None:
            embeddings = embed_image(image_global), embed_video(video_global, video_mask)
        image_emb, video_emb = embeddings
        losses, metrics = {}, {}
        if "vic" in tasks:
            losses["vic_loss"] = self.vic_loss(image_emb, video_emb, self.logit_scale, exclude)
        maps = None
        if "vim" in tasks:
            key_value, key_valid = _keys(video_tokens, video_mask, asr_keys)
            _, pooled, maps = self.transformer(
                image_tokens, key_value, key_valid, return_attention="rec" in tasks
            )
            positive_scores = self.pmd_score(pooled)
            for direction in self.pmd_directions:
                name = PMD_NAMES[direction]
                losses[f"{name}_loss"], direction_metrics = self.pmd_loss(
                    image_emb, video_emb, image_tokens, video_tokens, video_mask, exclude,
                    direction=direction, positive_scores=positive_scores, asr_keys=asr_keys,
                )
                metrics.update(direction_metrics)
        if "rec" in tasks:
            losses["rec_loss"] = self.pfr_loss(
                image_tokens, video_tokens, video_mask, maps, asr_keys=asr_keys
            )
        return losses, metrics

    def pmd_score(self, pooled):
        """pooled [N,D] -> 10 * cos(pooled, heads.vim.weight) [N]."""
        weight = F.normalize(self.heads["vim"].weight, dim=-1)
        return PMD_SCALE * (F.normalize(pooled, dim=-1) @ weight.t()).squeeze(-1)

    def pair_score(self, image_tokens, video_tokens, video_mask, asr_keys=None):
        """PMD score of each (image, video) pair: [N,T,D], [N,F,T,D], [N,F] -> [N].

        The image tokens are the queries and the video tokens (and ``asr_keys``, see
        ``training_losses``) the keys/values, in training (both PMD directions) as at re-ranking.
        """
        _, pooled, _ = self.transformer(image_tokens, *_keys(video_tokens, video_mask, asr_keys))
        return self.pmd_score(pooled)

    def cross_attention(self, image_tokens, video_tokens, video_mask, asr_keys=None):
        """Attention probabilities of the last cross block on the visual keys:
        [N,T,D], [N,F,T,D], [N,F] -> [N,H,T,F*T] (an ASR key's share is left out)."""
        key_value, key_valid = _keys(video_tokens, video_mask, asr_keys)
        _, _, maps = self.transformer(image_tokens, key_value, key_valid, return_attention=True)
        # The blocks return probabilities times sqrt(head_dim) (the PFR input); undo the scale.
        probabilities = maps[-1] / maps[-1].sum(dim=-1, keepdim=True)
        return probabilities[..., : _num_visual(video_tokens)]

    @torch.no_grad()
    def mine_negatives(self, image_emb, video_emb, exclude=None):
        """Hard-negative clips of each local image among the global batch's clips (ICL similarity).

        image_emb [B,E], video_emb [B,E] (local, unit-norm), exclude [B,G] bool or None.
        Returns ``(positive [B], negatives [B,K], negative_valid [B,K], dual_accuracy [])``;
        columns index the all-gathered batch (rank-major).
        """
        return self._mine(image_emb, video_emb, exclude)

    @torch.no_grad()
    def mine_negative_images(self, video_emb, image_emb, exclude=None):
        """Hard-negative shop images of each local clip among the global batch's images; same
        arguments and returns as ``mine_negatives`` with the roles of the views swapped (``exclude``
        is the same [B,G] same-product mask: row i is the product of clip i and image i)."""
        return self._mine(video_emb, image_emb, exclude)

    def _mine(self, query_emb, candidate_emb, exclude):
        similarity = query_emb.detach() @ gather_tensor_along_batch(candidate_emb.detach()).t()
        batch = query_emb.size(0)
        positive = torch.arange(batch, device=similarity.device) + get_rank() * batch
        negatives, negative_valid = mine_hard_negatives(
            similarity, positive, self.num_negatives, exclude
        )
        dual_accuracy = (similarity.argmax(dim=1) == positive).float().mean()
        return positive, negatives, negative_valid, dual_accuracy

    def pmd_loss(
        self,
        image_emb,
        video_emb,
        image_tokens,
        video_tokens,
        video_mask,
        exclude=None,
        direction="image",
        positive_scores=None,
        asr_keys=None,
    ):
        """PMD in one direction: cross-entropy of each local pair's score against K hard negatives.

        ``image``: each local image against its clip and K clips mined from the global batch
        (clip tokens all-gathered with gradient). ``video``: each local clip against its image
        and K images mined from the global batch (image tokens all-gathered with gradient).
        Either way the image tokens are the cross model's queries (as in ``pair_score``); the
        negatives run ``pmd_chunk_size`` rows per cross-model pass. ``positive_scores`` [B]: the
        pairs' scores if already computed (``training_losses`` shares them between directions).
        ``asr_keys``: the clips' ASR keys (``training_losses``), gathered with the clip tokens.

        Returns ``(loss, {"<name>/dual_accuracy", "<name>/cross_accuracy"})`` (accuracies
        detached), ``<name>`` = ``vim`` (image direction) or ``vim_video``.
        """
        key_value, key_valid = _keys(video_tokens, video_mask, asr_keys)
        if positive_scores is None:
            _, pooled, _ = self.transformer(image_tokens, key_value, key_valid)
            positive_scores = self.pmd_score(pooled)
        rows = torch.arange(image_tokens.size(0), device=image_tokens.device)
        if direction == "image":
            _, negatives, valid, dual_accuracy = self.mine_negatives(image_emb, video_emb, exclude)
            all_asr_keys = None if asr_keys is None else (
                gather_tensor_along_batch_with_backward(asr_keys[0]),
                gather_tensor_along_batch(asr_keys[1]),
            )
            all_key_value, all_key_valid = _keys(
                gather_tensor_along_batch_with_backward(video_tokens),
                gather_tensor_along_batch(video_mask),
                all_asr_keys,
            )
            rows = rows[:, None].expand_as(negatives)
            negative_scores = self._pair_scores(
                image_tokens, all_key_value, all_key_valid, rows, negatives
            )
        else:
            _, negatives, valid, dual_accuracy = self.mine_negative_images(
                video_emb, image_emb, exclude
            )
            all_image_tokens = gather_tensor_along_batch_with_backward(image_tokens)
            rows = rows[:, None].expand_as(negatives)
            negative_scores = self._pair_scores(
                all_image_tokens, key_value, key_valid, negatives, rows
            )
        negative_scores = negative_scores.masked_fill(~valid, float("-inf"))
        scores = torch.cat([positive_scores[:, None], negative_scores], dim=1)
        name = PMD_NAMES[direction]
        metrics = {
            f"{name}/dual_accuracy": dual_accuracy,
            f"{name}/cross_accuracy": (scores.detach().argmax(dim=1) == 0).float().mean(),
        }
        return self.hard_negative_loss(scores), metrics

    def _pair_scores(self, image_tokens, key_value, key_valid, image_index, video_index):
        """Scores of the pairs (image_index[r,c], video_index[r,c]), ``pmd_chunk_size`` rows
        per cross-model pass: image_tokens [N,T,D], key_value [M,S,D], key_valid [M,S],
        indices [R,C] long -> [R,C]."""
        if image_index.numel() == 0:
            return key_value.new_zeros(image_index.shape)
        scores = []
        chunk = self.pmd_chunk_size
        for images, videos in zip(image_index.split(chunk), video_index.split(chunk), strict=True):
            images, videos = images.flatten(), videos.flatten()
            _, pooled, _ = self.transformer(
                image_tokens[images], key_value[videos], key_valid[videos]
            )
            scores.append(self.pmd_score(pooled))
        return torch.cat(scores).view_as(image_index)

    def pfr_loss(self, image_tokens, video_tokens, video_mask, maps=None, asr_keys=None):
        """PFR: rebuild the (detached) image tokens from the (detached, padding-zeroed) video
        tokens with cross-attention maps refined by the ``rec`` head; MSE.

        ``maps``: the cross model's maps of these pairs if already computed (by PMD's forward
        of the positive pairs), a list of [B,H,T,F*T]. Otherwise only the maps are computed:
        the cross model stops at the last cross block's maps (the original also runs its
        values, output, MLP and pooler, which get no gradient from this loss). With
        ``asr_keys`` the maps also cover the ASR keys; only the F*T visual positions feed the
        reconstruction.
        """
        key_value, key_valid = _keys(video_tokens, video_mask, asr_keys)
        if maps is None:
            maps = self.transformer.cross_attention_maps(image_tokens, key_value, key_valid)
        visual = _num_visual(video_tokens)
        key_value, key_valid = key_value[:, :visual], key_valid[:, :visual]
        maps = [layer_maps[..., :visual] for layer_maps in maps]
        logits = self.heads["rec"](torch.cat(maps, dim=1)).squeeze(1)  # [B, T, F*T]
        if self.pfr_mask_padding:
            logits = logits.masked_fill(~key_valid[:, None, :], float("-inf"))
        attention = logits.softmax(dim=-1)
        values = (key_value * key_valid.unsqueeze(-1)).detach()
        return self.mse_loss(attention @ values, image_tokens.detach())


def _keys(video_tokens, video_mask, extra=None):
    """Cross-model keys of clips: [N,F,T,D], [N,F] or [N,F,T] -> (tokens [N,F*T,D], valid
    [N,F*T] bool);
    ``extra`` (tokens [N,K,D], valid [N,K]: the ASR keys) is appended after the visual keys."""
    if video_mask.dim() == 3:  # per token [N,F,T] (box_mode patch_mask: RICE.key_mask)
        key_valid = video_mask.bool().flatten(1, 2)
    else:
        key_valid = video_mask.bool().repeat_interleave(video_tokens.size(2), dim=1)
    key_value = video_tokens.flatten(1, 2)
    if extra is not None:
        key_value = torch.cat([key_value, extra[0].to(key_value.dtype)], dim=1)
        key_valid = torch.cat([key_valid, extra[1].bool()], dim=1)
    return key_value, key_valid


def _num_visual(video_tokens):
    """F*T: the keys of a clip's frames, before any ASR key."""
    return video_tokens.size(1) * video_tokens.size(2)
