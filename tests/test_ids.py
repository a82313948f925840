"""The one id rule (mmf/datasets/ids.py) and the modules that rely on it."""
import torch

from mmf.datasets.builders.videotoshop import database
from mmf.datasets.ids import IMAGE_EXTENSIONS, live_id_of, normalize_id, normalize_ids
from mmf.evaluation.ranking import rank_queries
from mmf.modules.metrics import RecallAtK

LIVE = "7b601b02-2c63-11ee-bb6d-b8cef60c2fd0"
CLIP = f"{LIVE}-1667916122888-1667916252390"


def test_normalize_id_is_the_file_stem():
    for value in ("ab12", "ab12.jpg", " ab12.JPG ", f"{LIVE}/ab12.jpeg", "a/b/ab12.webp"):
        assert normalize_id(value) == "ab12"
    assert normalize_id(f"{CLIP}.mp4") == CLIP
    assert normalize_id(f"{CLIP}-0081.jpg") == f"{CLIP}-0081"
    # Only one known extension is dropped; other dot suffixes are part of the id.
    assert normalize_id("a-b-c.1234") == "a-b-c.1234"
    assert normalize_id("x.jpg.png") == "x.jpg"
    assert normalize_id("notes.txt") == "notes.txt"
    assert IMAGE_EXTENSIONS[:3] == (".jpg", ".jpeg", ".png")  # the original's probing order


def test_normalize_ids_equals_normalize_id_of_each():
    values = ["ab12", "ab12.jpg", " ab12", "ab12\n", "a/ab12", CLIP, f"{CLIP}.mp4", "", 7, "a.b"]
    assert normalize_ids(values) == [normalize_id(value) for value in values]


def test_live_id_of_clip_and_frame_ids():
    assert live_id_of(CLIP) == LIVE
    assert live_id_of(f"{CLIP}-0081") == LIVE


def test_readers_ranking_and_metric_agree_on_ids(tmp_path):
    """An id written with an extension in one file and without in another is one id."""
    gallery = tmp_path / "gallery_main.txt"
    gallery.write_text(f"{LIVE}/img1.JPG\n{LIVE}/img2.jpg\n")
    ground_truth = tmp_path / "gt.json"
    ground_truth.write_text(f'{{"{CLIP}.mp4": ["img2.jpg"]}}')
    records = database.read_gallery_txt(str(gallery))
    assert [(r.image_id, r.live_id) for r in records] == [("img1", LIVE), ("img2", LIVE)]
    gt = database.read_id_lists_json(str(ground_truth))
    assert gt == {CLIP: ["img2"]}

    gallery_emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    result = rank_queries(
        torch.tensor([[0.0, 1.0]]), [CLIP], gallery_emb, ["img1.png", f"{LIVE}/img2"], gt,
        query_groups=[live_id_of(CLIP)], gallery_groups=[r.live_id for r in records],
    )
    assert result.ranks.tolist() == [1.0]
    metric = RecallAtK({"ks": [1]})
    values = metric.calculate({
        "scores": torch.tensor([[0.0, 1.0], [0.0, 1.0]]),
        "targets": gallery_emb,
        "video_id": [f"{CLIP}.mp4", CLIP],
        "image_id": ["img1.jpg", "img2"],
        "live_id": [LIVE, LIVE],
    })
    assert values["r@1"] == 100.0  # one query (two spellings) whose ground truth holds img2
