"""How downloads transfer: validated option objects, built once and shared."""

from __future__ import annotations

import dataclasses
from typing import Union

from dlmanager.checksum import Checksum, parse_checksum
from dlmanager.retry import RetryLike, RetryPolicy

__all__ = [
    "COMPAT_CHUNK_SIZE",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_CONNECTIONS",
    "DEFAULT_MIN_SPLIT_SIZE",
    "TimeoutLike",
    "Timeouts",
    "TransferOptions",
]

#: Read size used when the caller gives no ``chunk_size`` (measured with
#: ``python benchmarks/chunk_size.py``; see docs/performance.rst).
DEFAULT_CHUNK_SIZE = 256 * 1024
#: The chunk size dlmanager 0.1.1 asked ``iter_content`` for. A response that
#: is not read through urllib3 (from a test double or another session written
#: for 0.1.1) is still read with it when the caller gives no ``chunk_size``,
#: so that such sessions see the calls they were written for.
COMPAT_CHUNK_SIZE = 16 * 1024
#: Connections per file when the caller gives no ``connections`` (measured with
#: ``python benchmarks/compare.py``; see docs/performance.rst).
DEFAULT_CONNECTIONS = 4
#: A file (or the rest of one) smaller than this is fetched over one connection.
DEFAULT_MIN_SPLIT_SIZE = 4 * 1024 * 1024


def _check_seconds(name: str, value: float | None) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"timeout {name} must be a number of seconds > 0 or None, not {value!r}")


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """How long a download waits before giving up on an attempt.

    Each field is a number of seconds, or None to wait forever.

    :param connect: to establish a connection
    :param read: for the server to send anything (headers or body bytes)
    :param stall: the stall guard's window: an attempt that receives less
        than ``min_speed * stall`` bytes within any ``stall`` seconds is ended
        and retried, even when a trickle of bytes keeps every read alive
    :param min_speed: the lowest speed, in bytes per second, that counts as
        progress for the stall guard
    """

    connect: float | None = 10.0
    read: float | None = 30.0
    stall: float | None = 30.0
    min_speed: int = 1024

    def __post_init__(self) -> None:
        for field in ("connect", "read", "stall"):
            _check_seconds(field, getattr(self, field))
        if (
            not isinstance(self.min_speed, int)
            or isinstance(self.min_speed, bool)
            or self.min_speed < 0
        ):
            raise ValueError(f"timeout min_speed must be an integer >= 0, not {self.min_speed!r}")

    @classmethod
    def from_value(cls, value: TimeoutLike) -> Timeouts:
        """Build timeouts from what the ``timeout=`` keyword accepts.

        ``None`` gives the defaults; a number sets ``connect``, ``read`` and
        ``stall`` to it; a :class:`Timeouts` is kept as is.

        :raises ValueError: for anything else
        """
        if value is None:
            return cls()
        if isinstance(value, Timeouts):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            _check_seconds("", value)
            return cls(connect=value, read=value, stall=value)
        raise ValueError(f"timeout must be Timeouts, a number of seconds or None, not {value!r}")

    @property
    def requests_timeout(self) -> tuple[float | None, float | None]:
        """The ``(connect, read)`` pair handed to ``session.get(timeout=...)``."""
        return (self.connect, self.read)


TimeoutLike = Union[Timeouts, float, None]


def _check_count(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class TransferOptions:
    """How a download transfers: validated once, then shared.

    A :class:`~dlmanager.DownloadManager` builds one from its keywords and
    hands it to each of its downloads (with the download's own *checksum*);
    a :class:`~dlmanager.Download` builds one from its own keywords. Each
    field has the meaning of the keyword of the same name.

    :raises ValueError: for an invalid value
    """

    #: The largest chunk read, or None for :data:`DEFAULT_CHUNK_SIZE` (see
    #: :data:`COMPAT_CHUNK_SIZE` for responses not read through urllib3).
    chunk_size: int | None = None
    timeouts: Timeouts = dataclasses.field(default_factory=Timeouts)
    retry: RetryPolicy = dataclasses.field(default_factory=RetryPolicy)
    connections: int = DEFAULT_CONNECTIONS
    min_split_size: int = DEFAULT_MIN_SPLIT_SIZE
    #: The largest file accepted, in bytes, or None.
    max_size: int | None = None
    #: What the file must match, or None.
    checksum: Checksum | None = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None:
            _check_count("chunk_size", self.chunk_size)
        _check_count("connections", self.connections)
        _check_count("min_split_size", self.min_split_size)
        if self.max_size is not None:
            _check_count("max_size", self.max_size)

    @classmethod
    def build(
        cls,
        *,
        chunk_size: int | None = None,
        timeout: TimeoutLike = None,
        retry: RetryLike = None,
        connections: int = DEFAULT_CONNECTIONS,
        min_split_size: int = DEFAULT_MIN_SPLIT_SIZE,
        max_size: int | None = None,
        checksum: Checksum | str | None = None,
    ) -> TransferOptions:
        """The options the keywords of :class:`~dlmanager.Download` and
        :class:`~dlmanager.DownloadManager` describe (*timeout*, *retry* and
        *checksum* in any form they accept).

        :raises ValueError: for an invalid value
        """
        return cls(
            chunk_size=chunk_size,
            timeouts=Timeouts.from_value(timeout),
            retry=RetryPolicy.from_value(retry),
            connections=connections,
            min_split_size=min_split_size,
            max_size=max_size,
            checksum=parse_checksum(checksum),
        )

    @property
    def read_size(self) -> int:
        """The size of each read of a body read through urllib3."""
        return self.chunk_size or DEFAULT_CHUNK_SIZE

    @property
    def content_chunk_size(self) -> int:
        """What ``iter_content`` is asked for (a response not read through urllib3)."""
        return self.chunk_size or COMPAT_CHUNK_SIZE
