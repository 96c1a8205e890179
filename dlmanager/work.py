"""What a :class:`~dlmanager.download.Download`'s thread does, how it ends, and waiting for it.

The thread waits for a transfer slot and for its
:class:`~dlmanager.destination.Destination` (an earlier download of the same
file, the lock other processes see), decides whether the file is already
done (:func:`~dlmanager.destination.found_done`) or current (a revalidation),
else hands the transfer step (:mod:`dlmanager.transfer.publish`) what it
needs; a download the server names moves to the destination its response
names. Whatever happened, nothing stays held; then the thread reports
the end (the ``FINISHED`` event, ``finished_callback``).
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple

from dlmanager.destination import Destination, regular_file
from dlmanager.disk.metadata import utcnow
from dlmanager.disk.sinks import FileObjectSink
from dlmanager.errors import DownloadError, DownloadInterrupt
from dlmanager.events import DownloadState, EventKind
from dlmanager.redact import get_logger
from dlmanager.revalidation import CURRENT, Conditions
from dlmanager.server_names import NameTaken
from dlmanager.slots import Holder
from dlmanager.transfer import publish
from dlmanager.transfer.sources import Sources
from dlmanager.transfer.steps import Job

if TYPE_CHECKING:
    from dlmanager.download import Download

__all__ = ["Ended", "ExcInfo", "Work", "wait_a_little"]

log = get_logger(__name__)

ExcInfo = tuple[type[BaseException], BaseException, TracebackType]


class Ended(NamedTuple):
    """How a download's work ended."""

    state: DownloadState  #: DONE, CANCELLED or FAILED
    error: ExcInfo | None  #: the :func:`sys.exc_info` of the error that ended it, or None


class Work:
    """The work of one download's thread.

    :param job: what its transfers need (their sources are made for each)
    :param url: the URL as given, which the logs and errors name
    :param destination: where the file goes
    :param sink: the file object it fills, or None for a path
    :param mirrors: its other URLs, checked
    :param holder: its hold on a transfer slot
    :param revalidate: whether it revalidates a file already there
    :param max_age: how recent a validation makes a request needless, or None
    :param download: the download doing the work (a server's name is claimed for it)
    :param keep_partial: whether its cancel asked to keep the bytes received
    :param running: called when the transfer begins
    :param finished_callback: called with *download* once the work is over
    :param done: set once the work is over, its end reported

    :attr:`destination` and :attr:`path` are where the file goes (those the
    server named, once it did); :attr:`not_modified`, :attr:`done_by` and
    :attr:`replacing` say what the work found there.
    """

    def __init__(
        self,
        job: Job,
        url: str,
        destination: Destination,
        sink: FileObjectSink | None,
        mirrors: tuple[str, ...],
        holder: Holder,
        *,
        revalidate: bool,
        max_age: float | None,
        download: Download,
        keep_partial: Callable[[], bool],
        running: Callable[[], None],
        finished_callback: Callable[[Download], Any] | None,
        done: threading.Event,
    ) -> None:
        self.job = job
        self.url = url
        self.destination = destination
        self.path = destination.path
        self.sink = sink
        self.mirrors = mirrors
        self.holder = holder
        self.revalidate = revalidate
        self.max_age = max_age
        self.download = download
        self.keep_partial = keep_partial
        self.running = running
        self.finished_callback = finished_callback
        self.done = done
        self.replacing = False  # a file was at dest when the transfer began
        self.done_by: str | None = None  # who downloaded the file, when this one found it
        self.not_modified = False
        # A validation since then by whom it waits for will do.
        self.asked_at = utcnow() if revalidate else None

    def run(self) -> Ended:
        """Do the work, in the download's thread; how it ended (it raises nothing)."""
        destination = self.destination
        try:
            try:
                self._check_cancel()
                if not self.holder.take():
                    raise DownloadInterrupt()  # nothing held: the finally releases nothing
                try:
                    self._fetch(destination)
                except NameTaken as taken:  # the server's name is busy, or its file there
                    destination = taken.destination
                    self._named(destination)
                    self._fetch(destination)
            finally:
                # Whatever happened, at whatever step: nothing stays held.
                self.holder.release()
                destination.release()
                self.destination.release()  # the one the server named, if any
        except DownloadInterrupt:
            log.debug("Download of %s cancelled", self.url)
            return Ended(DownloadState.CANCELLED, None)
        except BaseException as exc:
            if self.replacing and isinstance(exc, DownloadError) and regular_file(self.path):
                exc.message += f"; the file already at {self.path} was left as it was"
            error: ExcInfo = sys.exc_info()  # type: ignore[assignment]
            if self.job.cancel.is_set():
                log.debug("Download of %s cancelled: %s", self.url, exc, exc_info=True)
                return Ended(DownloadState.CANCELLED, error)
            log.info("Download of %s failed: %s", self.url, exc)
            log.debug("Traceback of the failed download of %s", self.url, exc_info=True)
            return Ended(DownloadState.FAILED, error)
        return Ended(DownloadState.DONE, None)

    def finish(self, error: BaseException | None) -> None:
        """Report the end of the work, which *error* ended (or None), then set :attr:`done`."""
        try:
            self.job.events.emit(EventKind.FINISHED, error=error)
        except Exception:
            log.exception("on_event hook of %s failed", self.url)
        self.job.runtime.discard(self.download)
        try:
            if self.finished_callback is not None:
                self.finished_callback(self.download)
        except Exception:
            log.exception("finished_callback of %s failed", self.url)
        finally:
            self.done.set()

    def _named(self, destination: Destination) -> None:
        """From now on, download into *destination* (named by the server)."""
        self.destination = destination
        self.path = destination.path

    def _fetch(self, destination: Destination) -> None:
        """Claim *destination*, then revalidate, keep or download its file."""
        checksum = self.job.options.checksum
        waited = destination.claim(self.url, self.job.cancel, self.job.events,
                                   give_way=self.holder.release)  # fmt: skip
        conditions = None
        if self.revalidate:
            conditions = destination.revalidation(waited=waited, asked_at=self.asked_at,
                                                  max_age=self.max_age,
                                                  checksum=checksum)  # fmt: skip
        if conditions is CURRENT:
            self.not_modified = True
            self.done_by = waited
            log.info("%s is current (validated %s)", self.path,
                     "by " + waited if waited else "within max_age")  # fmt: skip
        elif conditions is None and destination.done(checksum):  # by whom it waited for
            self.done_by = waited or "another download"
            log.info("%s was downloaded by %s", self.path, self.done_by)
        else:
            # A file there that does not match the checksum stays
            # until the new one is verified.
            self.replacing = checksum is not None and regular_file(self.path)
            if not self.holder.take():  # again, if a wait above gave it up
                raise DownloadInterrupt()
            self.running()
            revalidating = conditions if isinstance(conditions, Conditions) else None
            self._transfer(destination.leftovers or waited is not None, revalidating)

    def _check_cancel(self) -> None:
        if self.job.cancel.is_set():
            raise DownloadInterrupt()

    def _transfer(self, leftovers: bool, conditions: Conditions | None = None) -> None:
        self._check_cancel()
        job = self.job
        sources = Sources.of(job.url, self.mirrors, job.request, job.options.checksum)
        step = publish.prepare(dataclasses.replace(job, sources=sources), self.destination,
                               self.sink, leftovers, conditions, url=self.url,
                               download=self.download, rename=self._named,
                               keep_partial=self.keep_partial)  # fmt: skip
        if conditions is not None:
            self.replacing = True  # a failure leaves the file there as it was
        outcome = step.run()
        if outcome is publish.Outcome.REMOVED:
            self._transfer(leftovers=False)
        elif outcome is publish.Outcome.NOT_MODIFIED:
            self.not_modified = True


def wait_a_little(thread: threading.Thread, done: threading.Event, timeout: float) -> None:
    """Join *thread* for up to *timeout* seconds (as dlmanager 0.1.1 did), or wait
    for its start: a manager starts it when its slot is granted (and an
    interrupted join() can mark a live thread as stopped: *done*, the
    thread's own signal, decides)."""
    if thread.ident is not None:
        try:
            thread.join(timeout)
        except RuntimeError:  # started a moment ago: not joinable yet
            pass
        else:
            if thread.is_alive():
                return
    done.wait(timeout)
