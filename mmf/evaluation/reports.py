"""What an evaluation writes: ``metrics.json``, ``rankings.jsonl`` and the console report.

``metrics.json`` holds one section per ranking (``icl``, and ``pmd_rerank`` with re-ranking):
R@k, mAP, median rank, counts, and the same metrics per breakdown label (``by_category``,
``by_difficulty``). ``rankings.jsonl`` has a line per ground-truth query: its ids, ground
truth, rank and top-k ids with scores. ``format_report`` is the console summary.
"""
import json
import math
import os

from mmf.datasets.ids import normalize_id
from mmf.evaluation.metrics import DEFAULT_KS, metrics_by_label, summarize

METRICS_FILE = "metrics.json"
RANKINGS_FILE = "rankings.jsonl"
REPORT_KS = DEFAULT_KS


def sections_of(result, labels):
    """Summary metrics of ``result`` and, per breakdown ``name``, ``by_<name>``."""
    section = summarize(result, REPORT_KS)
    for name, mapping in labels.items():
        section[f"by_{name}"] = metrics_by_label(result, mapping)
    return section


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
    """Text table, one row per ranking (e.g. ``icl`` and ``pmd_rerank``)."""
    columns = [f"R@{k}" for k in ks] + ["mAP", "MedR"]
    lines = [f"{'ranking':<12}" + "".join(f"{c:>9}" for c in columns)]
    for name, metrics in sections.items():
        values = [metrics[f"r@{k}"] for k in ks] + [metrics["map"]]
        median = metrics["median_rank"]
        cells = "".join(f"{v:9.2f}" for v in values) + (f"{median:9.1f}" if median else f"{'-':>9}")
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
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)


def write_rankings(path, result, ground_truth, info, reranked=None):
    """One JSON line per ground-truth query: its ids, ``info`` (``query_info``), ground
    truth, ranks and top lists (and the re-ranked ones)."""
    gt = {normalize_id(q): v for q, v in ground_truth.items()}
    missing = set(result.missing)
    with open(path, "w", encoding="utf-8") as handle:
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
        f"queries: {icl['num_queries']} with ground truth "
        f"({icl['num_missing']} without prediction, counted as misses; "
        f"{icl['num_no_positive_in_gallery']} whose ground truth is not in their gallery; "
        f"{icl['num_extra']} encoded without ground truth, not scored)",
        f"gallery: {report['num_gallery_images']} images ({report['gallery']})",
        format_table(sections),
    ]
    for key in sorted(k for k in icl if k.startswith("by_")):
        lines.append(format_breakdown(sections, key))
    if "pmd_rerank" in report and report["pmd_rerank"]["num_candidate_mismatch"]:
        lines.append(
            f"note: {report['pmd_rerank']['num_candidate_mismatch']} queries' batch-time "
            "candidates differed from the final ICL top-k (near-equal scores)"
        )
    metrics, rankings = os.path.join(out_dir, METRICS_FILE), os.path.join(out_dir, RANKINGS_FILE)
    lines.append(f"wrote {metrics} and {rankings}")
    return "\n".join(lines)
