"""Fetch the missing byte ranges of one file over several connections at once.

Each connection fetches one :class:`~dlmanager.segments.Segment` with
``Range`` and ``If-Range`` and writes it in place (``pwrite``) into the
preallocated temporary file, with the same retry, resume and timeout policy
as a single stream. When a connection is done it takes over half of the
largest remaining segment. The calling thread saves a checkpoint every
second. A response of another version of the file (a changed validator or
size, a 200 where 206 was asked for, a wrong ``Content-Range``) stops every
connection and raises :class:`~dlmanager.errors.ResumeError`: two versions
are never mixed in one file. A :class:`~dlmanager.errors.StorageError` (a
write or a checkpoint that the filesystem refused) is not retried: it stops
every connection and is raised at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from dlmanager.errors import (
    DownloadError,
    DownloadInterrupt,
    IncompleteBodyError,
    ResumeError,
    StallError,
    StorageError,
)
from dlmanager.redact import get_logger
from dlmanager.retry import RetryPolicy
from dlmanager.segments import Plan, Segment
from dlmanager.stall import stall_guard
from dlmanager.storage import PartFile
from dlmanager.transfer import Attempt

__all__ = ["CHECKPOINT_INTERVAL", "ParallelFetch", "RangesIgnored"]

log = get_logger(__name__)

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
    :param on_resume: ``on_resume(offset)`` when a connection resumes its segment
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
        on_resume: Callable[[int], None],
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
        self.on_resume = on_resume
        self.save_checkpoint = save_checkpoint
        self.abort = abort
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._unclaimed: list[Segment] = []
        self._errors: dict[int, BaseException] = {}
        self._changed = threading.Event()  # a worker finished

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
        # Daemon threads, not a ThreadPoolExecutor: the interpreter would wait
        # for its threads at exit before dlmanager's exit hook cancels them.
        threads = [
            threading.Thread(
                target=self._run_worker,
                args=(i, segment, first if i == 0 else None),
                name=f"dlmanager-segment-{i} {self.url}",
                daemon=True,
            )
            for i, segment in enumerate(workers)
        ]
        for thread in threads:
            thread.start()
        self._supervise(threads)
        if not self.plan.complete():
            raise IncompleteBodyError(
                f"{self.url}: connections ended with bytes missing ({self.plan.gaps()})",
                expected=self.plan.total,
                url=self.url,
                dest=self.part.dest,
                received=self.plan.received(),
            )

    def _run_worker(self, index: int, segment: Segment, attempt: Attempt | None) -> None:
        try:
            self._work(segment, attempt)
        except BaseException as exc:
            self._errors[index] = exc
        finally:
            self._changed.set()

    def _supervise(self, threads: list[threading.Thread]) -> None:
        """Checkpoint while the workers run; on the first failure, stop them all.

        The workers are stopped and joined before any error is raised, a
        failed checkpoint's included: none writes into the file once the
        caller may close it.
        """
        try:
            while any(thread.is_alive() for thread in threads):
                self._changed.wait(CHECKPOINT_INTERVAL)
                self._changed.clear()
                if self._errors:
                    break
                self.save_checkpoint(self.plan)
        except BaseException:
            self._stop_workers(threads)
            raise
        if not self._errors:
            return
        self._stop_workers(threads)
        error = _first_error(self._errors.values())
        if not isinstance(error, StorageError):
            try:
                self.save_checkpoint(self.plan)
            except StorageError as exc:
                log.debug("Last checkpoint of %s failed: %s", self.url, exc)
        raise error

    def _stop_workers(self, threads: list[threading.Thread]) -> None:
        self._stop.set()
        self.abort()
        for thread in threads:
            thread.join()

    def _work(self, segment: Segment | None, attempt: Attempt | None) -> None:
        try:
            while segment is not None and not self._stop.is_set():
                given, attempt = attempt, None
                self._fetch(segment, given)
                segment = self._next()
        finally:
            if attempt is not None:  # stopped before it could read the first response
                self.release(attempt)

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
        """Fetch *segment*, retrying and resuming under the retry policy.

        *attempt*, an opened attempt at the segment's start, is released
        whatever happens (also when the segment is full already).
        """
        policy = self.retry
        retried = False
        if not self.plan.limit(segment, 1) and attempt is not None:
            self.release(attempt)
            return
        while self.plan.limit(segment, 1):
            mark = segment.pos
            try:
                if attempt is None:
                    attempt = self.new_attempt(segment.pos, segment.end)
                    self._open(attempt, segment)
                    if retried:
                        log.info("Resuming %s at byte %d after a failed attempt",
                                 self.url, segment.pos)  # fmt: skip
                        self.on_resume(segment.pos)
                        retried = False
                self._copy(attempt, segment)
            except (DownloadInterrupt, ResumeError, StorageError):
                raise
            except DownloadError as exc:
                if self._stop.is_set() or self.cancel.is_set():
                    raise DownloadInterrupt() from exc
                gain = segment.pos - mark
                progressed = gain >= policy.progress_bytes and not isinstance(exc, StallError)
                policy = policy.increment(exc, progressed=progressed)
                delay = policy.sleep_time(exc)
                log.info("Attempt on bytes %d-%d of %s failed, retrying in %.1fs: %s",
                         segment.pos, segment.end - 1, self.url, delay, exc)  # fmt: skip
                retried = True
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
