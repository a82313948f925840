"""Text encoders (``hf_text``, ``hashed_ngrams``) and their data-loader tokenizers, on a tiny
BERT written to disk and loaded back offline."""
import os
import shutil
import zlib

import pytest
import torch
from omegaconf import OmegaConf
from transformers import BertConfig, BertModel, BertTokenizer, ChineseCLIPConfig, ChineseCLIPModel

import mmf.datasets.processors  # noqa: F401  (registers the processors)
import mmf.modules  # noqa: F401  (registers the encoders)
from mmf.common.errors import CheckpointError, ConfigError
from mmf.common.registry import registry
from mmf.common.sample import SampleList
from mmf.utils.build import build_encoder, build_processors

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "red", "blue", "silk", "dress", "shoe",
         "##s", "live", "stream", "\u5546", "\u54c1", "\u88d9", "\u5b50"]
TINY = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=40)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    BertTokenizer(vocab=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(**TINY)).save_pretrained(folder)
    return str(folder)


def node(kind, **params):
    return OmegaConf.create({"type": kind, "params": params})


def tokenize(encoder_node, texts):
    """The ``text_tokenizer`` processor over ``texts``, collated into one batch."""
    config = OmegaConf.create({"text": node("text_tokenizer", encoder=encoder_node)})
    processors = build_processors(config)
    return SampleList([processors["text"]({"text": text}) for text in texts])


def test_hf_text_shapes_and_mean_pooling(tiny_bert):
    config = node("hf_text", model_dir=tiny_bert, max_length=12, pooling="mean")
    batch = tokenize(config, ["red silk dress", "Blue SHOES live stream", "\u5546\u54c1", None])
    assert batch.input_ids.shape == batch.attention_mask.shape == (4, 12)
    assert batch.has_text.tolist() == [True, True, True, False]
    assert batch.attention_mask.sum(1).tolist() == [5, 7, 4, 2]  # [CLS] ... [SEP]
    encoder = build_encoder(config)
    assert encoder.output_dim == 32
    encoder.eval()
    with torch.no_grad():
        pooled = encoder(batch)
        # By hand, on the full padded length (the encoder drops all-padding columns first).
        reference = BertModel.from_pretrained(tiny_bert, local_files_only=True).eval()
        hidden = reference(batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    assert pooled.shape == (4, 32) and pooled.dtype == torch.float32
    for row in range(4):
        length = int(batch.attention_mask[row].sum())
        torch.testing.assert_close(pooled[row], hidden[row, :length].mean(0), atol=1e-5, rtol=1e-5)
    cls = build_encoder(node("hf_text", model_dir=tiny_bert, max_length=12, pooling="cls")).eval()
    with torch.no_grad():
        torch.testing.assert_close(cls(batch), hidden[:, 0], atol=1e-5, rtol=1e-5)


def test_hf_text_max_length_caps_tokens(tiny_bert):
    config = node("hf_text", model_dir=tiny_bert, max_length=6)
    batch = tokenize(config, ["red blue silk dress shoe live stream red blue"])
    tokenizer = BertTokenizer.from_pretrained(tiny_bert, local_files_only=True)
    assert tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist()) == [
        "[CLS]", "red", "blue", "silk", "dress", "[SEP]"
    ]
    assert batch.attention_mask.tolist() == [[1] * 6]
    assert build_encoder(config)(batch).shape == (1, 32)
    with pytest.raises(ConfigError, match="max_length: 41 exceeds the model's 40 positions"):
        build_encoder(node("hf_text", model_dir=tiny_bert, max_length=41))


def test_hf_text_freeze_and_train(tiny_bert):
    frozen = build_encoder(node("hf_text", model_dir=tiny_bert, max_length=8, freeze=True))
    assert not any(p.requires_grad for p in frozen.parameters())
    frozen.train()
    assert frozen.training and not frozen.model.training  # dropout stays off
    batch = tokenize(node("hf_text", model_dir=tiny_bert, max_length=8), ["red dress", ""])
    assert not frozen(batch).requires_grad

    trained = build_encoder(node("hf_text", model_dir=tiny_bert, max_length=8)).train()
    assert trained.model.training
    trained(batch).square().sum().backward()
    grads = trained.model.embeddings.word_embeddings.weight.grad
    assert grads[VOCAB.index("red")].abs().sum() > 0
    assert grads[VOCAB.index("stream")].abs().sum() == 0
    assert all(p.grad is not None for p in trained.parameters())  # no unused pooler weights


def test_hf_text_text_tower_of_a_dual_model(tiny_bert, tmp_path):
    text = {k: v for k, v in TINY.items() if k != "vocab_size"}
    vision = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                  image_size=32, patch_size=16)
    dual = ChineseCLIPModel(ChineseCLIPConfig(text_config=dict(text, vocab_size=len(VOCAB)),
                                              vision_config=vision, projection_dim=16))
    dual.save_pretrained(tmp_path)
    BertTokenizer.from_pretrained(tiny_bert, local_files_only=True).save_pretrained(tmp_path)
    folder = str(tmp_path)
    config = node("hf_text", model_dir=folder, submodule="text_model", pooling="cls", max_length=8)
    encoder = build_encoder(config)
    assert encoder.output_dim == 32 and not hasattr(encoder.model, "vision_model")
    torch.testing.assert_close(encoder.model.embeddings.word_embeddings.weight,
                               dual.text_model.embeddings.word_embeddings.weight)
    assert encoder(tokenize(config, ["\u88d9\u5b50"])).shape == (1, 32)
    with pytest.raises(ConfigError, match="has no module 'text_tower'"):
        build_encoder(node("hf_text", model_dir=folder, submodule="text_tower", max_length=8))


def test_hf_text_checkpoint_checks(tiny_bert, tmp_path):
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(tiny_bert, name), tmp_path)
    BertModel(BertConfig(**TINY), add_pooling_layer=False).save_pretrained(tmp_path)
    assert build_encoder(node("hf_text", model_dir=str(tmp_path), max_length=8)).output_dim == 32
    BertConfig(**dict(TINY, num_hidden_layers=3)).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=r"weights missing for \['encoder\.layer\.2\."):
        build_encoder(node("hf_text", model_dir=str(tmp_path), max_length=8))


def test_hf_text_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="no-such-model"):
        build_encoder(node("hf_text", model_dir=str(tmp_path / "no-such-model")))
    with pytest.raises(ConfigError, match="model_dir: a local transformers folder is required"):
        build_encoder(node("hf_text"))
    with pytest.raises(ConfigError, match="no model"):
        build_encoder(node("hf_text", model_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="is not a text encoder"):
        tokenize(node("identity", in_dim=8), ["x"])


HASHED = dict(ngram_range=[1, 3], num_buckets=1000, dim=16, max_chars=20)


def test_hashed_ngrams_are_stable_across_processes():
    """Ids written down from another process (PYTHONHASHSEED=7): Python's salted ``hash()``
    would give other ids in every new process."""
    tokenizer = registry.get_encoder_class("hashed_ngrams").build_tokenizer(HASHED)
    assert tokenizer.ngram_ids("Silk \u5546\u54c1") == [
        340, 506, 535, 622, 948, 607,  # s i l k 商 品 (the blank unigram is skipped)
        503, 651, 373, 132, 500, 562,  # si il lk "k " " 商" 商品
        191, 967, 827, 727, 841,  # sil ilk "lk " "k 商" " 商品"
    ]
    ids = tokenizer({"text": "Silk \u5546\u54c1"})["ngram_ids"]
    assert ids.shape == (20 + 19 + 18,)
    assert ids[:17].tolist() == tokenizer.ngram_ids("silk \u5546\u54c1")
    assert ids[17:].eq(0).all()


def test_hashed_ngrams_chinese_empty_and_gradients():
    tokens = tokenize(node("hashed_ngrams", **HASHED), ["\u5546\u54c1\u88d9\u5b50", "", None, "  "])
    assert tokens.ngram_ids.shape == (4, 20 + 19 + 18)
    assert tokens.has_text.tolist() == [True, False, False, False]
    chinese = tokens.ngram_ids[0]
    assert int((chinese > 0).sum()) == 4 + 3 + 2  # uni-, bi- and trigrams of 4 characters
    assert zlib.crc32("\u5546\u54c1".encode("utf-8")) % 1000 + 1 in chinese.tolist()
    assert tokens.ngram_ids[1:].eq(0).all()
    upper = tokenize(node("hashed_ngrams", **HASHED), ["SILK  Dress"]).ngram_ids
    assert torch.equal(upper, tokenize(node("hashed_ngrams", **HASHED), ["silk dress"]).ngram_ids)

    encoder = build_encoder(node("hashed_ngrams", **HASHED))
    assert encoder.output_dim == 16
    out = encoder(tokens)
    assert out.shape == (4, 16) and torch.isfinite(out).all()
    assert out[1:].eq(0).all() and out[0].abs().sum() > 0
    out.sum().backward()
    grad = encoder.bag.weight.grad
    used = chinese[chinese > 0].unique()
    assert grad[used].abs().sum(1).gt(0).all() and grad[0].eq(0).all()
    with pytest.raises(ConfigError, match=r"ngram_range: expected \[min, max\]"):
        build_encoder(node("hashed_ngrams", ngram_range=[3, 1]))


def test_hashed_word_ngrams():
    """word_ngrams hashes whole words (and word pairs) apart from the characters; with
    ngram_range null only words count, so texts sharing a word share exactly one id."""
    words = dict(ngram_range=None, word_ngrams=2, num_buckets=1000, dim=16, max_chars=20)
    tokenizer = registry.get_encoder_class("hashed_ngrams").build_tokenizer(words)
    bucket = lambda gram: zlib.crc32(gram.encode("utf-8")) % 1000 + 1  # noqa: E731
    assert tokenizer.ngram_ids("Grey, soft \u5546\u54c1!") == [
        bucket("\x01grey"), bucket("\x01soft"), bucket("\x01\u5546\u54c1"),
        bucket("\x01grey soft"), bucket("\x01soft \u5546\u54c1"),
    ]
    assert tokenizer({"text": "a"})["ngram_ids"].shape == (10 + 9,)  # <= 10 words in 20 chars
    mixed = dict(HASHED, word_ngrams=1)
    chars = registry.get_encoder_class("hashed_ngrams").build_tokenizer(HASHED)
    both = registry.get_encoder_class("hashed_ngrams").build_tokenizer(mixed)
    assert both.ngram_ids("a b") == chars.ngram_ids("a b") + [bucket("\x01a"), bucket("\x01b")]
    encoder = build_encoder(node("hashed_ngrams", **words))
    out = encoder(tokenize(node("hashed_ngrams", **words), ["grey shirt", "grey scarf", "tea"]))
    assert out.shape == (3, 16) and out.abs().sum(1).gt(0).all()
    for bad, message in (
        (dict(word_ngrams=-1), "word_ngrams: expected an integer >= 0"),
        (dict(ngram_range=None), "leave no n-grams"),
    ):
        with pytest.raises(ConfigError, match=message):
            build_encoder(node("hashed_ngrams", **bad))


def test_bert_tokenizer_reads_a_saved_tokenizer_folder(tiny_bert, tmp_path):
    saved = tmp_path / "saved"
    BertTokenizer.from_pretrained(tiny_bert, local_files_only=True).save_pretrained(saved)
    assert not (saved / "vocab.txt").exists()  # transformers 5 writes tokenizer.json only
    config = node("bert_tokenizer", tokenizer_config={"type": str(saved)}, max_seq_length=8)
    processors = build_processors(OmegaConf.create({"text": config}))
    out = processors["text"]({"text": "Red shoes \u88d9"})
    assert out["tokens"] == ["[CLS]", "red", "shoe", "##s", "\u88d9", "[SEP]"]
    assert out["input_ids"].tolist() == [VOCAB.index(t) for t in out["tokens"]] + [0, 0]
    with pytest.raises(ConfigError, match="mask_probability"):
        build_processors(OmegaConf.create({"text": node(
            "bert_tokenizer", tokenizer_config={"type": str(saved)}, mask_probability=0.15
        )}))
