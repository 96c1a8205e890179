"""One background thread that calls registered functions at a fixed interval (checkpoints)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

from dlmanager.redact import get_logger

__all__ = ["Periodic"]

log = get_logger(__name__)


class Periodic:
    """Call every registered function each *interval* seconds, from one thread.

    The thread runs only while something is registered, and ends at once
    when the last function is removed. A function that raises is logged and
    keeps being called.
    """

    def __init__(self, interval: float, name: str) -> None:
        self.interval = interval
        self.name = name
        self._lock = threading.Lock()
        self._functions: dict[int, Callable[[], None]] = {}
        self._next_key = 0
        self._thread: threading.Thread | None = None  # the last one started
        self._running = False
        self._wake = threading.Event()

    @contextlib.contextmanager
    def every(self, function: Callable[[], None]) -> Iterator[None]:
        """Call *function* periodically for the duration of the ``with`` block."""
        with self._lock:
            key = self._next_key
            self._next_key += 1
            self._functions[key] = function
            self._wake.clear()  # something to call again: no early end
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._functions.pop(key, None)
                if not self._functions:
                    self._wake.set()  # nothing left: the thread ends now

    def join_idle(self, timeout: float) -> None:
        """Wait up to *timeout* seconds for the thread to end, if nothing is registered."""
        with self._lock:
            thread = None if self._functions else self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            with self._lock:
                functions = list(self._functions.values())
                if not functions:
                    self._running = False
                    return
            for function in functions:
                try:
                    function()
                except Exception:
                    log.exception("%s: periodic call failed", self.name)
