"""``dlmanager [get] URL...``: download files into a directory.

Its options, and the checks of them, are in :mod:`dlmanager.cli.options`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Iterable, Iterator
from typing import TextIO

from dlmanager.cli.display import JsonReporter, LinesReporter, Reporter
from dlmanager.cli.output import pipe_closed
from dlmanager.cli.parsing import Item, format_age, format_size
from dlmanager.download import Download
from dlmanager.manager import DownloadManager
from dlmanager.persist_limit import PersistLimit
from dlmanager.request import RequestOptions
from dlmanager.transport.direct import Direct

__all__ = ["ReportingManager", "download_items", "logging_to", "make_reporter", "run"]


class ReportingManager(DownloadManager):
    """A manager that tells the reporter about evictions as they happen."""

    reporter: Reporter

    def _files_evicted(self, paths: list[str]) -> None:
        super()._files_evicted(paths)
        self.reporter.files_evicted(paths)


def make_reporter(args: argparse.Namespace, out: TextIO, err: TextIO, files: int) -> Reporter:
    """Bars on a terminal; plain lines with ``--quiet`` or when redirected; or JSON."""
    limits = []
    if getattr(args, "max_size", None) is not None:
        limits.append(f"--max-size {format_size(args.max_size)}")
    if getattr(args, "max_files", None) is not None:
        limits.append(f"--max-files {args.max_files}")
    limit = " and ".join(limits) or "the size limit"
    if args.json:
        return JsonReporter(out, err, limit=limit)
    if args.quiet or not out.isatty():
        return LinesReporter(out, err, quiet=args.quiet, limit=limit)
    from dlmanager.cli.bars import BarsReporter

    return BarsReporter(out, err, files=files, limit=limit)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Download what *args* asks for; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    limit = None
    if args.max_size is not None or args.max_files is not None:
        limit = PersistLimit(
            args.max_size or 0,
            file_limit=1,
            max_files=args.max_files,
            include_foreign=args.include_foreign,
        )
    # dlmanager's own transport: the rules of a DownloadSession, without requests.
    with Direct(args.jobs * args.connections, verify=args.ca_bundle or True) as session:
        if args.stdout:  # -o -
            from dlmanager.cli.stdout import to_stdout

            return to_stdout(args, session, out, err)
        try:
            manager = ReportingManager(
                args.dest,
                session=session,
                persist_limit=limit,
                max_workers=args.jobs,
                retry=args.retries,
                timeout=args.timeout,
                connections=args.connections,
                max_size=args.max_file_size,
                max_rate=getattr(args, "limit_rate_total", None),
            )
        except (OSError, ValueError) as exc:
            print(f"dlmanager: {exc}", file=err)
            return 2
        reporter = make_reporter(args, out, err, len(args.items))
        manager.reporter = reporter
        with logging_to(args.verbose, reporter):
            return download_items(
                manager,
                args.items,
                reporter,
                revalidate=args.revalidate,
                max_age=args.max_age,
                request=getattr(args, "request", None),
                max_rate=getattr(args, "limit_rate", None),
            )


def download_items(
    manager: DownloadManager,
    items: Iterable[Item],
    reporter: Reporter,
    *,
    revalidate: bool = False,
    max_age: float | None = None,
    request: RequestOptions | None = None,
    max_rate: float | None = None,
) -> int:
    """Download *items* with *manager*, report, close both; return the exit status.

    *revalidate* and *max_age* are those of :meth:`DownloadManager.download`:
    a file already there that the server confirms is reported up to date.
    *request* is sent for every item; *max_rate* limits each (bytes per second).

    Ctrl-C cancels every download but keeps what each received, hidden, for
    the same command to resume (status 130). A closed standard output (the
    reader of a pipe is gone) stops everything the same way, silently: the
    caller then ends as if killed by ``SIGPIPE``.
    """
    started: dict[Download, None] = {}
    try:
        with reporter:
            for item in items:
                if pipe_closed.is_set():
                    break
                _start(manager, item, reporter, started, revalidate, max_age, request, max_rate)
            # Not Download.wait(): a Ctrl-C there would cancel that download
            # before the partial bytes can be kept. join() returns the moment
            # a download is over; the slice only bounds how late a closed
            # standard output is noticed.
            pending = list(started)
            while pending and not pipe_closed.is_set():
                if pending[-1].join(_POLL):
                    pending.pop()
            if pipe_closed.is_set():
                manager.cancel(keep_partial=True)
                manager.wait(raise_if_error=False)
    except KeyboardInterrupt:
        reporter.interrupted = True
        manager.cancel(keep_partial=True)
        manager.wait(raise_if_error=False)
    finally:
        manager.close()
    if pipe_closed.is_set():
        return 1
    reporter.summary()
    if reporter.interrupted:
        return 130
    return 1 if reporter.count("failed") else 0


#: How late, at most, the main thread notices a closed standard output while it waits, in seconds.
_POLL = 0.1


def _start(
    manager: DownloadManager,
    item: Item,
    reporter: Reporter,
    started: dict[Download, None],
    revalidate: bool,
    max_age: float | None,
    request: RequestOptions | None,
    max_rate: float | None = None,
) -> None:
    by_server = item.fname is None  # --content-disposition: the server names it
    path = manager.destdir if item.fname is None else manager.get_dest(item.fname)
    try:
        download = manager.download(
            item.url,
            item.fname,
            checksum=item.checksum,
            mirrors=item.mirrors,
            on_event=reporter.hook(),
            revalidate=revalidate,
            max_age=max_age,
            max_rate=max_rate,
            use_content_disposition=by_server,
            **(request.keywords() if request is not None else {}),
        )
    except ValueError as exc:
        reporter.failed(item.url, path, exc)
        return
    if download is not None:
        started[download] = None
        return
    note = f"already in {manager.destdir}"
    info = manager.info(item.fname) if max_age is not None and item.fname else None
    if info is not None:  # used without a request: validated within --max-age
        note += f", validated {format_age(info.age())} ago"
    reporter.skipped(item.url, path, note)


@contextlib.contextmanager
def logging_to(verbosity: int, reporter: Reporter) -> Iterator[None]:
    """Send the ``dlmanager`` logger's records to standard error for the block."""
    logger = logging.getLogger("dlmanager")
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    handler: logging.Handler
    console = getattr(reporter, "console", None)  # a BarsReporter's
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, show_time=False)
    else:
        handler = logging.StreamHandler(reporter.err)
        handler.setFormatter(logging.Formatter("dlmanager: %(levelname)s: %(message)s"))
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
