"""Which session a manager's downloads go through: the one given, else its own, made on first read.

A manager given no session, or a :class:`~dlmanager.DownloadSession`, sends
its downloads' requests through dlmanager's own transport
(:class:`~dlmanager.transport.direct.Direct`, urllib3 without ``requests``);
any other session is used as it is.
"""

from __future__ import annotations

import threading
from typing import Any

from dlmanager.transport.direct import Direct, is_download_session

__all__ = ["SessionChoice"]


class SessionChoice:
    """The session of a manager's downloads, changeable while they run.

    :param session: the session the manager was given, or None
    :param pool_size: the connections its transport, and a session of its
        own, pool
    :param lock: the manager's lock
    """

    def __init__(self, session: Any, pool_size: int, lock: threading.RLock) -> None:
        self.lock = lock
        self.pool_size = pool_size
        self._session: Any = session
        self._transport: Direct | None = None
        if session is None or is_download_session(session):
            self._transport = Direct(pool_size, session)
        self._own: Any = None  # the session made here, closed by close()

    def sender(self) -> Any:
        """What a download started now sends its requests through."""
        return self._transport or self._session

    def get(self) -> Any:
        """The session: the one given, else a :class:`~dlmanager.DownloadSession`
        made now (sent through the transport as before)."""
        with self.lock:
            if self._session is None:
                from dlmanager.session import DownloadSession

                self._session = self._own = DownloadSession(self.pool_size)
                assert self._transport is not None
                self._transport.session = self._session
            return self._session

    def set(self, session: Any) -> None:
        """Use *session* for the downloads started from now on."""
        with self.lock:
            self._session = session
            if session is None or is_download_session(session):
                if self._transport is None:
                    self._transport = Direct(self.pool_size)
                self._transport.session = session
            else:
                self._transport = None

    def close(self) -> None:
        """Close the transport, and the session made here (one given is left open)."""
        if self._transport is not None:
            self._transport.close()
        if self._own is not None:
            self._own.close()
