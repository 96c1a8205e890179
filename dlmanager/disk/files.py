"""A destination directory's files on disk, as the index sees them: scanned, stat-ed, used.

The I/O under :class:`~dlmanager.PersistLimit`'s index: only regular files count, and
a file's last use is its access time, which :func:`mark_used` sets explicitly.
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import time
from collections.abc import Iterator

from dlmanager.redact import get_logger

__all__ = ["gc_paused", "mark_used", "regular_stat", "scan"]

log = get_logger(__name__)


def mark_used(path: str) -> os.stat_result | None:
    """Record a use of the regular file at *path* on disk: its access time is now.

    Never through a symlink (its target may be outside the directory).

    :return: the file's status with the access time as stored, or None when
        it is not a regular file or cannot be touched
    """
    try:
        fstat = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(fstat.st_mode):
            return None
        os.utime(path, ns=(time.time_ns(), fstat.st_mtime_ns), follow_symlinks=False)
        fstat = os.stat(path, follow_symlinks=False)
    except OSError as exc:
        log.debug("Cannot record a use of %s: %s", path, exc)
        return None
    return fstat if stat.S_ISREG(fstat.st_mode) else None


def regular_stat(path: str) -> os.stat_result | None:
    """The status of *path* (symlinks followed) if it is a regular file, else None
    (missing, removed meanwhile, or not a regular file)."""
    try:
        fstat = os.stat(path)
    except OSError:
        return None
    return fstat if stat.S_ISREG(fstat.st_mode) else None


def scan(directory: str) -> list[tuple[str, os.stat_result]]:
    """The regular files of *directory* (symlinks followed), hidden names skipped.

    dlmanager's temporary files are hidden names, so they are skipped too.
    """
    found: list[tuple[str, os.stat_result]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    fstat = entry.stat()
                except OSError:
                    continue  # removed meanwhile, or a broken symlink
                if stat.S_ISREG(fstat.st_mode):
                    found.append((entry.path, fstat))
    except OSError as exc:
        log.debug("Cannot scan %s: %s", directory, exc)
    return found


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a scan builds the index.

    The index holds three tracked objects per file and no reference cycle;
    while it grows, the collector would walk it again and again (a quarter of
    the time of registering 100,000 files). Its state is restored after.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
