"""The output folder of an evaluation: its default name, and the claim on it.

``default_out_dir`` names the folder after the run and the checkpoint, so evaluating two
checkpoints of one run (or two runs of the same name) never shares a folder. ``claim_out_dir``
creates the folder, fails in one line when it cannot be written (a file in the way, no
permission), and holds an exclusive ``flock`` on ``<out>/.evaluation.lock`` for the whole
evaluation: a second evaluation into the same folder is refused instead of mixing its files
with the first one's. The lock goes with the process, so a killed evaluation leaves none.
"""
import contextlib
import errno
import fcntl
import hashlib
import os

from mmf.common.errors import ConfigError

LOCK_FILE = ".evaluation.lock"


def default_out_dir(experiment_name, checkpoint):
    """``results/<experiment_name>/<checkpoint stem>-<8 hex digits of its absolute path>``."""
    path = os.path.abspath(checkpoint)
    stem = os.path.splitext(os.path.basename(path))[0]
    digest = hashlib.sha1(path.encode("utf-8")).hexdigest()[:8]
    return os.path.join("results", str(experiment_name), f"{stem}-{digest}")


@contextlib.contextmanager
def claim_out_dir(path):
    """Create ``path`` and hold its evaluation lock; ``ConfigError`` in one line when
    ``path`` is a file, cannot be created or written, or another evaluation holds it."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--out {path}: is a file, not a folder")
    try:
        os.makedirs(path, exist_ok=True)
        handle = open(os.path.join(path, LOCK_FILE), "a")  # held until the evaluation ends
    except OSError as err:
        raise ConfigError(f"--out {path}: cannot write there ({err.strerror})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise ConfigError(
                f"--out {path}: another evaluation is writing there; wait for it to finish "
                "or pass another --out"
            ) from None
        yield path
    finally:
        handle.close()
