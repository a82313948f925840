"""User-facing errors.

Every error a user can fix (a bad config key, a missing file, a malformed annotation line)
is raised as an ``MMFError`` subclass whose message names the file, line or key. The CLI
prints such errors as one line and exits with status 1; anything else is a bug and keeps
its traceback.
"""


class MMFError(Exception):
    """Base class of errors caused by user input rather than by a bug."""


class ConfigError(MMFError):
    """A config file, key or value is wrong."""


class UnknownNameError(ConfigError, KeyError):
    """A registry lookup of a name nobody registered."""

    def __str__(self):
        # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class DataError(MMFError):
    """A data or annotation file is missing or malformed."""


class CheckpointError(MMFError):
    """A checkpoint file is missing, truncated or has the wrong layout."""


class WriteError(MMFError, OSError):
    """A file could not be written (full disk, no permission, a directory in the way)."""
