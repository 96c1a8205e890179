"""Transfer slots handed out in the order downloads were started.

A :class:`threading.Semaphore` wakes its waiters in no particular order, and
each download's thread reaches it when the scheduler lets it, so with
``max_workers=1`` the downloads of a list would run in a random order.
Here a download takes its :class:`Turn` when it is started, in the caller's
thread, and turns are granted first come, first served: the first download
started is the first to transfer, which is what a harness prefetching "the
next build" expects.
"""

from __future__ import annotations

import collections
import threading

__all__ = ["Slots", "Turn"]


class Slots:
    """*count* transfer slots, granted in the order turns were taken."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count!r}")
        self._lock = threading.Lock()
        self._free = count
        self._queue: collections.deque[Turn] = collections.deque()

    def take_turn(self) -> Turn:
        """A place in the queue, granted at once when a slot is free."""
        turn = Turn(self)
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                turn._granted.set()
            else:
                self._queue.append(turn)
        return turn

    def queued(self) -> int:
        """How many turns wait for a slot."""
        with self._lock:
            return len(self._queue)

    def _leave(self, turn: Turn) -> None:
        with self._lock:
            if turn._left:
                return
            turn._left = True
            if not turn._granted.is_set():
                self._queue.remove(turn)
            elif self._queue:  # hand the slot over to the longest waiter
                self._queue.popleft()._granted.set()
            else:
                self._free += 1


class Turn:
    """One download's place in the queue of :class:`Slots`, then its slot."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._granted = threading.Event()
        self._left = False

    def wait(self, cancel: threading.Event, poll: float = 0.1) -> bool:
        """Wait for the slot; True once granted, False (having left) once *cancel* is set.

        :param poll: how often *cancel* is looked at, in seconds
        """
        while not self._granted.wait(poll):
            if cancel.is_set():
                self.leave()
                return False
        return True

    def leave(self) -> None:
        """Leave the queue, or give the slot back once done with it. Idempotent."""
        self._slots._leave(self)
