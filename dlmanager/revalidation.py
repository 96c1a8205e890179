"""Revalidation: asking the server whether a file already there is still its current version.

Pure decisions, no I/O: whether a file is fresh enough to use without a
request (:func:`fresh`), the conditions of the request that revalidates it
(:func:`conditions_for`, :meth:`Conditions.headers`), and whether a response
says the file there is unchanged (:func:`unchanged`).

The request is one conditional ``GET``: ``If-None-Match`` with the stored
``ETag``, else ``If-Modified-Since`` with the stored ``Last-Modified``. A
``304 Not Modified`` keeps the file. A ``200`` carries the new version,
which replaces the file once complete and verified; but a ``200`` whose
strong ``ETag`` is the stored one, or (for a file without validators) whose
``Content-Length`` is the file's size and whose ``Last-Modified`` is not
after the file's own time, says the file is unchanged too: the response is
then closed before its body is read. So a revalidation is always one
request, never a ``HEAD`` and then a ``GET``.
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
from collections.abc import Mapping

from dlmanager.disk.metadata import FileInfo

__all__ = ["CURRENT", "Conditions", "check_max_age", "conditions_for", "fresh", "unchanged"]

#: The file there is current: no request needed (see :func:`fresh`).
CURRENT = object()


def check_max_age(max_age: object) -> None:
    """Check the ``max_age=`` keyword: None or a number of seconds >= 0.

    :raises ValueError: for anything else
    """
    if max_age is None:
        return
    if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not max_age >= 0:
        raise ValueError(f"max_age must be a number of seconds >= 0 or None, not {max_age!r}")


@dataclasses.dataclass(frozen=True)
class Conditions:
    """What a revalidating request knows of the file there.

    :ivar etag: its stored ``ETag``, or None
    :ivar last_modified: its stored ``Last-Modified``, or None
    :ivar size: its size in bytes
    :ivar since: when it was last known current (its validation, else its
        modification time), in seconds since the epoch
    """

    etag: str | None
    last_modified: str | None
    size: int
    since: float

    def headers(self) -> dict[str, str]:
        """The conditional headers of the request."""
        if self.etag:
            return {"If-None-Match": self.etag}
        if self.last_modified:
            return {"If-Modified-Since": self.last_modified}
        return {}


def conditions_for(info: FileInfo | None, size: int, mtime: float) -> Conditions:
    """The conditions revalidating a file of *size* bytes modified at *mtime*
    whose metadata is *info* (None: a file dlmanager did not download)."""
    if info is None:
        return Conditions(None, None, size, mtime)
    return Conditions(info.etag, info.last_modified, size, info.validated_at.timestamp())


def fresh(info: FileInfo | None, max_age: float | None, now: datetime.datetime) -> bool:
    """Whether a file validated as *info* says may be used without a request:
    it was validated less than *max_age* seconds before *now*."""
    if info is None or max_age is None:
        return False
    return info.age(now) < max_age


def _http_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def unchanged(conditions: Conditions, status: int | None, headers: Mapping[str, str]) -> bool:
    """Whether a response of *status* with *headers* (read case-insensitively
    through ``get``) says the file described by *conditions* is current."""
    if status == 304:
        return True
    if status != 200 or headers.get("Content-Encoding", "identity").lower() != "identity":
        return False
    length = headers.get("Content-Length")
    if length is None or not length.strip().isdigit() or int(length) != conditions.size:
        return False
    etag = headers.get("ETag")
    if conditions.etag is not None:
        return etag == conditions.etag and not etag.startswith("W/")
    if conditions.last_modified is not None:
        return headers.get("Last-Modified") == conditions.last_modified
    modified = _http_time(headers.get("Last-Modified"))
    return modified is not None and modified <= conditions.since
