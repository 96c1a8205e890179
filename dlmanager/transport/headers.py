"""Response headers, read: what a response's headers say about its body (pure).

Case-insensitive lookup in any mapping (``requests``' headers or a test
double's dict), the lengths, ``Content-Range``, ``Retry-After``, and
:func:`response_info`: the offset, length, size, validator and encoding of a
body, checked against the range asked for.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from urllib3 import HTTPHeaderDict

from dlmanager.errors import ResumeError
from dlmanager.retry import parse_retry_after

__all__ = [
    "ResponseInfo",
    "header",
    "int_header",
    "parse_content_range",
    "response_info",
    "retry_after",
]

#: ``bytes START-END/TOTAL`` (RFC 9110 14.4): ASCII digits, blanks around.
_CONTENT_RANGE_RE = re.compile(
    r"[ \t]*bytes[ \t]+([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)[ \t]*",
    re.IGNORECASE | re.ASCII,
)
_DIGITS_RE = re.compile(r"[ \t]*([0-9]{1,20})[ \t]*", re.ASCII)


def header(headers: Any, name: str) -> str | None:
    """The value of header *name*, looked up case-insensitively.

    Works with ``requests``' case-insensitive headers and with the plain
    dicts that test doubles carry; anything that is not a mapping, and any
    value that is not a string, counts as absent.
    """
    if type(headers) is HTTPHeaderDict:  # urllib3's: case-insensitive (the common case)
        value = headers.get(name)
        return value if isinstance(value, str) else None
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    if value is None and not hasattr(headers, "lower_items"):  # not case-insensitive itself
        wanted = name.lower()
        value = next((v for k, v in headers.items() if str(k).lower() == wanted), None)
    return value if isinstance(value, str) else None


def retry_after(headers: Any) -> float | None:
    """The ``Retry-After`` delay, or None when absent or unusable."""
    try:
        return parse_retry_after(header(headers, "Retry-After"))
    except (ValueError, OverflowError):  # a date no datetime can hold
        return None


def int_header(headers: Any, name: str) -> int | None:
    value = header(headers, name)
    match = _DIGITS_RE.fullmatch(value) if value is not None else None
    return int(match.group(1)) if match is not None else None


def parse_content_range(value: str) -> tuple[int, int, int | None]:
    """Parse ``bytes START-END/TOTAL`` into ``(start, end, total or None)``.

    :raises ValueError: when the value is not a valid byte range
    """
    match = _CONTENT_RANGE_RE.fullmatch(value) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"invalid Content-Range {value!r}")
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total is not None and end >= total):
        raise ValueError(f"invalid Content-Range {value!r}")
    return start, end, total


@dataclasses.dataclass(frozen=True)
class ResponseInfo:
    """What the headers of a successful response tell about its body.

    :ivar status_code: the status, or None for a test double without one
    :ivar start: the offset in the file of the body's first byte
    :ivar length: the announced length of the body on the wire, if any
    :ivar total: the size of the whole file, if known
    :ivar validator: a strong ETag, else Last-Modified, else None
    :ivar encoding: the Content-Encoding, when not identity
    :ivar accept_ranges: the server said ``Accept-Ranges: bytes``
    :ivar headers: the response's headers
    """

    status_code: int | None
    start: int
    length: int | None
    total: int | None
    validator: str | None
    encoding: str | None
    accept_ranges: bool = False
    headers: Any = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def resumable(self) -> bool:
        """Whether a later attempt may ask for the rest with ``Range``/``If-Range``."""
        return self.validator is not None and self.encoding is None and self.total is not None


def response_info(
    response: Any, url: str, dest: str | None, offset: int, end: int | None
) -> ResponseInfo:
    headers = getattr(response, "headers", None)
    status = response.status_code if isinstance(response.status_code, int) else None
    encoding = (header(headers, "Content-Encoding") or "").strip().lower() or None
    if encoding == "identity":
        encoding = None
    length = int_header(headers, "Content-Length")
    if length is None and encoding is None:
        length = int_header(headers, "x-goog-stored-content-length")
    etag = header(headers, "ETag")
    validator = etag if etag and not etag.startswith("W/") else header(headers, "Last-Modified")
    start, total = 0, length if encoding is None else None
    if status == 206:
        content_range = header(headers, "Content-Range") or ""
        try:
            start, range_end, total = parse_content_range(content_range)
        except ValueError:
            raise ResumeError(
                f"{url}: 206 response with invalid Content-Range {content_range!r}",
                url=url,
                dest=dest,
            ) from None
        last = (total - 1 if total is not None else -1) if end is None else end - 1
        if start != offset or total is None or range_end != last:
            asked = f"{offset}-" if end is None else f"{offset}-{end - 1}"
            raise ResumeError(
                f"{url}: asked for bytes {asked} but the server sent {content_range!r}",
                url=url,
                dest=dest,
            )
        if length is not None and length != range_end - start + 1:
            raise ResumeError(
                f"{url}: Content-Length {length} disagrees with Content-Range {content_range!r}",
                url=url,
                dest=dest,
            )
    accept_ranges = (header(headers, "Accept-Ranges") or "").strip().lower() == "bytes"
    return ResponseInfo(status, start, length, total, validator, encoding, accept_ranges, headers)
