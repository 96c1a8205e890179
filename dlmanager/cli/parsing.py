"""Pure parsers of the command line: manifest lines (and the human sizes of :mod:`dlmanager.sizes`).

Both raise :class:`ValueError` with a message naming the problem, and nothing
else, whatever the input. The formatters the command prints with are here
too: :func:`plural`, :func:`format_age` and :func:`~dlmanager.sizes.format_size`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable

from dlmanager.checksum import Checksum, parse_checksum
from dlmanager.names import check_url, validate_fname
from dlmanager.sizes import format_size, parse_size

__all__ = [
    "Item",
    "format_age",
    "format_size",
    "parse_manifest",
    "parse_manifest_line",
    "parse_size",
    "plural",
]

#: A comment at the end of a manifest line: a ``#`` after a blank, and what follows.
_COMMENT_RE = re.compile(r"\s#.*\Z", re.DOTALL)


def plural(count: int, singular: str, several: str | None = None) -> str:
    """``1 file``, ``2 files``, ``1 retry``, ``3 retries``."""
    if count == 1:
        return f"{count} {singular}"
    if several is None:
        several = singular[:-1] + "ies" if singular.endswith("y") else singular + "s"
    return f"{count} {several}"


def format_age(seconds: float) -> str:
    """A duration in its largest whole unit: ``45s``, ``12m``, ``3h``, ``2d``."""
    seconds = max(0.0, seconds)
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{int(seconds // length)}{unit}"
    return f"{int(seconds)}s"


@dataclasses.dataclass(frozen=True)
class Item:
    """One file to download: its URL, and optionally its name and checksum."""

    url: str
    fname: str | None = None
    checksum: Checksum | None = None


def parse_manifest_line(line: str) -> Item | None:
    """One line of a URL list or manifest, or None for a blank line or a comment.

    ``URL``, ``URL NAME``, ``URL NAME ALGO:HEX`` or ``URL ALGO:HEX``, separated
    by blanks; ``-`` as NAME stands for the name derived from the URL. A line
    whose first non-blank character is ``#`` is a comment, and so is the end
    of a line from a ``#`` that follows a blank (``URL NAME  # a comment``).

    :raises ValueError: for a URL that is not http(s), a name that would land
        outside the destination directory, an invalid checksum or extra fields
    """
    fields = _COMMENT_RE.sub("", line).split()
    if not fields or fields[0].startswith("#"):
        return None
    url, rest = fields[0], fields[1:]
    check_url(url)
    fname: str | None = None
    checksum: Checksum | None = None
    if len(rest) > 2 or (len(rest) == 2 and not _looks_like_checksum(rest[1])):
        raise ValueError(
            f"too many fields: {len(fields)} ({' '.join(fields[1:])!r} after the URL); "
            "a line is URL [NAME] [ALGO:HEX], and a comment starts with ' #'"
        )
    if rest and not _looks_like_checksum(rest[0]):
        name = rest.pop(0)
        fname = None if name == "-" else validate_fname(name)
    if rest:
        checksum = parse_checksum(rest.pop(0))
    return Item(url, fname, checksum)


def _looks_like_checksum(field: str) -> bool:
    algorithm, colon, _ = field.partition(":")
    return bool(colon) and algorithm.isalnum() and "/" not in field


def parse_manifest(lines: Iterable[str], source: str) -> list[Item]:
    """Every item of *lines*, read from *source* (a file name, for messages).

    :raises ValueError: naming ``SOURCE:LINE`` for the first invalid line
    """
    items = []
    for number, line in enumerate(lines, 1):
        try:
            item = parse_manifest_line(line)
        except ValueError as exc:
            raise ValueError(f"{source}:{number}: {exc}") from None
        if item is not None:
            items.append(item)
    return items
