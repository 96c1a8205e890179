"""The request options of one download: method, headers, query, body and auth, validated once.

:class:`RequestOptions` is what ``headers=``, ``params=``, ``method=``,
``data=``, ``json=`` and ``auth=`` of :meth:`DownloadManager.download
<dlmanager.DownloadManager.download>`, :class:`~dlmanager.Download` and
:func:`~dlmanager.retrieve` describe, with ``requests``' meanings, checked
and normalised once (a frozen value: two downloads asking for the same
request compare equal). Its decisions are pure:

- :attr:`RequestOptions.ranged`: only a GET without a body may be split over
  connections or resumed with ``Range`` (another request is fetched as one
  stream, from byte 0 at each attempt);
- :func:`retry_refusal`: a request whose method is not idempotent (urllib3's
  ``Retry.DEFAULT_ALLOWED_METHODS``: POST, PATCH and any other method) is
  retried only when it never reached the server, or when the server asked
  for it again later (429 or 503 with ``Retry-After``);
- :func:`redirected`: what a redirect does to the method and the body
  (``requests``' rules).

Standard library only: the command checks its options with it at parse time.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json as jsonlib
import re
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

from dlmanager.errors import DownloadError, HTTPStatusError, TransferError

__all__ = [
    "IDEMPOTENT_METHODS",
    "OWNED_HEADERS",
    "Headers",
    "RequestOptions",
    "basic_authorization",
    "encode_params",
    "redirected",
    "request_options",
    "retry_refusal",
]

#: The methods retried whatever the failure: urllib3's ``Retry.DEFAULT_ALLOWED_METHODS``
#: (RFC 9110 9.2.2: repeating them has the effect of sending them once).
IDEMPOTENT_METHODS = frozenset({"DELETE", "GET", "HEAD", "OPTIONS", "PUT", "TRACE"})
#: Statuses after which a request that is not idempotent is sent again, when
#: the response says when (``Retry-After``): the server refused it, unprocessed.
RETRY_LATER_STATUSES = frozenset({429, 503})
#: The headers dlmanager sets itself, and why a download may not set them.
OWNED_HEADERS: Mapping[str, str] = {
    "range": "dlmanager asks for ranges itself when it resumes or splits a download",
    "if-range": "dlmanager sends it with the ranges it asks for",
    "if-none-match": "dlmanager sends it when it revalidates (revalidate=, max_age=)",
    "if-modified-since": "dlmanager sends it when it revalidates (revalidate=, max_age=)",
    "accept-encoding": "dlmanager asks for the file as stored (identity) to check its length",
    "content-length": "it is set from the body",
    "transfer-encoding": "it is set from the body",
}
#: Methods that cannot download a file, and why.
_REFUSED_METHODS = {
    "HEAD": "a HEAD response has no body to download",
    "CONNECT": "CONNECT opens a tunnel, it does not download",
}
#: RFC 9110 5.6.2: a token (a method, a header name).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
#: What a header value may not hold: line breaks, NUL (RFC 9110 5.5), or start with a blank.
_BAD_VALUE = re.compile(r"[\r\n\x00]|\A[ \t]")


class Headers(Mapping[str, str]):
    """Request headers: read-only, looked up case-insensitively, hashable,
    equal to another :class:`Headers` with the same names (in any case) and
    values. Built by :meth:`RequestOptions.build`, which checks them."""

    __slots__ = ("_items", "_lower")

    def __init__(self, items: tuple[tuple[str, str], ...] = ()) -> None:
        self._items = items
        self._lower = {name.lower(): value for name, value in items}

    def __getitem__(self, name: str) -> str:
        return self._lower[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lower

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._lower == other._lower

    def __hash__(self) -> int:
        return hash(frozenset(self._lower.items()))

    def __repr__(self) -> str:  # names only: values may be credentials
        return f"Headers({[name for name, _ in self._items]!r})"


@dataclasses.dataclass(frozen=True, repr=False)
class RequestOptions:
    """What one download sends: built by :meth:`build` from the keywords of
    :meth:`DownloadManager.download <dlmanager.DownloadManager.download>`,
    compared by value (it is part of the key that joins a download in flight).

    :ivar method: the method, upper case (``"GET"``)
    :ivar headers: the download's own headers (:class:`Headers`), sent over
        the session's: a ``Content-Type`` for a form or JSON body included
    :ivar query: the encoded ``params``, appended to the URL's own query
    :ivar body: the body, or None
    :ivar auth: ``(user, password)`` for HTTP Basic, an auth object of
        ``requests`` (for a ``requests`` session only), or None
    """

    method: str = "GET"
    headers: Headers = dataclasses.field(default_factory=Headers)
    query: str = ""
    body: bytes | None = None
    auth: Any = None

    def __post_init__(self) -> None:
        _check_method(self.method)
        if not isinstance(self.headers, Headers):
            raise ValueError(f"headers must be Headers, not {type(self.headers).__name__}")
        if not isinstance(self.query, str):
            raise ValueError(f"query must be a string, not {type(self.query).__name__}")
        if self.body is not None and not isinstance(self.body, bytes):
            raise ValueError(f"body must be bytes or None, not {type(self.body).__name__}")
        _check_auth(self.auth)

    @classmethod
    def build(
        cls,
        *,
        method: str | None = None,
        headers: Mapping[str, str] | list[tuple[str, str]] | None = None,
        params: Any = None,
        data: Any = None,
        json: Any = None,
        auth: Any = None,
    ) -> RequestOptions:
        """The request the keywords describe, with ``requests``' meanings.

        :param method: ``"GET"`` by default; required with a body (a body is
            not sent with GET unless ``method="GET"`` says so)
        :param headers: a mapping or ``(name, value)`` pairs of strings; none
            of :data:`OWNED_HEADERS`, no name twice
        :param params: a mapping (a list value repeats the name; None is left
            out), ``(name, value)`` pairs, or an encoded string
        :param data: the body: bytes, a string (sent as UTF-8), or a mapping
            or pairs sent as a form (``application/x-www-form-urlencoded``)
        :param json: the body as JSON (``application/json``), instead of *data*
        :param auth: ``(user, password)`` for HTTP Basic, or an auth object of ``requests``
        :raises ValueError: naming what is wrong
        """
        if method is None and headers is None and params is None and data is json is auth is None:
            return _PLAIN  # most downloads: one shared, immutable plain GET
        body, content_type = _body(data, json)
        if method is None:
            if body is not None:
                raise ValueError(
                    "a body (data= or json=) needs a method: pass method='POST' "
                    "(or method='GET' to send it with a GET)"
                )
            method = "GET"
        if not isinstance(method, str):
            raise ValueError(f"method must be a string, not {type(method).__name__}")
        items = _header_items(headers)
        if content_type is not None and not any(n.lower() == "content-type" for n, _ in items):
            items += (("Content-Type", content_type),)
        auth = tuple(auth) if isinstance(auth, list) else auth
        return cls(method.upper(), Headers(items), encode_params(params), body, auth)

    def __repr__(self) -> str:
        parts = [f"method={self.method!r}"]
        if self.headers:
            parts.append(f"headers={list(self.headers)!r}")
        if self.query:
            parts.append(f"query={self.query!r}")
        if self.body is not None:
            parts.append(f"body=<{len(self.body)} bytes>")
        if self.auth is not None:
            parts.append(
                f"auth=({self.auth[0]!r}, '***')"
                if isinstance(self.auth, tuple)
                else "auth=<object>"
            )
        return f"RequestOptions({', '.join(parts)})"

    def keywords(self) -> dict[str, Any]:
        """The keywords of :meth:`build` (and of ``download()``) that describe
        this request again: ``download(url, **request.keywords())``."""
        return {"method": self.method, "headers": self.headers, "params": self.query or None,
                "data": self.body, "auth": self.auth}  # fmt: skip

    @property
    def plain(self) -> bool:
        """Whether it is a bare GET, as a download without request options sends."""
        return self.ranged and not self.headers and not self.query and self.auth is None

    @property
    def ranged(self) -> bool:
        """Whether its response may be split over connections and resumed with
        ``Range``: a GET without a body. Any other request is fetched as one
        stream, from byte 0 at each attempt, and never left resumable."""
        return self.method == "GET" and self.body is None

    @property
    def idempotent(self) -> bool:
        """Whether sending it twice does what sending it once does (:data:`IDEMPOTENT_METHODS`)."""
        return self.method in IDEMPOTENT_METHODS

    @property
    def basic_auth(self) -> tuple[bytes, bytes] | None:
        """The user and password of ``(user, password)`` auth, encoded (see
        :func:`basic_authorization`), or None."""
        if not isinstance(self.auth, tuple):
            return None
        return _encoded(*self.auth)

    def target(self, url: str) -> str:
        """*url* with the query appended to its own (before its ``#fragment``)."""
        if not self.query:
            return url
        base, hash_, fragment = url.partition("#")
        if "?" not in base:
            base += "?"
        elif not base.endswith(("?", "&")):
            base += "&"
        return f"{base}{self.query}{hash_}{fragment}"

    def identity(self) -> str:
        """What, besides the URL, tells this request's response apart from
        another's: the method and a digest of the body ("" for a GET without
        body; the query is in the URL). Headers and auth are not part of it."""
        if self.ranged:
            return ""
        return f"{self.method} {hashlib.sha256(self.body or b'').hexdigest()}"

    def check_revalidation(self, revalidate: bool, max_age: float | None) -> None:
        """Check that the request may revalidate a file (``revalidate=``, ``max_age=``).

        :raises ValueError: when *revalidate* or *max_age* is asked of a
            request that is not a GET without a body (conditional headers
            mean something else to other methods)
        """
        if (revalidate or max_age is not None) and not self.ranged:
            what = "a body" if self.body is not None else f"the method {self.method}"
            raise ValueError(
                "revalidate and max_age apply to a GET without a body, "
                f"not to a request with {what}"
            )


def request_options(given: RequestOptions | None, **keywords: Any) -> RequestOptions:
    """*given*, or the request the keywords of :meth:`RequestOptions.build` describe.

    :raises ValueError: for both at once, or an invalid keyword
    """
    if given is None:
        return RequestOptions.build(**keywords)
    if not isinstance(given, RequestOptions):
        raise ValueError(f"request must be RequestOptions, not {type(given).__name__}")
    if any(value is not None for value in keywords.values()):
        raise ValueError("pass request or the keywords it holds, not both")
    return given


def basic_authorization(user: str | bytes, password: str | bytes) -> str:
    """The ``Authorization`` value of HTTP Basic for *user* and *password*:
    text encoded in latin-1 as ``requests`` does, in UTF-8 (RFC 7617) when
    latin-1 cannot hold it."""
    return "Basic " + base64.b64encode(b":".join(_encoded(user, password))).decode("ascii")


def _encoded(user: str | bytes, password: str | bytes) -> tuple[bytes, bytes]:
    """*user* and *password* in latin-1, or both in UTF-8 when latin-1 cannot hold either."""

    def encode(text: str | bytes, encoding: str) -> bytes:
        return text if isinstance(text, bytes) else text.encode(encoding)

    try:
        return encode(user, "latin-1"), encode(password, "latin-1")
    except UnicodeEncodeError:
        return encode(user, "utf-8"), encode(password, "utf-8")


def redirected(method: str, has_body: bool, status: int) -> tuple[str, bool]:
    """The method of the request a redirect with *status* leads to, and
    whether the body goes with it (``requests``' rules, after the browsers):
    303 turns any method but HEAD into GET, so does 302, and 301 turns a
    POST into GET; the body (with its ``Content-Type``) is dropped unless
    the status is 307 or 308, which repeat the request as it was."""
    if (status in (302, 303) and method != "HEAD") or (status == 301 and method == "POST"):
        method = "GET"
    return method, has_body and status in (307, 308)


def retry_refusal(request: RequestOptions, error: DownloadError) -> str | None:
    """Why *error* may not be retried for *request* (pure), or None when it may
    (the retry policy then decides as for any download).

    An idempotent request (:data:`IDEMPOTENT_METHODS`) may always be. Another
    (POST, PATCH...) may be only when it never reached the server (the
    connection was refused, timed out, or its host name did not resolve),
    or when the server answered 429 or 503 with ``Retry-After``: a failure
    after it was sent (a reset, a read timeout, a body cut short, a stall,
    a 5xx) may have had its effect already.
    """
    if request.idempotent:
        return None
    if isinstance(error, HTTPStatusError):
        if error.status_code in RETRY_LATER_STATUSES and error.retry_after is not None:
            return None
    elif isinstance(error, TransferError) and not error.sent:
        return None
    return f"a {request.method} is not retried once sent (it is not idempotent)"


def encode_params(params: Any) -> str:
    """*params* encoded as a query string, as ``requests`` encodes them.

    :raises ValueError: for anything but a mapping, pairs or a string
    """
    if params is None:
        return ""
    if isinstance(params, str):
        return params
    if isinstance(params, bytes):
        if not params.isascii():
            raise ValueError("params given as bytes must be ASCII (percent-encoded)")
        return params.decode("ascii")
    return urllib.parse.urlencode(_pairs(params, "params"), doseq=True)


def _pairs(value: Any, what: str) -> list[tuple[Any, Any]]:
    """The ``(name, value)`` pairs of a mapping or a sequence of pairs, values
    of each list spread, None left out (``requests``' ``_encode_params``)."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, (list, tuple)) and all(
        isinstance(i, (list, tuple)) and len(i) == 2 for i in value
    ):
        items = [tuple(i) for i in value]
    else:
        raise ValueError(
            f"{what} must be a mapping, (name, value) pairs or a string, not {type(value).__name__}"
        )
    pairs = []
    for name, values in items:
        if not isinstance(name, (str, bytes)):
            raise ValueError(f"{what}: a name must be a string, not {name!r}")
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
            values = [values]
        for one in values:
            if one is None:
                continue
            if not isinstance(one, (str, bytes, int, float)) or isinstance(one, bool):
                raise ValueError(
                    f"{what}: the value of {name!r} must be a string or a number, not {one!r}"
                )
            pairs.append((name, one))
    return pairs


def _body(data: Any, json: Any) -> tuple[bytes | None, str | None]:
    """The body and its ``Content-Type`` (None: none to add)."""
    if data is not None and json is not None:
        raise ValueError("pass data= or json=, not both")
    if json is not None:
        try:
            text = jsonlib.dumps(json, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"json is not JSON-serialisable: {exc}") from None
        return text.encode("utf-8"), "application/json"
    if data is None:
        return None, None
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data), None
    if isinstance(data, str):
        return data.encode("utf-8"), None
    if hasattr(data, "read"):
        raise ValueError(
            "data must be bytes, a string, a mapping or pairs, not a file object: "
            "a retry sends the body again, read it into bytes first"
        )
    form = urllib.parse.urlencode(_pairs(data, "data"), doseq=True)
    return form.encode("ascii"), "application/x-www-form-urlencoded"


def _header_items(headers: Any) -> tuple[tuple[str, str], ...]:
    if headers is None:
        return ()
    if isinstance(headers, Mapping):
        items = list(headers.items())
    elif isinstance(headers, (list, tuple)) and all(
        isinstance(i, (list, tuple)) and len(i) == 2 for i in headers
    ):
        items = [tuple(i) for i in headers]
    else:
        raise ValueError(
            f"headers must be a mapping or (name, value) pairs, not {type(headers).__name__}"
        )
    seen: set[str] = set()
    for name, value in items:
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise ValueError(f"invalid header name {name!r}")
        if not isinstance(value, str):
            raise ValueError(f"header {name}: its value must be a string, not {value!r}")
        if _BAD_VALUE.search(value):
            raise ValueError(
                f"header {name}: its value may not start with a blank nor hold a line "
                f"break or NUL: {value!r}"
            )
        lower = name.lower()
        why = OWNED_HEADERS.get(lower)
        if why is not None:
            raise ValueError(f"header {name} may not be set: {why}")
        if lower in seen:
            raise ValueError(f"header {name} given twice")
        seen.add(lower)
    return tuple((str(n), str(v)) for n, v in items)


def _check_method(method: object) -> None:
    if not isinstance(method, str) or not _TOKEN.match(method):
        raise ValueError(f"invalid method {method!r}: a method is a token such as GET or POST")
    if method != method.upper():
        raise ValueError(f"method must be upper case, not {method!r}")
    why = _REFUSED_METHODS.get(method)
    if why is not None:
        raise ValueError(f"method {method} cannot be used: {why}")


def _check_auth(auth: object) -> None:
    if auth is None or callable(auth):
        return
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(part, str) for part in auth):
        return
    raise ValueError(
        "auth must be (user, password) strings or an auth object of requests, "
        f"not {type(auth).__name__}"
    )


#: A GET with no option of its own (what :meth:`RequestOptions.build` gives without keywords).
_PLAIN = RequestOptions.build(method="GET")
