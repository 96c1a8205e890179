"""The user's download cache: where it is, how big it may grow, and retrieve() to fill it.

:func:`retrieve` downloads a URL into the cache once (verified, and shared by
the threads and processes that ask for it at the same time) and returns the
path of the file. :func:`cache_fname` is the name it gives a URL's file.
:func:`default_cache_dir` is the directory :func:`retrieve` and the
``dlmanager cache`` commands use when given none: ``DLMANAGER_CACHE_DIR``
when set, else the platform's user cache directory for dlmanager
(:mod:`platformdirs`: ``~/.cache/dlmanager`` on Linux, honouring
``XDG_CACHE_HOME``; ``~/Library/Caches/dlmanager`` on macOS).
:func:`default_cache_max_size` reads its optional size limit from
``DLMANAGER_CACHE_MAX_SIZE`` (a size as the command takes them: ``500M``,
``2G``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import threading
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dlmanager.disk.metadata import strip_credentials
from dlmanager.names import as_path, check_url, name_from_url, validate_fname
from dlmanager.redact import redact_url
from dlmanager.sizes import parse_size

if TYPE_CHECKING:
    from dlmanager.checksum import Checksum
    from dlmanager.config import TimeoutLike
    from dlmanager.download import Download
    from dlmanager.errors import DownloadError
    from dlmanager.events import EventCallback, ProgressCallback
    from dlmanager.request import RequestOptions
    from dlmanager.retry import RetryLike

__all__ = [
    "CACHE_DIR_VARIABLE",
    "CACHE_MAX_SIZE_VARIABLE",
    "OfflineWarning",
    "cache_fname",
    "default_cache_dir",
    "default_cache_max_size",
    "retrieve",
]

CACHE_DIR_VARIABLE = "DLMANAGER_CACHE_DIR"
CACHE_MAX_SIZE_VARIABLE = "DLMANAGER_CACHE_MAX_SIZE"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> str:
    """The user's dlmanager cache directory (not created here).

    :param environ: the environment to read (default: :data:`os.environ`)
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get(CACHE_DIR_VARIABLE)
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    import platformdirs  # only when the default is asked for

    return str(platformdirs.user_cache_dir("dlmanager", appauthor=False))


def default_cache_max_size(environ: Mapping[str, str] | None = None) -> int | None:
    """The size limit of the user's cache in bytes (``DLMANAGER_CACHE_MAX_SIZE``), or None.

    :raises ValueError: when the variable is set to something that is not a size
    """
    environ = os.environ if environ is None else environ
    value = environ.get(CACHE_MAX_SIZE_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{CACHE_MAX_SIZE_VARIABLE}: {exc}") from None


#: Hex digits of the URL's SHA-256 that start the name :func:`cache_fname` gives.
HASH_DIGITS = 16
#: The most bytes of the URL's own name that :func:`cache_fname` keeps (its end).
READABLE_BYTES = 100
#: How many times :func:`retrieve` downloads a file that another process
#: evicted before it could be returned.
_ATTEMPTS = 3


class OfflineWarning(UserWarning):
    """:func:`retrieve` could not reach the server to revalidate a file, and
    returned the copy already in the cache.

    :ivar url: the URL asked for
    :ivar path: the copy returned
    :ivar error: the :class:`~dlmanager.DownloadError` of the revalidation
    """

    def __init__(self, url: str, path: pathlib.Path, error: DownloadError) -> None:
        message = f"using the copy in the cache, not revalidated: {error}"
        if str(path) not in message:
            message += f" (the copy: {path})"
        if redact_url(url) not in message:
            message += f" (the URL: {redact_url(url)})"
        super().__init__(message)
        self.url = url
        self.path = path
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.url, self.path, self.error)


def cache_fname(url: str, request: RequestOptions | None = None) -> str:
    """The name :func:`retrieve` gives the file of *url* when given none.

    ``HASH-NAME``: the first 16 hex digits of the SHA-256 of the URL, then
    the name the URL's path ends with (its last 100 bytes at most), as
    ``pooch`` names its files; just ``HASH`` when the path gives no usable
    name (``https://host/``). The hash covers the whole URL, query string
    included (two signed or versioned URLs of one path are two files),
    except its ``user:password@`` part and its ``#fragment``, which the
    server never sees. So two URLs whose paths end with the same name never
    share a file.

    With *request* (:class:`~dlmanager.request.RequestOptions`), the hash
    covers its query (appended to the URL's) and, for a request other than
    a GET without a body, its method and body: two requests that ask for
    different files get different names. Headers and auth are left out (a
    header that selects another file needs a *fname* of its own).

    :raises ValueError: for a URL that is not http(s)
    """
    check_url(url)
    key = urllib.parse.urldefrag(strip_credentials(url))[0]
    if request is not None:
        key = request.target(key)
        if request.identity():
            key += "\n" + request.identity()
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_DIGITS]
    try:
        readable = name_from_url(url)
    except ValueError:
        return digest
    encoded = os.fsencode(readable)
    if len(encoded) > READABLE_BYTES:  # the end, with the extension, and whole characters
        readable = os.fsdecode(encoded[-READABLE_BYTES:].decode("utf-8", "ignore").encode())
    return f"{digest}-{readable}"


# The files retrieve() calls of this process are about to return, by path (with
# how many calls): no eviction by a manager of retrieve() removes them meanwhile.
_returning: Counter[str] = Counter()
_returning_lock = threading.Lock()


@contextlib.contextmanager
def _keeping(path: str) -> Iterator[None]:
    with _returning_lock:
        _returning[path] += 1
    try:
        yield
    finally:
        with _returning_lock:
            _returning[path] -= 1
            if not _returning[path]:
                del _returning[path]


def _kept(path: str) -> bool:
    """The ``protect`` of the size limit of :func:`retrieve`'s managers: the
    files being returned (the user's own are not even counted: see
    ``include_foreign``)."""
    with _returning_lock:
        return path in _returning


def retrieve(
    url: str,
    checksum: Checksum | str | None = None,
    *,
    fname: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revalidate: bool = False,
    max_age: float | None = None,
    progress: ProgressCallback | None = None,
    on_event: EventCallback | None = None,
    session: Any = None,
    retry: RetryLike = None,
    timeout: TimeoutLike = None,
    connections: int | None = None,
    chunk_size: int | None = None,
    min_split_size: int | None = None,
    max_size: int | None = None,
    headers: Any = None,
    params: Any = None,
    method: str | None = None,
    data: Any = None,
    json: Any = None,
    auth: Any = None,
) -> pathlib.Path:
    """Download *url* into the cache unless it is there, and return the file's path.

    .. code-block:: python

        path = dlmanager.retrieve(
            "https://example.org/data/train.csv.gz",
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        )

    The file is downloaded as :meth:`DownloadManager.download
    <dlmanager.DownloadManager.download>` downloads it (retried, resumed,
    verified, published atomically), by one thread of one process at a time:
    the other threads and processes that ask for it meanwhile wait for that
    download and return its file. See :ref:`retrieve-one-call`.

    :param url: an http or https URL
    :param checksum: ``"ALGORITHM:HEX"`` the file must match; a copy in the
        cache that does not match it is downloaded again
    :param fname: the file's name in the cache; default :func:`cache_fname`
        (a hash of the URL, then the URL's own name)
    :param cache_dir: the cache directory, created if missing; default
        :func:`default_cache_dir`. Its size limit, when
        ``DLMANAGER_CACHE_MAX_SIZE`` is set, is applied after the download
        (least recently used files first; never the file returned; files
        dlmanager did not download are neither counted nor removed)
    :param revalidate: ask the server whether a copy in the cache is still
        current (one conditional request), and download the new version if
        not
    :param max_age: revalidate a copy validated more than this many seconds
        ago, and use a more recent one without a request
    :param progress: ``progress(download, current, total)``, while it downloads
    :param on_event: receives every :class:`~dlmanager.DownloadEvent` of the
        download
    :param session: the ``requests.Session`` (or
        :class:`~dlmanager.session.DownloadSession`) to download with
    :param retry: the retry policy (see :class:`~dlmanager.RetryPolicy`)
    :param timeout: the timeouts (see :class:`~dlmanager.Timeouts`)
    :param connections: connections per file (see :class:`~dlmanager.Download`;
        default :data:`~dlmanager.config.DEFAULT_CONNECTIONS`)
    :param chunk_size: the read size
    :param min_split_size: the smallest part of a file worth a connection
    :param max_size: the largest file accepted, in bytes (not the cache's
        size limit, which ``DLMANAGER_CACHE_MAX_SIZE`` sets)
    :param headers: request options, as for :meth:`DownloadManager.download
        <dlmanager.DownloadManager.download>` (see :ref:`request-options`),
        as are *params*, *method*, *data*, *json* and *auth*; the default
        name's hash covers the query, the method and the body
        (:func:`cache_fname`)
    :return: the absolute path of the file in the cache
    :raises DownloadError: when the download fails (see
        :mod:`dlmanager.errors`); but when only the revalidation of a copy
        in the cache fails because the server cannot be reached (a
        connection refused or timed out, a name that does not resolve, a
        ``5xx`` status after the retries), that copy is returned with an
        :class:`OfflineWarning`
    :raises ValueError: for a URL that is not http(s), a *fname* that would
        land outside the cache directory, an invalid *checksum*, *max_age*,
        option or request option, or an invalid ``DLMANAGER_CACHE_MAX_SIZE``
    :raises TypeError: for a keyword it does not take
    :raises FileNotFoundError: when another process removed the file right
        after each of three downloads (a cache far too small for it)

    .. versionadded:: 1.0
    """
    from dlmanager.checksum import parse_checksum
    from dlmanager.manager import DownloadManager
    from dlmanager.persist_limit import PersistLimit
    from dlmanager.request import RequestOptions
    from dlmanager.revalidation import check_max_age

    # Every argument is checked before the directory is created.
    request = RequestOptions.build(headers=headers, params=params, method=method, data=data,
                                   json=json, auth=auth)  # fmt: skip
    request.check_revalidation(revalidate, max_age)
    name = cache_fname(url, request) if fname is None else validate_fname(fname)
    expected = parse_checksum(checksum)
    check_max_age(max_age)
    size_limit = default_cache_max_size()
    if cache_dir is None:
        directory = default_cache_dir()
    else:
        directory = os.path.abspath(os.path.expanduser(as_path(cache_dir, "cache_dir")))
    limit = None
    if size_limit:  # the most recently used file is always kept (file_limit=1)
        limit = PersistLimit(size_limit, file_limit=1, protect=_kept, include_foreign=False)
    options: dict[str, Any] = {"retry": retry, "timeout": timeout, "chunk_size": chunk_size}
    options.update(max_size=max_size, max_workers=1)
    if connections is not None:
        options["connections"] = connections
    if min_split_size is not None:
        options["min_split_size"] = min_split_size
    path = os.path.join(directory, name)
    with _keeping(path):
        manager = DownloadManager(directory, session, limit, **options)
        try:
            for _ in range(_ATTEMPTS):
                download = manager.download(url, name, progress, on_event=on_event,
                                            checksum=expected, revalidate=revalidate,
                                            max_age=max_age,
                                            **request.keywords())  # fmt: skip
                if download is not None:
                    _wait(download, url, path, expected)
                try:
                    with manager.pin(name) as pinned:  # a use: the most recently used file
                        return pathlib.Path(pinned)
                except FileNotFoundError:
                    continue  # another process evicted it meanwhile: once more
        finally:
            manager.close()
    why = f" (is {CACHE_MAX_SIZE_VARIABLE}={size_limit} too small for it?)" if size_limit else ""
    raise FileNotFoundError(
        f"{path} was removed {_ATTEMPTS} times right after it was downloaded, "
        f"by another process{why}"
    )


def _wait(download: Download, url: str, path: str, expected: Checksum | None) -> None:
    """Wait for *download*; when it was the revalidation of a copy that the
    server could not be reached for, warn that the copy is used."""
    from dlmanager.errors import DownloadError

    try:
        download.wait()
    except DownloadError as exc:
        if not (_offline(exc) and _usable_copy(path, expected)):
            raise
        # retrieve()'s caller: _wait, retrieve, the caller.
        warnings.warn(OfflineWarning(url, pathlib.Path(path), exc), stacklevel=3)


def _offline(error: DownloadError) -> bool:
    """Whether *error* says the server could not be reached, or could not
    serve (as opposed to a file that is missing, forbidden or wrong): a
    connection or protocol failure another attempt may get past (connection
    refused or reset, timeout, unresolved name, stall, body cut short), or a
    ``5xx`` status. A TLS certificate that cannot be verified or a redirect
    loop is not."""
    from dlmanager.errors import HTTPStatusError, TransferError

    if isinstance(error, TransferError):
        return error.retryable
    if isinstance(error, HTTPStatusError):
        return error.status_code is not None and error.status_code >= 500
    return False


def _usable_copy(path: str, expected: Checksum | None) -> bool:
    """Whether a file at *path* is a copy to fall back on (matching *expected*)."""
    from dlmanager.directory import present

    if not present(path):
        return False
    if expected is None:
        return True
    from dlmanager.checksum import file_digests

    try:
        digests = file_digests(path, [expected.algorithm])
    except OSError:
        return False
    return digests.get(expected.algorithm) == expected.hexdigest
