"""The ``requests`` session a :class:`~dlmanager.DownloadManager` makes when given none."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Any

import requests
import requests.adapters

__all__ = ["DownloadSession"]


class DownloadSession(requests.Session):
    """A ``requests.Session`` tuned for many downloads from few hosts.

    - Its connection pool fits *pool_size* concurrent transfers per host.
    - Its adapters do not retry by themselves: the download's retry policy does.
    - The settings ``requests`` derives from the environment for each request
      (``HTTP(S)_PROXY``/``NO_PROXY``, ``REQUESTS_CA_BUNDLE``...) are derived
      once per scheme and host and reused: scanning the environment costs
      about a third of the time ``requests`` spends on a small request.
      Arguments given to a request still take precedence, as usual.

    :param pool_size: the largest number of connections kept per host
    """

    def __init__(self, pool_size: int = 10) -> None:
        super().__init__()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=10, pool_maxsize=max(10, pool_size), max_retries=0
        )
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self._environment: dict[tuple[str, str, Any], Any] = {}
        self._environment_lock = threading.Lock()

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if proxies or verify is not None or cert is not None:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc, stream)
        with self._environment_lock:
            settings = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            with self._environment_lock:
                self._environment[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}
