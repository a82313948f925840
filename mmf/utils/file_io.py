"""Writing files so that a crash never leaves a half-written one: the single home of
``atomic_write``, used by checkpoints, configs and the data-preparation tools."""
import os
import tempfile


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file next to ``path`` (opened with ``mode``),
    fsync it, then ``os.replace`` it into place; the temporary file is removed on failure.
    The file gets the permissions a plain ``open`` would give (0666 less the umask), not the
    0600 of a temporary file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        mode=mode, dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp",
        delete=False,
    )
    try:
        with handle:
            write(handle)
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        if os.path.exists(handle.name):
            os.remove(handle.name)
        raise
