"""Process-wide logging: rank 0 writes to stdout and ``save_dir/train.log``.

Handlers go on the root logger (library modules use ``logging.getLogger(__name__)``).
Other ranks log errors only, to stderr, so a multi-process run prints each message once.
"""
import logging
import os
import sys

_FORMAT = "%(asctime)s | %(levelname)s | %(name)s: %(message)s"
_DATEFMT = "%Y-%m-%dT%H:%M:%S"
_MARK = "_mmf_handler"


class _ConsoleHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` / ``sys.stderr`` is when a record is emitted, so a
    handler that outlives a redirection (a test's captured output) never holds a closed file."""

    def __init__(self, stream_name):
        self._stream_name = stream_name
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value):
        pass


def setup_logger(save_dir=None, rank=0, level="info"):
    """(Re)configure logging; calling it again replaces the handlers it added before.

    Args:
        save_dir: folder of ``train.log`` (rank 0 only); None for console only.
        rank: this process's rank; only rank 0 logs below ERROR.
        level: ``debug``, ``info``, ``warning``, ...
    """
    numeric = logging.getLevelName(str(level).upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    handlers = []
    if rank == 0:
        handlers.append(_ConsoleHandler("stdout"))
        if save_dir:
            os.makedirs(save_dir, exist_ok=True)
            path = os.path.join(save_dir, "train.log")
            handlers.append(logging.FileHandler(path, encoding="utf-8"))
    else:
        console = _ConsoleHandler("stderr")
        console.setLevel(logging.ERROR)
        handlers.append(console)

    root = logging.getLogger()
    close_handlers()
    root.setLevel(numeric)
    formatter = logging.Formatter(_FORMAT, datefmt=_DATEFMT)
    for handler in handlers:
        setattr(handler, _MARK, True)
        handler.setFormatter(formatter)
        root.addHandler(handler)
    logging.captureWarnings(True)
    return root


def close_handlers():
    """Remove and close the handlers ``setup_logger`` added (and so ``train.log``)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(handler)
        handler.close()
