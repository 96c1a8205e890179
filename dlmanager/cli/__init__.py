"""The ``dlmanager`` command line.

::

    dlmanager [get] URL... [-d DIR] [-i FILE] [-o NAME] [-j JOBS] [-x CONNECTIONS]
                           [--max-size SIZE] [--max-files N] [--max-file-size SIZE]
                           [--checksum ALGO:HEX] [--ca-bundle FILE] [--retries N]
                           [--timeout S] [--quiet | --json] [-v]
    dlmanager cache ls DIR | prune DIR --max-size SIZE [--max-files N] | clean DIR
    dlmanager demo

Exit status: 0 when every file is in place, 1 when any download failed (with
a summary of each failure), 2 for bad usage, 130 when interrupted (Ctrl-C
cancels every transfer and removes their temporary files).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from typing import TextIO

from dlmanager import __version__
from dlmanager.cli import cache, demo, get

__all__ = ["build_parser", "main", "parse_args", "run"]

COMMANDS = ("get", "cache", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlmanager",
        description="Download files over HTTP(S) into a directory, with retries, resume, "
        "several connections per file and a size limit.",
        epilog="'dlmanager URL...' is short for 'dlmanager get URL...'. "
        "'dlmanager COMMAND --help' describes each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    get_parser = commands.add_parser(
        "get",
        help="download URLs into a directory (the default command)",
        description="Download URLs into a directory. Files already there are skipped.",
    )
    get.add_arguments(get_parser)
    get_parser.set_defaults(check=functools.partial(get.check_arguments, get_parser))
    cache.add_arguments(
        commands.add_parser(
            "cache",
            help="list, prune or clean a download directory",
            description="Look after a download directory.",
        )
    )
    demo.add_arguments(
        commands.add_parser(
            "demo",
            help="watch dlmanager survive a flaky server (no network needed)",
            description=demo.DESCRIPTION,
        )
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse *argv*; exits with status 2 on bad usage (0 for --help and --version)."""
    argv = list(argv)
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "get")
    parser = build_parser()
    if not argv:
        parser.error("no URL given (pass URLs, -i FILE, or a command; see --help)")
    if argv[0] == "get":
        # URLs and options in any order, as with curl and wget.
        args = _get_parser(parser).parse_intermixed_args(argv[1:])
        args.command = "get"
    else:
        args = parser.parse_args(argv)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    return args


def _get_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            get_parser: argparse.ArgumentParser = action.choices["get"]
            return get_parser
    raise AssertionError("no get command")


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the command *args* asks for; return the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    if args.command == "cache":
        return cache.run(args, out, err)
    if args.command == "demo":
        return demo.run(args, out, err)
    return get.run(args, out, err)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    return run(args)
