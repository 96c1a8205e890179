"""The files ``dlmanager demo`` serves: generated content, and the one fault each may carry.

A :class:`DemoFile` is ``size`` deterministic pseudo-random bytes derived from
its name, produced a block at a time, so that any range is cheap to serve
and to check; its :class:`Fault` is what :mod:`dlmanager.cli.demo_server`
injects the first time a GET reaches it.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["BLOCK_SIZE", "OFFSET_FAULTS", "DemoFile", "Fault"]

BLOCK_SIZE = 64 * 1024
"""Content is generated, and sent when not throttled, in blocks of this size."""


class Fault(enum.Enum):
    """A misbehaviour injected once per file: on the first GET whose body reaches it."""

    DROP = "drop"
    """Send the body up to byte ``at`` of the file, then close the connection."""
    STALL = "stall"
    """Send the body up to byte ``at``, send nothing for ``stall`` seconds, then close."""
    UNAVAILABLE = "unavailable"
    """Answer ``503 Service Unavailable`` with ``Retry-After: 1`` (the first GET of the file)."""
    SLOW = "slow"
    """Send the body from byte ``at`` on at ``slow_rate`` bytes per second."""


OFFSET_FAULTS = (Fault.DROP, Fault.STALL, Fault.SLOW)
"""The faults that start at an offset of the file (``DemoFile.at``)."""


@dataclass(frozen=True)
class DemoFile:
    """A generated file: ``size`` deterministic pseudo-random bytes derived from ``name``.

    :param name: the file name, served at ``/<name>`` (no ``/``)
    :param size: the size in bytes
    :param fault: the fault to inject, if any
    :param at: the file offset where a DROP, STALL or SLOW fault starts; the
        fault fires on the first GET whose body reaches this byte
    :param stall: how long a STALL sends nothing, in seconds
    :param slow_rate: the bytes per second of a SLOW fault
    :raises ValueError: for an invalid field
    """

    name: str
    size: int
    fault: Fault | None = None
    at: int = 0
    stall: float = 10.0
    slow_rate: int = 64 * 1024

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"invalid demo file name {self.name!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ValueError(f"size must be an integer >= 0, not {self.size!r}")
        if self.fault in OFFSET_FAULTS and not 0 <= self.at < self.size:
            raise ValueError(f"{self.name}: at={self.at!r} is not a byte of the file")
        if not self.stall > 0:
            raise ValueError(f"stall must be more than 0 seconds, not {self.stall!r}")
        if self.slow_rate < 1:
            raise ValueError(f"slow_rate must be at least 1, not {self.slow_rate!r}")

    @property
    def etag(self) -> str:
        """The strong ETag of the file (stable: the content depends on name and size only)."""
        return '"' + hashlib.sha256(f"{self.name}\0{self.size}".encode()).hexdigest()[:24] + '"'

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Yield the bytes from ``start`` to ``stop`` (default: the end), a block at a time."""
        stop = self.size if stop is None else min(stop, self.size)
        key = hashlib.sha256(self.name.encode()).digest()
        offset = max(0, start)
        while offset < stop:
            index, skip = divmod(offset, BLOCK_SIZE)
            block = hashlib.shake_256(key + index.to_bytes(8, "big")).digest(BLOCK_SIZE)
            piece = block[skip : skip + stop - offset]
            offset += len(piece)
            yield piece

    def read(self, start: int = 0, stop: int | None = None) -> bytes:
        """Return the bytes from ``start`` to ``stop`` (default: the end) at once."""
        return b"".join(self.chunks(start, stop))

    def sha256(self) -> str:
        """Compute the hex SHA-256 digest of the content."""
        digest = hashlib.sha256()
        for chunk in self.chunks():
            digest.update(chunk)
        return digest.hexdigest()
