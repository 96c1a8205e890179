"""The retry policy, as an immutable value object.

A :class:`RetryPolicy` says *whether* and *how long* to wait before the next
attempt; it never sleeps. The download waits on its cancel event, so
:meth:`~dlmanager.Download.cancel` cuts a backoff short.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from typing import NamedTuple, Union

from dlmanager.errors import DownloadError, HTTPStatusError, TransferError

__all__ = ["RequestHistory", "RetryPolicy", "parse_retry_after"]

#: Statuses retried by default: timeouts, rate limiting and transient server errors.
DEFAULT_STATUS_FORCELIST = frozenset({408, 429, 500, 502, 503, 504})
#: Statuses whose ``Retry-After`` header is honoured.
RETRY_AFTER_STATUS_CODES = frozenset({413, 429, 503})


class RequestHistory(NamedTuple):
    """One failed attempt, as recorded by :meth:`RetryPolicy.increment`."""

    error: str
    status_code: int | None
    received: int


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many times, and how patiently, to retry a failing download.

    Every call to :meth:`increment` returns a new policy, so one instance can
    be shared by any number of downloads.

    The budget counts *consecutive* failures: an attempt that extended the
    part of the file received so far resets it, so a long download over a
    flaky link is not failed by many small, recovered interruptions.

    :param total: retries allowed after the first attempt; 0 disables retrying
    :param backoff_factor: the n-th consecutive retry waits
        ``backoff_factor * 2 ** (n - 1)`` seconds, at most ``backoff_max``
    :param backoff_max: the longest backoff, in seconds
    :param backoff_jitter: each backoff is multiplied by a random factor in
        ``[1 - backoff_jitter, 1 + backoff_jitter]``
    :param status_forcelist: HTTP statuses that are retried
    :param respect_retry_after: honour ``Retry-After`` on 413, 429 and 503
    :param retry_after_max: the longest ``Retry-After`` honoured, in seconds
    :param progress_bytes: an attempt that adds at least this many bytes to
        the data received so far (and did not stall) resets the count of
        consecutive failures
    :param failures: consecutive failures so far (state, not configuration)
    :param history: the failed attempts so far (state, not configuration)

    .. code-block:: python

        policy = RetryPolicy(total=3, backoff_factor=1.0)
        manager = DownloadManager("builds", retry=policy)
    """

    total: int = 5
    backoff_factor: float = 0.5
    backoff_max: float = 20.0
    backoff_jitter: float = 0.25
    status_forcelist: frozenset[int] = DEFAULT_STATUS_FORCELIST
    respect_retry_after: bool = True
    retry_after_max: float = 30.0
    progress_bytes: int = 64 * 1024
    failures: int = 0
    history: tuple[RequestHistory, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.total, int) or isinstance(self.total, bool) or self.total < 0:
            raise ValueError(f"retry total must be an integer >= 0, not {self.total!r}")
        for name in ("backoff_factor", "backoff_max", "retry_after_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"retry {name} must be a number >= 0, not {value!r}")
        if (
            not isinstance(self.progress_bytes, int)
            or isinstance(self.progress_bytes, bool)
            or self.progress_bytes < 0
        ):
            raise ValueError(
                f"retry progress_bytes must be an integer >= 0, not {self.progress_bytes!r}"
            )
        if not 0 <= self.backoff_jitter <= 1:
            raise ValueError(f"retry backoff_jitter must be in [0, 1], not {self.backoff_jitter!r}")
        object.__setattr__(self, "status_forcelist", frozenset(self.status_forcelist))

    @classmethod
    def from_value(cls, value: RetryLike) -> RetryPolicy:
        """Build a policy from what the ``retry=`` keyword accepts.

        ``None`` gives the default policy, an integer the default policy with
        that many retries (0 disables retrying), and a policy is kept as is.

        :raises ValueError: for anything else
        """
        if value is None:
            return cls()
        if isinstance(value, RetryPolicy):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return cls(total=value)
        raise ValueError(f"retry must be a RetryPolicy, an integer or None, not {value!r}")

    def new(self, **changes: object) -> RetryPolicy:
        """A copy of this policy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def is_retryable(self, error: BaseException) -> bool:
        """Whether *error* is worth another attempt."""
        if isinstance(error, HTTPStatusError):
            return error.status_code in self.status_forcelist
        return isinstance(error, TransferError) and error.retryable

    def is_exhausted(self) -> bool:
        """Whether the consecutive failures exceed the budget."""
        return self.failures > self.total

    def increment(self, error: DownloadError, *, progressed: bool = False) -> RetryPolicy:
        """Record a failed attempt and return the policy for the next one.

        :param error: the attempt's error
        :param progressed: the attempt extended the data received so far,
            which resets the count of consecutive failures
        :raises DownloadError: *error* itself, with its ``history`` set, when it
            is not retryable or the budget is exhausted
        """
        entry = RequestHistory(
            error=str(error),
            status_code=getattr(error, "status_code", None),
            received=error.received,
        )
        failures = 1 if progressed else self.failures + 1
        new = self.new(failures=failures, history=(*self.history, entry))
        if not self.is_retryable(error) or new.is_exhausted():
            error.history = self.history
            raise error
        return new

    def backoff_time(self, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait before the next attempt, from the failures so far."""
        if self.failures <= 0:
            return 0.0
        exponent = min(self.failures - 1, 64)  # beyond that the cap applies anyway
        delay = min(self.backoff_max, self.backoff_factor * 2.0**exponent)
        jitter = 1 + self.backoff_jitter * (2 * rand() - 1)
        return float(min(self.backoff_max, delay * jitter))

    def sleep_time(self, error: DownloadError, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after *error*: its ``Retry-After`` when honoured, else the backoff."""
        if (
            self.respect_retry_after
            and isinstance(error, HTTPStatusError)
            and error.status_code in RETRY_AFTER_STATUS_CODES
            and error.retry_after is not None
        ):
            return min(self.retry_after_max, error.retry_after)
        return self.backoff_time(rand)


RetryLike = Union[RetryPolicy, int, None]


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value, or None when unusable.

    Accepts delay-seconds and HTTP-dates; a date in the past gives 0.
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    import email.utils  # here: only an HTTP-date needs it, and --help does without

    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(0.0, parsed.timestamp() - current)
