"""scripts/make_demo_data.py: layout and format validity of the default demo, determinism."""

import hashlib
import importlib.util
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from mmf.datasets.ids import live_id_of
from mmf.datasets.lpr4m_urls import parse_clip_id, parse_frame_id

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "make_demo_data.py"
_spec = importlib.util.spec_from_file_location("make_demo_data", SCRIPT)
make_demo_data = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_demo_data)
# Galleries of 50-200 images like the default demo, with ten times fewer clips.
MEDIUM = [
    "--num_products",
    "10",
    "--clips_per_product",
    "2",
    "--num_val_lives",
    "2",
    "--val_query_products_per_live",
    "1",
    "--val_queries_per_live",
    "2",
    "--val_distractors_per_live",
    "24",
    "--num_train_lives",
    "2",
    "--num_lives",
    "2",
    "--query_products_per_live",
    "6",
    "--queries_per_live",
    "8",
    "--distractors_per_live",
    "22",
    "--foreign_per_live",
    "28",
    "--gallery_size",
    "50",
    "200",
]
SMALL = [
    "--num_products",
    "6",
    "--clips_per_product",
    "2",
    "--num_val_lives",
    "2",
    "--val_query_products_per_live",
    "1",
    "--val_queries_per_live",
    "1",
    "--val_distractors_per_live",
    "2",
    "--num_train_lives",
    "2",
    "--num_lives",
    "2",
    "--query_products_per_live",
    "3",
    "--queries_per_live",
    "4",
    "--distractors_per_live",
    "2",
    "--foreign_per_live",
    "2",
    "--gallery_size",
    "5",
    "30",
]


def _command(out, seed, *extra):
    return [sys.executable, str(SCRIPT), "--out", str(out), "--seed", str(seed), *extra]


def run_generator(out, seed, *extra):
    result = subprocess.run(
        _command(out, seed, *extra), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def tree_digest(root):
    """{relative path: sha256} of every file under root."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    start = time.time()
    stdout = run_generator(out, 0, "--workers", "2", *MEDIUM)
    return out, stdout, time.time() - start


def read_train_file(path):
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        columns = line.split("\t")
        assert len(columns) == 11, f"{path}:{number}"
        rows.append(columns)
    return rows


def check_train_frame(out, video_id, live_id, frame_id, frame_boxes):
    """Asserts one train/val frame and its boxes; returns the frame's path."""
    ref = parse_frame_id(frame_id)
    assert (
        ref.clip_id == video_id
        and ref.live_id == live_id
        and len(frame_id) == len(video_id) + 5
    )
    path = out / "training_frames" / video_id / f"{frame_id}.jpg"
    with Image.open(path) as frame:
        width, height = frame.size
    assert min(width, height) == 256
    for x1, y1, x2, y2 in frame_boxes:
        assert 0 <= x1 < x2 <= width - 1 and 0 <= y1 < y2 <= height - 1
    return path


def check_train_row(out, row, titled=True):
    """Asserts one 11-column train/val line (``titled``: its title is not empty); returns (its
    image_id, the files it references)."""
    video_id, frames, boxes, image_id, title, cat_id, cat_name, asr, scale, duration, count = row
    live_id, start, end = parse_clip_id(video_id)
    assert end > start
    frame_ids, box_lists = json.loads(frames), json.loads(boxes)
    assert len(frame_ids) == len(box_lists) == 10
    assert len(set(frame_ids)) == 10
    assert any(box_lists), "the product is visible in some frame"
    referenced = {
        check_train_frame(out, video_id, live_id, frame_id, frame_boxes)
        for frame_id, frame_boxes in zip(frame_ids, box_lists, strict=True)
    }
    image = out / "training_images" / f"{image_id}.jpg"
    assert image.exists()
    referenced.add(image)
    assert (title or not titled) and asr and make_demo_data.CATEGORIES[int(cat_id)] == cat_name
    assert scale in ("small", "medium", "large") and duration in ("short", "medium", "long")
    assert count in ("single", "multiple")
    return image_id, referenced


def check_gallery(out, gallery_lines):
    """Asserts the gallery files exist; returns ({live_id: [image_id]}, the gallery files)."""
    gallery_by_live, referenced = {}, set()
    for line in gallery_lines:
        live_id, name = line.split("/")
        assert (out / "gallery" / line).exists()
        referenced.add(out / "gallery" / line)
        gallery_by_live.setdefault(live_id, []).append(name[: -len(".jpg")])
    return gallery_by_live, referenced


def check_queries(out, queries, gt, gallery_by_live, frame_root="query"):
    """Asserts every query clip and its ground truth; returns the query frame files."""
    referenced = set()
    for video_id, entry in queries.items():
        live_id = live_id_of(video_id)
        parse_clip_id(video_id)
        assert entry["gt"] == gt[video_id] and entry["gt"]
        assert set(entry["gt"]) <= set(gallery_by_live[live_id])
        assert entry["category"] in make_demo_data.CATEGORIES
        assert len(entry["frames"]) == 10
        for frame in entry["frames"]:
            clip_dir, name = frame.split("/")
            assert clip_dir == video_id and parse_frame_id(name[: -len(".jpg")]).clip_id == video_id
            assert (out / frame_root / frame).exists()
            referenced.add(out / frame_root / frame)
    return referenced


def count_distractors(gallery_by_live, queries):
    """Gallery images that are no query's ground truth, over all livestreams."""
    distractors = 0
    for live_id, images in gallery_by_live.items():
        positives = {g for v, e in queries.items() if live_id_of(v) == live_id for g in e["gt"]}
        distractors += len(set(images) - positives)
    return distractors


def check_side_files(ann, queries, all_gallery_ids, prefix="test_"):
    """Asserts the ASR, title and frame-box files of the test (or val) split."""
    (asr_file,) = ann.glob(f"{prefix}videoid_asr_*.txt")
    (title_file,) = ann.glob(f"{prefix}image_title_*.txt")
    (box_file,) = ann.glob(f"{prefix}frameid2gtbox_*.json")
    asr = dict(line.split("\t") for line in asr_file.read_text().splitlines())
    assert set(asr) == set(queries) and all(asr.values())
    titles = dict(line.split("\t") for line in title_file.read_text().splitlines())
    assert (
        title_file.name == f"{prefix}image_title_{len(titles)}.txt"
        and set(titles) <= all_gallery_ids
        and all(titles.values())
    )
    frame_boxes = json.loads(box_file.read_text())
    assert all(parse_frame_id(f).clip_id in queries and boxes for f, boxes in frame_boxes.items())
    assert box_file.name == f"{prefix}frameid2gtbox_{len(queries)}_{len(frame_boxes)}.json"
    return titles, frame_boxes


def check_test_split(out, ann, training_images):
    """Asserts the test annotations and files; returns the image files they reference."""
    queries = json.loads((ann / "query_tenframes.json").read_text())
    gallery_lines = (ann / "gallery_main.txt").read_text().splitlines()
    assert len(gallery_lines) == len(set(gallery_lines))
    (gt_file,) = ann.glob("test_videoid_to_gtimage_*.json")
    (live_file,) = ann.glob("test_liveid_to_gallery_*.json")
    gt = json.loads(gt_file.read_text())
    live_to_gallery = json.loads(live_file.read_text())
    assert gt_file.name == f"test_videoid_to_gtimage_{len(queries)}.json"
    assert live_file.name == f"test_liveid_to_gallery_{len(live_to_gallery)}.json"
    assert len(queries) == 16 and len(live_to_gallery) == 2

    gallery_by_live, referenced = check_gallery(out, gallery_lines)
    assert gallery_by_live == live_to_gallery
    assert all(50 <= len(images) <= 200 for images in gallery_by_live.values())
    all_gallery_ids = {i for images in gallery_by_live.values() for i in images}
    assert not all_gallery_ids & training_images, "test images are unseen in training"

    assert set(gt) == set(queries)
    referenced |= check_queries(out, queries, gt, gallery_by_live)
    assert count_distractors(gallery_by_live, queries) >= 4 * len(gallery_by_live)
    check_side_files(ann, queries, all_gallery_ids)
    return referenced


def read_retrieval_split(ann, prefix, query_file, gallery_file):
    """(queries json, gallery lines, ground truth, {live_id: [image_id]}) of a split."""
    queries = json.loads((ann / query_file).read_text())
    gallery_lines = (ann / gallery_file).read_text().splitlines()
    (gt_file,) = ann.glob(f"{prefix}videoid_to_gtimage_*.json")
    (live_file,) = ann.glob(f"{prefix}liveid_to_gallery_*.json")
    gt = json.loads(gt_file.read_text())
    live_to_gallery = json.loads(live_file.read_text())
    assert gt_file.name == f"{prefix}videoid_to_gtimage_{len(queries)}.json"
    assert live_file.name == f"{prefix}liveid_to_gallery_{len(live_to_gallery)}.json"
    return queries, gallery_lines, gt, live_to_gallery


def check_val_split(out, ann, train_images, pair_images):
    """Asserts the val retrieval split (frames under training_frames/, galleries under
    gallery/, both with look-alike distractors) and that its pair file holds each val query
    with its first ground-truth image; returns the image files it references."""
    queries, gallery_lines, gt, live_to_gallery = read_retrieval_split(
        ann, "val_", "val_query_tenframes.json", "val_gallery_main.txt"
    )
    assert len(queries) == 4 and len(live_to_gallery) == 2
    gallery_by_live, referenced = check_gallery(out, gallery_lines)
    assert gallery_by_live == live_to_gallery
    assert all(50 <= len(images) <= 200 for images in gallery_by_live.values())
    all_gallery_ids = {i for images in gallery_by_live.values() for i in images}
    assert not all_gallery_ids & train_images
    assert set(gt) == set(queries)
    referenced |= check_queries(out, queries, gt, gallery_by_live, "training_frames")
    assert count_distractors(gallery_by_live, queries) >= 40 * len(gallery_by_live)
    titles, _ = check_side_files(ann, queries, all_gallery_ids, prefix="val_")
    pairs = read_train_file(ann / "training_videoinfo_demo_val.txt")
    assert {row[0]: row[3] for row in pairs} == {q: entry["gt"][0] for q, entry in queries.items()}
    assert all(row[4] == titles.get(row[3], "") for row in pairs), "the gallery's title"
    assert pair_images == {entry["gt"][0] for entry in queries.values()}
    return referenced


def test_val_split_is_disjoint_from_train_and_test(demo):
    out, _, _ = demo
    ann = out / "annotations"
    val = read_retrieval_split(ann, "val_", "val_query_tenframes.json", "val_gallery_main.txt")
    test = read_retrieval_split(ann, "test_", "query_tenframes.json", "gallery_main.txt")
    train_rows = read_train_file(ann / "training_videoinfo_demo.txt")
    train_clips = {row[0] for row in train_rows}
    train_lives = {live_id_of(clip) for clip in train_clips}
    train_images = {row[3] for row in train_rows}
    (val_queries, _, _, val_lives), (test_queries, _, _, test_lives) = val, test
    assert val_queries and not set(val_queries) & (set(test_queries) | train_clips)
    assert not set(val_lives) & (set(test_lives) | train_lives)
    val_images = {i for images in val_lives.values() for i in images}
    test_images = {i for images in test_lives.values() for i in images}
    assert not val_images & (test_images | train_images)
    assert all(live_id_of(q) in val_lives for q in val_queries)


def _planned_default_demo():
    """The default demo's products, split and clips, planned as generate() does but not
    rendered; returns (args, splits, train_ids, live pools, ClipPlan, {split: planned})."""
    args = make_demo_data.parse_args(["--out", "unused"])
    plan = make_demo_data._rng(args.seed, make_demo_data.TAG_PLAN)
    photos = make_demo_data.load_source_photos(args.seed)
    splits = make_demo_data.query_splits(args)
    total = args.num_products + sum(split.num_products for split in splits)
    products = make_demo_data.build_products(photos, total, args.seed)
    train_ids, pools = make_demo_data.split_products(args, products, splits, plan)
    backgrounds = make_demo_data.load_backgrounds()
    clips = make_demo_data.ClipPlan(args.seed, plan, Path("unused"), backgrounds)
    make_demo_data.plan_train_clips(clips, args, train_ids)
    planned = {s.name: make_demo_data.plan_query_clips(clips, s, pools[s.name]) for s in splits}
    return args, splits, train_ids, pools, clips, planned


def test_default_demo_is_large_enough_to_tell_parts_apart():
    """Issue 10: >= 400 test query clips from >= 8 livestreams, galleries of >= 60 images with
    look-alike distractors, and a val split of the same kind, products disjoint."""
    args, splits, train_ids, pools, clips, planned = _planned_default_demo()
    queries = {}
    for record in clips.records:
        queries.setdefault(record["split"], []).append(record)
    assert len(queries["test"]) >= 400 and len({r["live"] for r in queries["test"]}) >= 8
    assert len(queries["val"]) >= 40 and len({r["live"] for r in queries["val"]}) >= 2
    product_sets = [set(train_ids)] + [{p for pool in pools[s.name] for p in pool} for s in splits]
    assert sum(map(len, product_sets)) == len(set().union(*product_sets))
    shop_rng = make_demo_data._rng(args.seed, make_demo_data.TAG_SHOP)
    for split in splits:
        _, query_products = planned[split.name]
        for live_index, queried in enumerate(query_products):
            entries = make_demo_data._gallery_entries(
                live_index, pools[split.name], queried, split, shop_rng
            )
            own_distractors = [p for p, _ in entries if p in pools[split.name][live_index]]
            assert len(entries) >= 60, (split.name, live_index, len(entries))
            assert len(set(own_distractors) - set(queried)) == split.distractors
            assert len({p for p, _ in entries} - set(queried)) >= 30


def test_demo_layout_and_formats(demo):
    out, stdout, seconds = demo
    ann = out / "annotations"
    assert stdout.startswith("make_demo_data: ") and stdout.count("\n") == 1
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert size < 100e6, size
    print(f"demo: {seconds:.1f} s, {size / 1e6:.1f} MB")

    referenced = set()
    train_images, val_images = set(), set()
    for name, images, titled in (
        ("training_videoinfo_demo.txt", train_images, True),
        ("training_videoinfo_demo_val.txt", val_images, False),
    ):
        rows = read_train_file(ann / name)
        assert rows
        for row in rows:
            image_id, files = check_train_row(out, row, titled)
            images.add(image_id)
            referenced |= files
    assert not train_images & val_images
    assert 5 <= len(make_demo_data.CATEGORIES) <= 8
    assert len(train_images) == 10 and len(val_images) == 2

    referenced |= check_test_split(out, ann, train_images | val_images)
    referenced |= check_val_split(out, ann, train_images, val_images)
    on_disk = {p for p in out.rglob("*.jpg")}
    assert on_disk == referenced, "every image on disk is referenced and vice versa"


def test_demo_is_deterministic_for_a_seed(tmp_path):
    runs = [
        subprocess.Popen(
            _command(tmp_path / name, seed, "--workers", workers, *SMALL),
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, seed, workers in (("a", 3, "1"), ("b", 3, "2"), ("c", 4, "1"))
    ]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    first, second, other = (tree_digest(tmp_path / name) for name in "abc")
    assert len(first) > 50
    assert first == second
    assert first != other
    assert set(first) != set(other), "another seed gives other ids"


def test_existing_output_needs_overwrite(demo):
    out, _, _ = demo
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), "--seed", "0", *SMALL],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0 and "--overwrite" in result.stderr


def _title_rates(ann, prefix):
    """(share of ground-truth gallery images with a title, share of the other ones, the
    numbers of each)."""
    (gt_file,) = ann.glob(f"{prefix}videoid_to_gtimage_*.json")
    (live_file,) = ann.glob(f"{prefix}liveid_to_gallery_*.json")
    (title_file,) = ann.glob(f"{prefix}image_title_*.txt")
    truth = {i for images in json.loads(gt_file.read_text()).values() for i in images}
    gallery = {i for images in json.loads(live_file.read_text()).values() for i in images}
    titled = {line.split("\t")[0] for line in title_file.read_text().splitlines()}
    others = gallery - truth
    rates = len(titled & truth) / len(truth), len(titled & others) / len(others)
    return rates, (len(truth), len(others))


def test_titles_cover_ground_truth_and_other_images_alike(demo):
    """Issue 11: titles for most but not all gallery images, at the same rate for the
    ground-truth images and the others (a title's presence must not tell the answer)."""
    out, _, _ = demo
    for prefix in ("test_", "val_"):
        (truth_rate, other_rate), sizes = _title_rates(out / "annotations", prefix)
        assert 0.75 <= truth_rate <= 1.0 and 0.75 <= other_rate < 0.95, (prefix, truth_rate)
        # Equal up to the rounding of 85 % of each group's count.
        tolerance = 0.01 + sum(0.5 / size for size in sizes)
        assert abs(truth_rate - other_rate) <= tolerance, (prefix, truth_rate, other_rate)
    (truth_rate, _), (num_truth, _) = _title_rates(out / "annotations", "test_")
    assert num_truth >= 12 and truth_rate < 1.0, "some ground-truth images have no title"


def _words(product):
    words = [product[key] for key in make_demo_data.ATTRIBUTES]
    return words + [make_demo_data.COLOR_ZH[product["color"]]]


def _names(line, words):
    return any(re.search(rf"(?<![\w]){re.escape(word)}(?![\w])", line) for word in words)


def test_asr_names_the_shown_product_in_some_clips_only():
    """ASR lines of real demo products: the product's own attributes in about 60 % of them,
    another product's in about 20 %, chatter otherwise; never the brand."""
    photos = make_demo_data.load_source_photos(0)
    products = make_demo_data.build_products(photos, 60, 0)
    rng = make_demo_data._rng(0, make_demo_data.TAG_TEXT)
    counts = {"own": 0, "other": 0, "chatter": 0}
    pairs = [
        (product, other)
        for product in products
        for other in products
        if not any(a in b or b in a for a in _words(product) for b in _words(other))
    ]
    assert len(pairs) > 300
    for product, other in pairs[:600]:
        line = make_demo_data.asr_of(product, other, rng)
        assert line and product["brand"] not in line
        own, theirs = _names(line, _words(product)), _names(line, _words(other))
        assert not (own and theirs)
        counts["own" if own else "other" if theirs else "chatter"] += 1
    assert 0.5 <= counts["own"] / 600 <= 0.7, counts
    assert 0.12 <= counts["other"] / 600 <= 0.28, counts
    assert 0.12 <= counts["chatter"] / 600 <= 0.28, counts


def test_train_asr_names_the_product_noun_in_some_rows(demo):
    """On disk: the product's noun (in its title, always) is in the ASR of some train
    clips but not all."""
    out, _, _ = demo
    rows = read_train_file(out / "annotations" / "training_videoinfo_demo.txt")
    named = 0
    for row in rows:
        nouns = make_demo_data.CATEGORY_NOUNS[row[6]]
        (noun,) = [noun for noun in nouns if _names(row[4], [noun])]
        named += _names(row[7], [noun])
    assert 0 < named < len(rows), (named, len(rows))


def test_query_boxes_lie_inside_their_frames(demo):
    """Issue 12: the test and val box files hold the pasted products' boxes, in pixels of
    the stored query frames, for most of the frames."""
    out, _, _ = demo
    ann = out / "annotations"
    for prefix, query_file, frame_root in (
        ("test_", "query_tenframes.json", "query"),
        ("val_", "val_query_tenframes.json", "training_frames"),
    ):
        queries = json.loads((ann / query_file).read_text())
        (box_file,) = ann.glob(f"{prefix}frameid2gtbox_*.json")
        frame_boxes = json.loads(box_file.read_text())
        num_frames = sum(len(entry["frames"]) for entry in queries.values())
        assert 0.5 * num_frames <= len(frame_boxes) < num_frames
        for frame_id, boxes in frame_boxes.items():
            clip_id = parse_frame_id(frame_id).clip_id
            with Image.open(out / frame_root / clip_id / f"{frame_id}.jpg") as frame:
                width, height = frame.size
            for x1, y1, x2, y2 in boxes:
                assert 0 <= x1 < x2 <= width - 1 and 0 <= y1 < y2 <= height - 1
