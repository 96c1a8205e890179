"""A manager's downloads in flight (by name, or by URL until named), unfinished and failed.

A :class:`~dlmanager.DownloadManager` keeps one :class:`Flights`, guarded by
the manager's lock, which it passes in. :meth:`Flights.live` finds the
download a new request may join, :meth:`Flights.add` records one that starts,
:meth:`Flights.claim` moves a server-named download to the name its response
gave, and :meth:`Flights.forget` and :meth:`Flights.ended` take it out when it
is over, keeping its failure for :meth:`Flights.wait`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from dlmanager.download import Download, take_unreceived_error, unreceived
from dlmanager.events import DownloadState

__all__ = ["Flights", "raise_errors"]


class Flights:
    """The tables of a manager's downloads, and whether it still takes new ones.

    :param lock: the manager's lock, which guards the tables (reentrant: the
        manager holds it across a decision and the start it leads to)
    :param destdir: the manager's directory, named when it is closed
    """

    def __init__(self, lock: threading.RLock, destdir: str) -> None:
        self.lock = lock
        self.destdir = destdir
        #: The downloads in flight, by destination (as the manager's
        #: ``get_dest`` gives it), or by URL (:func:`~dlmanager.server_names.flight_key`)
        #: for a server-named one until its response names it. The manager
        #: shows it as ``_downloads``, which code written for 0.1.1 reads.
        self.downloads: dict[str, Download] = {}
        # Started downloads whose end wait() has not seen yet, in start order:
        # those of downloads, and those a newer download of their file
        # displaced there (another checksum, or cancelled and cleaning up).
        self._unfinished: dict[Download, None] = {}
        # Failed downloads whose error wait() has not raised yet, oldest first.
        self._failed: list[Download] = []
        self._changed = threading.Condition(lock)  # the last download ended
        self._closed = False

    def close(self) -> bool:
        """Take no new download from now on; whether it was open until now."""
        with self.lock:
            was_open = not self._closed
            self._closed = True
        return was_open

    def check_open(self) -> None:
        """:raises RuntimeError: once :meth:`close` was called"""
        with self.lock:
            if self._closed:
                raise RuntimeError(f"the DownloadManager of {self.destdir} is closed")

    def get(self, key: str) -> Download | None:
        """The download in flight under *key*, cancelled or not, or None."""
        with self.lock:
            return self.downloads.get(key)

    def live(self, key: str) -> Download | None:
        """The download in flight under *key* that was not cancelled, or None."""
        running = self.get(key)
        if running is None or running.is_canceled():
            return None
        return running

    def add(self, download: Download, key: str | None) -> None:
        """Record *download*, about to start, in flight under *key* (None: a
        download into a file object, which no request joins)."""
        with self.lock:
            if key is not None:
                self.downloads[key] = download
            self._unfinished[download] = None

    def claim(self, download: Download, shown: str) -> Download | None:
        """Record the server-named *download* in flight under *shown*; the
        download of *shown* it must let end first, or None."""
        with self.lock:
            after = self.downloads.get(shown)
            self.downloads[shown] = download
        return after if after is not download else None

    def cancel(self, cancel_if: Callable[[Download], Any] | None, keep_partial: bool) -> None:
        """Cancel the running downloads for which ``cancel_if(download)`` is
        true (all of them when it is None), asking about every one first."""
        with self.lock:
            # downloads as well: code written for 0.1.1 (mozregression's
            # tests) fills it with downloads of its own and expects them cancelled.
            downloads = list(dict.fromkeys([*self._unfinished, *self.downloads.values()]))
        selected = [
            dl for dl in downloads if dl.is_running() and (cancel_if is None or cancel_if(dl))
        ]
        # Queued ones first, so that none takes the slot a cancelled one frees.
        selected.sort(key=lambda dl: dl.state is not DownloadState.QUEUED)
        for download in selected:
            download.cancel(keep_partial=keep_partial)

    def forget(self, dl: Download) -> None:
        """Take the download *dl*, which is over, out of flight, keeping it
        for :meth:`wait` when it failed."""
        with self.lock:
            for key in [key for key, held in self.downloads.items() if held is dl]:
                del self.downloads[key]  # its name, or its URL (server-named)
            if dl.state is DownloadState.FAILED:
                self._failed.append(dl)
                if len(self._failed) % 64 == 0:  # the errors received need no keeping
                    self._failed = [d for d in self._failed if unreceived(d)]

    def ended(self, dl: Download) -> None:
        """Count *dl* as ended, for :meth:`wait` (after :meth:`forget` and the
        manager's hooks)."""
        with self.lock:
            self._unfinished.pop(dl, None)
            if not self._unfinished:  # what wait() waits for
                self._changed.notify_all()

    def wait(self) -> list[Download]:
        """Wait until no download is unfinished; those that failed since the
        last call, oldest first."""
        with self.lock:
            while self._unfinished:
                self._changed.wait()
            failed, self._failed = self._failed, []
        return failed


def raise_errors(failed: list[Download]) -> None:
    """Raise the error of the first of *failed* whose error its caller has not
    received yet, with those of the others in its ``other_errors`` attribute;
    they all count as received. Nothing when there is none."""
    errors = [error for error in map(take_unreceived_error, failed) if error is not None]
    if errors:
        first = errors[0]
        with contextlib.suppress(AttributeError):  # a class with __slots__
            first.other_errors = tuple(errors[1:])  # type: ignore[attr-defined]
        raise first
