"""The token buckets of dlmanager/rate.py, on a fake clock: rate, burst, sharing, changes, cancel.

Nothing here sleeps: the clock is a counter and a nap moves it forward, so
every figure is exact. What a real download does under a limit is in
``test_rate_limit.py``; how accurate the limit is, in ``benchmarks/rate_limit.py``.
"""

from __future__ import annotations

import threading

import pytest

from dlmanager.rate import (
    BURST_SECONDS,
    MAX_NAP,
    MIN_PIECE,
    Pauses,
    Throttle,
    TokenBucket,
    check_rate,
)


class FakeClock:
    """A clock that only naps move forward; naps are recorded."""

    def __init__(self) -> None:
        self.now = 0.0
        self.naps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def nap(self, seconds: float) -> bool:
        self.naps.append(seconds)
        self.now += seconds
        return False


def transfer(throttle: Throttle, clock: FakeClock, total: int, piece: int) -> None:
    """Take *total* bytes from *throttle* in pieces of *piece* bytes."""
    for _ in range(total // piece):
        assert throttle.acquire(piece, clock.nap)


@pytest.mark.parametrize("rate", [1000, 100_000, 10_000_000])
def test_a_bucket_lets_its_rate_through_after_its_burst(rate: int) -> None:
    clock = FakeClock()
    throttle = Throttle(TokenBucket(rate, clock=clock))
    piece = max(1, rate // 10)
    transfer(throttle, clock, rate * 10, piece)
    # Ten seconds' worth takes ten seconds, less the initial burst (within a piece).
    burst = rate * BURST_SECONDS
    assert clock.now == pytest.approx(10 - burst / rate, abs=piece / rate + 1e-9)


def test_the_initial_burst_is_at_most_the_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock)
    assert bucket.capacity == 1000 * BURST_SECONDS <= 1000  # at most a second's worth
    assert bucket.take(int(bucket.capacity)) == 0.0  # the burst: at once
    assert bucket.take(1) == pytest.approx(1 / 1000)  # then the rate


def test_an_idle_bucket_fills_up_to_its_capacity_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock)
    bucket.take(int(bucket.capacity))
    clock.now += 3600  # an hour idle
    assert bucket.take(int(bucket.capacity)) == 0.0
    assert bucket.take(100) == pytest.approx(0.1)  # no more than one burst saved


def test_a_piece_bigger_than_the_bucket_waits_for_a_full_bucket_and_owes_the_rest() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock)
    assert bucket.take(10_000) == 0.0  # a full bucket: taken, 9750 bytes owed
    assert bucket.take(250) == pytest.approx(10.0)  # the debt is paid first


def test_connections_of_one_download_share_its_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(TokenBucket(1000, clock=clock))
    # Four connections taking in turn (as their threads would).
    for _ in range(100):
        for _connection in range(4):
            assert throttle.acquire(50, clock.nap)
    # 20 000 bytes at 1000 B/s: 20 s, less the burst (not four bursts).
    assert clock.now == pytest.approx(20 - BURST_SECONDS, abs=0.05)


def test_a_piece_takes_from_its_download_and_its_manager() -> None:
    clock = FakeClock()
    total = TokenBucket(1000, clock=clock)
    fast = Throttle(TokenBucket(None, clock=clock), total)
    slow = Throttle(TokenBucket(250, clock=clock), total)
    for _ in range(100):
        assert fast.acquire(40, clock.nap)
        assert slow.acquire(10, clock.nap)
    # 5000 bytes through the manager's 1000 B/s; the slow one's 1000 bytes
    # fit its 250 B/s within that time.
    assert clock.now == pytest.approx(5 - BURST_SECONDS, abs=0.05)
    # The slow one alone is held to its own rate (after the burst it saved).
    start = clock.now
    transfer(slow, clock, 2500, 10)
    assert clock.now - start == pytest.approx(10 - BURST_SECONDS, abs=0.05)


def test_a_rate_change_is_taken_by_the_next_piece() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1000, clock=clock)
    throttle = Throttle(bucket)
    transfer(throttle, clock, 5000, 100)
    bucket.rate = 100_000
    start = clock.now
    transfer(throttle, clock, 100_000, 100)
    assert clock.now - start == pytest.approx(1.0, abs=0.02)
    bucket.rate = None  # unlimited: no nap at all
    naps = len(clock.naps)
    transfer(throttle, clock, 10**9, 10**6)
    assert len(clock.naps) == naps


def test_a_sleeper_sees_a_new_rate_within_a_nap() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, clock=clock)  # 1 B/s: a MIN_PIECE piece owes minutes
    bucket.take(MIN_PIECE)
    changed: list[float] = []

    def nap(seconds: float) -> bool:
        assert seconds <= MAX_NAP
        if not changed:
            bucket.rate = 10**6  # raised while the reader sleeps
            changed.append(clock.now)
        return clock.nap(seconds)

    assert Throttle(bucket).acquire(MIN_PIECE, nap)
    assert clock.now - changed[0] <= MAX_NAP + 0.01  # not the minutes the old rate owed


def test_a_limit_set_on_an_unlimited_bucket_starts_with_one_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(None, clock=clock)
    assert bucket.take(10**9) == 0.0
    bucket.rate = 1000
    assert bucket.take(int(1000 * BURST_SECONDS)) == 0.0
    assert bucket.take(100) == pytest.approx(0.1)


def test_lowering_the_rate_drops_the_tokens_beyond_the_new_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10**6, clock=clock)
    bucket.rate = 1000
    assert bucket.take(int(1000 * BURST_SECONDS)) == 0.0
    assert bucket.take(1000) > 0


def test_a_cancel_wakes_a_sleeping_reader() -> None:
    cancel = threading.Event()
    bucket = TokenBucket(1)  # the real clock: a piece owes ~17 minutes
    bucket.take(MIN_PIECE)
    naps: list[float] = []

    def nap(seconds: float) -> bool:
        naps.append(seconds)
        if len(naps) == 3:
            cancel.set()  # as Download.cancel() does, from another thread
        return cancel.wait(0)

    assert not Throttle(bucket).acquire(MIN_PIECE, nap)
    assert len(naps) == 3  # woken at the nap the cancel came in


def test_a_stopped_reader_gives_up_after_its_nap() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1, clock=clock)
    bucket.take(MIN_PIECE)
    assert not Throttle(bucket).acquire(MIN_PIECE, clock.nap, stopped=lambda: True)
    assert len(clock.naps) == 1


def test_naps_are_counted_as_pauses_while_they_last() -> None:
    clock = FakeClock()
    pauses = Pauses(clock)
    bucket = TokenBucket(1000, clock=clock)
    seen: list[float] = []

    def nap(seconds: float) -> bool:
        clock.nap(seconds / 2)
        seen.append(pauses.total())  # half way through the nap: counted already
        clock.nap(seconds / 2)
        return False

    throttle = Throttle(bucket)
    transfer(throttle, clock, 0, 1)
    assert throttle.acquire(250, nap, pauses=pauses)  # the burst: no nap
    assert pauses.total() == 0.0
    assert throttle.acquire(100, nap, pauses=pauses)
    assert seen and seen[0] == pytest.approx(0.05)
    assert pauses.total() == pytest.approx(0.1)


def test_pieces_are_about_a_tenth_of_a_second_worth() -> None:
    bucket = TokenBucket(100 * 1024)
    assert bucket.piece_size(256 * 1024) == 10 * 1024  # 100 KiB/s: 10 KiB reads
    assert bucket.piece_size(4096) == 4096  # never more than the chunk
    assert TokenBucket(10).piece_size(4096) == MIN_PIECE  # however low the rate
    assert TokenBucket(None).piece_size(4096) == 4096
    both = Throttle(TokenBucket(10**7), TokenBucket(100 * 1024))
    assert both.piece_size(256 * 1024) == bucket.piece_size(256 * 1024)
    assert not Throttle(TokenBucket(None)).limited
    assert both.limited


@pytest.mark.parametrize("bad", [0, -1, -0.5, float("nan"), float("inf"), True, "2M", [1]])
def test_a_rate_not_above_zero_is_refused_naming_it(bad: object) -> None:
    with pytest.raises(ValueError, match="max_rate must be a number of bytes per second"):
        check_rate(bad)
    with pytest.raises(ValueError, match="max_rate"):
        TokenBucket(bad)  # type: ignore[arg-type]
    bucket = TokenBucket(1000)
    with pytest.raises(ValueError, match="max_rate"):
        bucket.rate = bad  # type: ignore[assignment]
    assert bucket.rate == 1000  # unchanged


def test_a_rate_may_be_a_fraction_or_none() -> None:
    assert check_rate(0.5) == 0.5
    assert check_rate(None) is None
    assert repr(TokenBucket(2048)) == "<TokenBucket 2048 B/s>"
