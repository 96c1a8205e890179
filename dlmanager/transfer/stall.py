"""The stall guard: one thread that ends the attempts making too little progress."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from dlmanager.redact import get_logger
from dlmanager.transfer.periodic import Periodic
from dlmanager.transport.attempt import STALL, Attempt

__all__ = ["StallGuard"]

log = get_logger(__name__)


class StallGuard:
    """One thread that watches every running attempt and aborts the stalled ones.

    An attempt stalls when it receives less than ``min_speed * stall`` bytes
    within ``stall`` seconds. The thread is a :class:`~dlmanager.transfer.periodic.Periodic`'s:
    it runs while attempts are watched, and ends once none was for *linger*
    seconds (attempts that follow one another keep one thread);
    :meth:`join_idle` ends an idle thread at once.
    """

    def __init__(self, tick: float = 0.1, linger: float = 1.0) -> None:
        #: How often the watched attempts are looked at, in seconds.
        self.tick = tick
        self.linger = linger
        self._periodic = Periodic(tick, "dlmanager-stall-guard", linger)

    @contextlib.contextmanager
    def watch(self, attempt: Attempt, paused: Callable[[], float] = lambda: 0.0) -> Iterator[None]:
        """Watch *attempt* for the duration of the ``with`` block.

        :param paused: the seconds its reader has spent asleep under a rate
            limit so far: left out of the window (our own limit is not the
            server's slowness)
        """
        window = attempt.timeouts.stall
        if window is None:
            yield
            return
        # The window's start, its bytes, and the reader's time asleep then.
        mark = [time.monotonic(), attempt.received, paused()]

        def check() -> None:
            now, asleep = time.monotonic(), paused()
            if now - mark[0] - (asleep - mark[2]) < window:
                return
            if attempt.received - mark[1] >= attempt.timeouts.min_speed * window:
                mark[:] = [now, attempt.received, asleep]
                return
            mark[0] = float("inf")  # aborted once: not looked at again
            log.debug(
                "Too little progress on %s for %ss: aborting the attempt", attempt.url, window
            )
            attempt.abort(STALL)

        with self._periodic.every(check):
            yield

    def join_idle(self, timeout: float) -> None:
        """End the thread now if nothing is watched, and wait up to *timeout*
        seconds for it to end."""
        self._periodic.join_idle(timeout)
