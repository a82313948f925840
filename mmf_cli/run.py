#!/usr/bin/env python
"""Train or evaluate: ``mmf_run config=<yaml> model=<name> dataset=<name> [key=value ...]``.

Also ``python mmf_cli/run.py ...`` from a checkout, and ``torchrun --nproc_per_node=N
mmf_cli/run.py ...`` (or ``python -m torch.distributed.launch``) for several processes.
Errors in the input (config files, keys, names, paths) print one line and exit with 1;
Ctrl-C prints one line and exits with 130 (during training after saving ``current.ckpt`` at
the last finished update); ``--debug`` shows the full traceback instead.
"""
import os
import sys

if __package__ in (None, ""):
    # Run as a script from a checkout: make the repository's ``mmf`` importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402

from mmf.common.errors import ConfigError, MMFError  # noqa: E402

logger = logging.getLogger("mmf_cli.run")

_LAUNCHER_FLAG = re.compile(r"^--local[-_]rank(=\d+)?$")


def parse_args(argv):
    """``--debug`` and the launcher's ``--local_rank N`` / ``--local-rank=N`` may appear
    anywhere; everything else is ``key=value`` options."""
    parser = argparse.ArgumentParser(prog="mmf_run", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument(
        "--local_rank",
        "--local-rank",
        type=int,
        default=None,
        help="set by torch.distributed.launch; ignored (LOCAL_RANK is read from the environment)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config=... model=... key=value")
    args = parser.parse_args(argv)
    opts, debug, skip_value = [], args.debug, False
    for token in args.opts:
        if skip_value:
            skip_value = False
        elif token == "--debug":
            debug = True
        elif _LAUNCHER_FLAG.match(token):
            skip_value = "=" not in token
        else:
            opts.append(token)
    args.opts, args.debug = opts, debug
    return args


def main(opts):
    """Build the config, join the process group, train; returns the trainer."""
    from mmf.utils.build import build_trainer
    from mmf.utils.configuration import Configuration
    from mmf.utils.distributed import env_from_environ, get_rank, init_distributed
    from mmf.utils.general import ensure_writable_dir
    from mmf.utils.logger import setup_logger

    config = Configuration(opts).get_config()
    distributed = config.distributed
    if distributed.get("debug", False):
        env = env_from_environ()
        if env.is_distributed:
            raise ConfigError(
                f"distributed.debug=true (deprecated: single process) but the launcher "
                f"started {env.world_size} processes; drop the key or launch one process"
            )
        logger.warning("distributed.debug is deprecated; a run without torchrun is single-process")
    else:
        on_gpu = str(config.training.device).startswith("cuda")
        backend = distributed.get("backend") if on_gpu else "gloo"
        init_distributed(backend, int(distributed.get("timeout", 1800)))
    rank = get_rank()
    if rank == 0:
        ensure_writable_dir(config.env.save_dir, "env.save_dir")
    setup_logger(config.env.save_dir if rank == 0 else None, rank, config.training.logger_level)
    trainer = build_trainer(config)
    trainer.load()
    trainer.train()
    return trainer


def _one_line(err):
    text = str(err).strip()
    if "Original Traceback" in text:
        # Re-raised from a DataLoader worker: the message is the traceback's last line.
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def run(argv=None):
    """Console-script entry point (``mmf_run``)."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        main(args.opts)
    except MMFError as err:
        if args.debug:
            raise
        print(f"mmf_run: error: {_one_line(err)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        if args.debug:
            raise
        print(f"mmf_run: {err or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    finally:
        import torch.distributed as dist

        from mmf.utils.logger import close_handlers

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        # Close train.log and the console handler: a caller in the same process (a test)
        # must not log into a stream it has closed.
        close_handlers()


if __name__ == "__main__":
    run()
