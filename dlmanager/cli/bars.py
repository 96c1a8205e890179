"""The bars the command shows on a terminal: a reporter drawn with ``rich``.

:class:`BarsReporter` is the :class:`~dlmanager.cli.display.Reporter` of a
terminal; ``rich`` is imported when one is made, so a download whose output
is not a terminal never loads it.
"""

from __future__ import annotations

import os
from typing import TextIO

from dlmanager.cli.display import (
    DOWNLOADED,
    FAILED,
    NOT_MODIFIED,
    SKIPPED,
    Outcome,
    Reporter,
    Track,
    reason,
    speed,
)
from dlmanager.cli.parsing import format_size, plural
from dlmanager.download import Download
from dlmanager.events import DownloadEvent, EventKind

__all__ = ["BarsReporter"]


class BarsReporter(Reporter):
    """``rich`` bars on a terminal: a total bar and one bar per active file."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        quiet: bool = False,
        files: int = 0,
        limit: str = "the size limit",
    ) -> None:
        super().__init__(out, err, quiet=quiet, limit=limit)
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )
        from rich.table import Column

        self.console = Console(file=out, highlight=False)
        self.progress = Progress(
            TextColumn(
                "{task.description}",
                table_column=Column(width=28, no_wrap=True, overflow="ellipsis"),
            ),
            BarColumn(bar_width=None),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            expand=True,
        )
        self._files = files
        self._sizes: dict[Download, int] = {}
        self._done_bytes = 0
        self._total_task = self.progress.add_task(self._total_label(), total=None)
        self.progress.start()

    def files_expected(self, files: int) -> None:
        with self._lock:
            self._files = files
            self._update_total()

    def close(self) -> None:
        self.progress.stop()

    def _total_label(self) -> str:
        ended = len(self.outcomes)
        return f"[bold]total[/] {ended}/{plural(self._files, 'file')}"

    def _update_total(self) -> None:
        active = sum(self._sizes.values())
        known = [t.total for t in self.progress.tasks if t.id != self._total_task and t.total]
        self.progress.update(
            self._total_task,
            description=self._total_label(),
            completed=self._done_bytes + active,
            total=(self._done_bytes + sum(known)) or None,
        )

    def _started(self, event: DownloadEvent, track: Track) -> None:
        name = os.path.basename(event.download.get_dest())
        track.task = self.progress.add_task(name, total=event.total, completed=event.received)
        self._sizes[event.download] = event.received
        self._update_total()

    def _progress(self, event: DownloadEvent, track: Track) -> None:
        if track.task is None:
            return
        self.progress.update(track.task, completed=event.received, total=event.total)
        self._sizes[event.download] = event.received
        done = self._done_bytes + sum(self._sizes.values())
        self.progress.update(self._total_task, completed=done)

    def _event(self, event: DownloadEvent, track: Track) -> None:
        if event.kind is EventKind.FINISHED:
            if track.task is not None:
                self.progress.remove_task(track.task)
            self._sizes.pop(event.download, None)
        super()._event(event, track)

    def _note(self, text: str) -> None:
        self.console.print(f"  [yellow]{_escape(text)}[/]")

    def _evicted(self, text: str) -> None:
        self._note(text)

    def _show(self, outcome: Outcome) -> None:
        name = _escape(os.path.basename(outcome.path))
        if outcome.status == DOWNLOADED:
            self._done_bytes += outcome.size or 0
            detail = f"{format_size(outcome.size or 0)} in {outcome.seconds:.1f} s"
            self.console.print(f"[green]done[/]     {name}  {detail}{speed(outcome)}")
        elif outcome.status == SKIPPED:
            self.console.print(f"[cyan]skipped[/]  {name}  ({_escape(outcome.note)})")
        elif outcome.status == NOT_MODIFIED:
            self.console.print(f"[cyan]up to date[/] {name}  ({_escape(outcome.note)})")
        elif outcome.status == FAILED:
            assert outcome.error is not None
            why = _escape(reason(outcome.url, outcome.error))
            self.console.print(f"[red]failed[/]   {name}  {why}")
        self._update_total()


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
