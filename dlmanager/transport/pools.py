"""Connection pools that show the connections they hand out, so a request can be aborted.

:func:`connections_seen_by` passes every connection these pools hand out
in the calling thread to a callback; a download uses it to shut down the
socket of a request that waits for its response headers when it is
cancelled. Both transports use these pools: the one of a
:class:`~dlmanager.DownloadSession` and :class:`~dlmanager.transport.direct.Direct`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import urllib3

__all__ = ["POOLS", "close_pools", "connections_seen_by"]

_seen = threading.local()


@contextlib.contextmanager
def connections_seen_by(callback: Callable[[Any], object]) -> Iterator[None]:
    """Pass every connection the pools of :data:`POOLS` hand out in this
    thread, for the ``with`` block, to *callback* (before it is used).

    A download uses it to shut down the socket of a request that waits for
    its response headers when it is cancelled: the request then ends at
    once, instead of when the server answers. (Other sessions' pools do not
    call it.)
    """
    previous = getattr(_seen, "callback", None)
    _seen.callback = callback
    try:
        yield
    finally:
        _seen.callback = previous


class _Seen:
    """A connection pool that shows the connections it hands out (see
    :func:`connections_seen_by`)."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        # urllib3's pools get their connections here: the one hook they offer.
        conn = super()._get_conn(timeout)  # type: ignore[misc]
        callback = getattr(_seen, "callback", None)
        if callback is not None:
            callback(conn)
        return conn


class _SeenHTTPPool(_Seen, urllib3.HTTPConnectionPool):
    pass


class _SeenHTTPSPool(_Seen, urllib3.HTTPSConnectionPool):
    pass


#: urllib3's ``pool_classes_by_scheme`` for pools that show their connections.
POOLS = {"http": _SeenHTTPPool, "https": _SeenHTTPSPool}


def close_pools(manager: Any) -> None:
    """Close every pooled connection of *manager* (a urllib3 ``PoolManager``) now.

    ``PoolManager.clear()`` only forgets its pools: a pool still referenced
    elsewhere (by a response in a traceback, say) would keep its sockets open
    until the garbage collector runs.
    """
    pools = getattr(manager, "pools", None)
    if pools is not None:
        for key in list(pools.keys()):
            pool = pools.get(key)
            if pool is not None:
                pool.close()
    manager.clear()
