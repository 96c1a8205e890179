"""Bandwidth limits: the token buckets downloads take from, and the throttle of a reader.

A :class:`TokenBucket` holds a rate in bytes per second that may change while
downloads run (it is the "changes while running" state: its own small object
with its own lock, apart from the frozen
:class:`~dlmanager.config.TransferOptions`). A download has one, shared by
all its connections (``max_rate=``); a :class:`~dlmanager.DownloadManager`
has one for the total of its downloads (``DownloadManager(max_rate=...)``).
A :class:`Throttle` is what a download's readers take from: its own bucket,
then its manager's.

The rules, decided here:

- A bucket holds at most :data:`BURST_SECONDS` worth of bytes, and starts
  full: after a pause, or at the start, a download may go that far ahead of
  the rate, never more.
- A reader takes the tokens of a piece *before* it writes the piece (a piece
  is at most :meth:`TokenBucket.piece_size`, about a tenth of a second's worth):
  with a low rate it also reads pieces that small, so a 256 KiB read does not
  arrive in one burst and the server is read from steadily.
- A reader that is ahead sleeps, at most :data:`MAX_NAP` seconds at a time,
  on the download's cancel event: a cancel wakes it at once, and a rate
  changed meanwhile is taken into account when it wakes.
- The time a reader sleeps is counted (:class:`Pauses`) so that the stall
  guard does not hold our own limit against the server.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = [
    "BURST_SECONDS",
    "MAX_NAP",
    "MIN_PIECE",
    "Pauses",
    "Throttle",
    "TokenBucket",
    "check_rate",
]

#: How many seconds' worth of bytes a bucket holds at most (its burst).
BURST_SECONDS = 0.25
#: The longest a throttled reader sleeps before it looks at the bucket again.
MAX_NAP = 0.2
#: A piece is about this many seconds' worth of bytes.
PIECE_SECONDS = 0.1
#: The smallest piece taken at once, in bytes, however low the rate.
MIN_PIECE = 1024

Clock = Callable[[], float]
#: ``nap(seconds)``: sleep up to *seconds*; True when woken by a cancel.
Nap = Callable[[float], bool]


def check_rate(value: object, name: str = "max_rate") -> float | None:
    """*value* as a rate in bytes per second (None: unlimited).

    :raises ValueError: for anything but None or a finite number above 0,
        naming *name*
    """
    if value is None:
        return None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"{name} must be a number of bytes per second above 0, or None for no limit, "
            f"not {value!r}"
        )
    return value


class TokenBucket:
    """A rate in bytes per second, shared by the readers that take from it.

    Thread-safe; the rate may be changed at any time (:attr:`rate`).

    :param rate: bytes per second, or None for no limit
    :param clock: the monotonic clock (injected by the tests)
    :raises ValueError: for a rate that is not above 0
    """

    def __init__(self, rate: float | None = None, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._rate = check_rate(rate)
        self._tokens = self.capacity  # starts full: the initial burst
        self._stamp = clock()

    def __repr__(self) -> str:
        return f"<TokenBucket {self._rate} B/s>"

    @property
    def capacity(self) -> float:
        """The most bytes the bucket holds (:data:`BURST_SECONDS` worth)."""
        rate = self._rate
        return 0.0 if rate is None else rate * BURST_SECONDS

    @property
    def rate(self) -> float | None:
        """The rate in bytes per second, or None for no limit; settable while
        readers take from the bucket (they see the new rate within
        :data:`MAX_NAP` seconds, or their next piece).

        :raises ValueError: for a rate that is not above 0
        """
        return self._rate

    @rate.setter
    def rate(self, rate: float | None) -> None:
        rate = check_rate(rate)
        with self._lock:
            self._refill()
            unlimited = self._rate is None
            self._rate = rate
            # From no limit: a full bucket; else what was there, within the new cap.
            self._tokens = self.capacity if unlimited else min(self._tokens, self.capacity)

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    def piece_size(self, largest: int) -> int:
        """The most bytes a reader should take (and read) at once: about
        :data:`PIECE_SECONDS` worth, at least :data:`MIN_PIECE`, at most *largest*."""
        rate = self._rate
        if rate is None:
            return largest
        return max(1, min(largest, max(MIN_PIECE, int(rate * PIECE_SECONDS))))

    def take(self, size: int) -> float:
        """Take *size* bytes' worth of tokens if there are enough.

        Enough means all of them, or a full bucket for a piece bigger than the
        bucket (which then owes the rest: the readers after it wait longer).

        :return: 0.0 when taken; else the seconds until there are enough
            (nothing taken)
        """
        with self._lock:
            if self._rate is None:
                return 0.0
            self._refill()
            need = min(float(size), self.capacity)
            if self._tokens >= need * (1 - 1e-9):  # float rounding: not a wait of 1e-17 s
                self._tokens -= size
                return 0.0
            return (need - self._tokens) / self._rate


class Pauses:
    """The time one reader spent asleep under a rate limit, the current nap included.

    Read by the stall guard from its own thread: a window of time in which
    the reader slept is not a window in which the server was slow.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._total = 0.0
        self._since: float | None = None

    def begin(self) -> None:
        with self._lock:
            self._since = self._clock()

    def end(self) -> None:
        with self._lock:
            if self._since is not None:
                self._total += self._clock() - self._since
                self._since = None

    def total(self) -> float:
        """Seconds asleep so far."""
        with self._lock:
            current = 0.0 if self._since is None else self._clock() - self._since
            return self._total + current


class Throttle:
    """What one download's readers take from: its own bucket, then its manager's.

    :param buckets: the buckets every piece takes from, in order
    """

    def __init__(self, *buckets: TokenBucket) -> None:
        self.buckets = buckets

    @property
    def limited(self) -> bool:
        """Whether any of the buckets has a rate."""
        return any(bucket.rate is not None for bucket in self.buckets)

    def piece_size(self, largest: int) -> int:
        """The most bytes to take (and read) at once: the smallest piece of the buckets."""
        return min([bucket.piece_size(largest) for bucket in self.buckets] or [largest])

    def acquire(
        self,
        size: int,
        nap: Nap,
        stopped: Callable[[], bool] = lambda: False,
        pauses: Pauses | None = None,
    ) -> bool:
        """Take *size* bytes' worth from every bucket, sleeping with *nap*
        while one has not enough (at most :data:`MAX_NAP` at a time).

        :param nap: sleeps; returns True when a cancel woke it
        :param stopped: whether to give up (looked at after each nap)
        :param pauses: where the time asleep is counted
        :return: True when taken; False when *nap* was cancelled or
            *stopped* said so (what was taken from a bucket stays taken)
        """
        for bucket in self.buckets:
            while True:
                wait = bucket.take(size)
                if not wait:
                    break
                if pauses is not None:
                    pauses.begin()
                try:
                    cancelled = nap(min(wait, MAX_NAP))
                finally:
                    if pauses is not None:
                        pauses.end()
                if cancelled or stopped():
                    return False
        return True
