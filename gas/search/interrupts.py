"""Ctrl-C and `kill` for a search driver: stop at once, but never in the middle of a write to the study."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Interrupts:
    """While `installed`, SIGINT and SIGTERM raise KeyboardInterrupt wherever the driver is, except inside a
    `held` block (one proposal judged, one result recorded), where they wait for the block's end.

    So a stopped search leaves every trial either finished or re-queueable (the driver re-queues the trials
    in flight), and a result that reached the driver is recorded.
    """

    def __init__(self) -> None:
        self._holding = False
        self._pending = False

    def _interrupt(self, *_: Any) -> None:
        if self._holding:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self) -> Iterator[None]:
        """The handlers, for the block's duration; elsewhere than the main thread, Python's own stay."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {number: signal.signal(number, self._interrupt) for number in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    @contextmanager
    def held(self) -> Iterator[None]:
        """A signal during the block takes effect when it ends (unless the block raised first)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False
        if self._pending:
            self._pending = False
            raise KeyboardInterrupt
