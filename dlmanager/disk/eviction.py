"""The eviction decision: whether a directory's index is over its limits, and which file goes next.

Pure functions of plain values: nothing here reads, stats or removes a file, takes a
lock or logs. :class:`~dlmanager.PersistLimit` calls them under its index lock and
does the I/O around them (asking ``protect``, :func:`os.remove`, logging).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Mapping
from typing import Protocol

__all__ = [
    "Candidate",
    "Rule",
    "Versioned",
    "check_limits",
    "check_non_negative",
    "describe",
    "next_victim",
    "over_limits",
    "rules_on",
]

#: A file in the eviction queue: (last use, version, path). Tuples order the queue:
#: the least recently used first and, of files last used at the same instant, the
#: one registered (or used) first, since every registration takes a new version.
Candidate = tuple[float, int, str]


class Rule(enum.Enum):
    """The rule a file is evicted by."""

    #: More than *max_files* files are registered.
    COUNT = "max_files"
    #: More than *file_limit* files, and their size plus the reservations reach *size_limit*.
    SIZE = "size_limit"


def check_limits(size_limit: int, file_limit: int, max_files: int | None) -> None:
    """Check the limits of a :class:`~dlmanager.PersistLimit`.

    :raises ValueError: for a negative or non-integer *size_limit* or *file_limit*,
        or a *max_files* that is neither None nor an integer >= 1
    """
    check_non_negative("size_limit", size_limit)
    check_non_negative("file_limit", file_limit)
    if max_files is not None and (
        not isinstance(max_files, int) or isinstance(max_files, bool) or max_files < 1
    ):
        raise ValueError(f"max_files must be an integer >= 1 or None, not {max_files!r}")


def check_non_negative(name: str, value: object) -> int:
    """*value*, an integer >= 0 (bytes or files), else :exc:`ValueError` names it *name*."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, not {value!r}")
    return value


def rules_on(size_limit: int, file_limit: int, max_files: int | None) -> bool:
    """Whether a rule is on, so that a file may have to go: the size rule
    (*size_limit* and *file_limit* above 0) or the count rule (*max_files* set)."""
    return (size_limit > 0 and file_limit > 0) or max_files is not None


def over_limits(
    *,
    files: int,
    total: int,
    reserved: int,
    held: int,
    size_limit: int,
    file_limit: int,
    max_files: int | None,
) -> Rule | None:
    """The rule by which the next least recently used file goes, or None when none does.

    :param files: the registered files, protected ones included
    :param total: their size in bytes
    :param reserved: bytes reserved for downloads in flight
    :param held: protected files met before the candidate, so older than it
    :param size_limit: the size rule's cap (0: the rule is off)
    :param file_limit: the size rule's floor: it never removes the *file_limit*
        most recently used files (0: the rule is off)
    :param max_files: the count rule's ceiling, or None

    The count rule comes first; protected files count toward it (they are kept,
    and others go in their place), reservations do not. The size rule counts the
    reservations, and lets the candidate go only if *file_limit* files other than
    the *held* ones remain: a protected file is kept in addition to the
    *file_limit* most recent ones, not in place of one.
    """
    if max_files is not None and files > max_files:
        return Rule.COUNT
    if (
        size_limit > 0
        and file_limit > 0
        and files - held > file_limit
        and total + reserved >= size_limit
    ):
        return Rule.SIZE
    return None


def describe(
    rule: Rule, *, files: int, total: int, reserved: int, size_limit: int, max_files: int | None
) -> str:
    """Why a file goes by *rule* (the arguments are those of :func:`over_limits`), for the log."""
    if rule is Rule.COUNT:
        return f"{files} files, more than max_files={max_files}"
    return f"{total} bytes + {reserved} reserved, at least size_limit={size_limit}"


class Versioned(Protocol):
    """An index entry: its version changes whenever its file is registered or used again."""

    @property
    def version(self) -> int: ...


def next_victim(queue: list[Candidate], entries: Mapping[str, Versioned]) -> Candidate | None:
    """Pop the least recently used candidate of *queue* (a heap) that is still current.

    A candidate is current when its path is in *entries* with the candidate's version.
    Stale ones (their file used or registered again since, with a newer candidate of
    its own in the queue, or dropped) are popped and forgotten. Costs O(log n) per
    candidate popped.

    :return: the candidate, or None when the queue has none left
    """
    while queue:
        candidate = heapq.heappop(queue)
        entry = entries.get(candidate[2])
        if entry is not None and entry.version == candidate[1]:
            return candidate
    return None
