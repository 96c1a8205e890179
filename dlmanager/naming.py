"""The manager's server-named downloads: started under their URL, in flight under it until named.

The manager's side of :mod:`dlmanager.server_names`
(``use_content_disposition=True``). :class:`NamedDownloads` starts such a
download into a temporary file whose name does not depend on the server,
keeps it in the manager's :class:`~dlmanager.flights.Flights` under its URL
(:func:`~dlmanager.server_names.flight_key`), so that a call for the same URL
and request joins it, and gives it a :class:`~dlmanager.server_names.Naming`
that moves it under the name its response gives (:meth:`Flights.claim
<dlmanager.flights.Flights.claim>`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dlmanager.admission import Call, join
from dlmanager.destination import JOIN, Destination, request_action
from dlmanager.server_names import Naming, flight_key, placeholder_fname

if TYPE_CHECKING:
    from dlmanager.config import TransferOptions
    from dlmanager.directory import Directory
    from dlmanager.download import Download
    from dlmanager.events import EventCallback, ProgressCallback
    from dlmanager.flights import Flights
    from dlmanager.launch import Launcher

__all__ = ["NamedDownloads"]


class NamedDownloads:
    """Starts a manager's server-named downloads, or joins one in flight.

    :param directory: the manager's directory
    :param destdir: the directory as the manager shows it (``get_dest``)
    :param flights: the manager's downloads in flight, and its lock
    :param launcher: how the manager starts a download
    """

    def __init__(
        self, directory: Directory, destdir: str, flights: Flights, launcher: Launcher
    ) -> None:
        self.directory = directory
        self.destdir = destdir
        self.flights = flights
        self.launcher = launcher

    def request(
        self,
        call: Call,
        options: TransferOptions,
        progress: ProgressCallback | None,
        on_event: EventCallback | None,
    ) -> Download:
        """The download of *call*: the one in flight for the same URL, request
        options and checksum, else a new one with *options*.

        :raises RuntimeError: when the manager is closed
        """
        url, request, checksum = call.url, call.request, call.checksum
        key, placeholder = flight_key(request.target(url)), placeholder_fname(request.target(url))
        naming = Naming(self.directory, self.destdir, self.flights.claim)
        destination = Destination(self.destdir, self.directory.path(placeholder), leftovers=False,
                                  metadata=self.directory.metadata, naming=naming)  # fmt: skip
        with self.flights.lock:
            self.flights.check_open()
            running = self.flights.live(key)
            if running is not None and request_action(
                running=True, running_checksum=running.checksum, expected=checksum,
                present=False, mismatching=False, same_request=running.request == request,
            ) == JOIN:  # fmt: skip
                return join(running, progress)
            return self.launcher.start(call, destination, key, options, progress, on_event,
                                       reserve=placeholder)  # fmt: skip
