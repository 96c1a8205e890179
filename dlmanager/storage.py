"""The temporary file a download writes, published atomically under its final name."""

from __future__ import annotations

import logging
import os

from dlmanager import checkpoint
from dlmanager.checkpoint import Checkpoint
from dlmanager.paths import is_part, temporary_fname, temporary_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["PartFile", "leftover_progress"]

log = logging.getLogger(__name__)

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _lock(fd: int) -> bool:
    """Take *fd*'s exclusive flock without waiting; False when someone else holds it."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


class PartFile:
    """A hidden, uniquely named temporary file beside *dest*, with its checkpoint.

    It is created with ``O_EXCL | O_NOFOLLOW`` (a planted symlink is never
    followed) and locked with ``flock`` while open, so that
    :func:`~dlmanager.paths.remove_stale_temporaries` can tell a live one from
    one left by a killed process. Use :meth:`create` or :meth:`adopt`.

    :ivar size: how many bytes :meth:`write` appended (sequential writing)
    """

    def __init__(self, dest: str, path: str, fd: int) -> None:
        self.dest = dest
        self.path = path
        self.checkpoint_path = checkpoint.checkpoint_path(path)
        self._fd = fd
        self.size = 0

    @classmethod
    def create(cls, dest: str) -> PartFile:
        """A new, empty temporary file for *dest*."""
        directory, fname = os.path.split(dest)
        path = os.path.join(directory, temporary_name(fname))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
        if not _lock(fd):  # pragma: no cover - nobody else knows the fresh name yet
            os.close(fd)
            raise OSError(f"cannot lock new temporary file {path}")
        log.debug("Writing %s into %s", dest, path)
        return cls(dest, path, fd)

    @classmethod
    def adopt(cls, dest: str, url: str) -> tuple[PartFile, Checkpoint] | None:
        """Take over a temporary file of *dest* left by a stopped download of *url*.

        Looks for ``.part`` files of *dest* with a valid checkpoint for the
        same URL that no live process holds; takes the one with the most
        bytes, and removes the other unowned ones.

        :return: the adopted file and its checkpoint, or None
        """
        directory, fname = os.path.split(dest)
        prefix = f".{fname}."
        try:
            names = [n for n in os.listdir(directory or ".") if n.startswith(prefix) and is_part(n)]
        except OSError:
            return None
        found: list[tuple[int, PartFile, Checkpoint]] = []
        for name in names:
            if temporary_fname(name) != fname:
                continue
            path = os.path.join(directory, name)
            try:
                fd = os.open(path, os.O_RDWR | _NOFOLLOW)
            except OSError:
                continue
            if not _lock(fd):
                os.close(fd)
                continue  # a live download owns it
            part = cls(dest, path, fd)
            saved = checkpoint.load(part.checkpoint_path)
            size = os.fstat(fd).st_size
            if (
                saved is None
                or saved.url != url
                or size > saved.total
                or (saved.ranges and size < saved.ranges[-1][1])
            ):
                part.discard()  # cannot be resumed
                continue
            found.append((saved.received, part, saved))
        if not found:
            return None
        found.sort(key=lambda item: item[0], reverse=True)
        for _, other, _ in found[1:]:
            other.discard()
        _, part, saved = found[0]
        log.debug("Resuming %s from %s (%d bytes held)", dest, part.path, saved.received)
        return part, saved

    def write(self, data: bytes) -> None:
        """Append *data* after the bytes written so far."""
        self.pwrite(self.size, data)
        self.size += len(data)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write *data* at *offset*."""
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view = view[written:]
            offset += written

    def preallocate(self, total: int) -> None:
        """Reserve *total* bytes on disk, where the platform can."""
        allocate = getattr(os, "posix_fallocate", None)
        if allocate is not None:
            try:
                allocate(self._fd, 0, total)
                return
            except OSError as exc:  # e.g. unsupported by the filesystem
                log.debug("posix_fallocate(%s) failed: %s", self.path, exc)
        if os.fstat(self._fd).st_size < total:
            os.ftruncate(self._fd, total)

    def truncate(self) -> None:
        """Throw away everything written so far, and the checkpoint."""
        os.ftruncate(self._fd, 0)
        self.size = 0
        checkpoint.remove(self.checkpoint_path)

    def save_checkpoint(self, state: Checkpoint) -> None:
        """Flush the data to disk, then record *state* beside it."""
        os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        checkpoint.save(self.checkpoint_path, state)

    def publish(self, total: int | None = None) -> None:
        """Flush, fsync and atomically rename the file to its destination.

        :param total: the file's size, when known: the file is cut to it
        """
        if total is not None and os.fstat(self._fd).st_size != total:
            os.ftruncate(self._fd, total)
        # Used now: the file is the most recently used one from its first
        # instant under the final name, for every process's eviction order.
        if os.utime in os.supports_fd:
            os.utime(self._fd)
        os.fsync(self._fd)
        os.replace(self.path, self.dest)
        checkpoint.remove(self.checkpoint_path)
        os.close(self._fd)
        self._fd = -1
        _fsync_directory(os.path.dirname(self.dest))
        log.debug("Published %s", self.dest)

    def discard(self) -> None:
        """Close and remove the temporary file and its checkpoint; never raises."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("Could not remove temporary file %s: %s", self.path, exc)
        checkpoint.remove(self.checkpoint_path)


def leftover_progress(dest: str) -> tuple[int, int | None] | None:
    """``(bytes held, total or None)`` of a temporary file of *dest* being written.

    Read from its checkpoint when it has one, else from its size; None when
    there is none. Used to report the progress of another process.
    """
    directory, fname = os.path.split(dest)
    prefix = f".{fname}."
    try:
        names = [n for n in os.listdir(directory or ".") if n.startswith(prefix) and is_part(n)]
    except OSError:
        return None
    best: tuple[int, int | None] | None = None
    for name in names:
        path = os.path.join(directory, name)
        saved = checkpoint.load(checkpoint.checkpoint_path(path))
        if saved is not None:
            held: tuple[int, int | None] = (saved.received, saved.total)
        else:
            try:
                held = (os.stat(path).st_size, None)
            except OSError:
                continue
        if best is None or held[0] > best[0]:
            best = held
    return best


def _fsync_directory(directory: str) -> None:
    """Make a rename in *directory* durable, where the platform allows it."""
    try:
        fd = os.open(directory or ".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
