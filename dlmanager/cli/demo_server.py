"""The flaky build server of ``dlmanager demo``: demo files on 127.0.0.1 (standard library only).

:class:`DemoServer` serves :class:`~dlmanager.cli.demo_files.DemoFile` objects
on 127.0.0.1, and only there, with keep-alive, byte ranges and ``If-Range``,
and fires the :class:`~dlmanager.cli.demo_files.Fault` a file carries (a
dropped connection, a stall, a 503, a slow stretch) on the first GET it
applies to, so that a retry or a resume then succeeds:

.. code-block:: python

    files = [DemoFile("a.bin", 5_000_000, Fault.DROP, at=1_000_000), DemoFile("b.bin", 10_000)]
    with DemoServer(files, rate=2_000_000) as server:
        url, digest = server.url("a.bin"), server.sha256("a.bin")
        ...
        print(server.stats.faults[Fault.DROP])
"""

from __future__ import annotations

import re
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

from dlmanager.cli.demo_files import BLOCK_SIZE, OFFSET_FAULTS, DemoFile, Fault

__all__ = [
    "HOST",
    "LAST_MODIFIED",
    "DemoServer",
    "DemoStats",
    "TrackingServer",
    "parse_range",
    "shutdown_socket",
]

HOST = "127.0.0.1"
"""The only address the server listens on."""
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)
"""The Last-Modified date of every file."""
IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection is kept open."""
STOP_TIMEOUT = 2.0
"""Upper bound, in seconds, of each waiting step of :meth:`DemoServer.close`."""
_PACE_STEPS = 20
"""A throttled connection writes this many pieces per second."""
_RANGE_RE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})")


@dataclass(frozen=True)
class DemoStats:
    """What a :class:`DemoServer` has done so far (a snapshot)."""

    connections: int = 0
    """Connections accepted."""
    requests: int = 0
    """Requests received (GET and HEAD, whatever the answer)."""
    bytes_sent: int = 0
    """File body bytes written to clients."""
    range_requests: int = 0
    """GETs answered with a part of a file (206)."""
    faults: Mapping[Fault, int] = field(default_factory=dict)
    """How many times each kind of fault fired (every kind is a key)."""


def parse_range(header: str, size: int) -> range | None:
    """Resolve a single-range ``Range`` header against ``size`` bytes.

    Returns the offsets to send, an empty range when unsatisfiable (416), or None
    when the header must be ignored (malformed or multi-range: the whole file).
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
    if start >= size:
        return range(0)
    return range(start, size if not last else min(int(last) + 1, size))


def shutdown_socket(connection: socket.socket) -> None:
    """Cut a connection both ways, unless it is already gone."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Handler(BaseHTTPRequestHandler):
    """Serves the files of the owning :class:`DemoServer` over HTTP/1.1 keep-alive,
    silently, injecting their faults (a HEAD answers the headers of a GET, with
    no body and no fault)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    timeout = IDLE_TIMEOUT
    server_version = "dlmanager-demo"
    server: _HTTPServer

    def do_GET(self) -> None:
        self._serve()

    def do_HEAD(self) -> None:
        self._serve()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent."""

    def _serve(self) -> None:
        owner = self.server.owner
        owner._count(requests=1)
        try:
            self._respond(owner)
        except OSError:  # the client hung up, or the server is closing
            self.close_connection = True

    def _respond(self, owner: DemoServer) -> None:
        """Answer with a 404, an injected 503, a 416, or (part of) the file."""
        is_get = self.command == "GET"
        file = owner._lookup(unquote(urlsplit(self.path).path).lstrip("/"))
        if file is None:
            self._send_page(HTTPStatus.NOT_FOUND)
            return
        if is_get and file.fault is Fault.UNAVAILABLE and owner._fire(file):
            self._send_page(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "1"})
            return
        span, partial = self._choose_span(file)
        if span is None:
            unsatisfiable = {"Content-Range": f"bytes */{file.size}"}
            self._send_page(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, unsatisfiable)
            return
        if partial and is_get:
            owner._count(range_requests=1)
        # A fault at an offset fires when the body reaches it (the client may
        # close before: then it waits for the next GET).
        armed = is_get and file.fault in OFFSET_FAULTS and file.at in span
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(span)))
        self.send_header("ETag", file.etag)
        self.send_header("Last-Modified", LAST_MODIFIED)
        self.send_header("Accept-Ranges", "bytes")
        if partial:
            self.send_header("Content-Range", f"bytes {span.start}-{span.stop - 1}/{file.size}")
        self.end_headers()
        if is_get:
            self._send_body(owner, file, span, armed)

    def _choose_span(self, file: DemoFile) -> tuple[range | None, bool]:
        """The bytes to send and whether they answer a Range (206); None for a 416."""
        whole = range(file.size)
        header = self.headers.get("Range")
        if header is None:
            return whole, False
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range.strip() not in (file.etag, LAST_MODIFIED):
            return whole, False
        span = parse_range(header, file.size)
        if span is None:
            return whole, False
        return span or None, True

    def _send_page(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer with a short text body, keeping the connection alive."""
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_body(self, owner: DemoServer, file: DemoFile, span: range, armed: bool) -> None:
        """Send the body; cut short, stalled or slowed at ``file.at`` when *armed*."""
        cut = file.at if armed else span.stop
        if not self._write(owner, file, span.start, cut, owner.rate):
            self._abort()
            return
        if cut == span.stop:
            return
        rate = owner.rate
        if owner._fire(file):
            if file.fault is Fault.STALL:
                owner._stopping.wait(file.stall)
            if file.fault in (Fault.DROP, Fault.STALL):
                self._abort()
                return
            rate = file.slow_rate
        if not self._write(owner, file, cut, span.stop, rate):
            self._abort()

    def _write(
        self, owner: DemoServer, file: DemoFile, start: int, stop: int, rate: int | None
    ) -> bool:
        """Write the bytes from ``start`` to ``stop`` at ``rate`` bytes/s at most (None:
        at once); False when the server closed meanwhile."""
        step = BLOCK_SIZE if rate is None else max(1, min(BLOCK_SIZE, rate // _PACE_STEPS))
        began = time.monotonic()
        sent = 0
        for block in file.chunks(start, stop):
            for offset in range(0, len(block), step):
                if rate is not None:
                    delay = began + sent / rate - time.monotonic()
                    if delay > 0 and owner._stopping.wait(delay):
                        return False
                if owner._stopping.is_set():
                    return False
                data = block[offset : offset + step]
                # Counted first, so a client never holds bytes the stats miss.
                owner._count(bytes_sent=len(data))
                self.wfile.write(data)
                sent += len(data)
        return True

    def _abort(self) -> None:
        """Close the connection abruptly, whatever Content-Length promised."""
        self.close_connection = True
        shutdown_socket(self.connection)


class TrackingServer(ThreadingHTTPServer):
    """A threading HTTP server on 127.0.0.1 (a free port) that tracks its open
    connections, so that it can cut them all when it stops (the tests' servers
    are built on it too).

    :param handler: the request handler class
    :param owner: what the handlers answer for (``self.server.owner``)
    """

    daemon_threads = True
    block_on_close = False

    def __init__(self, handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        self.owner = owner
        self._live: set[socket.socket] = set()
        self._live_changed = threading.Condition()
        super().__init__((HOST, 0), handler)

    def connected(self) -> None:
        """Called for each connection accepted (a hook: does nothing)."""

    def process_request(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Track the connection, then serve it in a new thread."""
        with self._live_changed:
            self._live.add(cast(socket.socket, request))
        self.connected()
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        """Close the connection and stop tracking it."""
        super().shutdown_request(request)
        with self._live_changed:
            self._live.discard(cast(socket.socket, request))
            self._live_changed.notify_all()

    @property
    def open_connections(self) -> int:
        with self._live_changed:
            return len(self._live)

    def close_connections(self, timeout: float) -> None:
        """Cut every open connection; wait (bounded) for the handlers to let go of them."""
        with self._live_changed:
            for connection in self._live:
                shutdown_socket(connection)
            self._live_changed.wait_for(lambda: not self._live, timeout)

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any
    ) -> None:
        """Ignore clients hanging up; report anything else."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _HTTPServer(TrackingServer):
    """The server behind :class:`DemoServer`: it counts its connections."""

    owner: DemoServer

    def __init__(self, owner: DemoServer) -> None:
        super().__init__(_Handler, owner)

    def connected(self) -> None:
        self.owner._count(connections=1)


class DemoServer:
    """Serve ``files`` over HTTP/1.1 on 127.0.0.1 (a free port), injecting their faults.

    Use it as a context manager: entering starts the server in a daemon thread,
    leaving closes it, promptly even while connections are stalled or throttled.

    :param files: the files to serve, at ``/<name>``
    :param rate: the most bytes per second sent on each connection (None: no limit)
    :raises ValueError: for duplicate file names or a rate below 1
    """

    def __init__(self, files: Sequence[DemoFile], *, rate: int | None = None) -> None:
        if rate is not None and rate < 1:
            raise ValueError(f"rate must be at least 1 byte/s or None, not {rate!r}")
        self.files: Mapping[str, DemoFile] = {file.name: file for file in files}
        if len(self.files) != len(files):
            raise ValueError("demo file names must be unique")
        self.rate = rate
        self._lock = threading.Lock()
        self._stopping = threading.Event()  # ends the handlers' waits
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._fired: set[str] = set()
        self._faults = dict.fromkeys(Fault, 0)
        self._connections = self._requests = self._bytes_sent = self._range_requests = 0
        self._digests: dict[str, str] = {}
        self._digest_lock = threading.Lock()

    def start(self) -> DemoServer:
        """Listen on 127.0.0.1 and serve in a daemon thread; return self.

        :raises RuntimeError: when already started or closed
        """
        with self._lock:
            if self._httpd is not None or self._closed:
                raise RuntimeError("a DemoServer can be started only once")
            self._httpd = httpd = _HTTPServer(self)
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"DemoServer:{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, end stalls and throttled transfers, cut connections (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            httpd = self._httpd
        self._stopping.set()
        if httpd is None:
            return
        if self._thread is not None:
            httpd.shutdown()
            self._thread.join(STOP_TIMEOUT)
        httpd.close_connections(STOP_TIMEOUT)
        httpd.server_close()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the server listens on.

        :raises RuntimeError: before :meth:`start`
        """
        if self._httpd is None:
            raise RuntimeError("the DemoServer is not started")
        host, port = self._httpd.server_address[:2]
        return cast(str, host), port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        host, port = self.address
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        """The URL of the file ``name``.

        :raises KeyError: for a name the server does not serve
        """
        return f"{self.base_url}/{quote(self.files[name].name)}"

    def sha256(self, name: str) -> str:
        """The hex SHA-256 digest of the file ``name`` (computed once).

        :raises KeyError: for a name the server does not serve
        """
        file = self.files[name]
        with self._digest_lock:
            if name not in self._digests:
                self._digests[name] = file.sha256()
            return self._digests[name]

    @property
    def open_connections(self) -> int:
        """The connections open now (0 once :meth:`close` has returned, unless a
        handler failed to stop within its bounded wait)."""
        return 0 if self._httpd is None else self._httpd.open_connections

    @property
    def stats(self) -> DemoStats:
        """A snapshot of the counters."""
        with self._lock:
            return DemoStats(
                connections=self._connections,
                requests=self._requests,
                bytes_sent=self._bytes_sent,
                range_requests=self._range_requests,
                faults=dict(self._faults),
            )

    def _lookup(self, name: str) -> DemoFile | None:
        return self.files.get(name)

    def _fire(self, file: DemoFile) -> bool:
        """Count the fault of ``file`` as injected; False when it already was."""
        with self._lock:
            if file.fault is None or file.name in self._fired:
                return False
            self._fired.add(file.name)
            self._faults[file.fault] += 1
        return True

    def _count(
        self,
        *,
        connections: int = 0,
        requests: int = 0,
        bytes_sent: int = 0,
        range_requests: int = 0,
    ) -> None:
        with self._lock:
            self._connections += connections
            self._requests += requests
            self._bytes_sent += bytes_sent
            self._range_requests += range_requests
