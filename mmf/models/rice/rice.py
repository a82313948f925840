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

With ``box_mode: patch_mask`` (``mmf/models/rice/boxes.py``) the batch also holds
``video_boxes`` [B,F,4]; image and frame embeddings pool patch tokens, and a frame's tokens
outside its box leave its pooling and the PMD / PFR keys. ``crop`` is the dataset's alone.

With ``text`` set (``mmf/models/rice/text_fusion.py``), the batch also holds ``asr_tokens`` /
``title_tokens``, the parameters ``text_fusion.*`` join the checkpoint and train mode may add
``text_pair_loss``; with ``text: null`` (the default) nothing changes.
"""
import logging

import numpy as np
import torch

from mmf.common.errors import ConfigError, DataError
from mmf.common.registry import registry
from mmf.datasets.builders.videotoshop.clip_boxes import BOX_MODES
from mmf.models.base_model import BaseModel
from mmf.models.rice.boxes import pool_patches, token_keep, token_projection
from mmf.models.rice.heads import RICEForContrastive, embed_image, embed_video
from mmf.models.rice.mining import same_product_mask
from mmf.models.rice.param_groups import grouped_parameters
from mmf.models.rice.pretraining import RICEForPretraining
from mmf.models.rice.text_fusion import TextFusion, read_text_settings
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
        self.box_mode = config.get("box_mode")
        if self.box_mode is not None and self.box_mode not in BOX_MODES:
            raise ConfigError(
                f"model_config.rice.box_mode must be null or one of {BOX_MODES}, "
                f"got {self.box_mode!r}"
            )
        self.text_settings = read_text_settings(config)
        if self.text_settings and "tokens" in self.text_settings.fusion and self.tasks == ("vic",):
            raise ConfigError(
                "model_config.rice.text.fusion tokens feeds the PMD keys: tasks need vim or rec"
            )
        if self.text_settings and "score" in self.text_settings.fusion and (
            self.head_type == "contrastive"
        ):
            raise ConfigError(
                "model_config.rice.text.fusion score adds the text term to the embeddings' dot "
                "product, which the contrastive head normalises away: use training_head_type "
                "pretraining"
            )
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
        self._project_tokens = None
        if self.box_mode == "patch_mask":
            self._project_tokens = token_projection(self.image_encoder)
        self.text_fusion = None
        if self.text_settings is not None:
            self.text_fusion = TextFusion(
                self.text_settings, self.image_encoder.embed_dim, self.image_encoder.token_dim
            )
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

    @property
    def text_inputs(self):
        """The texts the model reads: a tuple of ``asr`` / ``title`` (empty without text)."""
        return () if self.text_fusion is None else self.text_fusion.inputs

    # ---- inference API -----------------------------------------------------------------
    # ``title`` / ``asr``: ``TextVectors`` from ``encode_text`` (None: no text, the "no text"
    # path of a text model; ignored by a model without text).

    def encode_text(self, tokens):
        """Tokenized texts (``text_tokenizer`` output, collated) -> ``TextVectors`` [N, C]."""
        if self.text_fusion is None:
            raise ConfigError("encode_text needs a model with model_config.rice.text set")
        return self.text_fusion.encode(tokens)

    def encode_image(self, image, title=None):
        """image [N,3,H,W] -> (embedding [N,E], tokens [N,T,D]); the embedding has unit norm,
        except with text fusion ``score`` ([N,2E], ``text_fusion.TextFusion.fuse``)."""
        image_global, tokens = self._encode_images(image)
        return self._fuse("title", embed_image(image_global), title), tokens

    def encode_video(self, video, video_mask=None, asr=None, boxes=None):
        """video [N,F,3,H,W], mask [N,F] -> (clip embedding [N,E], tokens [N,F,T,D]), unit norm
        except with text fusion ``score`` ([N,2E]).
        ``boxes`` [N,F,4]: the frames' boxes on the input (``box_mode: patch_mask``; None: the
        whole frame)."""
        frame_global, tokens = self._encode_frames(video, boxes)
        if video_mask is None:
            video_mask = video.new_ones(video.shape[:2])
        return self._fuse("asr", embed_video(frame_global, video_mask), asr), tokens

    def pair_score(self, image_tokens, video_tokens, video_mask, asr=None):
        """PMD training score ``10 * cos(pooled, w_vim)`` per pair (image tokens query the
        video tokens and, with ``tokens`` fusion, the ASR key): [N,T,D], [N,F,T,D], [N,F] -> [N]."""
        if not self.has_pair_score:
            raise ConfigError(
                "pair_score needs training_head_type 'pretraining' with the 'vim' task"
            )
        return self.transformer.pair_score(
            image_tokens, video_tokens, video_mask, self._asr_keys(asr)
        )

    def cross_attention(self, image_tokens, video_tokens, video_mask, asr=None):
        """PMD cross-attention of each pair on the visual keys, for pictures:
        [N,T,D], [N,F,T,D], [N,F] -> [N,H,T,F*T]."""
        if not self.has_pair_score:
            raise ConfigError(
                "cross_attention needs training_head_type 'pretraining' with the 'vim' task"
            )
        return self.transformer.cross_attention(
            image_tokens, video_tokens, video_mask, self._asr_keys(asr)
        )

    def _fuse(self, side, embedding, text):
        if self.text_fusion is None:
            return embedding
        return self.text_fusion.fuse(side, embedding, text)

    def _asr_keys(self, asr):
        return None if self.text_fusion is None else self.text_fusion.key_tokens(asr)

    def _encode_images(self, image):
        """[N,3,H,W] -> (global [N,E], tokens [N,T,D]); with ``patch_mask`` the global is the
        mean of all patch tokens (``boxes.pool_patches``)."""
        image_global, tokens = self.image_encoder(image)
        if self.box_mode == "patch_mask":
            every = tokens.new_ones(tokens.shape[:2], dtype=torch.bool)
            image_global = pool_patches(self._project_tokens(tokens), every)
        return image_global, tokens

    def _encode_frames(self, video, boxes=None):
        """All F slots (padding included, as the original): [N,F,3,H,W] -> ([N,F,E], [N,F,T,D]);
        with ``patch_mask`` a frame's global is the mean of the patch tokens its box keeps."""
        batch, frames = video.shape[:2]
        frame_global, tokens = self.image_encoder(video.flatten(0, 1))
        frame_global = frame_global.unflatten(0, (batch, frames))
        tokens = tokens.unflatten(0, (batch, frames))
        if self.box_mode == "patch_mask":
            keep = self.token_mask(video, tokens.size(2), boxes)
            frame_global = pool_patches(self._project_tokens(tokens), keep)
        return frame_global, tokens

    def token_mask(self, video, num_tokens, boxes=None):
        """Tokens each frame keeps under ``patch_mask``: video [N,F,3,H,W], boxes [N,F,4] on the
        input (None: whole frames) -> bool [N,F,T] (``mmf.models.rice.boxes``)."""
        height, width = video.shape[-2:]
        if boxes is None:
            boxes = video.new_tensor([0.0, 0.0, width, height]).expand(*video.shape[:2], 4)
        return token_keep(boxes.to(video.device, torch.float32), num_tokens, height, width)

    def key_mask(self, video, video_mask, num_tokens, boxes=None):
        """The PMD / PFR key mask: ``video_mask`` [N,F], or with ``patch_mask`` per token
        [N,F,T] (real frame and token kept)."""
        if self.box_mode != "patch_mask":
            return video_mask
        return video_mask.bool()[..., None] & self.token_mask(video, num_tokens, boxes)

    # ---- forward -----------------------------------------------------------------------

    def forward(self, sample_list):
        if self.training:
            return self._forward_train(sample_list)
        output = {}
        texts = self._batch_texts(sample_list)
        if "video" in sample_list:
            mask = sample_list.get("video_temporal_mask")
            output["scores"] = self.encode_video(
                sample_list["video"], mask, texts.get("asr"), self._batch_boxes(sample_list)
            )[0]
        if "image" in sample_list:
            output["targets"] = self.encode_image(sample_list["image"], texts.get("title"))[0]
        return output

    def _batch_boxes(self, sample_list):
        """``video_boxes`` [B,F,4] under ``patch_mask`` (a batch without them is an error)."""
        if self.box_mode != "patch_mask":
            return None
        if "video_boxes" not in sample_list:
            raise DataError(
                "model_config.rice.box_mode patch_mask needs the batch field 'video_boxes' "
                "(the dataset's box_mode must follow the model's)"
            )
        return sample_list["video_boxes"]

    def _batch_texts(self, sample_list):
        """``{side: TextVectors}`` of the batch's texts this model reads (eval: those present)."""
        if self.text_fusion is None:
            return {}
        if self.training:
            return self.text_fusion.batch_texts(sample_list)
        return {
            side: self.encode_text(sample_list[f"{side}_tokens"])
            for side in self.text_inputs if f"{side}_tokens" in sample_list
        }

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
        image_global, image_tokens = self._encode_images(sample_list["image"])
        boxes = self._batch_boxes(sample_list)
        video_global, video_tokens = self._encode_frames(video, boxes)
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
        text_losses = {}
        if self.text_fusion is not None:
            kwargs, text_losses = self._text_kwargs(
                sample_list, image_global, video_global, video_mask, exclude, kwargs
            )
        key_mask = video_mask
        if self.box_mode == "patch_mask" and isinstance(self.transformer, RICEForPretraining):
            # The head pools with these embeddings and keys with the per-token mask.
            kwargs.setdefault(
                "embeddings", (embed_image(image_global), embed_video(video_global, video_mask))
            )
            key_mask = self.key_mask(video, video_mask, video_tokens.size(2), boxes)
        losses, metrics = self.transformer.training_losses(
            image_global, image_tokens, video_global, video_tokens, key_mask, exclude, **kwargs
        )
        losses.update(text_losses)
        # A loss weighs its task's weight: vim_loss and vim_video_loss both weigh loss_weights.vim.
        losses = {
            name: loss * self.loss_weights.get(name.split("_")[0], 1.0)
            for name, loss in losses.items()
        }
        return {"losses": losses, "train_metrics": metrics}

    def _text_kwargs(self, sample_list, image_global, video_global, video_mask, exclude, kwargs):
        """The head's text arguments (fused embeddings, ASR keys), ``text_pair_loss`` and,
        with ``detach_visual``, ``text_score_loss`` (ICL over the fused embeddings, the visual
        parts and the logit scale detached; the head's ICL then sees the visual ones)."""
        texts = self._batch_texts(sample_list)
        fusion = self.text_fusion
        image_emb, video_emb = embed_image(image_global), embed_video(video_global, video_mask)
        losses = {}
        if self.text_settings.detach_visual:
            # The head's ICL gets the visual embeddings; the text term trains on copies.
            fused = (fusion.fuse("title", image_emb.detach(), texts.get("title")),
                     fusion.fuse("asr", video_emb.detach(), texts.get("asr")))
            scale = self.transformer.logit_scale.detach()
            losses["text_score_loss"] = self.transformer.vic_loss(*fused, scale, exclude)
        else:
            image_emb = fusion.fuse("title", image_emb, texts.get("title"))
            video_emb = fusion.fuse("asr", video_emb, texts.get("asr"))
        kwargs = {**kwargs, "embeddings": (image_emb, video_emb)}
        if isinstance(self.transformer, RICEForPretraining):
            kwargs = {**kwargs, "asr_keys": fusion.key_tokens(texts.get("asr"))}
        if self.text_settings.pair_loss_weight > 0:
            losses["text_pair_loss"] = fusion.pair_loss(texts["asr"], texts["title"])
        return kwargs, losses

    # ---- optimizer and checkpoints -----------------------------------------------------

    def get_optimizer_parameters(self, config):
        """Groups by (lr, weight decay): encoder at the base lr; head parameters whose name has
        one of ``contrastive_norm, pooler, embeddings, transformer, heads`` at lr * lr_multiplier;
        ``text_fusion.*`` at lr * lr_multiplier * text.lr_multiplier, but a ``transformers``
        text encoder at the base lr; weight decay 0 for names containing ``bias``. Groups
        carry a ``names`` list."""
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
        if self.text_fusion is not None:
            pretrained = self.text_fusion.pretrained_encoder
            text_lr = base_lr * multiplier * self.text_settings.lr_multiplier
            for name, param in self.text_fusion.named_parameters():
                at_base = pretrained and name.startswith("encoder.")
                lr = base_lr if at_base else text_lr
                named.append((f"text_fusion.{name}", param, lr))
        return grouped_parameters(named, weight_decay)

    def format_state_key(self, key):
        """Key of a DDP-saved checkpoint (``module.x``) -> this model's key (``x``)."""
        return next(iter(strip_module_prefix({key: None})))


def _strip_module_prefix_hook(module, state_dict, prefix, *args):
    """Let ``load_state_dict`` accept state dicts saved from DDP (keys ``module.*``)."""
    stripped = strip_module_prefix(state_dict, prefix)
    state_dict.clear()
    state_dict.update(stripped)
