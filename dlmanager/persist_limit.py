"""PersistLimit: keep a directory of downloads under a size cap, least recently used out first.

This module owns the public class: its API, its lock, and the I/O around the index
(stat, scan, remove, protect, log). The index itself is :mod:`dlmanager.disk.index`,
the eviction rules :mod:`dlmanager.disk.eviction`, and following a directory live
:mod:`dlmanager.disk.watch`.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Callable
from types import TracebackType

from dlmanager.disk import eviction
from dlmanager.disk.files import downloaded, gc_paused, mark_used, regular_stat, remove, scan
from dlmanager.disk.index import File, Index
from dlmanager.disk.layout import is_temporary
from dlmanager.disk.watch import CannotWatch, SharedWatch
from dlmanager.redact import get_logger

__all__ = ["File", "PersistLimit", "mark_used"]

log = get_logger(__name__)


class PersistLimit:
    """Remove the least recently used files once a directory grows too big.

    Two rules say when files are removed, least recently used first:

    * the size rule: while more than *file_limit* files are registered and
      their total size plus the space :attr:`reserved` for downloads in
      flight (with :meth:`reserve`, and through :meth:`count_in_flight`) is
      at least *size_limit*. A *size_limit* or *file_limit* of 0 turns this
      rule off.
    * the count rule, with *max_files*: while more than *max_files* files
      are registered, whatever their size. *file_limit* does not hold
      files back from this rule: *max_files* is a true ceiling, so
      ``PersistLimit(10 * 1024**3, max_files=3)`` keeps at most three files
      even though *file_limit* defaults to 5, and ``PersistLimit(0,
      max_files=10)`` caps the count alone. Reservations do not count here.

    Protected files (see :attr:`protect`) are never removed: they count
    toward both limits and are kept anyway, the next least recently used
    file going in their place.

    "Last use" is the file's access time. dlmanager sets it explicitly
    (:meth:`touch`) when a download finishes and on every cache hit, so the
    order does not depend on whether the filesystem updates access times
    (relatime and noatime mounts do not, or only sometimes), and every
    process sharing the directory sees the same order.

    Temporary files of downloads in progress (``.NAME.XXXXXXXX.part``) are
    never registered, counted or removed; :meth:`register_dir_content` skips
    hidden names, like :func:`glob.glob` does. A path registered twice is
    counted once. Removing *k* of *n* files costs O(k log n), and removes
    their sidecars (their metadata where there are no extended attributes).

    With *include_foreign* True (the default, as in 0.1.1) every file counts
    and may be removed, whoever put it there. With False only the files
    dlmanager downloaded (those :meth:`DownloadManager.info
    <dlmanager.DownloadManager.info>` describes) count and may be removed:
    a user's own files (or another tool's, or one changed since) are never
    touched and take no room under the limits. Telling them apart costs one
    ``getxattr`` per file scanned (a sidecar, where there is one, is read),
    and a read of the metadata of each file registered or removed.

    With :meth:`watch`, the index of one directory follows what other
    processes do in it (new, replaced, used and deleted files) until
    :meth:`close`; use the object as a context manager to close it.

    :param size_limit: the size limit in bytes
    :param file_limit: keep at least this many files, the most recently used
        ones, even over the size limit (the size rule only)
    :param max_files: keep at most this many files (an integer >= 1), or
        None for no limit on the count
    :param protect: ``protect(path)`` returns True for a file that must not be
        removed now (pinned, or being read); see :attr:`protect`
    :param include_foreign: whether files dlmanager did not download count
        and may be removed (see above)
    :raises ValueError: for a negative or non-integer *size_limit* or
        *file_limit*, or a *max_files* that is neither None nor an integer >= 1
    :raises TypeError: for an *include_foreign* that is not a bool

    .. versionchanged:: 1.0
       *protect*, *max_files* and *include_foreign* are new keyword-only parameters.
    """

    #: ``protect(path) -> bool``: :meth:`remove_old_files` skips a path for
    #: which it returns True (or raises) and goes on with the next least
    #: recently used one. Protected files count toward both limits; one
    #: skipped is kept anyway, so it does not take the place of one of the
    #: *file_limit* most recently used files, which the size rule never
    #: removes (the count rule may, when *max_files* is below *file_limit*). It is
    #: asked about candidates only, least recently used first, without the
    #: index lock held, from the thread that calls :meth:`remove_old_files`,
    #: so it may take other locks.
    protect: Callable[[str], bool] | None

    def __init__(
        self,
        size_limit: int,
        file_limit: int = 5,
        *,
        protect: Callable[[str], bool] | None = None,
        max_files: int | None = None,
        include_foreign: bool = True,
    ) -> None:
        eviction.check_limits(size_limit, file_limit, max_files)
        if protect is not None and not callable(protect):
            raise TypeError(f"protect must be callable or None, not {protect!r}")
        if not isinstance(include_foreign, bool):
            raise TypeError(f"include_foreign must be True or False, not {include_foreign!r}")
        self._include_foreign = include_foreign
        self.size_limit = size_limit
        self.file_limit = file_limit
        #: The most files kept, or None (the count rule of :class:`PersistLimit`).
        self.max_files = max_files
        self.protect = protect
        # The index. Lock order: _watch_lock before _lock; the observer is
        # never joined while _lock is held (its thread may be waiting for it).
        self._lock = threading.RLock()
        self._evicting = threading.RLock()  # remove_old_files, one caller at a time
        self._index = Index()
        self._in_flight: Callable[[], int] | None = None  # see count_in_flight
        # Watching: the directory, live or rescanned (no observer: on every check).
        self._watch_lock = threading.Lock()
        self._watch = SharedWatch()  # its users: watch() calls not ended by close() yet
        self._warned = False

    def __repr__(self) -> str:
        return (
            f"PersistLimit(size_limit={self.size_limit}, file_limit={self.file_limit}, "
            f"max_files={self.max_files}, include_foreign={self._include_foreign}, "
            f"files={len(self._index)}, "
            f"total_size={self._index.total})"
        )

    @property
    def include_foreign(self) -> bool:
        """Whether files dlmanager did not download count and may be removed
        (see :class:`PersistLimit`; fixed at creation)."""
        return self._include_foreign

    @property
    def enabled(self) -> bool:
        """Whether :meth:`remove_old_files` may remove something: the size rule
        is on (*size_limit* and *file_limit* above 0) or *max_files* is set."""
        return eviction.rules_on(self.size_limit, self.file_limit, self.max_files)

    def __enter__(self) -> PersistLimit:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """:meth:`close`."""
        self.close()

    # -- the index -------------------------------------------------------------------------

    @property
    def files(self) -> list[File]:
        """The registered files, least recently used first."""
        with self._lock:
            return self._index.files()

    @property
    def total_size(self) -> int:
        """The total size of the registered files, in bytes (reservations excluded)."""
        return self._index.total

    def register_file(self, path: str) -> None:
        """Register a single file (again: its size and last use are refreshed).

        Paths that are not regular files, do not exist, or are dlmanager's own
        temporary files are ignored; so are the files dlmanager did not
        download, unless :attr:`include_foreign`.
        """
        if is_temporary(os.path.basename(path)):
            return
        # Under the lock, like eviction: a file evicted meanwhile is not registered again.
        with self._lock:
            fstat = regular_stat(path)  # None: removed meanwhile, or a cancelled download
            if fstat is not None:
                self._put(path, fstat)

    def register_dir_content(self, directory: str, pattern: str = "*") -> None:
        """Register every file in *directory* whose name matches *pattern*.

        Hidden names are skipped, as :func:`glob.glob` does. The default
        pattern takes one :func:`os.scandir` pass (100,000 files in well
        under a second, plus one ``getxattr`` per file without
        :attr:`include_foreign`); another pattern globs.
        """
        if pattern != "*":
            for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
                self.register_file(path)
            return
        with self._lock, gc_paused():  # see register_file
            self._index.put_many(scan(directory, include_foreign=self._include_foreign))

    def touch(self, path: str) -> None:
        """Record a use of *path* now, on disk (its access time) and in the index."""
        with self._lock:  # see register_file
            fstat = mark_used(path)
            if fstat is not None and not is_temporary(os.path.basename(path)):
                self._put(path, fstat)

    def _put(self, path: str, fstat: os.stat_result) -> None:
        """Register *path* (under the lock), or forget it if it does not count."""
        if self._include_foreign or downloaded(path):
            self._index.put(path, fstat)
        else:
            self._index.drop(path)  # replaced by a file of the user's, perhaps
            self._index.release(path)  # its download, if any, is over

    # -- reservations ----------------------------------------------------------------------

    @property
    def reserved(self) -> int:
        """The bytes reserved for downloads in flight: those of :meth:`reserve`,
        plus what the :meth:`count_in_flight` provider returns now."""
        return self._index.reserved + self._in_flight_bytes()

    def reserve(self, key: str, nbytes: int) -> None:
        """Count *nbytes* more toward the size limit until :meth:`release` of *key*.

        :meth:`remove_old_files` then makes room as if they were already in
        the directory, so that downloads running together do not overshoot
        the cap. Reserving *key* again replaces its amount. A reservation
        whose key is a path ends by itself when a file is registered at that
        path (its bytes are then counted as the file), so a download keyed by
        its destination is never counted twice.

        :raises ValueError: for a negative or non-integer *nbytes*
        """
        eviction.check_non_negative("nbytes", nbytes)
        with self._lock:
            self._index.reserve(key, nbytes)

    def release(self, key: str) -> None:
        """End the reservation of *key*; nothing happens for an unknown key."""
        with self._lock:
            self._index.release(key)

    def count_in_flight(self, provider: Callable[[], int] | None) -> None:
        """Count the bytes ``provider()`` returns toward the size limit, read live.

        For room reserved elsewhere, such as by the downloads in flight of
        every process sharing the directory: :meth:`remove_old_files` calls
        *provider* once per check, before removing anything, and counts its
        bytes like those of :meth:`reserve` (the size rule only), and so does
        :attr:`reserved`. It is called without the index lock held, so it may
        take other locks and read files, and returns an integer >= 0 (else
        :exc:`ValueError` is raised there). A later call replaces *provider*;
        None removes it. A :class:`~dlmanager.DownloadManager` following its
        directory sets it to the reservations of every process in that
        directory (see :ref:`reservations`).

        :raises TypeError: when *provider* is neither callable nor None

        .. versionadded:: 1.0
        """
        if provider is not None and not callable(provider):
            raise TypeError(f"provider must be callable or None, not {provider!r}")
        self._in_flight = provider

    def _in_flight_bytes(self) -> int:
        provider = self._in_flight
        return 0 if provider is None else eviction.check_non_negative("in-flight bytes", provider())

    # -- eviction --------------------------------------------------------------------------

    def remove_old_files(self, *, protect: Callable[[str], bool] | None = None) -> list[str]:
        """Remove the least recently used files while over a limit (the size
        and count rules of :class:`PersistLimit`).

        Files for which :attr:`protect` or *protect* returns True are skipped.
        When the watched directory is not followed live (see :meth:`watch`),
        it is rescanned first.

        :param protect: protects files for this call only, in addition to
            :attr:`protect` (for a function that holds something, such as
            locks, until the call returns); called the same way
        :return: the paths removed
        """
        removed: list[str] = []
        if not self.enabled:
            return removed
        # One eviction at a time: two threads evicting at once would each take
        # a candidate, removing more files than needed and out of LRU order.
        with self._evicting:
            self._check_live()
            in_flight = self._in_flight_bytes()  # once per check, without the index lock
            held: list[eviction.Candidate] = []  # protected files met in this call
            index = self._index
            try:
                while True:
                    with self._lock:
                        over = index.over(
                            in_flight, self.size_limit, self.file_limit, self.max_files
                        )
                        candidate = None if over is None else index.pop()
                    if candidate is None:
                        break
                    path = candidate[2]
                    if _protected(self.protect, path) or _protected(protect, path):
                        with self._lock:
                            held.append(candidate)
                            index.hold()
                        continue
                    with self._lock:
                        entry = index.current(candidate)
                        if entry is None:
                            continue  # used or removed meanwhile: its newer candidate decides
                        rule = index.over(
                            in_flight, self.size_limit, self.file_limit, self.max_files
                        )
                        if rule is None:
                            index.requeue([candidate])
                            break
                        reason = ""
                        if log.isEnabledFor(logging.INFO):
                            reason = index.why(rule, in_flight, self.size_limit, self.max_files)
                        index.drop(path)
                        if not self._include_foreign and not downloaded(path):
                            continue  # replaced by a file of the user's since it was registered
                        if not remove(path):
                            continue
                    removed.append(path)
                    log.info("Evicted %s (%d bytes): %s", path, entry.file.stat.st_size, reason)
            finally:
                if held:
                    with self._lock:
                        index.requeue(held, held=True)
            return removed

    # -- watching --------------------------------------------------------------------------

    @property
    def watching(self) -> bool:
        """Whether an observer keeps the index of the watched directory live."""
        return self._watch.live

    def watch(self, directory: str) -> None:
        """Follow *directory* live: keep the index true while any process adds,
        replaces, uses (access or modification time) and deletes files in it.

        Starts a non-recursive :mod:`watchdog` observer, then registers the
        directory's content afresh (one :func:`os.scandir` pass; entries of
        files gone are dropped). The observer's thread updates the index under
        its lock; hidden names, dlmanager's temporary files and anything but
        regular files are ignored. Stop it with :meth:`close`.

        When no observer can follow the directory (watchdog missing, inotify
        limits reached, a network filesystem), a warning is logged once and
        :meth:`remove_old_files` rescans the directory before each check.

        A PersistLimit watches one directory at a time. Watching it again
        (two managers sharing the limit, for instance) is counted: each
        :meth:`watch` is ended by one :meth:`close`, and the observer stops
        at the last one. Watching it again also retries starting the
        observer if it could not start.

        :raises NotADirectoryError: when *directory* is not a directory
        :raises RuntimeError: when another directory is being watched
        """
        if not os.path.isdir(directory):
            raise NotADirectoryError(f"cannot watch {directory!r}: not a directory")
        with self._watch_lock:
            try:
                if not self._watch.add(directory, self._on_change):
                    return  # already followed live
            except CannotWatch as exc:
                self._warn_not_live(directory, str(exc))
            # After the observer started, so that no change is missed; under the
            # lock, so that the events of files scanned are applied after the scan.
            self._rescan(directory)

    def refresh(self) -> None:
        """Rebuild the index of the watched directory from a fresh scan.

        Entries of files that are gone are dropped, the others registered
        with their current size and access time; files registered from other
        directories are kept. Nothing happens when no directory is watched.
        """
        directory = self._watch.directory
        if directory is not None:
            self._rescan(directory)

    def close(self) -> None:
        """End one :meth:`watch`: at the last, stop following the directory
        (stop and join the observer).

        The index stays as it is. Calling it when nothing is watched does
        nothing.
        """
        with self._watch_lock:
            self._watch.remove()

    def _check_live(self) -> None:
        """Rescan the watched directory if no observer follows it."""
        with self._watch_lock:
            directory = self._watch.directory
            if directory is None or self._watch.live:
                return
            if self._watch.drop_dead():  # the directory was removed or renamed, or it died
                self._warn_not_live(directory, "its observer stopped")
        self._rescan(directory)

    def _warn_not_live(self, directory: str, reason: str) -> None:
        if self._warned:
            log.debug("Live accounting of %s is off: %s", directory, reason)
            return
        self._warned = True
        log.warning(
            "Live accounting of %s is off (%s): every limit check will rescan the directory",
            directory,
            reason,
        )

    def _rescan(self, directory: str) -> None:
        """Replace the entries of *directory* by what a fresh scan finds."""
        with self._lock, gc_paused():
            found = scan(directory, include_foreign=self._include_foreign)
            self._index.replace_directory(directory, found)

    def _on_change(self, name: str, present: bool) -> None:
        """Apply one change in the watched directory (in the observer's thread)."""
        directory = self._watch.directory
        if directory is None or not name or name.startswith(".") or is_temporary(name):
            return
        path = os.path.join(directory, name)
        with self._lock:
            fstat = regular_stat(path) if present else None
            if fstat is not None:
                self._put(path, fstat)
            else:
                self._index.drop(path)


def _protected(protect: Callable[[str], bool] | None, path: str) -> bool:
    if protect is None:
        return False
    try:
        return bool(protect(path))
    except Exception:
        log.warning("protect(%r) failed: keeping the file", path, exc_info=True)
        return True
