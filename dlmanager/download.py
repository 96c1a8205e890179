"""A :class:`Download`: one file, fetched in a background thread."""

from __future__ import annotations

import atexit
import dataclasses
import enum
import os
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Union

import requests

from dlmanager.checksum import Checksum, file_digests, parse_checksum
from dlmanager.config import (
    COMPAT_CHUNK_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_CONNECTIONS,
    DEFAULT_MIN_SPLIT_SIZE,
    TimeoutLike,
    Timeouts,
)
from dlmanager.errors import DownloadError, DownloadInterrupt, StorageError
from dlmanager.fetch import Fetch, FetchOptions, checkpoints
from dlmanager.locking import DestinationLock
from dlmanager.paths import as_path, check_name_length, check_url
from dlmanager.redact import get_logger, redact_url
from dlmanager.retry import RetryLike, RetryPolicy
from dlmanager.slots import Slots, Turn
from dlmanager.stall import stall_guard
from dlmanager.storage import PartFile, leftover_progress
from dlmanager.transfer import CANCEL, Attempt, release_idle_senders

__all__ = ["Download", "DownloadEvent", "DownloadState", "EventKind"]

log = get_logger(__name__)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
ProgressCallback = Callable[["Download", int, int], Any]
EventCallback = Callable[["DownloadEvent"], Any]
Limiter = Union[Slots, threading.Semaphore, threading.BoundedSemaphore]

#: How often a queued download checks whether it was cancelled, in seconds.
_QUEUE_POLL = 0.1
#: How often ``wait()`` wakes up to let KeyboardInterrupt in, in seconds.
_JOIN_SLICE = 0.05


class DownloadState(enum.Enum):
    """Where a :class:`Download` is in its life."""

    PENDING = "pending"  #: created, not started
    QUEUED = "queued"  #: started, waiting for a free transfer slot
    RUNNING = "running"  #: transferring
    DONE = "done"  #: the file is in place
    FAILED = "failed"  #: gave up; see :meth:`Download.error`
    CANCELLED = "cancelled"  #: cancelled; nothing left on disk


class EventKind(enum.Enum):
    """What a :class:`DownloadEvent` reports."""

    STARTED = "started"  #: response headers of the first attempt arrived
    PROGRESS = "progress"  #: a chunk was written
    RETRYING = "retrying"  #: an attempt failed; the next starts after ``delay``
    RESUMED = "resumed"  #: an attempt continues from ``received`` bytes
    RESTARTED = "restarted"  #: the bytes received so far were thrown away
    FINISHED = "finished"  #: the download ended (see ``download.state``)


@dataclasses.dataclass(frozen=True)
class DownloadEvent:
    """What the keyword-only ``on_event`` hook of a :class:`Download` receives.

    Unlike the 0.1.1-compatible ``progress`` callback, it is called even when
    the total size is unknown.

    :ivar received: bytes of the file received so far (never counted twice)
    :ivar total: the expected size, or None when unknown
    :ivar error: the attempt's error (RETRYING) or the final one (FINISHED)
    :ivar delay: seconds until the next attempt (RETRYING)
    """

    kind: EventKind
    download: Download
    received: int
    total: int | None
    error: BaseException | None = None
    delay: float = 0.0


class Download:
    """Download one URL into *dest* in a background thread.

    The body is written into a hidden temporary file beside *dest* and moved
    into place only when complete; on error or cancel the temporary file is
    removed, so *dest* never holds a partial file.

    .. code-block:: python

        dl = Download(url, dest)
        dl.start()
        dl.wait()  # blocks until done, cancelled or failed; re-raises errors

    :param url: the http or https URL to download
    :param dest: the destination path (a string or any :class:`os.PathLike`)
    :param finished_callback: called in the download thread with this
        download once the work is over, whatever the outcome
    :param chunk_size: the largest chunk read and handed to ``progress``;
        defaults to :data:`~dlmanager.config.DEFAULT_CHUNK_SIZE` (a response
        that is not read through urllib3, from a test double or another
        duck-typed session, is read with ``iter_content(16384)`` by default,
        as dlmanager 0.1.1 did)
    :param session: a ``requests.Session``, the ``requests`` module (the
        default) or any object with a compatible ``get(url, stream=True, ...)``
    :param progress: ``progress(download, current, total)``, see :meth:`set_progress`
    :param retry: a :class:`~dlmanager.RetryPolicy`, a number of retries, or
        None for the default policy
    :param timeout: a :class:`~dlmanager.Timeouts`, a number of seconds, or
        None for the defaults
    :param on_event: ``on_event(event)`` receives every :class:`DownloadEvent`
    :param limiter: :class:`~dlmanager.slots.Slots` (or a semaphore) bounding how
        many downloads transfer at once
        (a :class:`~dlmanager.DownloadManager` passes its own)
    :param connections: fetch the file over up to this many connections at
        once, when the server allows ranges and the file is big enough
    :param min_split_size: the smallest part of a file worth a connection
        of its own, in bytes
    :param checksum: ``"ALGORITHM:HEX"`` (md5, sha1, sha256, sha512, blake2b)
        that the file must match before it takes its final name
    :param max_size: the largest file accepted, in bytes, or None for no
        limit: a larger ``Content-Length`` (or ``Content-Range`` total) fails
        the download before any byte is written, and a body that goes past
        it (sent without a length, or endless) is cut off, with
        :class:`~dlmanager.errors.TooLargeError` (not retried)
    :raises ValueError: for a URL that is not http(s), or an invalid option

    .. versionchanged:: 1.0
       ``chunk_size`` defaults to 256 KiB instead of 16 KiB; retry, timeout,
       on_event, limiter, connections, min_split_size, checksum and max_size
       are new keyword-only parameters.
    """

    def __init__(
        self,
        url: str,
        dest: str | os.PathLike[str],
        finished_callback: Callable[[Download], Any] | None = None,
        chunk_size: int | None = None,
        session: Any = None,
        progress: ProgressCallback | None = None,
        *,
        retry: RetryLike = None,
        timeout: TimeoutLike = None,
        on_event: EventCallback | None = None,
        limiter: Limiter | None = None,
        connections: int = DEFAULT_CONNECTIONS,
        min_split_size: int = DEFAULT_MIN_SPLIT_SIZE,
        checksum: Checksum | str | None = None,
        max_size: int | None = None,
    ) -> None:
        check_url(url)
        dest = as_path(dest, "dest")
        check_name_length(os.path.basename(dest))
        if chunk_size is not None and (
            not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size <= 0
        ):
            raise ValueError(f"chunk_size must be a positive integer, not {chunk_size!r}")
        self.thread = threading.Thread(
            target=self._run,
            name=f"dlmanager {redact_url(url)}",
            args=(finished_callback,),
            daemon=True,
        )
        self._url = url
        self._dest = dest
        # Every file operation uses the path resolved now: a later
        # os.chdir() changes nothing (get_dest() returns dest as given).
        self._path = os.path.abspath(dest)
        self._session = requests if session is None else session
        self._options = FetchOptions(
            chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
            timeouts=Timeouts.from_value(timeout),
            retry=RetryPolicy.from_value(retry),
            connections=_check_positive("connections", connections),
            min_split_size=_check_positive("min_split_size", min_split_size),
            checksum=parse_checksum(checksum),
        )
        self._max_size = None if max_size is None else _check_positive("max_size", max_size)
        # What iter_content is asked for (a response not read through urllib3).
        self._content_chunk_size = chunk_size or COMPAT_CHUNK_SIZE
        self._limiter = limiter
        #: The place in the queue of a Slots limiter, taken when the manager starts it.
        self._turn: Turn | None = None
        self._holds_semaphore = False  # a semaphore limiter was acquired
        self._lock = threading.Lock()  # guards the state shared with cancel()
        self._progress_lock = threading.RLock()  # held while the progress callback runs
        self._progress = progress
        self._on_event = on_event
        self._cancel = threading.Event()
        self._done = threading.Event()  # set when the thread's work is over
        self._error: ExcInfo | None = None
        # Whether the caller received the error (wait(), error()): DownloadManager.wait()
        # raises only the errors nobody received.
        self._error_received = False
        self._state = DownloadState.PENDING
        self._attempts: set[Attempt] = set()  # open attempts, aborted by cancel()
        self._replacing = False  # a file was at dest when the transfer began
        self._keep_partial = False  # cancel(keep_partial=True)
        # Who downloaded the file, when this one found it done (for the logs).
        self._waited_for = "another download"
        self._done_by: str | None = None
        self._received = 0  # high-water mark of the file's bytes, for progress
        self._total: int | None = None
        self._started = False
        # Look for a leftover to resume (a DownloadManager that scanned the
        # directory once turns this off for names that have none).
        self._adopt_leftovers = True
        # The inter-process lock of the destination (set by a DownloadManager).
        self._dest_lock: DestinationLock | None = None
        # A download of the same destination expecting another checksum (set
        # by a DownloadManager): this one starts when it ends.
        self._after: Download | None = None

    def __repr__(self) -> str:
        return f"<Download {redact_url(self._url)!r} -> {self._dest!r} {self._state.value}>"

    # -- the 0.1.1 API ---------------------------------------------------------------

    def start(self) -> None:
        """Start the download.

        With a :class:`~dlmanager.slots.Slots` limiter (a
        :class:`~dlmanager.DownloadManager`'s), the download takes its place
        in the queue and its thread starts when a transfer slot is free:
        meanwhile it holds no thread and no file. Otherwise its thread starts
        at once.

        :raises RuntimeError: when called twice
        """
        with self._lock:
            if self._state is not DownloadState.PENDING:
                raise RuntimeError(f"download of {self._url} was already started")
            self._state = DownloadState.QUEUED
        _live.add(self)
        if isinstance(self._limiter, Slots):
            # Known to cancel() before it can be granted (and start the thread).
            turn = Turn(self._limiter, on_grant=self.thread.start)
            with self._lock:
                self._turn = turn
                cancelled = self._cancel.is_set()
            if cancelled:
                turn.cancel()  # never queued: its thread starts, and ends at once
            else:
                self._limiter.join(turn)
        else:
            self.thread.start()

    def cancel(self, keep_partial: bool = False) -> None:
        """Cancel the download: it stops within about a second, leaving nothing on disk.

        :param keep_partial: keep what was received instead, as a hidden
            leftover (the temporary file, flushed, and its checkpoint) that
            the next download of the same file resumes, as ``wget -c`` does;
            only when the server gave a validator and a size (otherwise the
            bytes could not be resumed safely, and are removed). The
            ``dlmanager`` command does this on Ctrl-C; ``dlmanager cache
            clean`` removes such leftovers.

        .. versionchanged:: 1.0
           *keep_partial*.
        """
        with self._lock:
            if not self._cancel.is_set():
                self._keep_partial = keep_partial
            self._cancel.set()
            turn = self._turn
        if turn is not None:
            turn.cancel()  # leaves the queue (a queued download ends at once)
        self._abort_attempts()

    def is_canceled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancel.is_set()

    def is_running(self) -> bool:
        """Whether the download was started and its thread's work is not over."""
        return self._state is not DownloadState.PENDING and not self._done.is_set()

    def wait(self, raise_if_error: bool = True) -> None:
        """Block until the download is over (done, failed or cancelled).

        It waits in short slices, so that an exception raised in the waiting
        thread (KeyboardInterrupt included) cancels the download and
        propagates at once. Returns at once for a download never started.

        :param raise_if_error: call :meth:`raise_if_error` once finished
        """
        if threading.current_thread() is self.thread:
            raise RuntimeError(f"the download of {self._url} cannot wait for itself")
        try:
            while self.is_running():
                self._wait_a_little()
        except BaseException:
            self.cancel()
            raise
        if self.thread.ident is not None:
            self.thread.join()  # its last instructions after the work is over
        if raise_if_error:
            self.raise_if_error()

    def _wait_a_little(self) -> None:
        """Join the thread for a moment (as dlmanager 0.1.1 did), or wait for it to start."""
        if self.thread.ident is not None:
            try:
                self.thread.join(_JOIN_SLICE)
            except RuntimeError:  # started a moment ago: not joinable yet
                pass
            else:
                if self.thread.is_alive():
                    return
        # Not started yet (a manager starts it just after registering it), or
        # an interrupted join() marked a live thread as stopped (CPython):
        # the thread's own signal is the reliable one.
        self._done.wait(_JOIN_SLICE)

    def error(self) -> ExcInfo | None:
        """The error that ended the download, or None.

        As in dlmanager 0.1.1, it is the ``(type, value, traceback)`` tuple
        of :func:`sys.exc_info`: the exception itself is ``error()[1]``, a
        :class:`~dlmanager.DownloadError` for a failed transfer. A
        cancelled download has none (unless an error ended it while it
        was being cancelled). Once you called it, the error is yours:
        :meth:`DownloadManager.wait` does not raise it again.
        """
        if self._error is not None:
            self._error_received = True
        return self._error

    def raise_if_error(self) -> None:
        """Re-raise the download's error, or :class:`DownloadInterrupt` if it was cancelled."""
        if self._error is not None:
            self._error_received = True
            raise self._error[1].with_traceback(self._error[2])
        if self.is_canceled() and self._state is not DownloadState.DONE:
            raise DownloadInterrupt(f"download of {self._url} was cancelled")

    def set_progress(self, progress: ProgressCallback | None) -> None:
        """Set the callable that reports progress, or None for no reports.

        It is called as ``progress(download, current, total)``, from the
        download thread: once with the bytes already in place when response
        headers arrive, then after every chunk written. It is not called while
        the total size is unknown (use ``on_event`` for that). Thread-safe:
        it may be called during a download.
        """
        with self._progress_lock:
            self._progress = progress

    def get_dest(self) -> str:
        """The destination path."""
        return self._dest

    def get_url(self) -> str:
        """The URL."""
        return self._url

    # -- beyond 0.1.1 ----------------------------------------------------------------

    @property
    def state(self) -> DownloadState:
        """The current :class:`DownloadState`."""
        return self._state

    @property
    def received(self) -> int:
        """Bytes of the file received so far."""
        return self._received

    @property
    def checksum(self) -> Checksum | None:
        """The checksum the file must match, or None."""
        return self._options.checksum

    @property
    def total(self) -> int | None:
        """The expected size, once known."""
        return self._total

    @property
    def done_by(self) -> str | None:
        """Who put the file in place, when this download found it done without
        transferring it (it waited while another process, another manager of
        this process or another download of this manager downloaded it):
        ``"another process"``, ``"another manager"`` or ``"another
        download"``; None otherwise."""
        return self._done_by

    # -- the thread --------------------------------------------------------------------

    def _run(self, finished_callback: Callable[[Download], Any] | None) -> None:
        try:
            try:
                self._check_cancel()
                self._wait_for_slot()
                self._wait_for_previous()
                self._wait_for_dest_lock()
                if not self._done_elsewhere():
                    # A file there that does not match the checksum stays
                    # until the new one is verified.
                    self._replacing = self.checksum is not None and _regular_file(self._path)
                    self._wait_for_slot()  # again, if a wait above gave it up
                    self._state = DownloadState.RUNNING
                    self._transfer()
            finally:
                # Whatever happened, at whatever step: nothing stays held.
                self._release_slot()
                if self._dest_lock is not None:
                    self._dest_lock.release()
            self._state = DownloadState.DONE
        except DownloadInterrupt:
            self._state = DownloadState.CANCELLED
            log.debug("Download of %s cancelled", self._url)
        except BaseException as exc:
            if self._replacing and isinstance(exc, DownloadError) and _regular_file(self._path):
                exc.message += f"; the file already at {self._path} was left as it was"
            self._error = sys.exc_info()  # type: ignore[assignment]
            self._state = DownloadState.CANCELLED if self.is_canceled() else DownloadState.FAILED
            if self._state is DownloadState.CANCELLED:
                log.debug("Download of %s cancelled: %s", self._url, exc, exc_info=True)
            else:
                log.info("Download of %s failed: %s", self._url, exc)
                log.debug("Traceback of the failed download of %s", self._url, exc_info=True)
        finally:
            error = self._error[1] if self._error else None
            try:
                self._emit(EventKind.FINISHED, error=error)
            except Exception:
                log.exception("on_event hook of %s failed", self._url)
            _live.discard(self)
            try:
                if finished_callback is not None:
                    finished_callback(self)
            except Exception:
                log.exception("finished_callback of %s failed", self._url)
            finally:
                self._done.set()

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise DownloadInterrupt()

    def _wait_for_previous(self) -> None:
        """Let a download of the same destination end first: one expecting
        another checksum, or a cancelled one still cleaning up."""
        previous, self._after = self._after, None
        if previous is None or previous._done.is_set():
            return
        self._release_slot()  # others go first meanwhile
        while not previous._done.wait(_QUEUE_POLL):
            self._check_cancel()
        self._adopt_leftovers = True  # what it left, if it failed, may be resumed

    def _wait_for_dest_lock(self) -> None:
        """Wait while another process (or manager) downloads the same destination.

        Meanwhile, progress is reported from that process's temporary file.
        """
        lock = self._dest_lock
        if lock is None or self._try_lock(lock):
            return
        self._waited_for = lock.holder()
        log.info("%s is being downloaded by %s: waiting", self._path, self._waited_for)
        self._release_slot()  # no place in the queue while waiting: others go first
        while not self._try_lock(lock):
            if self._cancel.wait(_QUEUE_POLL * 2):
                raise DownloadInterrupt()
            held = leftover_progress(self._path)
            if held is not None:
                self._total = held[1] if held[1] is not None else self._total
                self._advance(held[0])
        # The other process finished, or died: then resume what it left.
        self._adopt_leftovers = True

    def _try_lock(self, lock: DestinationLock) -> bool:
        try:
            return lock.try_acquire()
        except StorageError as exc:
            exc.url = self._url  # the lock knows the directory, not the URL
            raise

    def _done_elsewhere(self) -> bool:
        """Whether another process (or download) finished the file while this one waited."""
        if self._dest_lock is None or not _regular_file(self._path):
            return False
        expected = self._options.checksum
        if expected is not None:
            try:
                actual = file_digests(self._path, [expected.algorithm]).get(expected.algorithm)
            except FileNotFoundError:
                return False  # evicted meanwhile: downloaded again
            if actual != expected.hexdigest:
                return False  # downloaded again, replacing it atomically
        log.info("%s was downloaded by %s", self._path, self._waited_for)
        self._done_by = self._waited_for
        return True

    def _wait_for_slot(self) -> None:
        """Hold a transfer slot (a no-op when one is held already)."""
        limiter = self._limiter
        if isinstance(limiter, Slots):
            turn = self._turn
            if turn is None:
                with self._lock:  # cancel() wakes the turn it sees
                    self._check_cancel()
                    turn = self._turn = limiter.take_turn()
            if not turn.wait(self._cancel):
                raise DownloadInterrupt()
        elif limiter is not None and not self._holds_semaphore:
            while not limiter.acquire(timeout=_QUEUE_POLL):
                self._check_cancel()
            self._holds_semaphore = True
        self._check_cancel()  # the caller releases the slot

    def _release_slot(self) -> None:
        """Give back the slot or the place in the queue held, if any."""
        with self._lock:
            turn, self._turn = self._turn, None
        if turn is not None:
            turn.leave()
        if self._holds_semaphore:
            assert self._limiter is not None and not isinstance(self._limiter, Slots)
            self._holds_semaphore = False
            self._limiter.release()

    def _transfer(self) -> None:
        if self.is_canceled():
            raise DownloadInterrupt()
        adopted = PartFile.adopt(self._path, self._url) if self._adopt_leftovers else None
        if adopted is not None:
            part, resume = adopted
        else:
            part, resume = PartFile.create(self._path, self._url), None
        fetch: Fetch | None = None
        try:
            if resume is not None:
                self._total = resume.total
                self._received = resume.received
            fetch = Fetch(self, self._url, part, self._options, self._cancel, resume)
            fetch.run()
            if self.is_canceled():
                raise DownloadInterrupt()
            part.publish(self._total)
        except BaseException as exc:
            keep = self._keep_partial and isinstance(exc, DownloadInterrupt)
            if keep and fetch is not None and fetch.keep():
                part.close()  # a leftover the next download resumes
                log.info("Kept %d bytes of %s for a later download to resume",
                         part.size, self._path)  # fmt: skip
            else:
                part.discard()
            raise

    # -- what Fetch reports (fetch.Host) ---------------------------------------------------

    def _open_attempt(self, offset: int, end: int | None, validator: str | None) -> Attempt:
        attempt = Attempt(
            self._session,
            self._url,
            dest=self._path,
            offset=offset,
            end=end,
            validator=validator if offset or end is not None else None,
            timeouts=self._options.timeouts,
            chunk_size=self._options.chunk_size,
            keep_gzip=self._path.lower().endswith((".gz", ".tgz")),
            max_size=self._max_size,
            content_chunk_size=self._content_chunk_size,
        )
        with self._lock:
            if self._cancel.is_set():
                raise DownloadInterrupt()
            self._attempts.add(attempt)
        return attempt

    def _release_attempt(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts.discard(attempt)
        attempt.close()

    def _abort_attempts(self) -> None:
        with self._lock:
            attempts = list(self._attempts)
        for attempt in attempts:
            attempt.abort(CANCEL)

    def _set_total(self, total: int | None) -> None:
        self._total = total
        if not self._started:
            self._started = True
            self._emit(EventKind.STARTED)

    def _restarted(self) -> None:
        self._emit(EventKind.RESTARTED)

    def _resumed(self, offset: int) -> None:
        self._emit(EventKind.RESUMED)

    def _retrying(self, error: DownloadError, delay: float) -> None:
        self._emit(EventKind.RETRYING, error=error, delay=delay)

    def _advance(self, received: int) -> None:
        """Report progress: *received* bytes of the file are in place.

        Called from one connection's thread at a time; never goes backwards.
        """
        with self._progress_lock:
            if received > self._received:
                self._received = received
            if self._progress is not None and self._total is not None:
                self._progress(self, self._received, self._total)
            self._emit(EventKind.PROGRESS)

    def _emit(
        self, kind: EventKind, *, error: BaseException | None = None, delay: float = 0.0
    ) -> None:
        hook = self._on_event
        if hook is not None:
            with self._progress_lock:
                hook(DownloadEvent(kind, self, self._received, self._total, error, delay))


def unreceived(download: Download) -> bool:
    """Whether *download* failed with an error its caller has not received yet."""
    return download.state is DownloadState.FAILED and not download._error_received


def take_unreceived_error(download: Download) -> BaseException | None:
    """The error of a failed *download* that its caller has not received yet,
    which counts as received from now on; None otherwise."""
    if not unreceived(download):
        return None
    download._error_received = True
    return download._error[1] if download._error is not None else None


def _regular_file(path: str) -> bool:
    """Whether *path* is a regular file itself (a symlink to one does not count)."""
    return os.path.isfile(path) and not os.path.islink(path)


def _check_positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


def end_idle_threads(timeout: float = 5.0) -> None:
    """End the background threads that have nothing left to do, and wait for
    them: idle request senders, and the checkpoint and stall-guard threads
    when no transfer uses them (a closing manager calls it)."""
    release_idle_senders(timeout)
    checkpoints.join_idle(timeout)
    stall_guard.join_idle(timeout)


class _LiveDownloads:
    """Downloads whose thread may be running, cancelled at interpreter exit."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: set[Download] = set()

    def add(self, download: Download) -> None:
        with self._lock:
            self._items.add(download)

    def discard(self, download: Download) -> None:
        with self._lock:
            self._items.discard(download)

    def cancel_all(self, timeout: float = 2.0) -> None:
        with self._lock:
            running = [dl for dl in self._items if dl.is_running()]
        for dl in running:
            dl.cancel()
        deadline = time.monotonic() + timeout
        for dl in running:
            dl._done.wait(max(0.0, deadline - time.monotonic()))


_live = _LiveDownloads()
atexit.register(_live.cancel_all)
