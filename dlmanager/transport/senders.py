"""The threads that send requests: reused from one request to the next, ended when idle.

A request runs in a thread of its own so that waiting for its response
headers can be abandoned at once when a download is cancelled. A
:class:`Senders` pool belongs to a :class:`~dlmanager.runtime.Runtime`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["Senders"]


class _Sender:
    """One thread of :class:`Senders`, and the task handed to it."""

    def __init__(self, pool: Senders, task: Callable[[], bool]) -> None:
        self.pool = pool
        self.task: Callable[[], bool] | None = task
        self.stop = False
        self.handed = threading.Event()
        self.thread = threading.Thread(target=self.run, name="dlmanager-request", daemon=True)

    def run(self) -> None:
        try:
            while True:
                task, self.task = self.task, None
                assert task is not None
                reuse = task()
                del task  # an idle thread must not keep the last request's response alive
                if not reuse or not self.pool.rest(self):
                    return
        finally:
            self.pool.ended(self)


class Senders:
    """Daemon threads that send requests, reused from one request to the next.

    A task is handed to an idle thread if there is one, else to a new
    thread. A thread idle for *idle_timeout* seconds ends, and
    :meth:`release_idle` ends the idle ones at once. Daemon threads, so that a
    request abandoned by a cancel never holds up the interpreter's exit.
    """

    def __init__(self, idle_timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Sender] = []
        self._all: set[_Sender] = set()  # the threads alive, idle or busy
        self._idle_timeout = idle_timeout

    def submit(self, task: Callable[[], bool]) -> None:
        """Run *task* in a thread; the thread waits for the next task only when
        *task* returns true (a request a cancel abandoned returns false: its
        thread, late already, ends at once instead of outliving a close)."""
        with self._lock:
            sender = self._idle.pop() if self._idle else None
            if sender is not None:
                sender.task = task
                sender.handed.set()
        if sender is None:
            sender = _Sender(self, task)
            with self._lock:
                self._all.add(sender)
            sender.thread.start()

    def ended(self, sender: _Sender) -> None:
        """*sender*'s thread ends (called from it)."""
        with self._lock:
            self._all.discard(sender)

    def rest(self, sender: _Sender) -> bool:
        """Wait, in *sender*'s thread, for its next task; False when it is to end."""
        with self._lock:
            sender.handed.clear()
            self._idle.append(sender)
        sender.handed.wait(self._idle_timeout)
        with self._lock:
            if sender.task is None and not sender.stop:  # timed out, nothing handed
                self._idle.remove(sender)
                return False
        return not sender.stop

    def release_idle(self, timeout: float = 5.0) -> None:
        """End the idle threads now, and wait up to *timeout* seconds for them."""
        with self._lock:
            idle, self._idle = self._idle, []
            for sender in idle:
                sender.stop = True
        for sender in idle:
            sender.handed.set()
        deadline = time.monotonic() + timeout
        for sender in idle:
            sender.thread.join(max(0.0, deadline - time.monotonic()))

    def join_busy(self, timeout: float) -> None:
        """Wait up to *timeout* seconds in all for the threads still sending a
        request (one a cancel abandoned ends at once when its socket was shut
        down; one waiting for a server's headers ends when they arrive)."""
        with self._lock:
            busy = list(self._all)
        deadline = time.monotonic() + timeout
        for sender in busy:
            if sender.thread is not threading.current_thread():
                sender.thread.join(max(0.0, deadline - time.monotonic()))
