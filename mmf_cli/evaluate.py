"""Command line of ``lpr_eval.py`` and ``movingfashion_eval.py`` (see ``mmf.evaluation``).

Under ``torchrun --nproc_per_node=N`` the processes join one group (gloo with ``--device
cpu``, else nccl) and split the encoding; rank 0 alone prints and writes the outputs.
"""
import argparse
import dataclasses
import sys

import torch.distributed as dist

from mmf.common.errors import MMFError
from mmf.evaluation.bootstrap import DEFAULT_RESAMPLES
from mmf.evaluation.loading import load_eval_config, load_eval_data
from mmf.evaluation.reports import format_report
from mmf.evaluation.rerank import FUSIONS
from mmf.evaluation.run import AUTO, EvalOptions, check_options, default_device, run_evaluation
from mmf.evaluation.text_coverage import TEXT_CHOICES
from mmf.utils.distributed import init_distributed, raise_together
from mmf.utils.logger import setup_logger


def add_eval_arguments(parser):
    """The command-line options both evaluation scripts share."""
    parser.add_argument(
        "-f", "--config_file", required=True, help="save/<exp>/config.yaml of the run"
    )
    parser.add_argument(
        "--checkpoint", default=None,
        help="model weights (default: <model>_final.pth next to the config, else in the "
        "config's env.save_dir)",
    )
    parser.add_argument(
        "--data_dir", default=None, help="replaces the dataset's data_dir of the config"
    )
    parser.add_argument("--batch_size", type=int, default=32, help="images or clips per batch (32)")
    parser.add_argument("--num_workers", type=int, default=4, help="data loader processes (4)")
    parser.add_argument(
        "--device", default=default_device(),
        help="cpu or cuda[:N] for encoding and ranking (cuda when available)",
    )
    parser.add_argument(
        "-c", "--conditional", default=None,
        help="file of video ids (first tab field per line); only these queries are evaluated",
    )
    parser.add_argument(
        "--rerank_topk", type=int, default=0,
        help="re-rank the ICL top K with the PMD score (0: off)",
    )
    parser.add_argument(
        "--rerank_fusion", choices=FUSIONS, default="pmd",
        help="re-ranking score: pmd (the PMD score alone) or sum (ICL logit s^2*cos + "
        "BETA * PMD score) (pmd)",
    )
    parser.add_argument(
        "--rerank_weight", type=_weight, default=None, metavar="BETA|auto",
        help="BETA of --rerank_fusion sum (1.0); auto: the best of a small grid by R@1 on the "
        "validation split (annotations.val), never the test split",
    )
    parser.add_argument(
        "--topk", type=int, default=10, help="ids kept per query in rankings.jsonl (10)"
    )
    parser.add_argument(
        "--out", default=None,
        help="output folder (results/<experiment_name>/<checkpoint stem>-<path hash>)",
    )
    parser.add_argument(
        "--visualize", type=int, default=0, help="draw the first N queries as PNG files"
    )
    parser.add_argument(
        "--bootstrap_resamples", type=int, default=DEFAULT_RESAMPLES,
        help=f"query resamples of the 95%% intervals of R@1 and mAP ({DEFAULT_RESAMPLES})",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed, also of the bootstrap (0)"
    )
    parser.add_argument(
        "--boxes", default="auto", metavar="none|gt|FILE",
        help="boxes of the query frames for a model with a box_mode: none, gt (the test box "
        "file, dataset test_box_file) or a predicted-box json (scripts/detect_boxes.py); frames "
        "without a box use the full frame (counted in the report). Default: gt when the model "
        "was trained with a box_mode, else none",
    )
    parser.add_argument(
        "--text", choices=TEXT_CHOICES, default=None,
        help="texts a text model reads: none, asr (clips), title (shop images) or both "
        "(default: those it was trained with)",
    )
    return parser


def _weight(text):
    if text == AUTO:
        return AUTO
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None


def eval_options(args):
    """The ``EvalOptions`` of parsed command-line ``args`` (``--data_dir`` is not one: it
    goes to ``load_eval_config``)."""
    names = [field.name for field in dataclasses.fields(EvalOptions)]
    return EvalOptions(**{name: getattr(args, name) for name in names})


def cli_main(argv, dataset, global_gallery, description):
    """Entry point of ``lpr_eval.py`` / ``movingfashion_eval.py``; returns the exit status.

    Input errors (``MMFError``: options, config, data, checkpoint, output folder) print one
    line and return 1; option values are checked before anything is loaded. In a process
    group rank 0 prints (also another rank's error, naming it); the other ranks are quiet.
    """
    summary = description.strip().splitlines()[0]
    parser = add_eval_arguments(argparse.ArgumentParser(description=summary))
    args = parser.parse_args(argv)
    joined = not dist.is_initialized()  # a caller's own group is left to the caller
    env = init_distributed("nccl" if str(args.device).startswith("cuda") else "gloo")
    setup_logger(rank=env.rank)
    try:
        options, config, dataset_name, data = raise_together(
            lambda: _load(args, dataset, global_gallery)
        )
        progress = sys.stderr.isatty()
        report, out_dir = run_evaluation(options, config, dataset_name, data, progress=progress)
    except MMFError as err:
        if env.rank == 0:
            print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()
    if report is not None:
        print(format_report(report, out_dir))
    return 0


def _load(args, dataset, global_gallery):
    """``(options, config, dataset_name, data)`` of parsed command-line ``args``."""
    options = eval_options(args)
    check_options(options)
    config, dataset_name = load_eval_config(args.config_file, dataset, args.data_dir)
    data = load_eval_data(config, dataset_name, global_gallery, boxes=args.boxes)
    return options, config, dataset_name, data
