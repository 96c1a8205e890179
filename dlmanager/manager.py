"""DownloadManager: downloads into one directory, deduplicated, bounded and capped.

For compatibility with dlmanager 0.1.1 this module also exports
:class:`~dlmanager.Download` and :class:`~dlmanager.DownloadInterrupt`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any, BinaryIO

from dlmanager.checksum import Checksum, parse_checksum
from dlmanager.config import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MIN_SPLIT_SIZE,
    TimeoutLike,
    TransferOptions,
)
from dlmanager.destination import HIT, JOIN, Destination, request_action
from dlmanager.directory import Directory, mismatching, present, status
from dlmanager.disk.metadata import FileInfo, read_info, utcnow
from dlmanager.download import Download, take_unreceived_error, unreceived
from dlmanager.errors import DownloadInterrupt
from dlmanager.events import DownloadState, EventCallback, ProgressCallback
from dlmanager.names import as_path, check_url, name_from_url
from dlmanager.persist_limit import PersistLimit
from dlmanager.rate import TokenBucket, check_rate
from dlmanager.redact import get_logger
from dlmanager.request import RequestOptions
from dlmanager.retry import RetryLike
from dlmanager.revalidation import check_max_age, fresh
from dlmanager.runtime import Runtime
from dlmanager.server_names import Naming, check_named, flight_key, placeholder_fname
from dlmanager.slots import Slots
from dlmanager.transfer.sources import check_mirrors
from dlmanager.transport.direct import Direct, is_download_session
from dlmanager.transport.send import check_session

__all__ = ["Download", "DownloadInterrupt", "DownloadManager"]

log = get_logger(__name__)


class DownloadManager:
    """Start and manage downloads into *destdir*.

    A file is downloaded only if it is not already there; a destination that
    is downloading is not downloaded twice. At most *max_workers* transfers
    run at once; the others queue without opening a connection. The manager is
    safe to use from several threads.

    Background downloads must be stopped when the program is interrupted:

    .. code-block:: python

        manager = DownloadManager(destdir)
        try:
            manager.download(url1, "f1")
            manager.download(url2, "f2")
            manager.wait()
        finally:
            manager.cancel()  # stops what is still running, removes partial files

    :param destdir: the directory downloads go to; created if missing
    :param session: a ``requests.Session`` (with its auth, proxies, adapters),
        the ``requests`` module, or any object with a compatible ``get``;
        default: one session per manager, pooled for *max_workers*
    :param persist_limit: a :class:`PersistLimit` capping the directory
    :param max_workers: how many transfers may run at once
    :param retry: the retry policy of every download (see :class:`RetryPolicy`)
    :param timeout: the timeouts of every download (see :class:`Timeouts`)
    :param chunk_size: the read size of every download
    :param connections: connections per file (see :class:`Download`)
    :param min_split_size: the smallest part of a file worth a connection
    :param max_size: the largest file accepted, in bytes, or None for no
        limit (see :class:`Download`); not to be confused with the
        directory's cap, *persist_limit*
    :param runtime: a :class:`~dlmanager.runtime.Runtime` to share with other
        managers (default: the manager's own, which :meth:`close` closes)
    :param max_rate: the most bytes per second all the manager's downloads
        take together, or None for no limit (see :ref:`bandwidth`);
        changeable while they run (:attr:`max_rate`)
    :raises NotADirectoryError: when *destdir* is a file
    :raises PermissionError: when *destdir* is not writable
    :raises ValueError: for an invalid *max_workers*, *retry*, *timeout*,
        *connections*, *min_split_size*, *max_size* or *max_rate*

    Names are checked, given or derived from the URL: one that would land
    outside *destdir* or on dlmanager's own files raises :class:`ValueError`
    before anything is written. A symlink at a destination is replaced by the
    download, never written through. TLS certificates are verified (see
    :ref:`security` for a CA of your own, redirects and credentials).
    """

    def __init__(
        self,
        destdir: str | os.PathLike[str],
        session: Any = None,
        persist_limit: PersistLimit | None = None,
        *,
        max_workers: int = 4,
        retry: RetryLike = None,
        timeout: TimeoutLike = None,
        chunk_size: int | None = None,
        connections: int = DEFAULT_CONNECTIONS,
        min_split_size: int = DEFAULT_MIN_SPLIT_SIZE,
        max_size: int | None = None,
        runtime: Runtime | None = None,
        max_rate: float | None = None,
    ) -> None:
        self._total_rate = TokenBucket(max_rate)  # what all its downloads take from
        if not isinstance(max_workers, int) or isinstance(max_workers, bool) or max_workers < 1:
            raise ValueError(f"max_workers must be an integer >= 1, not {max_workers!r}")
        #: How every download transfers, validated once (see :class:`TransferOptions`).
        self.options = TransferOptions.build(
            chunk_size=chunk_size,
            timeout=timeout,
            retry=retry,
            connections=connections,
            min_split_size=min_split_size,
            max_size=max_size,
        )
        self.max_workers = max_workers
        #: The destination directory as given (:meth:`get_dest` joins names to it).
        self.destdir = as_path(destdir, "destdir")
        self.persist_limit = persist_limit or PersistLimit(0)
        # Every file operation uses the directory resolved now: a later
        # os.chdir() changes nothing.
        self._directory = Directory(os.path.abspath(self.destdir), self.persist_limit)
        # The background threads of its downloads: its own, or one it shares.
        self._runtime = runtime or Runtime()
        self._owns_runtime = runtime is None
        # The requests of a manager given no session, or a DownloadSession,
        # go through dlmanager's own transport (urllib3, without requests).
        self._pool_size = max_workers * connections
        self._session: Any = session
        self._transport: Direct | None = None
        if session is None or is_download_session(session):
            self._transport = Direct(self._pool_size, session)
        self._own_session: Any = None
        #: The downloads in flight, by destination (as :meth:`get_dest` gives it).
        self._downloads: dict[str, Download] = {}
        # Started downloads whose end wait() has not seen yet, in start order:
        # those of _downloads, and those a newer download of their file
        # displaced there (another checksum, or cancelled and cleaning up).
        self._unfinished: dict[Download, None] = {}
        # Failed downloads whose error wait() has not raised yet, oldest first.
        self._failed: list[Download] = []
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # the last download ended
        self._closed = False
        self._limiter = Slots(max_workers)  # first started, first to transfer

    def __enter__(self) -> DownloadManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Wait for the downloads (or cancel them if the block raised), then :meth:`close`.

        When the block ends normally, the errors of downloads that failed are
        raised as :meth:`wait` raises them.
        """
        try:
            if exc_type is not None:
                self.cancel()
                self.wait(raise_if_error=False)
            else:
                self.wait()
        finally:
            self.close()

    def close(self) -> None:
        """Cancel what is still running, wait for it to stop, and close the
        session the manager created (a session you passed is left open).

        It returns once the manager's threads have ended: those of its
        downloads, the helper threads that sent their requests, and the
        observer of its directory (when no other manager shares its
        :class:`PersistLimit`). :meth:`download` raises
        :exc:`RuntimeError` afterwards. Calling it again does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.cancel()
        self.wait(raise_if_error=False)
        if self._transport is not None:
            self._transport.close()
        if self._own_session is not None:
            self._own_session.close()
        self._directory.close()
        if self._owns_runtime:
            self._runtime.close()

    @property
    def session(self) -> Any:
        """The session of the manager's downloads: the one it was given, else a
        :class:`~dlmanager.DownloadSession` made when this attribute is first
        read (its settings, cookies included, then apply to the manager's
        downloads, sent through dlmanager's own transport as before)."""
        with self._lock:
            if self._session is None:
                from dlmanager.session import DownloadSession

                self._session = self._own_session = DownloadSession(self._pool_size)
                assert self._transport is not None
                self._transport.session = self._session
            return self._session

    @session.setter
    def session(self, session: Any) -> None:
        """Give the downloads started from now on another session."""
        with self._lock:
            self._session = session
            if session is None or is_download_session(session):
                if self._transport is None:
                    self._transport = Direct(self._pool_size)
                self._transport.session = session
            else:
                self._transport = None

    @property
    def max_rate(self) -> float | None:
        """The most bytes per second all the manager's downloads take
        together, or None for no limit; settable at any time, also while they
        run (see :ref:`bandwidth`).

        :raises ValueError: for a rate that is not above 0
        """
        return self._total_rate.rate

    @max_rate.setter
    def max_rate(self, rate: float | None) -> None:
        self._total_rate.rate = rate

    def info(self, fname: str) -> FileInfo | None:
        """What dlmanager recorded of the file *fname* of the destination
        directory when it downloaded it: its URL, final URL, validators,
        size, checksum and times, as a :class:`~dlmanager.FileInfo`.

        None for a file dlmanager did not download (a user's own file, one
        downloaded by a version before 1.0 or by another tool), for a file
        changed since (its size differs), and for a name with no file.

        :raises ValueError: for a name that would land outside the directory
        """
        return read_info(self._directory.path(os.path.basename(self.get_dest(fname))))

    def get_dest(self, fname: str) -> str:
        """The path of *fname* in the destination directory (joined to
        :attr:`destdir` as it was given).

        :raises ValueError: when *fname* would land outside it, or is too
            long for the filesystem (with the suffixes of dlmanager's
            temporary files)
        """
        return os.path.join(self.destdir, self._directory.check_name(fname))

    def cancel(
        self, cancel_if: Callable[[Download], Any] | None = None, *, keep_partial: bool = False
    ) -> None:
        """Cancel the running downloads, or those for which ``cancel_if(download)`` is true.

        Returns at once; each download stops within about a second (a queued
        one at once).

        :param keep_partial: keep what each download received, for the next
            download of its file to resume (see :meth:`Download.cancel`)

        :raises Exception: whatever *cancel_if* raises: then nothing is
            cancelled (it is asked about every download first)
        """
        with self._lock:
            # _downloads as well: code written for 0.1.1 (mozregression's
            # tests) fills it with downloads of its own and expects them cancelled.
            downloads = list(dict.fromkeys([*self._unfinished, *self._downloads.values()]))
        selected = [
            dl for dl in downloads if dl.is_running() and (cancel_if is None or cancel_if(dl))
        ]
        # Queued ones first, so that none takes the slot a cancelled one frees.
        selected.sort(key=lambda dl: dl.state is not DownloadState.QUEUED)
        for download in selected:
            download.cancel(keep_partial=keep_partial)

    def wait(self, raise_if_error: bool = True) -> None:
        """Wait until none of the manager's downloads runs, then raise the
        error of those that failed.

        It waits for the downloads started so far and for those started (by
        any thread) while it waits. Any thread may call it at any time; it
        never cancels anything.

        :param raise_if_error: raise the error of every download that failed
            since the last :meth:`wait` (before this call too) and whose
            error the caller has not already received from
            :meth:`Download.wait` or :meth:`Download.error`: the error of
            the first to fail is raised, with the others in its
            ``other_errors`` attribute (a tuple, oldest first). A cancelled
            download is not an error. With False, nothing is raised and those
            errors are forgotten here (each :meth:`Download.error` still has
            its own).

        .. versionchanged:: 1.0
           dlmanager 0.1.1 only waited for the downloads still running, so
           the error of a download that failed before the call was lost.
        """
        with self._lock:
            while self._unfinished:
                self._changed.wait()
            failed, self._failed = self._failed, []
        if not raise_if_error:
            return
        errors = [error for error in map(take_unreceived_error, failed) if error is not None]
        if errors:
            first = errors[0]
            with contextlib.suppress(AttributeError):  # a class with __slots__
                first.other_errors = tuple(errors[1:])  # type: ignore[attr-defined]
            raise first

    def download(
        self,
        url: str,
        fname: str | None = None,
        progress: ProgressCallback | None = None,
        *,
        on_event: EventCallback | None = None,
        checksum: Checksum | str | None = None,
        revalidate: bool = False,
        max_age: float | None = None,
        headers: Any = None,
        params: Any = None,
        method: str | None = None,
        data: Any = None,
        json: Any = None,
        auth: Any = None,
        dest: Any = None,  # BinaryIO | None (below, dest is the path in the directory)
        mirrors: Iterable[str] | None = None,
        max_rate: float | None = None,
        use_content_disposition: bool = False,
    ) -> Download | None:
        """Start downloading *url* into the destination directory (or into *dest*).

        :param url: an http or https URL
        :param fname: the file name; derived from the URL's path when None
        :param progress: ``progress(download, current, total)``
        :param on_event: receives every :class:`~dlmanager.DownloadEvent`
        :param checksum: ``"ALGORITHM:HEX"`` the file must match; a file
            already present is checked against it too, and downloaded again
            when it does not match: it stays exactly as it is until the new
            download is verified and takes its place atomically, and if that
            download fails, it is still there (the error says so)
        :param revalidate: when the file is already there, revalidate it with
            one conditional request instead of returning None: the returned
            :class:`Download` keeps it on ``304`` (its
            :attr:`~dlmanager.Download.not_modified` is then true), replaces
            it atomically with a new version once that one is complete and
            verified, and leaves it as it was when the request fails (the
            download's error says so); see :ref:`retrieve`
        :param max_age: a file there validated less than this many seconds ago
            is used without a request (None is returned, as for any file
            there); an older one, or one dlmanager did not download, is
            revalidated, even without *revalidate*
        :param headers: headers sent over the session's, for this download
            only (see :ref:`request-options`, and :class:`Download` for
            *params*, *method*, *data*, *json* and *auth*); the file's name
            still comes from the URL's path, never from the query
        :param dest: a writable, seekable binary file object to write the body
            into instead of a file of the directory (see :ref:`destinations`):
            written from its current position over one connection, with the
            manager's session, options and transfer slots, but no file name,
            lock, temporary file, metadata or persist limit; every call
            starts a new download (they are not deduplicated)
        :param mirrors: other http(s) URLs of the same file (see
            :ref:`mirrors`): the file's name, the key a running download is
            joined by and the metadata's ``url`` stay those of *url*
        :param max_rate: the most bytes per second this download takes, or
            None for no limit (within the manager's own :attr:`max_rate`);
            a download joined while running keeps its own (set its
            :attr:`~dlmanager.Download.max_rate` to change it)
        :param use_content_disposition: let the server name the file: its
            ``Content-Disposition`` header, else the final URL after
            redirects, else *url* (a URL whose path ends with ``/`` is then
            valid); each candidate is checked strictly, and a rejected one
            falls back to the next with a warning (see :ref:`names`). The
            name is known once the response arrives: a :class:`Download` is
            always returned (a file of that name already there is kept, and
            its :attr:`~dlmanager.Download.done_by` set); not with *fname*,
            *dest*, *revalidate* or *max_age*
        :return: the started :class:`Download`; the running one when that
            destination is already downloading with the same request options
            and *checksum* is None or the same as the running one's
            (*progress* is then attached to it); or None when the file is
            already present (which counts as a use for the persist limit),
            whatever the request options. A request with another *checksum*
            or other request options than the running download gets a new
            :class:`Download`, which starts when the running one ends and
            takes its file if it matches (then its
            :attr:`~dlmanager.Download.done_by` is ``"another download"``)
        :raises ValueError: for a URL that is not http(s), a file name that
            would land outside the destination directory, an invalid
            checksum, *max_age* or request option; *fname* and *dest* together
        :raises TypeError: for a *dest* that is no binary file object

        .. versionchanged:: 1.0
           *on_event*, *checksum*, *revalidate*, *max_age*, *headers*,
           *params*, *method*, *data*, *json*, *auth*, *dest*, *mirrors*,
           *max_rate* and *use_content_disposition*.
        """
        check_url(url)
        check_max_age(max_age)
        check_rate(max_rate)
        request = RequestOptions.build(headers=headers, params=params, method=method, data=data,
                                       json=json, auth=auth)  # fmt: skip
        request.check_revalidation(revalidate, max_age)
        mirrors = check_mirrors(url, mirrors, request)
        check_session(self._transport or self._session, request)
        expected = parse_checksum(checksum)
        if use_content_disposition:
            check_named(fname=fname, dest=dest, revalidate=revalidate, max_age=max_age)
            return self._download_named(url, progress, on_event, expected, request)
        if dest is not None:
            if fname is not None:
                raise ValueError("pass fname (a file of the directory) or dest, not both")
            revalidating = revalidate or max_age is not None
            return self._download_into(dest, url, progress, on_event, expected, revalidating,
                                       request, mirrors, max_rate)  # fmt: skip
        dest = self.get_dest(fname if fname is not None else name_from_url(url))
        path = self._directory.path(os.path.basename(dest))
        stale = False  # a file that does not match: replaced once the new one is verified
        if expected is not None and self._live(dest) is None and present(path):
            # Hash a file already there outside the lock: it may be big.
            stale = mismatching(path, expected)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the DownloadManager of {self.destdir} is closed")
            running = self._live(dest)
            there, symlink = status(path)
            current = there  # to use as it is, without a request
            if there and (revalidate or max_age is not None):
                current = fresh(read_info(path), max_age, utcnow())
            same = running is None or running.request == request  # same request options
            action = request_action(running=running is not None, expected=expected,
                                    running_checksum=running.checksum if running else None,
                                    present=there, mismatching=stale or not current,
                                    same_request=same)  # fmt: skip
            if action == JOIN:
                assert running is not None
                if progress is not None:
                    running.set_progress(progress)
                return running
            if action == HIT:
                self._directory.mark_used(path)
                return None
            if symlink:
                log.warning("%s is a symlink: replacing it with the download", path)
            # One in flight (with another checksum, or cancelled and cleaning up): the new
            # one lets it end first, then takes its file if it matches, else downloads it again.
            destination = self._directory.destination(dest, after=self._downloads.get(dest))
            options = self.options  # shared as it is by the downloads without a checksum
            if options.checksum != expected:
                options = dataclasses.replace(options, checksum=expected)
            download = Download(
                url,
                destination,
                finished_callback=self._finished,
                session=self._transport or self._session,
                progress=progress,
                on_event=self._directory.reserving(dest, on_event, self.evict),
                limiter=self._limiter,
                options=options,
                runtime=self._runtime,
                revalidate=(revalidate or max_age is not None) and not stale,
                max_age=max_age,
                request=request,
                mirrors=mirrors,
                max_rate=max_rate,
                total_rate=self._total_rate,
            )
            self._downloads[dest] = download
            self._unfinished[download] = None
            self._download_started(download)
            download.start()  # its place in the queue, in the order downloads start
        return download

    def _download_into(
        self,
        dest: BinaryIO,
        url: str,
        progress: ProgressCallback | None,
        on_event: EventCallback | None,
        checksum: Checksum | None,
        revalidate: bool,
        request: RequestOptions,
        mirrors: tuple[str, ...] = (),
        max_rate: float | None = None,
    ) -> Download:
        """Start a download of *url* into the file object *dest* (see :meth:`download`)."""
        options = self.options
        if options.checksum != checksum:
            options = dataclasses.replace(options, checksum=checksum)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the DownloadManager of {self.destdir} is closed")
            download = Download(url, dest, finished_callback=self._finished,
                                session=self._transport or self._session, progress=progress,
                                on_event=on_event, limiter=self._limiter, options=options,
                                runtime=self._runtime, revalidate=revalidate,
                                request=request, mirrors=mirrors, max_rate=max_rate,
                                total_rate=self._total_rate)  # fmt: skip
            self._unfinished[download] = None
            self._download_started(download)
            download.start()
        return download

    def _download_named(
        self,
        url: str,
        progress: ProgressCallback | None,
        on_event: EventCallback | None,
        checksum: Checksum | None,
        request: RequestOptions,
    ) -> Download:
        """Start a download of *url* that the server names (see :mod:`dlmanager.server_names`)."""
        options = self.options
        if options.checksum != checksum:
            options = dataclasses.replace(options, checksum=checksum)
        key, placeholder = flight_key(request.target(url)), placeholder_fname(request.target(url))
        naming = Naming(self._directory, self.destdir, self._claim_name)
        destination = Destination(self.destdir, self._directory.path(placeholder), leftovers=False,
                                  metadata=self._directory.metadata, naming=naming)  # fmt: skip
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the DownloadManager of {self.destdir} is closed")
            running = self._live(key)
            if running is not None and request_action(
                running=True, running_checksum=running.checksum, expected=checksum,
                present=False, mismatching=False, same_request=running.request == request,
            ) == JOIN:  # fmt: skip
                if progress is not None:
                    running.set_progress(progress)
                return running
            hook = self._directory.reserving(placeholder, on_event, self.evict)
            download = Download(url, destination, finished_callback=self._finished,
                                session=self._transport or self._session, progress=progress,
                                on_event=hook, limiter=self._limiter, options=options,
                                runtime=self._runtime, request=request)  # fmt: skip
            self._downloads[key] = download
            self._unfinished[download] = None
            self._download_started(download)
            download.start()
        return download

    def _claim_name(self, download: Download, shown: str) -> Download | None:
        """Record the server-named *download* in flight under *shown*; the
        download of *shown* it must let end first, or None."""
        with self._lock:
            after = self._downloads.get(shown)
            self._downloads[shown] = download
        return after if after is not download else None

    def _live(self, dest: str) -> Download | None:
        """The download of *dest* in flight that was not cancelled, or None."""
        with self._lock:
            running = self._downloads.get(dest)
        if running is None or running.is_canceled():
            return None
        return running

    def _download_started(self, dl: Download) -> None:
        """Hook called when *dl* is about to start. Subclasses call the base."""
        log.debug("Download of %s started", dl.get_url())

    def _finished(self, dl: Download) -> None:
        """Called in the download thread when *dl* is over: forgets it,
        records a failure for :meth:`wait`, calls the
        :meth:`_download_finished` hook, then tells :meth:`wait`."""
        try:
            with self._lock:
                for key in [key for key, held in self._downloads.items() if held is dl]:
                    del self._downloads[key]  # its name, or its URL (server-named)
                if dl.state is DownloadState.FAILED:
                    self._failed.append(dl)
                    if len(self._failed) % 64 == 0:  # the errors received need no keeping
                        self._failed = [d for d in self._failed if unreceived(d)]
            self._download_finished(dl)
        finally:
            with self._lock:
                self._unfinished.pop(dl, None)
                if not self._unfinished:  # what wait() waits for
                    self._changed.notify_all()

    def _download_finished(self, dl: Download) -> None:
        """Hook called in the download thread when *dl* is over, whatever
        the outcome; :meth:`wait` returns after it. Subclasses call the base:
        when the file is in place, it records its use and applies the persist
        limit (:meth:`evict`)."""
        if dl.state is DownloadState.DONE and dl.fileobj is None:
            published = dl.done_by is None and not dl.not_modified  # a 304 is a use too
            self._directory.downloaded(dl.get_dest(), published=published)
            self.evict()

    def _files_evicted(self, paths: list[str]) -> None:
        """Hook called when :meth:`evict` removed *paths* (never empty), in the
        thread that evicted: a download's thread, or the caller of
        :meth:`evict`. The base does nothing (:class:`PersistLimit` logs each
        eviction); subclasses may report them. An exception it raises is
        logged, and does not fail the download or :meth:`evict`.
        """

    def evict(self) -> list[str]:
        """Apply the persist limit now, sparing the files any process has pinned.

        The manager does it after each download and when a download knows its
        size; call it to prune the directory without downloading (the room
        reserved by downloads in flight, in any process, still counts). When
        files were removed, :meth:`_files_evicted` is called with them.

        :return: the paths removed, least recently used first
        """
        removed = self._directory.evict()
        if removed:
            try:
                self._files_evicted(removed)
            except Exception:
                log.exception("_files_evicted hook of %s failed", self.destdir)
        return removed

    @contextlib.contextmanager
    def pin(self, fname: str) -> Iterator[str]:
        """Keep *fname* from eviction, by this or any other process, in a ``with`` block.

        A harness that is about to use a downloaded build pins it, so that a
        download finishing meanwhile (here or in another process sharing the
        directory) cannot evict it.

        .. code-block:: python

            with manager.pin("firefox.tar.bz2") as path:
                run_tests(path)

        :return: the file's path (absolute)
        :raises FileNotFoundError: when the file is not there
        """
        with self._directory.pin(self._directory.check_name(fname)) as path:
            yield path

    @contextlib.contextmanager
    def open(
        self,
        fname: str,
        mode: str = "rb",
        *,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> Iterator[IO[Any]]:
        """Open *fname* for reading, pinned for as long as it is open (see :meth:`pin`).

        :param mode: ``"rb"`` (the default), ``"r"`` or ``"rt"``; files are
            never written through the manager
        :param encoding: the text encoding (text mode only)
        :param errors: how encoding errors are handled (text mode only)
        :param newline: how line endings are translated (text mode only)
        :raises ValueError: for a mode that writes, appends or creates
        :raises FileNotFoundError: when the file is not there
        """
        with self._directory.open(
            self._directory.check_name(fname), mode, encoding=encoding, errors=errors,
            newline=newline,
        ) as handle:  # fmt: skip
            yield handle
