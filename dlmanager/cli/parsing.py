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
    "parse_mirror_line",
    "parse_size",
    "plural",
    "with_mirrors",
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
    """One file to download: its URL, and optionally its name, checksum and mirrors."""

    url: str
    fname: str | None = None
    checksum: Checksum | None = None
    mirrors: tuple[str, ...] = ()


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


def parse_manifest(lines: Iterable[str], source: str, *, mirrors: bool = True) -> list[Item]:
    """Every item of *lines*, read from *source* (a file name, for messages).

    With *mirrors*, a line that starts with a blank (space or tab) and is
    not a comment is a continuation line: it lists mirrors of the entry
    above (:func:`parse_mirror_line`). Without, it is an entry as any other
    (the command line's URLs).

    :raises ValueError: naming ``SOURCE:LINE`` for the first invalid line
    """
    items: list[Item] = []
    for number, line in enumerate(lines, 1):
        try:
            if mirrors and line[:1] in (" ", "\t"):
                urls = parse_mirror_line(line)
                if urls and not items:
                    raise ValueError(_NOTHING_ABOVE)
                if urls:
                    items[-1] = with_mirrors(items[-1], urls)
                continue
            item = parse_manifest_line(line)
        except ValueError as exc:
            raise ValueError(f"{source}:{number}: {exc}") from None
        if item is not None:
            items.append(item)
    return items


_NOTHING_ABOVE = "an indented line lists mirrors of the entry above it, and there is none"


def parse_mirror_line(line: str) -> list[str]:
    """The mirror URLs of a manifest's continuation line (indented): one or
    more URLs, separated by blanks; none for a comment or a blank line.

    :raises ValueError: for a field that is not an http(s) URL (a name or a
        checksum belongs on the entry's own line)
    """
    fields = _COMMENT_RE.sub("", line).split()
    if not fields or fields[0].startswith("#"):
        return []
    for field in fields:
        try:
            check_url(field)
        except ValueError as exc:
            raise ValueError(
                f"{exc}; an indented line lists mirror URLs of the entry above "
                "(its name and checksum go on the entry's line)"
            ) from None
    return fields


def with_mirrors(item: Item, urls: Iterable[str]) -> Item:
    """*item* with *urls* added to its mirrors (its own URL and repeats left out)."""
    mirrors = list(item.mirrors)
    mirrors += [u for u in dict.fromkeys(urls) if u != item.url and u not in mirrors]
    return dataclasses.replace(item, mirrors=tuple(mirrors))
