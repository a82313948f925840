"""What an evaluation writes: ``metrics.json``, ``rankings.jsonl`` and the console report.

``metrics.json`` holds one section per ranking (``icl``, and ``pmd_rerank`` with re-ranking):
R@k, mAP, median rank, counts, the 95 % bootstrap intervals of R@1 and mAP (``r@1_ci95``,
``map_ci95``: resampling queries, seeded; settings under ``bootstrap``), and the same metrics
per breakdown label (``by_category``, ``by_difficulty``, ``by_scale`` ...; how derived labels were
obtained under ``breakdown_sources``), and with boxes, their source and the query frames that
fell back to the full frame (``boxes``). The re-ranked section also holds
the paired R@1 change from the ICL ranking (``r@1_vs_icl``). ``rankings.jsonl`` has a line per
ground-truth query: its ids, ground truth, rank and top-k ids with scores. ``format_report``
is the console summary. Files are written atomically (``mmf.utils.file_io.atomic_write``).
"""
import json
import math
import os

from mmf.datasets.ids import normalize_id
from mmf.evaluation.bootstrap import DEFAULT_LEVEL, bootstrap_intervals, paired_difference
from mmf.evaluation.metrics import DEFAULT_KS, metrics_by_label, summarize
from mmf.evaluation.text_coverage import coverage_lines
from mmf.utils.file_io import atomic_write

METRICS_FILE = "metrics.json"
RANKINGS_FILE = "rankings.jsonl"
REPORT_KS = DEFAULT_KS
INTERVAL_METRICS = ("r@1", "map")


def per_query_values(result):
    """``{"r@1": [Q], "map": [Q]}``: each query's contribution (percent) to R@1 and mAP."""
    return {
        "r@1": (100.0 * (result.ranks <= 1)).double().numpy(),
        "map": (100.0 * result.average_precision).double().numpy(),
    }


def sections_of(result, labels, bootstrap=None):
    """Summary metrics of ``result`` and, per breakdown ``name``, ``by_<name>``; with
    ``bootstrap`` (``{"num_resamples", "seed"}``) the 95 % intervals ``<metric>_ci95`` of
    R@1 and mAP."""
    section = summarize(result, REPORT_KS)
    if bootstrap and len(result.query_ids):
        intervals = bootstrap_intervals(
            per_query_values(result), bootstrap["num_resamples"], bootstrap["seed"]
        )
        for name, interval in intervals.items():
            section[f"{name}_ci95"] = list(interval)
    for name, mapping in labels.items():
        section[f"by_{name}"] = metrics_by_label(result, mapping)
    return section


def r1_change(reranked, result, bootstrap):
    """Paired R@1 change (points) from ``result`` to ``reranked`` on the same queries, with
    its 95 % bootstrap interval: ``{"difference", "ci95"}``."""
    if not len(result.query_ids):
        return None
    difference, low, high = paired_difference(
        per_query_values(reranked)["r@1"], per_query_values(result)["r@1"],
        bootstrap["num_resamples"], bootstrap["seed"],
    )
    return {"difference": difference, "ci95": [low, high]}


def query_info(queries, labels):
    """``{query id: {"live_id": ..., <breakdown name>: label}}`` for ``rankings.jsonl``."""
    info = {}
    for query_id, group in zip(queries.ids, queries.groups, strict=True):
        if group is not None:
            info[query_id] = {"live_id": group}
    for name, mapping in labels.items():
        for query_id, label in mapping.items():
            info.setdefault(normalize_id(query_id), {})[name] = label
    return info


def format_table(sections, ks=REPORT_KS):
    """Text table, one row per ranking (e.g. ``icl`` and ``pmd_rerank``), with the 95 %
    intervals of R@1 and mAP when the sections have them."""
    columns = [f"R@{k}" for k in ks] + ["mAP", "MedR"]
    header = f"{'ranking':<12}" + "".join(f"{c:>9}" for c in columns)
    header += "".join(f"{name.replace('r@', 'R@').replace('map', 'mAP') + ' 95% CI':>18}"
                      for name in INTERVAL_METRICS)
    lines = [header]
    for name, metrics in sections.items():
        values = [metrics[f"r@{k}"] for k in ks] + [metrics["map"]]
        median = metrics["median_rank"]
        cells = "".join(f"{v:9.2f}" for v in values) + (f"{median:9.1f}" if median else f"{'-':>9}")
        for key in INTERVAL_METRICS:
            interval = metrics.get(f"{key}_ci95")
            text = f"[{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "-"
            cells += f"{text:>18}"
        lines.append(f"{name:<12}{cells}")
    return "\n".join(lines)


def format_breakdown(sections, key, ks=REPORT_KS):
    """Text table of ``sections[name][key]`` (``{label: metrics}``): R@1 and R@max(k) of
    each ranking per label."""
    names = [name for name in sections if key in sections[name]]
    labels = sorted({label for name in names for label in sections[name][key]})
    first, last = f"r@{ks[0]}", f"r@{ks[-1]}"
    header = f"{key[3:]:<24}{'n':>7}" + "".join(
        f"{name + ' ' + first.upper():>18}{name + ' ' + last.upper():>18}" for name in names
    )
    lines = [header]
    for label in labels:
        count = sections[names[0]][key][label]["num_queries"]
        row = f"{label[:23]:<24}{count:>7}"
        for name in names:
            metrics = sections[name][key][label]
            row += f"{metrics[first]:18.2f}{metrics[last]:18.2f}"
        lines.append(row)
    return "\n".join(lines)


def write_metrics(path, report):
    atomic_write(path, lambda handle: json.dump(report, handle, indent=2), mode="w")


def write_rankings(path, result, ground_truth, info, reranked=None):
    """One JSON line per ground-truth query: its ids, ``info`` (``query_info``), ground
    truth, ranks and top lists (and the re-ranked ones)."""
    gt = {normalize_id(q): v for q, v in ground_truth.items()}
    missing = set(result.missing)

    def write(handle):
        for row, query_id in enumerate(result.query_ids):
            line = {"video_id": query_id}
            line.update(info.get(query_id, {}))
            line["gt"] = gt[query_id]
            line["missing"] = query_id in missing
            line["rank"] = _rank_value(result.ranks[row])
            line["topk"] = _top_list(result, row)
            if reranked is not None:
                line["pmd_rank"] = _rank_value(reranked.ranks[row])
                line["pmd_topk"] = _top_list(reranked, row)
            handle.write(json.dumps(line) + "\n")

    atomic_write(path, write, mode="w")


def _top_list(result, row):
    return [[i, round(s, 6) if math.isfinite(s) else None] for i, s in result.topk_ids(row)]


def _rank_value(rank):
    rank = float(rank)
    return int(rank) if math.isfinite(rank) else None


def format_report(report, out_dir):
    """The final console report of the evaluation scripts."""
    sections = {name: report[name] for name in ("icl", "pmd_rerank") if name in report}
    icl = report["icl"]
    lines = [
        f"checkpoint: {report['checkpoint']}",
        f"queries: {icl['num_queries']} with ground truth "
        f"({icl['num_missing']} without prediction, counted as misses; "
        f"{icl['num_no_positive_in_gallery']} whose ground truth is not in their gallery; "
        f"{icl['num_extra']} encoded without ground truth, not scored)",
        f"gallery: {report['num_gallery_images']} images ({report['gallery']})",
        format_table(sections),
    ]
    for key in sorted(k for k in icl if k.startswith("by_")):
        lines.append(format_breakdown(sections, key))
    lines.extend(_rerank_lines(report.get("pmd_rerank"), report.get("bootstrap")))
    lines.extend(_box_lines(report.get("boxes"), report.get("breakdown_sources")))
    lines.extend(coverage_lines(report.get("text")))
    metrics, rankings = os.path.join(out_dir, METRICS_FILE), os.path.join(out_dir, RANKINGS_FILE)
    lines.append(f"wrote {metrics} and {rankings}")
    return "\n".join(lines)


def _box_lines(boxes, breakdown_sources):
    """Console lines on the query boxes (source, full-frame fallbacks) and derived labels."""
    lines = []
    if boxes is not None and boxes["source"] == "none":
        lines.append(f"boxes: none (box_mode {boxes['box_mode']}; query frames uncut)")
    elif boxes is not None:
        lines.append(
            f"boxes: {boxes['source']} ({boxes['file']}, {boxes['units']}, rule "
            f"{boxes['box_rule']}, box_mode {boxes['box_mode']}): "
            f"{boxes['frames_with_box']} encoded query frames with a box, "
            f"{boxes['frames_full_frame']} without one used the full frame"
        )
    for name, source in sorted((breakdown_sources or {}).items()):
        lines.append(f"by_{name}: {source}")
    return lines


def _rerank_lines(rerank, bootstrap):
    """Console lines on the re-ranking: its score, the weight search, the R@1 change."""
    if rerank is None:
        return []
    lines = []
    if rerank["rerank_fusion"] == "sum":
        how = f"{rerank['icl_logit_scale']:.2f} * cos + {rerank['rerank_weight']:g} * PMD"
        search = rerank.get("weight_search")
        if search:
            grid = ", ".join(f"{row['weight']:g}: {row['r@1']:.2f}" for row in search["grid"])
            how += f" (weight chosen on {search['split']}, R@1 by weight: {grid})"
        lines.append(f"pmd_rerank score: {how}")
    change = rerank.get("r@1_vs_icl")
    if change:
        low, high = change["ci95"]
        verdict = "no difference" if low <= 0.0 <= high else "a difference"
        level = 100 * (bootstrap or {}).get("level", DEFAULT_LEVEL)
        lines.append(
            f"pmd_rerank vs icl: R@1 {change['difference']:+.2f} points, {level:g} % paired "
            f"bootstrap interval [{low:+.2f}, {high:+.2f}] ({verdict})"
        )
    if rerank["num_candidate_mismatch"]:
        lines.append(
            f"note: {rerank['num_candidate_mismatch']} queries' batch-time "
            "candidates differed from the final ICL top-k (near-equal scores)"
        )
    return lines
