"""Ctrl-C during training: the trainer finishes the update, saves ``current.ckpt`` and stops."""
import signal
import threading
import time

# Launchers (torchrun) pass the terminal's SIGINT on to processes that got it already.
REPEAT_WINDOW_S = 1.0


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT after saving ``current.ckpt``; the message says where and
    how to continue."""


class InterruptFlag:
    """Context manager: while active, SIGINT sets ``requested`` instead of raising
    ``KeyboardInterrupt``. A second SIGINT later than ``REPEAT_WINDOW_S`` after the first
    raises ``KeyboardInterrupt`` (abort without saving). Outside the main thread, where no
    signal handler can be set, it does nothing."""

    def __init__(self):
        self.requested = False
        self._first = None
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum, frame):
        now = time.monotonic()
        if self._first is None:
            self.requested, self._first = True, now
        elif now - self._first > REPEAT_WINDOW_S:
            raise KeyboardInterrupt
