"""The core's decisions, as pure functions: tested without servers, threads or files.

Each decision the layers take (what a request for a destination gets, whether
a file found there is done, what a response means for the bytes held, which
temporary files go, how a file is split between connections) is a function
of values. The behaviour around them is tested against real servers in the
other modules; here every branch of each decision is named.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmanager.checksum import parse_checksum
from dlmanager.destination import HIT, JOIN, START, found_done, request_action
from dlmanager.disk.cleanup import KEEP, REMOVE, REMOVE_ORPHAN, stale_action
from dlmanager.segments import Plan, merge_ranges
from dlmanager.transfer.loop import APPEND, RESTART, STALE, response_action
from dlmanager.transfer.steps import version_changed
from dlmanager.transport.headers import ResponseInfo

SHA_A = parse_checksum("sha256:" + "a" * 64)
SHA_B = parse_checksum("sha256:" + "b" * 64)

# -- what a request for a destination gets --------------------------------------------------


@pytest.mark.parametrize(
    ("running", "running_checksum", "expected", "present", "mismatching", "action"),
    [
        # A download of the file is in flight: join it...
        (True, None, None, False, False, JOIN),
        (True, SHA_A, None, True, False, JOIN),  # asking for no checksum accepts any
        (True, SHA_A, SHA_A, False, False, JOIN),
        # ...unless it expects another checksum than the one asked for.
        (True, SHA_A, SHA_B, False, False, START),
        (True, None, SHA_A, True, False, START),
        # Nothing in flight: the file there is a hit, unless it does not match.
        (False, None, None, True, False, HIT),
        (False, None, SHA_A, True, False, HIT),
        (False, None, SHA_A, True, True, START),
        (False, None, None, False, False, START),
    ],
)
def test_request_action(
    running: bool,
    running_checksum: object,
    expected: object,
    present: bool,
    mismatching: bool,
    action: str,
) -> None:
    assert (
        request_action(
            running=running,
            running_checksum=running_checksum,  # type: ignore[arg-type]
            expected=expected,  # type: ignore[arg-type]
            present=present,
            mismatching=mismatching,
        )
        == action
    )


@pytest.mark.parametrize(
    ("present", "checksum", "digest", "done"),
    [
        (True, None, None, True),  # there, nothing to check
        (False, None, None, False),  # not there
        (True, SHA_A, "a" * 64, True),  # there and matching
        (True, SHA_A, "b" * 64, False),  # there, another file
        (True, SHA_A, None, False),  # there, digest unknown (it vanished meanwhile)
        (False, SHA_A, "a" * 64, False),
    ],
)
def test_found_done(present: bool, checksum: object, digest: str | None, done: bool) -> None:
    assert found_done(present, checksum, digest) is done  # type: ignore[arg-type]


# -- what a response means for the bytes held ----------------------------------------------


def info(start: int = 0, total: int | None = 1000, validator: str | None = '"v1"') -> ResponseInfo:
    length = None if total is None else total - start
    return ResponseInfo(200 if start == 0 else 206, start, length, total, validator, None)


@pytest.mark.parametrize(
    ("response", "held", "total", "validator", "action"),
    [
        (info(), 0, None, None, APPEND),  # a first response
        (info(start=400), 400, 1000, '"v1"', APPEND),  # the resume asked for
        (info(start=400, validator=None), 400, 1000, '"v1"', APPEND),  # If-Range trusted
        (info(), 400, 1000, '"v1"', RESTART),  # Range ignored: the whole file again
        (info(validator='"v2"'), 400, 1000, '"v1"', RESTART),  # changed, whole file sent
        (info(start=400, validator='"v2"'), 400, 1000, '"v1"', STALE),  # part of another
        (info(start=400, total=2000), 400, 1000, '"v1"', STALE),  # another size
    ],
)
def test_response_action(
    response: ResponseInfo, held: int, total: int | None, validator: str | None, action: str
) -> None:
    assert response_action(response, held, total, validator) == action


@pytest.mark.parametrize(
    ("response", "total", "validator", "changed"),
    [
        (info(), 1000, '"v1"', False),
        (info(validator=None), 1000, '"v1"', False),  # no validator: trusted
        (info(validator='"v2"'), 1000, '"v1"', True),
        (info(total=999), 1000, '"v1"', True),
        (info(total=None), 1000, '"v1"', True),  # the size is no longer known
    ],
)
def test_version_changed(
    response: ResponseInfo, total: int | None, validator: str | None, changed: bool
) -> None:
    assert version_changed(response, total, validator) is changed


# -- which temporary files go ---------------------------------------------------------------

DAY = 24 * 3600.0


@pytest.mark.parametrize(
    ("kind", "age", "part_exists", "resumable", "action"),
    [
        ("part", 0.5, False, False, KEEP),  # its writer may not have locked it yet
        ("part", 5.0, False, False, REMOVE),  # nothing to resume it with
        ("part", 5.0, False, True, KEEP),  # resumable
        ("part", 8 * DAY, False, True, REMOVE),  # resumable, but too old
        ("ckpt", 8 * DAY, True, False, KEEP),  # goes with its part
        ("ckpt", 0.0, False, False, REMOVE_ORPHAN),  # its part is gone
        ("ckpt.new", 0.0, True, False, KEEP),
        ("ckpt.new", 0.0, False, False, REMOVE_ORPHAN),
    ],
)
def test_stale_action(
    kind: str, age: float, part_exists: bool, resumable: bool, action: str
) -> None:
    assert stale_action(kind, age, part_exists=part_exists, resumable=resumable) == action


# -- how a file is split between connections -----------------------------------------------


def test_merge_ranges() -> None:
    assert merge_ranges([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]) == [(0, 4), (5, 12)]


def test_assign_splits_the_missing_bytes_evenly() -> None:
    plan = Plan(100, min_steal=1)
    assert [(s.start, s.end) for s in plan.assign(4, min_split=10)] == [
        (0, 25),
        (25, 50),
        (50, 75),
        (75, 100),
    ]


def test_assign_keeps_segments_above_min_split() -> None:
    plan = Plan(100, min_steal=1)
    assert [(s.start, s.end) for s in plan.assign(8, min_split=40)] == [(0, 50), (50, 100)]


def test_assign_fetches_only_the_gaps_of_a_checkpoint() -> None:
    plan = Plan(100, [(0, 30), (60, 70)], min_steal=1)
    segments = plan.assign(3, min_split=1)
    # Two gaps of 30 bytes, three connections: the first gap is split.
    assert [(s.start, s.end) for s in segments] == [(30, 45), (45, 60), (70, 100)]
    assert plan.received() == 40


def test_steal_hands_over_the_second_half_of_the_largest_segment() -> None:
    plan = Plan(100, min_steal=10)
    first, second = plan.assign(2, min_split=1)
    plan.advance(first, 50)  # first is done
    plan.advance(second, 10)  # second is at 60
    stolen = plan.steal()
    assert stolen is not None
    assert (second.end, stolen.start, stolen.end) == (80, 80, 100)


def test_steal_refuses_a_split_below_min_steal() -> None:
    plan = Plan(100, min_steal=30)
    (only,) = plan.assign(1, min_split=1)
    plan.advance(only, 50)
    assert plan.steal() is None  # 50 left: halves of 25 < 30


def test_advance_counts_no_byte_past_a_split() -> None:
    plan = Plan(100, min_steal=10)
    (only,) = plan.assign(1, min_split=1)
    stolen = plan.steal()
    assert stolen is not None and only.end == 50
    plan.advance(only, 40)
    assert plan.advance(only, 30) == 10  # 20 bytes belong to the stolen half
    assert plan.limit(only, 5) == 0


ranges_st = st.lists(
    st.tuples(st.integers(0, 1000), st.integers(0, 1000)).map(lambda r: (min(r), max(r))),
    max_size=6,
)


@given(
    total=st.integers(0, 1000),
    done=ranges_st,
    connections=st.integers(1, 8),
    min_split=st.integers(1, 300),
    steps=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 400)), max_size=30),
)
def test_a_plan_fetches_every_missing_byte_exactly_once(
    total: int,
    done: list[tuple[int, int]],
    connections: int,
    min_split: int,
    steps: list[tuple[int, int]],
) -> None:
    plan = Plan(total, done, min_steal=16)
    held = [r for r in merge_ranges(done) if r[1] <= total]  # a range past the end is void
    gaps = plan.gaps()
    segments = plan.assign(connections, min_split)
    assert len(segments) <= max(connections, len(gaps))  # a gap gets one at least
    for start, end in gaps:  # a gap is cut in pieces of min_split bytes at least
        pieces = [s for s in segments if start <= s.start < end]
        assert len(pieces) == 1 or all(s.end - s.start >= min_split for s in pieces)
    assert plan.gaps() == []
    # Writers advance in any order; a finished one steals from the others.
    for index, size in steps:
        segment = segments[index % len(segments)] if segments else None
        if segment is None:
            break
        plan.advance(segment, size)
        if segment.remaining == 0:
            stolen = plan.steal()
            if stolen is not None:
                segments.append(stolen)
    for segment in segments:  # every writer finishes
        plan.advance(segment, segment.remaining)
    covered = [(s.start, s.end) for s in segments if s.end > s.start]
    assert sum(end - start for start, end in covered) + sum(e - s for s, e in held) == total
    assert merge_ranges([*covered, *held]) == ([(0, total)] if total else [])
    assert plan.complete()
