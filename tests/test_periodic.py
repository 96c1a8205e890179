"""The checkpoint thread (Periodic): one thread for uses that follow one another,
ended when idle, at once by join_idle()."""

from __future__ import annotations

import threading
import time

from dlmanager.transfer.periodic import Periodic

WAIT = 5.0


def threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]


def test_uses_that_follow_one_another_keep_one_thread() -> None:
    periodic = Periodic(0.01, "test-periodic-reuse", linger=60.0)
    seen = set()
    for _ in range(10):
        called = threading.Event()
        with periodic.every(called.set):
            assert called.wait(WAIT)
            seen.update(threads("test-periodic-reuse"))
        time.sleep(0.02)  # idle between two uses, shorter than the linger
    assert len(seen) == 1
    periodic.join_idle(WAIT)
    assert threads("test-periodic-reuse") == []


def test_join_idle_ends_an_idle_thread_at_once() -> None:
    periodic = Periodic(60.0, "test-periodic-join")  # would linger a minute
    with periodic.every(lambda: None):
        pass
    assert len(threads("test-periodic-join")) == 1
    began = time.monotonic()
    periodic.join_idle(WAIT)
    assert threads("test-periodic-join") == []
    assert time.monotonic() - began < WAIT


def test_join_idle_leaves_a_thread_in_use() -> None:
    periodic = Periodic(0.01, "test-periodic-busy", linger=0.0)
    calls = threading.Semaphore(0)
    with periodic.every(calls.release):
        periodic.join_idle(0.05)
        assert len(threads("test-periodic-busy")) == 1
        assert calls.acquire(timeout=WAIT)  # still called after join_idle()
    periodic.join_idle(WAIT)
    assert threads("test-periodic-busy") == []


def test_an_idle_thread_ends_by_itself_after_its_linger() -> None:
    periodic = Periodic(0.01, "test-periodic-linger", linger=0.05)
    with periodic.every(lambda: None):
        pass
    deadline = time.monotonic() + WAIT
    while threads("test-periodic-linger"):
        assert time.monotonic() < deadline, "the idle thread never ends"
        time.sleep(0.01)
    with periodic.every(lambda: None):  # and a new use starts a new one
        assert len(threads("test-periodic-linger")) == 1
    periodic.join_idle(WAIT)
