"""Write-behind: the kernel's writeback of a temporary file, started while it is written.

A download's bytes go to the page cache; without help they stay there,
dirty, until the ``fsync`` before the file's publication (or a checkpoint's
``fdatasync``) writes them all out, a stall of about half a second per GiB
on the disk this was measured on (see docs/performance.rst). Instead,
each writer hands the bytes it wrote to the kernel every
:data:`WRITE_BEHIND` bytes, with ``sync_file_range(SYNC_FILE_RANGE_WRITE)``:
their writeback starts and nothing waits for it, so by the time of the
``fsync`` only the last few MiB are left to write.

It is only a head start, never a promise: the ``fsync`` before the rename
still makes the file durable. A file smaller than :data:`WRITE_BEHIND`
never pays for it (not one system call); where the platform has no
``sync_file_range`` (it is Linux's), nothing is started and the ``fsync``
does all the work, as before.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import os
import sys
import threading
from collections.abc import Callable

from dlmanager.redact import get_logger

__all__ = [
    "DEFAULT_WRITEBACK",
    "WRITE_BEHIND",
    "StartWriteback",
    "WriteBehind",
    "Writeback",
    "sync_file_range_write",
]

log = get_logger(__name__)

#: Bytes a writer writes in a row before their writeback is started: small
#: enough that the final ``fsync`` has little left to do, big enough that a
#: writeback is started only every 32 reads of the default size.
WRITE_BEHIND = 8 * 1024 * 1024

#: ``SYNC_FILE_RANGE_WRITE`` of ``<fcntl.h>``: start writing the range's
#: dirty pages out, without waiting for them.
_SYNC_FILE_RANGE_WRITE = 2

#: ``start(fd, offset, nbytes)`` starts the writeback of *nbytes* bytes of
#: *fd* from *offset* without waiting for it; raises :class:`OSError`.
StartWriteback = Callable[[int, int, int], None]


@functools.cache
def _libc_sync_file_range() -> Callable[..., int] | None:
    """libc's ``sync_file_range``, looked up once, when first needed; None off Linux.

    :mod:`ctypes` is imported here, not with the module: a process that writes
    no big file does not pay for it.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):  # pragma: no cover - a libc without it
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    function.restype = ctypes.c_int
    return function


def sync_file_range_write(fd: int, offset: int, nbytes: int) -> None:
    """Start the writeback of *nbytes* bytes of *fd* from *offset*; does not wait.

    :raises OSError: when the call fails, or ``ENOSYS`` where there is no
        ``sync_file_range``
    """
    function = _libc_sync_file_range()
    if function is None:
        raise OSError(errno.ENOSYS, "sync_file_range is not available here")
    if function(fd, offset, nbytes, _SYNC_FILE_RANGE_WRITE) != 0:
        import ctypes  # imported by the lookup above

        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


@dataclasses.dataclass(frozen=True)
class Writeback:
    """How far behind its writers the writeback of a temporary file is started, and how.

    :ivar every: bytes written in a row before their writeback is started
        (0: never)
    :ivar start: what starts it (see :data:`StartWriteback`)
    """

    every: int = WRITE_BEHIND
    start: StartWriteback = sync_file_range_write

    def follow(self, fd: int) -> WriteBehind | None:
        """A :class:`WriteBehind` for the file open as *fd*; None when it is off."""
        return WriteBehind(fd, self.every, self.start) if self.every > 0 else None


#: What every temporary file gets unless told otherwise.
DEFAULT_WRITEBACK = Writeback()


class WriteBehind:
    """Starts the writeback of the bytes written into one file, :attr:`every` bytes
    behind each of its writers.

    It follows the runs of bytes written in a row: a write that begins where a
    run ends extends it, any other begins a new run. A single stream writes
    one run; each connection of a segmented download writes its own, in its
    region of the file. Once :attr:`every` bytes of a run are not handed over
    yet, they are. Safe to call from several writing threads. A failed start
    (a filesystem that refuses it) turns it off for the file: the ``fsync``
    does the work then.
    """

    def __init__(self, fd: int, every: int, start: StartWriteback) -> None:
        self.every = every
        self._fd = fd
        self._start: StartWriteback | None = start
        # The end of each run -> the start of its bytes not handed over yet.
        self._runs: dict[int, int] = {}
        self._lock = threading.Lock()

    def wrote(self, offset: int, nbytes: int) -> None:
        """Note that *nbytes* bytes were written at *offset*; start their
        writeback when their run has enough bytes not handed over."""
        start_writeback = self._start
        if start_writeback is None:
            return
        end = offset + nbytes
        with self._lock:
            start = self._runs.pop(offset, offset)
            if end - start < self.every:
                self._runs[end] = start
                return
            self._runs[end] = end
        try:
            start_writeback(self._fd, start, end - start)
        except OSError as exc:
            log.debug("Write-behind off for fd %d: %s", self._fd, exc)
            self._start = None
