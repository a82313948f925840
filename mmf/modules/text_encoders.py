"""Text encoders, registered by name (kind ``encoder``) and built as ``cls(params)``.

A text encoder comes in two halves that share one ``params`` node:

- ``cls.build_tokenizer(params)`` -> a picklable callable ``text -> dict of tensors`` that
  runs in the data loader (the ``text_tokenizer`` processor calls it), so each text is
  tokenized once per sample in the loader's workers;
- ``encoder(tokens) -> [B, output_dim]`` float, one batched forward over the collated dict.

Missing text (``None``, empty or blank) is an explicit empty value: its tokenized form has
``has_text`` False (a bool scalar, [B] once collated) and the encoder still returns a defined
vector for it, so that a model can swap in a learned "no text" vector.

- ``hf_text``: any ``transformers`` text model and its tokenizer, read from a local folder
  (``local_files_only=True``), pooled to one vector.
- ``hashed_ngrams``: character (and optionally word) n-grams hashed into an
  ``nn.EmbeddingBag`` trained from scratch; needs no weights and works on any script.
"""
import logging
import os
import re
import unicodedata
import zlib

import torch
from torch import nn

from mmf.common.errors import CheckpointError, ConfigError, DataError
from mmf.common.registry import registry

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
WORD = re.compile(r"\w+")


def text_of(item):
    """The text of a processor input: a string, ``None``, or a dict with a ``"text"`` key."""
    text = item.get("text") if isinstance(item, dict) else item
    if text is not None and not isinstance(text, str):
        raise DataError(f"text_tokenizer: expected a string or None, got {type(text).__name__}")
    return text.strip() if text else ""


def _positive_int(params, key, default, where):
    value = params.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
    return value


def _model_dir(params):
    path = params.get("model_dir")
    if not path:
        raise ConfigError("text_encoder.params.model_dir: a local transformers folder is required")
    path = os.path.expanduser(str(path))
    if not os.path.isdir(path):
        raise ConfigError(f"text_encoder.params.model_dir: folder {path!r} does not exist")
    return path


# ---------------------------------------------------------------------------------------------
# hf_text


class HFTextTokenizer:
    """A ``transformers`` tokenizer padding and truncating to ``max_length``.

    ``tokenizer(text)`` -> ``input_ids`` [L] long, ``attention_mask`` [L] long and
    ``has_text`` (bool scalar); missing text is tokenized as the empty string.
    """

    def __init__(self, path, max_length):
        from transformers import AutoTokenizer

        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"text_encoder.params.model_dir {path!r}: no tokenizer: {err}"
            ) from None
        self.max_length = max_length

    def __call__(self, item):
        text = text_of(item)
        encoded = self.tokenizer(
            text, max_length=self.max_length, truncation=True, padding="max_length",
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"][0],
            "attention_mask": encoded["attention_mask"][0],
            "has_text": torch.tensor(bool(text)),
        }


@registry.register_encoder("hf_text")
class HFTextEncoder(nn.Module):
    """A ``transformers`` text model pooled to one vector per text.

    params:
        model_dir: local folder holding the model and its tokenizer (``save_pretrained``
            layout: BERT, Chinese RoBERTa, multilingual MiniLM, a CLIP / Chinese-CLIP ...).
        submodule: null, or the attribute holding the text tower of a dual model
            (``text_model`` for CLIP and Chinese-CLIP; their projection is not applied).
        pooling: ``mean`` (default; over the attention mask) or ``cls`` (first token).
        max_length: tokens per text after truncation and padding (default 64).
        freeze: true keeps the weights fixed (no gradients, always in eval mode).

    ``forward({"input_ids": [B,L], "attention_mask": [B,L], ...})`` -> [B, output_dim].
    """

    def __init__(self, params):
        super().__init__()
        from transformers import AutoModel

        path = _model_dir(params)
        self.pooling = params.get("pooling", "mean")
        if self.pooling not in POOLINGS:
            raise ConfigError(
                f"text_encoder.params.pooling: {self.pooling!r} is not one of {POOLINGS}"
            )
        self.max_length = _positive_int(params, "max_length", 64, "text_encoder.params")
        try:
            model, info = AutoModel.from_pretrained(
                path, local_files_only=True, dtype=torch.float32, output_loading_info=True
            )
        except (OSError, ValueError) as err:
            raise ConfigError(f"text_encoder.params.model_dir {path!r}: no model: {err}") from None
        missing = sorted(k for k in info["missing_keys"] if "pooler" not in k.split("."))
        if missing:  # the pooler is dropped below, so checkpoints without one are fine
            raise CheckpointError(f"{path}: weights missing for {missing[:5]}")
        submodule = params.get("submodule")
        if submodule:
            if not isinstance(getattr(model, submodule, None), nn.Module):
                raise ConfigError(
                    f"text_encoder.params.submodule: {type(model).__name__} "
                    f"has no module {submodule!r}"
                )
            model = getattr(model, submodule)
        if getattr(model, "pooler", None) is not None:
            model.pooler = None  # never used here; unused parameters would break DDP
        self.model = model
        self.output_dim = int(model.config.hidden_size)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and self.max_length > positions:
            raise ConfigError(
                f"text_encoder.params.max_length: {self.max_length} exceeds the model's "
                f"{positions} positions"
            )
        self.frozen = bool(params.get("freeze", False))
        if self.frozen:
            self.model.requires_grad_(False)
            self.model.eval()
        logger.info("loaded %s text encoder from %s", type(model).__name__, path)

    @staticmethod
    def build_tokenizer(params):
        return HFTextTokenizer(
            _model_dir(params), _positive_int(params, "max_length", 64, "text_encoder.params")
        )

    def train(self, mode=True):
        super().train(mode)
        if self.frozen:
            self.model.eval()
        return self

    def forward(self, tokens):
        """tokens: ``input_ids`` and ``attention_mask`` [B, L] -> [B, output_dim] float."""
        mask = tokens["attention_mask"]
        input_ids = tokens["input_ids"]
        keep = mask.bool().any(0)
        if keep.any():  # drop the columns that are padding in every row: same output, cheaper
            input_ids, mask = input_ids[:, keep], mask[:, keep]
        hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


# ---------------------------------------------------------------------------------------------
# hashed_ngrams


class HashedNgramTokenizer:
    """Character and word n-grams -> bucket ids in ``[1, num_buckets]`` (0 pads), with a
    stable hash.

    The text is NFKC-normalised, optionally case-folded, its whitespace collapsed to single
    spaces and cut to ``max_chars``. Every character n-gram for n in ``ngram_range`` (None:
    none) that is not blank, then every word n-gram for n in 1..``word_ngrams`` (words: runs
    of letters and digits, ``\\w+``; a word n-gram is its words joined by a space) is hashed
    with ``zlib.crc32`` of its UTF-8 bytes (word n-grams behind a ``\\x01`` prefix, so the
    word "a" and the character "a" differ), so ids are the same in every process.
    ``tokenizer(text)`` -> ``ngram_ids`` [max_ngrams] long and ``has_text`` (bool scalar).
    """

    def __init__(self, ngram_range, num_buckets, max_chars, lowercase, word_ngrams=0):
        self.ngram_range = ngram_range
        self.num_buckets = num_buckets
        self.max_chars = max_chars
        self.lowercase = lowercase
        self.word_ngrams = word_ngrams
        low, high = ngram_range or (1, 0)
        max_words = (max_chars + 1) // 2
        self.max_ngrams = sum(max(0, max_chars - n + 1) for n in range(low, high + 1)) + sum(
            max(0, max_words - n + 1) for n in range(1, word_ngrams + 1)
        )

    def normalize(self, text):
        text = unicodedata.normalize("NFKC", text)
        if self.lowercase:
            text = text.casefold()
        return " ".join(text.split())[: self.max_chars]

    def ngram_ids(self, text):
        """Bucket ids (1-based) of the n-grams of ``text``: character n-grams, shortest
        first, then word n-grams, shortest first."""
        text = self.normalize(text)
        low, high = self.ngram_range or (1, 0)
        grams = [text[i : i + n] for n in range(low, high + 1) for i in range(len(text) - n + 1)]
        grams = [g for g in grams if g.strip()]
        if self.word_ngrams:
            words = WORD.findall(text)
            grams += [
                "\x01" + " ".join(words[i : i + n])
                for n in range(1, self.word_ngrams + 1) for i in range(len(words) - n + 1)
            ]
        return [zlib.crc32(g.encode("utf-8")) % self.num_buckets + 1 for g in grams]

    def __call__(self, item):
        text = text_of(item)
        ids = torch.zeros(self.max_ngrams, dtype=torch.long)
        found = self.ngram_ids(text)
        ids[: len(found)] = torch.tensor(found, dtype=torch.long)
        return {"ngram_ids": ids, "has_text": torch.tensor(bool(text))}


@registry.register_encoder("hashed_ngrams")
class HashedNgramEncoder(nn.Module):
    """Mean of learned embeddings of hashed character and word n-grams (fastText-style, no
    weights).

    params:
        ngram_range: [min, max] n-gram lengths in characters (default [1, 3]); null: no
            character n-grams.
        word_ngrams: word n-grams of 1 to this many words (default 0: none). Words match
            whole (an attribute said in the ASR and written in a title), where the character
            n-grams of the words around them add noise; character n-grams suit text without
            spaces (Chinese).
        num_buckets: hash buckets (default 65536); the table has one more row, the padding 0.
        dim: embedding width, the ``output_dim`` (default 256).
        max_chars: characters kept per text (default 128).
        lowercase: case-fold before hashing (default true).

    ``forward({"ngram_ids": [B, max_ngrams], ...})`` -> [B, dim]; a text without n-grams
    gives zeros.
    """

    def __init__(self, params):
        super().__init__()
        self.tokenizer = self.build_tokenizer(params)
        self.output_dim = _positive_int(params, "dim", 256, "text_encoder.params")
        self.bag = nn.EmbeddingBag(self.tokenizer.num_buckets + 1, self.output_dim, mode="mean",
                                   padding_idx=0)

    @staticmethod
    def build_tokenizer(params):
        where = "text_encoder.params"
        ngram_range = params.get("ngram_range", [1, 3])
        word_ngrams = params.get("word_ngrams", 0)
        if not isinstance(word_ngrams, int) or isinstance(word_ngrams, bool) or word_ngrams < 0:
            raise ConfigError(f"{where}.word_ngrams: expected an integer >= 0, got {word_ngrams!r}")
        if ngram_range is not None:
            try:
                low, high = (int(n) for n in ngram_range)
            except (TypeError, ValueError):
                low, high = 0, -1
            if not 1 <= low <= high:
                raise ConfigError(
                    f"{where}.ngram_range: expected [min, max] with 1 <= min <= max or null, "
                    f"got {ngram_range}"
                )
            ngram_range = (low, high)
        elif word_ngrams == 0:
            raise ConfigError(f"{where}: ngram_range null and word_ngrams 0 leave no n-grams")
        return HashedNgramTokenizer(
            ngram_range,
            _positive_int(params, "num_buckets", 65536, where),
            _positive_int(params, "max_chars", 128, where),
            bool(params.get("lowercase", True)),
            word_ngrams,
        )

    def forward(self, tokens):
        """tokens: ``ngram_ids`` [B, max_ngrams] (0 = padding) -> [B, dim] float."""
        return self.bag(tokens["ngram_ids"])
