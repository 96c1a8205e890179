"""What each command accepts: its options, and the checks argparse cannot do.

:func:`dlmanager.cli.build_parser` builds the whole parser from this module,
whose imports are pure parsers (sizes, manifests, names, checksums): no
manager, no transfer, no HTTP library. ``--help``, ``--version`` and bad
usage therefore start fast; each command's module, which brings the download
machinery, is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from collections.abc import Callable
from typing import NoReturn

from dlmanager.checksum import parse_checksum
from dlmanager.cli.parsing import Item, parse_manifest, parse_size, with_mirrors
from dlmanager.cli.targets import Target, output_target
from dlmanager.config import DEFAULT_CONNECTIONS
from dlmanager.names import check_name_length, check_url, name_from_url, name_max
from dlmanager.request import RequestOptions

__all__ = [
    "DEMO_DESCRIPTION",
    "add_cache_arguments",
    "add_demo_arguments",
    "add_get_arguments",
    "add_limit_arguments",
    "add_output_arguments",
    "add_request_arguments",
    "bad_usage",
    "check_cache_arguments",
    "check_get_arguments",
]


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


def _number_of_seconds(value: str, *, zero: bool) -> float:
    """*value* as seconds: above 0, or (*zero*) 0 or more and finite."""
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if zero and not 0 <= number < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more: {value!r}")
    if not zero and not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {value!r}")
    return number


def seconds(value: str) -> float:
    """An argparse type: a number of seconds above 0."""
    return _number_of_seconds(value, zero=False)


def age(value: str) -> float:
    """An argparse type: a number of seconds, 0 or more."""
    return _number_of_seconds(value, zero=True)


def size(value: str) -> int:
    """An argparse type: a size such as ``500M`` or ``2G``."""
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def rate(value: str) -> int:
    """An argparse type: bytes per second such as ``500K``, ``2M`` or ``2M/s``."""
    text = value[:-2] if value.lower().endswith("/s") else value
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a rate above 0: {value!r} (use bytes per second, or with a unit: "
            "500K, 2M, 1.5MiB, 10MB; K, M, G are powers of 1024, KB, MB, GB of 1000)"
        ) from None


def ca_bundle(value: str) -> str:
    """An argparse type: a readable CA bundle file, or a directory of hashed certificates."""
    if os.path.isdir(value) or (os.path.isfile(value) and os.access(value, os.R_OK)):
        return value
    raise argparse.ArgumentTypeError(f"no readable CA bundle at {value!r}")


def add_limit_arguments(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    """``--max-size``, ``--max-files`` and ``--include-foreign``, shared with ``cache prune``."""
    parser.add_argument(
        "--max-size",
        type=size,
        required=required,
        metavar="SIZE",
        help="keep dlmanager's files in the directory under SIZE (500M, 2G, 1.5GiB, "
        "100MB...), removing the least recently used; the most recent one is always kept",
    )
    parser.add_argument(
        "--max-files",
        type=int_at_least(1),
        metavar="N",
        help="keep at most N of dlmanager's files in the directory, removing the least "
        "recently used",
    )
    parser.add_argument(
        "--include-foreign",
        action="store_true",
        help="let --max-size and --max-files count and remove every file of the directory, "
        "your own included; without it only the files dlmanager downloaded count, and no "
        "other file is ever removed",
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


# -- get -------------------------------------------------------------------------------------


def add_get_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``get``."""
    parser.add_argument("urls", nargs="*", metavar="URL", help="http(s) URLs to download")
    parser.add_argument(
        "-d", "--dest", metavar="DIR", help="destination directory (default: the current one)"
    )
    parser.add_argument(
        "-i",
        "--input-file",
        metavar="FILE",
        help="read URLs from FILE ('-' for standard input): one per line, optionally "
        "followed by a file name and a checksum, as in 'URL NAME sha256:HEX'; an indented "
        "line lists mirrors of the line above",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="NAME|PATH|-",
        help="for the one URL given: its file name in DIR; or a PATH with a directory part "
        "(sub/name, ./name), relative to the current directory, whose directory must exist "
        "(not with -d); or '-' to write the body to standard output (everything else then "
        "goes to standard error)",
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
    parser.add_argument(
        "--revalidate",
        action="store_true",
        help="ask the server whether each file already in DIR is current (one conditional "
        "request): keep it if so, else download the new version",
    )
    parser.add_argument(
        "--max-age",
        type=age,
        metavar="SECONDS",
        help="use a file already in DIR without a request if it was downloaded or "
        "validated less than SECONDS ago; revalidate an older one",
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
        "--limit-rate",
        type=rate,
        metavar="RATE",
        help="download each file at most at RATE bytes per second, all its connections "
        "together (500K, 2M, 1.5MiB, 10MB...; K and M are 1024 and 1024*1024)",
    )
    parser.add_argument(
        "--limit-rate-total",
        type=rate,
        metavar="RATE",
        help="download at most at RATE bytes per second in all, every file of the command "
        "together (with --limit-rate, each file keeps to both)",
    )
    parser.add_argument(
        "--content-disposition",
        action="store_true",
        help="let the server name each file that has no NAME: its Content-Disposition "
        "header, else the URL after redirects (hostile names are refused; not with -o)",
    )
    parser.add_argument(
        "--checksum",
        metavar="ALGO:HEX",
        help="checksum the file must match, e.g. sha256:... (one URL only)",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="another source of the same file, used when the URL fails and for segments "
        "(repeatable; one URL only)",
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
    add_request_arguments(parser)
    add_output_arguments(parser)


def add_request_arguments(parser: argparse.ArgumentParser) -> None:
    """``-H``, ``--method``, ``--data`` and ``--json-body``: the request sent for every URL."""
    group = parser.add_argument_group(
        "request options", "what is sent for every URL of the command (-i files included)"
    )
    group.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="send this header (repeatable)",
    )
    group.add_argument(
        "--method", metavar="METHOD", help="the method (default GET, or POST with a body)"
    )
    body = group.add_mutually_exclusive_group()
    body.add_argument(
        "--data",
        metavar="DATA",
        help="send DATA as the body, as is; @FILE sends the bytes of FILE, @- standard input",
    )
    body.add_argument(
        "--json-body",
        metavar="JSON",
        help="send JSON (checked first; @FILE reads it from FILE) with Content-Type: "
        "application/json",
    )


def check_get_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``get``: read ``-i`` and check what argparse cannot; exits with status 2 on bad usage.

    Every file's name is decided here, before anything starts. Sets
    ``args.items``: the files to download in order, each with its name, the
    same URL listed twice (under the same name) once.
    """
    try:
        items = parse_manifest(args.urls, "command line", mirrors=False)
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
    for option in ("--output", "--checksum", "--mirror"):
        if getattr(args, option[2:]) is not None and len({i.url for i in items}) != 1:
            bad_usage(f"{option} needs exactly one URL")
    args.request = _request(args)
    if args.content_disposition:
        for option, given in (("-o", args.output is not None), ("--revalidate", args.revalidate),
                              ("--max-age", args.max_age is not None)):  # fmt: skip
            if given:
                bad_usage(f"--content-disposition lets the server name the file: not with {option}")
    target: Target | None = None
    if args.output is not None or args.checksum is not None:
        item = items[0]
        fname, checksum = item.fname, item.checksum
        try:
            if args.output is not None:
                target = output_target(args)
                fname = target.fname
        except ValueError as exc:
            bad_usage(str(exc))
        try:
            if args.checksum is not None:
                checksum = parse_checksum(args.checksum)
        except ValueError as exc:
            bad_usage(f"--checksum: {exc}")
        items = [Item(item.url, fname, checksum, item.mirrors)]
    if args.mirror is not None:
        items = [with_mirrors(items[0], mirror_urls(args.mirror))]
    args.dest = (target.directory if target else None) or args.dest or "."
    args.stdout = target is not None and target.stdout
    by_server = args.content_disposition
    args.items = items if args.stdout else _named(items, name_max(args.dest), by_server)


def _named(items: list[Item], longest: int, by_server: bool = False) -> list[Item]:
    """*items*, each with its file name; the same file asked twice once.

    With *by_server* (``--content-disposition``), an item without a name
    stays without one (the server names it), the same URL asked twice once.

    Exits with status 2 (bad usage) for a URL that gives no usable name, a
    name too long, two URLs for one name, or one file with two checksums.
    """
    by_name: dict[str, Item] = {}
    for item in items:
        if by_server and item.fname is None:
            by_name.setdefault("\0" + item.url, item)  # never a name: the URL
            continue
        try:
            name = item.fname or name_from_url(item.url, hint=_NAME_HINT)
            check_name_length(name, longest)
        except ValueError as exc:
            bad_usage(f"{exc}" if item.fname is None else f"{exc} ({_NAME_HINT})")
        first = by_name.get(name)
        if first is None:
            by_name[name] = dataclasses.replace(item, fname=name)
        elif first.url != item.url:
            bad_usage(f"two URLs for the file name {name!r}: {first.url} and {item.url}")
        elif item.checksum is not None and first.checksum not in (None, item.checksum):
            bad_usage(f"two checksums for {name}: {first.checksum} and {item.checksum}")
        else:
            by_name[name] = with_mirrors(
                dataclasses.replace(first, checksum=item.checksum or first.checksum), item.mirrors
            )
    return list(by_name.values())


def mirror_urls(values: list[str]) -> list[str]:
    """The URLs of ``--mirror``; exits with status 2 for one that is not http(s)."""
    for value in values:
        try:
            check_url(value)
        except ValueError as exc:
            bad_usage(f"--mirror: {exc}")
    return values


def _request(args: argparse.Namespace) -> RequestOptions:
    """The request options of ``-H``, ``--method``, ``--data`` and ``--json-body``
    (a body makes the default method POST, as with curl); exits with status 2
    on bad usage."""
    headers = [_header(value) for value in args.header]
    body = None
    if args.data is not None:
        body = _body("--data", args.data, args.input_file)
    elif args.json_body is not None:
        body = _body("--json-body", args.json_body, args.input_file)
        try:
            json.loads(body)
        except ValueError as exc:  # UnicodeDecodeError included
            bad_usage(f"--json-body: not JSON: {exc}")
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers.append(("Content-Type", "application/json"))
    method = args.method or ("POST" if body is not None else None)
    try:
        request = RequestOptions.build(method=method, headers=headers, data=body)
        request.check_revalidation(args.revalidate, args.max_age)
    except ValueError as exc:
        bad_usage(str(exc).replace("revalidate and max_age", "--revalidate and --max-age"))
    return request


def _header(value: str) -> tuple[str, str]:
    name, colon, rest = value.partition(":")
    if not colon or not name:
        bad_usage(f"-H {value!r}: a header is 'Name: value'")
    return name, rest.strip(" \t")


def _body(option: str, value: str, input_file: str | None) -> bytes:
    """The bytes of a body option: the value itself, or the file it names after ``@``."""
    if not value.startswith("@"):
        return value.encode("utf-8", "surrogateescape")
    path = value[1:]
    if path == "-":
        if input_file == "-":
            bad_usage(f"{option} @- and -i - both read standard input")
        if sys.stdin is None:
            bad_usage(f"{option} @-: there is no standard input")
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        bad_usage(f"{option}: cannot read {path}: {exc.strerror or exc}")


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


# -- cache -----------------------------------------------------------------------------------


def add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    """The commands of ``cache`` and their options."""
    commands = parser.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    ls = commands.add_parser(
        "ls",
        help="list the files with their URL, size, age and last use, least recently used first",
        description="List the files of DIR, least recently used first (the next to be "
        "evicted): each with its size, the URL dlmanager downloaded it from and its age "
        "(time since it was downloaded or validated; '-' for a file dlmanager did not "
        "download), and its last use; their total, and the temporary files of unfinished "
        "downloads.",
    )
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    prune = commands.add_parser(
        "prune",
        help="remove the least recently used files down to a size or file count",
        description="Remove the least recently used of the files dlmanager downloaded in "
        "DIR until they are under --max-size (the most recently used file is always kept) "
        "and at most --max-files. Your own files are neither counted nor removed unless "
        "--include-foreign is given. Files pinned by a running process are kept.",
    )
    add_limit_arguments(prune)
    clean = commands.add_parser(
        "clean",
        help="remove temporary files of unfinished downloads, stale locks and orphaned sidecars",
        description="Remove the temporary files of downloads no running process is "
        "writing (their downloads will start over instead of resuming), the lock "
        "files no process holds, and the metadata sidecars (.NAME.dlmanager.json) whose "
        "file is gone or was replaced. Finished files are not touched.",
    )
    for command in (ls, prune, clean):
        command.add_argument(
            "dir",
            nargs="?",
            metavar="DIR",
            help="the directory (default: the user's cache directory, DLMANAGER_CACHE_DIR if set)",
        )
        command.set_defaults(check=functools.partial(check_cache_arguments, command))


def check_cache_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``cache``: a directory to look after (None: the default one), and a limit to prune it to."""
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"not a directory: {args.dir}")
    if args.cache_command == "prune" and args.max_size is None and args.max_files is None:
        parser.error("prune needs --max-size or --max-files")


# -- demo ------------------------------------------------------------------------------------


#: What ``dlmanager demo --help`` says the demo does.
DEMO_DESCRIPTION = (
    "Start a web server on 127.0.0.1 that serves generated files, some of them through "
    "faults (a dropped connection, a stall, a 503), and download them all into a "
    "directory capped below their total size: watch the retries, resumes and evictions "
    "happen, then read the summary. No network is needed."
)


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``demo``."""
    parser.add_argument(
        "-d",
        "--dest",
        metavar="DIR",
        help="download into DIR and keep it (default: a temporary directory, removed after)",
    )
    add_output_arguments(parser)
