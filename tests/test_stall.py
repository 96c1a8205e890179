"""The stall guard: a stalled attempt is aborted; one thread for attempts that follow
one another, ended when idle, at once by join_idle()."""

from __future__ import annotations

import threading
import time
from typing import Any

from dlmanager.config import Timeouts
from dlmanager.transfer.stall import StallGuard
from dlmanager.transport.attempt import STALL

WAIT = 5.0


class FakeAttempt:
    """What the stall guard reads of an attempt, and its abort()."""

    def __init__(self, stall: float = 0.05) -> None:
        self.timeouts = Timeouts(stall=stall, min_speed=1000)
        self.received = 0
        self.url = "http://127.0.0.1/f.bin"
        self.aborted = threading.Event()
        self.reason = ""

    def abort(self, reason: str) -> None:
        self.reason = reason
        self.aborted.set()


def guard_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "dlmanager-stall-guard"]


def watch(guard: StallGuard, attempt: FakeAttempt) -> Any:
    return guard.watch(attempt)  # type: ignore[arg-type]


def test_a_stalled_attempt_is_aborted() -> None:
    guard = StallGuard(tick=0.01)
    attempt = FakeAttempt()
    with watch(guard, attempt):
        assert attempt.aborted.wait(WAIT)
    assert attempt.reason == STALL
    guard.join_idle(WAIT)


def test_attempts_that_follow_one_another_keep_one_thread() -> None:
    before = set(guard_threads())
    guard = StallGuard(tick=0.01, linger=60.0)
    seen = set()
    for _ in range(20):
        with watch(guard, FakeAttempt(stall=60.0)):
            seen.update(set(guard_threads()) - before)
        time.sleep(0.002)
    assert len(seen) == 1
    began = time.monotonic()
    guard.join_idle(WAIT)  # ends the idle thread at once
    assert not any(thread.is_alive() for thread in seen)
    assert time.monotonic() - began < WAIT


def test_an_idle_thread_ends_by_itself_after_its_linger() -> None:
    before = set(guard_threads())
    guard = StallGuard(tick=0.01, linger=0.05)
    with watch(guard, FakeAttempt(stall=60.0)):
        (thread,) = set(guard_threads()) - before
    thread.join(WAIT)
    assert not thread.is_alive()
