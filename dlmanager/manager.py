"""DownloadManager: downloads into one directory, deduplicated, bounded and capped.

For compatibility with dlmanager 0.1.1 this module also exports
:class:`~dlmanager.Download` and :class:`~dlmanager.DownloadInterrupt`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any

import requests

from dlmanager.checksum import Checksum, file_digests, parse_checksum
from dlmanager.config import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MIN_SPLIT_SIZE,
    TimeoutLike,
    Timeouts,
)
from dlmanager.download import (
    Download,
    DownloadEvent,
    DownloadState,
    EventCallback,
    EventKind,
    ProgressCallback,
    end_idle_threads,
    take_unreceived_error,
    unreceived,
)
from dlmanager.errors import DownloadInterrupt
from dlmanager.locking import Pins, Reservations, StateDir
from dlmanager.paths import (
    as_path,
    check_name_length,
    check_url,
    leftover_fnames,
    name_from_url,
    name_max,
    remove_stale_temporaries,
    validate_fname,
)
from dlmanager.persist_limit import PersistLimit, mark_used
from dlmanager.redact import get_logger
from dlmanager.retry import RetryLike, RetryPolicy
from dlmanager.session import DownloadSession
from dlmanager.slots import Slots

__all__ = ["Download", "DownloadInterrupt", "DownloadManager"]

log = get_logger(__name__)

#: The modes of open() that DownloadManager.open accepts: reading only.
_READ_MODES = frozenset({"r", "rt", "tr", "rb", "br"})


def _present(dest: str) -> bool:
    """Whether a downloaded file is at *dest*: a symlink, even to a file, is not one."""
    return os.path.exists(dest) and not os.path.islink(dest)


def _mismatching(dest: str, expected: Checksum) -> bool:
    """Whether the file at *dest* does not match *expected* (False once it is gone)."""
    try:
        actual = file_digests(dest, [expected.algorithm]).get(expected.algorithm)
    except FileNotFoundError:
        return False
    if actual == expected.hexdigest:
        return False
    log.warning("%s does not match %s (it has %s): downloading it again; it stays as it is "
                "until the new one is verified", dest, expected, actual)  # fmt: skip
    return True


def _prepare_destdir(destdir: str) -> None:
    if os.path.exists(destdir) and not os.path.isdir(destdir):
        raise NotADirectoryError(f"destination {destdir!r} exists and is not a directory")
    try:
        os.makedirs(destdir, exist_ok=True)
    except OSError as exc:
        raise type(exc)(f"cannot create destination directory {destdir!r}: {exc}") from exc
    if not os.access(destdir, os.W_OK | os.X_OK):
        raise PermissionError(f"destination directory {destdir!r} is not writable")


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
    :raises NotADirectoryError: when *destdir* is a file
    :raises PermissionError: when *destdir* is not writable
    :raises ValueError: for an invalid *max_workers*, *retry*, *timeout*,
        *connections*, *min_split_size* or *max_size*

    Names are checked: whether given or derived from the URL, a file name
    that would land outside *destdir* (``..``, a path separator, an
    absolute path, NUL) or on dlmanager's own files is refused with
    :class:`ValueError` before anything is written. A symlink found at a
    destination is not taken for the file: it is replaced by the download
    (its target is never written).

    TLS certificates are verified. To trust another CA, pass a session with
    ``verify`` set (``dlmanager.session.DownloadSession(verify="ca.pem")``,
    or any ``requests.Session``), or set ``REQUESTS_CA_BUNDLE``. The
    manager's own session follows at most 10 redirects, to http(s) URLs
    only, and sends ``Authorization`` to the first URL's origin only.
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
    ) -> None:
        for name, value in (
            ("max_workers", max_workers),
            ("connections", connections),
            ("min_split_size", min_split_size),
            ("max_size", 1 if max_size is None else max_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, not {value!r}")
        self.retry = RetryPolicy.from_value(retry)
        self.timeout = Timeouts.from_value(timeout)
        self.chunk_size = chunk_size
        self.connections = connections
        self.min_split_size = min_split_size
        self.max_size = max_size
        self.max_workers = max_workers
        #: The destination directory as given (:meth:`get_dest` joins names to it).
        self.destdir = as_path(destdir, "destdir")
        # Every file operation uses the directory resolved now: a later
        # os.chdir() changes nothing.
        self._root = os.path.abspath(self.destdir)
        _prepare_destdir(self._root)
        self._name_max = name_max(self._root)
        self._own_session: requests.Session | None = None
        if session is None:
            session = self._own_session = DownloadSession(max_workers * connections)
        self.session = session
        self.persist_limit = persist_limit or PersistLimit(0)
        # Whether this manager follows the limit's directory live (and stops it).
        self._watching = False
        #: The downloads in flight, by destination (as :meth:`get_dest` gives it).
        self._downloads: dict[str, Download] = {}
        # Started downloads whose end wait() has not seen yet, in start order:
        # those of _downloads, and those a newer download of their file
        # displaced there (another checksum, or cancelled and cleaning up).
        self._unfinished: dict[Download, None] = {}
        # Failed downloads whose error wait() has not raised yet, oldest first.
        self._failed: list[Download] = []
        self._failed_kept = 64  # pruned of the received errors when twice as long
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # a download ended
        self._closed = False
        self._limiter = Slots(max_workers)  # first started, first to transfer
        for path in remove_stale_temporaries(self._root):
            log.info("Removed a temporary file left by a stopped process: %s", path)
        # Names with a leftover to resume; other downloads skip the scan.
        self._leftovers = leftover_fnames(self._root)
        self._state = StateDir(self._root)
        self._state.remove_stale()
        self._pins = Pins(self._state, self._root)
        self._reservations = Reservations(self._state)
        if self.persist_limit.enabled:
            try:
                # Live accounting: other processes' changes reach the index.
                self.persist_limit.watch(self._root)  # registers what is there
                self._watching = True
                # And the room every process's downloads in flight reserved, read live.
                self.persist_limit.count_in_flight(self._reservations.total)
            except RuntimeError:  # the limit already accounts for another directory
                self.persist_limit.register_dir_content(self._root)

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
        if self._own_session is not None:
            self._own_session.close()
        if self._watching:
            self.persist_limit.close()
            self._watching = False
        end_idle_threads()

    def get_dest(self, fname: str) -> str:
        """The path of *fname* in the destination directory (joined to
        :attr:`destdir` as it was given).

        :raises ValueError: when *fname* would land outside it, or is too
            long for the filesystem (with the suffixes of dlmanager's
            temporary files)
        """
        return os.path.join(self.destdir, check_name_length(validate_fname(fname), self._name_max))

    def _path(self, dest: str) -> str:
        """The resolved path of *dest*, a path :meth:`get_dest` gave."""
        return os.path.join(self._root, os.path.basename(dest))

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
            downloads = list(self._unfinished)
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
    ) -> Download | None:
        """Start downloading *url* into the destination directory.

        :param url: an http or https URL
        :param fname: the file name; derived from the URL's path when None
        :param progress: ``progress(download, current, total)``
        :param on_event: receives every :class:`~dlmanager.DownloadEvent`
        :param checksum: ``"ALGORITHM:HEX"`` the file must match; a file
            already present is checked against it too, and downloaded again
            when it does not match: it stays exactly as it is until the new
            download is verified and takes its place atomically, and if that
            download fails, it is still there (the error says so)
        :return: the started :class:`Download`; the running one when that
            destination is already downloading and *checksum* is None or the
            same as the running one's (*progress* is then attached to it); or
            None when the file is already present (which counts as a use for
            the persist limit). A request with another *checksum* than the
            running download gets a new :class:`Download`, which starts when
            the running one ends and takes its file only if it matches
        :raises ValueError: for a URL that is not http(s), a file name that
            would land outside the destination directory, or an invalid
            checksum
        """
        check_url(url)
        expected = parse_checksum(checksum)
        dest = self.get_dest(fname if fname is not None else name_from_url(url))
        path = self._path(dest)
        stale = False  # a file that does not match: replaced once the new one is verified
        if expected is not None and self._live(dest) is None and _present(path):
            # Hash a file already there outside the lock: it may be big.
            stale = _mismatching(path, expected)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the DownloadManager of {self.destdir} is closed")
            running = self._live(dest)
            if running is not None and (expected is None or running.checksum == expected):
                if progress is not None:
                    running.set_progress(progress)
                return running
            if running is None and not stale and _present(path):
                self._mark_used(path)
                return None
            if os.path.islink(path):
                log.warning("%s is a symlink: replacing it with the download", path)
            download = Download(
                url,
                dest,
                finished_callback=self._finished,
                chunk_size=self.chunk_size,
                session=self.session,
                progress=progress,
                retry=self.retry,
                timeout=self.timeout,
                on_event=self._reserving(dest, on_event),
                limiter=self._limiter,
                connections=self.connections,
                min_split_size=self.min_split_size,
                checksum=expected,
                max_size=self.max_size,
            )
            download._path = path  # resolved when the manager was created
            # One is in flight (running with another checksum, or cancelled
            # and cleaning up): this one waits for it to end, then takes its
            # file if it matches, else downloads it again.
            download._after = self._downloads.get(dest)
            fname = os.path.basename(path)
            download._adopt_leftovers = fname in self._leftovers
            download._dest_lock = self._state.lock(fname)
            self._leftovers.discard(fname)
            self._downloads[dest] = download
            self._unfinished[download] = None
            self._download_started(download)
            download.start()  # its place in the queue, in the order downloads start
        return download

    def _live(self, dest: str) -> Download | None:
        """The download of *dest* in flight that was not cancelled, or None."""
        with self._lock:
            running = self._downloads.get(dest)
        if running is None or running.is_canceled():
            return None
        return running

    def _mark_used(self, path: str) -> None:
        """Record a use of the file at *path* (in the index only when there is a limit)."""
        if self.persist_limit.enabled:
            self.persist_limit.touch(path)
        else:
            mark_used(path)

    def _download_started(self, dl: Download) -> None:
        """Hook called when *dl* is about to start. Subclasses call the base."""
        log.debug("Download of %s started", dl.get_url())

    def _finished(self, dl: Download) -> None:
        """Called in the download thread when *dl* is over: forgets it,
        records a failure for :meth:`wait`, calls the
        :meth:`_download_finished` hook, then tells :meth:`wait`."""
        try:
            with self._lock:
                if self._downloads.get(dl.get_dest()) is dl:
                    del self._downloads[dl.get_dest()]
                if dl.state is DownloadState.FAILED:
                    self._failed.append(dl)
                    if len(self._failed) >= 2 * self._failed_kept:
                        # Errors received meanwhile need no keeping for wait().
                        self._failed = [d for d in self._failed if unreceived(d)]
                        self._failed_kept = max(64, len(self._failed))
            self._download_finished(dl)
        finally:
            with self._lock:
                self._unfinished.pop(dl, None)
                self._changed.notify_all()

    def _download_finished(self, dl: Download) -> None:
        """Hook called in the download thread when *dl* is over, whatever
        the outcome; :meth:`wait` returns after it. Subclasses call the base:
        when the file is in place, it records its use and applies the persist
        limit (:meth:`evict`)."""
        if dl.state is DownloadState.DONE:
            self._mark_used(self._path(dl.get_dest()))
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
        limit = self.persist_limit
        if not limit.enabled:
            return []
        with self._pins.evicting() as protect:
            removed = limit.remove_old_files(protect=protect)
        if removed:
            try:
                self._files_evicted(removed)
            except Exception:
                log.exception("_files_evicted hook of %s failed", self.destdir)
        return removed

    def _reserving(self, dest: str, on_event: EventCallback | None) -> EventCallback | None:
        """An ``on_event`` hook that reserves the download's size against the cap.

        As soon as a download knows its size, that much room is made for it
        (evicting if needed), so that many downloads in flight do not overshoot
        the cap; the reservation ends with the download. When the persist
        limit is off, the caller's hook is used as is (no work added per chunk).
        """
        if not self.persist_limit.enabled:
            return on_event
        fname = os.path.basename(dest)

        def hook(event: DownloadEvent) -> None:
            if event.kind is EventKind.STARTED and event.total:
                self._reservations.hold(fname, event.total)
                self.evict()
            elif event.kind is EventKind.FINISHED:
                self._reservations.release(fname)
            if on_event is not None:
                on_event(event)

        return hook

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
        with self._pins.pin(self._path(self.get_dest(fname))) as path:
            self._mark_used(path)
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
        if mode not in _READ_MODES:
            raise ValueError(
                f"invalid mode {mode!r}: DownloadManager.open only reads files "
                f"(use one of {', '.join(repr(m) for m in sorted(_READ_MODES))})"
            )
        with (
            self.pin(fname) as path,
            open(path, mode, encoding=encoding, errors=errors, newline=newline) as handle,
        ):
            yield handle
