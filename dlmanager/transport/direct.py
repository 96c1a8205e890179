"""The manager's own transport: GETs over urllib3 by a DownloadSession's rules, without requests.

``requests`` spends more time on a small download than urllib3 does
(preparing a request, merging the environment's settings, hooks, cookie
extraction): :class:`Direct` sends the requests of a manager that was given
no session, or a :class:`~dlmanager.DownloadSession`, straight through
urllib3, and keeps every rule of a ``DownloadSession``:

- proxies from ``session.proxies`` and the environment (``HTTP(S)_PROXY``,
  ``NO_PROXY``), chosen per URL as ``requests`` chooses them;
- TLS verified against the CA bundle of ``REQUESTS_CA_BUNDLE`` or
  ``CURL_CA_BUNDLE``, or ``certifi``'s (as ``requests`` does), unless
  ``session.verify`` says otherwise; client certificates (``session.cert``);
- credentials: ``user:pass@`` in the URL, else ``.netrc``;
- redirects: at most ``max_redirects`` (:data:`~dlmanager.session.MAX_REDIRECTS`),
  only to http(s); ``Authorization`` dropped across origins, and the cookies
  without a domain too;
- cookies: kept in the session's jar (or the transport's own), sent by the
  jar's rules.

``requests`` is imported only when one of these needs its helpers (a proxy,
a ``.netrc`` file, a cookie) or when a session asks for what this transport
does not do (auth objects, hooks, params, adapters of its own, a SOCKS
proxy): such a request goes through the session, unchanged.
"""

from __future__ import annotations

import os
import sys
import threading
import types
import urllib.parse
from typing import TYPE_CHECKING, Any

import urllib3

from dlmanager.errors import TransferError
from dlmanager.request import basic_authorization, redirected
from dlmanager.transport.errors import redirects_message
from dlmanager.transport.pools import POOLS, close_pools

if TYPE_CHECKING:
    from dlmanager.session import DownloadSession

__all__ = [
    "MAX_REDIRECTS",
    "Direct",
    "Response",
    "is_download_session",
    "redirect_target",
    "strips_auth",
]

#: Redirects a :class:`~dlmanager.DownloadSession` follows for one request (``requests``
#: follows 30). Download links take one to three hops (a mirror, a CDN, a
#: signed storage URL); ten leave room for more and end a loop after ten tiny
#: requests instead of thirty.
MAX_REDIRECTS = 10
#: Statuses that redirect a GET (``requests``' ``REDIRECT_STATI``).
_REDIRECTS = frozenset((301, 302, 303, 307, 308))
_DEFAULT_PORTS = {"http": 80, "https": 443}
#: The environment variables ``requests`` reads a CA bundle from.
_CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class Response:
    """The response :meth:`Direct.get` returns: the parts of a
    ``requests.Response`` that an attempt reads, over urllib3's response."""

    __slots__ = ("headers", "raw", "status_code", "url")

    def __init__(self, raw: Any, url: str) -> None:
        self.raw = raw
        self.url = url  # after redirects
        self.status_code: int = raw.status
        self.headers = raw.headers  # case-insensitive, as requests' are

    def close(self) -> None:
        """Close the response; its connection goes back to the pool only when
        the body was read to its end (as ``requests.Response.close``)."""
        self.raw.close()
        self.raw.release_conn()


def redirect_target(url: str, location: str) -> str:
    """Where *location*, the ``Location`` of a response to *url*, leads (read as requests does)."""
    try:  # http.client decodes headers as latin-1; servers send UTF-8
        location = location.encode("latin1").decode("utf8")
    except UnicodeError:
        pass
    if location.startswith("//"):
        location = f"{urllib.parse.urlsplit(url).scheme}:{location}"
    if not urllib.parse.urlsplit(location).netloc:
        location = urllib.parse.urljoin(url, location)
    return str(urllib3.util.parse_url(location).url)


def strips_auth(old: str, new: str) -> bool:
    """Whether ``Authorization`` must be dropped on a redirect from *old* to
    *new* (``requests``' rule): another host, port or scheme, except from
    http to https on the default ports."""
    was, now = urllib.parse.urlsplit(old), urllib.parse.urlsplit(new)
    if was.hostname != now.hostname:
        return True
    upgraded = was.scheme == "http" and now.scheme == "https"
    if upgraded and was.port in (80, None) and now.port in (443, None):
        return False
    changed_port = was.port != now.port
    changed_scheme = was.scheme != now.scheme
    default = (_DEFAULT_PORTS.get(was.scheme), None)
    if not changed_scheme and was.port in default and now.port in default:
        return False
    return changed_port or changed_scheme


def is_download_session(session: object) -> bool:
    """Whether *session* is a :class:`~dlmanager.DownloadSession` (not a subclass)."""
    # Without importing requests: a DownloadSession exists only once its module is loaded.
    module = sys.modules.get("dlmanager.session")
    return module is not None and type(session) is module.DownloadSession


def _plain(session: DownloadSession) -> bool:
    """Whether *session* asks for nothing :class:`Direct` does not do."""
    from dlmanager.session import serves_directly

    return is_download_session(session) and serves_directly(session)


class _Route:
    """How to reach one scheme and host: the pool manager, the TLS settings,
    the credentials; derived once and reused."""

    __slots__ = ("absolute", "auth", "manager", "netrc", "pool_kwargs")

    def __init__(
        self,
        manager: Any,
        pool_kwargs: dict[str, Any],
        absolute: bool,
        netrc: Any,
        auth: str | None,
    ) -> None:
        self.manager = manager
        self.pool_kwargs = pool_kwargs
        self.absolute = absolute  # send the whole URL (an http request through a proxy)
        self.netrc = netrc
        self.auth = auth  # of the user:pass@ the key's netloc holds, if any


class Direct:
    """Sends GETs through urllib3 with the rules of *session* (a
    :class:`~dlmanager.DownloadSession`), or of a new ``DownloadSession``
    when None; the session is read for every request, so a change made to
    it holds for the next one.

    :param pool_size: the largest number of connections kept per host
    :param verify: without session: True to verify TLS certificates against
        the CA bundle of the environment's variables (else ``certifi``'s),
        the path of a CA bundle, or False not to verify (as
        ``DownloadSession(verify=...)``)
    """

    def __init__(
        self,
        pool_size: int = 10,
        session: DownloadSession | None = None,
        *,
        verify: bool | str = True,
    ) -> None:
        self.session = session
        self.verify = verify
        self._pool_size = max(10, pool_size)
        self._pools = urllib3.PoolManager(num_pools=10, maxsize=self._pool_size)
        self._pools.pool_classes_by_scheme = POOLS
        self._proxies: dict[str, Any] = {}
        self._routes: dict[tuple[Any, ...], _Route] = {}
        self._lock = threading.Lock()
        self._jar: Any = None  # the cookies of a transport without session
        self._fallback: DownloadSession | None = None
        self._netrc_file: bool | None = None
        self._headers = _default_headers()

    def __enter__(self) -> Direct:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every pooled connection."""
        with self._lock:
            managers = [self._pools, *self._proxies.values()]
            self._proxies.clear()
            self._routes.clear()
            fallback, self._fallback = self._fallback, None
        for manager in managers:
            close_pools(manager)
        if fallback is not None:
            fallback.close()

    # -- one request -------------------------------------------------------------------

    def get(
        self,
        url: str,
        *,
        headers: dict[str, str],
        timeout: tuple[float | None, float | None],
        stream: bool = True,
    ) -> Any:
        """GET *url*, following redirects (see :meth:`request`)."""
        return self.request("GET", url, headers=headers, timeout=timeout)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        timeout: tuple[float | None, float | None],
        body: bytes | None = None,
        auth: Any = None,
    ) -> Any:
        """Send *method* to *url* with *body*, following redirects; the
        response's body is not read.

        *headers* go over the session's (case-insensitively). *auth* is
        ``(user, password)``, which wins over credentials in the URL and
        ``.netrc``, or an auth object, which only the session can apply. A
        redirect changes the method and drops the body as ``requests`` does
        (:func:`~dlmanager.request.redirected`).

        :raises TransferError: too many redirects, or one to a non-http(s) URL
        :raises urllib3.exceptions.HTTPError: the request failed (its
            ``failed_url`` attribute names the URL of a redirect)
        """
        session = self.session
        credentials = _credentials(auth)
        if session is not None and (not _plain(session) or (auth and credentials is None)):
            return session.request(method, url, stream=True, headers=headers, data=body,
                                   auth=auth, timeout=timeout)  # fmt: skip
        if auth is not None and credentials is None:
            raise TransferError(f"{url}: an auth object needs a requests session",
                                retryable=False, url=url)  # fmt: skip
        route = self._route(url, session)
        if route is None:  # what urllib3 cannot do alone (a SOCKS proxy)
            return self._session_for_fallback().request(
                method, url, stream=True, headers=headers, data=body, auth=auth, timeout=timeout
            )
        limit = session.max_redirects if session is not None else MAX_REDIRECTS
        jar = session.cookies if session is not None else self._jar
        request = _merged(dict(session.headers) if session is not None else self._headers, headers)
        given = credentials or route.auth or (route.netrc(url) if route.netrc is not None else None)
        if given is not None:
            request = _merged(request, {"Authorization": given})
        history: list[str] = []
        current, domain_cookies_only = url, False
        while True:
            raw = self._send(method, current, route, request, body, timeout, jar,
                             domain_cookies_only)  # fmt: skip
            if "Set-Cookie" in raw.headers:
                jar = self._keep_cookies(current, request, raw, jar)
            location = raw.headers.get("Location")
            if raw.status not in _REDIRECTS or not location:
                return Response(raw, current)
            history.append(current)
            target = redirect_target(current, location)
            if len(history) > limit:
                raw.drain_conn()
                raise TransferError(
                    redirects_message(url, [*history, target], limit), retryable=False, url=url
                )
            if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
                raw.drain_conn()
                raise TransferError(
                    f"{url}: redirected to a non-http(s) URL: {location}", retryable=False, url=url
                )
            raw.drain_conn()  # a redirect's page: read, so its connection is reused
            raw.release_conn()
            method, keep_body = redirected(method, body is not None, raw.status)
            if not keep_body and body is not None:
                body = None
                request = _merged(request, {}, drop=("Content-Type",))
                headers = _merged(headers, {}, drop=("Content-Type",))
            if strips_auth(current, target):
                request = _merged(request, {}, drop=("Authorization",))  # in any case
                domain_cookies_only = True
            current = target
            route = self._route(current, session)
            if route is None:
                return self._session_for_fallback().request(
                    method, current, stream=True, headers=headers, data=body, timeout=timeout
                )
            if route.netrc is not None and "authorization" not in map(str.lower, request):
                netrc = route.netrc(current)
                if netrc is not None:
                    request["Authorization"] = netrc

    def _send(
        self,
        method: str,
        url: str,
        route: _Route,
        headers: dict[str, str],
        body: bytes | None,
        timeout: tuple[float | None, float | None],
        jar: Any,
        domain_cookies_only: bool,
    ) -> Any:
        parts = urllib3.util.parse_url(url)
        if jar is not None and len(jar):
            headers = {**headers, **_cookie_header(jar, url, headers, domain_cookies_only)}
        pool = route.manager.connection_from_host(
            parts.host, parts.port, parts.scheme, pool_kwargs=route.pool_kwargs
        )
        target = url if route.absolute else (parts.request_uri or "/")
        try:
            return pool.urlopen(
                method,
                target,
                body=body,
                headers=headers,
                redirect=False,
                assert_same_host=False,
                preload_content=False,
                decode_content=False,
                retries=False,
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
            )
        except urllib3.exceptions.HTTPError as exc:
            exc.failed_url = url  # type: ignore[attr-defined]
            raise

    # -- settings, derived once per scheme and host ----------------------------------

    def _route(self, url: str, session: DownloadSession | None) -> _Route | None:
        # The scheme and the netloc (credentials included) by string operations:
        # urlsplit() cost more than the rest of the lookup.
        scheme, _, rest = url.partition("://")
        scheme = scheme.lower()
        netloc = rest.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        if session is None:  # the CA variables are cheap to read, the proxy ones are not
            key: tuple[Any, ...] = (scheme, netloc, *map(os.environ.get, _CA_VARIABLES))
        else:
            key = (scheme, netloc, *session.settings_key())
        route = self._routes.get(key)
        if route is None:
            route = self._new_route(url, scheme, session)
            if route is None:
                return None
            with self._lock:
                self._routes[key] = route
        return route

    def _new_route(self, url: str, scheme: str, session: DownloadSession | None) -> _Route | None:
        if session is not None:
            settings = session.merge_environment_settings(url, {}, True, None, None)
            proxies, verify, cert = settings["proxies"], settings["verify"], settings["cert"]
            trust_env = session.trust_env
        else:
            proxies, cert, trust_env = _environment_proxies(url), None, True
            verify = self.verify
            if verify is True:
                verify = next((os.environ[n] for n in _CA_VARIABLES if os.environ.get(n)), True)
        proxy = _select_proxy(url, proxies) if proxies else None
        if proxy is not None and not proxy.lower().startswith(("http://", "https://")):
            return None  # SOCKS: requests' adapter knows how
        manager = self._pools if proxy is None else self._proxy_manager(proxy)
        pool_kwargs = _tls(verify, cert) if scheme == "https" else {}
        netrc = self._netrc() if trust_env else None
        absolute = proxy is not None and scheme == "http"
        return _Route(manager, pool_kwargs, absolute, netrc, _auth(url))

    def _proxy_manager(self, proxy: str) -> Any:
        with self._lock:
            manager = self._proxies.get(proxy)
            if manager is None:
                from requests.utils import get_auth_from_url

                username, password = get_auth_from_url(proxy)
                proxy_headers = (
                    urllib3.make_headers(proxy_basic_auth=f"{username}:{password}")
                    if username
                    else None
                )
                manager = urllib3.ProxyManager(
                    proxy, num_pools=10, maxsize=self._pool_size, proxy_headers=proxy_headers
                )
                manager.pool_classes_by_scheme = POOLS
                self._proxies[proxy] = manager
        return manager

    def _netrc(self) -> Any:
        """``requests``' ``.netrc`` lookup, or None when there is no ``.netrc`` file."""
        if self._netrc_file is None:
            names = [os.environ["NETRC"]] if os.environ.get("NETRC") else ["~/.netrc", "~/_netrc"]
            self._netrc_file = any(os.path.exists(os.path.expanduser(n)) for n in names)
        if not self._netrc_file:
            return None
        from requests.utils import get_netrc_auth

        def lookup(url: str) -> str | None:
            found = get_netrc_auth(url)
            return None if not found else _basic(*found)

        return lookup

    def _keep_cookies(self, url: str, headers: dict[str, str], raw: Any, jar: Any) -> Any:
        """Keep the cookies *raw* sets in *jar* (the transport's own, made now, if None)."""
        from requests.cookies import RequestsCookieJar, extract_cookies_to_jar

        if jar is None:
            with self._lock:
                if self._jar is None:
                    self._jar = RequestsCookieJar()
                jar = self._jar
        request: Any = types.SimpleNamespace(url=url, headers=headers)  # what MockRequest reads
        extract_cookies_to_jar(jar, request, raw)
        return jar

    def _session_for_fallback(self) -> DownloadSession:
        with self._lock:
            if self._fallback is None:
                from dlmanager.session import DownloadSession

                self._fallback = DownloadSession(self._pool_size)
            return self._fallback


def _default_headers() -> dict[str, str]:
    """The headers of a request without session: ``requests``' defaults, with dlmanager's name."""
    from dlmanager import __version__  # the package is loaded by the time a Direct is made

    return {"User-Agent": f"dlmanager/{__version__}", "Accept": "*/*", "Connection": "keep-alive"}


def _merged(
    base: dict[str, str], extra: dict[str, str], drop: tuple[str, ...] = ()
) -> dict[str, str]:
    """*base* with *extra* over it, and without *drop*, names compared case-insensitively."""
    gone = {name.lower() for name in (*extra, *drop)}
    return {**{k: v for k, v in base.items() if k.lower() not in gone}, **extra}


def _credentials(auth: Any) -> str | None:
    """The ``Authorization`` value of ``(user, password)`` *auth*, or None (none, or an object)."""
    return basic_authorization(*auth) if isinstance(auth, tuple) else None


def _basic(username: str, password: str) -> str:
    return str(urllib3.make_headers(basic_auth=f"{username}:{password}")["authorization"])


def _auth(url: str) -> str | None:
    """The ``Authorization`` of ``user:pass@`` in *url* (unquoted, as ``requests`` does)."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return None
    username = urllib.parse.unquote(parts.username or "")
    password = urllib.parse.unquote(parts.password or "")
    return _basic(username, password) if username or password else None


def _environment_proxies(url: str) -> dict[str, str]:
    """The environment's proxies for *url* (``NO_PROXY`` applied), read as ``requests`` does."""
    if not any(name.lower().endswith("_proxy") for name in os.environ):
        return {}
    from requests.utils import get_environ_proxies

    return dict(get_environ_proxies(url))


def _select_proxy(url: str, proxies: dict[str, str]) -> str | None:
    from requests.utils import prepend_scheme_if_needed, select_proxy

    proxy = select_proxy(url, proxies)
    return None if not proxy else str(prepend_scheme_if_needed(proxy, "http"))


def _tls(verify: Any, cert: Any) -> dict[str, Any]:
    """urllib3's pool settings for *verify* and *cert*, as ``requests``' adapter makes them."""
    if verify is False:
        kwargs: dict[str, Any] = {"cert_reqs": "CERT_NONE"}
    else:
        kwargs = {"cert_reqs": "CERT_REQUIRED"}
        bundle = verify if isinstance(verify, str) else _default_bundle()
        if bundle is not None:
            if not os.path.exists(bundle):
                raise OSError(
                    f"Could not find a suitable TLS CA certificate bundle, invalid path: {bundle}"
                )
            kwargs["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    if cert:
        cert_file, key_file = cert if isinstance(cert, tuple) else (cert, None)
        for path in (cert_file, key_file):
            if path and not os.path.exists(path):
                raise OSError(f"Could not find the TLS certificate file, invalid path: {path}")
        kwargs["cert_file"] = cert_file
        if key_file:
            kwargs["key_file"] = key_file
    return kwargs


def _default_bundle() -> str | None:
    """``certifi``'s CA bundle, which ``requests`` verifies against by default."""
    try:
        import certifi
    except ImportError:  # urllib3 then uses the system's
        return None
    return str(certifi.where())


def _cookie_header(
    jar: Any, url: str, headers: dict[str, str], domain_cookies_only: bool
) -> dict[str, str]:
    from requests.cookies import get_cookie_header

    if domain_cookies_only:
        from dlmanager.session import DomainCookiesOnly

        jar = jar.copy()
        jar.set_policy(DomainCookiesOnly())
    request: Any = types.SimpleNamespace(url=url, headers=headers)  # what MockRequest reads
    value = get_cookie_header(jar, request)
    return {"Cookie": value} if value else {}
