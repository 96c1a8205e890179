"""What a :class:`~dlmanager.download.Download` is made of, built and checked from its keywords.

:func:`download_parts` turns the keywords of ``Download(...)`` into the
parts its thread uses (its transfer options, request options, sink,
destination, mirrors and rate limits), raising the errors the constructor
documents, in the same order, before the download holds anything.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

from dlmanager.checksum import Checksum
from dlmanager.config import (
    DEFAULT_CONNECTIONS,
    DEFAULT_MIN_SPLIT_SIZE,
    TimeoutLike,
    TransferOptions,
)
from dlmanager.destination import Destination
from dlmanager.disk.sinks import FileObjectSink, file_sink
from dlmanager.names import as_path, check_name_length, check_url
from dlmanager.rate import Throttle, TokenBucket
from dlmanager.request import RequestOptions, request_options
from dlmanager.retry import RetryLike
from dlmanager.revalidation import check_max_age
from dlmanager.transfer.sources import check_mirrors

__all__ = ["DownloadParts", "download_parts"]

#: The transfer keywords of a Download left out, as ``(type, value)``: *options* tell it all.
_LEFT_OUT = [(type(k), k) for k in (None, None, None, DEFAULT_CONNECTIONS,
                                    DEFAULT_MIN_SPLIT_SIZE, None, None)]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DownloadParts:
    """The parts of one download, checked.

    :ivar request: what it sends
    :ivar mirrors: its other URLs, checked
    :ivar sink: the file object it fills, or None for a path
    :ivar destination: where the file goes (for a file object, a
        :class:`~dlmanager.destination.Destination` without lock or leftovers)
    :ivar options: how it transfers (one connection into a file object)
    :ivar rate: its own bucket, changeable while it runs
    :ivar throttle: what its readers take from: *rate*, then the shared bucket
    :ivar revalidate: whether it revalidates a file already there
    """

    request: RequestOptions
    mirrors: tuple[str, ...]
    sink: FileObjectSink | None
    destination: Destination
    options: TransferOptions
    rate: TokenBucket
    throttle: Throttle
    revalidate: bool


def download_parts(
    url: str,
    dest: Any,
    *,
    chunk_size: int | None,
    retry: RetryLike,
    timeout: TimeoutLike,
    connections: int,
    min_split_size: int,
    checksum: Checksum | str | None,
    max_size: int | None,
    options: TransferOptions | None,
    revalidate: bool,
    max_age: float | None,
    headers: Any,
    params: Any,
    method: str | None,
    data: Any,
    json: Any,
    auth: Any,
    request: RequestOptions | None,
    mirrors: Iterable[str] | None,
    max_rate: float | None,
    total_rate: TokenBucket | None,
) -> DownloadParts:
    """The parts of a download of *url* into *dest*, from the keywords of
    :class:`~dlmanager.download.Download` (see there).

    :raises ValueError: for a URL that is not http(s), an invalid option
        (a *max_rate* not above 0 too)
    :raises TypeError: for a *dest* that is neither a path nor a binary file object
    """
    check_url(url)
    rate = TokenBucket(max_rate)
    check_max_age(max_age)
    request = request_options(request, headers=headers, params=params, method=method,
                              data=data, json=json, auth=auth)  # fmt: skip
    request.check_revalidation(revalidate, max_age)
    checked_mirrors = check_mirrors(url, mirrors, request)
    sink = file_sink(dest, url, revalidate=revalidate or max_age is not None)
    if sink is not None:
        dest = Destination(sink.dest, "", leftovers=False)
    elif not isinstance(dest, Destination):
        shown = as_path(dest, "dest")
        check_name_length(os.path.basename(shown))
        dest = Destination(shown, os.path.abspath(shown))
    keywords = (chunk_size, timeout, retry, connections, min_split_size, max_size, checksum)
    if options is None or [(type(k), k) for k in keywords] != _LEFT_OUT:  # else: built already
        built = TransferOptions.build(chunk_size=chunk_size, timeout=timeout, retry=retry,
                                      connections=connections, min_split_size=min_split_size,
                                      max_size=max_size, checksum=checksum)  # fmt: skip
        if options is not None and built != TransferOptions():
            raise ValueError("pass options or the keywords it holds, not both")
        options = built if options is None else options
    if sink is not None and options.connections > 1:  # a file object: one stream
        options = dataclasses.replace(options, connections=1)
    throttle = Throttle(rate, *([total_rate] if total_rate else []))
    return DownloadParts(request, checked_mirrors, sink, dest, options, rate, throttle,
                         bool(revalidate) or max_age is not None)  # fmt: skip
