"""Filling a file over several connections at once: the segmented way.

Each connection fetches one :class:`~dlmanager.segments.Segment` with
``Range`` and ``If-Range`` and writes it in place (``pwrite``) into the
preallocated temporary file, with the retry, resume and timeout policy of a
single stream (:mod:`~dlmanager.transfer.steps`). When a connection is done it
takes over half of the largest remaining segment. The calling thread saves a
checkpoint at the runtime's interval. A response of another version of the
file (a changed validator or size, a 200 where 206 was asked for, a wrong
``Content-Range``) stops every connection and raises
:class:`~dlmanager.errors.ResumeError`: two versions are never mixed in one
file. A :class:`~dlmanager.errors.StorageError` (a write or a checkpoint that
the filesystem refused) is not retried: it stops every connection and is
raised at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from dlmanager.disk.sinks import Sink
from dlmanager.errors import (
    DownloadError,
    DownloadInterrupt,
    IncompleteBodyError,
    ResumeError,
    StorageError,
)
from dlmanager.redact import get_logger
from dlmanager.segments import Plan, Segment
from dlmanager.transfer.sources import DROP, MISMATCH, Source
from dlmanager.transfer.steps import Job, Retrier, pump, version_changed
from dlmanager.transport.attempt import Attempt

__all__ = ["RangesIgnored", "Segmented", "SourceSkipped"]

log = get_logger(__name__)


class RangesIgnored(ResumeError):
    """The server answered a range request with the whole file (200)."""


class SourceSkipped(DownloadError):
    """A mirror was left out (another size, or another version): the next
    source takes over at once, without a retry counted."""


class Segmented:
    """Fill the gaps of *plan* in *part* over up to ``options.connections`` connections.

    :param validator: the validator of the version the plan's bytes belong to
    :param save_checkpoint: ``save_checkpoint(plan)`` persists what is written
    :param source: the source of the first attempt, with mirrors (the
        other connections take the usable sources in turn)
    """

    def __init__(
        self,
        job: Job,
        part: Sink,
        plan: Plan,
        validator: str,
        save_checkpoint: Callable[[Plan], None],
        source: Source | None = None,
    ) -> None:
        self.job = job
        self.url = job.url
        self.part = part
        self.plan = plan
        self.validator = validator
        self.save_checkpoint = save_checkpoint
        self.source = source
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
        options = self.job.options
        segments = self.plan.assign(options.connections, options.min_split_size)
        if not segments:
            if first is not None:
                self.job.opener.release(first)
            return
        # More gaps than connections (a resumed checkpoint): the workers take
        # the segments nobody fetches yet before they split others.
        self._unclaimed = list(reversed(segments[options.connections :]))
        workers = segments[: options.connections]
        log.debug("Fetching %s over %d connections: %s", self.url, len(workers), segments)
        # Daemon threads, not a ThreadPoolExecutor: the interpreter would wait
        # for its threads at exit before the runtime's exit hook cancels them.
        threads = [
            threading.Thread(
                target=self._run_worker,
                args=(i, segment, first if i == 0 else None),
                name=f"dlmanager-segment-{i}",
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
            self._work(index, segment, attempt)
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
                self._changed.wait(self.job.runtime.checkpoint_interval)
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
        self.job.opener.abort_all()
        for thread in threads:
            thread.join()

    def _stopped(self) -> bool:
        return self._stop.is_set() or self.job.cancel.is_set()

    def _work(self, index: int, segment: Segment | None, attempt: Attempt | None) -> None:
        source = self.source if attempt is not None else None  # else picked at the request
        try:
            while segment is not None and not self._stop.is_set():
                given, attempt = attempt, None
                source = self._fetch(index, segment, given, source)
                segment = self._next()
        finally:
            if attempt is not None:  # stopped before it could read the first response
                self.job.opener.release(attempt)

    def _next(self) -> Segment | None:
        """A segment nobody fetches yet, else half of the largest remaining one."""
        with self._lock:
            if self._unclaimed:
                return self._unclaimed.pop()
        segment = self.plan.steal()
        if segment is not None:
            log.debug("%s: took over %s", self.url, segment)
        return segment

    def _fetch(
        self, index: int, segment: Segment, attempt: Attempt | None, source: Source | None
    ) -> Source | None:
        """Fetch *segment*, retrying and resuming under the retry policy;
        with mirrors, from *source* (*attempt*'s) while it is usable, else
        from another one. The source it ends with is returned.

        *attempt*, an opened attempt at the segment's start, is released
        whatever happens (also when the segment is full already).
        """
        opener, sources = self.job.opener, self.job.sources
        retrier = Retrier(self.job, self._stopped)
        retried = False
        if not self.plan.limit(segment, 1) and attempt is not None:
            opener.release(attempt)
            return source
        while self.plan.limit(segment, 1):
            mark = segment.pos
            if attempt is None and sources is not None:
                source = sources.pick(source, index)
            try:
                if attempt is None:
                    validator: str | None = self.validator
                    if source is not None and sources is not None:
                        validator = sources.if_range(source, validator)
                    attempt = opener.open(segment.pos, segment.end, validator,
                                          url=source.url if source else None)  # fmt: skip
                    self._open(attempt, segment, source)
                    if retried:
                        log.info("Resuming %s at byte %d after a failed attempt",
                                 self.url, segment.pos)  # fmt: skip
                        self.job.events.resumed()
                        retried = False
                self._copy(attempt, segment)
            except SourceSkipped:
                source = None  # another one at the next request
            except (DownloadInterrupt, ResumeError, StorageError):
                raise
            except DownloadError as exc:
                url = source.url if source is not None else self.url
                what = f"bytes {segment.pos}-{segment.end - 1} of {url}"
                try:
                    retrier.failed(exc, segment.pos - mark, what)
                except DownloadError:
                    if sources is None or source is None or not sources.several:
                        raise
                    sources.fail(source, exc)  # the next usable source takes over
                    source, retrier = None, Retrier(self.job, self._stopped)
                retried = True
            finally:
                if attempt is not None:
                    opener.release(attempt)
                    attempt = None
        return source

    def _open(self, attempt: Attempt, segment: Segment, source: Source | None) -> None:
        """Open *attempt*; accept only the same version, starting at the segment.

        :raises ResumeError: the file changed on the server
        :raises RangesIgnored: the server does not serve ranges correctly
        :raises SourceSkipped: a mirror that cannot serve this segment, left out
        """
        sources = self.job.sources
        if sources is not None and source is not None and source is not sources.reference:
            self._open_mirror(attempt, segment, source)
            return
        try:
            info = attempt.open()
        except ResumeError as exc:  # a Content-Range other than asked for
            raise RangesIgnored(str(exc), url=self.url, dest=self.part.dest) from exc
        changed = version_changed(info, self.plan.total, self.validator)
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

    def _open_mirror(self, attempt: Attempt, segment: Segment, source: Source) -> None:
        """Open *attempt* on a source other than that of the bytes held; a
        source that cannot join them is left out (:class:`SourceSkipped`)."""
        sources = self.job.sources
        assert sources is not None
        try:
            info = attempt.open()
        except ResumeError as exc:
            sources.exclude(source, str(exc))
            raise SourceSkipped(str(exc), url=source.url, dest=self.part.dest) from exc
        verdict = sources.admit(source, info)
        if verdict == DROP:
            sources.drop(source, info)
        elif verdict == MISMATCH:
            sources.exclude(source, f"not the same version (validator {info.validator!r})")
        elif info.status_code != 206 and segment.pos != 0:
            sources.exclude(source, "it ignores ranges")
        else:
            sources.used(source)
            return
        raise SourceSkipped(f"{source.url}: left out", url=source.url, dest=self.part.dest)

    def _copy(self, attempt: Attempt, segment: Segment) -> None:
        """Write *attempt*'s body into *segment* until it ends or the segment is full."""
        plan, events = self.plan, self.job.events

        def write(chunk: bytes) -> bool:
            size = plan.limit(segment, len(chunk))
            if size:
                self.part.pwrite(segment.pos, memoryview(chunk)[:size])
                plan.advance(segment, size)
                events.advance(plan.received())
            # Full (maybe split meanwhile): the rest belongs to another segment.
            return size == len(chunk) and bool(plan.limit(segment, 1))

        if not pump(attempt, self.job, write, self._stopped):
            return
        if plan.limit(segment, 1):
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
