"""What a call of ``DownloadManager.download`` gets: its arguments checked, then join, hit or start.

:func:`check_call` checks the arguments once, before anything starts, into a
:class:`Call`. For a file of the directory, :class:`Admission` then hashes a
file already there against the checksum asked for (:func:`stale`, outside the
manager's lock: it may be big) and, under the lock, decides (:func:`decide`,
after :func:`~dlmanager.destination.request_action`) whether the call joins
the download of that file in flight, uses the file there (a hit) or starts a
new download.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from dlmanager.checksum import Checksum, parse_checksum
from dlmanager.destination import HIT, JOIN, request_action
from dlmanager.directory import mismatching, present, status
from dlmanager.disk.metadata import read_info, utcnow
from dlmanager.names import check_url
from dlmanager.rate import check_rate
from dlmanager.redact import get_logger
from dlmanager.request import RequestOptions
from dlmanager.revalidation import check_max_age, fresh
from dlmanager.transfer.sources import check_mirrors
from dlmanager.transport.send import check_session

if TYPE_CHECKING:
    from dlmanager.config import TransferOptions
    from dlmanager.directory import Directory
    from dlmanager.download import Download
    from dlmanager.events import EventCallback, ProgressCallback
    from dlmanager.flights import Flights
    from dlmanager.launch import Launcher

__all__ = ["Admission", "Call", "check_call", "decide", "join", "stale"]

log = get_logger("dlmanager.manager")  # its messages as they were before the split


@dataclasses.dataclass(frozen=True)
class Call:
    """The checked arguments of one call of ``DownloadManager.download``."""

    url: str
    request: RequestOptions
    mirrors: tuple[str, ...]
    checksum: Checksum | None
    revalidate: bool
    max_age: float | None
    max_rate: float | None

    @property
    def revalidating(self) -> bool:
        """Whether a file already there is revalidated rather than used as it is."""
        return self.revalidate or self.max_age is not None


def check_call(
    url: str,
    session: Any,
    *,
    checksum: Checksum | str | None,
    revalidate: bool,
    max_age: float | None,
    headers: Any,
    params: Any,
    method: str | None,
    data: Any,
    json: Any,
    auth: Any,
    mirrors: Iterable[str] | None,
    max_rate: float | None,
) -> Call:
    """The arguments of a call, checked (*session*: the one its download would use).

    :raises ValueError: for a URL that is not http(s), an invalid *max_age*,
        *max_rate*, request option, mirror or checksum, or a request
        *session* cannot send
    """
    check_url(url)
    check_max_age(max_age)
    check_rate(max_rate)
    request = RequestOptions.build(headers=headers, params=params, method=method, data=data,
                                   json=json, auth=auth)  # fmt: skip
    request.check_revalidation(revalidate, max_age)
    checked_mirrors = check_mirrors(url, mirrors, request)
    check_session(session, request)
    expected = parse_checksum(checksum)
    return Call(url, request, checked_mirrors, expected, revalidate, max_age, max_rate)


def stale(call: Call, path: str, in_flight: bool) -> bool:
    """Whether the file at *path* is there but does not match the checksum
    asked for (then replaced once the new one is verified). Hashed only when
    no download of it is *in_flight*; call it outside the manager's lock."""
    return call.checksum is not None and not in_flight and present(path) and (
        mismatching(path, call.checksum)
    )  # fmt: skip


def decide(call: Call, running: Download | None, path: str, mismatch: bool) -> tuple[str, bool]:
    """What *call* gets (JOIN, HIT or START), given the download of its file
    in flight (*running*) and the file at *path*; and whether that file is a
    symlink (replaced by the download). Call it under the manager's lock."""
    there, symlink = status(path)
    current = there  # to use as it is, without a request
    if there and call.revalidating:
        current = fresh(read_info(path), call.max_age, utcnow())
    same = running is None or running.request == call.request  # same request options
    action = request_action(running=running is not None, expected=call.checksum,
                            running_checksum=running.checksum if running else None,
                            present=there, mismatching=mismatch or not current,
                            same_request=same)  # fmt: skip
    return action, symlink


def join(running: Download, progress: ProgressCallback | None) -> Download:
    """*running*, joined by a call: *progress* (if any) is attached to it."""
    if progress is not None:
        running.set_progress(progress)
    return running


class Admission:
    """Decides what a call for a file of the manager's directory gets, and
    starts the download when it gets one.

    :param directory: the manager's directory
    :param flights: the manager's downloads in flight, and its lock
    :param launcher: how the manager starts a download
    """

    def __init__(self, directory: Directory, flights: Flights, launcher: Launcher) -> None:
        self.directory = directory
        self.flights = flights
        self.launcher = launcher

    def request(
        self,
        call: Call,
        dest: str,
        options: TransferOptions,
        progress: ProgressCallback | None,
        on_event: EventCallback | None,
    ) -> Download | None:
        """What *call* for *dest* (as ``get_dest`` gives it) gets: the download
        of it in flight, None for the file there (a use of it), or a new
        download with *options*.

        :raises RuntimeError: when the manager is closed
        """
        path = self.directory.path(os.path.basename(dest))
        # A file that does not match: replaced once the new one is verified.
        mismatch = stale(call, path, in_flight=self.flights.live(dest) is not None)
        with self.flights.lock:
            self.flights.check_open()
            running = self.flights.live(dest)
            action, symlink = decide(call, running, path, mismatch)
            if action == JOIN:
                assert running is not None
                return join(running, progress)
            if action == HIT:
                self.directory.mark_used(path)
                return None
            if symlink:
                log.warning("%s is a symlink: replacing it with the download", path)
            # One in flight (with another checksum, or cancelled and cleaning up): the new
            # one lets it end first, then takes its file if it matches, else downloads it again.
            destination = self.directory.destination(dest, after=self.flights.get(dest))
            return self.launcher.start(call, destination, dest, options, progress, on_event,
                                       reserve=dest, max_age=call.max_age,
                                       revalidate=call.revalidating and not mismatch)  # fmt: skip
