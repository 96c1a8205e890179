"""dlmanager.disk.eviction: the eviction decision on plain values, with no file, lock or thread."""

from __future__ import annotations

import heapq
from typing import NamedTuple

import pytest

from dlmanager.disk.eviction import (
    Candidate,
    Rule,
    check_limits,
    check_non_negative,
    describe,
    next_victim,
    over_limits,
    rules_on,
)

GB = 10**9


def over(
    files: int,
    total: int = 0,
    *,
    reserved: int = 0,
    held: int = 0,
    size_limit: int = 0,
    file_limit: int = 5,
    max_files: int | None = None,
) -> Rule | None:
    """:func:`over_limits` with PersistLimit's defaults (file_limit=5, no max_files)."""
    return over_limits(
        files=files,
        total=total,
        reserved=reserved,
        held=held,
        size_limit=size_limit,
        file_limit=file_limit,
        max_files=max_files,
    )


# -- the size rule ---------------------------------------------------------------------------


def test_the_size_rule_evicts_while_the_total_reaches_the_limit() -> None:
    assert over(10, 999, size_limit=1000) is None
    assert over(10, 1000, size_limit=1000) is Rule.SIZE  # "at least": equal is over
    assert over(10, 5000, size_limit=1000) is Rule.SIZE


@pytest.mark.parametrize(("size_limit", "file_limit"), [(0, 5), (1000, 0), (0, 0)])
def test_a_zero_size_limit_or_file_limit_turns_the_size_rule_off(
    size_limit: int, file_limit: int
) -> None:
    assert over(100, 10**12, size_limit=size_limit, file_limit=file_limit) is None
    assert not rules_on(size_limit, file_limit, None)


def test_file_limit_is_a_floor_of_the_size_rule() -> None:
    # The file_limit most recently used files stay, even when they alone exceed the cap.
    assert over(6, 10 * GB, size_limit=1, file_limit=5) is Rule.SIZE
    assert over(5, 10 * GB, size_limit=1, file_limit=5) is None
    assert over(2, 10 * GB, size_limit=1, file_limit=1) is Rule.SIZE
    assert over(1, 10 * GB, size_limit=1, file_limit=1) is None


# -- the count rule --------------------------------------------------------------------------


def test_max_files_is_a_ceiling_whatever_the_size() -> None:
    assert over(4, 4, max_files=3) is Rule.COUNT
    assert over(3, 4, max_files=3) is None
    assert over(3, 4, max_files=3, size_limit=10**12) is None
    assert rules_on(0, 5, 3)


def test_file_limit_does_not_hold_files_back_from_max_files() -> None:
    # PersistLimit(10 GB, max_files=3): at most three files, although file_limit is 5.
    assert over(4, 1, size_limit=10 * GB, file_limit=5, max_files=3) is Rule.COUNT
    assert over(3, 1, size_limit=10 * GB, file_limit=5, max_files=3) is None


def test_the_count_rule_comes_first() -> None:
    assert over(8, 10 * GB, size_limit=1, file_limit=1, max_files=3) is Rule.COUNT
    # Under max_files, the size rule still applies.
    assert over(3, 10 * GB, size_limit=1, file_limit=1, max_files=3) is Rule.SIZE


# -- reservations ----------------------------------------------------------------------------


def test_reservations_count_toward_the_size_rule() -> None:
    assert over(10, 600, size_limit=1000) is None
    assert over(10, 600, reserved=400, size_limit=1000) is Rule.SIZE
    assert over(10, 600, reserved=399, size_limit=1000) is None


def test_reservations_do_not_count_toward_max_files() -> None:
    assert over(3, 0, reserved=10**12, max_files=3) is None
    # Nor do they lift the size rule's floor.
    assert over(5, 0, reserved=10**12, size_limit=1, file_limit=5) is None


# -- protected files -------------------------------------------------------------------------


def test_protected_files_count_toward_the_total_and_the_count() -> None:
    # Two of four files are protected (held): they still make the others go.
    assert over(4, 400, held=2, size_limit=100, file_limit=1) is Rule.SIZE
    assert over(4, 400, held=2, max_files=3) is Rule.COUNT


def test_a_protected_file_does_not_take_the_place_of_a_recent_one() -> None:
    # old (protected, held), new, newer; file_limit=1: new goes, newer stays...
    assert over(3, 300, held=1, size_limit=150, file_limit=1) is Rule.SIZE
    # ...and once new went, newer is the one file_limit keeps: old does not count as it.
    assert over(2, 200, held=1, size_limit=150, file_limit=1) is None
    # Without the protection, old would go and newer would still be kept.
    assert over(2, 200, held=0, size_limit=150, file_limit=1) is Rule.SIZE


def test_a_protected_file_is_kept_in_addition_to_max_files_only_by_count() -> None:
    # The count rule is a ceiling: protected files count, so others go in their place.
    assert over(3, 3, held=2, max_files=2) is Rule.COUNT
    assert over(2, 2, held=2, max_files=2) is None


# -- the log ---------------------------------------------------------------------------------


def test_describe_says_which_limit() -> None:
    values = {"files": 5, "total": 700, "reserved": 300, "size_limit": 1000, "max_files": 3}
    assert describe(Rule.COUNT, **values) == "5 files, more than max_files=3"
    assert describe(Rule.SIZE, **values) == "700 bytes + 300 reserved, at least size_limit=1000"


# -- which candidate goes --------------------------------------------------------------------


class Entry(NamedTuple):
    version: int


def queue_of(*candidates: Candidate) -> list[Candidate]:
    queue = list(candidates)
    heapq.heapify(queue)
    return queue


def drain(queue: list[Candidate], entries: dict[str, Entry]) -> list[str]:
    order = []
    while (candidate := next_victim(queue, entries)) is not None:
        order.append(candidate[2])
    return order


def test_the_least_recently_used_goes_first() -> None:
    queue = queue_of((30.0, 1, "c"), (10.0, 2, "a"), (20.0, 3, "b"))
    entries = {"a": Entry(2), "b": Entry(3), "c": Entry(1)}
    assert drain(queue, entries) == ["a", "b", "c"]
    assert queue == []


def test_ties_of_last_use_go_by_version() -> None:
    # Used at the same instant: the one registered (or used) first goes first,
    # whatever the names.
    queue = queue_of((10.0, 7, "a"), (10.0, 3, "z"), (10.0, 5, "m"))
    entries = {"a": Entry(7), "z": Entry(3), "m": Entry(5)}
    assert drain(queue, entries) == ["z", "m", "a"]


def test_a_file_used_again_goes_by_its_newest_candidate() -> None:
    # "a" was used at 10.0 (version 1), then again at 40.0 (version 4): only the
    # newest candidate is current.
    queue = queue_of((10.0, 1, "a"), (20.0, 2, "b"), (30.0, 3, "c"), (40.0, 4, "a"))
    entries = {"a": Entry(4), "b": Entry(2), "c": Entry(3)}
    assert drain(queue, entries) == ["b", "c", "a"]


def test_a_file_no_longer_registered_is_skipped() -> None:
    queue = queue_of((10.0, 1, "gone"), (20.0, 2, "b"))
    assert next_victim(queue, {"b": Entry(2)}) == (20.0, 2, "b")
    assert next_victim(queue, {"b": Entry(2)}) is None


def test_only_the_candidates_taken_are_popped() -> None:
    # O(k log n): taking one candidate leaves the others queued.
    queue = queue_of(*[(float(i), i, f"f{i}") for i in range(100)])
    entries = {f"f{i}": Entry(i) for i in range(100)}
    assert next_victim(queue, entries) == (0.0, 0, "f0")
    assert len(queue) == 99


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_limit", "file_limit", "max_files", "message"),
    [
        (-1, 5, None, "size_limit must be an integer >= 0, not -1"),
        (1.5, 5, None, "size_limit must be an integer >= 0, not 1.5"),
        (10, True, None, "file_limit must be an integer >= 0, not True"),
        (10, 5, 0, "max_files must be an integer >= 1 or None, not 0"),
        (10, 5, "3", "max_files must be an integer >= 1 or None, not '3'"),
    ],
)
def test_invalid_limits(
    size_limit: int, file_limit: int, max_files: int | None, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        check_limits(size_limit, file_limit, max_files)
    assert str(info.value) == message


def test_check_non_negative() -> None:
    assert check_non_negative("nbytes", 0) == 0
    assert check_non_negative("nbytes", 10**12) == 10**12
    for bad in (-1, 1.0, False, None, "1"):
        with pytest.raises(ValueError, match="nbytes must be an integer >= 0"):
            check_non_negative("nbytes", bad)
