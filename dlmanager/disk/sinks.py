"""What a transfer writes into (a :class:`Sink`), and the sink of a caller's file object.

A transfer fills a :class:`Sink`: the :class:`~dlmanager.disk.partfile.PartFile`
of a download into a directory (a temporary file, published atomically), or
a :class:`FileObjectSink`, the caller's writable binary file object
(``io.BytesIO``, an open file, or standard output for the command). The
transfer code is written against :class:`Sink` alone and never asks which one
it fills: what differs (a checkpoint, a publish, the room on disk) is what
each sink does when asked.

A file object is written from the position it has when it is given, over one
connection (positioned writes from several connections would have to share
its position). Nothing else is done to it: no lock, no temporary file, no
metadata, no persist limit, no ``fsync``; it is flushed when the download
ends and never closed.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, Protocol

from dlmanager.checksum import Checksum, Hasher
from dlmanager.disk.checkpoint import Checkpoint
from dlmanager.errors import ChecksumError, DlManagerError, DownloadError, StorageError

__all__ = [
    "FileObjectSink",
    "Sink",
    "check_file_object",
    "describe",
    "file_sink",
    "is_file_object",
]

#: The size of each read when a file object is read back to check its checksum.
_READ_BLOCK = 1 << 20


class Sink(Protocol):
    """What a transfer (:mod:`dlmanager.transfer`) writes the bytes of a file into.

    :ivar dest: what the errors name as the destination
    :ivar url: the URL downloaded into it (for the errors' context)
    :ivar size: the bytes appended by :meth:`write`
    :ivar rewindable: whether bytes written can be taken back (a restart, a
        retry after bytes were written); when not, a failure after the
        first byte is final
    """

    dest: str
    url: str
    size: int
    rewindable: bool

    def write(self, data: bytes) -> None:
        """Append *data* after the bytes written so far."""

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        """Write *data* at *offset* of the file (several connections)."""

    def check_space(self, total: int, held: int = 0) -> None:
        """Raise :class:`~dlmanager.errors.InsufficientSpaceError` when a
        *total*-byte file cannot fit."""

    def preallocate(self, total: int) -> None:
        """Reserve room for *total* bytes, where it can."""

    def truncate(self) -> None:
        """Throw away every byte written: the transfer starts over."""

    def save_checkpoint(self, state: Checkpoint) -> None:
        """Record *state*, for a later download to resume."""

    def digests(self, wanted: Iterable[Checksum]) -> dict[str, str]:
        """The digests of the bytes written in the algorithms of *wanted*
        (by algorithm), read back."""

    def publish(
        self, total: int | None = None, describe: Callable[[int], None] | None = None
    ) -> None:
        """The file is complete: put it where the caller expects it."""

    def close(self) -> None:
        """Stop writing, leaving what was written (for a later download to resume)."""

    def discard(self) -> None:
        """Stop writing and take back what was written, where it can; never raises."""


def is_file_object(value: object) -> bool:
    """Whether *value* is meant as a file object rather than a path: it has a
    ``write`` method and is not a string, bytes or :class:`os.PathLike`."""
    return not isinstance(value, (str, bytes, os.PathLike)) and callable(
        getattr(value, "write", None)
    )


def file_sink(dest: object, url: str, *, revalidate: bool = False) -> FileObjectSink | None:
    """The sink of a download whose *dest* is a file object (or a sink made
    already); None when *dest* is a path.

    :param revalidate: whether the download was asked to revalidate (a file
        object has no file there to revalidate)
    :raises TypeError: see :func:`check_file_object`
    :raises ValueError: see :func:`check_file_object`; and when *revalidate*
    """
    if not isinstance(dest, FileObjectSink) and not is_file_object(dest):
        return None
    if revalidate:
        raise ValueError("revalidate and max_age need a file at a path, not a file object")
    return dest if isinstance(dest, FileObjectSink) else FileObjectSink(dest, url)  # type: ignore[arg-type]


def describe(fileobj: object) -> str:
    """How the errors name *fileobj*: its ``name`` when it is a path (an open
    file), else its type: ``<BytesIO>``."""
    name = getattr(fileobj, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"<{type(fileobj).__name__}>"


def check_file_object(fileobj: Any, *, seekable: bool = True) -> None:
    """Check that *fileobj* can take a download.

    :param seekable: whether it must be seekable too
    :raises TypeError: when it is no binary file object (no ``write``, or a
        text stream)
    :raises ValueError: when it is closed, not open for writing, or not
        seekable (and *seekable* is required)
    """
    shown = describe(fileobj)
    if not is_file_object(fileobj):
        raise TypeError(
            f"dest must be a writable binary file object (with a write() method), "
            f"not {type(fileobj).__name__}"
        )
    mode = getattr(fileobj, "mode", None)
    if isinstance(fileobj, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode):
        raise TypeError(
            f"{shown} is a text stream: give a binary one (open(path, 'wb'), io.BytesIO, "
            "sys.stdout.buffer)"
        )
    if getattr(fileobj, "closed", False):
        raise ValueError(f"{shown} is closed")
    if not _asks(fileobj, "writable", True):
        opened = f" (mode {mode!r})" if isinstance(mode, str) else ""
        raise ValueError(f"{shown} is not open for writing{opened}")
    if not seekable:
        return
    position = None
    if _asks(fileobj, "seekable", True):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            position = fileobj.tell()
    if not isinstance(position, int):
        raise ValueError(
            f"{shown} is not seekable (a pipe, a socket, a terminal?): a download writes "
            "into a seekable file object, whose bytes a retry can take back"
        )


def _asks(fileobj: Any, method: str, default: bool) -> bool:
    """What ``fileobj.METHOD()`` answers (``writable``, ``seekable``): *default*
    when it has no such method, False when it fails."""
    ask = getattr(fileobj, method, None)
    if ask is None:
        return default
    try:
        return bool(ask())
    except (OSError, ValueError):
        return False


class FileObjectSink:
    """A :class:`Sink` writing into the caller's binary file object, from its
    position when given (:attr:`start`).

    When the download completes, the object ends with its last byte: the
    object is cut there (whatever followed the start position is replaced, as
    a file opened with ``"wb"`` would be), flushed, and its position is left
    after the last byte. A restart takes the bytes written back by cutting
    the object at :attr:`start` again; a failure or a cancel does the same
    (the object then holds what it held before the start position). An
    object that cannot be cut (``truncate()`` unsupported) is overwritten
    instead: what followed the start position stays past the download's
    end, a restart that leaves bytes of the earlier try there fails the
    download, and what a failure leaves is told by :meth:`explain`.

    :param rewindable: False for a stream that can only be appended to
        (standard output): it need not be seekable, and any failure after its
        first byte is final (the bytes are out)
    :raises TypeError: when *fileobj* is no binary file object
    :raises ValueError: when it is closed, not writable, or not seekable
        (unless *rewindable* is False)
    """

    def __init__(self, fileobj: BinaryIO, url: str = "", *, rewindable: bool = True) -> None:
        check_file_object(fileobj, seekable=rewindable)
        self.fileobj = fileobj
        self.dest = describe(fileobj)
        self.url = url
        self.rewindable = rewindable
        #: Where the download's bytes start in the object.
        self.start = fileobj.tell() if rewindable else 0
        self.size = 0
        #: Bytes of the download the object still holds after :meth:`discard`
        #: (0 once they were cut off).
        self.left = 0
        # How far bytes of an earlier try reach (a restart on an object that
        # could not be cut): those past the download's end must not stay.
        self._stale = 0

    def __repr__(self) -> str:
        return f"<FileObjectSink {self.dest} from {self.start}, {self.size} bytes written>"

    @contextlib.contextmanager
    def _failing(self, action: str) -> Iterator[None]:
        """Turn an error of the file object into a :class:`StorageError`."""
        try:
            yield
        except DlManagerError:
            raise
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise StorageError(
                f"cannot {action} {self.dest}: {reason}",
                errno=getattr(exc, "errno", None),
                url=self.url,
                dest=self.dest,
                received=self.size,
            ) from exc

    # -- writing ----------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        with self._failing("write to"):
            self._write_all(data)
        self.size += len(data)

    def pwrite(self, offset: int, data: bytes | memoryview) -> None:
        if not self.rewindable:
            if offset != self.size:
                raise StorageError(
                    f"cannot write at byte {offset} of {self.dest}: it is written in order",
                    url=self.url,
                    dest=self.dest,
                    received=self.size,
                )
            self.write(bytes(data))
            return
        with self._failing("write to"):
            self.fileobj.seek(self.start + offset)
            self._write_all(data)

    def _write_all(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            written = self.fileobj.write(view)
            if written is None:  # a buffered object's (or a duck's): all of it
                return
            view = view[written:]

    def check_space(self, total: int, held: int = 0) -> None:
        """Nothing to check: the object is the caller's (memory, a file it opened)."""

    def preallocate(self, total: int) -> None:
        """Nothing to reserve: the object is written in order."""

    def save_checkpoint(self, state: Checkpoint) -> None:
        """Nothing to record: a file object is never resumed by a later download."""

    def truncate(self) -> None:
        if not self.rewindable:
            if self.size:
                raise StorageError(
                    f"cannot start {self.dest} over: {self.size} bytes were written "
                    "to it already, and it cannot be rewound",
                    url=self.url,
                    dest=self.dest,
                    received=self.size,
                )
            return
        with self._failing("rewind"):
            self.fileobj.seek(self.start)
        if not self._cut():
            self._stale = max(self._stale, self.size)  # overwritten, and cut at the end
        self.size = 0

    def _cut(self) -> bool:
        """Cut the object at its position; whether it could be."""
        try:
            self.fileobj.truncate()
        except (OSError, ValueError, AttributeError):
            return False
        return True

    # -- checking ---------------------------------------------------------------------

    def digests(self, wanted: Iterable[Checksum]) -> dict[str, str]:
        """The digests of the bytes written in the algorithms of *wanted*, read
        back from the object.

        :raises StorageError: when it cannot be read back (not readable,
            not seekable)
        """
        if not self.rewindable or not _asks(self.fileobj, "readable", False):
            raise StorageError(
                f"cannot read {self.dest} back to check its checksum: it is not open for reading",
                url=self.url,
                dest=self.dest,
                received=self.size,
            )
        with self._failing("read back"):
            self.fileobj.seek(self.start)
            hasher = Hasher(wanted)
            for block in self._blocks():
                hasher.update(block)
            self.fileobj.seek(self.start + self.size)
        return hasher.hexdigests()

    def _blocks(self) -> Iterator[bytes]:
        """The bytes written, read back from the start position, block by block."""
        remaining = self.size
        while remaining:
            block = self.fileobj.read(min(remaining, _READ_BLOCK))
            if not block:
                raise OSError(f"it ends {remaining} bytes short of what was written")
            yield block
            remaining -= len(block)

    # -- the end ----------------------------------------------------------------------

    def publish(
        self, total: int | None = None, describe: Callable[[int], None] | None = None
    ) -> None:
        """Cut the object after the last byte written (where it can) and flush it.

        *describe* (the metadata of a file on disk) is not used.

        :raises StorageError: when it cannot be flushed, or when bytes written
            by an earlier try follow the download and cannot be cut off
        """
        with self._failing("complete"):
            if self.rewindable:
                self.fileobj.seek(self.start + self.size)
                if not self._cut() and self._stale > self.size:
                    raise OSError(
                        f"bytes {self.size} to {self._stale} of an earlier try follow the "
                        f"download (from byte {self.start}), and it cannot be truncated"
                    )
            self._flush()

    def _flush(self) -> None:
        flush = getattr(self.fileobj, "flush", None)
        if flush is not None:
            flush()

    def close(self) -> None:
        """Leave the bytes written where they are (the object stays open: it is the caller's)."""
        with contextlib.suppress(Exception):
            self._flush()
        self.left = self.size

    def discard(self) -> None:
        """Take the bytes written back: cut the object at :attr:`start` again.

        Where that cannot be done (a stream, an object that cannot be cut),
        they stay, flushed, and :attr:`left` tells how many.
        """
        self.left = self.size
        if self.rewindable:
            with contextlib.suppress(Exception):
                self.fileobj.seek(self.start)
                if self._cut():
                    self.left = 0
        with contextlib.suppress(Exception):
            self._flush()

    def explain(self, error: BaseException) -> None:
        """Add to a failed download's *error* what it left in the object, if anything."""
        if not self.left or not isinstance(error, DownloadError):
            return
        left, dest = self.left, self.dest
        if not self.rewindable:
            if isinstance(error, ChecksumError):
                error.message += f"; the {left} bytes that went out to {dest} do not match it"
            else:
                error.message += (
                    f"; {left} bytes had already gone out to {dest}, which cannot be "
                    "rewound: not retried"
                )
            return
        where = f"{dest} (from byte {self.start})"
        if isinstance(error, ChecksumError):
            error.message += f"; the {left} bytes that do not match stay in {where}"
        else:
            error.message += f"; {left} bytes had been written to {where}"
        error.message += ": it cannot be truncated"
