"""The CPU demo behind ``make demo`` (and the runs of ``scripts/ablation.py``).

Steps, each a command a user could run by hand (they are logged as they run):

1. build the embedded demo dataset (``scripts/make_demo_data.py``) unless it exists;
2. measure the zero-shot accuracy of the initial model: a run with ``max_updates=0``
   writes the untrained weights, which ``lpr_eval.py`` evaluates;
3. train each requested variant (``projects/videotoshop/configs/demo_<variant>.yaml``) with
   the same seed and budget;
4. evaluate each with ``lpr_eval.py``, with re-ranking of the ICL top K when the variant has
   PMD (``--rerank_fusion``, ``--rerank_weight``; ``auto`` picks the weight on the val split);
5. print a markdown table next to the chance level, with 95 % bootstrap intervals (resampling
   queries) for R@1 and mAP and, for a re-ranked row, the paired difference of its R@1 to the
   ICL ranking; a re-ranking whose difference is not above 0 with 95 % confidence gets a note
   under the table instead of a row (it does not help); write it to
   ``<results_dir>/demo.md``, and draw ``<results_dir>/before_after.png`` and
   ``<results_dir>/recall_at_k.png``.

By default the demo also trains RICE with the clips' ASR and the shop images' titles
(``demo_vic_vim_rec_text.yaml``), adds its rows and, under the table, its paired R@1 change
from RICE; ``--no_text`` leaves it out (one training less).

    python scripts/demo.py --data_dir demo_data                       # make demo
    python scripts/demo.py --data_dir demo_data --no_text             # RICE alone
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from demo_pictures import plot_before_after, plot_recall_at_k, read_rankings, recall_curve

from mmf.evaluation.bootstrap import paired_difference

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "projects" / "videotoshop" / "configs"
KS = (1, 3, 5, 10)
CURVE_KS = tuple(range(1, 11))
LABELS = {
    "vic": "ICL",
    "vic_vim": "ICL + PMD",
    "vic_vim_rec": "ICL + PMD + PFR (RICE)",
    "vic_vim_rec_bi": "RICE, bidirectional PMD",
    "vic_vim_rec_text": "RICE + text (ASR, titles)",
}
TEXT_VARIANT = "vic_vim_rec_text"
FUSIONS = ("pmd", "sum")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir", default="demo_data", help="root holding lpr4m/ (created if missing)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo data and of training")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["vic_vim_rec", TEXT_VARIANT],
        choices=sorted(LABELS),
        help="demo configs to train",
    )
    parser.add_argument(
        "--max_updates", type=int, default=None, help="override the configs' budget"
    )
    parser.add_argument(
        "--rerank_topk", type=int, default=10, help="re-ranking depth for PMD variants (0: off)"
    )
    parser.add_argument("--rerank_fusion", default="sum", choices=FUSIONS)
    parser.add_argument(
        "--rerank_weight", default="auto", help="BETA of the sum fusion, or auto (val split)"
    )
    parser.add_argument(
        "--results_dir", default="results", help="lpr_eval.py outputs: <results_dir>/<experiment>"
    )
    parser.add_argument(
        "--no_text", action="store_true",
        help=f"leave out {LABELS[TEXT_VARIANT]} (demo_{TEXT_VARIANT}.yaml)",
    )
    args = parser.parse_args(argv)
    if args.no_text:
        args.variants = [variant for variant in args.variants if variant != TEXT_VARIANT]
    return args


def run(command, log):
    """Run one step; stream its output into ``log`` and stop the demo if it fails."""
    command = [str(part) for part in command]
    shown = " ".join(command)
    print(f"$ {shown}", flush=True)
    start = time.monotonic()
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {shown}\n")
        handle.flush()
        result = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"demo: step failed (exit {result.returncode}) after {elapsed:.0f} s; see {log}")
    print(f"  done in {elapsed:.0f} s", flush=True)
    return elapsed


def train(variant, data_dir, seed, extra, log):
    config = CONFIGS / f"demo_{variant}.yaml"
    command = [
        sys.executable,
        "mmf_cli/run.py",
        f"config={config}",
        "model=rice",
        "dataset=videotoshop",
        f"env.data_dir={data_dir}",
        f"training.seed={seed}",
        "training.progress_bar=false",
        # The demo retrains from scratch each time it runs.
        "checkpoint.overwrite=true",
        *extra,
    ]
    return run(command, log)


def rerank_arguments(topk, fusion, weight):
    """``lpr_eval.py`` options of a re-ranking (none when ``topk`` is 0)."""
    if not topk:
        return []
    arguments = ["--rerank_topk", topk, "--rerank_fusion", fusion]
    return arguments + (["--rerank_weight", weight] if fusion == "sum" else [])


def evaluate(experiment, save_root, out, rerank, log):
    """Runs ``lpr_eval.py`` on the run ``experiment`` into ``out`` with the ``rerank``
    options; returns (metrics.json, {video_id: rankings.jsonl line})."""
    command = [
        sys.executable,
        "lpr_eval.py",
        "--config_file",
        str(Path(save_root) / experiment / "config.yaml"),
        "--out",
        str(out),
        "--num_workers",
        "1",
        *rerank,
    ]
    run(command, log)
    with open(Path(out) / "metrics.json", encoding="utf-8") as handle:
        metrics = json.load(handle)
    return metrics, read_rankings(Path(out) / "rankings.jsonl")


def chance_level(lpr4m_dir, ks=KS):
    """Expected R@K (percent) of a random ranking of each query's livestream gallery."""
    annotations = Path(lpr4m_dir) / "annotations"
    (gt_file,) = annotations.glob("test_videoid_to_gtimage_*.json")
    (gallery_file,) = annotations.glob("test_liveid_to_gallery_*.json")
    ground_truth = json.loads(gt_file.read_text())
    galleries = json.loads(gallery_file.read_text())
    totals = dict.fromkeys(ks, 0.0)
    for video_id, positives in ground_truth.items():
        live_id = "-".join(video_id.split("-")[:5])
        size, hits = len(galleries[live_id]), len(set(positives))
        for k in ks:
            # P(at least one of `hits` positives among the first k of a random permutation).
            miss = math.comb(size - hits, k) / math.comb(size, k) if k <= size else 0.0
            totals[k] += 1.0 - miss
    return {f"r@{k}": 100.0 * totals[k] / len(ground_truth) for k in ks}


def r1_change(section):
    """(difference, low, high) of the paired R@1 change from the ICL ranking that a re-ranked
    metrics.json section holds (``r@1_vs_icl``, points, 95 % bootstrap interval)."""
    change = section["r@1_vs_icl"]
    return change["difference"], change["ci95"][0], change["ci95"][1]


def r1_change_between(rankings, baseline):
    """(difference, low, high): the paired R@1 change (points, 95 % bootstrap interval over
    the queries of ``baseline``) of the ICL ranking ``rankings`` from ``baseline``: each a
    ``read_rankings`` output, or a list of them (runs with other training seeds; a query then
    counts its mean R@1 over them, and the bootstrap resamples queries, not runs)."""
    runs = [rankings] if isinstance(rankings, dict) else list(rankings)
    baselines = [baseline] if isinstance(baseline, dict) else list(baseline)
    ids = sorted(baselines[0])

    def per_query(group):
        return [100.0 * sum(r[i]["rank"] == 1 for r in group) / len(group) for i in ids]

    return paired_difference(per_query(runs), per_query(baselines))


def describe_change(change):
    """"+2.1 [0.4, 3.8]", or "no difference (+0.5 [-1.0, 2.0])" when the interval holds 0."""
    difference, low, high = change
    text = f"{difference:+.1f} [{low:+.1f}, {high:+.1f}]"
    return text if low > 0 or high < 0 else f"no difference ({text})"


def _with_interval(metrics, key):
    value = f"{metrics[key]:.1f}"
    interval = metrics.get(f"{key}_ci95")
    return value + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "")


def table(rows):
    """Markdown table of ``rows``: (name, metrics section, R@1 change or None)."""
    header = "| model | R@1 [95 % CI] | R@3 | R@5 | R@10 | mAP [95 % CI] | R@1 vs ICL |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---|"]
    for name, metrics, change in rows:
        cells = [_with_interval(metrics, "r@1")]
        cells += [f"{metrics[f'r@{k}']:.1f}" for k in KS[1:]]
        cells.append(_with_interval(metrics, "map") if metrics.get("map") is not None else "-")
        cells.append(describe_change(change) if change else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def trained_rows(label, metrics):
    """Table rows of one trained variant and the notes under the table: its ICL ranking and,
    if any, its re-ranking, whose row is shown only when it helps (its paired R@1 change
    from the ICL ranking is above 0 with 95 % confidence); otherwise a note gives the
    change and says the row is left out."""
    rows, notes = [(f"{label}, trained", metrics["icl"], None)], []
    rerank = metrics.get("pmd_rerank")
    if rerank:
        how = rerank["rerank_fusion"]
        if "rerank_weight" in rerank:
            how += f", beta {rerank['rerank_weight']:g}"
        name = f"{label}, + re-rank of top {rerank['rerank_topk']} ({how})"
        change = r1_change(rerank)
        if change[1] > 0:
            rows.append((name, rerank, change))
        else:
            notes.append(
                f"{name}: R@1 vs ICL {describe_change(change)}; it does not help, so its row "
                "is left out (scripts/ablation.py measures every re-ranking)."
            )
    return rows, notes


def text_notes(variants, rankings):
    """The note on the text variant, when RICE was trained too: its paired R@1 change from
    RICE. ``rankings``: ``read_rankings`` output of each variant, in order."""
    by_variant = dict(zip(variants, rankings, strict=True))
    if TEXT_VARIANT not in by_variant or "vic_vim_rec" not in by_variant:
        return []
    change = r1_change_between(by_variant[TEXT_VARIANT], by_variant["vic_vim_rec"])
    return [f"{LABELS[TEXT_VARIANT]}: R@1 vs {LABELS['vic_vim_rec']} (ICL rankings, paired over "
            f"the queries) {describe_change(change)}."]


def draw_pictures(results_dir, lpr4m, zero_shot, trained_runs):
    """``before_after.png`` (zero-shot vs the first trained variant) and ``recall_at_k.png``."""
    _, rankings = trained_runs[0]
    plot_before_after(
        results_dir / "before_after.png", lpr4m, [("zero-shot", zero_shot), ("trained", rankings)]
    )
    chance = chance_level(lpr4m, CURVE_KS)
    curves = [("chance", [chance[f"r@{k}"] for k in CURVE_KS])]
    curves.append(("zero-shot", recall_curve(zero_shot, CURVE_KS)))
    curves += [(f"{name}, trained", recall_curve(r, CURVE_KS)) for name, r in trained_runs]
    plot_recall_at_k(
        results_dir / "recall_at_k.png", curves, f"Demo test set ({len(zero_shot)} query clips)"
    )
    print(f"wrote {results_dir / 'before_after.png'} and {results_dir / 'recall_at_k.png'}")


def _paths(args):
    """(data_dir, save_root, results_dir), absolute."""
    save_root = Path(os.environ.get("MMF_SAVE_DIR", "save"))
    results_dir = Path(args.results_dir)
    return (
        Path(args.data_dir).resolve(),
        save_root if save_root.is_absolute() else ROOT / save_root,
        results_dir if results_dir.is_absolute() else ROOT / results_dir,
    )


def ensure_data(lpr4m, seed, log):
    """Builds the demo dataset in ``lpr4m`` unless it is there."""
    if (lpr4m / "annotations" / "gallery_main.txt").is_file():
        print(f"demo dataset found in {lpr4m}", flush=True)
        return
    print(f"building the demo dataset in {lpr4m}", flush=True)
    run([sys.executable, "scripts/make_demo_data.py", "--out", lpr4m, "--seed", seed], log)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    data_dir, save_root, results_dir = _paths(args)
    lpr4m = data_dir / "lpr4m"
    results_dir.mkdir(parents=True, exist_ok=True)
    log = results_dir / "demo.log"
    print(f"demo: logs of every step go to {log}", flush=True)
    started = time.monotonic()
    budget = [f"training.max_updates={args.max_updates}"] if args.max_updates is not None else []
    print("[1/4] demo dataset", flush=True)
    ensure_data(lpr4m, args.seed, log)

    print("[2/4] zero-shot accuracy of the initial model", flush=True)
    first = args.variants[0]
    zero_shot = f"demo_rice_{first}_zeroshot"
    untrained = ["training.max_updates=0", "run_type=train"]
    untrained.append(f"training.experiment_name={zero_shot}")
    train(first, data_dir, args.seed, untrained, log)
    zero_metrics, zero_rankings = evaluate(zero_shot, save_root, results_dir / zero_shot, [], log)

    rows = [("chance (random ranking)", dict(chance_level(lpr4m), map=None), None)]
    rows.append((f"zero-shot (untrained {LABELS[first]})", zero_metrics["icl"], None))
    trained_runs, times, notes = [], [], []
    for index, variant in enumerate(args.variants):
        print(f"[3/4] training {LABELS[variant]} ({index + 1}/{len(args.variants)})", flush=True)
        times.append(train(variant, data_dir, args.seed, budget, log))
        print(f"[4/4] evaluating {LABELS[variant]}", flush=True)
        topk = args.rerank_topk if "vim" in variant else 0
        rerank = rerank_arguments(topk, args.rerank_fusion, args.rerank_weight)
        experiment = f"demo_rice_{variant}"
        metrics, rankings = evaluate(experiment, save_root, results_dir / experiment, rerank, log)
        variant_rows, variant_notes = trained_rows(LABELS[variant], metrics)
        rows += variant_rows
        notes += variant_notes
        trained_runs.append((LABELS[variant], rankings))
    notes += text_notes(args.variants, [rankings for _, rankings in trained_runs])

    draw_pictures(results_dir, lpr4m, zero_rankings, trained_runs)
    summary = (
        f"Demo test set: {zero_metrics['icl']['num_queries']} query clips ranked against their "
        f"livestream's gallery ({zero_metrics['num_gallery_images']} gallery images); numbers in "
        "percent, [95 % bootstrap interval over queries].\n\n"
        + table(rows)
        + "".join(f"\n\n{note}" for note in notes)
        + "\n\nTraining time (CPU): "
        + ", ".join(
            f"{LABELS[v]} {t / 60:.1f} min" for v, t in zip(args.variants, times, strict=True)
        )
        + f"; whole demo {(time.monotonic() - started) / 60:.1f} min."
    )
    print("\n" + summary, flush=True)
    (results_dir / "demo.md").write_text(summary + "\n", encoding="utf-8")
    print(f"\nwrote {results_dir / 'demo.md'}")


if __name__ == "__main__":
    main()
