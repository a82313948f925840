"""Ablation on the embedded demo data (``make ablation``; about an hour on 2 CPU cores).

Trains ICL, ICL + PMD, RICE (ICL + PMD + PFR) and RICE with bidirectional PMD with several
training seeds each (same data, same budget), evaluates each with ``lpr_eval.py``: the ICL
ranking and, for the PMD variants, the re-ranking of the ICL top K by the PMD score alone
(``--rerank_fusion pmd``) and by ``icl_logit + beta * pmd`` with beta picked on the val split
(``--rerank_fusion sum --rerank_weight auto``). Writes a markdown table of the mean and the
sample standard deviation over seeds per row to ``--table``.

    python scripts/ablation.py --data_dir demo_data                      # make ablation
    python scripts/ablation.py --seeds 0 --max_updates 5 --table /tmp/ablation.md   # smoke run
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import demo

VARIANTS = ("vic", "vic_vim", "vic_vim_rec", "vic_vim_rec_bi")
COLUMNS = (("r@1", "R@1"), ("r@5", "R@5"), ("r@10", "R@10"), ("map", "mAP"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir", default="demo_data", help="root holding lpr4m/ (created if missing)"
    )
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the demo data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS, help="demo configs"
    )
    parser.add_argument(
        "--max_updates", type=int, default=None, help="override the configs' budget"
    )
    parser.add_argument("--rerank_topk", type=int, default=10, help="re-ranking depth")
    parser.add_argument("--results_dir", default="results/ablation", help="lpr_eval.py outputs")
    parser.add_argument("--table", default="results/ablation.md", help="markdown table file")
    return parser.parse_args(argv)


def evaluations(variant, topk):
    """(row name, lpr_eval.py re-ranking options) of each evaluation of ``variant``."""
    if "vim" not in variant or not topk:
        return [("icl", [])]
    return [
        ("pmd", demo.rerank_arguments(topk, "pmd", None)),
        ("sum", demo.rerank_arguments(topk, "sum", "auto")),
    ]


def rows_of_run(name, metrics):
    """{row key: values} of one evaluation: ``icl`` (from the first one) and the re-ranking.

    Values are the table's metrics plus, for a re-ranking, ``r1_change`` (points, paired with
    the ICL ranking of the same run) and ``rerank_weight`` when the fusion has one."""
    rows = {"icl": {key: metrics["icl"][key] for key, _ in COLUMNS}}
    rerank = metrics.get("pmd_rerank")
    if rerank:
        values = {key: rerank[key] for key, _ in COLUMNS}
        values["r1_change"] = demo.r1_change(rerank)[0]
        if "rerank_weight" in rerank:
            values["rerank_weight"] = rerank["rerank_weight"]
        rows[name] = values
    return rows


def run_variant(variant, seed, args, paths, log):
    """Trains ``variant`` with ``seed`` and evaluates it; returns {row key: values}."""
    data_dir, save_root, results_dir = paths
    experiment = f"demo_rice_{variant}_seed{seed}"
    extra = [f"training.experiment_name={experiment}"]
    if args.max_updates is not None:
        extra.append(f"training.max_updates={args.max_updates}")
    demo.train(variant, data_dir, seed, extra, log)
    rows = {}
    for name, options in evaluations(variant, args.rerank_topk):
        out = results_dir / f"{experiment}_{name}"
        metrics, _ = demo.evaluate(experiment, save_root, out, options, log)
        for key, values in rows_of_run(name, metrics).items():
            rows.setdefault(key, values)
    return rows


def mean_spread(values):
    """(mean, sample standard deviation; 0 for one value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), spread


def _cell(values, signed=False):
    mean, spread = mean_spread(values)
    return f"{mean:+.1f} ± {spread:.1f}" if signed else f"{mean:.1f} ± {spread:.1f}"


ROW_NAMES = {
    "icl": "{label}",
    "pmd": "{label}, PMD re-rank of the top {topk}",
    "sum": "{label}, ICL + beta * PMD re-rank of the top {topk} (beta on val: {weights})",
}


def _row_name(key, label, rows, topk):
    weights = "/".join(f"{row['rerank_weight']:g}" for row in rows if "rerank_weight" in row)
    return ROW_NAMES[key].format(label=label, topk=topk, weights=weights or "-")


def _row_cells(rows):
    cells = [_cell([row[column] for row in rows]) for column, _ in COLUMNS]
    change = [row["r1_change"] for row in rows if "r1_change" in row]
    return cells + [_cell(change, signed=True) if change else ""]


def ablation_table(results, labels, topk):
    """Markdown table: one row per (variant, ranking), the mean ± standard deviation over
    seeds of each metric and, for re-rankings, of the paired R@1 change from the ICL ranking.

    ``results``: {variant: [{row key: values} per seed]} (``run_variant`` output per seed).
    """
    header = "| model | " + " | ".join(name for _, name in COLUMNS) + " | R@1 vs ICL |"
    lines = [header, "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for variant, runs in results.items():
        for key in (key for key in ROW_NAMES if key in runs[0]):
            rows = [run[key] for run in runs]
            name = _row_name(key, labels[variant], rows, topk)
            lines.append(f"| {name} | " + " | ".join(_row_cells(rows)) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    paths = demo._paths(args)
    data_dir, _, results_dir = paths
    results_dir.mkdir(parents=True, exist_ok=True)
    log = results_dir / "ablation.log"
    print(f"ablation: logs of every step go to {log}", flush=True)
    started = time.monotonic()
    demo.ensure_data(data_dir / "lpr4m", args.data_seed, log)
    results = {}
    for variant in args.variants:
        for seed in args.seeds:
            print(f"ablation: {demo.LABELS[variant]}, seed {seed}", flush=True)
            results.setdefault(variant, []).append(run_variant(variant, seed, args, paths, log))
    budget = f"{args.max_updates} updates"
    if args.max_updates is None:
        budget = "the demo configs' budget"
    summary = (
        f"Ablation on the demo data (seed {args.data_seed}): mean ± sample standard deviation "
        f"over training seeds {args.seeds}, {budget} each; numbers in percent.\n\n"
        + ablation_table(results, demo.LABELS, args.rerank_topk)
        + f"\n\nWhole ablation {(time.monotonic() - started) / 60:.1f} min."
    )
    print("\n" + summary, flush=True)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(summary + "\n", encoding="utf-8")
    print(f"\nwrote {args.table}")


if __name__ == "__main__":
    sys.exit(main())
