"""PersistLimit: keep a directory of downloads under a size cap, least recently used out first."""

from __future__ import annotations

import glob
import heapq
import logging
import os
import stat
import threading
import time
from typing import NamedTuple

from dlmanager.paths import is_temporary

__all__ = ["File", "PersistLimit"]

log = logging.getLogger(__name__)


class File(NamedTuple):
    """A registered file (the shape dlmanager 0.1.1 used)."""

    path: str
    stat: os.stat_result


class _Entry(NamedTuple):
    file: File
    last_use: float
    version: int


class PersistLimit:
    """Remove the least recently used files once a directory grows too big.

    Files are removed, least recently used first, while more than
    *file_limit* files are registered and their total size is at least
    *size_limit*. A limit of 0 disables removal.

    "Last use" is the file's access time. dlmanager sets it explicitly
    (:meth:`touch`) when a download finishes and on every cache hit, so the
    order does not depend on whether the filesystem updates access times
    (relatime and noatime mounts do not, or only sometimes).

    Temporary files of downloads in progress (``.NAME.XXXXXXXX.part``) are
    never registered, counted or removed; :meth:`register_dir_content` skips
    hidden names, like :func:`glob.glob` does.
    A path registered twice is counted once. Removing *k* of *n* files costs
    O(k log n).

    :param size_limit: the size limit in bytes
    :param file_limit: keep at least this many files, even over the size limit
    """

    def __init__(self, size_limit: int, file_limit: int = 5) -> None:
        for name, value in (("size_limit", size_limit), ("file_limit", file_limit)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
        self.size_limit = size_limit
        self.file_limit = file_limit
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._version = 0
        self._total = 0

    def __repr__(self) -> str:
        return (
            f"PersistLimit(size_limit={self.size_limit}, file_limit={self.file_limit}, "
            f"files={len(self._entries)}, total_size={self._total})"
        )

    @property
    def files(self) -> list[File]:
        """The registered files, least recently used first."""
        with self._lock:
            entries = sorted(self._entries.values(), key=lambda e: (e.last_use, e.version))
        return [entry.file for entry in entries]

    @property
    def total_size(self) -> int:
        """The total size of the registered files, in bytes."""
        return self._total

    def register_file(self, path: str) -> None:
        """Register a single file (again: its size and last use are refreshed).

        Paths that are not regular files, do not exist, or are dlmanager's own
        temporary files are ignored.
        """
        if is_temporary(os.path.basename(path)):
            return
        try:
            fstat = os.stat(path)
        except OSError:
            return  # removed meanwhile, or a cancelled download: nothing to count
        if not stat.S_ISREG(fstat.st_mode):
            return
        with self._lock:
            self._put(path, fstat, fstat.st_atime)

    def register_dir_content(self, directory: str, pattern: str = "*") -> None:
        """Register every file in *directory* whose name matches *pattern*."""
        for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
            self.register_file(path)

    def touch(self, path: str) -> None:
        """Record a use of *path* now, on disk (its access time) and in the index."""
        now = time.time()
        try:
            fstat = os.stat(path)
            os.utime(path, (now, fstat.st_mtime))
        except OSError as exc:
            log.debug("Cannot record a use of %s: %s", path, exc)
            return
        if not stat.S_ISREG(fstat.st_mode) or is_temporary(os.path.basename(path)):
            return
        with self._lock:
            self._put(path, fstat, now)

    def remove_old_files(self) -> list[str]:
        """Remove the least recently used files while over the limits.

        :return: the paths removed
        """
        removed: list[str] = []
        if self.size_limit <= 0 or self.file_limit <= 0:
            return removed
        with self._lock:
            while len(self._entries) > self.file_limit and self._total >= self.size_limit:
                _, version, path = heapq.heappop(self._heap)
                entry = self._entries.get(path)
                if entry is None or entry.version != version:
                    continue  # superseded by a later registration or touch
                self._drop(path)
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("Cannot evict %s: %s", path, exc)
                    continue
                removed.append(path)
                log.info("Evicted %s (%d bytes)", path, entry.file.stat.st_size)
        return removed

    # -- the index -----------------------------------------------------------------------

    def _put(self, path: str, fstat: os.stat_result, last_use: float) -> None:
        if path in self._entries:
            self._drop(path)
        self._version += 1
        self._entries[path] = _Entry(File(path, fstat), last_use, self._version)
        self._total += fstat.st_size
        heapq.heappush(self._heap, (last_use, self._version, path))
        if len(self._heap) > 2 * len(self._entries) + 64:
            self._heap = [(e.last_use, e.version, p) for p, e in self._entries.items()]
            heapq.heapify(self._heap)

    def _drop(self, path: str) -> None:
        entry = self._entries.pop(path)
        self._total -= entry.file.stat.st_size
