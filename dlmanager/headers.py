"""Case-insensitive header lookup in any mapping (a leaf module)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["header"]


def header(headers: Any, name: str) -> str | None:
    """The value of header *name*, looked up case-insensitively.

    Works with ``requests``' case-insensitive headers and with the plain
    dicts that test doubles carry; anything that is not a mapping, and any
    value that is not a string, counts as absent.
    """
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None and not hasattr(headers, "lower_items"):  # not case-insensitive itself
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    return value if isinstance(value, str) else None
