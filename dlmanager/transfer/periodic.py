"""One background thread that calls registered functions at a fixed interval (checkpoints)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from dlmanager.redact import get_logger

__all__ = ["Periodic"]

log = get_logger(__name__)


class Periodic:
    """Call every registered function each *interval* seconds, from one thread.

    The thread runs while something is registered, and ends once nothing
    was for *linger* seconds (default: one interval), looked at each
    interval: downloads that follow one another keep one thread instead of
    starting one each. :meth:`join_idle` ends an idle thread at once. A
    function that raises is logged and keeps being called.
    """

    def __init__(self, interval: float, name: str, linger: float | None = None) -> None:
        self.interval = interval
        self.name = name
        self.linger = interval if linger is None else linger
        self._lock = threading.Lock()
        self._functions: dict[int, Callable[[], None]] = {}
        self._next_key = 0
        self._thread: threading.Thread | None = None  # the last one started
        self._running = False
        self._end_idle = False  # join_idle() asks an idle thread to end now
        self._wake = threading.Event()  # set by join_idle()

    @contextlib.contextmanager
    def every(self, function: Callable[[], None]) -> Iterator[None]:
        """Call *function* periodically for the duration of the ``with`` block."""
        with self._lock:
            key = self._next_key
            self._next_key += 1
            self._functions[key] = function
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._functions.pop(key, None)

    def join_idle(self, timeout: float) -> None:
        """End the thread now if nothing is registered, and wait up to *timeout*
        seconds for it to end."""
        with self._lock:
            if self._functions:
                return
            thread = self._thread
            if self._running:
                self._end_idle = True
                self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        idle_since: float | None = None
        while True:
            self._wake.wait(self.interval)
            with self._lock:
                self._wake.clear()
                functions = list(self._functions.values())
                if functions:
                    idle_since = None
                    self._end_idle = False
                else:
                    now = time.monotonic()
                    idle_since = now if idle_since is None else idle_since
                    if self._end_idle or now - idle_since >= self.linger:
                        self._end_idle = False
                        self._running = False
                        return
            for function in functions:
                try:
                    function()
                except Exception:
                    log.exception("%s: periodic call failed", self.name)
