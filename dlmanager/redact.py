"""Credentials never shown: URLs and messages with passwords and tokens masked.

:func:`redact` is the one function used wherever dlmanager shows a URL or a
message that may hold one: exception messages (in
:class:`~dlmanager.errors.DownloadError`), log records (:class:`RedactFilter`
on every dlmanager logger, and on urllib3's, which logs request paths), the
``repr`` of a :class:`~dlmanager.Download` and the names of its threads. It
masks the ``user:password@`` part of a URL and the values of the query
parameters that usually carry credentials (:data:`SECRET_PARAMETERS`,
compared case-insensitively). The URL a download was given is kept as is in
``Download.get_url()`` and in the ``url`` attribute of its errors: code that
needs it has it.
"""

from __future__ import annotations

import logging
import re

__all__ = ["SECRET_PARAMETERS", "RedactFilter", "get_logger", "redact", "redact_url"]

#: The query parameters whose values are masked (lower case).
SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "api-key",
        "api_key",
        "apikey",
        "auth",
        "client_secret",
        "id_token",
        "key",
        "passwd",
        "password",
        "private_token",
        "refresh_token",
        "secret",
        "sig",
        "signature",
        "token",
        "x-amz-credential",
        "x-amz-security-token",
        "x-amz-signature",
        "x-goog-credential",
        "x-goog-signature",
    }
)

#: The mask that replaces a credential.
MASK = "***"

# scheme://userinfo@ : the userinfo (user, or user:password) is masked whole,
# since a user name alone is often a token (https://TOKEN@host/).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s@?#]+@")
_PARAMETER = re.compile(
    r"(?i)([?&;](?:"
    + "|".join(re.escape(name) for name in sorted(SECRET_PARAMETERS, key=len, reverse=True))
    + r")=)(?:[^&#;:\s'\"<>]|:(?!\s|$))*"  # a value; "URL: message" keeps its ": "
)


def redact(text: str) -> str:
    """*text* with the credentials of the URLs (or URL paths) in it masked."""
    if "@" in text:
        text = _USERINFO.sub(rf"\1{MASK}@", text)
    if "=" in text:
        text = _PARAMETER.sub(rf"\1{MASK}", text)
    return text


def redact_url(url: str) -> str:
    """*url* with its ``user:password@`` and credential parameters masked."""
    return redact(url)


class RedactFilter(logging.Filter):
    """A logging filter that masks credentials in a record's message and traceback.

    dlmanager puts one on each of its loggers and on urllib3's connection
    pool logger. Add it to a handler to mask credentials in everything the
    handler writes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and not record.exc_text:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
        return True


_FILTER = RedactFilter()


def get_logger(name: str) -> logging.Logger:
    """The logger *name*, with :class:`RedactFilter` on it."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


# urllib3 logs each request line ("GET /path?query HTTP/1.1") at DEBUG.
get_logger("urllib3.connectionpool")
