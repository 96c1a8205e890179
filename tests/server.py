"""A fault-injecting HTTP/1.1 test server, built on the loopback framework (tests/loopback.py).

:class:`FaultServer` serves in-memory :class:`Resource` objects on 127.0.0.1 with keep-alive,
byte ranges and ``If-Range``, and can misbehave on demand: error statuses, truncated bodies,
stalls, slow trickles, broken ``Content-Range`` headers, unusual framings and content that
changes between requests. Every request is recorded so tests can inspect what a client sent.
"""

from __future__ import annotations

import copy
import datetime
import gzip
import hashlib
import random
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus

from tests.loopback import BackgroundServer, LoopbackHandler, RecordedRequest, requested_range

__all__ = [
    "CHANGED_LAST_MODIFIED",
    "DEFAULT_LAST_MODIFIED",
    "FaultServer",
    "RecordedRequest",
    "Resource",
    "make_data",
    "strong_etag",
]

DEFAULT_LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)
"""The Last-Modified date of a resource unless told otherwise."""
CHANGED_LAST_MODIFIED = formatdate(1_700_086_400, usegmt=True)
"""The Last-Modified date of a resource once ``change_after`` has replaced its data."""
DERIVED_ETAG = "<derived>"
"""Default of :attr:`Resource.etag`: replaced by :func:`strong_etag` of the data."""


def parsedate_to_datetime_or_none(value: str | None) -> datetime.datetime | None:
    """The time of an HTTP date, or None when absent or invalid."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def make_data(size: int, seed: int = 0) -> bytes:
    """Return ``size`` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def strong_etag(data: bytes) -> str:
    """Return the quoted strong ETag the server derives from ``data``."""
    return '"' + hashlib.sha1(data).hexdigest() + '"'


@dataclass
class Resource:
    """A file served by :class:`FaultServer`, with the faults to inject when serving it.

    List-valued faults are consumed one item per GET of the path (or POST, PUT...: any
    request but HEAD, which consumes nothing).
    A GET answered from ``statuses`` consumes only that list, so ``statuses=[503]`` with
    ``drop_after=[10]`` gives a 503, then a truncated body, then the full file. When a GET
    takes both a ``drop_after`` and a ``stall_after`` item, the smaller cut wins.
    """

    data: bytes
    etag: str | None = DERIVED_ETAG
    last_modified: str | None = DEFAULT_LAST_MODIFIED
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers sent with the file (200 and 206), e.g. a Content-MD5."""
    statuses: list[int | tuple[int, dict[str, str]]] = field(default_factory=list)
    """Answer the next GETs with these statuses (and extra headers) and a small HTML body."""
    drop_after: list[int] = field(default_factory=list)
    """Send only this many body bytes of the next GETs, then close the connection."""
    stall_after: list[int] = field(default_factory=list)
    """Send this many body bytes, then nothing until stop() or ``stall_seconds``, then close."""
    stall_seconds: float = 30.0
    trickle: tuple[int, float] | None = None
    """``(n, interval)``: after ``trickle_after`` bytes, send n bytes every interval seconds."""
    trickle_after: int = 0
    ignore_range: bool = False
    ignore_if_range: bool = False
    """Serve the requested range even when ``If-Range`` no longer matches (a broken server)."""
    wrong_content_range: bool = False
    """Answer ranges with a Content-Range shifted by +1 over the right bytes."""
    no_length: bool = False
    """Delimit the body by closing the connection (takes precedence over ``chunked``)."""
    chunked: bool = False
    gzip: bool = False
    """Send the body gzip-compressed; ranges are then ignored."""
    accept_ranges: bool = True
    change_after: int | None = None
    """After this many GETs, replace the data by ``changed_data`` (once)."""
    changed_data: bytes | None = None
    ignore_conditions: bool = False
    """Answer ``If-None-Match`` and ``If-Modified-Since`` with the whole file (no 304)."""
    gets: int = field(default=0, init=False)
    """Number of GETs of this resource received so far."""

    def __post_init__(self) -> None:
        """Derive the default ETag from the data."""
        if self.etag == DERIVED_ETAG:
            self.etag = strong_etag(self.data)

    def _apply_change(self) -> None:
        """Swap in ``changed_data`` (with new validators) once ``change_after`` GETs are done."""
        if self.change_after is None or self.changed_data is None:
            return
        if self.gets < self.change_after:
            return
        self.data, self.changed_data, self.change_after = self.changed_data, None, None
        if self.etag is not None:
            self.etag = strong_etag(self.data)
        if self.last_modified is not None:
            self.last_modified = CHANGED_LAST_MODIFIED

    def _take_plan(self, is_get: bool) -> _Plan:
        """Snapshot the resource for one request, consuming the faults of a GET."""
        self._apply_change()
        if not is_get:
            return _Plan(copy.copy(self))
        self.gets += 1
        if self.statuses:
            item = self.statuses.pop(0)
            status = item if isinstance(item, tuple) else (item, {})
            return _Plan(copy.copy(self), status=status)
        drop = self.drop_after.pop(0) if self.drop_after else None
        stall = self.stall_after.pop(0) if self.stall_after else None
        if stall is not None and (drop is None or stall <= drop):
            return _Plan(copy.copy(self), cut=stall, stall=True)
        return _Plan(copy.copy(self), cut=drop)


@dataclass(frozen=True)
class _Plan:
    """How to answer one request: a consistent snapshot of the resource and its faults."""

    resource: Resource
    status: tuple[int, dict[str, str]] | None = None
    cut: int | None = None
    stall: bool = False


class _Handler(LoopbackHandler["FaultServer"]):
    """Serves the resources of the owning :class:`FaultServer`, injecting their
    faults (a HEAD consumes none)."""

    def serve(self) -> None:
        """Answer with a redirect, a 404, an injected status or the resource itself."""
        owner = self.owner
        redirect = owner._redirects.get(self.path)
        if redirect is not None:
            self.send_page(redirect[0], {"Location": redirect[1]})
            return
        plan = owner._take_plan(self.path, self.command != "HEAD")
        if plan is None:
            self.send_page(HTTPStatus.NOT_FOUND)
        elif plan.status is not None:
            self.send_page(*plan.status)
        else:
            self._send_resource(plan)

    def _choose_body(self, res: Resource) -> tuple[int, bytes, dict[str, str]]:
        """Pick the status, body and content headers: 200 full, 206 range, gzip or 416."""
        if res.gzip:
            return HTTPStatus.OK, gzip.compress(res.data, mtime=0), {"Content-Encoding": "gzip"}
        size = len(res.data)
        span = None
        if not res.ignore_range:
            span = requested_range(
                self.headers, size, res.etag, res.last_modified, if_range=not res.ignore_if_range
            )
        if span is None:
            return HTTPStatus.OK, res.data, {}
        if not span:
            return (
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                b"",
                {"Content-Range": f"bytes */{size}"},
            )
        shift = 1 if res.wrong_content_range else 0
        first, last = span.start + shift, span.stop - 1 + shift
        return (
            HTTPStatus.PARTIAL_CONTENT,
            res.data[span.start : span.stop],
            {"Content-Range": f"bytes {first}-{last}/{size}"},
        )

    def _not_modified(self, res: Resource) -> bool:
        """Whether a conditional request finds the resource unchanged (RFC 9110
        13.2.2: ``If-None-Match`` first; ``If-Modified-Since`` only without it)."""
        if res.ignore_conditions:
            return False
        match = self.headers.get("If-None-Match")
        if match is not None:
            tags = [tag.strip().removeprefix("W/") for tag in match.split(",")]
            return res.etag is not None and ("*" in tags or res.etag.removeprefix("W/") in tags)
        since = parsedate_to_datetime_or_none(self.headers.get("If-Modified-Since"))
        modified = parsedate_to_datetime_or_none(res.last_modified)
        return since is not None and modified is not None and modified <= since

    def _send_resource(self, plan: _Plan) -> None:
        """Send the headers and (for GET) the body of a resource."""
        res = plan.resource
        if self._not_modified(res):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            if res.etag is not None:
                self.send_header("ETag", res.etag)
            if res.last_modified is not None:
                self.send_header("Last-Modified", res.last_modified)
            self.end_headers()
            return
        status, body, extra = self._choose_body(res)
        if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
            self.send_page(status, extra)
            return
        self.send_response(status)
        self.send_header("Content-Type", res.content_type)
        if res.etag is not None:
            self.send_header("ETag", res.etag)
        if res.last_modified is not None:
            self.send_header("Last-Modified", res.last_modified)
        if res.accept_ranges:
            self.send_header("Accept-Ranges", "bytes")
        for name, value in {**res.headers, **extra}.items():
            self.send_header(name, value)
        chunked = res.chunked and not res.no_length
        if res.no_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        elif chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self._send_body(body, plan, chunked)

    def _send_body(self, body: bytes, plan: _Plan, chunked: bool) -> None:
        """Send the body, cut short, stalled or trickled as the plan says."""
        payload = body if plan.cut is None else body[: plan.cut]
        if not self._send_paced(payload, plan.resource, chunked):
            self.abort()
        elif plan.cut is None:
            if chunked:
                self.end_chunks()
        else:
            if plan.stall:
                self.stall(plan.resource.stall_seconds)
            self.abort()

    def _send_paced(self, payload: bytes, res: Resource, chunked: bool) -> bool:
        """Send the payload, trickling it if asked; False if the server stopped meanwhile."""
        if res.trickle is None:
            return self.send_body([payload], chunked=chunked)
        size, interval = res.trickle
        head, rest = payload[: res.trickle_after], payload[res.trickle_after :]
        pieces = (rest[start : start + size] for start in range(0, len(rest), size))
        return self.send_body([head], chunked=chunked) and self.send_body(
            pieces, chunked=chunked, delay=interval
        )


class FaultServer(BackgroundServer):
    """An HTTP/1.1 server on 127.0.0.1 whose resources misbehave on demand."""

    handler = _Handler

    def __init__(self) -> None:
        super().__init__()
        self._resources: dict[str, Resource] = {}
        self._redirects: dict[str, tuple[int, str]] = {}

    def add(self, path: str, resource: Resource | bytes) -> Resource:
        """Serve ``resource`` (bytes are wrapped in a default Resource) at ``path``."""
        if isinstance(resource, bytes):
            resource = Resource(resource)
        with self._lock:
            self._resources[path] = resource
        return resource

    def resource(self, path: str) -> Resource:
        """Return the resource served at ``path``."""
        return self._resources[path]

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer requests of ``path`` with a redirect to ``location``."""
        with self._lock:
            self._redirects[path] = (status, location)

    def _take_plan(self, path: str, is_get: bool) -> _Plan | None:
        """Plan the answer to a request of ``path`` (the resource added with its
        query, else without); None if nothing is served there."""
        with self._lock:
            resource = self._resources.get(path) or self._resources.get(path.split("?")[0])
            return None if resource is None else resource._take_plan(is_get)
