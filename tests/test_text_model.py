"""Text in RICE (model_config.rice.text): off = today's model; late fusion starts as plain
RICE; a tiny BERT and hashed n-grams train 2 updates through mmf_cli/run.py and round-trip
through lpr_eval.py (--text both / none); missing ASR and titles; the title-coverage
warning; MovingFashion refuses text; two gloo processes equal one."""
import copy
import glob
import hashlib
import json
import os
import types

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from omegaconf import OmegaConf
from test_datasets import dataset_config, write_movingfashion
from test_eval import _eval, _load, train_config, write_lpr
from test_rice_ddp import _tiny_rice
from test_text_encoders import tiny_bert  # noqa: F401  (the fixture)

from mmf.common.errors import ConfigError
from mmf.common.registry import registry
from mmf.common.sample import Sample, SampleList
from mmf.evaluation.text_coverage import coverage, coverage_lines
from mmf.utils.build import build_model
from mmf.utils.configuration import get_mmf_root, load_yaml, register_resolvers
from mmf.utils.env import setup_imports
from mmf_cli.run import main as train_main

HASHED = {"type": "hashed_ngrams", "params": {"dim": 16, "num_buckets": 997, "max_chars": 32}}
TEXT = {"encoder": HASHED, "fusion": ["late", "score", "tokens"], "inputs": "both",
        "pair_loss_weight": 0.5, "text_dropout": 0.0}
# sha1 of the sorted state-dict keys of each shipped config, built before text existed.
TODAY = {
    "movingfashion/configs/demo_vic_vim_rec.yaml": (282, "8c7ae2b584d02ddf"),
    "movingfashion/configs/e2e_pretraining_vic.yaml": (184, "1fd5f3f3cfa51a91"),
    "movingfashion/configs/e2e_pretraining_vic_vim.yaml": (185, "e3780f09c695aa39"),
    "movingfashion/configs/e2e_pretraining_vic_vim_rec.yaml": (189, "065cd2a304187628"),
    "videotoshop/configs/demo_vic.yaml": (277, "7fa43b2c84a664dd"),
    "videotoshop/configs/demo_vic_vim.yaml": (278, "9269b79fc859154d"),
    "videotoshop/configs/demo_vic_vim_rec.yaml": (282, "8c7ae2b584d02ddf"),
    "videotoshop/configs/demo_vic_vim_rec_bi.yaml": (282, "8c7ae2b584d02ddf"),
    "videotoshop/configs/e2e_pretraining_vic.yaml": (154, "ee9294480cfc0ea0"),
    "videotoshop/configs/e2e_pretraining_vic_vim.yaml": (185, "e3780f09c695aa39"),
    "videotoshop/configs/e2e_pretraining_vic_vim_rec.yaml": (189, "065cd2a304187628"),
}
REPO = get_mmf_root().parent


def _rice_node(path):
    register_resolvers()
    setup_imports()
    config = OmegaConf.merge(
        load_yaml(get_mmf_root() / "configs" / "defaults.yaml"),
        load_yaml(get_mmf_root() / "configs/models/rice/defaults.yaml"),
        load_yaml(path),
    )
    node = config.model_config.rice
    node.image_encoder.params.pretrained_model_name = None
    node.transformer_model.pretrained_model_name = None
    return OmegaConf.merge(OmegaConf.to_container(node, resolve=True), {"model": "rice"})


def test_text_off_keeps_every_shipped_config_state_dict():
    shipped = sorted(
        os.path.relpath(p, REPO / "projects")
        for p in glob.glob(str(REPO / "projects/*/configs/*.yaml"))
        if not p.endswith(("_text.yaml", "common.yaml", "demo_model.yaml"))
    )
    assert shipped == sorted(TODAY)
    for name in shipped:
        node = _rice_node(REPO / "projects" / name)
        assert node.text is None, name
        keys = sorted(build_model(node).state_dict())
        digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
        assert (len(keys), digest) == TODAY[name], name


def _text_batch(rows, seed=3):
    """Tokenized ASR / titles of ``rows`` items (some missing), as the dataset collates them."""
    tokenizer = registry.get_encoder_class("hashed_ngrams").build_tokenizer(
        OmegaConf.create(HASHED["params"])
    )
    words = ["red silk dress", "blue shoes", "", "leather bag", "gold ring", None, "tea cup"]
    asr = [tokenizer(words[(i + seed) % len(words)]) for i in range(rows)]
    title = [tokenizer(words[(2 * i + seed) % len(words)]) for i in range(rows)]
    return SampleList([Sample(a) for a in asr]), SampleList([Sample(t) for t in title])


def test_late_fusion_starts_as_plain_rice():
    plain = _tiny_rice()
    text = _tiny_rice(text={**TEXT, "fusion": ["late"]})
    assert set(plain.state_dict()) == {
        k for k in text.state_dict() if not k.startswith("text_fusion.")
    }
    image, video = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 3, 32, 32)
    mask = torch.ones(4, 3, dtype=torch.long)
    asr_tokens, title_tokens = _text_batch(4)
    with torch.no_grad():
        asr, title = text.encode_text(asr_tokens), text.encode_text(title_tokens)
        assert asr.present.tolist() == [True, True, False, True]
        for fused, base in (
            (text.encode_image(image, title)[0], plain.encode_image(image)[0]),
            (text.encode_video(video, mask, asr)[0], plain.encode_video(video, mask)[0]),
            (text.encode_image(image)[0], plain.encode_image(image)[0]),
        ):
            torch.testing.assert_close(fused, base, rtol=1e-6, atol=1e-6)
        text.text_fusion.gate["asr"].fill_(0.5)  # an open gate moves the clip embedding
        moved = text.encode_video(video, mask, asr)[0]
    assert (moved - plain.encode_video(video, mask)[0]).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="tokens adds the clip's ASR"):
        _tiny_rice(text={**TEXT, "inputs": "title", "pair_loss_weight": 0.0})
    with pytest.raises(ConfigError, match="text.encoder"):
        _tiny_rice(text={"fusion": ["late"]})


def test_score_fusion_adds_the_text_agreement_to_the_icl_score():
    """fusion score: clip [v ; w * u_asr] . image [i ; u_title] = v . i + w * cos(asr, title);
    w starts at 0 (plain RICE scores) and its gradient there is the text agreement; a
    missing ASR adds nothing, a missing title uses the learned "no title" vector."""
    plain = _tiny_rice()
    text = _tiny_rice(text={**TEXT, "fusion": ["score"]})
    fusion = text.text_fusion
    image, video = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 3, 32, 32)
    mask = torch.ones(4, 3, dtype=torch.long)
    asr_tokens, title_tokens = _text_batch(4)
    with torch.no_grad():
        asr, title = text.encode_text(asr_tokens), text.encode_text(title_tokens)
        assert asr.present.tolist() == [True, True, False, True]
        assert title.present.tolist() == [True, False, True, False]
        image_emb, video_emb = text.encode_image(image, title)[0], text.encode_video(
            video, mask, asr)[0]
        width = plain.encode_image(image)[0].shape[1]
        assert image_emb.shape == video_emb.shape == (4, 2 * width)
        visual = plain.encode_video(video, mask)[0] @ plain.encode_image(image)[0].T
        torch.testing.assert_close(video_emb @ image_emb.T, visual, rtol=1e-5, atol=1e-6)
        fusion.score_weight.fill_(2.0)
        image_emb, video_emb = text.encode_image(image, title)[0], text.encode_video(
            video, mask, asr)[0]
        u_asr = torch.nn.functional.normalize(fusion.proj["asr"](asr.vectors), dim=-1)
        u_title = torch.nn.functional.normalize(fusion.proj["title"](title.vectors), dim=-1)
        u_title[[1, 3]] = torch.nn.functional.normalize(fusion.no_text["title"], dim=-1)
        agreement = u_asr @ u_title.T
        agreement[2] = 0.0  # clip 2 has no ASR
        torch.testing.assert_close(
            video_emb @ image_emb.T, visual + 2.0 * agreement, rtol=1e-5, atol=1e-5
        )
    with pytest.raises(ConfigError, match="score compares ASR and titles"):
        _tiny_rice(text={**TEXT, "fusion": ["score"], "inputs": "asr", "pair_loss_weight": 0.0})
    with pytest.raises(ConfigError, match="contrastive head normalises"):
        _tiny_rice(training_head_type="contrastive", tasks=["vic"], tasks_sample_ratio=[1.0],
                   text={**TEXT, "fusion": ["score"]})


def test_text_projections_start_as_isometries_and_score_weight_init():
    """The text projections keep the encoder's cosines at the start (the n-gram overlap of
    hashed_ngrams); score_weight_init starts w there; it needs the score fusion."""
    text = _tiny_rice(text={**TEXT, "fusion": ["score"], "score_weight_init": 0.5})
    fusion = text.text_fusion
    assert fusion.score_weight.item() == 0.5
    width = fusion.encoder.output_dim
    asr, title = torch.randn(5, width), torch.randn(4, width)
    normalize = torch.nn.functional.normalize
    with torch.no_grad():
        u_asr, u_title = normalize(fusion.proj["asr"](asr)), normalize(fusion.proj["title"](title))
    torch.testing.assert_close(u_asr @ u_title.T, normalize(asr) @ normalize(title).T,
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="score_weight_init is the start of the score"):
        _tiny_rice(text={**TEXT, "fusion": ["late"], "score_weight_init": 0.5})


def test_detach_visual_trains_the_images_as_plain_rice():
    """detach_visual: the head's ICL sees the visual embeddings alone (vic_loss equals plain
    RICE's with the same weights) and text_score_loss, ICL over the fused scores, sends no
    gradient to the image encoder or the logit scale, only to w and the text."""
    torch.manual_seed(0)
    plain = _tiny_rice(tasks=["vic"], tasks_sample_ratio=[1.0])
    text = _tiny_rice(tasks=["vic"], tasks_sample_ratio=[1.0], text={
        **TEXT, "fusion": ["score"], "pair_loss_weight": 0.0, "detach_visual": True,
        "score_weight_init": 0.5})
    text.load_state_dict({**text.state_dict(), **plain.state_dict()})
    g = torch.Generator().manual_seed(5)
    asr, title = _text_batch(4)
    batch = {"image": torch.randn(4, 3, 32, 32, generator=g),
             "video": torch.randn(4, 3, 3, 32, 32, generator=g),
             "video_temporal_mask": torch.ones(4, 3, dtype=torch.long)}
    plain.train(), text.train()
    expected = plain(SampleList(dict(batch)))["losses"]["vic_loss"]
    losses = text(SampleList({**batch, "asr_tokens": asr, "title_tokens": title}))["losses"]
    assert set(losses) == {"vic_loss", "text_score_loss"}
    torch.testing.assert_close(losses["vic_loss"], expected)
    losses["text_score_loss"].backward()
    grads = {n: p.grad for n, p in text.named_parameters() if p.grad is not None}
    assert grads["text_fusion.score_weight"].abs() > 0
    assert not any(n.startswith(("image_encoder.", "transformer.")) for n in grads), sorted(grads)
    with pytest.raises(ConfigError, match="detach_visual keeps text out"):
        _tiny_rice(text={**TEXT, "fusion": ["late", "score"], "detach_visual": True})


def test_text_lr_multiplier_and_unknown_keys():
    """text.lr_multiplier scales the text parameters' lr on top of the head's; an unknown key
    under model_config.rice.text is an error, not a silent no-op."""
    model = _tiny_rice(lr_multiplier=10, text={**TEXT, "lr_multiplier": 5})
    config = OmegaConf.create({"optimizer": {"params": {"lr": 1e-4, "weight_decay": 0.1}}})
    lr_of = {name: group["lr"] for group in model.get_optimizer_parameters(config)
             for name in group["names"]}
    assert lr_of["text_fusion.score_weight"] == pytest.approx(5e-3)
    assert lr_of["text_fusion.encoder.bag.weight"] == pytest.approx(5e-3)
    assert lr_of["transformer.logit_scale"] == pytest.approx(1e-4)
    assert any(lr == pytest.approx(1e-3) for name, lr in lr_of.items()
               if name.startswith("transformer.heads"))
    with pytest.raises(ConfigError, match=r"unknown keys \['text_dropuot'\]"):
        _tiny_rice(text={**TEXT, "text_dropuot": 0.3})
    with pytest.raises(ConfigError, match="lr_multiplier must be > 0"):
        _tiny_rice(text={**TEXT, "lr_multiplier": 0})


def _write_text_files(data_dir, titles_for):
    """ASR for every query clip but one (blank) and titles for the gallery images
    ``titles_for(image_id, is_ground_truth)`` picks."""
    ann = os.path.join(data_dir, "annotations")
    with open(os.path.join(ann, "query_tenframes.json")) as handle:
        queries = json.load(handle)
    lines = [f"{clip}\t{'' if n == 0 else 'this one is ' + info['gt'][0][:4]}"
             for n, (clip, info) in enumerate(sorted(queries.items()))]
    with open(os.path.join(ann, f"test_videoid_asr_{len(lines)}.txt"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    truth = {gt for info in queries.values() for gt in info["gt"]}
    with open(os.path.join(ann, "gallery_main.txt")) as handle:
        images = [os.path.splitext(line.strip().split("/")[1])[0]
                  for line in handle if line.strip()]
    titles = [f"{i}\ttitle of {i}" for i in images if titles_for(i, i in truth)]
    with open(os.path.join(ann, f"test_image_title_{len(titles)}.txt"), "w") as handle:
        handle.write("\n".join(titles) + "\n")


def _train(root, text, name):
    data_dir, save_dir = str(root / "data"), str(root / "save" / name)
    if not os.path.isdir(data_dir):
        write_lpr(data_dir)
        _write_text_files(data_dir, lambda image_id, truth: image_id.endswith(("1", "2")))
    config = train_config(data_dir, save_dir)
    config["training"]["experiment_name"] = name
    rice = config["model_config"]["rice"]
    rice.update(tasks=["vic", "vim", "rec"], tasks_sample_ratio=[0.4, 0.3, 0.3], text=text)
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    train_main([f"config={path}", "model=rice", "dataset=videotoshop"])
    with open(os.path.join(save_dir, "train.log")) as handle:
        log = handle.read()
    return os.path.join(save_dir, "config.yaml"), log


def test_hashed_ngrams_trains_and_round_trips_through_lpr_eval(tmp_path, capsys):
    config, log = _train(tmp_path, dict(TEXT, text_dropout=0.3), "hashed")
    assert "text_pair_loss" in log and "progress: 2/2" in log
    state = torch.load(os.path.dirname(config) + "/rice_final.pth", weights_only=True)
    assert "text_fusion.encoder.bag.weight" in state and "text_fusion.asr_key.weight" in state
    outputs = {}
    for text in ("both", "none"):
        out = str(tmp_path / f"out_{text}")
        code, output = _eval(["--config_file", config, "--out", out, "--text", text,
                              "--rerank_topk", "2", "--visualize", "1"], capsys)
        assert code == 0, output.err
        metrics, _ = _load(out)
        outputs[text] = torch.load(os.path.join(out, "embeddings.pt"), weights_only=True)
        section = metrics["text"]
        assert section["sides"] == (["asr", "title"] if text == "both" else [])
        cover = section["coverage"]
        assert cover["queries_with_asr"]["with_text"] == 5  # 6 clips, one blank ASR
        assert cover["gallery_with_title"] == {"count": 8, "with_text": 4, "percent": 50.0}
        assert not cover["title_leak"] and "text: " in output.out
        assert glob.glob(os.path.join(out, "visualize", "query_*.png"))
    # Text moves the trained model's embeddings; none feeds the "no text" vectors instead.
    assert (outputs["both"]["query_emb"] - outputs["none"]["query_emb"]).abs().max() > 1e-5
    with pytest.raises(SystemExit):
        _eval(["--config_file", config, "--text", "sideways"])


def test_tiny_bert_trains_and_evaluates(tiny_bert, tmp_path, capsys):  # noqa: F811
    encoder = {"type": "hf_text", "params": {"model_dir": tiny_bert, "max_length": 12}}
    text = {"encoder": encoder, "fusion": ["late"], "inputs": "asr", "text_dropout": 0.5}
    config, log = _train(tmp_path, text, "bert")
    assert "progress: 2/2" in log and "text_pair_loss" not in log
    state = torch.load(os.path.dirname(config) + "/rice_final.pth", weights_only=True)
    assert any(k.startswith("text_fusion.encoder.model.") for k in state)
    assert "text_fusion.gate.asr" in state and "text_fusion.gate.title" not in state
    code, output = _eval(["--config_file", config, "--out", str(tmp_path / "o")], capsys)
    assert code == 0, output.err
    code, output = _eval(["--config_file", config, "--out", str(tmp_path / "t"),
                          "--text", "title"], capsys)
    assert code == 1 and "does not read ['title']" in output.err


def _fake_data(truth_titles, other_titles, count=12):
    truth = [f"gt{i}" for i in range(count)]
    other = [f"o{i}" for i in range(count)]
    records = [types.SimpleNamespace(image_id=i) for i in truth + other]
    title = {i: "a title" for i in truth[:truth_titles] + other[:other_titles]}
    queries = [types.SimpleNamespace(video_id=f"q{i}") for i in range(count)]
    return types.SimpleNamespace(
        query_dataset=types.SimpleNamespace(records=queries, asr={"q0": "hi", "q1": " "}),
        gallery_dataset=types.SimpleNamespace(records=records, title=title),
        ground_truth={f"q{i}": [f"gt{i}.jpg"] for i in range(count)},
    )


def test_coverage_warning_fires_when_only_ground_truth_images_have_titles():
    leaky = coverage(_fake_data(12, 0))
    assert leaky["ground_truth_with_title"]["percent"] == 100.0
    assert leaky["other_gallery_with_title"]["percent"] == 0.0
    assert leaky["queries_with_asr"]["with_text"] == 1 and leaky["title_leak"]
    lines = coverage_lines({"sides": ["asr", "title"], "coverage": leaky,
                            "asr_only": {"r@1": 50.0, "r@5": 75.0, "r@10": 100.0, "map": 60.0}})
    assert any("may leak the answer" in line for line in lines)
    assert any("asr-only result beside it: R@1 50.00" in line for line in lines)
    assert not coverage(_fake_data(6, 5))["title_leak"]  # 50 % vs 42 %: within 10 points
    assert not coverage(_fake_data(5, 0, count=5))["title_leak"]  # too few images to tell


def test_leak_warning_reports_the_asr_result_beside(tmp_path, capsys):
    data_dir = str(tmp_path / "data")
    write_lpr(data_dir)
    _write_text_files(data_dir, lambda image_id, truth: truth)
    root = tmp_path
    config, _ = _train(root, TEXT, "leak")
    import mmf.evaluation.text_coverage as text_coverage

    minimum = text_coverage.LEAK_MIN_IMAGES
    text_coverage.LEAK_MIN_IMAGES = 2  # the fixture's galleries are small
    try:
        code, output = _eval(["--config_file", config, "--out", str(tmp_path / "o")], capsys)
    finally:
        text_coverage.LEAK_MIN_IMAGES = minimum
    assert code == 0, output.err
    metrics, _ = _load(str(tmp_path / "o"))
    assert metrics["text"]["coverage"]["title_leak"]
    assert metrics["text"]["coverage"]["ground_truth_with_title"]["percent"] == 100.0
    assert "r@1" in metrics["text"]["asr_only"]
    assert "may leak the answer" in output.out and "asr-only result beside it" in output.out


def _lpr_text_config(data_dir, **text):
    node = dataset_config("videotoshop", data_dir, **{
        "annotations.train": ["annotations/training_videoinfo_tiny.txt"],
    })
    node.text = OmegaConf.create({**TEXT, **text})
    return node


def test_missing_asr_and_title_values_are_empty_texts(tmp_path):
    data_dir = str(tmp_path / "data")
    write_lpr(data_dir)
    _write_text_files(data_dir, lambda image_id, truth: image_id.endswith("1"))
    path = os.path.join(data_dir, "annotations/training_videoinfo_tiny.txt")
    with open(path) as handle:
        lines = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    lines[0][4], lines[0][7] = "", "  "  # no title, blank ASR
    with open(path, "w") as handle:
        handle.write("\n".join("\t".join(columns) for columns in lines) + "\n")
    builder = registry.get_builder_class("videotoshop")()
    node = _lpr_text_config(data_dir)
    train = builder.load_dataset(node, "train")
    first, second = train[0], train[1]
    assert not first.asr_tokens["has_text"] and not first.title_tokens["has_text"]
    assert int(first.asr_tokens["ngram_ids"].count_nonzero()) == 0
    assert second.asr_tokens["has_text"] and second.title_tokens["has_text"]
    queries, gallery = builder.load_query(node), builder.load_gallery(node)
    query_has = [bool(queries[i].asr_tokens["has_text"]) for i in range(len(queries))]
    assert sorted(query_has) == [False] + [True] * 5
    titled = {r.image_id: bool(gallery[n].title_tokens["has_text"])
              for n, r in enumerate(gallery.records)}
    assert titled == {i: i.endswith("1") for i in titled}
    # No title file at all: every image has the empty title, no error.
    for name in glob.glob(os.path.join(data_dir, "annotations/test_image_title_*.txt")):
        os.remove(name)
    gallery = builder.load_gallery(node)
    assert not any(bool(gallery[n].title_tokens["has_text"]) for n in range(len(gallery)))
    # inputs: asr yields no title field; text_dropout 1 - eps drops (almost) every train text.
    asr_only = builder.load_dataset(_lpr_text_config(data_dir, inputs="asr", fusion=["late"],
                                                     pair_loss_weight=0.0), "train")
    assert "title_tokens" not in asr_only[1] and "asr_tokens" in asr_only[1]
    dropped = builder.load_dataset(_lpr_text_config(data_dir, text_dropout=0.999), "train")
    assert not dropped[1].asr_tokens["has_text"]


def test_val_split_reads_its_own_asr_and_titles(tmp_path):
    """A val split in the test form (query json + gallery txt) reads val_asr_file and
    val_title_file, never the test split's texts; without val files its texts are empty."""
    data_dir = str(tmp_path / "data")
    write_lpr(data_dir)
    _write_text_files(data_dir, lambda image_id, truth: True)
    node = _lpr_text_config(data_dir)
    node.annotations.val = ["annotations/query_tenframes.json", "annotations/gallery_main.txt"]
    node.images.val = ["query", "gallery"]
    builder = registry.get_builder_class("videotoshop")()
    queries, gallery = builder.load_query(node, "val"), builder.load_gallery(node, "val")
    assert queries.asr == {} and gallery.title == {}
    ann = os.path.join(data_dir, "annotations")
    clips = sorted(r.video_id for r in queries.records)
    with open(os.path.join(ann, "val_videoid_asr_6.txt"), "w") as handle:
        handle.write("".join(f"{clip}\tval words {n}\n" for n, clip in enumerate(clips)))
    with open(os.path.join(ann, "val_image_title_1.txt"), "w") as handle:
        handle.write(f"{gallery.records[0].image_id}\tval title\n")
    queries, gallery = builder.load_query(node, "val"), builder.load_gallery(node, "val")
    assert queries.asr == {clip: f"val words {n}" for n, clip in enumerate(clips)}
    assert gallery.title == {gallery.records[0].image_id: "val title"}
    assert builder.load_query(node, "test").asr[clips[1]].startswith("this one is")


def test_text_model_on_movingfashion_is_a_config_error(tmp_path):
    root = tmp_path / "mf"
    write_movingfashion(root)
    node = dataset_config("movingfashion", root)
    node.text = OmegaConf.create(TEXT)
    with pytest.raises(ConfigError, match="movingfashion has no ASR or titles"):
        registry.get_builder_class("movingfashion")().load_dataset(node, "train")


WORLD_SIZE, LOCAL_BATCH = 2, 3


def _ddp_compute(model, rows):
    g = torch.Generator().manual_seed(11)
    batch = WORLD_SIZE * LOCAL_BATCH
    image, video = torch.randn(batch, 3, 32, 32, generator=g), torch.randn(batch, 3, 3, 32, 32,
                                                                           generator=g)
    mask = torch.ones(batch, 3, dtype=torch.long)
    mask[2, 1:] = 0
    asr, title = _text_batch(batch)
    sample = SampleList({
        "image": image[rows], "video": video[rows], "video_temporal_mask": mask[rows],
        "asr_tokens": SampleList({k: v[rows] for k, v in asr.items()}),
        "title_tokens": SampleList({k: v[rows] for k, v in title.items()}),
    })
    model.train()
    model.text_fusion.gate["asr"].data.fill_(0.3)  # open gates: text reaches every loss
    model.text_fusion.gate["title"].data.fill_(-0.2)
    losses = model(sample)["losses"]
    sum(losses.values()).backward()
    grads = {n: p.grad / get_world() for n, p in model.named_parameters() if p.grad is not None}
    return {"losses": {k: v.detach() for k, v in losses.items()}, "grads": grads}


def get_world():
    return dist.get_world_size() if dist.is_initialized() else 1


def _text_rice():
    overrides = {"tasks": ["vic", "vim", "rec"], "tasks_sample_ratio": [0.4, 0.3, 0.3],
                 "text": copy.deepcopy(TEXT),
                 "transformer_model": {"attention_probs_dropout_prob": 0.0}}
    return _tiny_rice(**overrides)


def _ddp_worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD_SIZE)
    try:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        torch.save(_ddp_compute(_text_rice(), rows), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(180)
def test_text_losses_and_gradients_two_gloo_processes_equal_one(tmp_path):
    setup_imports()
    mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)),
                       nprocs=WORLD_SIZE, join=True, start_method="fork")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD_SIZE)]
    single = _ddp_compute(_text_rice(), slice(0, WORLD_SIZE * LOCAL_BATCH))
    assert set(single["losses"]) == {"vic_loss", "vim_loss", "rec_loss", "text_pair_loss"}
    for name, value in single["losses"].items():
        mean = sum(r["losses"][name] for r in ranks) / WORLD_SIZE
        torch.testing.assert_close(mean, value, rtol=1e-4, atol=1e-6)
    assert any(n.startswith("text_fusion.asr_key") for n in single["grads"])
    for name, grad in single["grads"].items():
        summed = sum(r["grads"][name] for r in ranks)  # DDP all-reduces the mean of grad / W
        torch.testing.assert_close(summed, grad, rtol=1e-3, atol=1e-5, msg=name)
