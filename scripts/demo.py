"""The CPU demo behind ``make demo`` and ``scripts/ablation.sh``.

Steps, each a command a user could run by hand (they are logged as they run):

1. build the embedded demo dataset (``scripts/make_demo_data.py``) unless it exists;
2. measure the zero-shot accuracy of the initial model: a run with ``max_updates=0``
   writes the untrained weights, which ``lpr_eval.py`` evaluates;
3. train each requested variant (``projects/videotoshop/configs/demo_<variant>.yaml``) with
   the same seed and budget;
4. evaluate each with ``lpr_eval.py`` (with PMD re-ranking when the variant has PMD);
5. print a markdown table next to the chance level and write it to ``--table``.

    python scripts/demo.py --data_dir demo_data                       # make demo
    python scripts/demo.py --variants vic vic_vim vic_vim_rec --table results/ablation.md
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "projects" / "videotoshop" / "configs"
KS = (1, 3, 5, 10)
LABELS = {"vic": "ICL", "vic_vim": "ICL + PMD", "vic_vim_rec": "ICL + PMD + PFR (RICE)"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data_dir", default="demo_data", help="root holding lpr4m/ (created if missing)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the demo data and of training")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["vic_vim_rec"],
        choices=sorted(LABELS),
        help="demo configs to train",
    )
    parser.add_argument("--max_updates", type=int, default=None, help="override the configs' budget")
    parser.add_argument(
        "--rerank_topk", type=int, default=10, help="PMD re-ranking depth for PMD variants"
    )
    parser.add_argument(
        "--results_dir", default="results", help="lpr_eval.py outputs: <results_dir>/<experiment>"
    )
    parser.add_argument("--table", default=None, help="also write the markdown table to this file")
    return parser.parse_args(argv)


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
        *extra,
    ]
    return run(command, log)


def evaluate(experiment, save_root, results_dir, rerank_topk, log):
    out = Path(results_dir) / experiment
    command = [
        sys.executable,
        "lpr_eval.py",
        "--config_file",
        str(Path(save_root) / experiment / "config.yaml"),
        "--out",
        str(out),
        "--num_workers",
        "1",
    ]
    if rerank_topk:
        command += ["--rerank_topk", str(rerank_topk)]
    elapsed = run(command, log)
    with open(out / "metrics.json", encoding="utf-8") as handle:
        return json.load(handle), elapsed


def chance_level(lpr4m_dir):
    """Expected R@K (percent) of a random ranking of each query's livestream gallery."""
    annotations = Path(lpr4m_dir) / "annotations"
    (gt_file,) = annotations.glob("test_videoid_to_gtimage_*.json")
    (gallery_file,) = annotations.glob("test_liveid_to_gallery_*.json")
    ground_truth = json.loads(gt_file.read_text())
    galleries = json.loads(gallery_file.read_text())
    totals = dict.fromkeys(KS, 0.0)
    for video_id, positives in ground_truth.items():
        live_id = "-".join(video_id.split("-")[:5])
        size, hits = len(galleries[live_id]), len(set(positives))
        for k in KS:
            # P(at least one of `hits` positives among the first k of a random permutation).
            miss = math.comb(size - hits, k) / math.comb(size, k) if k <= size else 0.0
            totals[k] += 1.0 - miss
    return {f"r@{k}": 100.0 * totals[k] / len(ground_truth) for k in KS}


def table(rows):
    header = "| model | " + " | ".join(f"R@{k}" for k in KS) + " | mAP |"
    lines = [header, "|---|" + "---:|" * (len(KS) + 1)]
    for name, metrics in rows:
        cells = [f"{metrics[f'r@{k}']:.1f}" for k in KS]
        cells.append(f"{metrics['map']:.1f}" if metrics.get("map") is not None else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    data_dir = Path(args.data_dir).resolve()
    lpr4m = data_dir / "lpr4m"
    save_root = Path(os.environ.get("MMF_SAVE_DIR", "save"))
    if not save_root.is_absolute():
        save_root = ROOT / save_root
    results_dir = Path(args.results_dir)
    if not results_dir.is_absolute():
        results_dir = ROOT / results_dir
    results_dir.mkdir(parents=True, exist_ok=True)
    log = results_dir / "demo.log"
    print(f"demo: logs of every step go to {log}", flush=True)
    started = time.monotonic()
    budget = [f"training.max_updates={args.max_updates}"] if args.max_updates is not None else []

    if not (lpr4m / "annotations" / "gallery_main.txt").is_file():
        print("[1/4] building the demo dataset", flush=True)
        run([sys.executable, "scripts/make_demo_data.py", "--out", lpr4m, "--seed", args.seed], log)
    else:
        print(f"[1/4] demo dataset found in {lpr4m}", flush=True)

    print("[2/4] zero-shot accuracy of the initial model", flush=True)
    first = args.variants[0]
    zero_shot = f"demo_rice_{first}_zeroshot"
    untrained = ["training.max_updates=0", "run_type=train", f"training.experiment_name={zero_shot}"]
    train(first, data_dir, args.seed, untrained, log)
    zero_metrics, _ = evaluate(zero_shot, save_root, results_dir, 0, log)

    trained = []
    for index, variant in enumerate(args.variants):
        print(f"[3/4] training {LABELS[variant]} ({index + 1}/{len(args.variants)})", flush=True)
        train_time = train(variant, data_dir, args.seed, budget, log)
        print(f"[4/4] evaluating {LABELS[variant]}", flush=True)
        rerank = args.rerank_topk if "vim" in variant else 0
        metrics, _ = evaluate(f"demo_rice_{variant}", save_root, results_dir, rerank, log)
        trained.append((variant, metrics, train_time))

    rows = [("chance (random ranking)", dict(chance_level(lpr4m), map=None))]
    rows.append((f"zero-shot (untrained {LABELS[first]})", zero_metrics["icl"]))
    for variant, metrics, _ in trained:
        rows.append((f"{LABELS[variant]}, trained", metrics["icl"]))
        if "pmd_rerank" in metrics:
            depth = metrics["pmd_rerank"].get("rerank_topk", args.rerank_topk)
            rows.append((f"{LABELS[variant]}, + PMD re-rank of top {depth}", metrics["pmd_rerank"]))
    queries = zero_metrics["icl"]["num_queries"]
    summary = (
        f"Demo test set: {queries} query clips ranked against their livestream's gallery "
        f"({zero_metrics['num_gallery_images']} gallery images); numbers in percent.\n\n"
        + table(rows)
        + "\n\n"
        + "Training time (CPU): "
        + ", ".join(f"{LABELS[v]} {t / 60:.1f} min" for v, _, t in trained)
        + f"; whole demo {(time.monotonic() - started) / 60:.1f} min."
    )
    print("\n" + summary, flush=True)
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(summary + "\n", encoding="utf-8")
        print(f"\nwrote {args.table}")


if __name__ == "__main__":
    main()
