"""How training stops early: a non-finite loss or gradient (:class:`TrainingError`) or
SIGINT/SIGTERM, deferred to the next step boundary where the run checkpoints
(:class:`Interrupted`)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from pyrogen.errors import PyrogenError

__all__ = ["Interrupted", "TrainingError"]


class TrainingError(PyrogenError):
    """Training cannot go on (a non-finite loss or gradient, or nothing learnt); the run keeps
    its last good checkpoint."""


class Interrupted(Exception):  # noqa: N818 - it is a signal, not an error
    """Training was stopped by SIGINT or SIGTERM.

    Attributes:
        signum: the signal.
        kept: what the run directory keeps, for the message (e.g. "checkpoint written at epoch
            2, step 5: continue with --resume"), or "" when there is no run directory.
    """

    def __init__(self, signum: int, kept: str = "") -> None:
        super().__init__(f"interrupted by signal {signum}" + (f"; {kept}" if kept else ""))
        self.signum = signum
        self.kept = kept

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _SignalGuard:
    """Defers SIGINT and SIGTERM to the next step boundary, where training checkpoints and stops.

    A second Ctrl-C interrupts at once, except while a checkpoint is being written
    (:meth:`writing`): then it waits for the write, so a checkpoint that is announced exists.
    """

    def __enter__(self) -> _SignalGuard:
        self.signum = 0
        self._writing = False
        self._pending = False
        self.previous: dict[int, Any] = {}
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            if self._writing:
                self._pending = True
                return
            raise KeyboardInterrupt
        self.signum = signum

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A second Ctrl-C within the block is held until the block ends."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
