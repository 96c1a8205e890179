"""One HTTP attempt: the request, the checks on its response, and its body.

An :class:`Attempt` asks for the bytes of a URL from an offset (``Range`` and
``If-Range`` when resuming), checks the response's headers before any of the
body is read (status, range, size limit), then yields the body in chunks,
checking its length. It can be aborted from another thread (cancel, stall
guard) even while it waits for a server that sends nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
from collections.abc import Iterator
from typing import Any

import urllib3

from dlmanager.config import Timeouts
from dlmanager.errors import (
    DlManagerError,
    DownloadInterrupt,
    HTTPStatusError,
    IncompleteBodyError,
    StallError,
    TooLargeError,
    TransferError,
)
from dlmanager.redact import get_logger
from dlmanager.request import RequestOptions
from dlmanager.revalidation import Conditions, unchanged
from dlmanager.transport.errors import map_transport_errors, timed_out
from dlmanager.transport.headers import ResponseInfo, response_info, retry_after
from dlmanager.transport.pools import connections_seen_by
from dlmanager.transport.send import send_request
from dlmanager.transport.senders import Senders

__all__ = ["CANCEL", "STALL", "Attempt", "NotModified"]

log = get_logger(__name__)

CANCEL = "cancel"
STALL = "stall"


def _response_socket(response: Any) -> socket.socket | None:
    """The socket under a requests/urllib3 response, if it can be found."""
    raw = getattr(response, "raw", None)
    connection = getattr(raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        return sock
    fp = getattr(getattr(raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    return sock if isinstance(sock, socket.socket) else None


#: urllib3 >= 2 names its response base class; 1.26 has only HTTPResponse.
_URLLIB3_RESPONSE = getattr(urllib3.response, "BaseHTTPResponse", urllib3.response.HTTPResponse)


def _raw_reader(response: Any) -> Any:
    """The urllib3 response to read with ``read1``, or None to use ``iter_content``."""
    raw = getattr(response, "raw", None)
    if isinstance(raw, _URLLIB3_RESPONSE) and hasattr(raw, "read1"):
        return raw
    return None


class NotModified(Exception):
    """Raised by :meth:`Attempt.open` when a revalidating request finds the file
    there current (see :func:`~dlmanager.revalidation.unchanged`): not an error."""

    def __init__(self, status: int | None) -> None:
        super().__init__(f"not modified (HTTP {status})")
        self.status = status


class Attempt:
    """One request of *url* (a GET unless *request* says otherwise), asking
    for the bytes from *offset* on.

    :param session: anything with ``get(url, stream=True, **kwargs)`` (and
        ``request(method, url, ...)`` for a request other than a GET
        without a body; see :func:`~dlmanager.transport.send.send_request`)
    :param offset: resume from this byte (0 for the whole file)
    :param end: ask only for the bytes before this offset (None: to the end)
    :param validator: the ETag or Last-Modified the bytes before *offset* came
        with; sent as ``If-Range`` so a changed file comes back whole (200)
    :param keep_gzip: keep a gzip-encoded body as sent instead of decoding it
        (for ``.gz``/``.tgz`` destinations)
    :param max_size: the largest file allowed, in bytes (None: no limit): a
        larger announced size fails :meth:`open`, and a body that goes past
        it is cut off, with :class:`~dlmanager.errors.TooLargeError`
    :param content_chunk_size: the size asked of ``iter_content``, for a
        response not read through urllib3 (default: *chunk_size*)
    :param senders: the threads the request is sent from
    :param conditions: the file there, for a request that revalidates it
        (conditional headers, and :class:`NotModified` when it is current)
    :param request: the method, headers, body and auth of the download
        (*url* holds its query already)
    """

    def __init__(
        self,
        session: Any,
        url: str,
        *,
        dest: str | None,
        offset: int,
        validator: str | None,
        timeouts: Timeouts,
        chunk_size: int,
        end: int | None = None,
        keep_gzip: bool = False,
        max_size: int | None = None,
        content_chunk_size: int | None = None,
        senders: Senders,
        conditions: Conditions | None = None,
        request: RequestOptions | None = None,
    ) -> None:
        self.request = request or RequestOptions()
        self.senders = senders
        self.conditions = conditions if not offset and end is None else None
        self.url = url
        self.dest = dest
        self.offset = offset
        self.end = end
        self.keep_gzip = keep_gzip
        self.validator = validator
        self.timeouts = timeouts
        self.chunk_size = chunk_size
        self.content_chunk_size = content_chunk_size or chunk_size
        self.max_size = max_size
        self.session = session
        #: body bytes delivered so far (read by the stall guard)
        self.received = 0
        self.info: ResponseInfo | None = None
        #: decode a compressed body (decided when the response arrives)
        self.decode = True
        self._response: Any = None
        self._connection: Any = None  # while the request waits for its headers
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._abort_reason: str | None = None

    # -- control from other threads -------------------------------------------------

    def abort(self, reason: str) -> None:
        """End the attempt from another thread: its socket is shut down at once,
        which wakes a read blocked on it; the thread reading the body then
        closes the response (:meth:`close`): a response is never closed by
        one thread while another reads it."""
        with self._lock:
            if self._abort_reason is not None:
                return
            self._abort_reason = reason
            response, connection = self._response, self._connection
        self._wake.set()
        log.debug("Aborting attempt on %s (%s)", self.url, reason)
        if response is not None:
            _shutdown(response)
        elif connection is not None:
            _shutdown_socket(getattr(connection, "sock", None))

    def _connected(self, connection: Any) -> None:
        """The connection the request goes out on (a :class:`DownloadSession`'s):
        an abort while the request waits for its headers shuts its socket down."""
        with self._lock:
            self._connection = connection
            aborted = self._abort_reason is not None
        if aborted:
            _shutdown_socket(getattr(connection, "sock", None))

    def _abort_error(self) -> DlManagerError | None:
        if self._abort_reason == CANCEL:
            return DownloadInterrupt()
        if self._abort_reason == STALL:
            return StallError(
                f"{self.url}: stalled (less than {self.timeouts.min_speed} bytes/s "
                f"for {self.timeouts.stall}s)",
                url=self.url,
                dest=self.dest,
                received=self.received,
            )
        return None

    # -- the request ---------------------------------------------------------------

    def request_headers(self) -> dict[str, str]:
        """The download's own headers, then those dlmanager sets (which they may not hold)."""
        headers = {**self.request.headers, "Accept-Encoding": "identity"}
        if self.conditions is not None:
            headers.update(self.conditions.headers())
        if self.offset > 0 or self.end is not None:
            last = "" if self.end is None else str(self.end - 1)
            headers["Range"] = f"bytes={self.offset}-{last}"
            if self.validator:
                headers["If-Range"] = self.validator
        return headers

    def open(self) -> ResponseInfo:
        """Send the request and check the response's headers.

        The request runs in a helper thread so that :meth:`abort` ends the
        wait for headers at once; an abandoned request closes its response
        when it arrives.

        :raises HTTPStatusError: for a status of 400 or more (nothing is read)
        :raises TooLargeError: when the file is announced bigger than ``max_size``
            (nothing is read)
        :raises TransferError: for network and protocol errors
        """
        outcome: list[Any] = []
        done = threading.Event()

        def send() -> bool:
            """Send the request; whether its thread may be reused (not when abandoned)."""
            try:
                with (
                    map_transport_errors(self.url, self.dest),
                    connections_seen_by(self._connected),
                ):
                    response = send_request(
                        self.session,
                        self.request,
                        self.url,
                        headers=self.request_headers(),
                        timeout=self.timeouts.requests_timeout,
                    )
                outcome.append(response)
            except BaseException as exc:
                outcome.append(exc)
            with self._lock:
                done.set()
                abandoned = self._abort_reason is not None
            self._wake.set()
            if abandoned and outcome and not isinstance(outcome[0], BaseException):
                _close(outcome[0])
            return not abandoned

        self.senders.submit(send)
        self._wake.wait()
        with self._lock:
            if done.is_set():
                self._connection = None  # the response holds it from now on
            if not done.is_set() or self._abort_reason is not None:
                self._abort_reason = self._abort_reason or CANCEL
                if done.is_set() and not isinstance(outcome[0], BaseException):
                    _close(outcome[0])
                error = self._abort_error()
                assert error is not None
                raise error
            result = outcome[0]
            if isinstance(result, BaseException):
                raise result
            self._response = result
        self.info = self._check(result)
        return self.info

    @property
    def final_url(self) -> str:
        """The URL the response came from (after redirects), once open."""
        url = getattr(self._response, "url", None)
        return url if isinstance(url, str) and url else self.url

    def _check(self, response: Any) -> ResponseInfo:
        status = getattr(response, "status_code", None)
        if self.conditions is not None and isinstance(status, int):
            headers = getattr(response, "headers", None) or {}
            if unchanged(self.conditions, status, headers):
                self.close()
                raise NotModified(status)
        if isinstance(status, int):
            if status >= 400:
                self.close()
                raise HTTPStatusError(
                    f"{self.url}: HTTP {status}",
                    status_code=status,
                    retry_after=retry_after(response.headers),
                    url=self.url,
                    dest=self.dest,
                )
        else:
            try:
                response.raise_for_status()
            except Exception as exc:
                self.close()
                code = getattr(getattr(exc, "response", None), "status_code", None)
                raise HTTPStatusError(
                    f"{self.url}: {exc}",
                    status_code=code if isinstance(code, int) else None,
                    url=self.url,
                    dest=self.dest,
                ) from exc
        try:
            info = response_info(response, self.url, self.dest, self.offset, self.end)
            self.decode = not (self.keep_gzip and info.encoding in ("gzip", "x-gzip"))
            if not self.decode:  # stored as sent: the length on the wire is the file's
                info = dataclasses.replace(info, total=info.length)
            if self.max_size is not None and info.total is not None and info.total > self.max_size:
                raise self.too_large(
                    f"the file is {info.total} bytes, more than max_size ({self.max_size} bytes)"
                )
            return info
        except BaseException:
            self.close()
            raise

    # -- the body ------------------------------------------------------------------

    def body(self) -> Iterator[bytes]:
        """Yield the body in chunks of at most ``chunk_size`` bytes.

        Stops with :class:`IncompleteBodyError` when the body is longer or
        shorter than announced, with :class:`TooLargeError` before a chunk
        that would take the file past ``max_size``, and with the abort's
        error when aborted.
        """
        assert self.info is not None, "open() first"
        raw = _raw_reader(self._response)
        chunks = self._read1_chunks(raw) if raw is not None else self._iter_content_chunks()
        stored_as_sent = self.info.encoding is None or not self.decode
        expected = self.info.length if stored_as_sent else None
        encoded = not stored_as_sent and raw is not None

        def on_wire() -> int:
            return int(raw.tell()) if encoded else self.received

        # The file's bytes this attempt may add before it goes past max_size.
        room = None if self.max_size is None else self.max_size - self.info.start
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                if room is not None and self.received + len(chunk) > room:
                    raise self.too_large(
                        f"the body went past max_size ({self.max_size} bytes): cut off"
                    )
                self.received += len(chunk)
                if expected is not None and self.received > expected:
                    raise self.length_error(expected, "longer")
                yield chunk
                if self._abort_reason is not None:
                    break
        except GeneratorExit:
            raise
        except BaseException as exc:
            error = self._abort_error()
            if error is not None:
                raise error from exc
            announced = self.info.length
            if isinstance(exc, TransferError):
                exc.received = self.received
                if (
                    not isinstance(exc, IncompleteBodyError)
                    and announced is not None
                    and on_wire() < announced
                ):
                    cause = "read timed out" if timed_out(exc) else ""
                    raise self.length_error(announced, "shorter", on_wire(), cause) from exc
            raise
        error = self._abort_error()
        if error is not None:
            raise error
        if expected is not None and self.received != expected:
            raise self.length_error(expected, "shorter")
        if encoded and self.info.length is not None and on_wire() != self.info.length:
            raise self.length_error(self.info.length, "shorter", on_wire())

    def _read1_chunks(self, raw: Any) -> Iterator[bytes]:
        # The hot loop: one read per chunk, nothing else. An identity body is
        # read without urllib3's decoding machinery, which would copy every
        # chunk through its buffer for nothing.
        # chunk_size is read each time: a rate limit lowers it between reads.
        read1 = raw.read1
        decode = self.decode and self.info is not None and self.info.encoding is not None
        with map_transport_errors(self.url, self.dest, sockets=True):
            while True:
                data = read1(self.chunk_size, decode_content=decode)
                if not data:
                    return
                yield data

    def _iter_content_chunks(self) -> Iterator[bytes]:
        with map_transport_errors(self.url, self.dest):
            yield from self._response.iter_content(self.content_chunk_size)

    def length_error(
        self, expected: int, how: str, got: int | None = None, cause: str = ""
    ) -> IncompleteBodyError:
        got = self.received if got is None else got
        return IncompleteBodyError(
            f"{self.url}: body {how} than announced ({got} of {expected} bytes received)"
            + (f": {cause}" if cause else ""),
            expected=expected,
            url=self.url,
            dest=self.dest,
            received=self.received,
        )

    def too_large(self, what: str) -> TooLargeError:
        assert self.max_size is not None
        return TooLargeError(
            f"{self.url}: {what}",
            limit=self.max_size,
            url=self.url,
            dest=self.dest,
            received=self.received,
        )

    def close(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            _close(response)


def _close(response: Any) -> None:
    try:
        response.close()
    except Exception as exc:  # a broken response must not hide the real outcome
        log.debug("Closing a response failed: %s", exc)


def _shutdown(response: Any) -> None:
    """Wake a read blocked on *response*'s socket; close the response only
    when its socket cannot be reached (a duck-typed response)."""
    sock = _response_socket(response)
    if sock is None:
        _close(response)
        return
    _shutdown_socket(sock)


def _shutdown_socket(sock: Any) -> None:
    """Shut *sock* down (if it is a socket): a read or write blocked on it ends."""
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
