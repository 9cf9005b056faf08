"""How training stops early: a non-finite loss (:class:`TrainingError`) or SIGINT/SIGTERM,
deferred to the next step boundary where the run checkpoints (:class:`Interrupted`)."""

from __future__ import annotations

import signal
from typing import Any

from pyrogen.errors import PyrogenError

__all__ = ["Interrupted", "TrainingError"]


class TrainingError(PyrogenError):
    """Training cannot go on (a non-finite loss); the run keeps its last good checkpoint."""


class Interrupted(Exception):  # noqa: N818 - it is a signal, not an error
    """Training was stopped by SIGINT or SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _SignalGuard:
    """Defers SIGINT and SIGTERM to the next step boundary, where training checkpoints and stops.

    A second Ctrl-C interrupts at once (the last checkpoint on disk stays valid).
    """

    def __enter__(self) -> _SignalGuard:
        self.signum = 0
        self.previous: dict[int, Any] = {}
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
