"""What a download tells its caller: its state, its events, and the progress callback.

:class:`Events` is the one object a download's transfer reports to: it keeps
the bytes received (a high-water mark: never backwards, never counted twice)
and the total, calls the 0.1.1-compatible ``progress(download, current,
total)`` callback and the ``on_event(DownloadEvent)`` hook, one at a time.
"""

from __future__ import annotations

import dataclasses
import enum
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlmanager.download import Download

__all__ = [
    "DownloadEvent",
    "DownloadState",
    "EventCallback",
    "EventKind",
    "Events",
    "ProgressCallback",
]

ProgressCallback = Callable[["Download", int, int], Any]
EventCallback = Callable[["DownloadEvent"], Any]


class DownloadState(enum.Enum):
    """Where a :class:`~dlmanager.Download` is in its life."""

    PENDING = "pending"  #: created, not started
    QUEUED = "queued"  #: started, waiting for a free transfer slot
    RUNNING = "running"  #: transferring
    DONE = "done"  #: the file is in place
    FAILED = "failed"  #: gave up; see :meth:`Download.error`
    CANCELLED = "cancelled"  #: cancelled; nothing left on disk


class EventKind(enum.Enum):
    """What a :class:`DownloadEvent` reports."""

    STARTED = "started"  #: response headers of the first attempt arrived
    PROGRESS = "progress"  #: a chunk was written
    RETRYING = "retrying"  #: an attempt failed; the next starts after ``delay``
    RESUMED = "resumed"  #: an attempt continues from ``received`` bytes
    RESTARTED = "restarted"  #: the bytes received so far were thrown away
    FINISHED = "finished"  #: the download ended (see ``download.state``)


@dataclasses.dataclass(frozen=True)
class DownloadEvent:
    """What the keyword-only ``on_event`` hook of a :class:`~dlmanager.Download` receives.

    Unlike the 0.1.1-compatible ``progress`` callback, it is called even when
    the total size is unknown.

    :ivar received: bytes of the file received so far (never counted twice)
    :ivar total: the expected size, or None when unknown
    :ivar error: the attempt's error (RETRYING) or the final one (FINISHED)
    :ivar delay: seconds until the next attempt (RETRYING)
    """

    kind: EventKind
    download: Download
    received: int
    total: int | None
    error: BaseException | None = None
    delay: float = 0.0


class Events:
    """The events of one download, told to its callbacks one at a time.

    Called from the download's thread and from its connections' threads.
    """

    def __init__(
        self,
        download: Download,
        progress: ProgressCallback | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        self.download = download
        self._progress = progress
        self._on_event = on_event
        self._lock = threading.RLock()  # held while a callback runs
        #: Bytes of the file received so far (the high-water mark).
        self.received = 0
        #: The file's size, once known.
        self.total: int | None = None
        self._started = False

    def set_progress(self, progress: ProgressCallback | None) -> None:
        with self._lock:
            self._progress = progress

    def set_total(self, total: int | None) -> None:
        """A response told the file's size (or that it is unknown); the first
        one is the ``STARTED`` event."""
        self.total = total
        if not self._started:
            self._started = True
            self.emit(EventKind.STARTED)

    def resume_from(self, received: int, total: int) -> None:
        """The download starts with *received* bytes of *total* held already."""
        self.total = total
        self.received = received

    def advance(self, received: int) -> None:
        """*received* bytes of the file are in place: report the progress."""
        with self._lock:
            if received > self.received:
                self.received = received
            if self._progress is not None and self.total is not None:
                self._progress(self.download, self.received, self.total)
            self.emit(EventKind.PROGRESS)

    def retrying(self, error: BaseException, delay: float) -> None:
        self.emit(EventKind.RETRYING, error=error, delay=delay)

    def resumed(self) -> None:
        self.emit(EventKind.RESUMED)

    def restarted(self) -> None:
        self.emit(EventKind.RESTARTED)

    def emit(
        self, kind: EventKind, *, error: BaseException | None = None, delay: float = 0.0
    ) -> None:
        hook = self._on_event
        if hook is not None:
            with self._lock:
                hook(DownloadEvent(kind, self.download, self.received, self.total, error, delay))
