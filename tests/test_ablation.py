"""scripts/ablation.py and the table / picture helpers of scripts/demo.py."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from mmf.utils.configuration import Configuration

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scripts():
    """(ablation, demo, demo_pictures) modules; they import each other from scripts/."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        yield _load("ablation"), _load("demo"), _load("demo_pictures")
    finally:
        sys.path.remove(str(SCRIPTS))


def _metrics(r1, r5, r10, map_):
    return {"r@1": r1, "r@5": r5, "r@10": r10, "map": map_}


def test_mean_spread(scripts):
    ablation, _, _ = scripts
    assert ablation.mean_spread([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert ablation.mean_spread([4.0]) == (4.0, 0.0)


def test_ablation_table_mean_and_spread(scripts):
    ablation, demo, _ = scripts
    results = {
        "vic": [
            {"icl": _metrics(40.0, 70.0, 80.0, 50.0)},
            {"icl": _metrics(50.0, 80.0, 90.0, 60.0)},
        ],
        "vic_vim": [
            {
                "icl": _metrics(44.0, 74.0, 84.0, 54.0),
                "pmd": {**_metrics(30.0, 60.0, 84.0, 40.0), "r1_change": -14.0},
                "sum": {**_metrics(46.0, 75.0, 84.0, 55.0), "r1_change": 2.0, "rerank_weight": 0.5},
            },
            {
                "icl": _metrics(46.0, 76.0, 86.0, 56.0),
                "pmd": {**_metrics(34.0, 64.0, 86.0, 44.0), "r1_change": -12.0},
                "sum": {**_metrics(50.0, 77.0, 86.0, 59.0), "r1_change": 4.0, "rerank_weight": 1.0},
            },
        ],
    }
    lines = ablation.ablation_table(results, demo.LABELS, 10).splitlines()
    assert lines[0] == "| model | R@1 | R@5 | R@10 | mAP | R@1 vs ICL |"
    assert len(lines) == 2 + 1 + 3
    # mean of (40, 50) = 45, sample sd = 7.07
    assert lines[2] == "| ICL | 45.0 ± 7.1 | 75.0 ± 7.1 | 85.0 ± 7.1 | 55.0 ± 7.1 |  |"
    assert lines[3].startswith("| ICL + PMD | 45.0 ± 1.4 |")
    assert lines[4].startswith("| ICL + PMD, PMD re-rank of the top 10 | 32.0 ± 2.8 |")
    assert lines[4].endswith("| -13.0 ± 1.4 |")
    assert "(beta on val: 0.5/1)" in lines[5]
    assert lines[5].endswith("| 48.0 ± 2.8 | 76.0 ± 1.4 | 85.0 ± 1.4 | 57.0 ± 2.8 | +3.0 ± 1.4 |")


def test_rows_of_run_reads_the_paired_change(scripts):
    ablation, _, _ = scripts
    section = {**_metrics(50.0, 75.0, 100.0, 60.0), "rerank_topk": 10, "rerank_weight": 0.5}
    section["r@1_vs_icl"] = {"difference": 25.0, "ci95": [0.0, 50.0]}
    metrics = {"icl": _metrics(25.0, 75.0, 100.0, 50.0), "pmd_rerank": section}
    rows = ablation.rows_of_run("sum", metrics)
    assert rows["icl"] == _metrics(25.0, 75.0, 100.0, 50.0)
    assert rows["sum"] == {**_metrics(50.0, 75.0, 100.0, 60.0), "r1_change": 25.0,
                           "rerank_weight": 0.5}
    assert ablation.rows_of_run("icl", {"icl": metrics["icl"]}) == {"icl": rows["icl"]}
    assert ablation.evaluations("vic", 10) == [("icl", [])]
    assert [name for name, _ in ablation.evaluations("vic_vim_rec_bi", 10)] == ["pmd", "sum"]


def test_describe_change_marks_intervals_that_hold_zero(scripts):
    _, demo, _ = scripts
    assert demo.describe_change((2.0, 0.4, 3.8)) == "+2.0 [+0.4, +3.8]"
    assert demo.describe_change((-3.0, -5.0, -1.0)) == "-3.0 [-5.0, -1.0]"
    assert demo.describe_change((0.5, -1.0, 2.0)) == "no difference (+0.5 [-1.0, +2.0])"


def test_recall_curve_and_query_spread(scripts):
    _, _, pictures = scripts
    rankings = {q: {"rank": r} for q, r in zip("abcd", (1, 3, None, 10), strict=True)}
    assert pictures.recall_curve(rankings, (1, 3, 9, 10)) == [25.0, 50.0, 50.0, 75.0]
    assert pictures.spread_queries(list("fedcba"), 3) == ["a", "c", "e"]


def test_pictures_from_demo_files(scripts, tmp_path):
    """Both PNGs drawn from a tiny LPR4M-layout folder and rankings.jsonl files."""
    _, _, pictures = scripts
    lpr4m = tmp_path / "lpr4m"
    live, clip = "live0", "live0-1-2"
    (lpr4m / "annotations").mkdir(parents=True)
    (lpr4m / "query" / clip).mkdir(parents=True)
    (lpr4m / "gallery" / live).mkdir(parents=True)
    frames = [f"{clip}/{clip}-{i:04d}.jpg" for i in range(3)]
    for index, frame in enumerate(frames):
        Image.new("RGB", (32, 40), (index * 80, 0, 0)).save(lpr4m / "query" / frame)
    images = [f"img{i}" for i in range(6)]
    for index, image_id in enumerate(images):
        image = Image.new("RGB", (32, 32), (0, index * 40, 0))
        image.save(lpr4m / "gallery" / live / f"{image_id}.jpg")
    (lpr4m / "annotations" / "query_tenframes.json").write_text(
        json.dumps({clip: {"frames": frames, "gt": ["img2"]}})
    )
    (lpr4m / "annotations" / "test_frameid2gtbox_1_1.json").write_text(
        json.dumps({f"{clip}-0002": [[0, 0, 5, 5]]})
    )
    assert pictures.shown_frame(lpr4m, clip, frames) == lpr4m / "query" / frames[2]
    lines = {
        "before": {"video_id": clip, "live_id": live, "gt": ["img2"], "rank": 3},
        "after": {"video_id": clip, "live_id": live, "gt": ["img2"], "rank": 1},
    }
    lines["before"]["topk"] = [[i, 0.1] for i in images]
    lines["after"]["topk"] = [[i, 0.1] for i in ["img2", *images[:2], *images[3:]]]
    runs = []
    for name, line in lines.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(line) + "\n")
        runs.append((name, pictures.read_rankings(path)))
    assert runs[1][1][clip]["rank"] == 1
    pictures.plot_before_after(tmp_path / "before_after.png", lpr4m, runs, count=6)
    pictures.plot_recall_at_k(
        tmp_path / "recall.png", [("chance", [10.0] * 10), ("trained", [50.0] * 10)], "t"
    )
    for name in ("before_after.png", "recall.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG" and picture.width > 200


def test_demo_table_carries_intervals_and_the_rerank_change(scripts):
    _, demo, _ = scripts
    icl = {"r@1": 40.0, "r@3": 55.0, "r@5": 60.0, "r@10": 70.0, "map": 50.0}
    icl.update({"r@1_ci95": [35.0, 45.0], "map_ci95": [46.0, 54.0]})
    rerank = {**icl, "r@1": 41.0, "rerank_topk": 10, "rerank_fusion": "sum", "rerank_weight": 0.5}
    rerank["r@1_vs_icl"] = {"difference": 2.0, "ci95": [0.5, 3.5]}
    rows, notes = demo.trained_rows("RICE", {"icl": icl, "pmd_rerank": rerank})
    assert notes == []
    chance = ("chance", {"r@1": 1.5, "r@3": 4.5, "r@5": 7.5, "r@10": 15.0, "map": None}, None)
    lines = demo.table([chance, *rows]).splitlines()
    assert lines[2] == "| chance | 1.5 | 4.5 | 7.5 | 15.0 | - |  |"
    assert lines[3] == (
        "| RICE, trained | 40.0 [35.0, 45.0] | 55.0 | 60.0 | 70.0 | 50.0 [46.0, 54.0] |  |"
    )
    assert lines[4].startswith("| RICE, + re-rank of top 10 (sum, beta 0.5) | 41.0 [35.0, 45.0] |")
    assert lines[4].endswith("| +2.0 [+0.5, +3.5] |")


def test_demo_leaves_out_a_rerank_row_that_does_not_help(scripts):
    _, demo, _ = scripts
    icl = {"r@1": 40.0, "r@3": 55.0, "r@5": 60.0, "r@10": 70.0, "map": 50.0}
    rerank = {**icl, "r@1": 41.0, "rerank_topk": 10, "rerank_fusion": "pmd"}
    rerank["r@1_vs_icl"] = {"difference": 1.0, "ci95": [-0.5, 2.5]}
    rows, notes = demo.trained_rows("RICE", {"icl": icl, "pmd_rerank": rerank})
    assert [name for name, _, _ in rows] == ["RICE, trained"]
    assert notes == [
        "RICE, + re-rank of top 10 (pmd): R@1 vs ICL no difference (+1.0 [-0.5, +2.5]); it does "
        "not help, so its row is left out (scripts/ablation.py measures every re-ranking)."
    ]


def test_text_and_box_rows_of_the_table(scripts):
    """--text adds "+ text" and "--text none" rows under each variant, --boxes the
    box_mode rows with none / gt / detector boxes; labels come from the runs."""
    ablation, demo, _ = scripts
    zero = _metrics(0.0, 0.0, 0.0, 0.0)
    results = {
        "vic": [{"icl": _metrics(40.0, 70.0, 80.0, 50.0)}, {"icl": _metrics(42.0, 72.0, 82.0, 0)}],
        "vic+text": [
            {"icl": _metrics(50.0, 80.0, 90.0, 60.0), "text_none": _metrics(38.0, 68.0, 78.0, 0)},
            {"icl": _metrics(54.0, 84.0, 94.0, 64.0), "text_none": _metrics(40.0, 70.0, 80.0, 0)},
        ],
        "vic_vim_rec+crop": [
            {"boxes_none": zero, "boxes_gt": _metrics(60.0, 90.0, 95.0, 70.0),
             "boxes_pred": _metrics(55.0, 85.0, 90.0, 65.0)},
        ],
    }
    labels = {**demo.LABELS, "vic+text": "ICL + text", "vic_vim_rec+crop": "RICE, box_mode crop"}
    lines = ablation.ablation_table(results, labels, 10).splitlines()
    assert len(lines) == 2 + 1 + 2 + 3
    assert lines[2].startswith("| ICL | 41.0 ± 1.4 |")
    assert lines[3] == (
        "| ICL + text | 52.0 ± 2.8 | 82.0 ± 2.8 | 92.0 ± 2.8 | 62.0 ± 2.8 |  |"
    )
    assert lines[4].startswith("| ICL + text, evaluated without text (--text none) | 39.0 ± 1.4 |")
    assert lines[5] == "| RICE, box_mode crop, no boxes (--boxes none) | 0.0 ± 0.0 | 0.0 ± 0.0 " \
        "| 0.0 ± 0.0 | 0.0 ± 0.0 |  |"
    assert lines[6].startswith("| RICE, box_mode crop, ground-truth boxes (--boxes gt) | 60.0 ± ")
    assert lines[7].startswith("| RICE, box_mode crop, detector boxes | 55.0 ± 0.0 |")
    metrics = {"icl": _metrics(30.0, 60.0, 70.0, 40.0)}
    assert ablation.rows_of_run("text_none", metrics) == {"text_none": metrics["icl"]}
    assert ablation.rows_of_run("boxes_gt", metrics) == {"boxes_gt": metrics["icl"]}


def test_text_changes_pair_each_text_run_with_its_variant(scripts, tmp_path):
    """The lines under the table: the paired R@1 change of a text run (with and without its
    texts) from the same variant and seed trained without text, from rankings.jsonl."""
    ablation, demo, _ = scripts
    ranks = [1] * 30 + [None] + [2] * 69  # 30 of 100 queries ranked first, one missed
    (tmp_path / "rankings.jsonl").write_text("".join(
        json.dumps({"video_id": f"q{n}", "rank": rank}) + "\n" for n, rank in enumerate(ranks)))
    base = demo.read_rankings(tmp_path / "rankings.jsonl")
    better = {q: {"rank": 1 if int(q[1:]) < 60 else 3} for q in base}  # +30 points
    assert demo.r1_change_between(better, base).difference == pytest.approx(30.0)
    results = {
        "vic": [{"icl": {"rankings": base}}],
        "vic+text": [{"icl": {"rankings": better}, "text_none": {"rankings": dict(base)}}],
    }
    lines = ablation.text_changes(results, {**demo.LABELS, "vic+text": "ICL + text"}).split("\n\n")
    assert lines[0].startswith("ICL + text, with its texts: R@1 change from ICL per seed: +30.0 [")
    assert lines[1] == ("ICL + text, with --text none: R@1 change from ICL per seed: "
                        "no difference (+0.0 [+0.0, +0.0]).")
    assert ablation.text_changes({"vic": results["vic"]}, demo.LABELS) == ""
    # Two seeds: each query counts its mean R@1 over them (+30 and +0 -> +15).
    same = {"icl": {"rankings": base}, "text_none": {"rankings": base}}
    two = {"vic": results["vic"] * 2, "vic+text": [results["vic+text"][0], same]}
    lines = ablation.text_changes(two, {**demo.LABELS, "vic+text": "ICL + text"}).split("\n\n")
    assert "; over the 2 seeds +15.0 [" in lines[0]


def test_plan_runs_of_the_text_and_box_options(scripts, tmp_path):
    ablation, _, _ = scripts
    args = ablation.parse_args(["--variants", "vic", "vic_vim", "--text", "--boxes"])
    runs = ablation.plan_runs(args, tmp_path / "boxes.json")
    assert [run.key for run in runs] == [
        "vic", "vic+text", "vic_vim", "vic_vim+text", "vic_vim_rec+crop", "vic_vim_rec+patch_mask"
    ]
    plain, text = runs[2], runs[3]
    assert plain.suffix == "" and not plain.overrides
    assert [name for name, _ in plain.evaluations] == ["pmd", "sum"]
    assert text.variant == "vic_vim" and text.suffix == "_text"
    assert text.evaluations == (("icl", ()), ("text_none", ("--text", "none")))
    crop = runs[4]
    assert crop.variant == "vic_vim_rec" and crop.overrides == ("model_config.rice.box_mode=crop",)
    assert runs[5].overrides == (
        "model_config.rice.box_mode=patch_mask",
        "model_config.rice.image_encoder.params.token_stage=null",
    )
    assert crop.evaluations[1:] == (
        ("boxes_gt", ("--boxes", "gt")), ("boxes_pred", ("--boxes", str(tmp_path / "boxes.json")))
    )
    assert [run.key for run in ablation.plan_runs(ablation.parse_args([]))] == list(
        ablation.VARIANTS
    )
    with pytest.raises(SystemExit):
        ablation.parse_args(["--pred_boxes", "x.json"])


def test_text_override_gives_a_variant_the_text_config(scripts, tmp_path):
    """The override built from demo_vic_vim_rec_text.yaml, applied to demo_vic.yaml, gives
    the model and the dataset the text settings of that file."""
    ablation, demo, _ = scripts
    base = ["model=rice", "dataset=videotoshop", f"env.data_dir={tmp_path}"]
    config = Configuration(
        [f"config={demo.CONFIGS / 'demo_vic_vim.yaml'}", *base, ablation.text_override("vic_vim"),
         "model_config.rice.box_mode=patch_mask"]
    ).get_config()
    reference = Configuration([f"config={ablation.TEXT_CONFIG}", *base]).get_config()
    text = OmegaConf.to_container(config.model_config.rice.text, resolve=True)
    assert text["encoder"]["type"] == "hashed_ngrams" and text["fusion"] == ["score"]
    assert text == OmegaConf.to_container(reference.model_config.rice.text, resolve=True)
    assert OmegaConf.to_container(config.dataset_config.videotoshop.text, resolve=True) == text
    assert config.model_config.rice.tasks == ["vic", "vim"]
    assert config.dataset_config.videotoshop.box_mode == "patch_mask"
    with_tokens = tmp_path / "tokens.yaml"
    with_tokens.write_text("model_config: {rice: {text: {encoder: {type: hashed_ngrams}, "
                           "fusion: [score, tokens]}}}")
    vic = Configuration([f"config={demo.CONFIGS / 'demo_vic.yaml'}", *base,
                         ablation.text_override("vic", with_tokens)]).get_config()
    assert list(vic.model_config.rice.text.fusion) == ["score"]  # no cross model to join


def test_demo_trains_the_text_variant_and_notes_its_change(scripts):
    _, demo, _ = scripts
    assert demo.parse_args([]).variants == ["vic_vim_rec", "vic_vim_rec_text"]
    assert demo.parse_args(["--no_text"]).variants == ["vic_vim_rec"]
    assert (demo.CONFIGS / f"demo_{demo.TEXT_VARIANT}.yaml").is_file()
    rice = {f"q{n}": {"rank": 1 if n < 10 else 2} for n in range(40)}
    text = {f"q{n}": {"rank": 1 if n < 30 else 2} for n in range(40)}
    (note,) = demo.text_notes(["vic_vim_rec", "vic_vim_rec_text"], [rice, text])
    assert note.startswith("RICE + text (ASR, titles): R@1 vs ICL + PMD + PFR (RICE) (ICL "
                           "rankings, paired over the queries) +50.0 [")
    assert demo.text_notes(["vic_vim_rec_text"], [text]) == []
