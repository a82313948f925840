"""In-training validation metric ``r@k`` on gathered (video, image) pairs."""
import pytest
import torch

from mmf.common.registry import registry
from mmf.modules import metrics  # noqa: F401  (registers the metrics)


def _pairs():
    # Four pairs, two livestreams. v2 is paired with two images (multi-positive).
    image = {
        "i1": [1.0, 0.0, 0.0], "i2": [0.0, 1.0, 0.0], "i3": [0.0, 0.0, 1.0], "i4": [0.0, 0.75, 0.0]
    }
    rows = [("v1", "i1", "L1"), ("v2", "i2", "L1"), ("v2", "i3", "L1"), ("v3", "i4", "L2")]
    video = {"v1": [0.0, 1.0, 0.0], "v2": [0.0, 0.0, 1.0], "v3": [0.0, 1.0, 0.0]}
    return {
        "scores": torch.tensor([video[v] for v, _, _ in rows]),
        "targets": torch.tensor([image[i] for _, i, _ in rows]),
        "video_id": [v for v, _, _ in rows],
        "image_id": [i for _, i, _ in rows],
        "live_id": [live for _, _, live in rows],
        "category": ["bags", "shoes", "shoes", "bags"],
    }


@pytest.mark.parametrize("name", ["r@k", "r@k_general"])
def test_recall_per_livestream(name):
    metric = registry.get_metric_class(name)({"ks": [1, 2], "per_category": True})
    assert metric.required_params == [
        "scores", "targets", "video_id", "image_id", "live_id", "category"
    ]
    values = metric.calculate(_pairs())
    # v1 -> i2 first (i1 second): miss at 1; v2 -> i3 first: hit; v3 alone in L2 with i4: hit.
    assert values["r@1"] == pytest.approx(200 / 3)
    assert values["r@2"] == pytest.approx(100.0)
    assert values["avg"] == pytest.approx((200 / 3 + 100) / 2)
    assert values["r@1/bags"] == pytest.approx(50.0) and values["r@1/shoes"] == 100.0


def test_recall_global_gallery_without_live_id():
    gathered = _pairs()
    del gathered["live_id"]
    metric = registry.get_metric_class("r@k")({"ks": [1, 3], "per_livestream": False})
    assert "live_id" not in metric.required_params
    values = metric.calculate(gathered)
    # v3 now sees i2 (score 1.0) ahead of its own i4 (0.75).
    assert values["r@1"] == pytest.approx(100 / 3)
    assert values["r@3"] == pytest.approx(100.0)
    assert values["median_rank"] == 2.0  # ranks 3, 1, 2


def test_duplicate_images_count_once():
    gathered = _pairs()
    for key in ("scores", "targets"):
        gathered[key] = torch.cat([gathered[key], gathered[key][:1]])
    for key in ("video_id", "image_id", "live_id", "category"):
        gathered[key] = gathered[key] + gathered[key][:1]
    values = registry.get_metric_class("r@k")({"ks": [1, 2]}).calculate(gathered)
    assert values["r@2"] == pytest.approx(100.0)
