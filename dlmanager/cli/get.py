"""``dlmanager [get] URL...``: download files into a directory."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import NoReturn, TextIO

from dlmanager.checksum import parse_checksum
from dlmanager.cli.display import BarsReporter, JsonReporter, LinesReporter, Reporter
from dlmanager.cli.output import pipe_closed
from dlmanager.cli.parsing import Item, format_size, parse_manifest, parse_size
from dlmanager.config import DEFAULT_CONNECTIONS
from dlmanager.download import Download
from dlmanager.manager import DownloadManager
from dlmanager.names import check_name_length, name_from_url, name_max, validate_fname
from dlmanager.persist_limit import PersistLimit
from dlmanager.transport.direct import Direct

__all__ = ["add_arguments", "check_arguments", "download_items", "run"]


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least *minimum*."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {value!r}")
        return number

    return parse


def seconds(value: str) -> float:
    """An argparse type: a number of seconds above 0."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {value!r}")
    return number


def size(value: str) -> int:
    """An argparse type: a size such as ``500M`` or ``2G``."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ca_bundle(value: str) -> str:
    """An argparse type: a readable CA bundle file, or a directory of hashed certificates."""
    if os.path.isdir(value) or (os.path.isfile(value) and os.access(value, os.R_OK)):
        return value
    raise argparse.ArgumentTypeError(f"no readable CA bundle at {value!r}")


def add_limit_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--max-size`` and ``--max-files``, shared with ``cache prune``."""
    parser.add_argument(
        "--max-size",
        type=size,
        required=required,
        metavar="SIZE",
        help="keep the directory under SIZE (500M, 2G, 1.5GiB, 100MB...), removing the "
        "least recently used files; the most recent one is always kept",
    )
    parser.add_argument(
        "--max-files",
        type=int_at_least(1),
        metavar="N",
        help="keep at most N files in the directory, removing the least recently used",
    )


def add_output_arguments(parser: argparse.ArgumentParser) -> None:
    """``--quiet``, ``--json`` and ``--verbose``, shared with ``demo``."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bars: one plain line per file; no summary unless something failed",
    )
    output.add_argument(
        "--json", action="store_true", help="print one JSON object per file, for scripts"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log retries, resumes and evictions (-vv: everything) on standard error",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``get``."""
    parser.add_argument("urls", nargs="*", metavar="URL", help="http(s) URLs to download")
    parser.add_argument("-d", "--dest", default=".", metavar="DIR", help="destination directory")
    parser.add_argument(
        "-i",
        "--input-file",
        metavar="FILE",
        help="read URLs from FILE ('-' for standard input): one per line, optionally "
        "followed by a file name and a checksum, as in 'URL NAME sha256:HEX'",
    )
    parser.add_argument(
        "-o", "--output", metavar="NAME", help="file name in DIR for the one URL given"
    )
    parser.add_argument(
        "-j", "--jobs", type=int_at_least(1), default=4, help="files downloaded in parallel"
    )
    parser.add_argument(
        "-x",
        "--connections",
        type=int_at_least(1),
        default=DEFAULT_CONNECTIONS,
        help="connections per file, when the server allows ranges (default %(default)s)",
    )
    add_limit_arguments(parser)
    parser.add_argument(
        "--max-file-size",
        type=size,
        metavar="SIZE",
        help="fail a file bigger than SIZE (500M, 2G...): announced so, or whose body goes "
        "past it, which is then cut off",
    )
    parser.add_argument(
        "--checksum",
        metavar="ALGO:HEX",
        help="checksum the file must match, e.g. sha256:... (one URL only)",
    )
    parser.add_argument(
        "--ca-bundle",
        type=ca_bundle,
        metavar="FILE",
        help="verify HTTPS servers against the CA certificates in FILE (PEM) instead of the "
        "default ones (REQUESTS_CA_BUNDLE also works)",
    )
    parser.add_argument(
        "--retries", type=int_at_least(0), default=None, help="retries per file (0 disables)"
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="connect, read and stall timeout",
    )
    add_output_arguments(parser)


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Read ``-i`` and check what argparse cannot; exits with status 2 on bad usage.

    Every file's name is decided here, before anything starts. Sets
    ``args.items``: the files to download in order, each with its name, the
    same URL listed twice (under the same name) once.
    """
    try:
        items = parse_manifest(args.urls, "command line")
        if args.input_file:
            items += _read_manifest(args.input_file)
    except OSError as exc:
        bad_usage(f"cannot read {args.input_file}: {exc.strerror or exc}")
    except UnicodeDecodeError as exc:
        bad_usage(f"cannot read {args.input_file}: not UTF-8 text ({exc.reason})")
    except ValueError as exc:
        bad_usage(str(exc))
    if not items:
        parser.error("no URL given (pass URLs or -i FILE)")
    for option in ("--output", "--checksum"):
        if getattr(args, option[2:]) is not None and len({i.url for i in items}) != 1:
            bad_usage(f"{option} needs exactly one URL")
    if args.output is not None or args.checksum is not None:
        item = items[0]
        fname, checksum = item.fname, item.checksum
        try:
            if args.output is not None:
                fname = validate_fname(args.output)
        except ValueError as exc:
            bad_usage(f"--output: {exc}")
        try:
            if args.checksum is not None:
                checksum = parse_checksum(args.checksum)
        except ValueError as exc:
            bad_usage(f"--checksum: {exc}")
        items = [Item(item.url, fname, checksum)]
    args.items = _named(items, name_max(args.dest))


def _named(items: list[Item], longest: int) -> list[Item]:
    """*items*, each with its file name; the same file asked twice once.

    Exits with status 2 (bad usage) for a URL that gives no usable name, a
    name too long, two URLs for one name, or one file with two checksums.
    """
    by_name: dict[str, Item] = {}
    for item in items:
        try:
            name = item.fname or name_from_url(item.url, hint=_NAME_HINT)
            check_name_length(name, longest)
        except ValueError as exc:
            bad_usage(f"{exc}" if item.fname is None else f"{exc} ({_NAME_HINT})")
        first = by_name.get(name)
        if first is None:
            by_name[name] = Item(item.url, name, item.checksum)
        elif first.url != item.url:
            bad_usage(f"two URLs for the file name {name!r}: {first.url} and {item.url}")
        elif item.checksum is not None and first.checksum not in (None, item.checksum):
            bad_usage(f"two checksums for {name}: {first.checksum} and {item.checksum}")
        elif item.checksum is not None:
            by_name[name] = Item(first.url, name, item.checksum)
    return list(by_name.values())


#: How to name a file when its URL gives no usable name.
_NAME_HINT = "name it with -o NAME, or with 'URL NAME' in an -i file"


def bad_usage(message: str) -> NoReturn:
    """Say what is wrong in one line on standard error and exit with status 2."""
    print(f"dlmanager: {message}", file=sys.stderr)
    sys.exit(2)


def _read_manifest(path: str) -> list[Item]:
    if path == "-":
        return parse_manifest(sys.stdin, "<stdin>")
    with open(path, encoding="utf-8") as lines:
        return parse_manifest(lines, path)


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
    return BarsReporter(out, err, files=files, limit=limit)


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Download what *args* asks for; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    limit = None
    if args.max_size is not None or args.max_files is not None:
        limit = PersistLimit(args.max_size or 0, file_limit=1, max_files=args.max_files)
    # dlmanager's own transport: the rules of a DownloadSession, without requests.
    with Direct(args.jobs * args.connections, verify=args.ca_bundle or True) as session:
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
            )
        except (OSError, ValueError) as exc:
            print(f"dlmanager: {exc}", file=err)
            return 2
        reporter = make_reporter(args, out, err, len(args.items))
        manager.reporter = reporter
        with logging_to(args.verbose, reporter):
            return download_items(manager, args.items, reporter)


def download_items(manager: DownloadManager, items: Iterable[Item], reporter: Reporter) -> int:
    """Download *items* with *manager*, report, close both; return the exit status.

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
                _start(manager, item, reporter, started)
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
    manager: DownloadManager, item: Item, reporter: Reporter, started: dict[Download, None]
) -> None:
    assert item.fname is not None  # named by check_arguments
    path = manager.get_dest(item.fname)
    try:
        download = manager.download(
            item.url, item.fname, checksum=item.checksum, on_event=reporter.hook()
        )
    except ValueError as exc:
        reporter.failed(item.url, path, exc)
        return
    if download is None:
        reporter.skipped(item.url, path, f"already in {manager.destdir}")
    else:
        started[download] = None


@contextlib.contextmanager
def logging_to(verbosity: int, reporter: Reporter) -> Iterator[None]:
    """Send the ``dlmanager`` logger's records to standard error for the block."""
    logger = logging.getLogger("dlmanager")
    level = (logging.WARNING, logging.INFO)[verbosity] if verbosity < 2 else logging.DEBUG
    handler: logging.Handler
    if isinstance(reporter, BarsReporter):
        from rich.logging import RichHandler

        handler = RichHandler(console=reporter.console, show_path=False, show_time=False)
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
