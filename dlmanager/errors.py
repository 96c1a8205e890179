"""The exceptions dlmanager raises, all under :class:`DlManagerError`.

::

    DlManagerError
     +-- DownloadInterrupt            the download was cancelled
     +-- DownloadError(OSError)       the download failed; carries url and dest
          +-- HTTPStatusError         the server answered with an error status
          +-- TransferError           network or protocol failure (__cause__ = the
          |    |                      transport's exception)
          |    +-- IncompleteBodyError  body shorter or longer than announced
          |    +-- StallError           no progress within the stall window
          |    +-- ResumeError          a range request got the wrong range back
          +-- ChecksumError           the bytes do not match the expected digest
          +-- StorageError            writing the file failed (disk full, file too
          |    |                      big, destination read-only or gone)
          |    +-- InsufficientSpaceError  less free space than the file's size
          +-- TooLargeError           the file is bigger than the ``max_size`` allowed

:class:`DownloadError` also derives from :class:`OSError`, like the
``requests`` exceptions that dlmanager 0.1.1 let through, so ``except IOError``
in old code still catches a failed download.

When the retry policy gives up, the error of the last attempt is raised; its
``history`` holds one :class:`~dlmanager.retry.RequestHistory` per attempt that
failed before it, so ``except HTTPStatusError`` still sees the final status.
"""

from __future__ import annotations

from typing import Any

from dlmanager.redact import redact

__all__ = [
    "ChecksumError",
    "DlManagerError",
    "DownloadError",
    "DownloadInterrupt",
    "HTTPStatusError",
    "IncompleteBodyError",
    "InsufficientSpaceError",
    "ResumeError",
    "StallError",
    "StorageError",
    "TooLargeError",
    "TransferError",
]


class DlManagerError(Exception):
    """Base class of every exception raised by dlmanager.

    :ivar other_errors: when :meth:`DownloadManager.wait()
        <dlmanager.DownloadManager.wait>` raises this error of a failed
        download, the errors of the other downloads that failed with it,
        oldest first; else ``()``
    """

    other_errors: tuple[BaseException, ...] = ()


class DownloadInterrupt(DlManagerError):
    """The download was cancelled (name kept from dlmanager 0.1.1)."""


class DownloadError(DlManagerError, OSError):
    """A download failed.

    Its message never shows credentials: a URL's ``user:password@`` and the
    values of query parameters such as ``token`` or ``X-Amz-Signature`` are
    masked (see :mod:`dlmanager.redact`); :attr:`url` is the URL as given.

    :ivar url: the URL that was being downloaded
    :ivar dest: the destination path, or None
    :ivar received: bytes of the body received by the failing attempt
    :ivar history: the earlier failed attempts, oldest first (set by the retry loop)
    :ivar source_errors: for a download with mirrors that failed on every
        source, ``(url, error)`` for each source, in order; else ``()``
    """

    history: tuple[Any, ...] = ()
    source_errors: tuple[tuple[str, BaseException], ...] = ()

    def __init__(
        self, message: str, *, url: str = "", dest: str | None = None, received: int = 0
    ) -> None:
        message = redact(message)
        # OSError treats two positional arguments as (errno, strerror): pass one.
        super().__init__(message)
        self._message = message
        self.url = url
        self.dest = dest
        self.received = received

    @property
    def message(self) -> str:
        """The error's message (credentials masked)."""
        return self._message

    @message.setter
    def message(self, message: str) -> None:
        self._message = redact(message)
        self.args = (self._message,)

    def __str__(self) -> str:
        return self._message

    def _context(self) -> dict[str, Any]:
        return {"url": self.url, "dest": self.dest, "received": self.received}

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self.message, self._context(), self.history))


def _rebuild(
    cls: type[DownloadError], message: str, context: dict[str, Any], history: tuple[Any, ...]
) -> DownloadError:
    error = cls(message, **context)
    error.history = history
    return error


class HTTPStatusError(DownloadError):
    """The server answered with a status of 400 or more.

    :ivar status_code: the HTTP status, or None when only the session's
        ``raise_for_status()`` told us the response was an error
    :ivar retry_after: seconds the server asked us to wait (``Retry-After``), or None
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None,
        retry_after: float | None = None,
        url: str = "",
        dest: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message, url=url, dest=dest, received=received)
        self.status_code = status_code
        self.retry_after = retry_after

    def _context(self) -> dict[str, Any]:
        return {
            **super()._context(),
            "status_code": self.status_code,
            "retry_after": self.retry_after,
        }


class TransferError(DownloadError):
    """The connection failed or the server broke the protocol.

    :ivar retryable: whether another attempt may succeed (False for TLS
        errors, redirect loops and the like)
    :ivar sent: whether the request may have reached the server: False when
        no connection could be made (refused, timed out connecting, a host
        name that does not resolve), so that a request that is not
        idempotent (a POST) may be sent again
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        url: str = "",
        dest: str | None = None,
        received: int = 0,
        sent: bool = True,
    ) -> None:
        super().__init__(message, url=url, dest=dest, received=received)
        self.retryable = retryable
        self.sent = sent

    def _context(self) -> dict[str, Any]:
        context = {**super()._context(), "retryable": self.retryable}
        if not self.sent:
            context["sent"] = False
        return context


class IncompleteBodyError(TransferError):
    """The body was shorter or longer than the length the server announced.

    :ivar expected: the announced length
    """

    def __init__(
        self,
        message: str,
        *,
        expected: int,
        retryable: bool = True,
        url: str = "",
        dest: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message, retryable=retryable, url=url, dest=dest, received=received)
        self.expected = expected

    def _context(self) -> dict[str, Any]:
        return {**super()._context(), "expected": self.expected}


class StallError(TransferError):
    """The transfer made too little progress for too long."""


class ResumeError(TransferError):
    """The server answered a range request with another range than asked.

    The bytes received so far are thrown away and the next attempt starts over.
    """


class ChecksumError(DownloadError):
    """The downloaded bytes do not match a checksum (given, or sent by the server).

    :ivar algorithm: the hash algorithm, e.g. ``"sha256"``
    :ivar expected: the expected hex digest
    :ivar actual: the hex digest of the bytes received
    :ivar source: where the expected digest came from (``"checksum"`` for the
        caller's, else the header's name)
    """

    def __init__(
        self,
        message: str,
        *,
        algorithm: str,
        expected: str,
        actual: str,
        source: str = "checksum",
        url: str = "",
        dest: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message, url=url, dest=dest, received=received)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
        self.source = source

    def _context(self) -> dict[str, Any]:
        return {
            **super()._context(),
            "algorithm": self.algorithm,
            "expected": self.expected,
            "actual": self.actual,
            "source": self.source,
        }


class StorageError(DownloadError):
    """Writing the file failed: disk full, file too big for the filesystem or
    ``RLIMIT_FSIZE``, destination read-only or removed. Not retried; the
    temporary file is removed and the files already in the directory are
    untouched.

    :ivar errno: the ``errno`` of the failed write (``ENOSPC``, ``EFBIG``...),
        or None
    """

    def __init__(
        self,
        message: str,
        *,
        errno: int | None = None,
        url: str = "",
        dest: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message, url=url, dest=dest, received=received)
        self.errno = errno

    def _context(self) -> dict[str, Any]:
        return {**super()._context(), "errno": self.errno}


class InsufficientSpaceError(StorageError):
    """The filesystem has less free space than the bytes the file still needs;
    raised before they are written.

    :ivar needed: the bytes still to write
    :ivar available: the bytes free for this user
    """

    def __init__(
        self,
        message: str,
        *,
        needed: int,
        available: int,
        errno: int | None = None,
        url: str = "",
        dest: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message, errno=errno, url=url, dest=dest, received=received)
        self.needed = needed
        self.available = available

    def _context(self) -> dict[str, Any]:
        return {**super()._context(), "needed": self.needed, "available": self.available}


class TooLargeError(DownloadError):
    """The file is bigger than the ``max_size`` allowed: announced so, or its
    body went past it. Not retried.

    :ivar limit: the ``max_size`` in bytes
    """

    def __init__(
        self,
        message: str,
        *,
        limit: int,
        url: str = "",
        dest: str | None = None,
        received: int = 0,
    ) -> None:
        super().__init__(message, url=url, dest=dest, received=received)
        self.limit = limit

    def _context(self) -> dict[str, Any]:
        return {**super()._context(), "limit": self.limit}
