"""Writing files so that a crash never leaves a half-written one: the single home of
``atomic_write``, used by checkpoints, configs and the data-preparation tools."""
import contextlib
import os
import tempfile

from mmf.common.errors import WriteError


def current_umask():
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_name_prefix(path):
    """Prefix of the temporary files ``atomic_write`` creates for ``path`` (``.<name>.``);
    they end in ``.tmp``."""
    return f".{os.path.basename(path)}."


def atomic_write(path, write, mode="wb"):
    """Call ``write(file)`` on a temporary file next to ``path`` (opened with ``mode``),
    fsync it, then ``os.replace`` it into place; the temporary file is removed on failure.
    The file gets the permissions a plain ``open`` would give (0666 less the umask), not the
    0600 of a temporary file.

    An ``OSError`` (full disk, no permission, a directory named ``path``), also one that
    ``write`` met and reported as another error, is raised as ``WriteError`` naming ``path``
    and its cause, in one line."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(
            mode=mode, dir=directory, prefix=temporary_name_prefix(path), suffix=".tmp",
            delete=False,
        )
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from err
    try:
        write(handle)
        os.fchmod(handle.fileno(), 0o666 & ~current_umask())
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(handle.name, path)
    except BaseException as err:
        _discard(handle)
        cause = _os_error(err)
        if cause is not None:
            raise WriteError(f"cannot write {path}: {cause.strerror or cause}") from err
        raise


def _os_error(err):
    """The ``OSError`` behind ``err``: itself, or one it was raised while handling (torch's
    zip writer reports a failed write as a ``RuntimeError`` about the file position)."""
    while err is not None and not isinstance(err, WriteError):
        if isinstance(err, OSError):
            return err
        err = err.__cause__ or err.__context__
    return None


def _discard(handle):
    """Close and remove a temporary file after a failed write; a second error (the close of
    a file on a full disk fails too) would only hide the first."""
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(OSError):
        os.remove(handle.name)
