"""The ``dlmanager`` command line.

``dlmanager URL... [-d DIR] [-i FILE] [-j JOBS] [-x CONNECTIONS] [--retries N]
[--timeout SECONDS] [--checksum ALGO:HEX] [--quiet]``

Exit status: 0 when every file is in place, 1 when any download failed (one
line per failure on stderr), 2 for bad usage, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

from dlmanager import __version__
from dlmanager.checksum import parse_checksum
from dlmanager.config import DEFAULT_CONNECTIONS
from dlmanager.download import Download
from dlmanager.errors import DownloadInterrupt
from dlmanager.manager import DownloadManager

__all__ = ["main", "parse_args", "run"]


def _int_at_least(minimum: int) -> Callable[[str], int]:
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


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlmanager",
        description="Download files over HTTP(S) into a directory, with retries and resume.",
    )
    parser.add_argument("urls", nargs="*", metavar="URL", help="http(s) URLs to download")
    parser.add_argument("-d", "--dest", default=".", metavar="DIR", help="destination directory")
    parser.add_argument(
        "-i",
        "--input-file",
        metavar="FILE",
        help="read URLs from FILE, one per line ('-' for standard input)",
    )
    parser.add_argument(
        "-j", "--jobs", type=_int_at_least(1), default=4, help="files downloaded in parallel"
    )
    parser.add_argument(
        "-x",
        "--connections",
        type=_int_at_least(1),
        default=DEFAULT_CONNECTIONS,
        help="connections per file, when the server allows ranges (default %(default)s)",
    )
    parser.add_argument(
        "--checksum",
        metavar="ALGO:HEX",
        help="checksum the file must match, e.g. sha256:... (one URL only)",
    )
    parser.add_argument(
        "--retries", type=_int_at_least(0), default=None, help="retries per file (0 disables)"
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="connect, read and stall timeout",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse *argv*; exits with status 2 on bad usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.input_file:
        try:
            args.urls = [*args.urls, *_read_urls(args.input_file)]
        except OSError as exc:
            parser.error(f"cannot read {args.input_file}: {exc.strerror or exc}")
        except UnicodeDecodeError as exc:
            parser.error(f"cannot read {args.input_file}: not UTF-8 text ({exc.reason})")
    if not args.urls:
        parser.error("no URL given (pass URLs or -i FILE)")
    if args.checksum is not None:
        if len(set(args.urls)) != 1:
            parser.error("--checksum needs exactly one URL")
        try:
            parse_checksum(args.checksum)
        except ValueError as exc:
            parser.error(f"--checksum: {exc}")
    return args


def _read_urls(path: str) -> list[str]:
    if path == "-":
        return list(_url_lines(sys.stdin))
    with open(path, encoding="utf-8") as lines:
        return list(_url_lines(lines))


def _url_lines(lines: Iterable[str]) -> Iterable[str]:
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield stripped


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Download what *args* asks for; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        manager = DownloadManager(
            args.dest,
            max_workers=args.jobs,
            retry=args.retries,
            timeout=args.timeout,
            connections=args.connections,
        )
    except (OSError, ValueError) as exc:
        print(f"dlmanager: {exc}", file=err)
        return 2
    failures: list[tuple[str, BaseException]] = []
    started: list[Download] = []
    try:
        for url in dict.fromkeys(args.urls):
            try:
                download = manager.download(url, checksum=args.checksum)
            except ValueError as exc:
                failures.append((url, exc))
                continue
            if download is None:
                if not args.quiet:
                    print(f"skipped {url} (already in {args.dest})", file=out)
            elif download in started:
                if not args.quiet:
                    print(f"skipped {url} (same file as {download.get_url()})", file=out)
            else:
                started.append(download)
        for download in started:
            download.wait(raise_if_error=False)
            error = download.error()
            if error is not None:
                failures.append((download.get_url(), error[1]))
            elif not args.quiet:
                print(f"downloaded {download.get_url()} -> {download.get_dest()}", file=out)
    except KeyboardInterrupt:
        manager.close()
        print("dlmanager: interrupted; partial files removed", file=err)
        return 130
    finally:
        manager.close()
    for url, failure in failures:
        cancelled = isinstance(failure, DownloadInterrupt)
        reason = "cancelled" if cancelled else str(failure) or repr(failure)
        reason = reason.removeprefix(f"{url}: ")
        print(f"failed {url}: {reason}", file=err)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run(args)
