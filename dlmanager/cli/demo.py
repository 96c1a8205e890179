"""``dlmanager demo``: the whole product at work, with no network needed.

An embedded server on 127.0.0.1 serves generated "builds", some through
faults (a connection dropped mid-body, a stall, a 503), and dlmanager
downloads them all, checksummed, into a directory capped below their total
size: the retries, resumes and evictions show as they happen, then a summary
says what the server did and checks every file left in the directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import tempfile
from typing import TextIO

from dlmanager.checksum import parse_checksum
from dlmanager.cli.demo_files import DemoFile, Fault
from dlmanager.cli.demo_server import DemoServer
from dlmanager.cli.display import LinesReporter, Reporter
from dlmanager.cli.get import ReportingManager, download_items, logging_to, make_reporter
from dlmanager.cli.parsing import Item, format_size, plural
from dlmanager.disk.layout import is_temporary
from dlmanager.persist_limit import PersistLimit

__all__ = ["FILES", "run"]

MIB = 1024 * 1024
#: The files served, with their faults. Their total is above CAP, so the
#: least recently used ones are evicted as the others arrive.
FILES = (
    DemoFile("build-01.zip", 24 * MIB),  # big enough to be split over 4 connections
    DemoFile("build-02.zip", 16 * MIB, Fault.DROP, at=5 * MIB),
    DemoFile("build-03.zip", 12 * MIB, Fault.STALL, at=3 * MIB, stall=60.0),
    DemoFile("build-04.zip", 8 * MIB, Fault.UNAVAILABLE),
    DemoFile("build-05.zip", 10 * MIB),
    DemoFile("build-06.zip", 6 * MIB),
    DemoFile("build-07.zip", 4 * MIB),
    DemoFile("build-08.zip", 2 * MIB),
)
CAP = 40 * MIB
RATE = 8 * MIB  #: bytes per second per connection: slow enough to watch
JOBS = 3
CONNECTIONS = 4
TIMEOUT = 2.0  #: seconds: the stalled connection is given up after this


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Serve, download, summarise; the exit status of the downloads (0, 1 or 130)."""
    report = err if args.json else out
    with contextlib.ExitStack() as stack:
        dest = args.dest or stack.enter_context(tempfile.TemporaryDirectory(prefix="dlmanager-"))
        server = stack.enter_context(DemoServer(FILES, rate=RATE))
        items = [
            Item(server.url(f.name), f.name, parse_checksum(f"sha256:{server.sha256(f.name)}"))
            for f in FILES
        ]
        total = sum(f.size for f in FILES)
        print(
            f"Serving {plural(len(FILES), 'file')} ({format_size(total)}) on {server.base_url} at "
            f"{format_size(RATE)}/s per connection, with a dropped connection, a stall and "
            f"a 503; downloading them into {dest}, capped at {format_size(CAP)}.",
            file=report,
        )
        try:
            manager = ReportingManager(
                dest,
                persist_limit=PersistLimit(CAP, file_limit=1, include_foreign=False),
                max_workers=JOBS,
                connections=CONNECTIONS,
                timeout=TIMEOUT,
            )
        except OSError as exc:
            print(f"dlmanager: {exc}", file=err)
            return 2
        reporter = make_reporter(args, out, err, len(items))
        if isinstance(reporter, LinesReporter):
            reporter.notes = True  # the retries and evictions are the point
        manager.reporter = reporter
        with logging_to(args.verbose, reporter):
            status = download_items(manager, items, reporter)
        _summary(server, reporter, dest, report)
        if status == 0 and not _check(server, dest, report):
            status = 1
    return status


def _summary(server: DemoServer, reporter: Reporter, dest: str, out: TextIO) -> None:
    stats = server.stats
    faults = ", ".join(f"{count} {fault.value}" for fault, count in stats.faults.items() if count)
    print(
        f"The server answered {plural(stats.requests, 'request')} "
        f"({stats.range_requests} for ranges) "
        f"and sent {format_size(stats.bytes_sent)}; faults injected: {faults or 'none'}.",
        file=out,
    )
    print(
        f"dlmanager retried {plural(reporter.retries, 'time')}, resumed "
        f"{plural(reporter.resumes, 'time')} and evicted {plural(len(reporter.evicted), 'file')}"
        " to stay under the cap.",
        file=out,
    )


def _check(server: DemoServer, dest: str, out: TextIO) -> bool:
    """Whether every file in *dest* is one the server sent, intact, under the cap."""
    names = sorted(n for n in os.listdir(dest) if not n.startswith("."))
    size = sum(os.path.getsize(os.path.join(dest, n)) for n in names)
    wrong = [n for n in names if n in server.files and _sha256(dest, n) != server.sha256(n)]
    leftovers = [n for n in os.listdir(dest) if is_temporary(n)]
    print(
        f"{dest} holds {plural(len(names), 'file')}, {format_size(size)} "
        f"(cap {format_size(CAP)}); {len(wrong)} differ from what the server sent; "
        f"{plural(len(leftovers), 'temporary file')} left.",
        file=out,
    )
    return not wrong and not leftovers and size <= CAP


def _sha256(dest: str, name: str) -> str:
    digest = hashlib.sha256()
    with open(os.path.join(dest, name), "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
