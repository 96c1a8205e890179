"""How a manager starts a download: with the session, slots, runtime and total rate all share.

:meth:`Launcher.start` makes the :class:`~dlmanager.Download` with what the
manager's downloads share, records it in flight (:class:`~dlmanager.flights.Flights`),
calls the manager's ``_download_started`` hook and starts it, all under the
manager's lock, so that a call deciding to start a download and that start
are one step for the other threads.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO

from dlmanager.download import Download

if TYPE_CHECKING:
    from dlmanager.admission import Call
    from dlmanager.config import TransferOptions
    from dlmanager.destination import Destination
    from dlmanager.directory import Directory
    from dlmanager.events import EventCallback, ProgressCallback
    from dlmanager.flights import Flights
    from dlmanager.rate import TokenBucket
    from dlmanager.runtime import Runtime
    from dlmanager.slots import Slots
    from dlmanager.transport.choice import SessionChoice

__all__ = ["Launcher"]


@dataclasses.dataclass(frozen=True)
class Launcher:
    """Starts a manager's downloads.

    :ivar flights: the manager's downloads in flight, and its lock
    :ivar sessions: the session its downloads use
    :ivar directory: its directory (where a download reserves room)
    :ivar limiter: its transfer slots, first started, first to transfer
    :ivar runtime: the background threads of its downloads
    :ivar total_rate: what all its downloads take from (its ``max_rate``)
    :ivar finished: the manager's ``_finished``, each download's callback
    :ivar started: the manager's ``_download_started`` hook
    :ivar evict: the manager's ``evict``, to make room for a download's size
    """

    flights: Flights
    sessions: SessionChoice
    directory: Directory
    limiter: Slots
    runtime: Runtime
    total_rate: TokenBucket
    finished: Callable[[Download], Any]
    started: Callable[[Download], None]
    evict: Callable[[], object]

    def start(
        self,
        call: Call,
        dest: Destination | BinaryIO,
        key: str | None,
        options: TransferOptions,
        progress: ProgressCallback | None,
        on_event: EventCallback | None,
        *,
        reserve: str | None = None,
        revalidate: bool = False,
        max_age: float | None = None,
    ) -> Download:
        """Start a download of *call* into *dest*, in flight under *key*.

        :param key: what a later call joins it by (None: a file object, never joined)
        :param options: the manager's options, given the call's checksum here
        :param reserve: the file (as ``get_dest`` gives it) whose size is
            reserved against the persist limit once known; None: nothing reserved
        :raises RuntimeError: when the manager is closed
        """
        if options.checksum != call.checksum:  # else shared as it is
            options = dataclasses.replace(options, checksum=call.checksum)
        if reserve is not None:
            on_event = self.directory.reserving(reserve, on_event, self.evict)
        with self.flights.lock:
            self.flights.check_open()
            download = Download(call.url, dest, finished_callback=self.finished,
                                session=self.sessions.sender(), progress=progress,
                                on_event=on_event, limiter=self.limiter, options=options,
                                runtime=self.runtime, revalidate=revalidate, max_age=max_age,
                                request=call.request, mirrors=call.mirrors,
                                max_rate=call.max_rate, total_rate=self.total_rate)  # fmt: skip
            self.flights.add(download, key)
            self.started(download)
            download.start()  # its place in the queue, in the order downloads start
        return download
