"""A fault-injecting HTTP/1.1 test server (standard library only).

:class:`FaultServer` serves in-memory :class:`Resource` objects on 127.0.0.1 with keep-alive,
byte ranges and ``If-Range``, and can misbehave on demand: error statuses, truncated bodies,
stalls, slow trickles, broken ``Content-Range`` headers, unusual framings and content that
changes between requests. Every request is recorded so tests can inspect what a client sent.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import random
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from types import TracebackType

from dlmanager.cli.demoserver import LoopbackHandler, LoopbackServer, shutdown_socket

HOST = "127.0.0.1"
DEFAULT_LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)
"""The Last-Modified date of a resource unless told otherwise."""
CHANGED_LAST_MODIFIED = formatdate(1_700_086_400, usegmt=True)
"""The Last-Modified date of a resource once ``change_after`` has replaced its data."""
DERIVED_ETAG = "<derived>"
"""Default of :attr:`Resource.etag`: replaced by :func:`strong_etag` of the data."""
STOP_TIMEOUT = 5.0
"""Upper bound, in seconds, for each waiting step of :meth:`FaultServer.stop`."""

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def make_data(size: int, seed: int = 0) -> bytes:
    """Return ``size`` deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(size)


def strong_etag(data: bytes) -> str:
    """Return the quoted strong ETag the server derives from ``data``."""
    return '"' + hashlib.sha1(data).hexdigest() + '"'


def parse_range(header: str, size: int) -> range | None:
    """Resolve a single-range ``Range`` header against a body of ``size`` bytes.

    Returns the byte offsets to send, an empty range when the range is unsatisfiable (416),
    or None when the header must be ignored (malformed or multi-range: serve the full body).
    """
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first:
        return range(max(0, size - int(last)), size) if last else None
    start = int(first)
    if last and int(last) < start:
        return None
    end = min(int(last), size - 1) if last else size - 1
    return range(start, end + 1) if start < size else range(0)


def if_range_holds(value: str | None, etag: str | None, last_modified: str | None) -> bool:
    """Tell whether an ``If-Range`` value (None when absent) lets a Range be honoured.

    An entity tag must equal the current strong ETag; a date must equal Last-Modified exactly.
    """
    if value is None:
        return True
    if value.startswith(('"', "W/")):
        return value == etag and not value.startswith("W/")
    return value == last_modified


@dataclass
class Resource:
    """A file served by :class:`FaultServer`, with the faults to inject when serving it.

    List-valued faults are consumed one item per GET of the path; HEAD consumes nothing.
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


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header values by lower-cased name."""

    @property
    def range(self) -> str | None:
        """The Range header, or None."""
        return self.headers.get("range")


class _Handler(LoopbackHandler):
    """Serves the resources of the owning :class:`FaultServer`, injecting their
    faults (a HEAD consumes none)."""

    server: _HTTPServer

    def serve(self) -> None:
        """Record the request and answer it; a client hanging up is not an error."""
        owner = self.server.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        owner._record(RecordedRequest(self.command, self.path, headers))
        owner._busy(+1)
        try:
            self._respond(owner)
        except ConnectionError:
            self.close_connection = True
        finally:
            owner._busy(-1)

    def _respond(self, owner: FaultServer) -> None:
        """Answer with a redirect, a 404, an injected status or the resource itself."""
        redirect = owner._redirects.get(self.path)
        if redirect is not None:
            self._send_page(redirect[0], {"Location": redirect[1]})
            return
        plan = owner._take_plan(self.path, self.command == "GET")
        if plan is None:
            self._send_page(HTTPStatus.NOT_FOUND)
        elif plan.status is not None:
            self._send_page(*plan.status)
        else:
            self._send_resource(plan)

    def _send_page(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer with a small HTML page, keeping the connection alive."""
        phrase = self.responses.get(status, ("Error", ""))[0]
        body = f"<html><body><h1>{status} {phrase}</h1></body></html>\n".encode()
        if status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
            body = b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _choose_body(self, res: Resource) -> tuple[int, bytes, dict[str, str]]:
        """Pick the status, body and content headers: 200 full, 206 range, gzip or 416."""
        if res.gzip:
            return HTTPStatus.OK, gzip.compress(res.data, mtime=0), {"Content-Encoding": "gzip"}
        header = self.headers.get("Range")
        if header is None or res.ignore_range:
            return HTTPStatus.OK, res.data, {}
        if_range = self.headers.get("If-Range")
        if not res.ignore_if_range and not if_range_holds(if_range, res.etag, res.last_modified):
            return HTTPStatus.OK, res.data, {}
        size = len(res.data)
        span = parse_range(header, size)
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

    def _send_resource(self, plan: _Plan) -> None:
        """Send the headers and (for GET) the body of a resource."""
        res = plan.resource
        status, body, extra = self._choose_body(res)
        if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
            self._send_page(status, extra)
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
        if not self._write_paced(payload, plan.resource, chunked):
            self._abort()
        elif plan.cut is None:
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        else:
            if plan.stall:
                self.server.owner._stop_event.wait(plan.resource.stall_seconds)
            self._abort()

    def _write_paced(self, payload: bytes, res: Resource, chunked: bool) -> bool:
        """Write the payload, trickling it if asked; False if the server stopped meanwhile."""
        if res.trickle is None:
            self._write(payload, chunked)
            return True
        size, interval = res.trickle
        self._write(payload[: res.trickle_after], chunked)
        for start in range(res.trickle_after, len(payload), size):
            if self.server.owner._stop_event.wait(interval):
                return False
            self._write(payload[start : start + size], chunked)
        return True

    def _write(self, data: bytes, chunked: bool) -> None:
        """Count body bytes, then write them (as one chunk if chunked).

        Counting first means a client never sees bytes that :attr:`FaultServer.bytes_sent`
        does not include yet.
        """
        if not data:
            return
        self.server.owner._count_sent(len(data))
        if chunked:
            self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))
        else:
            self.wfile.write(data)

    def _abort(self) -> None:
        """Close the connection abruptly, whatever the framing promised."""
        self.close_connection = True
        self.wfile.flush()
        shutdown_socket(self.connection)


class _HTTPServer(LoopbackServer):
    """The server behind :class:`FaultServer`."""

    def __init__(self, owner: FaultServer) -> None:
        self.owner = owner
        super().__init__(_Handler)


class FaultServer:
    """An HTTP/1.1 server on 127.0.0.1 whose resources misbehave on demand."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self._resources: dict[str, Resource] = {}
        self._redirects: dict[str, tuple[int, str]] = {}
        self._bytes_sent = 0
        self._active = 0
        self.max_concurrent = 0
        """The most requests answered at the same time so far."""
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._httpd = _HTTPServer(self)

    def start(self) -> FaultServer:
        """Serve in a daemon thread (once); return self."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.01},
                name=f"FaultServer:{self._httpd.server_port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """End stalls and trickles, stop serving, cut connections and close the socket."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_event.set()
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(STOP_TIMEOUT)
        self._httpd.close_connections(STOP_TIMEOUT)
        self._httpd.server_close()

    def __enter__(self) -> FaultServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host_port(self) -> tuple[str, int]:
        """The address the server listens on."""
        return HOST, self._httpd.server_port

    def url(self, path: str) -> str:
        """Return the URL of ``path`` (which starts with "/") on this server."""
        return f"http://{HOST}:{self._httpd.server_port}{path}"

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

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """Return the recorded requests of ``path``, in order."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    @property
    def bytes_sent(self) -> int:
        """Total resource body bytes written (error and redirect pages not counted)."""
        with self._lock:
            return self._bytes_sent

    def _record(self, request: RecordedRequest) -> None:
        """Append a received request to :attr:`requests`."""
        with self._lock:
            self.requests.append(request)

    def _take_plan(self, path: str, is_get: bool) -> _Plan | None:
        """Plan the answer to a request of ``path``; None if nothing is served there."""
        with self._lock:
            resource = self._resources.get(path)
            return None if resource is None else resource._take_plan(is_get)

    def _busy(self, change: int) -> None:
        """Count a request starting (+1) or ending (-1) to track :attr:`max_concurrent`."""
        with self._lock:
            self._active += change
            self.max_concurrent = max(self.max_concurrent, self._active)

    def _count_sent(self, count: int) -> None:
        """Add ``count`` to :attr:`bytes_sent`."""
        with self._lock:
            self._bytes_sent += count
