"""A :class:`Download`: one file, fetched in a background thread; its public face.

The download holds what its keywords built (:mod:`dlmanager.keywords`), its
state, its events and its cancel; its thread does the :class:`~dlmanager.work.Work`:
waits for a transfer slot and for its
:class:`~dlmanager.destination.Destination`, decides whether the file is
already done, else runs the transfer step (:mod:`dlmanager.transfer.publish`)
that fills, publishes, keeps or discards the temporary file.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO, Union

from dlmanager.checksum import Checksum
from dlmanager.config import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MIN_SPLIT_SIZE,
    TimeoutLike,
    TransferOptions,
)
from dlmanager.destination import Destination
from dlmanager.disk.sinks import FileObjectSink
from dlmanager.errors import DownloadInterrupt
from dlmanager.events import (
    DownloadEvent,
    DownloadState,
    EventCallback,
    EventKind,
    Events,
    ProgressCallback,
)
from dlmanager.keywords import download_parts
from dlmanager.rate import TokenBucket
from dlmanager.redact import get_logger, redact_url
from dlmanager.request import RequestOptions
from dlmanager.retry import RetryLike
from dlmanager.runtime import Runtime, default_runtime
from dlmanager.slots import Holder, Slots
from dlmanager.transfer.opener import AttemptOpener
from dlmanager.transfer.steps import Job
from dlmanager.transport.send import check_session
from dlmanager.work import ExcInfo, Work, wait_a_little

__all__ = ["Destination", "Download", "DownloadEvent", "DownloadState", "EventKind"]

log = get_logger(__name__)

Limiter = Union[Slots, threading.Semaphore, threading.BoundedSemaphore]

_POLL = 0.1  #: how often a semaphore limiter is tried again, in seconds
_JOIN_SLICE = 0.05  #: how often wait() lets KeyboardInterrupt in, in seconds


class Download:
    """Download one URL into *dest* in a background thread.

    The body is written into a hidden temporary file beside *dest* and moved
    into place only when complete; on error or cancel the temporary file is
    removed, so *dest* never holds a partial file. A file object *dest* is
    written directly, and cut back on error or cancel (see :ref:`destinations`).

    .. code-block:: python

        dl = Download(url, dest)
        dl.start()
        dl.wait()  # blocks until done, cancelled or failed; re-raises errors

    :param url: the http or https URL to download
    :param dest: the destination path (a string or any :class:`os.PathLike`),
        resolved now: a later :func:`os.chdir` changes nothing (a
        :class:`~dlmanager.DownloadManager` passes a :class:`Destination`);
        or a writable, seekable binary file object (:class:`io.BytesIO`, a
        file opened ``"wb"``...), written from its current position over one
        connection, with no temporary file (see :ref:`destinations`)
    :param finished_callback: called in the download thread with this
        download once the work is over, whatever the outcome
    :param chunk_size: the largest chunk read and handed to ``progress``;
        defaults to :data:`~dlmanager.config.DEFAULT_CHUNK_SIZE` (a response
        that is not read through urllib3, from a test double or another
        duck-typed session, is read with ``iter_content(16384)`` by default,
        as dlmanager 0.1.1 did)
    :param session: a ``requests.Session``, the ``requests`` module or any
        object with a compatible ``get(url, stream=True, ...)``; None (the
        default) for dlmanager's own transport, which follows the rules of a
        :class:`~dlmanager.DownloadSession` without ``requests``
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
    :param options: all of *chunk_size*, *retry*, *timeout*, *connections*,
        *min_split_size*, *checksum* and *max_size* at once, as a
        :class:`~dlmanager.config.TransferOptions` (then leave those out)
    :param runtime: the :class:`~dlmanager.runtime.Runtime` whose threads
        the download uses (default: the default runtime)
    :param revalidate: when a file is already at *dest*, ask the server
        whether it is current with one conditional request (see
        :ref:`retrieve`): ``304`` keeps it (:attr:`not_modified`), a new
        version replaces it once complete and verified, and a failure leaves
        it as it was
    :param max_age: a file at *dest* validated less than this many seconds
        ago is current without a request; an older one (or one dlmanager did
        not download) is revalidated, even without *revalidate*
    :param headers: headers sent over the session's (see :ref:`request-options`)
    :param params: a query appended to the URL's own
    :param method: the method (``"GET"``; required with a body)
    :param data: the body: bytes, a string, or a mapping sent as a form
    :param json: the body as JSON, instead of *data*
    :param auth: ``(user, password)``, or an auth object of ``requests``
    :param request: all of *headers*, *params*, *method*, *data*, *json* and
        *auth* at once, as a :class:`~dlmanager.request.RequestOptions`
        (then leave those out)
    :param mirrors: other http(s) URLs of the same file, tried in order when
        the sources before them fail, and sharing the segments of a file
        fetched over several connections (see :ref:`mirrors`); the name, the
        metadata's ``url`` and the errors' ``url`` stay those of *url*
    :param max_rate: the most bytes per second the download takes, all its
        connections together, or None for no limit (see :ref:`bandwidth`);
        changeable while it runs (:attr:`max_rate`)
    :param total_rate: a :class:`~dlmanager.rate.TokenBucket` the download
        takes from too, shared with other downloads (a
        :class:`~dlmanager.DownloadManager` passes the one of its *max_rate*)
    :raises ValueError: for a URL that is not http(s), an invalid option
        (a *max_rate* not above 0 too), or request options the session cannot send
    :raises TypeError: for a *dest* that is neither a path nor a binary file object

    .. versionchanged:: 1.0
       *dest* may be a file object.

       ``chunk_size`` defaults to 256 KiB instead of 16 KiB; retry, timeout,
       on_event, limiter, connections, min_split_size, checksum, max_size,
       options, runtime, revalidate, max_age, headers, params, method, data,
       json, auth, request, mirrors, max_rate and total_rate are new keyword-only
       parameters.
    """

    def __init__(
        self,
        url: str,
        dest: str | os.PathLike[str] | Destination | BinaryIO | FileObjectSink,
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
        options: TransferOptions | None = None,
        runtime: Runtime | None = None,
        revalidate: bool = False,
        max_age: float | None = None,
        headers: Any = None,
        params: Any = None,
        method: str | None = None,
        data: Any = None,
        json: Any = None,
        auth: Any = None,
        request: RequestOptions | None = None,
        mirrors: Iterable[str] | None = None,
        max_rate: float | None = None,
        total_rate: TokenBucket | None = None,
    ) -> None:
        parts = download_parts(url, dest, chunk_size=chunk_size, retry=retry, timeout=timeout,
                               connections=connections, min_split_size=min_split_size,
                               checksum=checksum, max_size=max_size, options=options,
                               revalidate=revalidate, max_age=max_age, headers=headers,
                               params=params, method=method, data=data, json=json, auth=auth,
                               request=request, mirrors=mirrors, max_rate=max_rate,
                               total_rate=total_rate)  # fmt: skip
        self._rate = parts.rate  # its own: changeable while it runs
        self._sink = parts.sink
        self._url = url
        self._request = request = parts.request
        target = request.target(url)  # what is requested: the URL and the query
        dest = parts.destination
        self._options = parts.options
        self._runtime = runtime or default_runtime()
        self._session = self._runtime.transport() if session is None else session
        check_session(self._session, request)
        self._events = Events(self, progress, on_event)
        self._lock = threading.Lock()  # guards the state shared with cancel()
        self._cancel = threading.Event()
        self._done = threading.Event()  # set when the thread's work is over
        self._holder = Holder(limiter, self._cancel, _POLL)
        self._opener = AttemptOpener(self._session, target, dest.path or dest.shown,
                                     self._options, self._runtime.senders, self._cancel,
                                     request)  # fmt: skip
        self._error: ExcInfo | None = None
        self._error_received = False  # by wait() or error(): DownloadManager.wait() skips it
        self._state = DownloadState.PENDING
        self._keep_partial = False  # cancel(keep_partial=True)
        job = Job(target, self._options, self._opener, self._events, self._cancel,
                  self._runtime, request, throttle=parts.throttle)  # fmt: skip
        self._work = Work(job, url, dest, self._sink, parts.mirrors, self._holder,
                          revalidate=parts.revalidate, max_age=max_age, download=self,
                          keep_partial=lambda: self._keep_partial, running=self._running,
                          finished_callback=finished_callback, done=self._done)  # fmt: skip
        self.thread = threading.Thread(
            target=self._run, name=f"dlmanager {redact_url(url)}", daemon=True
        )

    def __repr__(self) -> str:
        return f"<Download {redact_url(self._url)!r} -> {self.get_dest()!r} {self._state.value}>"

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
                raise RuntimeError(f"download of {redact_url(self._url)} was already started")
            self._state = DownloadState.QUEUED
        self._runtime.add(self)
        if isinstance(self._holder.limiter, Slots):
            self._holder.join_queue(on_grant=self.thread.start)
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
        self._holder.cancelled()  # leaves the queue (a queued download ends at once)
        self._opener.abort_all()

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
            raise RuntimeError(f"the download of {redact_url(self._url)} cannot wait for itself")
        try:
            while self.is_running():
                wait_a_little(self.thread, self._done, _JOIN_SLICE)
        except BaseException:
            self.cancel()
            raise
        if self.thread.ident is not None:
            self.thread.join()  # its last instructions after the work is over
        if raise_if_error:
            self.raise_if_error()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to *timeout* seconds (None: as long as it takes) for the download
        to be over, without raising its error or cancelling it; whether it is
        over (or was never started)."""
        if self._state is DownloadState.PENDING:
            return True
        return self._done.wait(timeout)

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
            raise DownloadInterrupt(f"download of {redact_url(self._url)} was cancelled")

    def set_progress(self, progress: ProgressCallback | None) -> None:
        """Set the callable that reports progress, or None for no reports.

        It is called as ``progress(download, current, total)``, from the
        download thread: once with the bytes already in place when response
        headers arrive, then after every chunk written. It is not called while
        the total size is unknown (use ``on_event`` for that). Thread-safe:
        it may be called during a download.
        """
        self._events.set_progress(progress)

    def get_dest(self) -> str:
        """The destination path (as given); for a file object, its ``name``
        when it has one (an open file's path), else ``<BytesIO>`` or the like."""
        return self._work.destination.shown

    @property
    def fileobj(self) -> BinaryIO | None:
        """The file object the download writes into, or None for a path."""
        return self._sink.fileobj if self._sink is not None else None

    def get_url(self) -> str:
        """The URL (as given: with its credentials, if any)."""
        return self._url

    # -- beyond 0.1.1 ----------------------------------------------------------------

    @property
    def state(self) -> DownloadState:
        """The current :class:`DownloadState`."""
        return self._state

    @property
    def received(self) -> int:
        """Bytes of the file received so far."""
        return self._events.received

    @property
    def request(self) -> RequestOptions:
        """What the download sends: its method, headers, query, body and auth."""
        return self._request

    @property
    def checksum(self) -> Checksum | None:
        """The checksum the file must match, or None."""
        return self._options.checksum

    @property
    def total(self) -> int | None:
        """The expected size, once known."""
        return self._events.total

    @property
    def max_rate(self) -> float | None:
        """The most bytes per second the download takes (all its connections
        together), or None for no limit. Settable at any time, also while it
        runs: the new rate applies from the next piece it reads (within a
        fraction of a second; see :ref:`bandwidth`).

        :raises ValueError: for a rate that is not above 0
        """
        return self._rate.rate

    @max_rate.setter
    def max_rate(self, rate: float | None) -> None:
        self._rate.rate = rate

    @property
    def not_modified(self) -> bool:
        """Whether the download revalidated the file already there and found it
        current (a ``304``, fresh within ``max_age``, or just revalidated by
        whom it waited for): the file was kept, and no body was transferred."""
        return self._work.not_modified

    @property
    def done_by(self) -> str | None:
        """Who put the file in place, when this download found it done without
        transferring it (it waited while another process, another manager of
        this process or another download of this manager downloaded it):
        ``"another process"``, ``"another manager"`` or ``"another
        download"``; None otherwise."""
        return self._work.done_by

    # -- the thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            ended = self._work.run()
            self._error = ended.error
            self._state = ended.state
        finally:
            self._work.finish(self._error[1] if self._error else None)

    def _running(self) -> None:
        self._state = DownloadState.RUNNING


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
