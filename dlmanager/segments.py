"""Byte ranges of one file and the connections that fetch them (no I/O).

A :class:`Plan` splits the ranges still missing from a file into
:class:`Segment` objects, one per connection. When a connection finishes its
segment while others still have much left, :meth:`Plan.steal` splits the
largest remaining segment in two and hands the second half over, as aria2
does, so a slow connection never holds the whole file back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

__all__ = ["Plan", "Segment", "merge_ranges"]

Range = tuple[int, int]


class Segment:
    """Bytes ``[start, end)`` of the file, written up to ``pos``.

    ``end`` shrinks when the segment is split; only :class:`Plan` changes
    ``end`` and ``pos``, under its lock.
    """

    __slots__ = ("end", "pos", "start")

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        self.pos = start

    def __repr__(self) -> str:
        return f"Segment({self.start}, {self.end}, pos={self.pos})"

    @property
    def remaining(self) -> int:
        return self.end - self.pos


def merge_ranges(ranges: Iterable[Range]) -> list[Range]:
    """Sort *ranges* and merge the ones that touch or overlap; drop empty ones."""
    merged: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


class Plan:
    """Who fetches which bytes of a file of *total* bytes; thread-safe.

    :param total: the size of the file
    :param done: ranges already in the file (from a checkpoint)
    :param min_steal: a segment is split only if both halves get at least
        this many bytes; it also keeps the split point at least that far
        from the bytes a connection may be writing
    """

    def __init__(self, total: int, done: Sequence[Range] = (), *, min_steal: int) -> None:
        if total < 0:
            raise ValueError(f"total must be >= 0, not {total}")
        self.total = total
        self.min_steal = max(1, min_steal)
        self._lock = threading.Lock()
        self._done = [r for r in merge_ranges(done) if r[0] >= 0 and r[1] <= total]
        self._segments: list[Segment] = []

    def gaps(self) -> list[Range]:
        """The ranges neither done nor assigned to a segment."""
        with self._lock:
            return self._gaps()

    def _gaps(self) -> list[Range]:
        taken = merge_ranges([*self._done, *((s.start, s.end) for s in self._segments)])
        gaps, cursor = [], 0
        for start, end in taken:
            if start > cursor:
                gaps.append((cursor, start))
            cursor = max(cursor, end)
        if cursor < self.total:
            gaps.append((cursor, self.total))
        return gaps

    def assign(self, connections: int, min_split: int) -> list[Segment]:
        """Cut the missing bytes into at most *connections* segments.

        Each gap gets segments of at least *min_split* bytes (a smaller gap
        gets one segment); the largest gaps are split first.
        """
        with self._lock:
            gaps = sorted(self._gaps(), key=lambda g: g[0])
            pieces = dict.fromkeys(gaps, 1)
            spare = max(0, connections - len(gaps))
            while spare:
                gap = max(gaps, key=lambda g: (g[1] - g[0]) / (pieces[g] + 1), default=None)
                if gap is None or (gap[1] - gap[0]) // (pieces[gap] + 1) < min_split:
                    break
                pieces[gap] += 1
                spare -= 1
            segments = []
            for start, end in gaps:
                count = pieces[(start, end)]
                size = (end - start) // count
                bounds = [start + i * size for i in range(count)] + [end]
                segments += [Segment(a, b) for a, b in zip(bounds, bounds[1:])]
            self._segments += segments
            return segments

    def advance(self, segment: Segment, size: int) -> int:
        """Record *size* bytes written at ``segment.pos``; return how many count.

        Never more than the segment still covers, as it may have been split.
        """
        with self._lock:
            counted = max(0, min(size, segment.end - segment.pos))
            segment.pos += counted
            return counted

    def limit(self, segment: Segment, size: int) -> int:
        """How many of *size* bytes at ``segment.pos`` belong to *segment*."""
        with self._lock:
            return max(0, min(size, segment.end - segment.pos))

    def steal(self) -> Segment | None:
        """Split the segment with the most bytes left; return its new second half.

        :return: None when no segment has enough left to be worth splitting
        """
        with self._lock:
            live = [s for s in self._segments if s.remaining > 0]
            victim = max(live, key=lambda s: s.remaining, default=None)
            if victim is None or victim.remaining < 2 * self.min_steal:
                return None
            middle = victim.pos + victim.remaining // 2
            new = Segment(middle, victim.end)
            victim.end = middle
            self._segments.append(new)
            return new

    def written(self) -> list[Range]:
        """The ranges written so far, merged."""
        with self._lock:
            return merge_ranges([*self._done, *((s.start, s.pos) for s in self._segments)])

    def received(self) -> int:
        """How many bytes of the file are written."""
        return sum(end - start for start, end in self.written())

    def complete(self) -> bool:
        return self.written() == ([(0, self.total)] if self.total else [])
