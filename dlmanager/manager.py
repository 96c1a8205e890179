"""DownloadManager: downloads into one directory, deduplicated, bounded and capped.

For compatibility with dlmanager 0.1.1 this module also exports
:class:`~dlmanager.Download` and :class:`~dlmanager.DownloadInterrupt`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import IO, Any

from dlmanager.admission import Admission, check_call
from dlmanager.checksum import Checksum
from dlmanager.config import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MIN_SPLIT_SIZE,
    TimeoutLike,
    TransferOptions,
)
from dlmanager.directory import Directory
from dlmanager.disk.metadata import FileInfo, read_info
from dlmanager.download import Download
from dlmanager.errors import DownloadInterrupt
from dlmanager.events import DownloadState, EventCallback, ProgressCallback
from dlmanager.flights import Flights, raise_errors
from dlmanager.launch import Launcher
from dlmanager.names import as_path, name_from_url
from dlmanager.naming import NamedDownloads
from dlmanager.persist_limit import PersistLimit
from dlmanager.rate import TokenBucket
from dlmanager.redact import get_logger
from dlmanager.retry import RetryLike
from dlmanager.runtime import Runtime
from dlmanager.server_names import check_named
from dlmanager.slots import Slots
from dlmanager.transport.choice import SessionChoice

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
        self.options = TransferOptions.build(chunk_size=chunk_size, timeout=timeout, retry=retry,
                                             connections=connections, max_size=max_size,
                                             min_split_size=min_split_size)  # fmt: skip
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
        self._lock = threading.RLock()
        # The requests of a manager given no session, or a DownloadSession,
        # go through dlmanager's own transport (urllib3, without requests).
        self._sessions = SessionChoice(session, max_workers * connections, self._lock)
        self._flights = Flights(self._lock, self.destdir)  # its downloads in flight
        # How its downloads start (slots: first started, first to transfer), by the kind of call.
        self._launcher = Launcher(self._flights, self._sessions, self._directory,
                                  Slots(max_workers), self._runtime, self._total_rate,
                                  finished=self._finished, started=self._download_started,
                                  evict=self.evict)  # fmt: skip
        self._admission = Admission(self._directory, self._flights, self._launcher)
        self._named = NamedDownloads(self._directory, self.destdir, self._flights, self._launcher)

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
        if not self._flights.close():
            return
        self.cancel()
        self.wait(raise_if_error=False)
        self._sessions.close()
        self._directory.close()
        if self._owns_runtime:
            self._runtime.close()

    @property
    def session(self) -> Any:
        """The session of the manager's downloads: the one it was given, else a
        :class:`~dlmanager.DownloadSession` made when this attribute is first
        read (its settings, cookies included, then apply to the manager's
        downloads, sent through dlmanager's own transport as before)."""
        return self._sessions.get()

    @session.setter
    def session(self, session: Any) -> None:
        """Give the downloads started from now on another session."""
        self._sessions.set(session)

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
        self._flights.cancel(cancel_if, keep_partial)

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
        failed = self._flights.wait()
        if raise_if_error:
            raise_errors(failed)

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
        call = check_call(url, self._sessions.sender(), checksum=checksum,
                          revalidate=revalidate, max_age=max_age, headers=headers, params=params,
                          method=method, data=data, json=json, auth=auth, mirrors=mirrors,
                          max_rate=max_rate)  # fmt: skip
        if use_content_disposition:
            check_named(fname=fname, dest=dest, revalidate=revalidate, max_age=max_age)
            return self._named.request(call, self.options, progress, on_event)
        if dest is not None:  # a file object: every call starts a download
            if fname is not None:
                raise ValueError("pass fname (a file of the directory) or dest, not both")
            return self._launcher.start(call, dest, None, self.options, progress, on_event,
                                        revalidate=call.revalidating)  # fmt: skip
        dest = self.get_dest(fname if fname is not None else name_from_url(url))
        return self._admission.request(call, dest, self.options, progress, on_event)

    @property
    def _downloads(self) -> dict[str, Download]:
        """The downloads in flight, by destination (as :meth:`get_dest` gives
        it); read, and even replaced, by code written for 0.1.1."""
        return self._flights.downloads

    @_downloads.setter
    def _downloads(self, downloads: dict[str, Download]) -> None:
        self._flights.downloads = downloads

    def _download_started(self, dl: Download) -> None:
        """Hook called when *dl* is about to start. Subclasses call the base."""
        log.debug("Download of %s started", dl.get_url())

    def _finished(self, dl: Download) -> None:
        """Called in the download thread when *dl* is over: forgets it,
        records a failure for :meth:`wait`, calls the
        :meth:`_download_finished` hook, then tells :meth:`wait`."""
        try:
            self._flights.forget(dl)
            self._download_finished(dl)
        finally:
            self._flights.ended(dl)

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
