"""The two pictures of ``make demo`` (matplotlib, Agg backend), drawn from what the
evaluations wrote (``rankings.jsonl``) and the demo data on disk, so no model is loaded.

- ``before_after.png``: queries evenly spread over the test set, one per row: a frame of the
  clip (titled with the rank of its product in each ranking), then the top-5 shop images of
  the zero-shot model and of the trained one; ground-truth
  images framed green, the others red (the colours of ``mmf.evaluation.pictures``, which
  draws one query per file, with the model's processed tensors).
- ``recall_at_k.png``: R@k for k = 1..10 of each ranking and of chance.
"""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

TOP = 5
HIT_COLOURS = {True: "green", False: "red"}


def read_rankings(path):
    """``rankings.jsonl`` -> {video_id: its line} (``rank`` None for a miss)."""
    with open(path, encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle if line.strip()]
    return {line["video_id"]: line for line in lines}


def recall_curve(rankings, ks, rank_key="rank"):
    """[R@k in percent for k in ks] of ``read_rankings`` output (misses never count)."""
    ranks = [line[rank_key] for line in rankings.values()]
    return [100.0 * sum(r is not None and r <= k for r in ranks) / len(ranks) for k in ks]


def spread_queries(video_ids, count):
    """``count`` ids evenly spaced over ``video_ids`` (sorted, so the pick is reproducible)."""
    ordered = sorted(video_ids)
    step = len(ordered) / count
    return [ordered[int(i * step)] for i in range(min(count, len(ordered)))]


def shown_frame(lpr4m, video_id, frames):
    """Path of the clip frame to show: the middle one of the frames whose product box is
    annotated (the product is in view), else the middle frame."""
    (box_file,) = (Path(lpr4m) / "annotations").glob("test_frameid2gtbox_*.json")
    boxed = json.loads(box_file.read_text(encoding="utf-8"))
    visible = [f for f in frames if Path(f).stem in boxed] or frames
    return Path(lpr4m) / "query" / visible[len(visible) // 2]


def _framed(axis, path, title, hit):
    with Image.open(path) as image:
        axis.imshow(image.convert("RGB"))
    axis.set_xticks([])
    axis.set_yticks([])
    colour = "black" if hit is None else HIT_COLOURS[hit]
    for spine in axis.spines.values():
        spine.set_color(colour)
        spine.set_linewidth(1 if hit is None else 3)
    axis.set_title(title, fontsize=8)


def plot_before_after(path, lpr4m, runs, count=6):
    """Writes ``before_after.png``. ``runs``: [(label, read_rankings output)], e.g. zero-shot
    then trained; the queries are taken from the first run."""
    lpr4m = Path(lpr4m)
    queries = json.loads((lpr4m / "annotations" / "query_tenframes.json").read_text("utf-8"))
    chosen = spread_queries(list(runs[0][1]), count)
    columns = 1 + TOP * len(runs)
    figure, axes = plt.subplots(
        len(chosen), columns, figsize=(1.25 * columns, 1.45 * len(chosen)), squeeze=False
    )
    for axis in axes.flat:
        axis.axis("off")
    for row, video_id in enumerate(chosen):
        axis = axes[row, 0]
        axis.axis("on")
        frame = shown_frame(lpr4m, video_id, queries[video_id]["frames"])
        ranks = " / ".join(str(rankings[video_id]["rank"] or "-") for _, rankings in runs)
        _framed(axis, frame, f"query {row + 1}\nrank {ranks}", None)
        for block, (label, rankings) in enumerate(runs):
            line = rankings[video_id]
            gt = set(line["gt"])
            live_id = line.get("live_id") or video_id.rsplit("-", 2)[0]
            for position, (image_id, _) in enumerate(line["topk"][:TOP]):
                axis = axes[row, 1 + block * TOP + position]
                axis.axis("on")
                image = lpr4m / "gallery" / live_id / f"{image_id}.jpg"
                _framed(axis, image, f"{label} #{position + 1}", image_id in gt)
    figure.suptitle(
        "Top-5 shop images per query clip (green frame: the product shown)", fontsize=10
    )
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def plot_recall_at_k(path, curves, title):
    """Writes ``recall_at_k.png``. ``curves``: [(label, [R@1 .. R@10] in percent)]."""
    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    styles = ("k:", "C0-o", "C1-s", "C2-^", "C3-v")
    ks = list(range(1, 11))
    for (label, values), style in zip(curves, styles, strict=False):
        axis.plot(ks, values, style, label=label, markersize=4)
    axis.set_xticks(ks)
    axis.set_xlabel("k")
    axis.set_ylabel("R@k (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
