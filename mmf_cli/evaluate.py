"""Command line of ``lpr_eval.py`` and ``movingfashion_eval.py`` (see ``mmf.evaluation``)."""
import argparse
import dataclasses
import sys

from mmf.common.errors import MMFError
from mmf.evaluation.loading import load_eval_config, load_eval_data
from mmf.evaluation.reports import format_report
from mmf.evaluation.run import EvalOptions, default_device, run_evaluation
from mmf.utils.logger import setup_logger


def add_eval_arguments(parser):
    """The command-line options both evaluation scripts share."""
    parser.add_argument(
        "-f", "--config_file", required=True, help="save/<exp>/config.yaml of the run"
    )
    parser.add_argument(
        "--checkpoint", default=None,
        help="model weights (default: <env.save_dir>/<model>_final.pth, else next to the config)",
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
        "--topk", type=int, default=10, help="ids kept per query in rankings.jsonl (10)"
    )
    parser.add_argument("--out", default=None, help="output folder (results/<experiment_name>)")
    parser.add_argument(
        "--visualize", type=int, default=0, help="draw the first N queries as PNG files"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


def eval_options(args):
    """The ``EvalOptions`` of parsed command-line ``args`` (``--data_dir`` is not one: it
    goes to ``load_eval_config``)."""
    names = [field.name for field in dataclasses.fields(EvalOptions)]
    return EvalOptions(**{name: getattr(args, name) for name in names})


def cli_main(argv, dataset, global_gallery, description):
    """Entry point of ``lpr_eval.py`` / ``movingfashion_eval.py``; returns the exit status.

    Input errors (``MMFError``: config, data, checkpoint) print one line and return 1.
    """
    summary = description.strip().splitlines()[0]
    parser = add_eval_arguments(argparse.ArgumentParser(description=summary))
    args = parser.parse_args(argv)
    setup_logger()
    try:
        config, dataset_name = load_eval_config(args.config_file, dataset, args.data_dir)
        data = load_eval_data(config, dataset_name, global_gallery)
        options = eval_options(args)
        progress = sys.stderr.isatty()
        report, out_dir = run_evaluation(options, config, dataset_name, data, progress=progress)
    except MMFError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(format_report(report, out_dir))
    return 0
