"""Slots: first come, first served, and a cancelled waiter leaves the queue."""

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
        assert turns[number].wait(never, poll=0.01)
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

    assert waiting.wait(cancel, poll=0.01) is False
    assert slots.queued() == 0
    first.leave()
    assert slots.take_turn().wait(never)  # the slot went back to the pool


def test_a_granted_turn_that_leaves_hands_the_slot_over() -> None:
    slots = Slots(2)
    never = threading.Event()
    a, b, c = slots.take_turn(), slots.take_turn(), slots.take_turn()

    assert a.wait(never, poll=0.01) and b.wait(never, poll=0.01)
    assert slots.queued() == 1
    b.leave()
    b.leave()  # idempotent: does not free a second slot

    assert c.wait(never, poll=0.01)
    assert slots.queued() == 0
    assert slots._free == 0


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
