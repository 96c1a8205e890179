"""Fetch the missing byte ranges of one file over several connections at once.

Each connection fetches one :class:`~dlmanager.segments.Segment` with
``Range`` and ``If-Range`` and writes it in place (``pwrite``) into the
preallocated temporary file, with the same retry, resume and timeout policy
as a single stream. When a connection is done it takes over half of the
largest remaining segment. The calling thread saves a checkpoint every
second. A response of another version of the file (a changed validator or
size, a 200 where 206 was asked for, a wrong ``Content-Range``) stops every
connection and raises :class:`~dlmanager.errors.ResumeError`: two versions
are never mixed in one file.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable, Iterable

from dlmanager.errors import (
    DownloadError,
    DownloadInterrupt,
    IncompleteBodyError,
    ResumeError,
    StallError,
)
from dlmanager.retry import RetryPolicy
from dlmanager.segments import Plan, Segment
from dlmanager.stall import stall_guard
from dlmanager.storage import PartFile
from dlmanager.transfer import Attempt

__all__ = ["CHECKPOINT_INTERVAL", "ParallelFetch", "RangesIgnored"]

log = logging.getLogger(__name__)

#: Seconds between two checkpoints of a running download.
CHECKPOINT_INTERVAL = 1.0


class RangesIgnored(ResumeError):
    """The server answered a range request with the whole file (200)."""


class ParallelFetch:
    """Fill the gaps of *plan* in *part* over up to *connections* connections.

    :param new_attempt: ``new_attempt(offset, end)`` returns an unopened
        :class:`Attempt` for bytes ``[offset, end)``, registered so that a
        cancel aborts it
    :param release: ``release(attempt)`` closes and unregisters an attempt
    :param on_bytes: called after every write (progress)
    :param on_retry: ``on_retry(error, delay)`` before a connection retries
    :param save_checkpoint: ``save_checkpoint(plan)`` persists what is written
    :param abort: aborts every open attempt (to stop the others after a failure)
    """

    def __init__(
        self,
        *,
        url: str,
        plan: Plan,
        part: PartFile,
        validator: str,
        connections: int,
        min_split: int,
        retry: RetryPolicy,
        cancel: threading.Event,
        new_attempt: Callable[[int, int], Attempt],
        release: Callable[[Attempt], None],
        on_bytes: Callable[[], None],
        on_retry: Callable[[DownloadError, float], None],
        save_checkpoint: Callable[[Plan], None],
        abort: Callable[[], None],
    ) -> None:
        self.url = url
        self.plan = plan
        self.part = part
        self.validator = validator
        self.connections = connections
        self.min_split = min_split
        self.retry = retry
        self.cancel = cancel
        self.new_attempt = new_attempt
        self.release = release
        self.on_bytes = on_bytes
        self.on_retry = on_retry
        self.save_checkpoint = save_checkpoint
        self.abort = abort
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._unclaimed: list[Segment] = []

    def run(self, first: Attempt | None = None) -> None:
        """Fetch every missing byte.

        :param first: an opened attempt whose body starts at the first gap
            (the response that told the file's size); its connection fetches
            the first segment
        :raises ResumeError: the file changed, or the server ignores ranges
        :raises DownloadError: a connection failed beyond its retry budget
        :raises DownloadInterrupt: cancelled
        """
        segments = self.plan.assign(self.connections, self.min_split)
        if not segments:
            if first is not None:
                self.release(first)
            return
        # More gaps than connections (a resumed checkpoint): the workers take
        # the segments nobody fetches yet before they split others.
        self._unclaimed = list(reversed(segments[self.connections :]))
        workers = segments[: self.connections]
        log.debug("Fetching %s over %d connections: %s", self.url, len(workers), segments)
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=len(workers), thread_name_prefix="dlmanager-segment"
        ) as pool:
            futures = [
                pool.submit(self._work, segment, first if i == 0 else None)
                for i, segment in enumerate(workers)
            ]
            self._supervise(futures)
        if not self.plan.complete():
            raise IncompleteBodyError(
                f"{self.url}: connections ended with bytes missing ({self.plan.gaps()})",
                expected=self.plan.total,
                url=self.url,
                dest=self.part.dest,
                received=self.plan.received(),
            )

    def _supervise(self, futures: list[concurrent.futures.Future[None]]) -> None:
        """Checkpoint while the workers run; on the first failure, stop them all."""
        pending: set[concurrent.futures.Future[None]] = set(futures)
        while pending:
            done, pending = concurrent.futures.wait(
                pending,
                timeout=CHECKPOINT_INTERVAL,
                return_when=concurrent.futures.FIRST_EXCEPTION,
            )
            failed = [f for f in done if f.exception() is not None]
            if failed:
                self._stop.set()
                self.abort()
                concurrent.futures.wait(pending)
                self.save_checkpoint(self.plan)
                error = _first_error(f.exception() for f in futures if f.done())
                raise error
            self.save_checkpoint(self.plan)

    def _work(self, segment: Segment | None, attempt: Attempt | None) -> None:
        while segment is not None and not self._stop.is_set():
            self._fetch(segment, attempt)
            attempt = None
            segment = self._next()

    def _next(self) -> Segment | None:
        """A segment nobody fetches yet, else half of the largest remaining one."""
        with self._lock:
            if self._unclaimed:
                return self._unclaimed.pop()
        segment = self.plan.steal()
        if segment is not None:
            log.debug("%s: took over %s", self.url, segment)
        return segment

    def _fetch(self, segment: Segment, attempt: Attempt | None) -> None:
        """Fetch *segment*, retrying and resuming under the retry policy."""
        policy = self.retry
        while self.plan.limit(segment, 1):
            mark = segment.pos
            try:
                if attempt is None:
                    attempt = self.new_attempt(segment.pos, segment.end)
                    self._open(attempt, segment)
                self._copy(attempt, segment)
            except (DownloadInterrupt, ResumeError):
                raise
            except DownloadError as exc:
                if self._stop.is_set() or self.cancel.is_set():
                    raise DownloadInterrupt() from exc
                gain = segment.pos - mark
                progressed = gain >= policy.progress_bytes and not isinstance(exc, StallError)
                policy = policy.increment(exc, progressed=progressed)
                delay = policy.sleep_time(exc)
                log.info("Retrying bytes %d-%d of %s in %.1fs after: %s",
                         segment.pos, segment.end, self.url, delay, exc)  # fmt: skip
                self.on_retry(exc, delay)
                if self.cancel.wait(delay):
                    raise DownloadInterrupt() from exc
            finally:
                if attempt is not None:
                    self.release(attempt)
                    attempt = None

    def _open(self, attempt: Attempt, segment: Segment) -> None:
        """Open *attempt*; accept only the same version, starting at the segment.

        :raises ResumeError: the file changed on the server
        :raises RangesIgnored: the server does not serve ranges correctly
        """
        try:
            info = attempt.open()
        except ResumeError as exc:  # a Content-Range other than asked for
            raise RangesIgnored(str(exc), url=self.url, dest=self.part.dest) from exc
        changed = info.total != self.plan.total or (
            info.validator is not None and info.validator != self.validator
        )
        if info.status_code != 206 and segment.pos != 0 and not changed:
            raise RangesIgnored(
                f"{self.url}: asked for bytes {segment.pos}- and got the whole file",
                url=self.url,
                dest=self.part.dest,
            )
        if changed:
            raise ResumeError(
                f"{self.url}: the file changed on the server "
                f"(validator {info.validator!r}, size {info.total})",
                url=self.url,
                dest=self.part.dest,
            )

    def _copy(self, attempt: Attempt, segment: Segment) -> None:
        """Write *attempt*'s body into *segment* until it ends or the segment is full."""
        with stall_guard.watch(attempt):
            for chunk in attempt.body():
                size = self.plan.limit(segment, len(chunk))
                if size:
                    self.part.pwrite(segment.pos, memoryview(chunk)[:size])
                    self.plan.advance(segment, size)
                    self.on_bytes()
                if size < len(chunk) or not self.plan.limit(segment, 1):
                    return  # the segment is full (maybe split meanwhile)
                if self._stop.is_set() or self.cancel.is_set():
                    raise DownloadInterrupt()
        if self.plan.limit(segment, 1):
            raise IncompleteBodyError(
                f"{self.url}: response ended at byte {segment.pos}, before {segment.end}",
                expected=segment.end - attempt.offset,
                url=self.url,
                dest=self.part.dest,
                received=attempt.received,
            )


def _first_error(errors: Iterable[BaseException | None]) -> BaseException:
    """The error to report: a real failure before the interrupts it caused."""
    found = [e for e in errors if e is not None]
    real = [e for e in found if not isinstance(e, DownloadInterrupt)]
    return (real or found)[0]
