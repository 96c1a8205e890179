"""Coordination of processes sharing one destination directory.

Everything lives in the hidden ``.dlmanager/`` folder of the directory, which
:class:`~dlmanager.PersistLimit` never counts or evicts:

- ``locks/NAME.lock``: the inter-process lock of one destination (the
  ``filelock`` package). The process holding it transfers the file; the
  others wait, then find the finished file, or take over if the holder died
  (the operating system releases a dead process's lock).
- ``pins/NAME.pin``: a shared ``flock`` held by every process that uses the
  file (:meth:`DownloadManager.pin <dlmanager.DownloadManager.pin>`); an
  evicting process takes it exclusively, without waiting, before removing
  the file, and skips the file when it cannot.
- ``flock-probe``: tells at start-up whether file locks work here.
- ``reservations/NAME``: the size of a download in flight, held locked by
  the process downloading it; every process counts the held ones against
  the cap, and a dead process's reservation stops counting by itself.

Correctness never depends on these locks: every writer writes its own
uniquely named temporary file and publishes it with an atomic rename, so on
a filesystem whose locks do not work (some NFS, CIFS or cluster filesystem
setups) a broken lock costs bandwidth, never bytes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator

import filelock

from dlmanager.errors import StorageError
from dlmanager.paths import STATE_DIR, try_exclusive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["DestinationLock", "Pins", "Reservations", "StateDir"]

log = logging.getLogger(__name__)

_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: A lock or pin file unused for this long (seconds) is removed at start-up.
STALE_LOCK_AGE = 600.0


class StateDir:
    """The ``.dlmanager/`` folder of a destination directory."""

    def __init__(self, destdir: str) -> None:
        self.destdir = destdir
        self.path = os.path.join(destdir, STATE_DIR)
        self.locks = os.path.join(self.path, "locks")
        self.pins = os.path.join(self.path, "pins")
        self.reservations = os.path.join(self.path, "reservations")
        for folder in (self.locks, self.pins, self.reservations):
            os.makedirs(folder, exist_ok=True)
        self.locks_work = _flock_works(self.path)

    def lock(self, fname: str) -> DestinationLock | None:
        """The destination's lock, or None where file locks do not work."""
        if not self.locks_work:
            return None
        return DestinationLock(os.path.join(self.locks, fname + ".lock"), self.destdir)

    def remove_stale(self, min_age: float = STALE_LOCK_AGE) -> list[str]:
        """Remove lock and pin files that no process holds and nobody used lately.

        A process opening one at the very moment it is removed may end up with
        a lock nobody else sees: that costs a duplicate transfer, never a
        wrong file.
        """
        removed = []
        now = time.time()
        for folder in (self.locks, self.pins, self.reservations):
            if not self.locks_work:
                break  # cannot tell held files from stale ones
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                try:
                    if now - entry.stat(follow_symlinks=False).st_mtime < min_age:
                        continue
                except OSError:
                    continue
                with try_exclusive(entry.path) as free:
                    if free:
                        with contextlib.suppress(OSError):
                            os.unlink(entry.path)
                            removed.append(entry.path)
        return removed


class DestinationLock:
    """The inter-process lock of one destination file."""

    def __init__(self, path: str, destdir: str) -> None:
        self.path = path
        self.destdir = destdir
        self._lock = filelock.FileLock(path, thread_local=False)

    def try_acquire(self) -> bool:
        """Take the lock if no process holds it; never waits.

        :raises StorageError: when the destination directory is gone (taking
            the lock would create it again, and the download land there)
        """
        if not os.path.isdir(self.destdir):
            raise StorageError(
                f"cannot lock {self.path}: {os.strerror(errno.ENOENT)} "
                f"(the destination directory {self.destdir} is gone)",
                errno=errno.ENOENT,
                dest=os.path.join(self.destdir, os.path.basename(self.path)[: -len(".lock")]),
            )
        # The lock folder itself may have been removed with .dlmanager/.
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except filelock.Timeout:
            return False
        with contextlib.suppress(OSError):
            os.utime(self.path)  # recently used: not stale
        return True

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()


def _flock_works(folder: str) -> bool:
    """Whether ``flock`` works in *folder* (not on every network filesystem)."""
    if fcntl is None:  # pragma: no cover
        return False
    probe = os.path.join(folder, "flock-probe")
    try:
        fd = os.open(probe, _FLAGS, 0o666)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        return True  # another process holds it: locks work
    except OSError as exc:
        log.warning(
            "File locks do not work in %s (%s): processes sharing it may download a file "
            "twice, and pins are not honoured; files are still never corrupted",
            folder,
            exc,
        )
        return False
    finally:
        os.close(fd)
    return True


class Pins:
    """Pins of the files of one destination directory, shared by all processes."""

    def __init__(self, state: StateDir, destdir: str) -> None:
        self.state = state
        self.destdir = destdir

    def _pin_path(self, path: str) -> str:
        return os.path.join(self.state.pins, os.path.basename(path) + ".pin")

    @contextlib.contextmanager
    def pin(self, path: str) -> Iterator[str]:
        """Keep *path* from eviction, by any process, for the ``with`` block.

        :raises FileNotFoundError: when the file is not (or no longer) there
        """
        while True:
            fd = os.open(self._pin_path(path), _FLAGS, 0o666)
            if fcntl is None or not self.state.locks_work:
                break
            fcntl.flock(fd, fcntl.LOCK_SH)  # waits only for an eviction in progress
            if os.fstat(fd).st_nlink:
                if os.utime in os.supports_fd:
                    os.utime(fd)  # in use: not stale
                break
            os.close(fd)  # removed as stale meanwhile: pin the new one
        try:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"cannot pin {path}: no such file")
            yield path
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def evicting(self) -> Iterator[Callable[[str], bool]]:
        """A ``protect(path)`` function for one eviction round.

        A file is protected when another process pins it; otherwise its pin is
        held exclusively until the round ends, so nobody pins it in between.
        """
        held: list[int] = []

        def protect(path: str) -> bool:
            if fcntl is None or not self.state.locks_work:  # pins cannot be seen
                return False
            try:
                fd = os.open(self._pin_path(path), _FLAGS, 0o666)
            except OSError:
                return True  # cannot tell: keep it
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                log.debug("Not evicting %s: pinned by a process", path)
                return True
            held.append(fd)
            return False

        try:
            yield protect
        finally:
            for fd in held:
                os.close(fd)

    def forget(self, removed: list[str]) -> None:
        """Remove the pin files of evicted files (call inside :meth:`evicting`)."""
        for path in removed:
            with contextlib.suppress(OSError):
                os.unlink(self._pin_path(path))


class Reservations:
    """Room reserved against the cap by the downloads in flight of every process.

    Each reservation is a file ``NAME.TOKEN`` holding its size, locked by its
    process for as long as the download runs. It is written under a hidden
    name first, locked, then renamed: no other process can take a shared lock
    on it (to see whether it is held) before its owner holds it.
    """

    def __init__(self, state: StateDir) -> None:
        self.folder = state.reservations
        self._lock = threading.Lock()  # download threads hold and release at once
        self._held: dict[str, tuple[int, str]] = {}  # fname -> (fd, path) of this process's

    def hold(self, fname: str, nbytes: int) -> None:
        """Reserve *nbytes* for the download of *fname* until :meth:`release`."""
        if fcntl is None:  # pragma: no cover - Windows
            return
        with self._lock:
            if fname in self._held:
                return
            name = f"{fname}.{secrets.token_hex(4)}"
            hidden = os.path.join(self.folder, f".{name}.new")
            path = os.path.join(self.folder, name)
            try:
                fd = os.open(hidden, _FLAGS | os.O_EXCL, 0o666)
            except OSError as exc:
                log.debug("Cannot reserve room for %s: %s", fname, exc)
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else knows this name: no wait
                os.pwrite(fd, str(nbytes).encode(), 0)
                os.rename(hidden, path)
            except OSError as exc:
                log.debug("Cannot reserve room for %s: %s", fname, exc)
                with contextlib.suppress(OSError):
                    os.unlink(hidden)
                os.close(fd)
                return
            self._held[fname] = (fd, path)

    def release(self, fname: str) -> None:
        with self._lock:
            held = self._held.pop(fname, None)
        if held is not None:
            fd, path = held
            with contextlib.suppress(OSError):
                os.unlink(path)
            os.close(fd)

    def total(self) -> int:
        """Bytes reserved by live downloads of every process (this one included)."""
        if fcntl is None:  # pragma: no cover
            return 0
        try:
            names = os.listdir(self.folder)
        except OSError:
            return 0
        with self._lock:
            own = {os.path.basename(path): fd for fd, path in self._held.values()}
            total = 0
            for name in names:
                if name.startswith("."):
                    continue  # being written: not held yet
                fd = own.get(name)
                if fd is None:
                    total += _held_size(os.path.join(self.folder, name))
                else:
                    with contextlib.suppress(OSError, ValueError):
                        total += int(os.pread(fd, 32, 0) or b"0")
        return total


def _held_size(path: str) -> int:
    """The size in a reservation file that a live process holds, else 0."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0))
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
