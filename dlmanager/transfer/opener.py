"""The attempts of one download: opened on its session, aborted together when it is cancelled.

An :class:`AttemptOpener` is what a transfer asks for a request: it builds
each :class:`~dlmanager.transport.attempt.Attempt` with the download's URL,
session, options and request threads, keeps the open ones so that
:meth:`AttemptOpener.abort_all` (a cancel, or a connection's fatal error)
ends them at once, and closes them when they are released.
"""

from __future__ import annotations

import threading
from typing import Any

from dlmanager.config import TransferOptions
from dlmanager.errors import DownloadInterrupt
from dlmanager.request import RequestOptions
from dlmanager.revalidation import Conditions
from dlmanager.transport.attempt import CANCEL, Attempt
from dlmanager.transport.senders import Senders

__all__ = ["AttemptOpener"]


class AttemptOpener:
    """Opens the attempts of one download, and aborts them all on demand.

    :param dest: the destination path, for the errors' context (a ``.gz`` or
        ``.tgz`` name keeps a gzip-encoded body as sent)
    :param cancel: set when the download is cancelled: no attempt opens then
    :param request: the download's request options (*url* holds their query)
    """

    def __init__(
        self,
        session: Any,
        url: str,
        dest: str,
        options: TransferOptions,
        senders: Senders,
        cancel: threading.Event,
        request: RequestOptions | None = None,
    ) -> None:
        self.session = session
        self.request = request or RequestOptions()
        self.url = url
        self.dest = dest
        self.options = options
        self.senders = senders
        self.cancel = cancel
        self._keep_gzip = dest.lower().endswith((".gz", ".tgz"))
        self._lock = threading.Lock()
        self._open: set[Attempt] = set()

    def open(
        self,
        offset: int,
        end: int | None,
        validator: str | None,
        conditions: Conditions | None = None,
        url: str | None = None,
    ) -> Attempt:
        """A new attempt at bytes ``[offset, end)`` (to the end for None),
        sending *validator* as ``If-Range`` when it asks for a range, and
        revalidating the file described by *conditions* when given.

        :param url: the source to ask (a mirror), instead of the download's URL

        :raises DownloadInterrupt: when the download is cancelled
        """
        attempt = Attempt(
            self.session,
            url or self.url,
            dest=self.dest,
            offset=offset,
            end=end,
            validator=validator if offset or end is not None else None,
            timeouts=self.options.timeouts,
            chunk_size=self.options.read_size,
            keep_gzip=self._keep_gzip,
            max_size=self.options.max_size,
            content_chunk_size=self.options.content_chunk_size,
            senders=self.senders,
            conditions=conditions,
            request=self.request,
        )
        with self._lock:
            if self.cancel.is_set():
                raise DownloadInterrupt()
            self._open.add(attempt)
        return attempt

    def release(self, attempt: Attempt) -> None:
        """Close *attempt* (its response, if any) and forget it."""
        with self._lock:
            self._open.discard(attempt)
        attempt.close()

    def abort_all(self, reason: str = CANCEL) -> None:
        """Abort every open attempt: their sockets are shut down at once."""
        with self._lock:
            attempts = list(self._open)
        for attempt in attempts:
            attempt.abort(reason)
