"""The transport's exceptions, turned into dlmanager's: the one place that knows them.

:func:`map_transport_errors` turns what ``requests``, ``urllib3`` and
``http.client`` raise into :class:`~dlmanager.errors.TransferError`, with a
message that says what went wrong, once, in words (a host that refuses
connections, a TLS certificate that cannot be verified, a redirect loop...),
and whether another attempt may help.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import sys
import urllib.parse
from collections.abc import Iterator
from typing import Any

import urllib3

from dlmanager.errors import DlManagerError, TransferError

__all__ = ["map_transport_errors", "never_sent", "redirects_message", "timed_out"]

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
    except Exception as exc:
        mapped = _mapped(exc, url, sockets)
        if mapped is None:
            raise
        message, retryable = mapped
        raise TransferError(
            message,
            retryable=retryable,
            url=url,
            dest=dest,
            received=received,
            sent=not never_sent(exc),
        ) from exc


def never_sent(exc: BaseException) -> bool:
    """Whether *exc* says the request never left: no connection could be made
    (refused, timed out connecting, a host name that does not resolve).
    urllib3 retries such an error of any method, for the same reason."""
    for cause in _causes(exc):
        # NewConnectionError and NameResolutionError derive from ConnectTimeoutError.
        if isinstance(cause, (urllib3.exceptions.ConnectTimeoutError, ConnectionRefusedError)):
            return True
        if isinstance(cause, socket.gaierror) or _is(cause, "ConnectTimeout"):
            return True
    return False


def _mapped(exc: Exception, url: str, sockets: bool) -> tuple[str, bool] | None:
    """The message of *exc* and whether another attempt may help; None to let it through."""
    # A requests exception comes only from a requests that was imported: the
    # manager's own transport does not import it.
    requests = sys.modules.get("requests")
    if requests is not None and isinstance(exc, requests.exceptions.RequestException):
        errors = requests.exceptions
        if isinstance(exc, errors.SSLError):
            return _tls_message(url, exc)
        if isinstance(exc, errors.TooManyRedirects):
            return _requests_redirects_message(url, exc), False
        fatal = (
            errors.InvalidURL,
            errors.InvalidSchema,
            errors.MissingSchema,
            errors.InvalidHeader,
        )
        if isinstance(exc, fatal):
            return _fatal_message(url, exc), False
        if isinstance(exc, (errors.ConnectionError, errors.Timeout)):
            return f"{url}: {_connection_problem(url, exc)}", True
        return f"{url}: {exc}", True
    if isinstance(exc, urllib3.exceptions.SSLError):
        return _tls_message(url, exc)
    if isinstance(exc, urllib3.exceptions.HTTPError) and getattr(exc, "failed_url", None):
        # A request of the manager's own transport (see transport/direct.py).
        return f"{url}: {_connection_problem(url, exc)}", True
    if isinstance(exc, (urllib3.exceptions.HTTPError, http.client.HTTPException)):
        return f"{url}: {exc}", True
    if sockets and isinstance(exc, OSError):
        return f"{url}: {exc}", True
    return None


def _failed_url(url: str, exc: Exception) -> str:
    """The URL whose request failed: a redirect's target, or *url*."""
    failed = getattr(exc, "failed_url", None) or getattr(getattr(exc, "request", None), "url", None)
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


def _connection_problem(url: str, exc: Exception) -> str:
    """What went wrong with the connection, once, in words: the host and the
    cause, without urllib3's "Max retries exceeded" wrapping (dlmanager
    retries by itself)."""
    failed = urllib.parse.urlsplit(_failed_url(url, exc))
    port = failed.port or (443 if failed.scheme == "https" else 80)
    where = f"{failed.hostname}:{port}"
    causes = list(_causes(exc))
    if any(isinstance(c, urllib3.exceptions.ProxyError) or _is(c, "ProxyError") for c in causes):
        # The proxy failed, not the server: name the proxy (urllib3 keeps
        # the connection it could not make).
        proxy = next((c.conn for c in causes if hasattr(c, "conn")), None)
        address = (getattr(proxy, "host", None), getattr(proxy, "port", None))
        where = f"the proxy {address[0]}:{address[1]}" if all(address) else "the proxy"
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
    if _is(exc, "ConnectTimeout") or any(
        type(c) is urllib3.exceptions.ConnectTimeoutError for c in causes
    ):
        return f"timed out connecting to {where}"
    if _is(exc, "ReadTimeout") or any(
        isinstance(c, urllib3.exceptions.ReadTimeoutError) for c in causes
    ):
        return f"no answer from {where} in time (read timeout)"
    for cause in causes:
        if isinstance(cause, OSError) and cause.strerror:
            return f"connection to {where} failed: {cause.strerror}"
    return f"connection to {where} failed: {exc}"


def _tls_message(url: str, exc: Exception) -> tuple[str, bool]:
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


def _requests_redirects_message(url: str, exc: Any) -> str:
    """:func:`redirects_message` for ``requests``' TooManyRedirects."""
    response = exc.response
    # requests < 2.32 leaves the first response out of the history and puts
    # the last one in; later versions do the opposite.
    history = list(getattr(response, "history", None) or [])
    chain = history if history and history[-1] is response else [*history, response]
    return redirects_message(url, [r.url for r in chain if r is not None], len(history))


def redirects_message(url: str, urls: list[str], followed: int) -> str:
    """Say how many redirects were followed from *url*, and show the loop in
    *urls* (the URLs requested, in order) if there is one."""
    message = f"too many redirects (more than {followed}) from {url}"
    if urls and urls[0] != url:
        urls = [url, *urls]
    seen: dict[str, int] = {}
    for index, current in enumerate(urls):
        if current in seen:
            loop = " -> ".join(urls[seen[current] : index + 1])
            return f"{message}: a redirect loop ({loop})"
        seen[current] = index
    return message


def _fatal_message(url: str, exc: Exception) -> str:
    if _is(exc, "InvalidSchema"):
        match = _NO_ADAPTER_RE.search(str(exc))
        if match is not None and match.group(2) != url:
            return f"{url}: redirected to a non-http(s) URL: {match.group(2)}"
    return f"{url}: {exc}"


def timed_out(error: BaseException) -> bool:
    """Whether *error* was caused by a read timeout."""
    cause = error.__cause__
    timeouts = (urllib3.exceptions.TimeoutError, TimeoutError)
    return isinstance(cause, timeouts) or _is(cause, "Timeout")


def _is(exc: BaseException | None, name: str) -> bool:
    """Whether *exc* is an instance of ``requests.exceptions.<name>`` (False
    when requests was never imported: then it cannot be)."""
    requests = sys.modules.get("requests")
    return requests is not None and isinstance(exc, getattr(requests.exceptions, name))
