"""Sizes for people: ``500M`` and ``2G`` parsed, byte counts shown as ``1.5 GiB``.

Shared by the command (its options and reports) and the library (the
``DLMANAGER_CACHE_MAX_SIZE`` variable); pure, and :func:`parse_size` raises
:class:`ValueError` naming the problem, whatever the input.
"""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_SIZE_RE = re.compile(
    r"\s*(?P<number>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(?P<unit>[kmgt]?)(?P<suffix>ib|b)?\s*"
)
_SIZE_HINT = "a number of bytes, or with a unit: 500M, 2G, 1.5GiB, 100MB"


def parse_size(text: str) -> int:
    """The number of bytes *text* stands for: ``1048576``, ``500M``, ``2G``, ``1.5GiB``.

    K, M, G, T and KiB, MiB, GiB, TiB are powers of 1024; KB, MB, GB, TB are
    powers of 1000; letters are case-insensitive; a fraction is rounded down
    to whole bytes.

    :raises ValueError: for anything else, or a size that is not above 0
    """
    match = _SIZE_RE.fullmatch(text.lower())
    if match is None:
        raise ValueError(f"not a size: {text!r} (use {_SIZE_HINT})")
    unit, suffix = match.group("unit"), match.group("suffix") or ""
    if suffix == "ib" and not unit:
        raise ValueError(f"not a size: {text!r} (use {_SIZE_HINT})")
    power = "kmgt".index(unit) + 1 if unit else 0
    multiple = int((1000 if unit and suffix == "b" else 1024) ** power)
    number = match.group("number")
    whole, _, fraction = number.partition(".")
    # Exact arithmetic: no float rounding on sizes like 0.1G.
    size = int(whole or "0") * multiple
    if fraction:
        size += int(fraction) * multiple // 10 ** len(fraction)
    if size <= 0:
        raise ValueError(f"a size must be more than 0 bytes: {text!r}")
    return size


def format_size(size: float) -> str:
    """*size* bytes for people: ``512 B``, ``1.5 KiB``, ``20.0 MiB``, ``1.2 GiB``."""
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"
