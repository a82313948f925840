"""Text processors: tokenization in the data loader, with ``transformers`` tokenizers read
from local files only.

``text_tokenizer`` tokenizes for a text encoder of ``mmf/modules/text_encoders.py``; its
params repeat the encoder's node (usually by interpolation) so both read the same folder and
lengths::

    text_processor:
      type: text_tokenizer
      params:
        encoder: ${model_config.rice.text_encoder}   # {type, params}

``processor({"text": str | None})`` -> the encoder's tokenized form (e.g. ``input_ids`` and
``attention_mask`` [max_length] for ``hf_text``, ``ngram_ids`` [max_ngrams] for
``hashed_ngrams``) plus ``has_text`` (bool scalar; False for missing or blank text).

``bert_tokenizer`` is MMF's BERT processor, kept so that the original RICE configs (which
tokenize a constant text the model never reads) build offline. Params (MMF's names)::

    tokenizer_config:
      type: pretrained/bert-base-uncased   # a folder (vocab.txt or tokenizer.json) or a vocab file
      params: {do_lower_case: true}
    max_seq_length: 128
    mask_probability: 0                    # masked-LM masking is not supported

The vocabulary is read on first use, so a config naming a missing folder fails only when
text is tokenized (``ConfigError`` naming the path). A relative path is tried from the
working directory, then from the dataset's ``data_dir``. ``processor({"text": str})`` ->
``input_ids``, ``input_mask``, ``segment_ids`` and ``lm_label_ids`` (all -1), each
[max_seq_length] long, and ``tokens`` (``[CLS] ... [SEP]``).
"""
import os

import torch

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.processors.base import BaseProcessor

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")


@registry.register_processor("text_tokenizer")
class TextTokenizerProcessor(BaseProcessor):
    """Runs ``registry.get_encoder_class(encoder.type).build_tokenizer(encoder.params)``."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config)
        encoder = config.get("encoder")
        if encoder is None or not encoder.get("type"):
            raise ConfigError(
                "text_tokenizer: params.encoder ({type, params} of the text encoder) is required"
            )
        encoder_class = registry.get_encoder_class(encoder.type)
        if not hasattr(encoder_class, "build_tokenizer"):
            raise ConfigError(f"text_tokenizer: encoder {encoder.type!r} is not a text encoder")
        self.tokenizer = encoder_class.build_tokenizer(encoder.get("params") or {})

    def __call__(self, item, *args, **kwargs):
        return self.tokenizer(item)


@registry.register_processor("bert_tokenizer")
class BertTokenizerProcessor(BaseProcessor):
    def __init__(self, config, *args, data_dir=None, **kwargs):
        super().__init__(config)
        tokenizer_config = config.get("tokenizer_config") or {}
        self.source = tokenizer_config.get("type")
        if not self.source:
            raise ConfigError(
                "bert_tokenizer: params.tokenizer_config.type (tokenizer folder or vocab file) "
                "is required"
            )
        self.do_lower_case = bool((tokenizer_config.get("params") or {}).get("do_lower_case", True))
        self.max_seq_length = int(config.get("max_seq_length", 128))
        if self.max_seq_length < 2:
            raise ConfigError(
                f"bert_tokenizer: max_seq_length must be >= 2, got {self.max_seq_length}"
            )
        if float(config.get("mask_probability", 0) or 0) > 0:
            raise ConfigError(
                "bert_tokenizer: mask_probability > 0 (masked-LM masking) is not supported"
            )
        self.data_dir = data_dir
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = self._load()
        return self._tokenizer

    def _find(self):
        """The tokenizer folder (with vocab.txt or tokenizer.json) or vocabulary file."""
        candidates = [self.source]
        if self.data_dir and not os.path.isabs(self.source):
            candidates.append(os.path.join(self.data_dir, self.source))
        for path in candidates:
            if os.path.isfile(path) or any(
                os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES
            ):
                return path
        raise ConfigError(
            f"bert_tokenizer: tokenizer_config.type {self.source!r}: no vocab.txt or "
            f"tokenizer.json found (tried {candidates})"
        )

    def _load(self):
        from transformers import BertTokenizer

        path = self._find()
        if os.path.isdir(path):
            tokenizer = BertTokenizer.from_pretrained(
                path, local_files_only=True, do_lower_case=self.do_lower_case
            )
        else:
            tokenizer = BertTokenizer(vocab=path, do_lower_case=self.do_lower_case)
        missing = [token for token in SPECIAL_TOKENS if token not in tokenizer.get_vocab()]
        if missing:
            raise ConfigError(f"bert_tokenizer: vocabulary {path} lacks {missing}")
        return tokenizer

    def __call__(self, item, *args, **kwargs):
        text = item["text"] if isinstance(item, dict) else item
        encoded = self.tokenizer(
            text, max_length=self.max_seq_length, truncation=True, padding="max_length",
            return_tensors="pt",
        )
        input_ids, input_mask = encoded["input_ids"][0], encoded["attention_mask"][0]
        length = int(input_mask.sum())
        return {
            "input_ids": input_ids,
            "input_mask": input_mask,
            "segment_ids": torch.zeros(self.max_seq_length, dtype=torch.long),
            "lm_label_ids": torch.full((self.max_seq_length,), -1, dtype=torch.long),
            "tokens": self.tokenizer.convert_ids_to_tokens(input_ids[:length].tolist()),
        }
