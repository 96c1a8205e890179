"""The index a PersistLimit counts: registered files in least-recently-used order, and reservations.

In memory only: nothing here stats, reads or removes a file, takes a lock or logs.
:class:`~dlmanager.PersistLimit` stats the files, holds its lock around every call,
and removes the files the eviction queue gives while :meth:`Index.over` (the rules
of :mod:`dlmanager.disk.eviction` applied to what the index holds) says so.
Registering a file costs O(log n); taking *k* candidates out of *n* files costs
O(k log n).
"""

from __future__ import annotations

import heapq
import os
from typing import NamedTuple

from dlmanager.disk.eviction import Candidate, Rule, describe, next_victim, over_limits

__all__ = ["Entry", "File", "Index"]


class File(NamedTuple):
    """A registered file (the shape dlmanager 0.1.1 used)."""

    path: str
    stat: os.stat_result


class Entry(NamedTuple):
    """A file in the index: its last use is its access time when it was registered."""

    file: File
    last_use: float
    #: New at every registration that changed something: a queued candidate with
    #: an older version is stale.
    version: int


class Index:
    """The registered files by path, their total size, an eviction queue and the reservations.

    The queue is a heap of :data:`~dlmanager.disk.eviction.Candidate`: a file
    registered again gets a new candidate, and its old one is skipped when it
    comes up. Candidates taken out for files that must be kept (protected) are
    counted as :attr:`held` until they are :meth:`requeued <requeue>`.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._queue: list[Candidate] = []
        self._version = 0
        #: The total size of the registered files, in bytes.
        self.total = 0
        self._reservations: dict[str, int] = {}
        #: The bytes of the reservations (see :meth:`reserve`).
        self.reserved = 0
        #: Candidates of protected files out of the queue (see :meth:`hold`).
        self.held = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, path: str) -> bool:
        return path in self._entries

    def files(self) -> list[File]:
        """The registered files, least recently used first."""
        entries = sorted(self._entries.values(), key=lambda e: (e.last_use, e.version))
        return [entry.file for entry in entries]

    # -- registration ------------------------------------------------------------------------

    def put(self, path: str, fstat: os.stat_result) -> None:
        """Register *path* with *fstat*; its last use is the access time.

        A reservation keyed by *path* ends: its bytes are now counted as the file.
        A file registered again unchanged keeps its place.
        """
        if self._reservations:
            self.reserved -= self._reservations.pop(path, 0)
        old = self._entries.get(path)
        if old is not None:
            if _same(old.file.stat, fstat):
                return  # nothing changed: keep its place (and its candidate)
            self.total -= old.file.stat.st_size
        self._version += 1
        last_use = fstat.st_atime
        self._entries[path] = Entry(File(path, fstat), last_use, self._version)
        self.total += fstat.st_size
        heapq.heappush(self._queue, (last_use, self._version, path))
        if len(self._queue) > 2 * len(self._entries) + 64:
            self._rebuild_queue()

    def put_many(self, found: list[tuple[str, os.stat_result]]) -> None:
        """:meth:`put` each of *found*, then rebuild the queue once.

        The hot loop of a scan: one dict update and two tuples per file.
        """
        entries, reservations = self._entries, self._reservations
        new = tuple.__new__
        version, total = self._version, self.total
        for path, fstat in found:
            if reservations:
                self.reserved -= reservations.pop(path, 0)
            old = entries.get(path)
            if old is not None:
                if _same(old.file.stat, fstat):
                    continue
                total -= old.file.stat.st_size
            version += 1
            entries[path] = new(Entry, (new(File, (path, fstat)), fstat.st_atime, version))
            total += fstat.st_size
        self._version, self.total = version, total
        self._rebuild_queue()

    def replace_directory(self, directory: str, found: list[tuple[str, os.stat_result]]) -> None:
        """Make the entries of the files directly in *directory* those of *found*.

        Entries of files no longer found are dropped, the others :meth:`put`;
        entries of other directories are kept.
        """
        prefix = os.path.join(directory, "")
        fresh = {path for path, _ in found}
        stale = [
            path
            for path in self._entries
            if path.startswith(prefix) and os.sep not in path[len(prefix) :] and path not in fresh
        ]
        for path in stale:
            self.drop(path)
        self.put_many(found)

    def drop(self, path: str) -> Entry | None:
        """Forget *path* (its candidate goes stale).

        :return: its entry, or None when it was not registered
        """
        entry = self._entries.pop(path, None)
        if entry is not None:
            self.total -= entry.file.stat.st_size
        return entry

    def _rebuild_queue(self) -> None:
        self._queue = [(e.last_use, e.version, p) for p, e in self._entries.items()]
        heapq.heapify(self._queue)

    # -- reservations ------------------------------------------------------------------------

    def reserve(self, key: str, nbytes: int) -> None:
        """Count *nbytes* under *key* until :meth:`release` (or a :meth:`put` of that path)."""
        self.reserved += nbytes - self._reservations.get(key, 0)
        self._reservations[key] = nbytes

    def release(self, key: str) -> None:
        """End the reservation of *key*; nothing happens for an unknown key."""
        self.reserved -= self._reservations.pop(key, 0)

    # -- the eviction queue --------------------------------------------------------------------

    def pop(self) -> Candidate | None:
        """Take the least recently used current candidate out of the queue (None: empty)."""
        return next_victim(self._queue, self._entries)

    def current(self, candidate: Candidate) -> Entry | None:
        """The entry of *candidate*'s file if the candidate is still current, else None."""
        entry = self._entries.get(candidate[2])
        return entry if entry is not None and entry.version == candidate[1] else None

    def over(
        self, in_flight: int, size_limit: int, file_limit: int, max_files: int | None
    ) -> Rule | None:
        """The rule by which the next candidate goes now (see
        :func:`~dlmanager.disk.eviction.over_limits`), with *in_flight* more bytes
        reserved, or None."""
        return over_limits(
            files=len(self._entries),
            total=self.total,
            reserved=self.reserved + in_flight,
            held=self.held,
            size_limit=size_limit,
            file_limit=file_limit,
            max_files=max_files,
        )

    def why(self, rule: Rule, in_flight: int, size_limit: int, max_files: int | None) -> str:
        """Why a file goes by *rule* now, for the log (see :meth:`over`)."""
        return describe(
            rule,
            files=len(self._entries),
            total=self.total,
            reserved=self.reserved + in_flight,
            size_limit=size_limit,
            max_files=max_files,
        )

    def hold(self) -> None:
        """Count one more candidate taken out and kept (a protected file)."""
        self.held += 1

    def requeue(self, candidates: list[Candidate], *, held: bool = False) -> None:
        """Put *candidates* taken out back in the queue, those still current.

        :param held: whether they were counted by :meth:`hold`
        """
        if held:
            self.held -= len(candidates)
        for candidate in candidates:
            if self.current(candidate) is not None:
                heapq.heappush(self._queue, candidate)


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (
        a.st_ino == b.st_ino
        and a.st_dev == b.st_dev
        and a.st_size == b.st_size
        and a.st_atime_ns == b.st_atime_ns
        and a.st_mtime_ns == b.st_mtime_ns
    )
