"""The ``requests`` session a :class:`~dlmanager.DownloadManager` makes when given none."""

from __future__ import annotations

import http.cookiejar
import os
import threading
import urllib.parse
from typing import Any

import requests
import requests.adapters
import urllib3

from dlmanager.transport.direct import MAX_REDIRECTS
from dlmanager.transport.pools import POOLS as _POOLS
from dlmanager.transport.pools import close_pools, connections_seen_by

__all__ = [
    "MAX_REDIRECTS",
    "DomainCookiesOnly",
    "DownloadSession",
    "connections_seen_by",
    "serves_directly",
]


#: The schemes a redirect may lead to.
_SCHEMES = ("http", "https")
#: The environment variables ``requests`` reads a CA bundle from.
_CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")


class DownloadSession(requests.Session):
    """A ``requests.Session`` tuned for many downloads from few hosts.

    - Its connection pool fits *pool_size* concurrent transfers per host.
    - Its adapters do not retry by themselves: the download's retry policy does.
    - The settings ``requests`` derives from the environment for each request
      (``HTTP(S)_PROXY``/``NO_PROXY``...) are derived once per scheme and host
      and reused: scanning the environment costs about a third of the time
      ``requests`` spends on a small request. Arguments given to a request
      still take precedence, as usual; the session's own ``verify``,
      ``cert``, ``proxies`` and ``trust_env`` are read for every request.
    - TLS certificates are verified (``verify=True``), against the CA bundle
      of ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` when set. A
      ``verify`` set on the session (a CA bundle path, or False) wins over
      those variables, unlike with a plain ``requests.Session``.
    - Redirects: at most :data:`MAX_REDIRECTS` per request (see
      ``max_redirects``), only to http and https URLs.
      ``Authorization`` is dropped on a redirect to another host, port or
      scheme (as ``requests`` does, except from http to https on the
      default ports); cookies follow the jar's domain rules, and the cookies
      set without a domain (which ``requests`` sends to every host) are not
      sent once a redirect went to another origin.

    :param pool_size: the largest number of connections kept per host
    :param verify: True to verify TLS certificates against the default CA
        bundle, the path of a CA bundle (a file or an OpenSSL hashed
        directory) to verify against, or False not to verify
    :raises ValueError: for an invalid *pool_size* or *verify*
    """

    def __init__(self, pool_size: int = 10, *, verify: bool | str = True) -> None:
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 1:
            raise ValueError(f"pool_size must be an integer >= 1, not {pool_size!r}")
        if not isinstance(verify, (bool, str)) or verify == "":
            raise ValueError(f"verify must be True, False or a CA bundle path, not {verify!r}")
        super().__init__()
        adapter = _Adapter(pool_connections=10, pool_maxsize=max(10, pool_size), max_retries=0)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.verify = verify
        self.max_redirects = MAX_REDIRECTS
        self._environment: dict[tuple[Any, ...], Any] = {}
        self._environment_lock = threading.Lock()

    def close(self) -> None:
        """Close every pooled connection now, then the adapters.

        ``requests`` (with urllib3 2) only forgets its pools on close: a pool
        still referenced elsewhere (by a response in a traceback, say) keeps
        its sockets open until the garbage collector runs.
        """
        for adapter in self.adapters.values():
            manager = getattr(adapter, "poolmanager", None)
            if manager is not None:
                close_pools(manager)
        super().close()

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        settings: Any
        if proxies or verify is not None or cert is not None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            return settings if verify is not None else self._own_verify(settings)
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc, stream, *self.settings_key())
        with self._environment_lock:
            settings = self._environment.get(key)
        if settings is None:
            settings = self._own_verify(
                super().merge_environment_settings(url, proxies, stream, verify, cert)
            )
            with self._environment_lock:
                self._environment[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}

    def settings_key(self) -> tuple[Any, ...]:
        """What the settings derived for a host depend on, besides the proxy
        variables: the session's settings (they may change between requests)
        and the CA variables (cheap to read)."""
        return (
            self.trust_env,
            _hashable(self.verify),
            _hashable(self.cert),
            _hashable(self.proxies),
            *(os.environ.get(name) for name in _CA_VARIABLES),
        )

    def _own_verify(self, settings: Any) -> Any:
        """Let a ``verify`` set on the session win over the environment's CA bundle."""
        if self.verify is not True:
            settings["verify"] = self.verify
        return settings

    # -- redirects ---------------------------------------------------------------------

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        """The redirect's target, refused unless it is an http(s) URL.

        :raises requests.exceptions.InvalidSchema: for any other scheme
            (``ftp:``, ``file:``, ``data:``...), before anything is fetched
        """
        target = super().get_redirect_target(resp)
        if target is None:
            return None
        scheme = urllib.parse.urlsplit(urllib.parse.urljoin(resp.url or "", target)).scheme
        if scheme.lower() not in _SCHEMES:
            resp.close()
            raise requests.exceptions.InvalidSchema(
                f"redirected to a non-http(s) URL: {target}", request=resp.request, response=resp
            )
        return target

    def rebuild_auth(self, prepared_request: Any, response: Any) -> None:
        """Drop ``Authorization`` as ``requests`` does; from a redirect to
        another origin on, leave out the cookies that have no domain."""
        # Called through Any: the type stubs some installs add leave these untyped.
        session: Any = super()
        session.rebuild_auth(prepared_request, response)
        previous = getattr(response.request, "url", None)
        jar = getattr(prepared_request, "_cookies", None)
        if (
            previous is None
            or prepared_request.url is None
            or not isinstance(jar, http.cookiejar.CookieJar)
            or isinstance(getattr(jar, "_policy", None), DomainCookiesOnly)
            or not session.should_strip_auth(previous, prepared_request.url)
        ):
            return
        # The policy goes with the jar's copies, so to every later hop too.
        jar.set_policy(DomainCookiesOnly())
        prepared_request.headers.pop("Cookie", None)
        prepared_request.prepare_cookies(jar)


class _Adapter(requests.adapters.HTTPAdapter):
    """requests' adapter, with pools that show their connections
    (``pool_classes_by_scheme`` is urllib3's customization point)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, proxy: Any, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if type(manager) is urllib3.ProxyManager:  # SOCKS managers keep their own
            manager.pool_classes_by_scheme = _POOLS
        return manager


class DomainCookiesOnly(http.cookiejar.DefaultCookiePolicy):
    """Send only cookies that name their domain (``requests`` sends a cookie
    set without a domain to every host)."""

    def return_ok(self, cookie: http.cookiejar.Cookie, request: Any) -> bool:
        return bool(cookie.domain) and super().return_ok(cookie, request)


def _hashable(value: Any) -> Any:
    """*value* as a cache key: dicts become sorted item tuples, lists tuples."""
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def serves_directly(session: DownloadSession) -> bool:
    """Whether the manager's own transport may send *session*'s requests
    without ``requests``: the session asks for nothing but what a
    ``DownloadSession`` does (no auth object, params, hooks or adapters of
    its own; headers are sent as they are)."""
    return (
        session.auth is None
        and not session.params
        and not any(session.hooks.values())
        and len(session.adapters) == 2
        and all(type(adapter) is _Adapter for adapter in session.adapters.values())
    )
