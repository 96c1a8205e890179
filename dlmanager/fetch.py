"""Fetch one URL into its temporary file: retries, resume, connections, checks.

:class:`Fetch` is the work of a :class:`~dlmanager.Download`'s thread
between "a transfer slot is free" and "the file may take its final name". It
reports to the download through a small :class:`Host` interface (progress,
events, and the registry of open attempts that ``cancel()`` aborts).

A :class:`~dlmanager.errors.StorageError` (the disk is full, the directory
read-only or gone...) ends the fetch at once: it is never retried.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import Protocol

from dlmanager import checksum as checksums
from dlmanager.checkpoint import Checkpoint
from dlmanager.config import Timeouts
from dlmanager.errors import (
    ChecksumError,
    DownloadError,
    DownloadInterrupt,
    ResumeError,
    StallError,
    StorageError,
)
from dlmanager.parallel import CHECKPOINT_INTERVAL, ParallelFetch, RangesIgnored
from dlmanager.periodic import Periodic
from dlmanager.redact import get_logger
from dlmanager.retry import RetryPolicy
from dlmanager.segments import Plan
from dlmanager.stall import stall_guard
from dlmanager.storage import PartFile
from dlmanager.transfer import STALL, Attempt, ResponseInfo

__all__ = ["Fetch", "FetchOptions", "Host"]

log = get_logger(__name__)

#: Start-overs (the file changed, ranges unusable) per download that are not
#: counted as failed attempts: the server answered, so there is no backoff.
FREE_RESTARTS = 2

#: Checkpoints of single-stream downloads, saved from one background thread.
checkpoints = Periodic(CHECKPOINT_INTERVAL, "dlmanager-checkpoints")


@dataclasses.dataclass(frozen=True)
class FetchOptions:
    """How one download transfers (validated by :class:`~dlmanager.Download`)."""

    chunk_size: int
    timeouts: Timeouts
    retry: RetryPolicy
    connections: int
    min_split_size: int
    checksum: checksums.Checksum | None


class Host(Protocol):
    """What a :class:`Fetch` needs from its download."""

    def _open_attempt(self, offset: int, end: int | None, validator: str | None) -> Attempt: ...

    def _release_attempt(self, attempt: Attempt) -> None: ...

    def _abort_attempts(self) -> None: ...

    def _set_total(self, total: int | None) -> None: ...

    def _advance(self, received: int) -> None: ...

    def _restarted(self) -> None: ...

    def _resumed(self, offset: int) -> None: ...

    def _retrying(self, error: DownloadError, delay: float) -> None: ...


class Fetch:
    """Fill *part* with the bytes of *url*, then check them.

    :param resume: a checkpoint of the bytes *part* already holds (an
        adopted temporary file), or None for an empty *part*
    """

    def __init__(
        self,
        host: Host,
        url: str,
        part: PartFile,
        options: FetchOptions,
        cancel: threading.Event,
        resume: Checkpoint | None = None,
    ) -> None:
        self.host = host
        self.url = url
        self.part = part
        if not part.url:
            part.url = url  # for the context of its errors
        self.options = options
        self.cancel = cancel
        self.total: int | None = resume.total if resume else None
        self.validator: str | None = resume.validator if resume else None
        self._pending = list(resume.ranges) if resume else None
        self._split = True  # False once the server was seen to ignore ranges
        self._digests: tuple[checksums.Checksum, ...] = ()  # sent by the server
        self._hasher: checksums.Hasher | None = None  # valid while streaming from byte 0
        # Held while the part file is checkpointed or thrown away, so that a
        # checkpoint never describes bytes of another version.
        self._checkpoint_lock = threading.Lock()
        self._restarts = 0  # start-overs so far
        self._active_plan: Plan | None = None  # of the connections running (for the logs)
        # A checkpoint of the single stream that failed (saved from another thread).
        self._failure: StorageError | None = None

    def run(self) -> None:
        """Fetch with retries, then verify; raises the final error."""
        policy = self.options.retry
        while True:
            mark = self._received()
            try:
                self._attempt()
                break
            except _Final as final:
                raise final.error from final.error.__cause__
            except StorageError:
                raise  # the disk, not the network: another attempt cannot help
            except DownloadError as exc:
                if self._failure is not None:
                    raise self._failure from self._failure.__cause__
                if self.cancel.is_set():
                    raise DownloadInterrupt() from exc
                if isinstance(exc, ResumeError):
                    self._start_over(exc)
                    self._restarts += 1
                    if self._restarts <= FREE_RESTARTS:
                        continue  # the server answered: start over at once
                gain = self._received() - mark
                progressed = gain >= policy.progress_bytes and not isinstance(exc, StallError)
                policy = policy.increment(exc, progressed=progressed)
                delay = policy.sleep_time(exc)
                log.info("Attempt on %s failed, retrying in %.1fs: %s", self.url, delay, exc)
                self.host._retrying(exc, delay)
                if self.cancel.wait(delay):
                    raise DownloadInterrupt() from exc
        if self.cancel.is_set():
            raise DownloadInterrupt()
        self._verify()

    # -- attempts ---------------------------------------------------------------------

    def _received(self) -> int:
        return self.part.size

    def _held(self) -> int:
        """The bytes of the file in the part file (for the logs)."""
        plan = self._active_plan
        return plan.received() if plan is not None else self.part.size

    def _start_over(self, exc: ResumeError) -> None:
        log.info("Restarting %s from byte 0, throwing away %d bytes: %s",
                 self.url, self._held(), exc)  # fmt: skip
        self._active_plan = None
        if isinstance(exc, RangesIgnored):
            self._split = False
        with self._checkpoint_lock:
            self.validator = None
            self._pending = None
            self._digests = ()
            self.part.truncate()
        self.host._restarted()

    def _attempt(self) -> None:
        if self._pending is not None:
            assert self.total is not None and self.validator is not None
            plan = self._plan(self.total, self._pending)
            self._pending = None
            log.info("Resuming %s with %d of %d bytes from a leftover temporary file",
                     self.url, plan.received(), plan.total)  # fmt: skip
            self.host._set_total(self.total)
            self.part.check_space(plan.total, plan.received())
            self.host._resumed(plan.received())
            self.host._advance(plan.received())
            self._parallel(plan, None)
            return
        offset = self.part.size if self.validator is not None else 0
        attempt: Attempt | None = self.host._open_attempt(offset, None, self.validator)
        assert attempt is not None
        try:
            info = attempt.open()
            self._accept(attempt, offset, info)
            if self._should_split(info):
                assert info.total is not None
                plan = self._plan(info.total, [(0, offset)] if offset else [])
                attempt, first = None, attempt
                self._parallel(plan, first)
                return
            self._stream(attempt, info)
        finally:
            if attempt is not None:
                self.host._release_attempt(attempt)

    def _accept(self, attempt: Attempt, offset: int, info: ResponseInfo) -> None:
        """Make the part file ready for the body that *info* announces.

        :raises ResumeError: when a partial response belongs to another
            version of the file (a server that ignored ``If-Range``)
        """
        changed = info.validator is not None and info.validator != self.validator
        if info.start and (info.total != self.total or changed):
            raise ResumeError(
                f"{self.url}: the server resumed another version of the file "
                f"(validator {info.validator!r}, size {info.total})",
                url=self.url,
                dest=self.part.dest,
            )
        self.total = info.total
        self.host._set_total(info.total)  # may evict files first (a persist limit)
        if not info.start or info.validator is not None:
            self.validator = info.validator if info.resumable else None
        if info.start == 0:
            full = info.encoding is None or not attempt.decode
            self._digests = checksums.server_digests(info.headers) if full else ()
            if self.part.size:
                log.info("Restarting %s from byte 0, throwing away %d bytes: %s", self.url,
                         self.part.size, "the server sent the whole file again" if offset
                         else "it cannot be resumed safely (no validator)")  # fmt: skip
                with self._checkpoint_lock:
                    self.part.truncate()
                self.host._restarted()
            wanted = (*self._expected(), *self._digests)
            self._hasher = checksums.Hasher(wanted) if wanted else None
        else:
            log.info("Resuming %s at byte %d after a failed attempt", self.url, info.start)
            self._hasher = None
            self.host._resumed(info.start)
        if info.total is not None:
            self.part.check_space(info.total)  # before the first byte of the body
        self.host._advance(self.part.size)

    def _should_split(self, info: ResponseInfo) -> bool:
        return (
            self._split
            and self.options.connections > 1
            and info.resumable
            and info.total is not None
            and info.total - info.start >= self.options.min_split_size
            and (info.accept_ranges or info.status_code == 206)
        )

    def _stream(self, attempt: Attempt, info: ResponseInfo) -> None:
        """Append *attempt*'s body to the part file.

        Once a second (from another thread, so even while the server stalls)
        the bytes received so far are checkpointed; a file fetched within a
        second never pays for one.
        """
        part, hasher = self.part, self._hasher
        streaming = [True]  # False once the loop is over: no checkpoint after it

        def checkpoint() -> None:
            try:
                self._save_checkpoint(lambda: [(0, part.size)], live=streaming)
            except StorageError as exc:
                # Raised in the stream's thread; ending the attempt wakes a
                # read that waits for a slow or silent server.
                self._failure = self._failure or exc
                attempt.abort(STALL)

        with contextlib.ExitStack() as stack:
            stack.enter_context(stall_guard.watch(attempt))
            if info.resumable:
                stack.enter_context(checkpoints.every(checkpoint))
                stack.callback(self._stop_checkpoints, streaming)
            for chunk in attempt.body():
                part.write(chunk)
                if hasher is not None:
                    hasher.update(chunk)
                if self._failure is not None:
                    raise self._failure from self._failure.__cause__
                self.host._advance(part.size)
                if self.cancel.is_set():
                    raise DownloadInterrupt()
        if self._failure is not None:
            raise self._failure from self._failure.__cause__
        if info.total is not None and part.size != info.total:
            raise attempt.length_error(info.total, "shorter", part.size)

    # -- several connections ----------------------------------------------------------

    def _plan(self, total: int, done: list[tuple[int, int]]) -> Plan:
        return Plan(total, done, min_steal=max(1024 * 1024, 2 * self.options.chunk_size))

    def _parallel(self, plan: Plan, first: Attempt | None) -> None:
        assert self.validator is not None
        self._hasher = None
        try:
            self.part.preallocate(plan.total)
        except BaseException:
            if first is not None:
                self.host._release_attempt(first)
            raise
        validator = self.validator
        self._active_plan = plan

        def on_bytes() -> None:
            self.host._advance(plan.received())

        engine = ParallelFetch(
            url=self.url,
            plan=plan,
            part=self.part,
            validator=validator,
            connections=self.options.connections,
            min_split=self.options.min_split_size,
            retry=self.options.retry,
            cancel=self.cancel,
            new_attempt=lambda offset, end: self.host._open_attempt(offset, end, validator),
            release=self.host._release_attempt,
            on_bytes=on_bytes,
            on_retry=self.host._retrying,
            on_resume=self.host._resumed,
            save_checkpoint=lambda p: self._save_checkpoint(p.written),
            abort=self.host._abort_attempts,
        )
        try:
            engine.run(first)
        except (DownloadInterrupt, ResumeError):
            raise
        except DownloadError as exc:
            # Every connection already spent its own retry budget.
            raise _Final(exc) from exc
        self.part.size = plan.total

    def _save_checkpoint(
        self, ranges: Callable[[], list[tuple[int, int]]], live: list[bool] | None = None
    ) -> None:
        """Record the ranges written so far (taken before the data is flushed).

        :param live: a flag that is false once the writer is done (nothing
            is saved then: the file may be published or removed already)
        :raises StorageError: when the checkpoint cannot be saved
        """
        with self._checkpoint_lock:
            if live is not None and not live[0]:
                return
            if self.total is None or self.validator is None or self.cancel.is_set():
                return
            state = Checkpoint(self.url, self.total, self.validator, tuple(ranges()))
            self.part.save_checkpoint(state)

    def keep(self) -> bool:
        """Checkpoint the bytes the part file holds now (once the transfer has
        stopped), so that a later download resumes them.

        :return: whether a checkpoint was saved: not when there is nothing to
            keep, or the response gave no size or validator to resume with
        """
        plan = self._active_plan
        with self._checkpoint_lock:
            if self.total is None or self.validator is None:
                return False
            ranges = plan.written() if plan is not None else [(0, self.part.size)]
            if not any(end > start for start, end in ranges):
                return False
            try:
                self.part.save_checkpoint(Checkpoint(self.url, self.total, self.validator,
                                                     tuple(ranges)))  # fmt: skip
            except StorageError as exc:
                log.debug("Cannot keep %s for resuming: %s", self.part.path, exc)
                return False
        return True

    def _stop_checkpoints(self, live: list[bool]) -> None:
        """Clear *live*, waiting for a checkpoint being saved, if any."""
        with self._checkpoint_lock:
            live[0] = False

    # -- integrity --------------------------------------------------------------------

    def _expected(self) -> tuple[checksums.Checksum, ...]:
        return (self.options.checksum,) if self.options.checksum else ()

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
            try:
                actual = checksums.file_digests(self.part.path, {c.algorithm for c in wanted})
            except OSError as exc:
                raise StorageError(
                    f"cannot read {self.part.path}: {exc.strerror or exc}",
                    errno=exc.errno,
                    url=self.url,
                    dest=self.part.dest,
                    received=self.part.size,
                ) from exc
        for expected in wanted:
            got = actual.get(expected.algorithm)
            if got is None:
                log.debug("Cannot check %s of %s: no %s support", expected, self.url,
                          expected.algorithm)  # fmt: skip
                continue
            if got != expected.hexdigest:
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
        log.debug("%s matches %s", self.part.dest, ", ".join(str(c) for c in wanted))


class _Final(Exception):
    """Carries an error that must not be retried at the top level."""

    def __init__(self, error: DownloadError) -> None:
        super().__init__(str(error))
        self.error = error
