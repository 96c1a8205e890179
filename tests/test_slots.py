"""Slots: first come, first served, a cancelled turn leaves the queue, and a queued
download holds no thread."""

from __future__ import annotations

import threading

import pytest

from dlmanager import DownloadManager
from dlmanager.slots import Slots
from tests.server import FaultServer, make_data

WAIT = 5.0


def test_turns_are_granted_in_the_order_taken() -> None:
    slots = Slots(1)
    never = threading.Event()
    first = slots.take_turn()
    turns = [slots.take_turn() for _ in range(5)]
    order: list[int] = []

    def run(number: int) -> None:
        assert turns[number].wait(never)
        order.append(number)
        turns[number].leave()

    # Started in reverse: the threads' own order does not matter, the turns' does.
    threads = [threading.Thread(target=run, args=(n,)) for n in reversed(range(5))]
    for thread in threads:
        thread.start()
    assert slots.queued() == 5
    first.leave()
    for thread in threads:
        thread.join(WAIT)

    assert order == [0, 1, 2, 3, 4]
    assert slots.queued() == 0


def test_a_cancelled_turn_leaves_the_queue() -> None:
    slots = Slots(1)
    never, cancel = threading.Event(), threading.Event()
    first = slots.take_turn()
    waiting = slots.take_turn()
    cancel.set()

    waiting.cancel()
    assert waiting.wait(cancel) is False
    assert slots.queued() == 0
    first.leave()
    assert slots.take_turn().wait(never)  # the slot went back to the pool


def test_a_granted_turn_that_leaves_hands_the_slot_over() -> None:
    slots = Slots(2)
    never = threading.Event()
    a, b, c = slots.take_turn(), slots.take_turn(), slots.take_turn()

    assert a.wait(never) and b.wait(never)
    assert slots.queued() == 1
    b.leave()
    b.leave()  # idempotent: does not free a second slot

    assert c.wait(never)
    assert slots.queued() == 0
    assert slots.free() == 0


def test_a_turn_with_a_callback_runs_it_when_granted() -> None:
    slots = Slots(1)
    granted: list[str] = []
    first = slots.take_turn(lambda: granted.append("first"))
    second = slots.take_turn(lambda: granted.append("second"))
    assert granted == ["first"]  # at once: a slot was free
    assert slots.queued() == 1
    first.leave()  # hands its slot over: the callback runs in this thread
    assert granted == ["first", "second"]
    assert second.granted
    second.leave()
    assert slots.free() == 1


def test_a_queued_turn_cancelled_runs_its_callback_once_and_frees_nothing() -> None:
    slots = Slots(1)
    calls: list[str] = []
    first = slots.take_turn()
    queued = slots.take_turn(lambda: calls.append("queued"))
    queued.cancel()
    queued.cancel()
    assert calls == ["queued"]  # so that its download can end
    assert slots.queued() == 0
    first.leave()
    assert calls == ["queued"]  # never granted afterwards
    assert slots.free() == 1
    queued.leave()
    assert slots.free() == 1  # leaving it gave back no slot


def test_a_granted_turn_cancelled_keeps_its_slot_until_it_leaves() -> None:
    slots = Slots(1)
    turn = slots.take_turn()
    turn.cancel()
    assert slots.free() == 0
    turn.leave()
    assert slots.free() == 1


def test_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0)


def test_one_worker_downloads_in_the_order_asked(server: FaultServer, destdir: str) -> None:
    names = [f"n{i}.bin" for i in range(6)]
    for i, name in enumerate(names):
        server.add(f"/{name}", make_data(2_000, seed=i))

    with DownloadManager(destdir, max_workers=1) as manager:
        for name in names:
            manager.download(server.url(f"/{name}"))

    gets = [r.path for r in server.requests if r.method == "GET"]
    assert gets == [f"/{name}" for name in names]
