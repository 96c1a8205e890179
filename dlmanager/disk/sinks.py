"""What a transfer writes into: the :class:`Sink` interface.

A transfer fills a :class:`Sink`: the :class:`~dlmanager.disk.partfile.PartFile`
of a download into a directory (a temporary file, published atomically). The
transfer code is written against :class:`Sink` alone and never asks which one
it fills: what differs (a checkpoint, a publish, the room on disk) is what
each sink does when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from dlmanager.checksum import Checksum
from dlmanager.disk.checkpoint import Checkpoint

__all__ = ["Sink"]


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
