"""The temporary file a download writes, published atomically under its final name.

Every filesystem error met while writing it (disk full, file too big, quota,
read-only or removed directory...) becomes a
:class:`~dlmanager.errors.StorageError` naming the path and the reason, raised
``from`` the :class:`OSError`; such an error is not retried. Before the bytes
of a file of known size are written, :meth:`PartFile.check_space` compares
what is still missing with the free space of the filesystem.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator

from dlmanager.checksum import Checksum, file_digests
from dlmanager.disk import checkpoint, layout
from dlmanager.disk.checkpoint import Checkpoint
from dlmanager.disk.locks import same_file
from dlmanager.disk.writeback import DEFAULT_WRITEBACK, Writeback
from dlmanager.errors import DlManagerError, InsufficientSpaceError, StorageError
from dlmanager.redact import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SPACE_MARGIN", "PartFile", "free_space", "leftover_progress"]

log = get_logger(__name__)

#: Bytes kept free beyond what a file still needs when checking the free
#: space: its checkpoint, the filesystem's own metadata and the rounding of
#: its last block.
SPACE_MARGIN = 64 * 1024
#: Temporary files :meth:`PartFile.create` makes before giving up, should
#: each one be removed between its creation and its lock.
_CREATE_TRIES = 5

#: Errors of ``posix_fallocate`` that mean "not supported here": the file is
#: then only extended, and the space is taken as it is written.
_NO_FALLOCATE = frozenset(
    getattr(errno, name)
    for name in ("EOPNOTSUPP", "ENOTSUP", "EINVAL", "ENOSYS", "ENODEV")
    if hasattr(errno, name)
)
#: Errors that mean the filesystem or the user's quota is full.
_NO_SPACE = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT") if hasattr(errno, name))

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
    :func:`~dlmanager.disk.cleanup.remove_stale_temporaries` can tell a live one from
    one left by a killed process. Use :meth:`create` or :meth:`adopt`.

    Its methods raise :class:`~dlmanager.errors.StorageError` when the
    filesystem fails them.

    The writeback of what is written is started while it is written (see
    :mod:`~dlmanager.disk.writeback`), so that the ``fsync`` of
    :meth:`publish` has little left to do.

    :ivar size: how many bytes :meth:`write` appended (sequential writing)
    :ivar url: the URL downloaded into it (for the errors' context)

    It is the :class:`~dlmanager.disk.sinks.Sink` of a download into a directory.
    """

    #: Bytes written can be taken back (a restart truncates it).
    rewindable = True

    def __init__(
        self,
        dest: str,
        path: str,
        fd: int,
        url: str = "",
        writeback: Writeback | None = DEFAULT_WRITEBACK,
    ) -> None:
        self.dest = dest
        self.path = path
        self.url = url
        self.checkpoint_path = checkpoint.checkpoint_path(path)
        self._fd = fd
        self._behind = writeback.follow(fd) if writeback is not None else None
        self.size = 0
        # Whether a checkpoint may exist beside it (a file never checkpointed,
        # most small ones, has none to remove: two failing unlinks saved).
        self._checkpointed = False

    @classmethod
    def create(
        cls, dest: str, url: str = "", writeback: Writeback | None = DEFAULT_WRITEBACK
    ) -> PartFile:
        """A new, empty temporary file for *dest*.

        :param writeback: how its writeback is started while it is written
            (None: not before the ``fsync``)

        :raises StorageError: when it cannot be created (directory read-only
            or gone, no space or inodes left...)
        """
        directory, fname = os.path.split(dest)
        for _ in range(_CREATE_TRIES):
            path = os.path.join(directory, layout.temporary_name(fname))
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o666)
            except OSError as exc:
                raise _storage_error("create", path, exc, url=url, dest=dest) from exc
            # Between the open and the lock, a download of the same file
            # looking for a leftover may take the new file for an abandoned
            # one (unlocked, no checkpoint) and remove it: then take another.
            if _lock(fd) and os.fstat(fd).st_nlink:
                log.debug("Writing %s into %s", dest, path)
                return cls(dest, path, fd, url, writeback)
            os.close(fd)
        raise StorageError(  # pragma: no cover - as many races in a row
            f"cannot hold a temporary file for {dest}: each was removed as it was made",
            url=url,
            dest=dest,
        )

    @classmethod
    def adopt(
        cls, dest: str, url: str, writeback: Writeback | None = DEFAULT_WRITEBACK
    ) -> tuple[PartFile, Checkpoint] | None:
        """Take over a temporary file of *dest* left by a stopped download of *url*.

        Looks for ``.part`` files of *dest* with a valid checkpoint for the
        same URL that no live process holds; takes the one with the most
        bytes, and removes the other unowned ones.

        :param writeback: as for :meth:`create`

        :return: the adopted file and its checkpoint, or None
        """
        directory, fname = os.path.split(dest)
        try:
            parts = [t.path for t in layout.scan_temporaries(directory, fname) if t.kind == "part"]
        except OSError:
            return None
        found: list[tuple[int, PartFile, Checkpoint]] = []
        for path in parts:
            try:
                fd = os.open(path, os.O_RDWR | _NOFOLLOW)
            except OSError:
                continue
            if not _lock(fd) or not same_file(fd, path):
                # A live download owns it, or published it between the
                # open and the lock (then fd is the finished file).
                os.close(fd)
                continue
            part = cls(dest, path, fd, url, writeback)
            part._checkpointed = True  # a leftover's, possibly
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

    # -- errors -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _failing(self, action: str, path: str | None = None) -> Iterator[None]:
        """Turn an :class:`OSError` of the block into a :class:`StorageError`."""
        try:
            yield
        except DlManagerError:
            raise
        except OSError as exc:
            raise _storage_error(
                action, path or self.path, exc, url=self.url, dest=self.dest, received=self.size
            ) from exc

    # -- writing ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Append *data* after the bytes written so far."""
        self.pwrite(self.size, data)
        self.size += len(data)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write *data* at *offset* (then start the writeback of the bytes
        written in a row up to here, once they are enough)."""
        view = memoryview(data)
        position = offset
        with self._failing("write"):
            while view:
                written = os.pwrite(self._fd, view, position)
                view = view[written:]
                position += written
        if self._behind is not None:
            self._behind.wrote(offset, position - offset)

    def check_space(self, total: int, held: int = 0) -> None:
        """Check that the filesystem can take the bytes of a *total*-byte file
        that this file does not hold yet.

        The bytes held are the most of *held*, :attr:`size` and the space
        already allocated to the file (a preallocated file needs no more).
        :data:`SPACE_MARGIN` bytes are kept free beyond them. Nothing is
        checked where the free space is unknown.

        :raises InsufficientSpaceError: when there is not enough free space
        """
        needed = max(0, total - max(held, self.size, self._allocated()))
        if not needed:
            return
        directory = os.path.dirname(self.path) or "."
        available = free_space(directory)
        if available is None or needed + SPACE_MARGIN <= available:
            return
        margin = f" ({SPACE_MARGIN} are kept free)" if needed <= available else ""
        raise InsufficientSpaceError(
            f"not enough free space in {directory} for {os.path.basename(self.dest)}: "
            f"{needed} bytes to write, {available} free{margin}",
            needed=needed,
            available=available,
            errno=errno.ENOSPC,
            url=self.url,
            dest=self.dest,
            received=self.size,
        )

    def _allocated(self) -> int:
        """Bytes of disk space the file holds (its size where blocks are not reported)."""
        with self._failing("read the size of"):
            status = os.fstat(self._fd)
        blocks = getattr(status, "st_blocks", None)
        return status.st_size if blocks is None else int(blocks) * 512

    def preallocate(self, total: int) -> None:
        """Reserve *total* bytes on disk, where the platform can.

        :raises InsufficientSpaceError: the filesystem or the quota is full
        :raises StorageError: for another failure (e.g. the file is too big)
        """
        allocate = getattr(os, "posix_fallocate", None)
        if allocate is not None:
            held = self._allocated()
            try:
                allocate(self._fd, 0, total)
                return
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    needed = max(0, total - held)
                    available = free_space(os.path.dirname(self.path) or ".")
                    raise InsufficientSpaceError(
                        f"cannot preallocate {total} bytes for {self.path}: {exc.strerror}",
                        needed=needed,
                        available=0 if available is None else available,
                        errno=exc.errno,
                        url=self.url,
                        dest=self.dest,
                    ) from exc
                if exc.errno not in _NO_FALLOCATE:
                    action = f"preallocate {total} bytes for"
                    raise _storage_error(
                        action, self.path, exc, url=self.url, dest=self.dest
                    ) from exc
                log.debug("posix_fallocate(%s) failed: %s", self.path, exc)
        with self._failing(f"extend to {total} bytes"):
            if os.fstat(self._fd).st_size < total:
                os.ftruncate(self._fd, total)

    def truncate(self) -> None:
        """Throw away everything written so far, and the checkpoint."""
        with self._failing("truncate"):
            os.ftruncate(self._fd, 0)
        self.size = 0
        checkpoint.remove(self.checkpoint_path)

    def digests(self, wanted: Iterable[Checksum]) -> dict[str, str]:
        """The file's digests in the algorithms of *wanted*, read back from disk.

        :raises StorageError: when it cannot be read
        """
        with self._failing("read"):
            return file_digests(self.path, {c.algorithm for c in wanted})

    def save_checkpoint(self, state: Checkpoint) -> None:
        """Flush the data to disk, then record *state* beside it.

        :raises StorageError: when either fails (the download cannot go on:
            its directory is full, read-only or gone)
        """
        with self._failing("flush"):
            os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)
        self._checkpointed = True
        with self._failing("write checkpoint", self.checkpoint_path):
            checkpoint.save(self.checkpoint_path, state)

    def publish(
        self, total: int | None = None, describe: Callable[[int], None] | None = None
    ) -> None:
        """Flush, fsync and atomically rename the file to its destination.

        :param total: the file's size, when known: the file is cut to it
        :param describe: called with the file's descriptor once it is complete,
            before the ``fsync``, to record its metadata
        :raises StorageError: when the file cannot be completed or renamed
            (it keeps its temporary name then)
        """
        with self._failing("complete"):
            if total is not None and os.fstat(self._fd).st_size != total:
                os.ftruncate(self._fd, total)
            if describe is not None:
                describe(self._fd)
            # Used now: the file is the most recently used one from its first
            # instant under the final name, for every process's eviction order.
            # An explicit time: the kernel's own "now" is coarse (a few ms), and
            # files published one after the other must not tie.
            if os.utime in os.supports_fd:
                now = time.time_ns()
                os.utime(self._fd, ns=(now, now))
            os.fsync(self._fd)
        with self._failing(f"rename {self.path} to", self.dest):
            os.replace(self.path, self.dest)
        # In place from here on: nothing below may fail the download.
        if self._checkpointed:
            checkpoint.remove(self.checkpoint_path)
        fd, self._fd = self._fd, -1
        try:
            os.close(fd)
        except OSError as exc:
            log.warning("Closing %s failed after it was published: %s", self.dest, exc)
        _fsync_directory(os.path.dirname(self.dest))
        log.debug("Published %s", self.dest)

    def close(self) -> None:
        """Close the file and leave it (and its checkpoint) for a later download
        to adopt; never raises."""
        if self._fd >= 0:
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = -1

    def discard(self) -> None:
        """Close and remove the temporary file and its checkpoint; never raises."""
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("Could not remove temporary file %s: %s", self.path, exc)
        if self._checkpointed:
            checkpoint.remove(self.checkpoint_path)


def leftover_progress(dest: str) -> tuple[int, int | None] | None:
    """``(bytes held, total or None)`` of a temporary file of *dest* being written.

    Read from its checkpoint when it has one, else from its size; None when
    there is none. Used to report the progress of another process.
    """
    directory, fname = os.path.split(dest)
    try:
        parts = [t.path for t in layout.scan_temporaries(directory, fname) if t.kind == "part"]
    except OSError:
        return None
    best: tuple[int, int | None] | None = None
    for path in parts:
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


def free_space(directory: str) -> int | None:
    """Bytes that this user may still write to the filesystem of *directory*.

    ``f_bavail * f_frsize`` of ``statvfs`` (the blocks reserved for root are
    not counted); None when unknown: the call failed, or the filesystem
    reports no size at all (some network and FUSE filesystems).
    """
    try:
        statvfs = getattr(os, "statvfs", None)
        if statvfs is None:  # pragma: no cover - Windows
            return shutil.disk_usage(directory).free
        status = statvfs(directory)
    except OSError as exc:
        log.debug("Cannot tell the free space of %s: %s", directory, exc)
        return None
    if not status.f_blocks:
        return None
    return int(status.f_bavail) * int(status.f_frsize or status.f_bsize)


def _storage_error(
    action: str, path: str, exc: OSError, *, url: str, dest: str, received: int = 0
) -> StorageError:
    """``cannot ACTION PATH: REASON`` as a :class:`StorageError` with the errno of *exc*."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOENT, getattr(errno, "ESTALE", None)):
        directory = os.path.dirname(dest) or "."
        if not os.path.isdir(directory):
            reason += f" (the destination directory {directory} is gone)"
    return StorageError(
        f"cannot {action} {path}: {reason}",
        errno=exc.errno,
        url=url,
        dest=dest,
        received=received,
    )


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
