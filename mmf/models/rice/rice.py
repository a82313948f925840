"""``RICE``: a shared image encoder for shop images and clip frames, plus a task head.

Checkpoint layout (original_spec section 7): ``image_encoder.model.*`` (OpenAI CLIP names for
``openai_clip``) and ``transformer.*`` (the head: ``RICEForPretraining`` or
``RICEForContrastive``). State dicts saved from a DDP-wrapped model (``module.`` prefixes)
load strictly.

Batch fields: ``image`` [B,3,H,W], ``video`` [B,F,3,H,W], ``video_temporal_mask`` [B,F]
(1 = real frame), ``image_id`` (needed only with ``exclude_same_product``).

- train mode: ``{"losses": {"vic_loss", "vim_loss", "rec_loss"} (the configured ones;
  ``vim_video_loss`` too with ``pmd_directions: [image, video]``), "train_metrics":
  {"vim/dual_accuracy", "vim/cross_accuracy"} (detached, with vim; ``vim_video/...`` too)}``.
- eval mode: ``{"scores": clip embedding [B,E], "targets": image embedding [B,E]}``, unit-norm,
  each only when its view is in the batch.
"""
import logging

import numpy as np
import torch

from mmf.common.errors import ConfigError, DataError
from mmf.common.registry import registry
from mmf.models.base_model import BaseModel
from mmf.models.rice.heads import RICEForContrastive, embed_image, embed_video
from mmf.models.rice.mining import same_product_mask
from mmf.models.rice.param_groups import grouped_parameters
from mmf.models.rice.pretraining import RICEForPretraining
from mmf.utils.build import build_image_encoder
from mmf.utils.checkpoint import strip_module_prefix

logger = logging.getLogger(__name__)

_KNOWN_TASKS = ("vic", "vim", "rec")
# Substrings of head parameter names that get lr * lr_multiplier (original_spec 1.8).
_HEAD_LR_FILTERS = ("contrastive_norm", "pooler", "embeddings", "transformer")


@registry.register_model("rice")
class RICE(BaseModel):
    def __init__(self, config):
        super().__init__(config)
        self.head_type = config.get("training_head_type", "pretraining")
        if self.head_type not in ("pretraining", "contrastive"):
            raise ConfigError(
                "model_config.rice.training_head_type: expected 'pretraining' or 'contrastive', "
                f"got {self.head_type!r}"
            )
        self.tasks = tuple(config.get("tasks") or ("vic",))
        unknown = [t for t in self.tasks if t not in _KNOWN_TASKS]
        if unknown:
            raise ConfigError(
                f"model_config.rice.tasks: unknown tasks {unknown}; known: {list(_KNOWN_TASKS)}"
            )
        if self.head_type == "contrastive" and self.tasks != ("vic",):
            raise ConfigError("model_config.rice.tasks: the contrastive head only trains 'vic'")
        self.loss_weights = {t: float(w) for t, w in dict(config.get("loss_weights") or {}).items()}
        self.sample_tasks = bool(config.get("sample_tasks", False))
        self.task_probs = self._task_probabilities(config.get("tasks_sample_ratio"))
        self._task_rng = np.random.default_rng(int(config.get("task_sampling_seed", 0)))
        self.exclude_same_product = bool(config.get("exclude_same_product", False))
        self.freeze_image_encoder = bool(config.get("freeze_image_encoder", False))
        self.register_load_state_dict_pre_hook(_strip_module_prefix_hook)

    @classmethod
    def config_path(cls):
        return "configs/models/rice/defaults.yaml"

    def _task_probabilities(self, ratios):
        if ratios is None:
            return np.full(len(self.tasks), 1.0 / len(self.tasks))
        ratios = np.asarray(list(ratios), dtype=np.float64)
        if len(ratios) != len(self.tasks) or (ratios < 0).any() or ratios.sum() <= 0:
            raise ConfigError(
                f"model_config.rice.tasks_sample_ratio {ratios.tolist()} must hold one "
                f"non-negative weight per task of {list(self.tasks)}"
            )
        return ratios / ratios.sum()

    def build(self):
        self.image_encoder = build_image_encoder(
            self.config.image_encoder, "model_config.rice.image_encoder"
        )
        if self.head_type == "contrastive":
            self.transformer = RICEForContrastive(self.config)
        else:
            self.transformer = RICEForPretraining(self.config, self.image_encoder.token_dim)
        if self.freeze_image_encoder:
            self.image_encoder.requires_grad_(False)
            self.image_encoder.eval()

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_image_encoder:
            self.image_encoder.eval()
        return self

    @property
    def has_pair_score(self):
        return isinstance(self.transformer, RICEForPretraining) and "vim" in self.transformer.heads

    # ---- inference API -----------------------------------------------------------------

    def encode_image(self, image):
        """image [N,3,H,W] -> (unit-norm embedding [N,E], tokens [N,T,D])."""
        image_global, tokens = self.image_encoder(image)
        return embed_image(image_global), tokens

    def encode_video(self, video, video_mask=None):
        """video [N,F,3,H,W], mask [N,F] -> (unit-norm clip embedding [N,E], tokens [N,F,T,D])."""
        frame_global, tokens = self._encode_frames(video)
        if video_mask is None:
            video_mask = video.new_ones(video.shape[:2])
        return embed_video(frame_global, video_mask), tokens

    def pair_score(self, image_tokens, video_tokens, video_mask):
        """PMD training score ``10 * cos(pooled, w_vim)`` per pair (image tokens query the
        video tokens): [N,T,D], [N,F,T,D], [N,F] -> [N]."""
        if not self.has_pair_score:
            raise ConfigError(
                "pair_score needs training_head_type 'pretraining' with the 'vim' task"
            )
        return self.transformer.pair_score(image_tokens, video_tokens, video_mask)

    def cross_attention(self, image_tokens, video_tokens, video_mask):
        """PMD cross-attention of each pair, for pictures:
        [N,T,D], [N,F,T,D], [N,F] -> [N,H,T,F*T]."""
        if not self.has_pair_score:
            raise ConfigError(
                "cross_attention needs training_head_type 'pretraining' with the 'vim' task"
            )
        return self.transformer.cross_attention(image_tokens, video_tokens, video_mask)

    def _encode_frames(self, video):
        """All F slots (padding included, as the original): [N,F,3,H,W] -> ([N,F,E], [N,F,T,D])."""
        batch, frames = video.shape[:2]
        frame_global, tokens = self.image_encoder(video.flatten(0, 1))
        return frame_global.unflatten(0, (batch, frames)), tokens.unflatten(0, (batch, frames))

    # ---- forward -----------------------------------------------------------------------

    def forward(self, sample_list):
        if self.training:
            return self._forward_train(sample_list)
        output = {}
        if "video" in sample_list:
            mask = sample_list.get("video_temporal_mask")
            output["scores"] = self.encode_video(sample_list["video"], mask)[0]
        if "image" in sample_list:
            output["targets"] = self.encode_image(sample_list["image"])[0]
        return output

    def _forward_train(self, sample_list):
        for field in ("image", "video"):
            if field not in sample_list:
                raise DataError(
                    f"RICE training needs the batch field {field!r}; got {list(sample_list.keys())}"
                )
        video = sample_list["video"]
        video_mask = sample_list.get("video_temporal_mask")
        if video_mask is None:
            video_mask = video.new_ones(video.shape[:2], dtype=torch.long)
        image_global, image_tokens = self.image_encoder(sample_list["image"])
        video_global, video_tokens = self._encode_frames(video)
        exclude = None
        if self.exclude_same_product:
            if "image_id" not in sample_list:
                raise DataError("exclude_same_product needs the batch field 'image_id'")
            exclude = same_product_mask(
                sample_list["image_id"], image_global.size(0), image_global.device
            )
        tasks = None
        if self.sample_tasks:
            tasks = (self.tasks[self._task_rng.choice(len(self.tasks), p=self.task_probs)],)
        kwargs = {} if tasks is None else {"tasks": tasks}
        losses, metrics = self.transformer.training_losses(
            image_global, image_tokens, video_global, video_tokens, video_mask, exclude, **kwargs
        )
        # A loss weighs its task's weight: vim_loss and vim_video_loss both weigh loss_weights.vim.
        losses = {
            name: loss * self.loss_weights.get(name.split("_")[0], 1.0)
            for name, loss in losses.items()
        }
        return {"losses": losses, "train_metrics": metrics}

    # ---- optimizer and checkpoints -----------------------------------------------------

    def get_optimizer_parameters(self, config):
        """Groups by (lr, weight decay): encoder at the base lr; head parameters whose name has
        one of ``contrastive_norm, pooler, embeddings, transformer, heads`` at lr * lr_multiplier;
        weight decay 0 for names containing ``bias``. Groups carry a ``names`` list."""
        optimizer_params = config.optimizer.get("params", {})
        base_lr = float(optimizer_params.get("lr", 1e-3))
        weight_decay = float(optimizer_params.get("weight_decay", 0.0))
        multiplier = float(self.config.get("lr_multiplier", 1.0))
        filters = _HEAD_LR_FILTERS + (("heads",) if self.head_type == "pretraining" else ())
        named = [
            (f"image_encoder.{n}", p, base_lr) for n, p in self.image_encoder.named_parameters()
        ]
        for name, param in self.transformer.named_parameters():
            lr = base_lr * multiplier if any(f in name for f in filters) else base_lr
            named.append((f"transformer.{name}", param, lr))
        return grouped_parameters(named, weight_decay)

    def format_state_key(self, key):
        """Key of a DDP-saved checkpoint (``module.x``) -> this model's key (``x``)."""
        return next(iter(strip_module_prefix({key: None})))


def _strip_module_prefix_hook(module, state_dict, prefix, *args):
    """Let ``load_state_dict`` accept state dicts saved from DDP (keys ``module.*``)."""
    stripped = strip_module_prefix(state_dict, prefix)
    state_dict.clear()
    state_dict.update(stripped)
