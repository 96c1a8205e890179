"""What the command line shows while it downloads: bars, plain lines or JSON.

A :class:`Reporter` receives every download's events (from the download
threads), the files skipped, the evictions and the end of the run; it keeps
one :class:`Outcome` per file and prints as its subclass decides:

* :class:`~dlmanager.cli.bars.BarsReporter` (in :mod:`dlmanager.cli.bars`): ``rich``
  bars, one per active file under a total bar, with retries, resumes and
  evictions printed above them as they happen;
* :class:`LinesReporter`: one plain line per finished, skipped, up-to-date or failed file;
* :class:`JsonReporter`: one JSON object per file on standard output.

Each prints a summary at the end on standard error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import Any, TextIO

from dlmanager.cli.parsing import format_size, plural
from dlmanager.disk.partfile import leftover_progress
from dlmanager.download import Download
from dlmanager.errors import DownloadInterrupt, HTTPStatusError, TooLargeError
from dlmanager.events import DownloadEvent, DownloadState, EventCallback, EventKind
from dlmanager.redact import redact

__all__ = [
    "NOT_MODIFIED",
    "JsonReporter",
    "LinesReporter",
    "Outcome",
    "Reporter",
    "Track",
    "reason",
    "speed",
]

DOWNLOADED = "downloaded"
SKIPPED = "skipped"
#: A file already there that the server confirmed (``--revalidate``, ``--max-age``).
NOT_MODIFIED = "not_modified"
FAILED = "failed"
CANCELLED = "cancelled"


def reason(url: str, error: BaseException) -> str:
    """A one-line reason for *error*, without the URL the line already names,
    in the words of the command line."""
    if isinstance(error, DownloadInterrupt):
        return "cancelled"
    text = str(error) or type(error).__name__
    text = text.removeprefix(f"{redact(url)}: ")
    if isinstance(error, TooLargeError):
        text = text.replace("max_size", "--max-file-size")
    return text


@dataclasses.dataclass
class Outcome:
    """What happened to one file."""

    url: str
    path: str
    status: str  #: downloaded, skipped, not_modified, failed or cancelled
    size: int | None = None
    seconds: float = 0.0
    retries: int = 0
    resumes: int = 0
    error: BaseException | None = None
    note: str = ""  #: why a file was skipped, or how it was found up to date

    def as_json(self) -> dict[str, Any]:
        error = self.error
        return {
            "url": self.url,
            "path": self.path,
            "status": self.status,
            "size": self.size,
            "seconds": round(self.seconds, 3),
            "retries": self.retries,
            "resumes": self.resumes,
            "reason": self.note or (reason(self.url, error) if error is not None else None),
            "error": type(error).__name__ if error is not None else None,
            "http_status": error.status_code if isinstance(error, HTTPStatusError) else None,
        }


@dataclasses.dataclass
class Track:
    """A download in flight, as a reporter sees it."""

    created: float
    started: float | None = None
    retries: int = 0
    resumes: int = 0
    task: Any = None  # the rich task of its bar


class Reporter:
    """Collects outcomes; subclasses print them. Thread-safe."""

    #: Whether the summary's totals go to standard error (standard output
    #: being reserved for machine-readable lines).
    totals_on_stderr = False

    def __init__(
        self, out: TextIO, err: TextIO, *, quiet: bool = False, limit: str = "the size limit"
    ) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        #: What evictions keep the directory under, for the messages.
        self.limit = limit
        self.outcomes: list[Outcome] = []
        self.evicted: list[str] = []
        self.retries = 0
        self.resumes = 0
        self.interrupted = False
        self._lock = threading.RLock()
        self._tracks: dict[Download, Track] = {}
        self._begun = time.monotonic()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop any live display (before the summary is printed)."""

    # -- what the command tells it --------------------------------------------------------

    def hook(self) -> EventCallback:
        """An ``on_event`` hook for one download."""
        created = time.monotonic()

        def on_event(event: DownloadEvent) -> None:
            with self._lock:
                track = self._tracks.setdefault(event.download, Track(created))
                self._event(event, track)

        return on_event

    def skipped(self, url: str, path: str, note: str) -> None:
        self._finish(Outcome(url, path, SKIPPED, _size(path), note=note))

    def failed(self, url: str, path: str, error: BaseException) -> None:
        """A file that could not even start (bad name, bad URL)."""
        self._finish(Outcome(url, path, FAILED, error=error))

    def files_evicted(self, paths: list[str]) -> None:
        """The size limit removed *paths*: each is named, whatever the verbosity."""
        with self._lock:
            self.evicted.extend(paths)
            for path in paths:
                self._evicted(f"evicted {os.path.basename(path)} to stay under {self.limit}")

    # -- events ---------------------------------------------------------------------------

    def _event(self, event: DownloadEvent, track: Track) -> None:
        kind = event.kind
        name = os.path.basename(event.download.get_dest())
        if kind is EventKind.STARTED:
            track.started = time.monotonic()
            self._started(event, track)
        elif kind is EventKind.PROGRESS:
            self._progress(event, track)
        elif kind is EventKind.RETRYING:
            track.retries += 1
            self.retries += 1
            why = reason(event.download.get_url(), event.error) if event.error else "?"
            self._note(f"retrying {name} in {event.delay:.1f} s after: {why}")
        elif kind is EventKind.RESUMED:
            track.resumes += 1
            self.resumes += 1
            self._note(f"resuming {name} at {format_size(event.received)}")
        elif kind is EventKind.RESTARTED:
            self._note(f"starting {name} over: the bytes received so far were dropped")
        elif kind is EventKind.FINISHED:
            del self._tracks[event.download]
            self._finish(_outcome(event, track))

    def _started(self, event: DownloadEvent, track: Track) -> None:
        """A download's first response arrived."""

    def _progress(self, event: DownloadEvent, track: Track) -> None:
        """Bytes were written."""

    def _note(self, text: str) -> None:
        """Something worth telling as it happens (retry, resume, restart)."""

    def _evicted(self, text: str) -> None:
        """A file was removed: always told (on standard error unless a bar shows it)."""
        print(text, file=self.err)

    def _finish(self, outcome: Outcome) -> None:
        with self._lock:
            self.outcomes.append(outcome)
            self._show(outcome)

    def _show(self, outcome: Outcome) -> None:
        """Print one file's outcome."""

    # -- the end --------------------------------------------------------------------------

    def count(self, status: str) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.status == status]

    def summary(self) -> None:
        """Print the summary of the run: the totals on standard output (standard
        error when interrupted, or with :attr:`totals_on_stderr`), then what
        was interrupted and each failure on standard error."""
        downloaded, failed = self.count(DOWNLOADED), self.count(FAILED)
        if self.quiet and not failed and not self.interrupted:
            return
        stream = self.err if self.interrupted or self.totals_on_stderr else self.out
        print(f"dlmanager: {self._totals()}", file=stream)
        if self.interrupted:
            finished = ", ".join(os.path.basename(o.path) for o in downloaded) or "none"
            cancelled = self.count(CANCELLED)
            kept = [o for o in cancelled if leftover_progress(o.path) is not None]
            resume = (
                f"; {plural(len(kept), 'partial file')} kept (hidden): run the same command"
                " again to resume"
                if kept
                else ""
            )
            print(
                f"dlmanager: interrupted; finished before: {finished}; "
                f"{len(cancelled)} cancelled{resume}",
                file=self.err,
            )
        self._failures(failed)

    def _failures(self, failed: list[Outcome]) -> None:
        for outcome in failed:
            assert outcome.error is not None
            print(f"failed {outcome.url}: {reason(outcome.url, outcome.error)}", file=self.err)

    def _totals(self) -> str:
        downloaded = self.count(DOWNLOADED)
        size = sum(o.size or 0 for o in downloaded)
        parts = [
            f"{len(downloaded)} downloaded ({format_size(size)})",
            f"{len(self.count(SKIPPED))} skipped",
            f"{len(self.count(FAILED))} failed",
        ]
        current = self.count(NOT_MODIFIED)
        if current:
            parts.insert(2, f"{len(current)} up to date")
        if self.retries:
            parts.append(plural(self.retries, "retry"))
        if self.resumes:
            parts.append(f"{self.resumes} resumed")
        if self.evicted:
            parts.append(f"{len(self.evicted)} evicted")
        return f"{', '.join(parts)} in {time.monotonic() - self._begun:.1f} s"


def _size(path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def _outcome(event: DownloadEvent, track: Track) -> Outcome:
    download = event.download
    state = download.state
    seconds = time.monotonic() - (track.started if track.started is not None else track.created)
    outcome = Outcome(
        download.get_url(),
        download.get_dest(),
        DOWNLOADED,
        seconds=seconds,
        retries=track.retries,
        resumes=track.resumes,
    )
    if state is DownloadState.DONE and download.not_modified:
        outcome.status = NOT_MODIFIED
        by = download.done_by
        outcome.note = f"validated by {by}" if by else "not modified on the server"
        outcome.size = _size(outcome.path)
    elif state is DownloadState.DONE and download.done_by is not None:
        outcome.status = SKIPPED
        outcome.note = f"done by {download.done_by}"
        outcome.size = _size(outcome.path)
    elif state is DownloadState.DONE:
        there = _size(outcome.path) if download.fileobj is None else None
        outcome.size = there or event.received
    else:
        outcome.status = CANCELLED if state is DownloadState.CANCELLED else FAILED
        outcome.error = event.error or DownloadInterrupt()
        outcome.size = event.received
    return outcome


def speed(outcome: Outcome) -> str:
    """``, 12.0 MiB/s`` for a file that took some time, else nothing."""
    if outcome.size is None or outcome.seconds <= 0:
        return ""
    return f", {format_size(outcome.size / outcome.seconds)}/s"


class LinesReporter(Reporter):
    """One plain line per file: ``downloaded URL -> PATH (...)`` on standard output,
    ``skipped URL (...)`` and ``up to date URL (...)`` too, ``failed URL: reason``
    on standard error; with
    :attr:`notes` (unless ``--quiet``), one line per retry, resume and restart
    on standard error too, as they happen."""

    def __init__(self, out: TextIO, err: TextIO, *, quiet: bool = False, limit: str = "") -> None:
        super().__init__(out, err, quiet=quiet, limit=limit or "the size limit")
        self.notes = not quiet

    def _note(self, text: str) -> None:
        if self.notes:
            print(text, file=self.err)

    def _show(self, outcome: Outcome) -> None:
        if outcome.status == DOWNLOADED:
            size = format_size(outcome.size or 0)
            detail = f"{size} in {outcome.seconds:.1f} s{speed(outcome)}"
            print(f"downloaded {outcome.url} -> {outcome.path} ({detail})", file=self.out)
        elif outcome.status == SKIPPED:
            print(f"skipped {outcome.url} ({outcome.note})", file=self.out)
        elif outcome.status == NOT_MODIFIED:
            print(f"up to date {outcome.url} ({outcome.note})", file=self.out)
        elif outcome.status == FAILED:
            assert outcome.error is not None
            print(f"failed {outcome.url}: {reason(outcome.url, outcome.error)}", file=self.err)
        self.out.flush()

    def _failures(self, failed: list[Outcome]) -> None:
        """Each failure already has its line."""


class JsonReporter(Reporter):
    """One JSON object per file on standard output, as each file ends."""

    totals_on_stderr = True

    def _show(self, outcome: Outcome) -> None:
        print(json.dumps(outcome.as_json(), sort_keys=True), file=self.out)
        self.out.flush()
