"""How one request goes out on a download's session: dlmanager's own, ``requests``, or duck-typed.

:func:`send_request` sends an attempt's request with the download's
:class:`~dlmanager.request.RequestOptions`: through
:meth:`Direct.request <dlmanager.transport.direct.Direct.request>`, through
``session.get`` for a GET without a body (as dlmanager 0.1.1 did, so that a
session written for it sees the calls it was written for), or through
``session.request`` for any other request. :func:`check_session` tells,
before a download starts, whether its session can send its request at all.
"""

from __future__ import annotations

import inspect
import sys
from typing import Any

from dlmanager.request import RequestOptions
from dlmanager.transport.direct import Direct

__all__ = ["check_session", "send_request"]


def send_request(
    session: Any,
    request: RequestOptions,
    url: str,
    *,
    headers: dict[str, str],
    timeout: tuple[float | None, float | None],
) -> Any:
    """Send *request* for *url* (its query appended already) on *session*,
    with *headers* (the request's own and the attempt's) and *timeout*; the
    response's body is not read."""
    auth = request.basic_auth or request.auth  # text encoded once, the same way for all
    if isinstance(session, Direct):
        return session.request(request.method, url, headers=headers, timeout=timeout,
                               body=request.body, auth=auth)  # fmt: skip
    options: dict[str, Any] = {"headers": headers, "timeout": timeout}
    if auth is not None:
        options["auth"] = auth
    if request.ranged:
        return _get(session, url, **options)
    return session.request(request.method, url, stream=True, data=request.body, **options)


def _get(session: Any, url: str, **options: Any) -> Any:
    """``session.get(url, stream=True, **options)``, leaving out the options
    that a session's ``get`` does not take.

    A session written for dlmanager 0.1.1 may define ``get(url, stream)``
    only: it is called as 0.1.1 did. Without ``headers`` it gets no ``Range``
    (a retry starts over) and without ``timeout`` no timeout (the stall guard
    still ends a transfer that stalls).
    """
    if not _requests_session(session):
        accepted = _keywords(session.get)
        if accepted is not None:
            options = {name: value for name, value in options.items() if name in accepted}
    return session.get(url, stream=True, **options)


def check_session(session: Any, request: RequestOptions) -> None:
    """Check that *session* can send *request*, before anything starts.

    :raises ValueError: naming what the session lacks: an auth object of
        ``requests`` without a ``requests`` session; a method other than GET
        or a body with a session that has no ``request()``; headers or auth
        with a session whose ``get()`` takes no ``headers`` or ``auth``
    """
    auth_object = request.auth is not None and request.basic_auth is None
    if auth_object and isinstance(session, Direct) and session.session is None:
        raise ValueError(
            "an auth object needs a requests session (session=requests.Session() or "
            "DownloadSession()); (user, password) works with any"
        )
    if request.plain or isinstance(session, Direct) or _requests_session(session):
        return
    name = type(session).__name__
    if not request.ranged:
        if not callable(getattr(session, "request", None)):
            what = "a body" if request.body is not None else f"the method {request.method}"
            raise ValueError(
                f"the session ({name}) has no request() method to send {what}: "
                "it can only GET without a body"
            )
        return
    accepted = _keywords(session.get)
    if accepted is None:
        return
    for keyword, needed in (("headers", request.headers), ("auth", request.auth)):
        if needed and keyword not in accepted:
            raise ValueError(f"the get() of the session ({name}) takes no {keyword}=")


def _requests_session(session: Any) -> bool:
    """Whether *session* is a ``requests.Session`` or the ``requests`` module."""
    requests = sys.modules.get("requests")  # a requests.Session exists only once it is loaded
    return requests is not None and (isinstance(session, requests.Session) or session is requests)


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
