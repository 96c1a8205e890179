"""The temporary file a download writes, published atomically under its final name."""

from __future__ import annotations

import logging
import os

from dlmanager.paths import temporary_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["PartFile"]

log = logging.getLogger(__name__)

_OPEN_FLAGS = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)
_BUFFER_SIZE = 1024 * 1024


class PartFile:
    """A hidden, uniquely named temporary file beside *dest*.

    It is created with ``O_EXCL | O_NOFOLLOW`` (a planted symlink is never
    followed) and locked with ``flock`` while it is open, so that
    :func:`~dlmanager.paths.remove_stale_temporaries` can tell a live one from
    one left by a killed process.
    """

    def __init__(self, dest: str) -> None:
        self.dest = dest
        directory, fname = os.path.split(dest)
        self.path = os.path.join(directory, temporary_name(fname))
        fd = os.open(self.path, _OPEN_FLAGS, 0o666)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file = open(fd, "wb", buffering=_BUFFER_SIZE, closefd=True)  # noqa: SIM115
        except BaseException:
            os.close(fd)
            os.unlink(self.path)
            raise
        self.size = 0
        log.debug("Writing %s into %s", dest, self.path)

    def write(self, data: bytes) -> None:
        """Append *data*."""
        self._file.write(data)
        self.size += len(data)

    def truncate(self) -> None:
        """Throw away everything written so far."""
        self._file.flush()
        self._file.seek(0)
        self._file.truncate()
        self.size = 0

    def publish(self) -> None:
        """Flush, fsync and atomically rename the file to its destination."""
        self._file.flush()
        os.fsync(self._file.fileno())
        os.replace(self.path, self.dest)
        self._file.close()
        _fsync_directory(os.path.dirname(self.dest))
        log.debug("Published %s", self.dest)

    def discard(self) -> None:
        """Close and remove the temporary file; never raises."""
        try:
            self._file.close()
        except OSError:
            pass
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("Could not remove temporary file %s: %s", self.path, exc)


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
