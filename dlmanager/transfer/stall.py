"""The stall guard: one thread that ends the attempts making too little progress."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from dlmanager.redact import get_logger
from dlmanager.transport.attempt import STALL, Attempt

__all__ = ["StallGuard"]

log = get_logger(__name__)


class StallGuard:
    """One thread that watches every running attempt and aborts the stalled ones.

    An attempt stalls when it receives less than ``min_speed * stall`` bytes
    within ``stall`` seconds. The thread runs only while attempts are watched.
    """

    def __init__(self, tick: float = 0.1) -> None:
        #: How often the watched attempts are looked at, in seconds.
        self.tick = tick
        self._lock = threading.Lock()
        self._watched: dict[Attempt, tuple[float, int]] = {}
        self._thread: threading.Thread | None = None  # the last one started
        self._running = False
        self._wake = threading.Event()  # set when nothing is watched any more

    @contextlib.contextmanager
    def watch(self, attempt: Attempt) -> Iterator[None]:
        """Watch *attempt* for the duration of the ``with`` block."""
        if attempt.timeouts.stall is None:
            yield
            return
        with self._lock:
            self._watched[attempt] = (time.monotonic(), attempt.received)
            self._wake.clear()  # something to watch again: no early end
            if not self._running:
                self._running = True
                self._thread = threading.Thread(
                    target=self._run, name="dlmanager-stall-guard", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(attempt, None)
                if not self._watched:
                    self._wake.set()  # the thread ends now

    def join_idle(self, timeout: float) -> None:
        """Wait up to *timeout* seconds for the thread to end, if nothing is watched."""
        with self._lock:
            thread = None if self._watched else self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.tick)
            now = time.monotonic()
            stalled = []
            with self._lock:
                if not self._watched:
                    self._running = False
                    return
                for attempt, (since, mark) in list(self._watched.items()):
                    window = attempt.timeouts.stall
                    assert window is not None
                    if now - since < window:
                        continue
                    if attempt.received - mark < attempt.timeouts.min_speed * window:
                        stalled.append(attempt)
                        del self._watched[attempt]
                    else:
                        self._watched[attempt] = (now, attempt.received)
            for attempt in stalled:
                log.debug(
                    "Too little progress on %s for %ss: aborting the attempt",
                    attempt.url,
                    attempt.timeouts.stall,
                )
                attempt.abort(STALL)
