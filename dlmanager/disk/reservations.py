"""Room reserved against a size cap by the downloads in flight of every process.

The one source of truth for what is in flight: each download that knows its
size holds a reservation file in ``.dlmanager/`` for as long as it runs, and
every process counts the held ones.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading

from dlmanager.disk.layout import RESERVATION_SUFFIX, key
from dlmanager.disk.locks import CREATE_FLAGS, READ_FLAGS, RETRIES, StateDir, same_file
from dlmanager.redact import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["Reservations"]

log = get_logger(__name__)


class Reservations:
    """Room reserved against the cap by the downloads in flight of every process.

    Each reservation is a file ``NAME.TOKEN.rsv`` holding its size, locked by
    its process for as long as the download runs. It is written under a
    hidden name first, locked, then renamed: no other process can take a
    shared lock on it (to see whether it is held) before its owner holds it.
    """

    SUFFIX = RESERVATION_SUFFIX

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self._lock = threading.Lock()  # download threads hold and release at once
        self._held: dict[str, tuple[int, str]] = {}  # fname -> (fd, name) of this process's

    def hold(self, fname: str, nbytes: int) -> None:
        """Reserve *nbytes* for the download of *fname* until :meth:`release`."""
        if fcntl is None:  # pragma: no cover - Windows
            return
        with self._lock:
            if fname in self._held:
                return
            try:
                self._held[fname] = self._create(fname, nbytes)
            except OSError as exc:
                log.debug("Cannot reserve room for %s: %s", fname, exc)

    def _create(self, fname: str, nbytes: int) -> tuple[int, str]:
        for _ in range(RETRIES):
            name = f"{key(fname)}.{secrets.token_hex(4)}{self.SUFFIX}"
            hidden = f".{name}.new"
            fd = self.state.open(hidden, CREATE_FLAGS | os.O_EXCL)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # at most a cleaner's moment
                if same_file(fd, self.state.file(hidden)):
                    os.pwrite(fd, str(nbytes).encode(), 0)
                    os.rename(self.state.file(hidden), self.state.file(name))
                    return fd, name
            except FileNotFoundError:
                pass  # removed by a cleaner before it was locked: again
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(self.state.file(hidden))
                os.close(fd)
                raise
            os.close(fd)
        raise OSError(errno.EBUSY, "reservation files keep being removed")

    def release(self, fname: str) -> None:
        with self._lock:
            held = self._held.pop(fname, None)
        if held is not None:
            fd, name = held
            self.state.release(name, fd, exclusive=True)

    def total(self) -> int:
        """Bytes reserved by live downloads of every process (this one included)."""
        if fcntl is None:  # pragma: no cover
            return 0
        try:
            names = os.listdir(self.state.path)
        except OSError:
            return 0
        with self._lock:
            own = {name: fd for fd, name in self._held.values()}
            total = 0
            for name in names:
                if name.startswith(".") or not name.endswith(self.SUFFIX):
                    continue  # being written (not held yet), or not a reservation
                fd = own.get(name)
                if fd is None:
                    total += _held_size(self.state.file(name))
                else:
                    with contextlib.suppress(OSError, ValueError):
                        total += int(os.pread(fd, 32, 0) or b"0")
        return total


def _held_size(path: str) -> int:
    """The size in a reservation file that a live process holds, else 0."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # held: a download in flight
            try:
                return int(os.pread(fd, 32, 0) or b"0")
            except ValueError:
                return 0
        return 0  # nobody holds it: its process is gone
    finally:
        os.close(fd)
