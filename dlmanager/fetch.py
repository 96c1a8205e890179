"""fetch_bytes(): a URL's body in memory, in one call.

The one-line form of a :class:`~dlmanager.Download` into an
:class:`io.BytesIO`: started, waited for, its error raised, its bytes
returned. Everything a download does (retries, resume, checksums,
``max_size``, timeouts) it does too.
"""

from __future__ import annotations

import io
from typing import Any

from dlmanager.download import Download

__all__ = ["fetch_bytes"]


def fetch_bytes(url: str, **options: Any) -> bytes:
    """Download *url* into memory and return its body.

    .. code-block:: python

        data = dlmanager.fetch_bytes(url, max_size=10 * 1024 * 1024)
        manifest = dlmanager.fetch_bytes(url, checksum="sha256:9f86d0...", retry=3).decode()

    The body is held in memory whole: give *max_size* for a URL whose size
    you do not control. A Ctrl-C while it waits cancels the download.

    :param url: the http or https URL
    :param options: the keywords of :class:`~dlmanager.Download`
        (``session``, ``retry``, ``timeout``, ``checksum``, ``max_size``,
        ``progress``, ``on_event``, ``chunk_size``...), with their meaning;
        the body comes over one connection
    :return: the body, verified against *checksum* when one is given
    :raises DownloadError: when the download fails (its subclasses:
        :class:`~dlmanager.HTTPStatusError`, :class:`~dlmanager.ChecksumError`,
        :class:`~dlmanager.TooLargeError`...), after the retries
    :raises ValueError: for a URL that is not http(s), or an invalid option
    :raises TypeError: for a keyword :class:`~dlmanager.Download` does not take

    .. versionadded:: 1.0
    """
    buffer = io.BytesIO()
    download = Download(url, buffer, **options)
    download.start()
    download.wait()
    return buffer.getvalue()
