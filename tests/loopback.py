"""The loopback HTTP/1.1 server framework every test server is built on.

It stands on the standard library and on two pieces of the demo's server
(:mod:`dlmanager.cli.demo_server`, standard library only too), so that each
exists once: the server that tracks and cuts its connections
(:class:`LoopbackServer` is its ``TrackingServer``) and the Range parser
(:func:`parse_range`).

A test server is a :class:`BackgroundServer` subclass that names its handler,
a :class:`LoopbackHandler` subclass that implements :meth:`~LoopbackHandler.serve`:

- :class:`BackgroundServer` listens on 127.0.0.1 (a free port) once started,
  serves from a daemon thread, records every request
  (:attr:`~BackgroundServer.requests`), counts the body bytes sent and the
  requests answered at once, and :meth:`~BackgroundServer.stop` ends the
  handlers' waits and cuts every connection at once; ``with`` starts it
  (unless started) and stops it.
- :class:`LoopbackHandler` answers GET, HEAD and the methods that may carry
  a body (POST, PUT, PATCH, DELETE, OPTIONS: the body is read and recorded,
  :attr:`RecordedRequest.body`) over HTTP/1.1 keep-alive, silently, with the
  pieces every server shares: the one page sender
  (:meth:`~LoopbackHandler.send_page`), the one body sender
  (:meth:`~LoopbackHandler.send_body`: counted, paced, chunked on demand,
  stopped by :meth:`~BackgroundServer.stop`) and the faults that cut a
  connection (:meth:`~LoopbackHandler.stall`, :meth:`~LoopbackHandler.abort`,
  :meth:`~LoopbackHandler.reset`).
- :func:`requested_range` is the one Range parser: the bytes a request asks
  for, with ``If-Range`` (:func:`parse_range`, :func:`if_range_holds`).
- :class:`SilentListener` accepts connections and never answers them;
  :func:`free_port` names a port nothing listens on.

.. code-block:: python

    class _Hello(LoopbackHandler["HelloServer"]):
        def serve(self) -> None:
            self.send_page(200)

    class HelloServer(BackgroundServer):
        handler = _Hello

    with HelloServer() as server:
        requests.get(server.url("/"), timeout=5)
        assert server.requests[0].path == "/"
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, ClassVar, Generic, TypeVar, cast

from dlmanager.cli.demo_server import TrackingServer, parse_range, shutdown_socket

__all__ = [
    "HOST",
    "BackgroundServer",
    "LoopbackHandler",
    "LoopbackServer",
    "RecordedRequest",
    "SilentListener",
    "free_port",
    "if_range_holds",
    "parse_range",
    "requested_range",
    "shutdown_socket",
]

HOST = "127.0.0.1"
"""The only address the test servers listen on."""
IDLE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection is kept open (a handler may set less)."""
STOP_TIMEOUT = 5.0
"""Upper bound, in seconds, of each waiting step of :meth:`BackgroundServer.stop`."""


def if_range_holds(value: str | None, etag: str | None, last_modified: str | None) -> bool:
    """Tell whether an ``If-Range`` value (None when absent) lets a Range be honoured.

    An entity tag must equal the current strong ETag; a date must equal Last-Modified exactly.
    """
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        return value == etag and not value.startswith("W/")
    return value == last_modified


def requested_range(
    headers: Message,
    size: int,
    etag: str | None = None,
    last_modified: str | None = None,
    *,
    if_range: bool = True,
) -> range | None:
    """The bytes of a ``size``-byte body a 206 answers to a request with these *headers*
    (empty: a 416), or None to send the whole body: no ``Range``, a Range
    :func:`parse_range` ignores, or an ``If-Range`` that does not hold (unless
    ``if_range`` is false)."""
    header = headers.get("Range")
    if header is None:
        return None
    if if_range and not if_range_holds(headers.get("If-Range"), etag, last_modified):
        return None
    return parse_range(header, size)


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on: a connection there is refused."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
    return port


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    """Header values by lower-cased name."""
    body: bytes | None = None
    """The request's body (sent with a Content-Length or chunked), or None without one."""
    lines: tuple[tuple[str, str], ...] = ()
    """Every header as received, in order (a name sent twice is there twice)."""

    @property
    def range(self) -> str | None:
        """The Range header, or None."""
        return self.headers.get("range")


_Owner = TypeVar("_Owner", bound="BackgroundServer")
_Self = TypeVar("_Self", bound="BackgroundServer")


class LoopbackHandler(BaseHTTPRequestHandler, Generic[_Owner]):
    """A silent HTTP/1.1 keep-alive handler whose requests are recorded by
    the owning server (with their body, read first), then answered by
    :meth:`serve` (a client hanging up is not an error)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, not 40 ms apart
    timeout = IDLE_TIMEOUT
    server: LoopbackServer

    @property
    def owner(self) -> _Owner:
        """The :class:`BackgroundServer` this handler answers for."""
        return cast(_Owner, self.server.owner)

    def do_GET(self) -> None:
        self._answer()

    def do_HEAD(self) -> None:
        self._answer()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_GET

    def read_request_body(self) -> bytes | None:
        """The request's body: Content-Length bytes, or the chunks of a chunked
        one; None when the request announces neither."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    while self.rfile.readline().strip():  # trailers, then the blank line
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = self.headers.get("Content-Length")
        return None if length is None else self.rfile.read(int(length))

    def _answer(self) -> None:
        owner = self.owner
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            body = self.read_request_body()
        except (OSError, ValueError):
            self.close_connection = True
            return
        lines = tuple(self.headers.items())
        owner._record(RecordedRequest(self.command, self.path, headers, body, lines))
        owner._busy(+1)
        try:
            self.serve()
        except OSError:  # the client hung up, or the server is stopping
            self.close_connection = True
        finally:
            owner._busy(-1)

    def serve(self) -> None:
        """Answer the request (a HEAD: the headers of a GET, without body)."""
        raise NotImplementedError

    def send_page(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer *status* with a small HTML page (none for 204 and 304) and the extra
        *headers*, keeping the connection alive; error pages count as no body bytes."""
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

    def send_body(
        self, pieces: Iterable[bytes], *, chunked: bool = False, delay: float = 0
    ) -> bool:
        """Write the body *pieces* (each one chunk if *chunked*), waiting *delay* seconds
        before each; False when the server stopped meanwhile (the rest is not sent).

        Each piece is counted before it is written, so a client never holds bytes
        that :attr:`BackgroundServer.bytes_sent` does not include yet.
        """
        owner = self.owner
        for piece in pieces:
            if (delay and owner._stopping.wait(delay)) or owner._stopping.is_set():
                return False
            if not piece:
                continue
            owner._count_sent(len(piece))
            self.wfile.write(b"%X\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        return True

    def end_chunks(self) -> None:
        """End a chunked body (the last, empty chunk)."""
        self.wfile.write(b"0\r\n\r\n")

    def stall(self, seconds: float) -> None:
        """Send nothing for *seconds*, or until the server stops."""
        self.owner._stopping.wait(seconds)

    def abort(self) -> None:
        """Close the connection now (FIN), whatever the framing promised."""
        self.close_connection = True
        shutdown_socket(self.connection)

    def reset(self) -> None:
        """Reset the connection (RST) as the handler lets go of it."""
        self.close_connection = True
        try:  # a zero linger time makes close() reset the connection
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.connection.close()

    def log_message(self, format: str, *args: Any) -> None:
        """Stay silent."""


class LoopbackServer(TrackingServer):
    """A threading HTTP server on 127.0.0.1 (a free port) that tracks its open
    connections, so that it can cut them all when it stops: the package's
    :class:`~dlmanager.cli.demo_server.TrackingServer`, typed for the tests.

    :param handler: the request handler class
    :param owner: the :class:`BackgroundServer` the handlers answer for
    """

    owner: BackgroundServer

    def __init__(self, handler: type[LoopbackHandler[Any]], owner: BackgroundServer) -> None:
        super().__init__(handler, owner)


class BackgroundServer:
    """A :class:`LoopbackServer` answered by :attr:`handler`, served from a daemon
    thread: :meth:`start` once, :meth:`stop` (idempotent, also before a start) to
    stop serving, end the handlers' waits and cut the connections.

    Subclasses set :attr:`handler` and call ``super().__init__()``.
    """

    handler: ClassVar[type[LoopbackHandler[Any]]]

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        """Every request received, in order."""
        self.max_concurrent = 0
        """The most requests answered at the same time so far."""
        self._active = 0
        self._bytes_sent = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: LoopbackServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False

    def _make_server(self) -> LoopbackServer:
        """Listen (a subclass may wrap the listening socket)."""
        return LoopbackServer(self.handler, self)

    def start(self: _Self) -> _Self:
        """Listen on 127.0.0.1 and serve in a daemon thread; return self.

        :raises RuntimeError: when already started or stopped
        """
        with self._lock:
            if self._httpd is not None or self._stopped:
                raise RuntimeError(f"a {type(self).__name__} can be started only once")
            self._httpd = httpd = self._make_server()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.01},
            name=f"{type(self).__name__}:{httpd.server_port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """End stalls and paced bodies, stop serving, cut connections, close the socket."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            httpd = self._httpd
        self._stopping.set()
        if httpd is None:
            return
        if self._thread is not None:
            httpd.shutdown()
            self._thread.join(STOP_TIMEOUT)
        httpd.close_connections(STOP_TIMEOUT)
        httpd.server_close()

    def __enter__(self: _Self) -> _Self:
        return self if self._httpd is not None and not self._stopped else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def host_port(self) -> tuple[str, int]:
        """The address the server listens on.

        :raises RuntimeError: before :meth:`start`
        """
        if self._httpd is None:
            raise RuntimeError(f"the {type(self).__name__} is not started")
        return HOST, self._httpd.server_port

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return "http://{}:{}".format(*self.host_port)

    def url(self, path: str) -> str:
        """The URL of ``path`` (which starts with "/") on this server."""
        return self.base_url + path

    @property
    def open_connections(self) -> int:
        """The connections open now."""
        return 0 if self._httpd is None else self._httpd.open_connections

    @property
    def bytes_sent(self) -> int:
        """Body bytes written by :meth:`LoopbackHandler.send_body` (pages not counted)."""
        with self._lock:
            return self._bytes_sent

    def requests_for(self, path: str) -> list[RecordedRequest]:
        """The recorded requests of ``path``, in order."""
        with self._lock:
            return [request for request in self.requests if request.path == path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _busy(self, change: int) -> None:
        """Count a request starting (+1) or ending (-1) to track :attr:`max_concurrent`."""
        with self._lock:
            self._active += change
            self.max_concurrent = max(self.max_concurrent, self._active)

    def _count_sent(self, count: int) -> None:
        with self._lock:
            self._bytes_sent += count


class SilentListener:
    """A socket on 127.0.0.1 that takes connections and never answers them: the
    kernel completes up to eight connections without :meth:`accept`, and their
    requests wait for an answer that never comes. A context manager (closes)."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind((HOST, 0))
        self.socket.listen(8)
        self.port: int = self.socket.getsockname()[1]

    def url(self, path: str = "/") -> str:
        """``http://127.0.0.1:PORT`` and ``path``."""
        return f"http://{HOST}:{self.port}{path}"

    def accept(self, timeout: float) -> socket.socket:
        """The next connection, waited for *timeout* seconds at most, to read from."""
        self.socket.settimeout(timeout)
        connection, _ = self.socket.accept()
        return connection

    def connected(self) -> bool:
        """Whether a connection waits to be accepted (it is then closed)."""
        self.socket.setblocking(False)
        try:
            connection, _ = self.socket.accept()
        except BlockingIOError:
            return False
        connection.close()
        return True

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> SilentListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
