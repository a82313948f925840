"""Why PMD re-ranking does or does not help: score distributions of positives and hard
negatives per PMD direction (issue 10).

The model, config and test (or val) split load as in the evaluation
(``mmf.evaluation.loading``); gallery and query clips are encoded by
``mmf.evaluation.encoding``. Within each livestream every (query clip, gallery image) pair
has an ICL logit ``s^2 * cos`` (``icl_logit_scale``); the PMD score
``model.pair_score(image tokens, clip tokens, key mask)`` is computed for the pairs the
statistics read (the candidate sets below, a few per clip), not for every pair.

Two directions, as PMD is trained (``model_config.rice.pmd_directions``):

- ``video`` (what re-ranking asks): anchor = a ground-truth query clip; positives = its
  ground-truth images; hard negatives = the ``--topk`` highest-ICL other images of its
  livestream.
- ``image``: anchor = a ground-truth image with query clips; positives = those clips; hard
  negatives = the ``--topk`` highest-ICL other clips of its livestream.

For each direction and score (ICL logit, PMD): mean and sd of the positive and of the
hard-negative scores, AUC = P(positive > hard negative) over (anchor, positive, negative)
triples (ties 1/2), and top-1 = the share of anchors whose best candidate (positives + hard
negatives) is a positive (ties 1/2). In the video direction the ICL top-1 is the ICL R@1 of
those anchors and the PMD top-1 that of PMD re-ranking had the positive always been among
the candidates. ``image_offset``: the one-way ANOVA R^2 of each score over the video-direction
candidate pairs grouped by gallery image, the share of variance a per-image offset explains
(an offset image-direction training never penalises); ``chance_r2`` = (images - 1) /
(pairs - 1) is its expectation for scores unrelated to the image.

    python scripts/pmd_score_stats.py \\
        --config_file save/demo_rice_vic_vim_rec_bi_seed0/config.yaml \\
        --out results/pmd_stats_bi_seed0

writes ``pmd_score_stats.json``, ``pmd_score_stats.md`` (also printed) and ``pmd_scores.png``
in ``--out``.
"""
import argparse
import json
import logging
import math
import os
import sys

import numpy
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from mmf.common.errors import MMFError
from mmf.datasets.ids import normalize_id
from mmf.evaluation.encoding import TokenStore, encode_gallery, encode_queries, make_loader
from mmf.evaluation.loading import (
    default_checkpoint,
    load_eval_config,
    load_eval_data,
    load_eval_model,
    load_val_data,
)
from mmf.evaluation.rerank import icl_logit_scale, require_pair_score
from mmf.evaluation.run import default_device
from mmf.evaluation.text_coverage import text_sides
from mmf.models.rice.text_fusion import TextVectors
from mmf.utils.file_io import atomic_write

logger = logging.getLogger("pmd_score_stats")

JSON_FILE = "pmd_score_stats.json"
TABLE_FILE = "pmd_score_stats.md"
PICTURE_FILE = "pmd_scores.png"
PAIR_BATCH = 256  # (image, clip) pairs per pair_score call, as PMDReranker
SCORES = ("icl_logit", "pmd")
ANCHORS = {"video": "query clip", "image": "ground-truth image"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config_file", required=True, help="save/<exp>/config.yaml of the run")
    parser.add_argument(
        "--checkpoint", default=None,
        help="model weights (default: <model>_final.pth next to the config, else in env.save_dir)",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--topk", type=int, default=10, help="hard negatives per anchor (10)")
    parser.add_argument("--split", choices=("test", "val"), default="test", help="(test)")
    parser.add_argument("--dataset", default=None, help="dataset of the config (its only one)")
    parser.add_argument("--batch_size", type=int, default=32, help="items per batch (32)")
    parser.add_argument("--num_workers", type=int, default=1, help="data loader processes (1)")
    parser.add_argument("--device", default=default_device(), help="cpu or cuda[:N]")
    args = parser.parse_args(argv)
    for name, least in (("topk", 1), ("batch_size", 1), ("num_workers", 0)):
        if getattr(args, name) < least:
            parser.error(f"--{name} must be >= {least}, got {getattr(args, name)}")
    return args


# ---- statistics: pure functions of score matrices -------------------------------------


def same_group(anchor_groups, candidate_groups):
    """[A, C] bool: anchor and candidate belong to the same livestream (group names; None
    is a group like any other)."""
    codes = {}
    anchor = torch.tensor([codes.setdefault(g, len(codes)) for g in anchor_groups])
    candidate = torch.tensor([codes.setdefault(g, len(codes)) for g in candidate_groups])
    return anchor[:, None] == candidate[None, :]


def hard_negatives(select, positive, group_mask, topk):
    """[A, C] bool: each anchor's ``topk`` highest-``select`` candidates of its group that are
    not positives (ties in column order). ``select`` [A, C] float, ``positive`` and
    ``group_mask`` [A, C] bool."""
    eligible = group_mask & ~positive
    masked = select.masked_fill(~eligible, -math.inf)
    order = masked.sort(dim=1, descending=True, stable=True).indices[:, :topk]
    negative = torch.zeros_like(eligible)
    return negative.scatter_(1, order, eligible.gather(1, order))


def _packed(values, mask):
    """Each row's masked values to the left: [A, C], [A, C] bool -> [A, W] values and [A, W]
    bool valid, W the largest count of a row."""
    width = int(mask.sum(dim=1).max()) if mask.numel() else 0
    order = mask.to(torch.int8).argsort(dim=1, descending=True, stable=True)[:, :width]
    return values.gather(1, order), mask.gather(1, order)


def _greater(a, b):
    """1 where a > b, 1/2 where equal, else 0 (broadcast)."""
    return (a > b).double() + 0.5 * (a == b).double()


def _moments(values):
    values = values.double()
    if not len(values):
        return {"mean": None, "sd": None, "count": 0}
    return {"mean": float(values.mean()), "sd": float(values.std(unbiased=False)),
            "count": len(values)}


def score_stats(score, positive, negative):
    """One score's separation of positives from hard negatives over anchors (rows).

    ``score`` [A, C] float (read only where ``positive | negative``), ``positive`` and
    ``negative`` [A, C] bool; rows need at least one of each. Returns ``{"positive",
    "hard_negative": {"mean", "sd" (population), "count"}, "auc", "top1"}``: AUC over the
    (anchor, positive, negative) triples, top-1 over anchors, ties 1/2.
    """
    pos, pos_valid = _packed(score, positive)
    neg, neg_valid = _packed(score, negative)
    weight = pos_valid[:, :, None] & neg_valid[:, None, :]
    wins = _greater(pos[:, :, None], neg[:, None, :])[weight]
    best_pos = pos.masked_fill(~pos_valid, -math.inf).max(dim=1).values
    best_neg = neg.masked_fill(~neg_valid, -math.inf).max(dim=1).values
    top1 = _greater(best_pos, best_neg)
    return {
        "positive": _moments(score[positive]),
        "hard_negative": _moments(score[negative]),
        "auc": float(wins.mean()) if len(wins) else None,
        "top1": float(top1.mean()) if len(top1) else None,
    }


def candidates(select, positive, anchor_groups, candidate_groups, topk):
    """The candidate sets of each anchor: ``(positive, negative)`` [A, C] bool, the
    positives and the ``topk`` highest-``select`` other candidates of its group
    (``hard_negatives``), on the anchors only: the rows with a positive and a hard negative
    (all False on the other rows). ``select`` [A, C] float, ``positive`` [A, C] bool, groups
    [A] / [C]."""
    group_mask = same_group(anchor_groups, candidate_groups)
    negative = hard_negatives(select, positive, group_mask, topk)
    anchors = positive.any(dim=1) & negative.any(dim=1)
    return positive & anchors[:, None], negative & anchors[:, None]


def direction_stats(scores, positive, anchor_groups, candidate_groups, topk, select="icl_logit"):
    """Statistics of one direction: ``scores`` {name: [A, C] float}, ``positive`` [A, C]
    bool, groups [A] / [C]; the candidate sets come from ``scores[select]`` (``candidates``).

    Returns ``{"num_anchors", "num_anchors_without_negatives", "num_triples", "scores":
    {name: score_stats}}`` and the anchors' candidate masks ``(positive, negative)`` [A, C].
    """
    pos, neg = candidates(scores[select], positive, anchor_groups, candidate_groups, topk)
    anchors = pos.any(dim=1)
    stats = {
        "num_anchors": int(anchors.sum()),
        "num_anchors_without_negatives": int((positive.any(dim=1) & ~anchors).sum()),
        "num_triples": int((pos.sum(dim=1) * neg.sum(dim=1)).sum()),
        "scores": {name: score_stats(s[anchors], pos[anchors], neg[anchors])
                   for name, s in scores.items()},
    }
    return stats, (pos, neg)


def image_offset_r2(score, pairs):
    """One-way ANOVA of ``score`` [A, C] over the ``pairs`` [A, C] bool, grouped by column
    (gallery image): ``{"r2": between-image sum of squares / total, "num_images",
    "num_pairs", "chance_r2": (images - 1) / (pairs - 1)}`` (r2 None without spread)."""
    values = score[pairs].double()
    columns = pairs.nonzero()[:, 1]
    images, group = columns.unique(return_inverse=True)
    num, k = len(values), len(images)
    total = float(((values - values.mean()) ** 2).sum()) if num else 0.0
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, group, values)
    counts = torch.bincount(group, minlength=k).double()
    between = float(((sums / counts - values.mean()) ** 2 * counts).sum()) if num else 0.0
    return {
        "r2": between / total if total > 0 else None,
        "num_images": k,
        "num_pairs": num,
        "chance_r2": (k - 1) / (num - 1) if num > 1 else None,
    }


# ---- encoding and scoring ---------------------------------------------------------------


class ClipTokens:
    """``on_batch`` of ``encode_queries``: keeps each clip's tokens [N,F,T,D], key mask [N,F]
    (or [N,F,T] with ``patch_mask``) and ASR ``TextVectors`` (models reading the ASR) on the
    CPU, in encoding order; ``finish`` joins the batches."""

    def __init__(self):
        self.ids, self.tokens, self.masks, self.asr = [], [], [], []

    def __call__(self, ids, groups, emb, tokens, mask, asr=None):
        self.ids.extend(ids)
        self.tokens.append(tokens.cpu())
        self.masks.append(mask.cpu())
        if asr is not None:
            self.asr.append(asr.to("cpu"))

    def finish(self):
        self.tokens, self.masks = torch.cat(self.tokens), torch.cat(self.masks)
        self.asr = TextVectors(
            torch.cat([a.vectors for a in self.asr]), torch.cat([a.present for a in self.asr])
        ) if self.asr else None

    def rows(self, rows, device):
        """Tokens, mask and ``{"asr": TextVectors}`` (or ``{}``) of clips ``rows`` [n] on
        ``device``."""
        text = {} if self.asr is None else {"asr": self.asr[rows].to(device)}
        return self.tokens[rows].to(device), self.masks[rows].to(device), text


@torch.no_grad()
def pair_scores(model, clips, token_store, pairs, device, progress=False):
    """PMD scores of ``pairs`` [N, 2] long (clip row, gallery row) -> [N] float32 on CPU;
    gallery tokens from ``token_store`` (float16, as in re-ranking)."""
    values = []
    for start in tqdm(range(0, len(pairs), PAIR_BATCH), desc="pmd pairs", disable=not progress):
        chunk = pairs[start : start + PAIR_BATCH]
        tokens, mask, text = clips.rows(chunk[:, 0], device)
        image_tokens = token_store.get(chunk[:, 1].numpy()).to(device, tokens.dtype)
        values.append(model.pair_score(image_tokens, tokens, mask, **text).float().cpu())
    return torch.cat(values) if values else torch.zeros(0)


def positive_matrix(query_ids, query_groups, gallery_ids, gallery_groups, ground_truth):
    """[Q, G] bool: gallery item g is a ground-truth image of query q in q's livestream."""
    columns = {}
    for column, image in enumerate(gallery_ids):
        columns.setdefault(image, []).append(column)
    truth = {normalize_id(q): ([ids] if isinstance(ids, str) else ids)
             for q, ids in ground_truth.items()}
    positive = torch.zeros(len(query_ids), len(gallery_ids), dtype=torch.bool)
    for row, query in enumerate(query_ids):
        for image in truth.get(query, ()):
            positive[row, columns.get(normalize_id(image), [])] = True
    return positive & same_group(query_groups, gallery_groups)


def encode(model, data, args, device, store):
    """Gallery and query ``Encoded`` (test order) and the ``ClipTokens`` of the queries; the
    gallery tokens go to ``store`` (a ``TokenStore``)."""
    texts, progress = text_sides(None, model), sys.stderr.isatty()
    gallery = encode_gallery(
        model, make_loader(data.gallery_dataset, args.batch_size, args.num_workers), device,
        store, progress, False, texts,
    )
    clips = ClipTokens()
    queries = encode_queries(
        model, make_loader(data.query_dataset, args.batch_size, args.num_workers), device,
        clips, progress, False, texts,
    )
    clips.finish()
    return gallery, queries, clips


def load(args):
    """Config, checkpoint path, model (with a PMD head, else ``ConfigError``) and the split's
    ``EvalData``, as the evaluation loads them."""
    config, dataset = load_eval_config(args.config_file, args.dataset)
    checkpoint = os.path.abspath(args.checkpoint or default_checkpoint(config, args.config_file))
    model = load_eval_model(config, checkpoint, torch.device(args.device))
    require_pair_score(model, f"{checkpoint}: scripts/pmd_score_stats.py")
    if args.split == "val":
        data = load_val_data(config, dataset, global_gallery=False)
    else:
        data = load_eval_data(config, dataset, global_gallery=False)
    return config, checkpoint, model, data


def score_matrices(model, data, args):
    """Encode the split and score it: ``(queries, gallery, icl, pmd, positive)`` with the
    ``Encoded`` sides, the ICL logits [Q, G] (``s^2 * cos``; cross-livestream pairs too, never
    read), the PMD scores [Q, G] (NaN outside both directions' candidate sets) and the
    ground truth [Q, G] bool."""
    device = torch.device(args.device)
    os.makedirs(args.out, exist_ok=True)
    store = TokenStore(args.out, len(data.gallery_dataset))
    try:
        gallery, queries, clips = encode(model, data, args, device, store)
        icl = icl_logit_scale(model) * queries.emb @ gallery.emb.T
        positive = positive_matrix(
            queries.ids, queries.groups, gallery.ids, gallery.groups, data.ground_truth
        )
        video = candidates(icl, positive, queries.groups, gallery.groups, args.topk)
        image = candidates(icl.T, positive.T, gallery.groups, queries.groups, args.topk)
        needed = video[0] | video[1] | (image[0] | image[1]).T
        pairs = needed.nonzero()
        logger.info("PMD scores of %d (clip, image) pairs", len(pairs))
        pmd = torch.full(icl.shape, math.nan)
        pmd[needed] = pair_scores(model, clips, store, pairs, device, sys.stderr.isatty())
    finally:
        store.close()
    return queries, gallery, icl, pmd, positive


def summarize(icl, pmd, positive, query_groups, gallery_groups, topk):
    """Both directions' ``direction_stats`` and the video direction's ``image_offset_r2``
    from [Q, G] matrices: ``(directions, image_offset, picture)``, ``picture`` {direction:
    (PMD scores of the positives [n], of the hard negatives [m])}."""
    sides = {
        "video": ({"icl_logit": icl, "pmd": pmd}, positive, query_groups, gallery_groups),
        "image": ({"icl_logit": icl.T, "pmd": pmd.T}, positive.T, gallery_groups, query_groups),
    }
    directions, picture, masks = {}, {}, {}
    for direction, (scores, pos, anchor_groups, candidate_groups) in sides.items():
        stats, masks[direction] = direction_stats(scores, pos, anchor_groups, candidate_groups,
                                                  topk)
        directions[direction] = {"anchor": ANCHORS[direction], **stats}
        picture[direction] = tuple(scores["pmd"][mask] for mask in masks[direction])
    pairs = masks["video"][0] | masks["video"][1]
    image_offset = {
        "pairs": "the video direction's candidate pairs, positives and hard negatives",
        **{name: image_offset_r2(s, pairs) for name, s in sides["video"][0].items()},
    }
    return directions, image_offset, picture


def collect(args):
    """Load, encode, score and compute every statistic; returns the json's dict and the
    ``picture`` of ``summarize``."""
    config, checkpoint, model, data = load(args)
    queries, gallery, icl, pmd, positive = score_matrices(model, data, args)
    directions, image_offset, picture = summarize(
        icl, pmd, positive, queries.groups, gallery.groups, args.topk
    )
    report = {
        "config_file": os.path.abspath(args.config_file),
        "checkpoint": checkpoint,
        "split": args.split,
        "topk": args.topk,
        "pmd_directions": OmegaConf.to_container(config.model_config[config.model]).get(
            "pmd_directions"
        ),
        "icl_logit_scale": icl_logit_scale(model),
        "num_queries": len(queries.ids),
        "num_gallery_images": len(gallery.ids),
        "num_pmd_pairs": int((~pmd.isnan()).sum()),
        "directions": directions,
        "image_offset": image_offset,
    }
    return report, picture


# ---- reports ------------------------------------------------------------------------------


def _number(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def _spread(moments):
    return f"{_number(moments['mean'])} ± {_number(moments['sd'])} (n={moments['count']})"


def format_table(report):
    """The markdown of ``pmd_score_stats.md``: one row per direction x score, then the
    per-image offset R^2."""
    lines = [
        f"PMD score statistics: {report['split']} split, {report['topk']} hard negatives by "
        f"ICL per anchor, pmd_directions {report['pmd_directions']}",
        "",
        "| direction | anchor | score | anchors | positive mean ± sd | hard negative mean ± sd "
        "| AUC | top-1 |",
        "|---|---|---|---:|---|---|---:|---:|",
    ]
    for direction, section in report["directions"].items():
        for name, stats in section["scores"].items():
            lines.append(
                f"| {direction} | {section['anchor']} | {name} | {section['num_anchors']} "
                f"| {_spread(stats['positive'])} | {_spread(stats['hard_negative'])} "
                f"| {_number(stats['auc'])} | {_number(stats['top1'])} |"
            )
    offset = report["image_offset"]
    lines += [
        "",
        "AUC: P(positive > hard negative) over (anchor, positive, negative) triples; top-1: "
        "share of anchors whose best candidate is a positive (ties 1/2 in both).",
        "",
        f"Share of score variance explained by the gallery image over {offset['pairs']} "
        "(one-way ANOVA R^2; chance R^2 = (images - 1) / (pairs - 1)):",
        "",
        "| score | R^2 | chance R^2 | images | pairs |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in SCORES:
        row = offset[name]
        lines.append(
            f"| {name} | {_number(row['r2'])} | {_number(row['chance_r2'])} "
            f"| {row['num_images']} | {row['num_pairs']} |"
        )
    return "\n".join(lines) + "\n"


def draw(picture, path):
    """Histograms of positive vs hard-negative PMD scores, one panel per direction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(picture), figsize=(5 * len(picture), 3.5))
    for axis, (direction, (pos, neg)) in zip(axes, picture.items(), strict=True):
        bins = numpy.histogram_bin_edges(torch.cat([pos, neg]).numpy(), bins=30)
        for values, label in ((neg, "hard negatives"), (pos, "positives")):
            axis.hist(values.numpy(), bins=bins, alpha=0.6, density=True,
                      label=f"{label} ({len(values)})")
        axis.set_title(f"{direction} direction (anchor: {ANCHORS[direction]})")
        axis.set_xlabel("PMD score")
        axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    plt.close(figure)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s | %(name)s: %(message)s")
    try:
        report, picture = collect(args)
        table = format_table(report)
        atomic_write(
            os.path.join(args.out, JSON_FILE),
            lambda handle: json.dump(report, handle, indent=1), mode="w",
        )
        atomic_write(os.path.join(args.out, TABLE_FILE), lambda handle: handle.write(table),
                     mode="w")
        draw(picture, os.path.join(args.out, PICTURE_FILE))
    except MMFError as err:
        print(f"pmd_score_stats: error: {err}", file=sys.stderr)
        return 1
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
