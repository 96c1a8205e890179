"""The transfer loop: retries, resume and verification of one download, once.

:class:`Transfer` is the work of a :class:`~dlmanager.Download`'s thread
between "a transfer slot is free" and "the file may take its final name": it
opens attempts until the temporary file holds the whole file, filling it one
way or the other (:class:`~dlmanager.transfer.stream.Stream`, or
:class:`~dlmanager.transfer.segmented.Segmented` when the server allows
ranges and the file is big enough), decides at each response whether the
bytes held can be kept (:func:`response_action`), then checks the file
against the caller's checksum and the server's digests.

A :class:`~dlmanager.errors.StorageError` (the disk is full, the directory
read-only or gone...) ends the transfer at once: it is never retried.
"""

from __future__ import annotations

import logging

from dlmanager import checksum as checksums
from dlmanager.disk.checkpoint import Checkpoint
from dlmanager.disk.sinks import Sink
from dlmanager.errors import (
    ChecksumError,
    DownloadError,
    DownloadInterrupt,
    ResumeError,
    StorageError,
)
from dlmanager.redact import get_logger
from dlmanager.revalidation import Conditions
from dlmanager.segments import Plan
from dlmanager.transfer.segmented import RangesIgnored, Segmented, SourceSkipped
from dlmanager.transfer.sources import DROP, MISMATCH, Source, Version
from dlmanager.transfer.steps import Checkpointer, Job, Retrier, version_changed
from dlmanager.transfer.stream import Stream
from dlmanager.transport.attempt import Attempt
from dlmanager.transport.headers import ResponseInfo, header

__all__ = ["APPEND", "RESTART", "STALE", "Transfer", "response_action"]

log = get_logger(__name__)

#: Start-overs (the file changed, ranges unusable) per download that are not
#: counted as failed attempts: the server answered, so there is no backoff.
FREE_RESTARTS = 2

APPEND = "append"  # the body continues the bytes held (or there are none)
_JOIN = "join"  # the body of another source (a mirror) continues the bytes held
RESTART = "restart"  # the body is the whole file: the bytes held go
STALE = "stale"  # a partial body of another version: refused


def response_action(info: ResponseInfo, held: int, total: int | None, validator: str | None) -> str:
    """What to do with the bytes held when a response arrives: :data:`APPEND`,
    :data:`RESTART` or :data:`STALE` (pure).

    :param held: bytes of the file held already
    :param total: their version's size, and *validator* its validator
    """
    if info.start and version_changed(info, total, validator):
        return STALE
    if info.start == 0 and held:
        return RESTART
    return APPEND


class Transfer:
    """Fill *part* with the bytes of the job's URL, then check them.

    :param resume: a checkpoint of the bytes *part* already holds (an
        adopted temporary file), or None for an empty *part*
    :param conditions: the file already at the destination, when the
        transfer revalidates it: its first request is conditional, and
        :class:`~dlmanager.transport.attempt.NotModified` ends the transfer
        when the server says that file is current

    After :meth:`run`, :attr:`final_url`, :attr:`etag` and
    :attr:`last_modified` describe the response the file came from, and
    :attr:`verified` is the checksum it was verified against (the caller's
    first, else a digest the server announced), or None.
    """

    def __init__(
        self,
        job: Job,
        part: Sink,
        resume: Checkpoint | None = None,
        conditions: Conditions | None = None,
    ) -> None:
        self.job = job
        self.url = job.url
        self.part = part
        if not part.url:
            part.url = job.url  # for the context of its errors
        self.checkpointer = Checkpointer(job.url, part, job.cancel)
        if resume is not None:
            self.checkpointer.total = resume.total
            self.checkpointer.validator = resume.validator
        self._pending = list(resume.ranges) if resume else None
        self._split = True  # False once the server was seen to ignore ranges
        self._digests: tuple[checksums.Checksum, ...] = ()  # sent by the server
        self._hasher: checksums.Hasher | None = None  # valid while streaming from byte 0
        self._restarts = 0  # start-overs so far
        self._plan: Plan | None = None  # of the connections running
        self._conditions = conditions if resume is None else None  # until a body is taken
        self._source: Source | None = None  # of the last attempt, with mirrors
        self.final_url = job.url
        self.etag: str | None = None
        self.last_modified: str | None = None
        self.verified: checksums.Checksum | None = None

    @property
    def total(self) -> int | None:
        return self.checkpointer.total

    @property
    def validator(self) -> str | None:
        return self.checkpointer.validator

    def run(self) -> None:
        """Fetch with retries, then verify; raises the final error."""
        retrier = Retrier(self.job, self.job.cancel.is_set)
        while True:
            retrier = self._fetch(retrier)
            if self.job.cancel.is_set():
                raise DownloadInterrupt()
            try:
                self._verify()
                break
            except ChecksumError as exc:
                if not self._another_source(exc):
                    raise
        if self.etag is None and self.last_modified is None and self.validator:
            # Resumed from a checkpoint: its validator is what the server sent.
            if self.validator.startswith(('"', "W/")):
                self.etag = self.validator
            else:
                self.last_modified = self.validator

    def keep(self) -> bool:
        """Checkpoint what the part file holds, once stopped, for a later
        download to resume; whether a checkpoint was saved."""
        plan = self._plan
        return self.checkpointer.keep(plan.written() if plan else [(0, self.part.size)])

    # -- attempts ---------------------------------------------------------------------

    def _fetch(self, retrier: Retrier) -> Retrier:
        """Attempt until the part file holds the whole file; the retrier left."""
        while True:
            mark = self.part.size
            try:
                self._attempt()
                return retrier
            except _Final as final:
                raise final.error from final.error.__cause__
            except StorageError:
                raise  # the disk, not the network: another attempt cannot help
            except SourceSkipped:
                continue  # a mirror left out: the next source, at once
            except DownloadError as exc:
                if self.part.size and not self.part.rewindable:
                    raise  # the bytes are out: no restart, no other attempt
                if isinstance(exc, ResumeError) and not self.job.cancel.is_set():
                    self._start_over(exc)
                    self._restarts += 1
                    if self._restarts <= FREE_RESTARTS:
                        continue  # the server answered: start over at once
                retrier = self._failed(retrier, exc, self.part.size - mark)

    def _failed(self, retrier: Retrier, exc: DownloadError, gained: int) -> Retrier:
        """Count a failed attempt; once its source is out of retries, the next
        source takes over with a retry budget of its own (mirrors)."""
        sources, source = self.job.sources, self._source
        if sources is None or source is None or not sources.several:
            retrier.failed(exc, gained, self.url)
            return retrier
        if not getattr(exc, "sent", True) and sources.others_left(source):
            # Unreachable (refused, no route, no such host): another source
            # now, not a backoff on this one (it is tried again only if every
            # other fails).
            sources.fail(source, exc)
            return Retrier(self.job, self.job.cancel.is_set)
        try:
            retrier.failed(exc, gained, source.url)
        except DownloadError as final:
            sources.fail(source, final)
            return Retrier(self.job, self.job.cancel.is_set)
        return retrier

    def _another_source(self, exc: ChecksumError) -> bool:
        """After a checksum mismatch, start over from one source (mirrors):
        the file assembled from several is fetched again from one, a file
        from one source fails that source. Whether the transfer goes on."""
        sources = self.job.sources
        if sources is None or not sources.several or not self.part.rewindable:
            return False
        if sources.mixed:
            sources.single()
        else:
            sources.fail(sources.reference, exc)
        self._start_over(exc)
        return True

    def _start_over(self, exc: DownloadError) -> None:
        held = self._plan.received() if self._plan is not None else self.part.size
        log.info("Restarting %s from byte 0, throwing away %d bytes: %s", self.url, held, exc)
        self._plan = None
        if isinstance(exc, RangesIgnored):
            self._split = False
        self._pending = None
        self._digests = ()
        self.checkpointer.truncate()
        self.job.events.restarted()

    def _attempt(self) -> None:
        if self._pending is not None:
            assert self.total is not None and self.validator is not None
            plan = self._new_plan(self.total, self._pending)
            self._pending = None
            log.info("Resuming %s with %d of %d bytes from a leftover temporary file",
                     self.url, plan.received(), plan.total)  # fmt: skip
            self.job.events.set_total(self.total)
            self.part.check_space(plan.total, plan.received())
            self.job.events.resumed()
            self.job.events.advance(plan.received())
            if self.job.sources is not None:
                self.job.sources.adopt(self.job.sources.reference, None,
                                       Version.assumed(self.total, self.validator))  # fmt: skip
            self._segmented(plan, None)
            return
        opener = self.job.opener
        offset = self.part.size if self.validator is not None else 0
        conditions = self._conditions if not offset else None
        validator, url = self._next_source()
        attempt: Attempt | None = opener.open(offset, None, validator, conditions, url)
        assert attempt is not None
        try:
            info = attempt.open()
            self._accept(attempt, offset, info)
            if self._should_split(info):
                assert info.total is not None
                plan = self._new_plan(info.total, [(0, offset)] if offset else [])
                attempt, first = None, attempt
                self._segmented(plan, first)
                return
            Stream(self.job, self.part, self.checkpointer).fill(attempt, info, self._hasher)
        finally:
            if attempt is not None:
                opener.release(attempt)

    def _accept(self, attempt: Attempt, offset: int, info: ResponseInfo) -> None:
        """Make the part file ready for the body that *info* announces.

        :raises ResumeError: when a partial response belongs to another
            version of the file (a server that ignored ``If-Range``)
        """
        action = self._source_action(info)  # with mirrors: may it join what is held?
        joined = action == _JOIN
        if action is None:
            action = response_action(info, self.part.size, self.total, self.validator)
        if action == STALE:
            raise ResumeError(
                f"{self.url}: the server resumed another version of the file "
                f"(validator {info.validator!r}, size {info.total})",
                url=self.url,
                dest=self.part.dest,
            )
        self._conditions = None  # a body to take: the file there is not current
        self.final_url = attempt.final_url
        if self.job.on_response is not None:
            self.job.on_response(info.headers, attempt.final_url)
        checkpointer = self.checkpointer
        if not joined:  # the version held stays that of the source it came from
            self.etag = header(info.headers, "ETag")
            self.last_modified = header(info.headers, "Last-Modified")
            checkpointer.total = info.total
        self.job.events.set_total(info.total)  # may evict files first (a persist limit)
        if (not info.start or info.validator is not None) and not joined:
            checkpointer.validator = info.validator if self.job.resumable(info) else None
        if info.start == 0:
            if self.job.sources is not None and self._source is not None:
                self.job.sources.adopt(self._source, info)
            full = info.encoding is None or not attempt.decode
            self._digests = checksums.server_digests(info.headers) if full else ()
            if action == RESTART:
                why = "the server sent the whole file again" if offset else self._no_resume()
                log.info("Restarting %s from byte 0, throwing away %d bytes: %s",
                         self.url, self.part.size, why)  # fmt: skip
                checkpointer.truncate(keep_version=True)
                self.job.events.restarted()
            wanted = (*self._expected(), *self._digests)
            self._hasher = checksums.Hasher(wanted) if wanted else None
        else:
            # The single stream fed the hasher (if any) every byte held: it goes on.
            log.info("Resuming %s at byte %d after a failed attempt", self.url, info.start)
            self.job.events.resumed()
        if info.total is not None:
            self.part.check_space(info.total)  # before the first byte of the body
        self.job.events.advance(self.part.size)

    def _next_source(self) -> tuple[str | None, str | None]:
        """The ``If-Range`` validator and URL of the next single-stream attempt:
        the first source that has not failed (mirrors), else the URL."""
        sources = self.job.sources
        if sources is None:
            return self.validator, None
        try:
            source = sources.current()
        except DownloadError as exc:  # every source failed
            raise _Final(exc) from exc
        self._source = source
        return sources.if_range(source, self.validator), source.url

    def _source_action(self, info: ResponseInfo) -> str | None:
        """What becomes of the bytes held when another source than theirs
        answers: :data:`_JOIN`, :data:`STALE` (another version: start over),
        :data:`APPEND`/:data:`RESTART` from byte 0; None for the source of
        the bytes held (or no mirrors): :func:`response_action` decides.

        :raises SourceSkipped: when the source announces another size (dropped)
        """
        sources, source = self.job.sources, self._source
        if sources is None or source is None or source is sources.reference:
            return None
        verdict = sources.admit(source, info)
        if verdict == DROP:
            sources.drop(source, info)
            raise SourceSkipped(f"{source.url}: dropped", url=source.url)
        if info.start == 0:
            return RESTART if self.part.size else APPEND
        if verdict == MISMATCH:
            return STALE
        sources.used(source)
        log.info("Resuming %s at byte %d from %s", self.url, info.start, source.url)
        return _JOIN

    def _no_resume(self) -> str:
        """Why the bytes held cannot be resumed, when no range was asked for."""
        request = self.job.request
        if request.ranged:
            return "it cannot be resumed safely (no validator)"
        body = " with a body" if request.body is not None else ""
        return f"a {request.method}{body} is never resumed"

    def _should_split(self, info: ResponseInfo) -> bool:
        options = self.job.options
        return (
            self._split
            and options.connections > 1
            and self.job.resumable(info)
            and info.total is not None
            and info.total - info.start >= options.min_split_size
            and (info.accept_ranges or info.status_code == 206)
        )

    # -- several connections ----------------------------------------------------------

    def _new_plan(self, total: int, done: list[tuple[int, int]]) -> Plan:
        return Plan(total, done, min_steal=max(1024 * 1024, 2 * self.job.options.read_size))

    def _segmented(self, plan: Plan, first: Attempt | None) -> None:
        assert self.validator is not None
        self._hasher = None
        try:
            self.part.preallocate(plan.total)
        except BaseException:
            if first is not None:
                self.job.opener.release(first)
            raise
        self._plan = plan
        checkpointer = self.checkpointer
        engine = Segmented(self.job, self.part, plan, self.validator,
                           lambda p: checkpointer.save(p.written), self._source)  # fmt: skip
        try:
            engine.run(first)
        except (DownloadInterrupt, ResumeError):
            raise
        except DownloadError as exc:
            # Every connection already spent its own retry budget.
            raise _Final(exc) from exc
        self.part.size = plan.total

    # -- integrity --------------------------------------------------------------------

    def _expected(self) -> tuple[checksums.Checksum, ...]:
        checksum = self.job.options.checksum
        return (checksum,) if checksum else ()

    def _verify(self) -> None:
        """Compare the file with the caller's checksum and the server's digests.

        :raises ChecksumError: on the first mismatch
        """
        wanted = (*self._expected(), *self._digests)
        if not wanted:
            return
        if self._hasher is not None:
            actual = self._hasher.hexdigests()
        else:
            actual = self.part.digests(wanted)
        for expected in wanted:
            got = actual.get(expected.algorithm)
            if got is None:
                log.debug("Cannot check %s of %s: no %s support", expected, self.url,
                          expected.algorithm)  # fmt: skip
                continue
            if got == expected.hexdigest:
                self.verified = self.verified or expected
                continue
            raise ChecksumError(
                f"{self.url}: {expected.algorithm} is {got}, expected {expected.hexdigest}"
                f" ({expected.source})",
                algorithm=expected.algorithm,
                expected=expected.hexdigest,
                actual=got,
                source=expected.source,
                url=self.url,
                dest=self.part.dest,
                received=self.part.size,
            )
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s matches %s", self.part.dest, ", ".join(str(c) for c in wanted))


class _Final(Exception):
    """Carries an error that must not be retried at the top level."""

    def __init__(self, error: DownloadError) -> None:
        super().__init__(str(error))
        self.error = error
