"""Transfer slots handed out in the order downloads were started.

A :class:`threading.Semaphore` wakes its waiters in no particular order, and
each download's thread reaches it when the scheduler lets it, so with
``max_workers=1`` the downloads of a list would run in a random order.
Here a download takes its :class:`Turn` when it is started, in the caller's
thread, and turns are granted first come, first served: the first download
started is the first to transfer, which is what a harness prefetching "the
next build" expects.

A turn taken with a callback costs nothing while it waits: no thread, no
polling; the callback (which starts the download's thread) runs when the
turn is granted. A thread that waits for a turn blocks on an event, woken by
the grant or by :meth:`Turn.cancel`.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Holder", "Slots", "Turn"]


class Slots:
    """*count* transfer slots, granted in the order turns were taken."""

    def __init__(self, count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, not {count!r}")
        self._lock = threading.Lock()
        self._free = count
        self._queue: collections.deque[Turn] = collections.deque()

    def take_turn(self, on_grant: Callable[[], object] | None = None) -> Turn:
        """A place in the queue, granted at once when a slot is free.

        :param on_grant: called once the turn is granted, in the thread that
            granted it (this one, or one giving a slot back), without any lock
            held; or by :meth:`Turn.cancel` for a turn cancelled while queued
        """
        turn = Turn(self, on_grant)
        self.join(turn)
        return turn

    def join(self, turn: Turn) -> None:
        """Put *turn* (made by ``Turn(slots, on_grant)``) in the queue; see
        :meth:`take_turn`. A turn cancelled before it joined stays out."""
        with self._lock:
            if turn._left or turn._queued:
                return
            granted = bool(self._free) and not self._queue
            if granted:
                self._free -= 1
                turn._granted = True
            else:
                turn._queued = True
                self._queue.append(turn)
        if granted:
            turn._fire()

    def queued(self) -> int:
        """How many turns wait for a slot."""
        with self._lock:
            return len(self._queue)

    def free(self) -> int:
        """How many slots nobody holds."""
        with self._lock:
            return self._free

    def _withdraw(self, turn: Turn) -> bool:
        """Take *turn* out of the queue if it is still waiting there.

        :return: whether it was (a granted turn is left alone)
        """
        with self._lock:
            if turn._left or turn._granted:
                return False
            turn._left = True
            if turn._queued:
                self._queue.remove(turn)
            return True

    def _leave(self, turn: Turn) -> None:
        """Take *turn* out: out of the queue, or give its slot to the next turn."""
        if self._withdraw(turn):
            return
        successor = None
        with self._lock:
            if turn._left:
                return
            turn._left = True
            if self._queue:  # hand the slot over to the longest waiter
                successor = self._queue.popleft()
                successor._granted = True
            else:
                self._free += 1
        if successor is not None:
            successor._fire()


class Turn:
    """One download's place in the queue of :class:`Slots`, then its slot."""

    def __init__(self, slots: Slots, on_grant: Callable[[], object] | None = None) -> None:
        self._slots = slots
        self._on_grant = on_grant
        self._event = threading.Event()  # set when granted, or cancelled
        self._granted = False
        self._queued = False  # waiting in the queue (not granted at once)
        self._left = False

    @property
    def granted(self) -> bool:
        """Whether the slot was granted (it stays true after :meth:`leave`)."""
        return self._granted

    def _fire(self) -> None:
        self._event.set()
        if self._on_grant is not None:
            self._on_grant()

    def wait(self, cancel: threading.Event) -> bool:
        """Block until the slot is granted or :meth:`cancel` is called.

        :return: True once granted; False (having left the queue) once
            *cancel* is set
        """
        self._event.wait()
        if cancel.is_set():
            self.leave()
            return False
        return True

    def cancel(self) -> None:
        """Leave the queue if still in it, and wake :meth:`wait`.

        The callback of a turn cancelled while queued is called at once (it
        was never granted, so it would never run otherwise): the download it
        starts sees that it is cancelled, and ends.
        """
        withdrawn = self._slots._withdraw(self)
        self._event.set()
        if withdrawn and self._on_grant is not None:
            self._on_grant()

    def leave(self) -> None:
        """Leave the queue, or give the slot back once done with it. Idempotent."""
        self._slots._leave(self)


class Holder:
    """One download's hold on its limiter: a :class:`Turn` of :class:`Slots`, or a
    semaphore (any object with ``acquire(timeout=...)`` and ``release()``), or
    nothing (no limiter).

    :param cancel: set when the download is cancelled; :meth:`take` then
        returns False
    :param poll: how often a semaphore is tried again, in seconds (a
        :class:`Slots` turn is woken instead)
    """

    def __init__(self, limiter: Any, cancel: threading.Event, poll: float = 0.1) -> None:
        self.limiter = limiter
        self.cancel = cancel
        self.poll = poll
        self._lock = threading.Lock()
        self._turn: Turn | None = None
        self._holds_semaphore = False

    def join_queue(self, on_grant: Callable[[], object]) -> None:
        """Take a place in the queue of a :class:`Slots` limiter; *on_grant*
        runs when the slot is granted (or at once when cancelled meanwhile)."""
        assert isinstance(self.limiter, Slots)
        turn = Turn(self.limiter, on_grant)
        with self._lock:
            self._turn = turn
        if self.cancel.is_set():
            turn.cancel()  # never queued: its callback runs, and sees the cancel
        else:
            self.limiter.join(turn)

    def take(self) -> bool:
        """Hold a slot (a no-op when one is held already): whether one is held,
        False once cancelled (having left the queue)."""
        limiter = self.limiter
        if isinstance(limiter, Slots):
            with self._lock:
                if self.cancel.is_set():
                    return False
                turn = self._turn
                if turn is None:
                    turn = self._turn = limiter.take_turn()
            return turn.wait(self.cancel)
        if limiter is not None and not self._holds_semaphore:
            while not limiter.acquire(timeout=self.poll):
                if self.cancel.is_set():
                    return False
            self._holds_semaphore = True
        return not self.cancel.is_set()

    def cancelled(self) -> None:
        """The download was cancelled: leave the queue, wake a waiting :meth:`take`."""
        with self._lock:
            turn = self._turn
        if turn is not None:
            turn.cancel()

    def release(self) -> None:
        """Give back the slot or the place in the queue held, if any."""
        with self._lock:
            turn, self._turn = self._turn, None
        if turn is not None:
            turn.leave()
        if self._holds_semaphore:
            self._holds_semaphore = False
            self.limiter.release()
