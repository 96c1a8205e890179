"""A download's transfer step: its temporary file filled, then published, kept or discarded.

:func:`prepare` adopts a leftover to resume (or creates a temporary file, or
takes the download's file object) and sets up a
:class:`~dlmanager.transfer.loop.Transfer`; :meth:`Step.run` runs it, then
publishes the file with its metadata, records a revalidation answered
:class:`~dlmanager.transport.attempt.NotModified`, or, on failure or cancel,
keeps the bytes as a resumable leftover (``cancel(keep_partial=True)``) or
discards them.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

from dlmanager.destination import Destination, regular_file
from dlmanager.disk.metadata import FileInfo, utcnow
from dlmanager.disk.partfile import PartFile
from dlmanager.disk.sinks import FileObjectSink, Sink
from dlmanager.errors import DownloadInterrupt
from dlmanager.redact import get_logger
from dlmanager.revalidation import Conditions
from dlmanager.server_names import NoNameError, named_by_response
from dlmanager.transfer.loop import Transfer
from dlmanager.transfer.steps import Job
from dlmanager.transport.attempt import NotModified

if TYPE_CHECKING:
    from dlmanager.download import Download

__all__ = ["Outcome", "Step", "prepare"]

log = get_logger(__name__)


class Outcome(enum.Enum):
    """How a transfer step ended, when it raised nothing."""

    PUBLISHED = "published"  #: the file took its final name
    NOT_MODIFIED = "not modified"  #: the file there is current, and stays
    REMOVED = "removed"  #: the file there was removed while it was revalidated


def prepare(
    job: Job,
    destination: Destination,
    sink: FileObjectSink | None,
    leftovers: bool,
    conditions: Conditions | None,
    *,
    url: str,
    download: Download,
    rename: Callable[[Destination], None],
    keep_partial: Callable[[], bool],
) -> Step:
    """The transfer step of *download* into *destination*, ready to run.

    :param job: what the transfer needs (its ``on_response`` is set here for
        a server-named *destination*)
    :param sink: the download's file object, or None for a temporary file
    :param leftovers: whether a leftover may be there to resume
    :param conditions: the file already there, when the step revalidates it
    :param url: the URL as given, which the errors name
    :param rename: the download's, called with the destination the server named
    :param keep_partial: whether the download's cancel asked to keep the bytes
    """
    path = destination.path
    writeback = job.runtime.writeback
    adopted = PartFile.adopt(path, job.url, writeback) if leftovers else None
    if adopted is not None and not job.request.ranged:
        adopted[0].discard()  # a GET's leftover: this request is never resumed
        adopted = None
    part: Sink
    part, resume = adopted or (sink or PartFile.create(path, job.url, writeback), None)
    if resume is not None:
        job.events.resume_from(resume.received, resume.total)
    if destination.naming is not None:

        def named(chosen: Destination) -> None:
            step.destination = chosen
            rename(chosen)

        on_response = named_by_response(download, destination.naming, part, named)
        job = dataclasses.replace(job, on_response=on_response)
    step = Step(Transfer(job, part, resume, conditions), destination, sink, url, keep_partial)
    return step


class Step:
    """The transfer of one download, then the end of the sink it filled.

    :param transfer: fills the sink (its ``part``)
    :param destination: where the file goes (replaced when the server names it)
    :param sink: the download's file object, or None
    :param url: the URL as given, which the errors name
    :param keep_partial: whether the download's cancel asked to keep the bytes
    """

    def __init__(
        self,
        transfer: Transfer,
        destination: Destination,
        sink: FileObjectSink | None,
        url: str,
        keep_partial: Callable[[], bool],
    ) -> None:
        self.transfer = transfer
        self.part = transfer.part
        self.destination = destination
        self.sink = sink
        self.url = url
        self.keep_partial = keep_partial
        self.named = destination.naming is not None  # named by the server's response

    def run(self) -> Outcome:
        """Run the transfer and end its sink: published, or discarded
        (:attr:`Outcome.NOT_MODIFIED`, :attr:`Outcome.REMOVED`); on an
        exception, kept for a resume or discarded, then the exception raised."""
        transfer, part = self.transfer, self.part
        events, cancel = transfer.job.events, transfer.job.cancel
        try:
            transfer.run()
            if cancel.is_set():
                raise DownloadInterrupt()
            if self.destination.naming is not None:  # never under the placeholder's name
                raise NoNameError(f"{self.url}: no response named the file", url=self.url)
            part.publish(events.total, self._describe())
        except NotModified as answer:
            part.discard()
            path = self.destination.path
            if not regular_file(path):  # removed meanwhile: fetched after all
                log.info("%s was removed while it was revalidated", path)
                return Outcome.REMOVED
            self.destination.metadata.validated(path, utcnow())
            log.info("%s is current (HTTP %s)", path, answer.status)
            return Outcome.NOT_MODIFIED
        except BaseException as exc:
            keep = self.keep_partial() and isinstance(exc, DownloadInterrupt) and not self.named
            if keep and self.sink is None and transfer.keep():
                part.close()  # a leftover the next download resumes
                log.info("Kept %d bytes of %s for a later download to resume",
                         part.size, self.destination.path)  # fmt: skip
            else:
                part.discard()
                if self.sink is not None:
                    self.sink.explain(exc)  # what stays in the object, if anything
            raise
        return Outcome.PUBLISHED

    def _describe(self) -> Callable[[int], None]:
        """What records the metadata of the file the transfer filled, before its publish."""
        transfer, part = self.transfer, self.part

        def describe(fd: int) -> None:
            total = transfer.job.events.total
            verified = str(transfer.verified) if transfer.verified else None
            info = FileInfo.published(transfer.job.url, transfer.final_url, transfer.etag,
                                      transfer.last_modified,
                                      part.size if total is None else total, verified)  # fmt: skip
            self.destination.metadata.stamp(fd, self.destination.path, info)

        return describe
