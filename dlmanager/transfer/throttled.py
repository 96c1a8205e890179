"""A body's chunks written under a rate limit: the pieces, the naps, the read size."""

from __future__ import annotations

from collections.abc import Callable

from dlmanager.errors import DownloadInterrupt
from dlmanager.rate import Nap, Pauses, Throttle
from dlmanager.transport.attempt import Attempt

__all__ = ["throttled"]


def throttled(
    write: Callable[[bytes], bool],
    throttle: Throttle,
    attempt: Attempt,
    nap: Nap,
    stopped: Callable[[], bool],
    pauses: Pauses,
) -> Callable[[bytes], bool]:
    """*write*, taking the tokens of each piece from *throttle* before writing it.

    While a rate is set, each chunk is cut into pieces of about a tenth of a
    second's worth, and *attempt* reads pieces that small (so a low rate
    reads the server steadily rather than in bursts of a whole chunk); once
    no rate is set, it reads its own chunk size again. The rate is looked at
    before every piece, so a change takes effect within one piece.

    :param nap: sleeps up to the seconds given; True when a cancel woke it
    :param stopped: whether the reader must stop (looked at after each nap)
    :param pauses: counts the time asleep (for the stall guard)
    :raises DownloadInterrupt: when woken by a cancel, or stopped, while asleep
    """
    largest = attempt.chunk_size

    def write_pieces(chunk: bytes) -> bool:
        if not throttle.limited:
            attempt.chunk_size = largest
            return write(chunk)
        size = throttle.piece_size(len(chunk))
        for start in range(0, len(chunk), size):
            piece = chunk[start : start + size] if size < len(chunk) else chunk
            if not throttle.acquire(len(piece), nap, stopped, pauses):
                raise DownloadInterrupt()
            if not write(piece):
                return False
        attempt.chunk_size = throttle.piece_size(largest)
        return True

    if throttle.limited:
        attempt.chunk_size = throttle.piece_size(largest)
    return write_pieces
