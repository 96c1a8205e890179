"""The steps both ways of filling a file share: the job, the retry step, the version check,
the body loop and the checkpoints.

Written once: the single stream (:mod:`~dlmanager.transfer.stream`) and each
connection of a segmented download (:mod:`~dlmanager.transfer.segmented`)
retry with a :class:`Retrier`, accept a response only from the version of the
file they hold (:func:`version_changed`), and copy a body with :func:`pump`,
under the stall guard.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dlmanager.config import TransferOptions
from dlmanager.disk.checkpoint import Checkpoint
from dlmanager.disk.sinks import Sink
from dlmanager.errors import DownloadError, DownloadInterrupt, StallError, StorageError
from dlmanager.events import Events
from dlmanager.rate import Pauses, Throttle
from dlmanager.redact import get_logger
from dlmanager.request import RequestOptions, retry_refusal
from dlmanager.retry import RetryPolicy
from dlmanager.segments import Range
from dlmanager.transfer.opener import AttemptOpener
from dlmanager.transfer.sources import Sources
from dlmanager.transfer.throttled import throttled
from dlmanager.transport.attempt import Attempt
from dlmanager.transport.headers import ResponseInfo

if TYPE_CHECKING:
    from dlmanager.runtime import Runtime

__all__ = ["Checkpointer", "Job", "Retrier", "pump", "version_changed"]

log = get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class Job:
    """What a transfer needs from its download, handed down explicitly.

    :ivar url: the URL
    :ivar options: how it transfers
    :ivar opener: opens (and aborts) its attempts
    :ivar events: reports its progress and events
    :ivar cancel: set when the download is cancelled
    :ivar runtime: the stall guard, the checkpoint thread and its interval
    :ivar request: its request options (the url holds their query)
    :ivar sources: its URL and mirrors, for a download with mirrors
    :ivar throttle: the rate limits its connections share (its own and its
        manager's), or None
    :ivar on_response: called with the headers and final URL of each response
        whose body is taken, before its first byte (a server-named download
        takes its name there)
    """

    url: str
    options: TransferOptions
    opener: AttemptOpener
    events: Events
    cancel: threading.Event
    runtime: Runtime
    request: RequestOptions = dataclasses.field(default_factory=RequestOptions)
    sources: Sources | None = None
    throttle: Throttle | None = None
    on_response: Callable[[Any, str], None] | None = None

    def resumable(self, info: ResponseInfo) -> bool:
        """Whether the body *info* announces may be split, resumed and
        checkpointed: the response allows it, and the request is a GET
        without a body (:attr:`~dlmanager.request.RequestOptions.ranged`)."""
        return info.resumable and self.request.ranged


class Retrier:
    """The retry budget of one stream of attempts: the single stream's, or one
    connection's of a segmented download.

    :param stopped: whether to stop instead of retrying (a cancel)
    """

    def __init__(self, job: Job, stopped: Callable[[], bool]) -> None:
        self.policy: RetryPolicy = job.options.retry
        self.job = job
        self.stopped = stopped

    def failed(self, error: DownloadError, gained: int, what: str) -> None:
        """Count a failed attempt that added *gained* bytes, then wait before the next.

        An attempt that added at least ``progress_bytes`` resets the count,
        unless it stalled (else a trickling server never runs out of retries).

        :param what: what the attempt fetched, for the log (the URL, or a range of it)
        :raises DownloadError: *error* itself, once the policy gives up
        :raises DownloadInterrupt: when stopped, before or while it waits
        """
        if self.stopped():
            raise DownloadInterrupt() from error
        refusal = retry_refusal(self.job.request, error)
        if refusal is not None:
            if self.policy.is_retryable(error):
                log.info("Not retrying %s: %s", what, refusal)
                error.message += f" (not retried: {refusal})"
            error.history = self.policy.history
            raise error
        progressed = gained >= self.policy.progress_bytes and not isinstance(error, StallError)
        self.policy = self.policy.increment(error, progressed=progressed)
        delay = self.policy.sleep_time(error)
        log.info("Attempt on %s failed, retrying in %.1fs: %s", what, delay, error)
        self.job.events.retrying(error, delay)
        if self.job.cancel.wait(delay):
            raise DownloadInterrupt() from error


def version_changed(info: ResponseInfo, total: int | None, validator: str | None) -> bool:
    """Whether *info* describes another version of the file than the bytes
    held (of size *total*, sent with *validator*): another size, or another
    validator (a response without one is trusted to have honoured ``If-Range``)."""
    return info.total != total or (info.validator is not None and info.validator != validator)


def pump(
    attempt: Attempt,
    job: Job,
    write: Callable[[bytes], bool],
    stopped: Callable[[], bool],
) -> bool:
    """Hand *attempt*'s body to *write*, chunk by chunk, while the stall guard watches.

    Under a rate limit (the job's throttle), each piece waits for its tokens
    before it is written (see :mod:`~dlmanager.transfer.throttled`), and the
    stall guard leaves the time asleep out of its windows.

    :param write: takes a chunk; returns False to stop before the body ends
    :param stopped: checked after each chunk
    :return: True when the body ended, False when *write* stopped it
    :raises DownloadInterrupt: when *stopped* says so
    """
    pauses = Pauses()
    if job.throttle is not None:
        write = throttled(write, job.throttle, attempt, job.cancel.wait, stopped, pauses)
    with job.runtime.stall_guard.watch(attempt, pauses.total):
        for chunk in attempt.body():
            if not write(chunk):
                return False
            if stopped():
                raise DownloadInterrupt()
    return True


class Checkpointer:
    """Saves the checkpoints of one transfer: the ranges written, with the size
    and validator of the version they belong to.

    Saving, starting over (:meth:`truncate`) and the end of the writer
    (:meth:`stop`) exclude each other, so that a checkpoint never describes
    bytes of another version, nor a file already published or removed.
    """

    def __init__(self, url: str, part: Sink, cancel: threading.Event) -> None:
        self.url = url
        self.part = part
        self.cancel = cancel
        self.lock = threading.Lock()
        #: The version the bytes belong to: their size and validator, once known.
        self.total: int | None = None
        self.validator: str | None = None

    def save(self, ranges: Callable[[], list[Range]], live: list[bool] | None = None) -> None:
        """Record the ranges written so far (taken before the data is flushed).

        :param live: a flag that is false once the writer is done (nothing
            is saved then)
        :raises StorageError: when the checkpoint cannot be saved
        """
        with self.lock:
            if live is not None and not live[0]:
                return
            if self.total is None or self.validator is None or self.cancel.is_set():
                return
            self.part.save_checkpoint(Checkpoint(self.url, self.total, self.validator,
                                                 tuple(ranges())))  # fmt: skip

    def stop(self, live: list[bool]) -> None:
        """Clear *live*, waiting for a checkpoint being saved, if any."""
        with self.lock:
            live[0] = False

    def truncate(self, *, keep_version: bool = False) -> None:
        """Throw the bytes written away (and their checkpoint): starting over.

        :param keep_version: keep the validator (that of the response whose
            body is about to be written), instead of forgetting it
        """
        with self.lock:
            if not keep_version:
                self.validator = None
            self.part.truncate()

    def keep(self, ranges: list[Range]) -> bool:
        """Checkpoint *ranges* once the transfer has stopped (cancelled too), so
        that a later download resumes them.

        :return: whether a checkpoint was saved: not when there is nothing to
            keep, or the response gave no size or validator to resume with
        """
        with self.lock:
            if self.total is None or self.validator is None:
                return False
            if not any(end > start for start, end in ranges):
                return False
            try:
                self.part.save_checkpoint(Checkpoint(self.url, self.total, self.validator,
                                                     tuple(ranges)))  # fmt: skip
            except StorageError as exc:
                log.debug("Cannot keep %s for resuming: %s", self.part.dest, exc)
                return False
        return True
