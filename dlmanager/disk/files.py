"""A destination directory's files on disk, as the index sees them: scanned, stat-ed, used.

The I/O under :class:`~dlmanager.PersistLimit`'s index: only regular files count, and
a file's last use is its access time, which :func:`mark_used` sets explicitly. With
``include_foreign=False`` only the files dlmanager downloaded count
(:func:`downloaded`; a scan tells them apart with one ``getxattr`` per file).
"""

from __future__ import annotations

import contextlib
import gc
import os
import stat
import time
from collections.abc import Iterator

from dlmanager.disk.metadata import INFO_ATTR, decode, is_sidecar, read_info, remove_sidecar
from dlmanager.redact import get_logger

__all__ = ["downloaded", "gc_paused", "mark_used", "regular_stat", "remove", "scan"]

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


def remove(path: str) -> bool:
    """Remove the file at *path* (an eviction) and its sidecar, if it has one.

    :return: whether the file is gone; a failure to remove it is logged
    """
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("Cannot evict %s: %s", path, exc)
        return False
    remove_sidecar(path)
    return True


def downloaded(path: str) -> bool:
    """Whether dlmanager downloaded the file at *path*: it has a
    :class:`~dlmanager.FileInfo` (:func:`~dlmanager.disk.metadata.read_info`)."""
    return read_info(path) is not None


def scan(directory: str, *, include_foreign: bool = True) -> list[tuple[str, os.stat_result]]:
    """The regular files of *directory* (symlinks followed), hidden names skipped.

    dlmanager's temporary files are hidden names, so they are skipped too.

    :param include_foreign: False: only the files dlmanager downloaded (see
        :func:`downloaded`), told apart with one ``getxattr`` per file; a
        file with a sidecar (seen by the same scan) has it read
    """
    found: list[tuple[str, os.stat_result]] = []
    sidecars: set[str] = set()  # the names of the files that have one
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    owner = None if include_foreign else is_sidecar(entry.name)
                    if owner is not None:
                        sidecars.add(owner)
                    continue
                try:
                    fstat = entry.stat()
                except OSError:
                    continue  # removed meanwhile, or a broken symlink
                if stat.S_ISREG(fstat.st_mode):
                    found.append((entry.path, fstat))
    except OSError as exc:
        log.debug("Cannot scan %s: %s", directory, exc)
    if include_foreign:
        return found
    return [
        (path, fstat)
        for path, fstat in found
        if _stamped(path, fstat, os.path.basename(path) in sidecars)
    ]


def _stamped(path: str, fstat: os.stat_result, sidecar: bool) -> bool:
    """:func:`downloaded` for a file a scan found, in one ``getxattr`` unless
    it has a *sidecar* (then read): its recorded metadata must describe a file
    of its size, and a symlink is never one, as for
    :func:`~dlmanager.disk.metadata.read_info`."""
    if sidecar:
        return downloaded(path)
    getxattr = getattr(os, "getxattr", None)
    if getxattr is None:
        return False
    try:
        data = getxattr(path, INFO_ATTR, follow_symlinks=False)
    except OSError:
        return False  # none (a user's file, a symlink), or no extended attributes here
    decoded = decode(data)
    return decoded is not None and decoded[0].size == fstat.st_size


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
