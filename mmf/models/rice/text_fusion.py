"""Text in RICE (``model_config.rice.text``; null = off): the ASR of each clip and the title
of each shop image, encoded by one text encoder (``mmf/modules/text_encoders.py``).

Batch fields (the ``videotoshop`` dataset yields them when the text config is set):
``asr_tokens`` / ``title_tokens``, the encoder's tokenized form collated to [B, ...] tensors,
with ``has_text`` [B] bool (False: missing, blank, or dropped by ``text_dropout``, which the
dataset applies in training with each sample's own seeded RNG, so a resumed run and any
number of processes draw the same drops).

``encode(tokens)`` -> ``TextVectors``: the encoder's vectors [N, C] and ``present`` [N].
The projections of text vectors to the embedding width start as one shared isometry
(``_isometries``).

- ``late``: clip embedding ``normalize(v + g_asr * u_asr)``, image embedding
  ``normalize(i + g_title * u_title)``, with v, i the unit ICL embeddings, u the unit
  projection of the text vector (or of the learned "no text" vector ``no_<side>`` [E] where
  ``present`` is False) and g a learned scalar gate that starts at 0 (a new model is plain RICE).
- ``score``: the ICL score of a (clip, image) pair gains ``w * <u_asr, u_title>``, the
  agreement of the clip's ASR and the image's title (SGMN's text term), with a learned weight
  w that starts at 0. It is a dot product of wider embeddings: clip ``[v ; w * u_asr]``,
  image ``[i ; u_title]`` ([N, 2E]; a missing ASR is 0, a missing title the learned "no
  title" vector), so ranking, caching and mining need no change. Unlike ``late``, whose
  text-to-text term is ``g_asr * g_title`` (second order at 0, so ICL's gradient cannot open
  the gates from 0), the gradient of w at 0 is the text agreement itself. ``score_weight_init``
  (default 0) starts w elsewhere, e.g. SGMN's fixed 0.5, for a budget too short for w to
  grow from 0.
  ``detach_visual``: ICL trains the visual embeddings alone, as in plain RICE, and
  ``text_score_loss``, the same ICL over the fused embeddings with the visual parts and the
  logit scale detached, trains w and the text. Text then cannot stand in for what the images
  should learn (titles cover 9 % of LPR4M's test gallery), and the model without its texts
  ranks as plain RICE.
- ``tokens``: the projected ASR vector is one more PMD cross-attention key of its clip
  (``asr_key``, [N, 1, D]), masked out where the clip has no ASR. PFR reconstructs the image
  tokens from the visual keys only. A title belongs to the query image, not to the keys.
- ``pair_loss_weight`` > 0: ``text_pair_loss``, a symmetric contrastive loss of the clips'
  ASR against their images' titles (``s^2 * cos``, s learned, init 4) over the global batch,
  on the pairs where both texts are present (averaged over them in every process layout).
"""
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from mmf.common.errors import ConfigError, DataError
from mmf.utils.build import build_encoder
from mmf.utils.distributed import (
    gather_tensor_along_batch,
    gather_tensor_along_batch_with_backward,
    get_rank,
    get_world_size,
)

FUSIONS = ("late", "score", "tokens")
INPUTS = {"asr": ("asr",), "title": ("title",), "both": ("asr", "title")}
SIDES = ("asr", "title")
WHERE = "model_config.rice.text"
KEYS = (
    "encoder", "fusion", "inputs", "pair_loss_weight", "text_dropout", "lr_multiplier",
    "score_weight_init", "detach_visual",
)


@dataclasses.dataclass
class TextVectors:
    """Encoded texts of N items: ``vectors`` [N, C] float, ``present`` [N] bool."""

    vectors: torch.Tensor
    present: torch.Tensor

    def __getitem__(self, rows):
        return TextVectors(self.vectors[rows], self.present[rows])

    def to(self, device, dtype=None):
        return TextVectors(self.vectors.to(device, dtype), self.present.to(device))


@dataclasses.dataclass(frozen=True)
class TextSettings:
    """``model_config.rice.text``, checked."""

    encoder: dict
    fusion: tuple
    inputs: tuple
    pair_loss_weight: float
    text_dropout: float
    lr_multiplier: float = 1.0
    score_weight_init: float = 0.0
    detach_visual: bool = False


def read_text_settings(config):
    """``model_config.rice.text`` -> ``TextSettings``, or None when it is null."""
    node = config.get("text")
    if node is None:
        return None
    unknown = sorted(set(node) - set(KEYS))
    if unknown:
        raise ConfigError(f"{WHERE}: unknown keys {unknown}; known: {list(KEYS)}")
    encoder = node.get("encoder")
    if encoder is None or not encoder.get("type"):
        raise ConfigError(f"{WHERE}.encoder: a text encoder {{type, params}} is required")
    fusion = node.get("fusion", ["late"])
    fusion = (fusion,) if isinstance(fusion, str) else tuple(fusion or ())
    if not fusion or len(set(fusion)) != len(fusion) or any(f not in FUSIONS for f in fusion):
        raise ConfigError(f"{WHERE}.fusion: expected distinct names among {FUSIONS}, got {fusion}")
    inputs = node.get("inputs", "both")
    if inputs not in INPUTS:
        raise ConfigError(f"{WHERE}.inputs: expected one of {list(INPUTS)}, got {inputs!r}")
    weight = float(node.get("pair_loss_weight", 0.0))
    dropout = float(node.get("text_dropout", 0.0))
    lr_multiplier = float(node.get("lr_multiplier", 1.0))
    if lr_multiplier <= 0:
        raise ConfigError(f"{WHERE}.lr_multiplier must be > 0, got {lr_multiplier}")
    if weight < 0 or not 0 <= dropout < 1:
        raise ConfigError(
            f"{WHERE}: pair_loss_weight must be >= 0 and text_dropout in [0, 1), got "
            f"{weight} and {dropout}"
        )
    if weight > 0 and inputs != "both":
        raise ConfigError(f"{WHERE}.pair_loss_weight > 0 compares ASR and titles: inputs: both")
    if "tokens" in fusion and "asr" not in INPUTS[inputs]:
        raise ConfigError(f"{WHERE}.fusion tokens adds the clip's ASR to the PMD keys: "
                          f"inputs must be asr or both, got {inputs!r}")
    if "score" in fusion and inputs != "both":
        raise ConfigError(f"{WHERE}.fusion score compares ASR and titles: inputs: both")
    score_weight_init = float(node.get("score_weight_init", 0.0))
    if score_weight_init and "score" not in fusion:
        raise ConfigError(f"{WHERE}.score_weight_init is the start of the score fusion's "
                          f"weight: fusion {list(fusion)} has no score")
    detach_visual = bool(node.get("detach_visual", False))
    if detach_visual and ("score" not in fusion or "late" in fusion):
        raise ConfigError(f"{WHERE}.detach_visual keeps text out of the visual embeddings' "
                          f"training: it needs fusion score without late, got {list(fusion)}")
    return TextSettings(
        encoder, fusion, INPUTS[inputs], weight, dropout, lr_multiplier, score_weight_init,
        detach_visual,
    )


def _isometries(sides, width, embed_dim):
    """One ``nn.Linear(width, embed_dim)`` per side, all starting as the same isometry
    (orthonormal columns, bias 0; for embed_dim >= width): the cosine of an ASR and a title,
    projected each by its own side, starts as the encoder's own (for ``hashed_ngrams``, the
    n-grams they share), not a random distortion of it."""
    layers = nn.ModuleDict({side: nn.Linear(width, embed_dim) for side in sides})
    start = nn.init.orthogonal_(torch.empty(embed_dim, width))
    with torch.no_grad():
        for layer in layers.values():
            layer.weight.copy_(start)
            layer.bias.zero_()
    return layers


class TextFusion(nn.Module):
    """The text encoder and the layers that fuse its vectors into RICE.

    Args:
        settings: ``TextSettings``.
        embed_dim: E, the ICL embedding width; token_dim: D, the cross model's width.
    """

    def __init__(self, settings, embed_dim, token_dim):
        super().__init__()
        self.settings = settings
        self.inputs = settings.inputs
        self.encoder = build_encoder(settings.encoder, f"{WHERE}.encoder")
        width = self.encoder.output_dim
        self.late_sides = self.inputs if "late" in settings.fusion else ()
        self.score = "score" in settings.fusion
        both = settings.pair_loss_weight > 0 or self.score
        projected = SIDES if both else self.late_sides
        self.proj = _isometries(projected, width, embed_dim)
        self.gate = nn.ParameterDict({s: nn.Parameter(torch.zeros(())) for s in self.late_sides})
        stand_ins = dict.fromkeys(self.late_sides + (("title",) if self.score else ()))
        self.no_text = nn.ParameterDict(
            {s: nn.Parameter(torch.randn(embed_dim) * 0.02) for s in stand_ins}
        )
        if self.score:
            self.score_weight = nn.Parameter(torch.tensor(settings.score_weight_init))
        self.asr_key = nn.Linear(width, token_dim) if "tokens" in settings.fusion else None
        if settings.pair_loss_weight > 0:
            self.pair_scale = nn.Parameter(torch.tensor(4.0))

    @property
    def pretrained_encoder(self):
        """True for a ``transformers`` encoder (trains at the base lr, like the image encoder)."""
        return hasattr(self.encoder, "model")

    def encode(self, tokens):
        """Tokenized texts (a collated dict with ``has_text`` [N]) -> ``TextVectors``."""
        present = tokens["has_text"].bool()
        return TextVectors(self.encoder(tokens), present)

    def batch_texts(self, sample_list):
        """``{"asr": TextVectors, "title": TextVectors}`` of the inputs this model reads."""
        texts = {}
        for side in self.inputs:
            field = f"{side}_tokens"
            if field not in sample_list:
                raise DataError(
                    f"{WHERE} reads {side}: the batch has no field {field!r} (its dataset "
                    f"yields text when dataset_config.<dataset>.text is set)"
                )
            texts[side] = self.encode(sample_list[field])
        return texts

    def fuse(self, side, embedding, text=None):
        """Fusion of one side: unit embedding [N, E] -> embedding [N, E] (``late``: unit
        norm) or [N, 2E] (``score``). ``text``: ``TextVectors`` of the N items, or None (every
        text missing). A side the model does not fuse comes back unchanged."""
        if side in self.late_sides:
            gated = self.gate[side] * self._unit_text(side, embedding, text, self.no_text[side])
            embedding = F.normalize(embedding + gated, dim=-1)
        if not self.score:
            return embedding
        if side == "asr":
            part = self.score_weight * self._unit_text(side, embedding, text, None)
        else:
            part = self._unit_text(side, embedding, text, self.no_text[side])
        return torch.cat([embedding, part.to(embedding.dtype)], dim=-1)

    def _unit_text(self, side, embedding, text, stand_in):
        """[N, E] unit projections of ``text`` (``side``), ``stand_in`` normalised (or 0 when
        None) where a text is missing."""
        if stand_in is None:
            unit = embedding.new_zeros(embedding.shape)
        else:
            unit = F.normalize(stand_in, dim=-1).to(embedding.dtype).expand_as(embedding)
        if text is None:
            return unit
        projected = F.normalize(self.proj[side](text.vectors), dim=-1).to(embedding.dtype)
        return torch.where(text.present[:, None], projected, unit)

    def key_tokens(self, asr):
        """The ASR key of each clip for PMD: ``(tokens [N, 1, D], valid [N, 1] bool)``, or None
        without ``tokens`` fusion or ASR."""
        if self.asr_key is None or asr is None:
            return None
        return self.asr_key(asr.vectors)[:, None], asr.present[:, None]

    def pair_loss(self, asr, title):
        """``text_pair_loss`` (already weighed by ``pair_loss_weight``): symmetric InfoNCE of
        ASR against title over the global batch, mean over the pairs with both texts."""
        scale = self.pair_scale
        left = scale * F.normalize(self.proj["asr"](asr.vectors), dim=-1)
        right = scale * F.normalize(self.proj["title"](title.vectors), dim=-1)
        valid = asr.present & title.present
        all_left = gather_tensor_along_batch_with_backward(left)
        all_right = gather_tensor_along_batch_with_backward(right)
        all_valid = gather_tensor_along_batch(valid)
        labels = torch.arange(left.size(0), device=left.device) + get_rank() * left.size(0)
        losses = []
        for logits in (left @ all_right.t(), right @ all_left.t()):
            logits = logits.masked_fill(~all_valid[None, :], float("-inf"))
            losses.append(F.cross_entropy(logits[valid], labels[valid], reduction="sum"))
        # local sum * W / global count: DDP's mean over ranks is the mean over all valid pairs.
        count = all_valid.sum().clamp(min=1)
        loss = (losses[0] + losses[1]) / 2 * get_world_size() / count
        return self.settings.pair_loss_weight * loss
