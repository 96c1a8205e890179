"""The stall guard: one thread that ends attempts making too little progress."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

from dlmanager.transfer import STALL, Attempt

__all__ = ["StallGuard", "stall_guard"]

log = logging.getLogger(__name__)


class StallGuard:
    """One thread that watches every running attempt and aborts the stalled ones.

    An attempt stalls when it receives less than ``min_speed * stall`` bytes
    within ``stall`` seconds. The thread runs only while attempts are watched.
    """

    TICK = 0.1

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[Attempt, tuple[float, int]] = {}
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, attempt: Attempt) -> Iterator[None]:
        """Watch *attempt* for the duration of the ``with`` block."""
        if attempt.timeouts.stall is None:
            yield
            return
        with self._lock:
            self._watched[attempt] = (time.monotonic(), attempt.received)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dlmanager-stall-guard", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._watched.pop(attempt, None)

    def _run(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            stalled = []
            with self._lock:
                if not self._watched:
                    self._thread = None
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


#: The process-wide stall guard.
stall_guard = StallGuard()
