"""Pictures of an evaluation (matplotlib, Agg backend; PNG files).

For each of the first N ground-truth queries that have an embedding:

- ``query_<n>_<video_id>.png``: the clip's frames, then the top-5 gallery images of the ICL
  ranking (and of the PMD re-ranking when there is one) with their scores; ground-truth
  images have a green frame, the others a red one; the clip's ASR line and the images'
  titles are written in when the dataset has them;
- ``attention_<n>_<video_id>.png`` (models with a PMD head): the cross-attention of the
  shop image's patches over the clip's frame patches, for the pair (clip, best-ranked
  ground-truth image): the image, then each real frame with the attention it receives
  (last cross block, mean over heads and over the image's patch queries) as a heatmap.

Images are shown as the model sees them (processed tensors, min-max rescaled per image).
"""
import logging
import math
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from mmf.common.errors import DataError  # noqa: E402
from mmf.datasets.ids import normalize_id  # noqa: E402

logger = logging.getLogger(__name__)

TOP = 5


def to_display(image):
    """[3,H,W] processed tensor -> [H,W,3] float array in [0, 1] (min-max per image)."""
    image = image.detach().float().cpu()
    low, high = image.min(), image.max()
    image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
    return image.permute(1, 2, 0).numpy()


def frame_heatmaps(attention, num_frames, grid):
    """[H,T,F*T] maps of one pair -> [F, grid, grid] attention each frame's patches receive,
    averaged over heads and over the image's patch queries (the CLS token 0 is left out)."""
    tokens = attention.shape[-2]
    per_key = attention[:, 1:].mean(dim=(0, 1))  # [F*T]
    per_key = per_key.view(num_frames, tokens)[:, 1:]  # patches only
    return per_key.reshape(num_frames, grid, grid)


@torch.inference_mode()
def visualize_queries(model, data, result, reranked, count, out_dir, device):
    """Write the PNG files described in the module docstring; returns their paths.

    ``data`` is the ``EvalData`` that was ranked, ``result`` / ``reranked`` the ICL and PMD
    rankings (``reranked`` may be None); the first ``count`` queries with an embedding are
    drawn into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    items = _Items(data)
    missing = set(result.missing)
    rows = [r for r, q in enumerate(result.query_ids) if q not in missing][:count]
    paths = []
    for number, row in enumerate(rows):
        paths.extend(_draw_query(model, items, result, reranked, number, row, out_dir, device))
    logger.info("wrote %d pictures to %s", len(paths), out_dir)
    return paths


class _Items:
    """Looks up query samples and gallery images of ``data`` by (normalised) id."""

    def __init__(self, data):
        self.data = data
        self.queries = _index(data.query_dataset, lambda r: normalize_id(r.video_id))
        global_gallery = data.global_gallery
        self.gallery = _index(
            data.gallery_dataset,
            lambda r: (None if global_gallery else r.live_id, normalize_id(r.image_id)),
        )
        self.ground_truth = {
            normalize_id(q): [normalize_id(i) for i in ids] for q, ids in data.ground_truth.items()
        }

    def query(self, query_id):
        """The query's sample (None if the dataset skipped it) and its gallery group."""
        sample = self.data.query_dataset[self.queries[query_id]]
        group = None if self.data.global_gallery or sample is None else sample.get("live_id")
        return sample, group

    def image(self, group, image_id):
        return self.data.gallery_dataset[self.gallery[(group, image_id)]]["image"]


def _draw_query(model, items, result, reranked, number, row, out_dir, device):
    """The ranking picture of query ``row`` and, for a model with a PMD head, its attention
    picture; returns the paths written."""
    query_id = result.query_ids[row]
    sample, group = items.query(query_id)
    if sample is None:
        return []
    mask = sample["video_temporal_mask"]
    frames = [f for f, keep in zip(sample["video"], mask, strict=True) if keep]
    gt = items.ground_truth.get(query_id, [])
    rankings = [("ICL", result.topk_ids(row)[:TOP])]
    if reranked is not None:
        rankings.append(("PMD", reranked.topk_ids(row)[:TOP]))
    images = {}
    for _, top in rankings:
        for image_id, _ in top:
            if image_id not in images:
                images[image_id] = items.image(group, image_id)
    name = f"{number:03d}_{query_id[:60]}"
    paths = [os.path.join(out_dir, f"query_{name}.png")]
    asr = (getattr(items.data.query_dataset, "asr", None) or {}).get(query_id)
    titles = getattr(items.data.gallery_dataset, "title", None) or {}
    plot_rankings(paths[0], query_id, frames, rankings, images, set(gt), asr, titles)
    target = _attention_target(result, row, gt, group, items)
    if target is None or not getattr(model, "has_pair_score", False):
        return paths
    image = images[target] if target in images else items.image(group, target)
    paths.append(os.path.join(out_dir, f"attention_{name}.png"))
    _plot_attention(paths[1], model, sample, image, target, device)
    return paths


def _attention_target(result, row, gt, group, items):
    """The ground-truth image of query ``row`` ranked best, else the first one in its
    gallery; None if none is."""
    ranked = [i for i, _ in result.topk_ids(row) if i in gt]
    present = [i for i in gt if (group, i) in items.gallery]
    return (ranked or present or [None])[0]


def _index(dataset, key):
    records = getattr(dataset, "records", None)
    if records is None:
        raise DataError(f"{type(dataset).__name__} has no 'records'; cannot look up items to draw")
    return {key(record): position for position, record in enumerate(records)}


def plot_rankings(path, query_id, frames, rankings, images, gt=None, asr=None, titles=None):
    """PNG of a clip's ``frames`` ([3,H,W] tensors) over rows of ``rankings`` ([(label,
    [(image_id, score), ...])]) drawn from ``images`` {image_id: [3,H,W]}; with ``gt`` (a set
    of ids) hits are framed green, misses red (``mmf.predict`` has none: grey). ``asr``: the
    clip's ASR (shown under the query id), ``titles``: {image_id: title} (under each image)."""
    titles = titles or {}
    columns = max(len(frames), TOP)
    figure, axes = plt.subplots(
        1 + len(rankings), columns, figsize=(1.8 * columns, 2.0 * (1 + len(rankings))),
        squeeze=False,
    )
    for axis in axes.flat:
        axis.axis("off")
    for position, frame in enumerate(frames):
        axes[0, position].imshow(to_display(frame))
        axes[0, position].set_title(f"frame {position}", fontsize=7)
    for line, (label, top) in enumerate(rankings, start=1):
        for position, (image_id, score) in enumerate(top):
            axis = axes[line, position]
            axis.imshow(to_display(images[image_id]))
            color = "grey" if gt is None else ("green" if image_id in gt else "red")
            axis.axis("on")
            axis.set_xticks([])
            axis.set_yticks([])
            for spine in axis.spines.values():
                spine.set_color(color)
                spine.set_linewidth(3)
            title = titles.get(image_id, "").strip()
            caption = f"{label} #{position + 1} {score:.3f}\n{image_id[:18]}"
            axis.set_title(caption + (f"\n{title[:22]}" if title else ""), fontsize=7)
    heading = f"query {query_id}"
    if asr and asr.strip():
        heading += f"\nASR: {asr.strip()[:100]}"
    figure.suptitle(heading, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _plot_attention(path, model, sample, image, image_id, device):
    video = sample["video"][None].to(device)
    mask = sample["video_temporal_mask"][None].to(device)
    _, video_tokens = model.encode_video(video, mask)
    _, image_tokens = model.encode_image(image[None].to(device))
    attention = model.cross_attention(image_tokens, video_tokens, mask)[0].float().cpu()
    num_frames, tokens = video_tokens.shape[1], video_tokens.shape[2]
    grid = int(round(math.sqrt(tokens - 1)))
    if grid * grid != tokens - 1:
        raise DataError(f"cannot lay {tokens - 1} patch tokens on a square grid")
    heat = frame_heatmaps(attention, num_frames, grid)
    keep = [f for f in range(num_frames) if bool(mask[0, f])]
    figure, axes = plt.subplots(
        1, 1 + len(keep), figsize=(1.9 * (1 + len(keep)), 2.2), squeeze=False
    )
    axes[0, 0].imshow(to_display(image))
    axes[0, 0].set_title(f"shop image\n{image_id[:18]}", fontsize=7)
    low, high = (float(heat[keep].min()), float(heat[keep].max())) if keep else (0.0, 1.0)
    for position, frame in enumerate(keep, start=1):
        axis = axes[0, position]
        picture = to_display(sample["video"][frame])
        axis.imshow(picture)
        axis.imshow(
            heat[frame].numpy(), cmap="jet", alpha=0.5, vmin=low, vmax=high,
            extent=(0, picture.shape[1], picture.shape[0], 0), interpolation="bilinear",
        )
        share = float(heat[frame].sum() / heat.sum())
        axis.set_title(f"frame {frame}\nshare {share:.2f}", fontsize=7)
    for axis in axes.flat:
        axis.axis("off")
    figure.suptitle(
        "PMD cross-attention of the image patches over the clip's frame patches", fontsize=8
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)
