"""Ablation on the embedded demo data (``make ablation``; about an hour on 2 CPU cores).

Trains ICL, ICL + PMD, RICE (ICL + PMD + PFR) and RICE with bidirectional PMD with several
training seeds each (same data, same budget), evaluates each with ``lpr_eval.py``: the ICL
ranking and, for the PMD variants, the re-ranking of the ICL top K by the PMD score alone
(``--rerank_fusion pmd``) and by ``icl_logit + beta * pmd`` with beta picked on the val split
(``--rerank_fusion sum --rerank_weight auto``). Writes a markdown table of the mean and the
sample standard deviation over seeds per row to ``--table``.

Two options add rows (ICL ranking only, to keep the time):

- ``--text``: each variant again with the text settings of ``demo_vic_vim_rec_text.yaml``
  (``model_config.rice.text`` given on the command line), evaluated with its texts and with
  ``--text none`` (how gracefully it degrades without them); under the table, the paired R@1
  change of each from the variant without text, seed by seed (``text_changes``);
- ``--boxes``: RICE with ``box_mode`` crop and patch_mask, each evaluated with ``--boxes
  none``, ``gt`` and the boxes of a detector (``scripts/train_detector.py`` on the train
  file's boxes for ``--detector_minutes``, then ``scripts/detect_boxes.py`` on the test query
  frames; its AP50 on them goes into the table's notes), or of ``--pred_boxes FILE``.

    python scripts/ablation.py --data_dir demo_data                      # make ablation
    python scripts/ablation.py --data_dir demo_data --text --boxes       # + text and box rows
    python scripts/ablation.py --seeds 0 --max_updates 5 --table /tmp/ablation.md   # smoke run
"""
import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import demo
from demo_pictures import read_rankings
from omegaconf import OmegaConf

VARIANTS = ("vic", "vic_vim", "vic_vim_rec", "vic_vim_rec_bi")
COLUMNS = (("r@1", "R@1"), ("r@5", "R@5"), ("r@10", "R@10"), ("map", "mAP"))
TEXT_CONFIG = demo.CONFIGS / "demo_vic_vim_rec_text.yaml"
BOX_VARIANT = "vic_vim_rec"
# box_mode -> its extra overrides: patch_mask pools the encoder's tokens in its embedding
# space, so its run takes the tokens from the final (1280-wide) features of the demo's
# EfficientNet instead of its last (320-wide) stage.
BOX_MODES = {
    "crop": (),
    "patch_mask": ("model_config.rice.image_encoder.params.token_stage=null",),
}
RERANKINGS = ("pmd", "sum")


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
    parser.add_argument(
        "--fusions", nargs="+", default=["pmd", "sum"], choices=["pmd", "sum"],
        help="re-rankings of the PMD variants: PMD score alone, ICL + beta * PMD (beta on val)",
    )
    parser.add_argument("--results_dir", default="results/ablation", help="lpr_eval.py outputs")
    parser.add_argument("--table", default="results/ablation.md", help="markdown table file")
    parser.add_argument(
        "--resume", action="store_true",
        help="reuse the evaluations (metrics.json + rankings.jsonl) and trained runs already "
        "on disk (an interrupted ablation); a run whose evaluations are all there is not "
        "trained again",
    )
    parser.add_argument(
        "--text", action="store_true",
        help="add each variant trained with text, evaluated with and without it",
    )
    parser.add_argument(
        "--boxes", action="store_true",
        help="add RICE with box_mode crop and patch_mask, evaluated with no, gt and predicted "
        "boxes",
    )
    parser.add_argument(
        "--detector_minutes", type=float, default=10.0,
        help="--boxes: CPU minutes of detector training",
    )
    parser.add_argument(
        "--pred_boxes", help="--boxes: a predicted-box json to use instead of training a detector"
    )
    args = parser.parse_args(argv)
    if args.pred_boxes and not args.boxes:
        parser.error("--pred_boxes needs --boxes")
    return args


@dataclass(frozen=True)
class Run:
    """One trained configuration: ``key`` names its table rows (``labels[key]``), ``variant``
    its demo config, ``suffix`` its experiment name (``demo_rice_<variant><suffix>_seed<s>``),
    ``overrides`` its extra command-line options, ``evaluations`` (row key, ``lpr_eval.py``
    options) pairs."""

    key: str
    label: str
    variant: str
    suffix: str = ""
    overrides: tuple = ()
    evaluations: tuple = (("icl", ()),)


def text_override(variant, config=TEXT_CONFIG):
    """``model_config.rice.text=<json>``: the text settings of ``config``, so that one file
    defines them for every variant; without PMD or PFR (``vic``) there are no cross-attention
    keys for the ``tokens`` fusion to join, so it is left out."""
    text = OmegaConf.to_container(OmegaConf.load(config).model_config.rice.text, resolve=True)
    if variant == "vic":
        text["fusion"] = [fusion for fusion in text["fusion"] if fusion != "tokens"]
    return "model_config.rice.text=" + json.dumps(text)


def plan_runs(args, pred_boxes=None):
    """The ``Run``s of the command line, in table order: each variant (then its text run),
    then the box runs (``pred_boxes``: the predicted-box file)."""
    runs = []
    for variant in args.variants:
        label = demo.LABELS[variant]
        runs.append(Run(variant, label, variant, evaluations=tuple(
            evaluations(variant, args.rerank_topk, args.fusions))))
        if args.text:
            runs.append(Run(
                f"{variant}+text", f"{label} + text", variant, "_text", (text_override(variant),),
                (("icl", ()), ("text_none", ("--text", "none"))),
            ))
    if args.boxes:
        sources = (("boxes_none", "none"), ("boxes_gt", "gt"), ("boxes_pred", str(pred_boxes)))
        for mode, extra in BOX_MODES.items():
            runs.append(Run(
                f"{BOX_VARIANT}+{mode}", f"{demo.LABELS[BOX_VARIANT]}, box_mode {mode}",
                BOX_VARIANT, f"_{mode}", (f"model_config.rice.box_mode={mode}", *extra),
                tuple((key, ("--boxes", source)) for key, source in sources),
            ))
    return runs


def evaluations(variant, topk, fusions=("pmd", "sum")):
    """(row name, lpr_eval.py re-ranking options) of each evaluation of ``variant``."""
    if "vim" not in variant or not topk:
        return [("icl", [])]
    weights = {"pmd": None, "sum": "auto"}
    return [(name, demo.rerank_arguments(topk, name, weights[name])) for name in fusions]


def rows_of_run(name, metrics, rankings=None):
    """{row key: values} of one evaluation: the ICL ranking (key ``icl`` for the plain and
    the re-ranking evaluations, else ``name``) and the re-ranking, if any.

    Values are the table's metrics plus, for the ICL ranking, ``rankings`` (its
    ``read_rankings`` output) when given and, for a re-ranking, ``r1_change`` (points,
    paired with the ICL ranking of the same run) and ``rerank_weight`` when the fusion has
    one."""
    icl_key = "icl" if name in ("icl", *RERANKINGS) else name
    rows = {icl_key: {key: metrics["icl"][key] for key, _ in COLUMNS}}
    if rankings is not None:
        rows[icl_key]["rankings"] = rankings
    rerank = metrics.get("pmd_rerank")
    if rerank:
        values = {key: rerank[key] for key, _ in COLUMNS}
        values["r1_change"] = demo.r1_change(rerank)[0]
        if "rerank_weight" in rerank:
            values["rerank_weight"] = rerank["rerank_weight"]
        rows[name] = values
    return rows


def run_seed(run, seed, args, paths, log):
    """Trains ``run`` (a ``Run``) with ``seed`` and evaluates it; returns {row key: values}."""
    data_dir, save_root, results_dir = paths
    experiment = f"demo_rice_{run.variant}{run.suffix}_seed{seed}"
    extra = [f"training.experiment_name={experiment}", *run.overrides]
    if args.max_updates is not None:
        extra.append(f"training.max_updates={args.max_updates}")
    outs = [results_dir / f"{experiment}_{name}" for name, _ in run.evaluations]
    evaluated = args.resume and all(_evaluated(out) for out in outs)
    if evaluated:
        print(f"  reusing the evaluations of {experiment}", flush=True)
    elif args.resume and (save_root / experiment / "rice_final.pth").is_file():
        print(f"  reusing the trained run {experiment}", flush=True)
    else:
        demo.train(run.variant, data_dir, seed, extra, log)
    rows = {}
    for (name, options), out in zip(run.evaluations, outs, strict=True):
        if args.resume and _evaluated(out):
            metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            rankings = read_rankings(out / "rankings.jsonl")
        else:
            metrics, rankings = demo.evaluate(experiment, save_root, out, options, log)
        for key, values in rows_of_run(name, metrics, rankings).items():
            rows.setdefault(key, values)
    return rows


def _evaluated(out):
    return (out / "metrics.json").is_file() and (out / "rankings.jsonl").is_file()


def text_changes(results, labels):
    """Lines under the table: per variant with a text run, the paired R@1 change (points,
    95 % bootstrap interval over the test queries) of its text run, evaluated with and
    without its texts, from the variant trained without text, seed by seed and, with
    several seeds, over all of them (each query's mean R@1 over the seeds)."""
    lines = []
    for key, runs in results.items():
        base = results.get(key.removesuffix("+text")) if key.endswith("+text") else None
        if base is None:
            continue
        for row, how in (("icl", "with its texts"), ("text_none", "with --text none")):
            changes = []
            for text_run, base_run in zip(runs, base, strict=True):
                change = demo.r1_change_between(
                    text_run[row]["rankings"], base_run["icl"]["rankings"]
                )
                changes.append(demo.describe_change(change))
            if len(runs) > 1:
                change = demo.r1_change_between(
                    [run[row]["rankings"] for run in runs], [run["icl"]["rankings"] for run in base]
                )
                changes.append(f"over the {len(runs)} seeds {demo.describe_change(change)}")
            plain = labels[key.removesuffix("+text")]
            lines.append(f"{labels[key]}, {how}: R@1 change from {plain} per seed: "
                         f"{'; '.join(changes)}.")
    return "".join(line + "\n\n" for line in lines)


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
    "text_none": "{label}, evaluated without text (--text none)",
    "boxes_none": "{label}, no boxes (--boxes none)",
    "boxes_gt": "{label}, ground-truth boxes (--boxes gt)",
    "boxes_pred": "{label}, detector boxes",
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

    ``results``: {run key: [{row key: values} per seed]} (``run_seed`` output per seed);
    ``labels``: {run key: its name in the table}.
    """
    header = "| model | " + " | ".join(name for _, name in COLUMNS) + " | R@1 vs ICL |"
    lines = [header, "|---|" + "---:|" * (len(COLUMNS) + 1)]
    for variant, runs in results.items():
        for key in (key for key in ROW_NAMES if key in runs[0]):
            rows = [run[key] for run in runs]
            name = _row_name(key, labels[variant], rows, topk)
            lines.append(f"| {name} | " + " | ".join(_row_cells(rows)) + " |")
    return "\n".join(lines)


def detector_step(args, paths, log):
    """Trains the detector on the demo's train boxes for ``--detector_minutes`` and writes
    the predicted boxes of the test query frames; returns (box file, a note with its AP50
    on those frames)."""
    data_dir, save_root, results_dir = paths
    lpr4m = data_dir / "lpr4m"
    annotations = lpr4m / "annotations"
    (gt_file,) = annotations.glob("test_frameid2gtbox_*.json")
    checkpoint = save_root / "demo_detector" / "detector.pth"
    training = results_dir / "detector_training.json"
    boxes_file = results_dir / "detector_boxes.json"
    if not (args.resume and checkpoint.is_file() and training.is_file()):
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        boxes_file.unlink(missing_ok=True)
        demo.run([
            sys.executable, "scripts/train_detector.py",
            "--train_annotation", annotations / "training_videoinfo_demo.txt",
            "--frames_dir", lpr4m / "training_frames", "--out", checkpoint,
            # The time cap ends the training, not the epochs.
            "--epochs", 1000, "--max_minutes", args.detector_minutes, "--workers", 1,
            "--seed", args.data_seed, "--metrics", training,
        ], log)
    accuracy = results_dir / "detector_ap.json"
    # Only the query frames the evaluation reads; detect_boxes.py resumes a partial file.
    clip = OmegaConf.load(demo.CONFIGS / "demo_common.yaml").dataset_config.videotoshop
    clip = clip.processors.masked_video_processor.params
    demo.run([
        sys.executable, "scripts/detect_boxes.py", "--checkpoint", checkpoint,
        "--frames_dir", lpr4m / "query", "--query_json", annotations / "query_tenframes.json",
        "--max_temporal_len", clip.max_temporal_len, "--slice_pos", clip.slice_pos,
        "--out", boxes_file, "--workers", 1, "--gt_boxes", gt_file, "--metrics", accuracy,
    ], log)
    note = detector_note(
        json.loads(training.read_text(encoding="utf-8")),
        json.loads(accuracy.read_text(encoding="utf-8")),
    )
    return boxes_file, note


def detector_note(training, accuracy):
    """The table note of the detector: ``train_detector.py --metrics`` json ``training``,
    ``detect_boxes.py --metrics`` json ``accuracy``."""
    return (
        f"Detector boxes: scripts/train_detector.py trained {training['seconds'] / 60:.1f} min "
        f"({training['steps']} steps) on the train file's boxes; AP50 {accuracy['ap50']:.3f} "
        f"(AP {accuracy['ap']:.3f}) on the {accuracy['frames']} test query frames that the "
        "evaluation reads and that have a ground-truth box."
    )


def _notes(args, note):
    """The lines under the table: what the text and box rows are."""
    lines = []
    if args.text:
        lines.append(
            "+ text: the variant with model_config.rice.text of demo_vic_vim_rec_text.yaml "
            "(for ICL alone, without any tokens fusion: it needs PMD or PFR)."
        )
    if args.boxes:
        lines.append(
            "box_mode patch_mask: tokens from the encoder's final 1280-wide features "
            "(image_encoder.params.token_stage null), the space its patch pooling needs."
        )
        lines.append(note or f"Detector boxes: {args.pred_boxes}.")
    return "".join(line + "\n\n" for line in lines)


def main(argv=None):
    args = parse_args(argv)
    paths = demo._paths(args)
    data_dir, _, results_dir = paths
    results_dir.mkdir(parents=True, exist_ok=True)
    log = results_dir / "ablation.log"
    print(f"ablation: logs of every step go to {log}", flush=True)
    started = time.monotonic()
    demo.ensure_data(data_dir / "lpr4m", args.data_seed, log)
    pred_boxes, note = (Path(args.pred_boxes).resolve() if args.pred_boxes else None), None
    if args.boxes and pred_boxes is None:
        print("ablation: detector for the predicted boxes", flush=True)
        pred_boxes, note = detector_step(args, paths, log)
    results, labels = {}, {}
    for run in plan_runs(args, pred_boxes):
        labels[run.key] = run.label
        for seed in args.seeds:
            print(f"ablation: {run.label}, seed {seed}", flush=True)
            results.setdefault(run.key, []).append(run_seed(run, seed, args, paths, log))
    budget = f"{args.max_updates} updates"
    if args.max_updates is None:
        budget = "the demo configs' budget"
    summary = (
        f"Ablation on the demo data (seed {args.data_seed}): mean ± sample standard deviation "
        f"over training seeds {args.seeds}, {budget} each; numbers in percent.\n\n"
        + ablation_table(results, labels, args.rerank_topk)
        + "\n\n" + _notes(args, note) + text_changes(results, labels)
        + f"Whole ablation {(time.monotonic() - started) / 60:.1f} min."
    )
    print("\n" + summary, flush=True)
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    Path(args.table).write_text(summary + "\n", encoding="utf-8")
    print(f"\nwrote {args.table}")


if __name__ == "__main__":
    sys.exit(main())
