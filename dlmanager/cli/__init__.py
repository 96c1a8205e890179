"""The ``dlmanager`` command line.

::

    dlmanager [get] URL... [-d DIR] [-i FILE] [-o NAME|PATH|-] [-j JOBS] [-x CONNECTIONS]
                           [--revalidate] [--max-age S] [--max-size SIZE] [--max-files N]
                           [--include-foreign] [--max-file-size SIZE]
                           [--checksum ALGO:HEX] [--ca-bundle FILE] [--retries N]
                           [--timeout S] [-H 'NAME: VALUE']... [--method METHOD]
                           [--data DATA | --json-body JSON] [--quiet | --json] [-v]
    dlmanager cache ls [DIR] | prune [DIR] --max-size SIZE [--max-files N]
                               [--include-foreign] | clean [DIR]
    dlmanager demo

Exit status: 0 when every file is in place, 1 when any download failed (with
a summary of each failure), 2 for bad usage, 130 when interrupted (Ctrl-C
stops every transfer and keeps what it received for the same command to
resume). A closed standard output ends the command as if killed by SIGPIPE.
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from collections.abc import Sequence
from typing import TextIO

from dlmanager import __version__
from dlmanager.cli import options, output

__all__ = ["build_parser", "main", "parse_args", "run"]

COMMANDS = ("get", "cache", "demo")
#: A first argument that looks like a mistyped command rather than a URL.
_BARE_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


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
    options.add_get_arguments(get_parser)
    get_parser.set_defaults(check=functools.partial(options.check_get_arguments, get_parser))
    options.add_cache_arguments(
        commands.add_parser(
            "cache",
            help="list, prune or clean a download directory",
            description="Look after a download directory.",
        )
    )
    options.add_demo_arguments(
        commands.add_parser(
            "demo",
            help="watch dlmanager survive a flaky server (no network needed)",
            description=options.DEMO_DESCRIPTION,
        )
    )
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse *argv*; exits with status 2 on bad usage (0 for --help and --version)."""
    argv = list(argv)
    parser = build_parser()
    if argv and _BARE_WORD.fullmatch(argv[0]) and argv[0] not in COMMANDS:
        import difflib  # only for this message

        guess = difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean '{guess[0]}'?" if guess else ""
        parser.error(
            f"{argv[0]!r} is not a command ({', '.join(COMMANDS)}) nor an http(s) URL{hint}"
        )
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "get")
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
    # Each command's module is imported here, when it runs: it brings the
    # download machinery, which --help, --version and bad usage do without.
    if args.command == "cache":
        from dlmanager.cli import cache

        return cache.run(args, out, err)
    if args.command == "demo":
        from dlmanager.cli import demo

        return demo.run(args, out, err)
    from dlmanager.cli import get

    return get.run(args, out, err)


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point.

    Everything printed goes through :mod:`dlmanager.cli.output`: credentials
    masked, and a closed standard output ends the command as if killed by
    ``SIGPIPE``.
    """
    output.pipe_closed.clear()
    with output.wrapped():
        args = parse_args(sys.argv[1:] if argv is None else argv)
        status = run(args)
    if output.pipe_closed.is_set():
        return output.die_of_sigpipe()
    return status
