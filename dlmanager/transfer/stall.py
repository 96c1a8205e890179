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
    within ``stall`` seconds. The thread runs while attempts are watched, and
    ends once none was for *linger* seconds (attempts that follow one another
    keep one thread); :meth:`join_idle` ends an idle thread at once.
    """

    def __init__(self, tick: float = 0.1, linger: float = 1.0) -> None:
        #: How often the watched attempts are looked at, in seconds.
        self.tick = tick
        self.linger = linger
        self._lock = threading.Lock()
        self._watched: dict[Attempt, tuple[float, int]] = {}
        self._thread: threading.Thread | None = None  # the last one started
        self._running = False
        self._end_idle = False  # join_idle() asks an idle thread to end now
        self._wake = threading.Event()  # set by join_idle()

    @contextlib.contextmanager
    def watch(self, attempt: Attempt) -> Iterator[None]:
        """Watch *attempt* for the duration of the ``with`` block."""
        if attempt.timeouts.stall is None:
            yield
            return
        with self._lock:
            self._watched[attempt] = (time.monotonic(), attempt.received)
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

    def join_idle(self, timeout: float) -> None:
        """End the thread now if nothing is watched, and wait up to *timeout*
        seconds for it to end."""
        with self._lock:
            if self._watched:
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
            self._wake.wait(self.tick)
            now = time.monotonic()
            stalled = []
            with self._lock:
                self._wake.clear()
                if not self._watched:
                    idle_since = now if idle_since is None else idle_since
                    if self._end_idle or now - idle_since >= self.linger:
                        self._end_idle = False
                        self._running = False
                        return
                    continue
                idle_since = None
                self._end_idle = False
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
