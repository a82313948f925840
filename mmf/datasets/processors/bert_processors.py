"""``bert_tokenizer``: BERT WordPiece tokenization from a local vocabulary, no downloads.

The original RICE configs tokenize a constant text with a BERT tokenizer whose output the
model never reads; this processor lets such configs build offline. Params (MMF's names)::

    tokenizer_config:
      type: pretrained/bert-base-uncased   # a folder holding vocab.txt, or the vocab file
      params: {do_lower_case: true}
    max_seq_length: 128
    mask_probability: 0                    # masked-LM masking is not supported

The vocabulary is read on first use, so a config naming a missing folder fails only when
text is tokenized (``ConfigError`` naming the path). A relative path is tried from the
working directory, then from the dataset's ``data_dir``.

``processor({"text": str})`` -> ``input_ids``, ``input_mask``, ``segment_ids`` and
``lm_label_ids`` (all -1), each [max_seq_length] long, and ``tokens`` (``[CLS] ... [SEP]``).
"""
import os
import unicodedata

import torch

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.datasets.processors.base import BaseProcessor

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
MAX_WORD_CHARS = 100


@registry.register_processor("bert_tokenizer")
class BertTokenizerProcessor(BaseProcessor):
    def __init__(self, config, *args, data_dir=None, **kwargs):
        super().__init__(config)
        tokenizer_config = config.get("tokenizer_config") or {}
        self.source = tokenizer_config.get("type")
        if not self.source:
            raise ConfigError(
                "bert_tokenizer: params.tokenizer_config.type (vocabulary folder or file) is required"
            )
        self.do_lower_case = bool((tokenizer_config.get("params") or {}).get("do_lower_case", True))
        self.max_seq_length = int(config.get("max_seq_length", 128))
        if self.max_seq_length < 2:
            raise ConfigError(f"bert_tokenizer: max_seq_length must be >= 2, got {self.max_seq_length}")
        if float(config.get("mask_probability", 0) or 0) > 0:
            raise ConfigError("bert_tokenizer: mask_probability > 0 (masked-LM masking) is not supported")
        self.data_dir = data_dir
        self._vocab = None

    @property
    def vocab(self):
        if self._vocab is None:
            self._vocab = _read_vocab(self._vocab_path())
        return self._vocab

    def _vocab_path(self):
        candidates = [self.source]
        if self.data_dir and not os.path.isabs(self.source):
            candidates.append(os.path.join(self.data_dir, self.source))
        for candidate in candidates:
            path = os.path.join(candidate, "vocab.txt") if os.path.isdir(candidate) else candidate
            if os.path.isfile(path):
                return path
        raise ConfigError(
            f"bert_tokenizer: tokenizer_config.type {self.source!r}: no vocab.txt found (tried {candidates})"
        )

    def tokenize(self, text):
        """WordPiece tokens of ``text`` (no special tokens)."""
        tokens = []
        for word in _basic_tokens(text, self.do_lower_case):
            tokens.extend(_wordpiece(word, self.vocab))
        return tokens

    def __call__(self, item, *args, **kwargs):
        text = item["text"] if isinstance(item, dict) else item
        tokens = ["[CLS]"] + self.tokenize(text)[: self.max_seq_length - 2] + ["[SEP]"]
        ids = [self.vocab[token] for token in tokens]
        padding = self.max_seq_length - len(ids)
        return {
            "input_ids": torch.tensor(ids + [self.vocab["[PAD]"]] * padding, dtype=torch.long),
            "input_mask": torch.tensor([1] * len(ids) + [0] * padding, dtype=torch.long),
            "segment_ids": torch.zeros(self.max_seq_length, dtype=torch.long),
            "lm_label_ids": torch.full((self.max_seq_length,), -1, dtype=torch.long),
            "tokens": tokens,
        }


def _read_vocab(path):
    with open(path, encoding="utf-8") as handle:
        vocab = {}
        for index, line in enumerate(handle):
            vocab.setdefault(line.rstrip("\r\n"), index)
    missing = [token for token in SPECIAL_TOKENS if token not in vocab]
    if missing:
        raise ConfigError(f"bert_tokenizer: vocabulary {path} lacks {missing}")
    return vocab


def _basic_tokens(text, lower):
    """BERT's basic tokenization: clean, space out CJK characters, lower-case and strip
    accents, split on whitespace and punctuation."""
    chars = []
    for char in text:
        code = ord(char)
        if char.isspace():
            chars.append(" ")
        elif code in (0, 0xFFFD) or unicodedata.category(char).startswith("C"):
            continue
        elif _is_cjk(code):
            chars.extend((" ", char, " "))
        else:
            chars.append(char)
    tokens = []
    for word in "".join(chars).split():
        if lower:
            word = word.lower()
            word = "".join(c for c in unicodedata.normalize("NFD", word) if unicodedata.category(c) != "Mn")
        current = ""
        for char in word:
            if _is_punctuation(char):
                if current:
                    tokens.append(current)
                tokens.append(char)
                current = ""
            else:
                current += char
        if current:
            tokens.append(current)
    return tokens


def _wordpiece(word, vocab):
    """Greedy longest-match-first split of ``word``; ``[UNK]`` if some part matches nothing."""
    if len(word) > MAX_WORD_CHARS:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                break
            end -= 1
        else:
            return ["[UNK]"]
        pieces.append(piece)
        start = end
    return pieces


def _is_punctuation(char):
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _is_cjk(code):
    return (
        0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
        or 0x2A700 <= code <= 0x2B81F or 0x2B820 <= code <= 0x2CEAF or 0xF900 <= code <= 0xFAFF
        or 0x2F800 <= code <= 0x2FA1F
    )
