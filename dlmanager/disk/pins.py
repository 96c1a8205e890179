"""Pins: the files of a destination directory that a process uses, kept from eviction.

A pin is a shared ``flock`` on ``.dlmanager/NAME.pin`` (see
:mod:`dlmanager.disk.locks`), held by every process that uses the file
(:meth:`DownloadManager.pin <dlmanager.DownloadManager.pin>`); an evicting
process takes it exclusively, without waiting, before removing the file,
and skips the file when it cannot.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from dlmanager.disk.layout import PIN_SUFFIX, key
from dlmanager.disk.locks import StateDir
from dlmanager.redact import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Pins"]

log = get_logger(__name__)


class Pins:
    """Pins of the files of one destination directory, shared by all processes."""

    def __init__(self, state: StateDir, destdir: str) -> None:
        self.state = state
        self.destdir = destdir

    @staticmethod
    def _name(path: str) -> str:
        return key(os.path.basename(path)) + PIN_SUFFIX

    @contextlib.contextmanager
    def pin(self, path: str) -> Iterator[str]:
        """Keep *path* from eviction, by any process, for the ``with`` block.

        :raises FileNotFoundError: when the file is not (or no longer) there
        """
        name = self._name(path)
        fd = None
        if fcntl is not None and self.state.locks_work:
            # Waits only for an eviction in progress.
            fd = self.state.acquire(name, fcntl.LOCK_SH, blocking=True)
        try:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"cannot pin {path}: no such file")
            yield path
        finally:
            if fd is not None:
                self.state.release(name, fd)

    @contextlib.contextmanager
    def evicting(self) -> Iterator[Callable[[str], bool]]:
        """A ``protect(path)`` function for one eviction round.

        A file is protected when another process pins it; otherwise its pin is
        held exclusively until the round ends, so nobody pins it in between.
        """
        held: list[tuple[str, int]] = []

        def protect(path: str) -> bool:
            if fcntl is None or not self.state.locks_work:  # pins cannot be seen
                return False
            name = self._name(path)
            try:
                fd = self.state.acquire(name, fcntl.LOCK_EX, blocking=False)
            except OSError:
                return True  # cannot tell: keep it
            if fd is None:
                log.debug("Not evicting %s: pinned by a process", path)
                return True
            held.append((name, fd))
            return False

        try:
            yield protect
        finally:
            for name, fd in held:
                self.state.release(name, fd, exclusive=True)
