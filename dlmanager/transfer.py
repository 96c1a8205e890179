"""One HTTP attempt: the request, the checks on its response, and its body.

This is the only module that knows about ``requests`` and ``urllib3``
exceptions: :func:`map_transport_errors` turns them into
:class:`~dlmanager.errors.TransferError`. An :class:`Attempt` can be aborted
from another thread (cancel, stall guard) even while it is blocked on a
server that sends nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import inspect
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3

from dlmanager.config import Timeouts
from dlmanager.errors import (
    DlManagerError,
    DownloadInterrupt,
    HTTPStatusError,
    IncompleteBodyError,
    ResumeError,
    StallError,
    TooLargeError,
    TransferError,
)
from dlmanager.headers import header
from dlmanager.redact import get_logger
from dlmanager.retry import parse_retry_after
from dlmanager.session import connections_seen_by

__all__ = [
    "CANCEL",
    "STALL",
    "Attempt",
    "ResponseInfo",
    "header",
    "map_transport_errors",
    "parse_content_range",
]

log = get_logger(__name__)

CANCEL = "cancel"
STALL = "stall"

_FATAL_REQUESTS_ERRORS: tuple[type[Exception], ...] = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)
#: ``bytes START-END/TOTAL`` (RFC 9110 14.4): ASCII digits, blanks around.
_CONTENT_RANGE_RE = re.compile(
    r"[ \t]*bytes[ \t]+([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20}|\*)[ \t]*",
    re.IGNORECASE | re.ASCII,
)
_DIGITS_RE = re.compile(r"[ \t]*([0-9]{1,20})[ \t]*", re.ASCII)
#: The URL in the message of ``requests``' InvalidSchema for a URL it has no adapter for.
_NO_ADAPTER_RE = re.compile(r"No connection adapters were found for (['\"])(.*)\1\Z", re.DOTALL)


@contextlib.contextmanager
def map_transport_errors(
    url: str, dest: str | None, received: int = 0, *, sockets: bool = False
) -> Iterator[None]:
    """Turn the transport's exceptions into :class:`TransferError`.

    Not retryable, with a message that says what went wrong and with which
    URL: a TLS certificate that cannot be verified (or a TLS handshake that
    fails otherwise than by a cut connection), too many redirects (a loop is
    shown), a redirect to another scheme than http(s), an invalid URL.

    :param sockets: also map bare :class:`OSError` (only where the caller
        knows the I/O is a real socket's, not a test double's)
    """
    try:
        yield
    except DlManagerError:
        raise
    except requests.exceptions.SSLError as exc:
        message, retryable = _tls_message(url, exc)
        raise TransferError(
            message, retryable=retryable, url=url, dest=dest, received=received
        ) from exc
    except requests.exceptions.TooManyRedirects as exc:
        raise TransferError(
            _redirects_message(url, exc), retryable=False, url=url, dest=dest, received=received
        ) from exc
    except _FATAL_REQUESTS_ERRORS as exc:
        raise TransferError(
            _fatal_message(url, exc), retryable=False, url=url, dest=dest, received=received
        ) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        message = f"{url}: {_connection_problem(url, exc)}"
        raise TransferError(message, url=url, dest=dest, received=received) from exc
    except (
        requests.exceptions.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
    ) as exc:
        raise TransferError(f"{url}: {exc}", url=url, dest=dest, received=received) from exc
    except OSError as exc:
        if not sockets:
            raise
        raise TransferError(f"{url}: {exc}", url=url, dest=dest, received=received) from exc


def _failed_url(url: str, exc: requests.exceptions.RequestException) -> str:
    """The URL whose request failed: a redirect's target, or *url*."""
    failed = getattr(getattr(exc, "request", None), "url", None)
    return failed if isinstance(failed, str) and failed else url


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """*exc* and the exceptions it wraps (causes, contexts, ``reason``, ``args``)."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending and len(seen) < 32:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        pending += [e for e in linked if isinstance(e, BaseException)]


def _connection_problem(url: str, exc: requests.exceptions.RequestException) -> str:
    """What went wrong with the connection, once, in words: the host and the
    cause, without urllib3's "Max retries exceeded" wrapping (dlmanager
    retries by itself)."""
    failed = urllib.parse.urlsplit(_failed_url(url, exc))
    port = failed.port or (443 if failed.scheme == "https" else 80)
    where = f"{failed.hostname}:{port}"
    causes = list(_causes(exc))
    for cause in causes:
        if type(cause).__name__ == "NameResolutionError" or isinstance(cause, socket.gaierror):
            reason = next((c for c in causes if isinstance(c, socket.gaierror)), None)
            why = reason.strerror if reason is not None and reason.strerror else "unknown host"
            return f"cannot resolve the host {failed.hostname}: {why}"
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError):
            return f"cannot connect to {where}: connection refused"
        if isinstance(cause, http.client.RemoteDisconnected):
            return f"{where} closed the connection without answering"
        if isinstance(cause, ConnectionResetError):
            return f"the connection to {where} was reset"
    # (urllib3's NewConnectionError derives from ConnectTimeoutError: the
    # refusals above come first.)
    if isinstance(exc, requests.exceptions.ConnectTimeout) or any(
        type(c) is urllib3.exceptions.ConnectTimeoutError for c in causes
    ):
        return f"timed out connecting to {where}"
    if isinstance(exc, requests.exceptions.ReadTimeout) or any(
        isinstance(c, urllib3.exceptions.ReadTimeoutError) for c in causes
    ):
        return f"no answer from {where} in time (read timeout)"
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return f"connection to {where} failed: {cause.strerror}"
    return f"connection to {where} failed: {exc}"


def _tls_message(url: str, exc: requests.exceptions.SSLError) -> tuple[str, bool]:
    """The message of a TLS failure, and whether another attempt may succeed.

    A handshake cut by the network (an unexpected EOF, a reset) may go
    through next time; a certificate that cannot be verified, or a server
    that does not speak TLS as we do, stays so.
    """
    failed = _failed_url(url, exc)
    redirected = f" (redirected from {url})" if failed != url else ""
    reason: object = exc
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason or str(cause)
            return (
                f"TLS certificate verification failed for {failed}{redirected}: {why} "
                "(to trust its CA: the session's verify, REQUESTS_CA_BUNDLE or --ca-bundle)",
                False,
            )
        if isinstance(cause, ssl.SSLError) and reason is exc:
            reason = cause  # OpenSSL's own words, without requests' wrapping
    transient = (ssl.SSLEOFError, ssl.SSLSyscallError, ssl.SSLZeroReturnError, ConnectionError)
    retryable = any(isinstance(cause, transient) for cause in _causes(exc))
    return f"TLS error with {failed}{redirected}: {reason}", retryable


def _redirects_message(url: str, exc: requests.exceptions.TooManyRedirects) -> str:
    """Say how many redirects were followed, and show the loop if there is one."""
    response = exc.response
    # requests < 2.32 leaves the first response out of the history and puts
    # the last one in; later versions do the opposite.
    history = list(getattr(response, "history", None) or [])
    message = f"too many redirects (more than {len(history)}) from {url}"
    chain = history if history and history[-1] is response else [*history, response]
    urls = [r.url for r in chain if r is not None]
    if urls and urls[0] != url:
        urls.insert(0, url)
    seen: dict[str, int] = {}
    for index, current in enumerate(urls):
        if current in seen:
            loop = " -> ".join(urls[seen[current] : index + 1])
            return f"{message}: a redirect loop ({loop})"
        seen[current] = index
    return message


def _fatal_message(url: str, exc: Exception) -> str:
    if isinstance(exc, requests.exceptions.InvalidSchema):
        match = _NO_ADAPTER_RE.search(str(exc))
        if match is not None and match.group(2) != url:
            return f"{url}: redirected to a non-http(s) URL: {match.group(2)}"
    return f"{url}: {exc}"


def _timed_out(error: BaseException) -> bool:
    """Whether *error* was caused by a read timeout."""
    cause = error.__cause__
    timeouts = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    return isinstance(cause, timeouts)


def _retry_after(headers: Any) -> float | None:
    """The ``Retry-After`` delay, or None when absent or unusable."""
    try:
        return parse_retry_after(header(headers, "Retry-After"))
    except (ValueError, OverflowError):  # a date no datetime can hold
        return None


def _int_header(headers: Any, name: str) -> int | None:
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


def _response_info(
    response: Any, url: str, dest: str | None, offset: int, end: int | None
) -> ResponseInfo:
    headers = getattr(response, "headers", None)
    status = response.status_code if isinstance(response.status_code, int) else None
    encoding = (header(headers, "Content-Encoding") or "").strip().lower() or None
    if encoding == "identity":
        encoding = None
    length = _int_header(headers, "Content-Length")
    if length is None and encoding is None:
        length = _int_header(headers, "x-goog-stored-content-length")
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


def _get(session: Any, url: str, **options: Any) -> Any:
    """``session.get(url, stream=True, **options)``, leaving out the options
    that a session's ``get`` does not take.

    A session written for dlmanager 0.1.1 may define ``get(url, stream)``
    only: it is called as 0.1.1 did. Without ``headers`` it gets no ``Range``
    (a retry starts over) and without ``timeout`` no timeout (the stall guard
    still ends a transfer that stalls).
    """
    if not isinstance(session, requests.Session) and session is not requests:
        accepted = _keywords(session.get)
        if accepted is not None:
            options = {name: value for name, value in options.items() if name in accepted}
    return session.get(url, stream=True, **options)


def _keywords(function: Any) -> frozenset[str] | None:
    """The keyword arguments *function* takes, or None for any (or unknown)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(
        p.name
        for p in parameters
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    )


class Attempt:
    """One GET of *url*, asking for the bytes from *offset* on.

    :param session: anything with ``get(url, stream=True, **kwargs)``
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
    ) -> None:
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
        headers = {"Accept-Encoding": "identity"}
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
                    response = _get(
                        self.session,
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

        _senders.submit(send)
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

    def _check(self, response: Any) -> ResponseInfo:
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            if status >= 400:
                self.close()
                raise HTTPStatusError(
                    f"{self.url}: HTTP {status}",
                    status_code=status,
                    retry_after=_retry_after(response.headers),
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
            info = _response_info(response, self.url, self.dest, self.offset, self.end)
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
                    cause = "read timed out" if _timed_out(exc) else ""
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
        read1, size = raw.read1, self.chunk_size
        decode = self.decode and self.info is not None and self.info.encoding is not None
        with map_transport_errors(self.url, self.dest, sockets=True):
            while True:
                data = read1(size, decode_content=decode)
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


class _Sender:
    """One thread of :class:`_Senders`, and the task handed to it."""

    def __init__(self, task: Callable[[], bool]) -> None:
        self.task: Callable[[], bool] | None = task
        self.stop = False
        self.handed = threading.Event()
        self.thread = threading.Thread(target=self.run, name="dlmanager-request", daemon=True)

    def run(self) -> None:
        while True:
            task, self.task = self.task, None
            assert task is not None
            reuse = task()
            del task  # an idle thread must not keep the last request's response alive
            if not reuse or not _senders.rest(self):
                return


class _Senders:
    """Daemon threads that send requests, reused from one request to the next.

    A task is handed to an idle thread if there is one, else to a new
    thread. A thread idle for *idle_timeout* seconds ends, and
    :meth:`release_idle` ends the idle ones at once. Daemon threads, so that a
    request abandoned by a cancel never holds up the interpreter's exit.
    """

    def __init__(self, idle_timeout: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Sender] = []
        self._idle_timeout = idle_timeout

    def submit(self, task: Callable[[], bool]) -> None:
        """Run *task* in a thread; the thread waits for the next task only when
        *task* returns true (a request a cancel abandoned returns false: its
        thread, late already, ends at once instead of outliving a close)."""
        with self._lock:
            sender = self._idle.pop() if self._idle else None
            if sender is not None:
                sender.task = task
                sender.handed.set()
        if sender is None:
            _Sender(task).thread.start()

    def rest(self, sender: _Sender) -> bool:
        """Wait, in *sender*'s thread, for its next task; False when it is to end."""
        with self._lock:
            sender.handed.clear()
            self._idle.append(sender)
        sender.handed.wait(self._idle_timeout)
        with self._lock:
            if sender.task is None and not sender.stop:  # timed out, nothing handed
                self._idle.remove(sender)
                return False
        return not sender.stop

    def release_idle(self, timeout: float = 5.0) -> None:
        """End the idle threads now, and wait up to *timeout* seconds for them."""
        with self._lock:
            idle, self._idle = self._idle, []
            for sender in idle:
                sender.stop = True
        for sender in idle:
            sender.handed.set()
        deadline = time.monotonic() + timeout
        for sender in idle:
            sender.thread.join(max(0.0, deadline - time.monotonic()))


_senders = _Senders()


def release_idle_senders(timeout: float = 5.0) -> None:
    """End the idle request threads now, waiting up to *timeout* seconds.

    A thread still sending a request that a cancel abandoned goes on until
    the response headers arrive or the request times out, then ends.
    """
    _senders.release_idle(timeout)


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
