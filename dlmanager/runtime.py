"""The runtime: the background threads downloads share, and the downloads in flight.

A :class:`Runtime` holds the request threads, the stall guard, the
checkpoint thread and the registry of the downloads whose thread may be
running. Its owner closes it: a :class:`~dlmanager.DownloadManager` owns one
(or shares one it is given) and closes it in
:meth:`~dlmanager.DownloadManager.close`. A :class:`~dlmanager.Download`
created on its own uses the default runtime, made when first needed (as
``requests``' module-level functions use a default session). At interpreter
exit, every open runtime cancels its downloads still running and waits a
moment for them to remove their temporary files.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import TYPE_CHECKING

from dlmanager.disk.writeback import DEFAULT_WRITEBACK, Writeback
from dlmanager.transfer.periodic import Periodic
from dlmanager.transfer.stall import StallGuard
from dlmanager.transport.direct import Direct
from dlmanager.transport.senders import Senders

if TYPE_CHECKING:
    from dlmanager.download import Download

__all__ = ["CHECKPOINT_INTERVAL", "Runtime", "default_runtime"]

#: Seconds between two checkpoints of a running download.
CHECKPOINT_INTERVAL = 1.0
#: Seconds the exit handler waits, in all, for cancelled downloads to stop.
EXIT_WAIT = 2.0


class Runtime:
    """Background threads and the registry of running downloads, closed by their owner.

    :param checkpoint_interval: seconds between two checkpoints of a
        download (a killed process loses at most that much of its bytes)
    :param stall_tick: how often the stall guard looks at the transfers, in seconds
    :param idle_timeout: how long an idle request thread waits for the next
        request before it ends, in seconds
    :param writeback: how the writeback of the files written is started
        ahead of their ``fsync`` (see :mod:`~dlmanager.disk.writeback`);
        None: not before the ``fsync``
    """

    def __init__(
        self,
        *,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
        stall_tick: float = 0.1,
        idle_timeout: float = 5.0,
        writeback: Writeback | None = DEFAULT_WRITEBACK,
    ) -> None:
        self.checkpoint_interval = checkpoint_interval
        self.writeback = writeback
        self.senders = Senders(idle_timeout)
        self.stall_guard = StallGuard(stall_tick)
        self.checkpoints = Periodic(checkpoint_interval, "dlmanager-checkpoints")
        self._lock = threading.Lock()
        self._live: set[Download] = set()
        self._transport: Direct | None = None
        atexit.register(self.cancel_all)

    def __repr__(self) -> str:
        return f"<Runtime {len(self._live)} download(s) running>"

    def transport(self) -> Direct:
        """The transport of the downloads made without a session, created when first needed."""
        with self._lock:
            if self._transport is None:
                self._transport = Direct()
            return self._transport

    def add(self, download: Download) -> None:
        """Count *download* as running (its thread may run) until :meth:`discard`."""
        with self._lock:
            self._live.add(download)

    def discard(self, download: Download) -> None:
        with self._lock:
            self._live.discard(download)

    def cancel_all(self, timeout: float = EXIT_WAIT) -> None:
        """Cancel every download still running and wait up to *timeout* seconds
        in all for them to stop (the interpreter's exit does it)."""
        with self._lock:
            running = [download for download in self._live if download.is_running()]
        for download in running:
            download.cancel()
        deadline = time.monotonic() + timeout
        for download in running:
            download.join(max(0.0, deadline - time.monotonic()))

    def end_idle_threads(self, timeout: float = 5.0) -> None:
        """End the threads that have nothing left to do, and wait up to
        *timeout* seconds for each: idle request threads, and the checkpoint
        and stall-guard threads when no transfer uses them."""
        self.senders.release_idle(timeout)
        self.checkpoints.join_idle(timeout)
        self.stall_guard.join_idle(timeout)

    def close(self, busy_timeout: float = 1.0) -> None:
        """Cancel what still runs, end the idle threads, wait up to
        *busy_timeout* seconds for the request threads still busy; no exit
        handler any more."""
        self.cancel_all()
        self.end_idle_threads()
        self.senders.join_busy(busy_timeout)
        self.end_idle_threads()  # those that were busy and went idle meanwhile
        with self._lock:
            transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        atexit.unregister(self.cancel_all)


_default: Runtime | None = None
_default_lock = threading.Lock()


def default_runtime() -> Runtime:
    """The runtime of the downloads made without one, created when first needed."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Runtime()
        return _default
