"""The locks of processes sharing one destination directory: their folder, destination locks.

While downloads, waits or pins are active, their coordination files live in
the hidden ``.dlmanager/`` folder of the directory, which
:class:`~dlmanager.PersistLimit` never counts or evicts. Every file is
created when it is needed and removed as soon as it is not (a process that
still holds destination locks keeps the others it releases as spares, see
below), and the folder goes when it is empty: when nothing runs, a
destination holds only its files.

- ``NAME.lock``: the inter-process lock of one destination (an exclusive
  ``flock``). The process holding it transfers the file; the others wait,
  then find the finished file, or take over if the holder died (the
  operating system releases a dead process's lock).
- ``NAME.pin``: a shared ``flock`` held by every process that uses the file
  (:mod:`dlmanager.disk.pins`).
- ``NAME.TOKEN.rsv``: the size of a download in flight, held locked by the
  process downloading it; every process counts the held ones against the
  cap, and a dead process's reservation stops counting by itself.

Removing a lock file is safe because of one rule: only a process holding
the exclusive ``flock`` of the file at a path may unlink (or rename) that
path, and a process that takes a lock checks afterwards that the file it
locked is still the one at its path (same device and inode), else it starts
again with the new one. (The ``filelock`` package never deletes its lock
files for want of that check.) Files left by a killed process are unheld:
the next manager on the directory removes them.

Creating a file costs far more than naming one (an inode to allocate, and
on some filesystems a search past the recently deleted ones), so a process
downloading several files at once recycles its destination locks: one it
releases while it holds others is renamed to a spare name
(:func:`~dlmanager.disk.layout.spare_lock_name`) instead of being removed,
still locked, and its next destination lock is that file hard-linked under
the lock's name (``link`` fails when the name exists: then the lock is
taken as usual). Linked, it is locked from its first instant; nobody else
can lock a spare; the spares go when the process holds no destination lock
any more (or dies: they are unheld files then).

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
from collections.abc import Iterator

from dlmanager.disk.layout import LOCK_SUFFIX, STATE_DIR, key, spare_lock_name
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
#: The most spare lock files a :class:`StateDir` keeps.
MAX_SPARES = 64


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
        self._lock = threading.Lock()
        self._taken = 0  # destination locks held, or being taken, through take()
        self._spares: list[tuple[int, str]] = []  # (fd, name), locked: see the module
        self._linking = hasattr(os, "link")  # False once link() failed here
        self._linked = False  # whether link() was seen to make a hard link here
        self._owner = f"spare-{os.getpid()}-{secrets.token_hex(4)}"
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

    def release(self, name: str, fd: int, *, exclusive: bool = False) -> None:
        """Release the lock *fd* on the file *name*, removing the file if nobody else holds it.

        A shared lock is turned into an exclusive one first, without waiting:
        when that fails, another process still holds it and the file stays.

        :param exclusive: *fd* holds the exclusive lock already
        """
        if not exclusive:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                return
        with contextlib.suppress(OSError):
            os.unlink(self.file(name))
        os.close(fd)
        self._settle(tidy=True)

    def take(self, name: str) -> tuple[int, str | None] | None:
        """Take the exclusive lock of the file *name* if no process holds it; never waits.

        Through a spare when there is one (see the module), else as
        :meth:`acquire` does.

        :return: the locked file descriptor and the spare name it also has (or
            None), for :meth:`give_back`; None when another process holds the lock
        :raises OSError: when the file cannot be created
        """
        with self._lock:
            self._taken += 1
            spare = self._spares.pop() if self._spares else None
        try:
            if spare is not None and self._link(spare, name):
                return spare
            fd = self.acquire(name, fcntl.LOCK_EX, blocking=False)
        except BaseException:
            self._untake()
            raise
        if fd is None:
            self._untake()
            return None
        return fd, None

    def give_back(self, name: str, fd: int, spare: str | None) -> None:
        """Release a lock that :meth:`take` gave: its file becomes a spare
        (still locked) while this object holds other locks, else is removed."""
        with self._lock:
            self._taken -= 1
            keep = self._taken > 0 and self._linking and len(self._spares) < MAX_SPARES
        path = self.file(name)
        renamed = False
        if keep and spare is None:  # a file of its own: renamed to a spare name
            spare = spare_lock_name(self._owner)
            try:
                os.rename(path, self.file(spare))
                renamed = True
            except OSError:
                spare, keep = None, False
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(path)  # its spare name, if any, stays
        if keep and spare is not None:
            with self._lock:
                self._spares.append((fd, spare))
        else:
            if spare is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.file(spare))
            os.close(fd)
        self._settle(tidy=True)

    def _link(self, spare: tuple[int, str], name: str) -> bool:
        """Give the spare file *spare* the name *name* too: whether it has it
        (the spare is put back, or dropped if unusable, when not)."""
        fd, spare_name = spare
        try:
            os.link(self.file(spare_name), self.file(name))
            if self._linked or os.fstat(fd).st_nlink > 1:  # a hard link: the file locked
                self._linked = True
                return True
            self._linking = False
            log.debug("No spare lock files in %s: link() makes no hard link", self.path)
        except FileExistsError:  # the lock file exists: taken as usual
            with self._lock:
                self._spares.append(spare)
            return False
        except OSError as exc:  # no hard links here, or the spare is gone
            if not isinstance(exc, FileNotFoundError):
                log.debug("No spare lock files in %s: %s", self.path, exc)
                self._linking = False
        with contextlib.suppress(OSError):
            os.unlink(self.file(spare_name))
        os.close(fd)
        return False

    def _untake(self) -> None:
        with self._lock:
            self._taken -= 1
        self._settle(tidy=False)  # a lock held by another: nothing was made

    def _settle(self, *, tidy: bool) -> None:
        """Once no lock is held or being taken through :meth:`take`, remove the
        spares, then the folder if it is empty (while one is, it is not)."""
        with self._lock:
            if self._taken:
                return
            spares, self._spares = self._spares, []
        for fd, name in spares:
            with contextlib.suppress(OSError):
                os.unlink(self.file(name))
            os.close(fd)
        if tidy or spares:
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
        except BlockingIOError:
            # Held by another process already: a manager created at the same
            # moment tries every unheld file of the folder (remove_stale). So
            # locks work.
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
        self._spare: str | None = None  # the other name of the file held, if any

    def try_acquire(self) -> bool:
        """Take the lock if no process holds it; never waits.

        :raises StorageError: when the lock file cannot be created, for
            instance because the destination directory is gone (it is not
            created again: the download would land there)
        """
        if self._fd is not None:
            return True
        try:
            taken = self.state.take(self.name)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if not os.path.isdir(self.state.destdir):
                reason += f" (the destination directory {self.state.destdir} is gone)"
            raise StorageError(
                f"cannot lock {self.path}: {reason}", errno=exc.errno, dest=self.dest
            ) from exc
        if taken is None:
            return False
        self._fd, self._spare = taken
        with _held_here_lock:
            _held_here.add(self.path)
        return True

    def release(self) -> None:
        """Release the lock and remove its file; does nothing when not held."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with _held_here_lock:
                _held_here.discard(self.path)
            self.state.give_back(self.name, fd, self._spare)

    def holder(self) -> str:
        """Who holds the lock, for the logs: ``another manager`` (of this
        process) or ``another process``."""
        with _held_here_lock:
            here = self.path in _held_here
        return "another manager" if here else "another process"
