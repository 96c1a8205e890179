"""The locks of processes sharing one destination directory: destination locks and pins.

While downloads, waits or pins are active, their coordination files live in
the hidden ``.dlmanager/`` folder of the directory, which
:class:`~dlmanager.PersistLimit` never counts or evicts. Every file is
created when it is needed and removed as soon as it is not, and the folder
goes when it is empty: when nothing runs, a destination holds only its files.

- ``NAME.lock``: the inter-process lock of one destination (an exclusive
  ``flock``). The process holding it transfers the file; the others wait,
  then find the finished file, or take over if the holder died (the
  operating system releases a dead process's lock).
- ``NAME.pin``: a shared ``flock`` held by every process that uses the file
  (:meth:`DownloadManager.pin <dlmanager.DownloadManager.pin>`); an evicting
  process takes it exclusively, without waiting, before removing the file,
  and skips the file when it cannot.
- ``NAME.TOKEN.rsv``: the size of a download in flight, held locked by the
  process downloading it; every process counts the held ones against the
  cap, and a dead process's reservation stops counting by itself.

Removing a lock file is safe because of one rule: only a process holding
the exclusive ``flock`` of the file at a path may unlink that path, and a
process that takes a lock checks afterwards that the file it locked is still
the one at its path (same device and inode), else it starts again with the
new one. (The ``filelock`` package never deletes its lock files for want of
that check.) Files left by a killed process are unheld: the next manager on
the directory removes them.

Correctness never depends on these locks: every writer writes its own
uniquely named temporary file and publishes it with an atomic rename, so on
a filesystem whose locks do not work (some NFS, CIFS or cluster filesystem
setups) a broken lock costs bandwidth, never bytes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Callable, Iterator

from dlmanager.disk.layout import LOCK_SUFFIX, PIN_SUFFIX, STATE_DIR, key
from dlmanager.errors import StorageError
from dlmanager.redact import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CREATE_FLAGS",
    "READ_FLAGS",
    "RETRIES",
    "DestinationLock",
    "Pins",
    "StateDir",
    "remove_if_unheld",
    "same_file",
    "try_exclusive",
]

log = get_logger(__name__)

CREATE_FLAGS = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
READ_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
#: Folders of the layout of earlier development versions, removed when unused.
_OLD_FOLDERS = ("locks", "pins", "reservations")
#: How many times a file is created again when a concurrent removal of the
#: folder or of the file itself gets in the way (each retry means another
#: process made progress).
RETRIES = 100


def same_file(fd: int, path: str) -> bool:
    """Whether the open file *fd* is the one at *path* now."""
    held = os.fstat(fd)
    if not held.st_nlink:
        return False
    try:
        there = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


class StateDir:
    """The ``.dlmanager/`` folder of a destination directory, present only while used."""

    def __init__(self, destdir: str) -> None:
        self.destdir = destdir
        self.path = os.path.join(destdir, STATE_DIR)
        self.locks_work = self._probe()

    def file(self, name: str) -> str:
        """The path of the coordination file *name*."""
        return os.path.join(self.path, name)

    def open(self, name: str, flags: int = CREATE_FLAGS) -> int:
        """Open (by default create) the coordination file *name*, and the folder if needed.

        :raises FileNotFoundError: when the destination directory is gone
            (it is never created again here)
        :raises OSError: when the file cannot be created
        """
        path = self.file(name)
        for _ in range(RETRIES):
            try:
                return os.open(path, flags, 0o666)
            except FileNotFoundError:
                pass
            try:
                os.mkdir(self.path)  # never the destination itself: it may be gone
            except FileExistsError:
                pass  # removed and created again meanwhile: open again
        raise OSError(errno.EBUSY, f"{self.path} keeps being removed", path)

    def tidy(self) -> None:
        """Remove the folder if it is empty (another process may be using it)."""
        try:
            os.rmdir(self.path)
        except OSError:
            pass

    def acquire(self, name: str, operation: int, *, blocking: bool) -> int | None:
        """Create (if needed) the file *name* and take its ``flock``.

        :param operation: ``fcntl.LOCK_EX`` or ``fcntl.LOCK_SH``
        :param blocking: wait for the lock, else give up at once
        :return: the open, locked file descriptor, or None when *blocking*
            is false and another process holds the lock
        """
        path = self.file(name)
        for _ in range(RETRIES):
            fd = self.open(name)
            try:
                fcntl.flock(fd, operation | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                os.close(fd)
                return None
            except BaseException:
                os.close(fd)
                raise
            if same_file(fd, path):
                return fd
            os.close(fd)  # removed by its last holder meanwhile: lock the new one
        raise OSError(errno.EBUSY, f"cannot lock {path}: it keeps being replaced", path)

    def release(self, name: str, fd: int) -> None:
        """Release the lock *fd* on the file *name*, removing the file if nobody else holds it.

        A shared lock is turned into an exclusive one first, without waiting:
        when that fails, another process still holds it and the file stays.
        """
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        try:
            os.unlink(self.file(name))
        except OSError:
            pass
        os.close(fd)
        self.tidy()

    def lock(self, fname: str) -> DestinationLock | None:
        """The destination's lock, or None where file locks do not work."""
        if not self.locks_work:
            return None
        return DestinationLock(self, fname)

    def remove_stale(self) -> list[str]:
        """Remove the coordination files that no process holds: those of killed processes.

        Safe at any moment: a process that locked a file removed meanwhile
        sees it and locks a new one. Also removes the folders of the layout of
        earlier versions. Returns the paths removed.
        """
        if not self.locks_work or not os.path.isdir(self.path):
            return []
        removed: list[str] = []
        for folder in (self.path, *(os.path.join(self.path, f) for f in _OLD_FOLDERS)):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                path = os.path.join(folder, name)
                if remove_if_unheld(path):
                    removed.append(path)
            if folder != self.path:
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
        self.tidy()
        return removed

    def _probe(self) -> bool:
        """Whether ``flock`` works here (not on every network filesystem).

        The probe file is removed at once, and the folder with it if it is empty.
        """
        if fcntl is None:  # pragma: no cover
            return False
        name = f"probe.{secrets.token_hex(4)}"
        try:
            fd = self.open(name, CREATE_FLAGS | os.O_EXCL)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            log.warning(
                "File locks do not work in %s (%s): processes sharing it may download a file "
                "twice, and pins are not honoured; files are still never corrupted",
                self.destdir,
                exc,
            )
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.file(name))
            os.close(fd)
            self.tidy()


@contextlib.contextmanager
def try_exclusive(path: str) -> Iterator[bool]:
    """Hold *path*'s flock for the block if no one else does; yield whether we got it.

    False too when the file cannot be opened, or was renamed or replaced
    between the open and the lock (the lock is then another file's).
    """
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield same_file(fd, path)
    finally:
        os.close(fd)


def remove_if_unheld(path: str) -> bool:
    """Remove the file at *path* if no process holds its lock; whether it was removed."""
    try:
        fd = os.open(path, READ_FLAGS)
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        if not same_file(fd, path):
            return False
        os.unlink(path)
        log.debug("Removed %s, left by a stopped process", path)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


#: The destination locks this process holds (their paths): a download that
#: finds one held can tell another manager of this process from another process.
_held_here: set[str] = set()
_held_here_lock = threading.Lock()


class DestinationLock:
    """The inter-process lock of one destination file, ``.dlmanager/NAME.lock`` while held."""

    def __init__(self, state: StateDir, fname: str) -> None:
        self.state = state
        self.name = key(fname) + LOCK_SUFFIX
        self.path = state.file(self.name)
        self.dest = os.path.join(state.destdir, fname)
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        """Take the lock if no process holds it; never waits.

        :raises StorageError: when the lock file cannot be created, for
            instance because the destination directory is gone (it is not
            created again: the download would land there)
        """
        if self._fd is not None:
            return True
        try:
            self._fd = self.state.acquire(self.name, fcntl.LOCK_EX, blocking=False)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if not os.path.isdir(self.state.destdir):
                reason += f" (the destination directory {self.state.destdir} is gone)"
            raise StorageError(
                f"cannot lock {self.path}: {reason}", errno=exc.errno, dest=self.dest
            ) from exc
        if self._fd is None:
            return False
        with _held_here_lock:
            _held_here.add(self.path)
        return True

    def release(self) -> None:
        """Release the lock and remove its file; does nothing when not held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with _held_here_lock:
                _held_here.discard(self.path)
            self.state.release(self.name, fd)

    def holder(self) -> str:
        """Who holds the lock, for the logs: ``another manager`` (of this
        process) or ``another process``."""
        with _held_here_lock:
            here = self.path in _held_here
        return "another manager" if here else "another process"


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
                self.state.release(name, fd)
