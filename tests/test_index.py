"""dlmanager.disk.index: PersistLimit's index in memory, with made-up file statuses (no file)."""

from __future__ import annotations

import os
import stat

from dlmanager.disk.eviction import Candidate, Rule
from dlmanager.disk.index import File, Index

DIR = os.path.join(os.sep, "cache")


def status(size: int, atime: float, ino: int = 1) -> os.stat_result:
    """The status of a regular file of *size* bytes last used at *atime*."""
    mode, ns = stat.S_IFREG | 0o644, int(atime * 1e9)
    return os.stat_result(
        (mode, ino, 1, 1, 0, 0, size, int(atime), 0, 0, atime, 0.0, 0.0, ns, 0, 0)
    )


def path(name: str, directory: str = DIR) -> str:
    return os.path.join(directory, name)


def names(index: Index) -> list[str]:
    return [os.path.basename(file.path) for file in index.files()]


def taken(index: Index) -> list[str]:
    """Take every candidate out of the queue, least recently used first."""
    order = []
    while (candidate := index.pop()) is not None:
        order.append(os.path.basename(candidate[2]))
    return order


def test_put_counts_a_file_once() -> None:
    index = Index()
    index.put(path("a"), status(100, 10.0))
    index.put(path("b"), status(50, 5.0, ino=2))
    index.put(path("a"), status(100, 10.0))  # again, unchanged
    assert len(index) == 2
    assert index.total == 150
    assert names(index) == ["b", "a"]
    assert index.files()[0] == File(path("b"), status(50, 5.0, ino=2))
    assert path("a") in index


def test_put_again_refreshes_size_and_last_use() -> None:
    index = Index()
    index.put(path("a"), status(100, 10.0))
    index.put(path("b"), status(100, 20.0, ino=2))
    index.put(path("a"), status(30, 30.0))  # used (and rewritten) since
    assert index.total == 130
    assert names(index) == ["b", "a"]
    assert taken(index) == ["b", "a"]  # the stale candidate of "a" is skipped


def test_unchanged_registration_keeps_the_place() -> None:
    index = Index()
    index.put(path("a"), status(1, 10.0))
    index.put(path("b"), status(1, 10.0, ino=2))
    index.put(path("a"), status(1, 10.0))
    assert taken(index) == ["a", "b"]  # same last use: registered first goes first


def test_put_many_is_put_of_each() -> None:
    one, many = Index(), Index()
    found = [(path(f"f{i}"), status(i, float(100 - i), ino=i)) for i in range(10)]
    for name, fstat in found:
        one.put(name, fstat)
    many.put_many(found)
    many.put_many(found[:3])  # again: unchanged
    assert many.files() == one.files()
    assert many.total == one.total == 45
    assert taken(many) == taken(one)


def test_drop() -> None:
    index = Index()
    index.put(path("a"), status(100, 10.0))
    entry = index.drop(path("a"))
    assert entry is not None and entry.file.path == path("a")
    assert index.drop(path("a")) is None
    assert index.total == 0
    assert taken(index) == []


def test_replace_directory_touches_only_that_directory() -> None:
    index = Index()
    other = os.path.join(os.sep, "elsewhere")
    index.put(path("gone"), status(1, 1.0, ino=1))
    index.put(path("kept"), status(2, 2.0, ino=2))
    index.put(path("x", os.path.join(DIR, "sub")), status(4, 3.0, ino=3))
    index.put(path("y", other), status(8, 4.0, ino=4))
    index.replace_directory(
        DIR, [(path("kept"), status(2, 2.0, ino=2)), (path("new"), status(16, 5.0, ino=5))]
    )
    assert sorted(names(index)) == ["kept", "new", "x", "y"]
    assert index.total == 30


def test_a_reservation_ends_when_its_path_is_registered() -> None:
    index = Index()
    index.reserve(path("a"), 300)
    index.reserve("other", 10)
    index.reserve("other", 20)  # replaces
    assert index.reserved == 320
    index.put(path("a"), status(300, 1.0))
    assert index.reserved == 20
    index.release("other")
    index.release("unknown")
    assert index.reserved == 0


def test_put_many_ends_reservations_too() -> None:
    index = Index()
    index.reserve(path("a"), 300)
    index.put_many([(path("a"), status(300, 1.0))])
    assert index.reserved == 0
    assert index.total == 300


def test_held_candidates_go_back_when_still_current() -> None:
    index = Index()
    for i, name in enumerate("abc"):
        index.put(path(name), status(1, float(i), ino=i))
    a = index.pop()
    b = index.pop()
    assert a is not None and b is not None
    index.hold()
    index.hold()
    assert index.held == 2
    index.put(path("b"), status(1, 10.0, ino=1))  # used meanwhile: a new candidate
    assert index.current(a) is not None
    assert index.current(b) is None
    held: list[Candidate] = [a, b]
    index.requeue(held, held=True)
    assert index.held == 0
    assert taken(index) == ["a", "c", "b"]


def test_the_queue_stays_small_under_many_uses() -> None:
    index = Index()
    index.put(path("a"), status(1, 0.0, ino=1))
    index.put(path("b"), status(1, 0.5, ino=2))
    for i in range(1, 1000):
        index.put(path("a"), status(1, float(i), ino=1))
    assert taken(index) == ["b", "a"]


def test_over_applies_the_rules_to_what_the_index_holds() -> None:
    index = Index()
    for i in range(3):
        index.put(path(f"f{i}"), status(100, float(i), ino=i))
    assert index.over(0, 300, 1, None) is Rule.SIZE
    assert index.over(0, 301, 1, None) is None
    assert index.over(1, 301, 1, None) is Rule.SIZE  # bytes in flight count
    index.reserve("dl", 1)
    assert index.over(0, 301, 1, None) is Rule.SIZE  # and so do reservations
    assert index.over(0, 0, 5, 2) is Rule.COUNT
    index.hold()
    index.hold()
    assert index.over(0, 1, 1, None) is None  # two held: the newest is the one kept
    assert index.why(Rule.SIZE, 9, 301, None) == "300 bytes + 10 reserved, at least size_limit=301"
    assert index.why(Rule.COUNT, 0, 0, 2) == "3 files, more than max_files=2"
