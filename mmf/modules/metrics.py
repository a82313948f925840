"""Retrieval metrics for in-training validation on (video, image) pairs.

The trainer gathers the instance's ``required_params`` over the whole validation split and
all ranks, then calls ``calculate(gathered)``:

- ``scores`` [N, E]: video (query) embeddings, ``targets`` [N, E]: image embeddings, one row
  per validation pair;
- ``video_id`` [N], ``image_id`` [N]: ids of the pair's clip and image;
- ``live_id`` [N] (required with ``per_livestream``, the default): each clip is ranked
  against the images of its own livestream; without it, against all validation images;
- ``category`` [N] (required with ``per_category``): adds per-category R@1.

The gallery holds each image id once (first occurrence), the queries each video id once; a
clip's ground truth is every image it is paired with. Ranking and ties follow
``mmf.evaluation.ranking``. Values are percentages.
"""
import torch

from mmf.common.registry import registry
from mmf.datasets.ids import normalize_id
from mmf.evaluation.metrics import DEFAULT_KS, metrics_by_label, summarize
from mmf.evaluation.ranking import rank_queries


def _as_list(value):
    if isinstance(value, torch.Tensor):
        return [str(v) for v in value.tolist()]
    return [str(v) for v in value]


@registry.register_metric("r@k")
class RecallAtK:
    """Rank-k accuracy of video -> image retrieval, mAP and median rank.

    Params: ``ks`` (default [1, 3, 5, 10]), ``per_livestream`` (default true: rank within
    ``live_id``), ``per_category`` (default false).

    Returns ``{"r@1": .., "r@3": .., "r@5": .., "r@10": .., "avg": mean of the r@k,
    "map": .., "median_rank": ..}``.
    """

    def __init__(self, params=None):
        params = params or {}
        self.ks = tuple(int(k) for k in (params.get("ks") or DEFAULT_KS))
        self.per_livestream = bool(params.get("per_livestream", True))
        self.per_category = bool(params.get("per_category", False))
        self.required_params = ["scores", "targets", "video_id", "image_id"]
        if self.per_livestream:
            self.required_params.append("live_id")
        if self.per_category:
            self.required_params.append("category")

    def calculate(self, gathered):
        for key in self.required_params:
            if key not in gathered:
                raise KeyError(f"metric r@k needs {key!r}; gathered fields: {sorted(gathered)}")
        queries = gathered["scores"].float()
        images = gathered["targets"].float()
        video_ids = [normalize_id(v) for v in _as_list(gathered["video_id"])]
        image_ids = [normalize_id(i) for i in _as_list(gathered["image_id"])]
        if not len(video_ids) == len(image_ids) == queries.shape[0] == images.shape[0]:
            raise ValueError(
                f"r@k: {queries.shape[0]} scores, {images.shape[0]} targets, "
                f"{len(video_ids)} video ids and {len(image_ids)} image ids"
            )
        live_ids = gathered.get("live_id") if self.per_livestream else None
        live_ids = _as_list(live_ids) if live_ids is not None else None

        ground_truth, query_rows, gallery_rows = {}, {}, {}
        for row, (video_id, image_id) in enumerate(zip(video_ids, image_ids, strict=True)):
            targets = ground_truth.setdefault(video_id, [])
            if image_id not in targets:
                targets.append(image_id)
            query_rows.setdefault(video_id, row)
            gallery_key = (live_ids[row], image_id) if live_ids is not None else image_id
            gallery_rows.setdefault(gallery_key, row)
        query_index = torch.as_tensor(list(query_rows.values()), dtype=torch.long)
        gallery_index = torch.as_tensor(list(gallery_rows.values()), dtype=torch.long)
        query_groups = gallery_groups = None
        if live_ids is not None:
            query_groups = [live_ids[row] for row in query_rows.values()]
            gallery_groups = [live_ids[row] for row in gallery_rows.values()]

        result = rank_queries(
            queries.index_select(0, query_index),
            list(query_rows),
            images.index_select(0, gallery_index),
            [image_ids[row] for row in gallery_rows.values()],
            ground_truth,
            query_groups=query_groups,
            gallery_groups=gallery_groups,
            topk=max(self.ks),
            device=queries.device,
        )
        report = summarize(result, self.ks)
        metrics = {f"r@{k}": report[f"r@{k}"] for k in self.ks}
        metrics["avg"] = sum(metrics.values()) / len(self.ks)
        metrics["map"] = report["map"]
        if report["median_rank"] is not None:
            metrics["median_rank"] = report["median_rank"]
        categories = gathered.get("category")
        if self.per_category and categories is not None:
            labels = dict(zip(video_ids, _as_list(categories), strict=True))
            for label, values in metrics_by_label(result, labels, self.ks).items():
                metrics[f"r@{self.ks[0]}/{label}"] = values[f"r@{self.ks[0]}"]
        return metrics


@registry.register_metric("r@k_general")
class RecallAtKGeneral(RecallAtK):
    """The name the original configs use; same computation as ``r@k``."""
