"""Server-chosen names (``use_content_disposition=True``): which name, checked, and whose file.

A download that lets the server name its file learns the name only from the
first response. Until then it writes into a temporary file whose name does
not depend on the server (``.dlmanager-HASH.XXXXXXXX.part``, a
:mod:`~dlmanager.disk.layout` temporary name: hidden, and removed as any other
when its process dies), and the manager keeps it in flight under its URL
(:func:`flight_key`) instead of a name.

When the response headers arrive, :func:`choose_name` picks the first valid
candidate: the ``Content-Disposition`` names (:mod:`dlmanager.disposition`),
the final URL's, then the given URL's. :class:`Naming` then makes it that
name's download: the manager records it in flight under it, and the
destination lock of the name is tried without waiting. When the lock is
free and no file of that name is there, the body goes on into the
temporary file, published under the name. Otherwise (another download of the
name in flight here or in another process, or a file of that name already
there) :class:`NameTaken` closes the response: the download then waits for
that name as any download of it does, keeps the file it finds there (its
:attr:`~dlmanager.Download.done_by` is set), or downloads it again under the
chosen name (a file there that does not match the checksum asked for).
"""

from __future__ import annotations

import hashlib
import os
import unicodedata
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dlmanager.destination import Destination, regular_file
from dlmanager.disk.layout import STATE_DIR, is_temporary
from dlmanager.disk.metadata import is_sidecar
from dlmanager.disposition import disposition_names
from dlmanager.errors import DownloadError
from dlmanager.names import NAME_MAX, check_name_length, validate_fname
from dlmanager.redact import get_logger, redact_url
from dlmanager.transport.headers import header

if TYPE_CHECKING:
    from dlmanager.directory import Directory
    from dlmanager.disk.sinks import Sink
    from dlmanager.download import Download

__all__ = [
    "NameTaken",
    "Naming",
    "NoNameError",
    "check_named",
    "check_server_name",
    "choose_name",
    "flight_key",
    "named_by_response",
    "placeholder_fname",
]

log = get_logger(__name__)

#: Names Windows gives to devices, with any extension: refused everywhere, so
#: that a directory shared with (or copied to) Windows holds no such file.
_DEVICES = frozenset(
    ["con", "prn", "aux", "nul", "conin$", "conout$"]
    + [f"{p}{d}" for p in ("com", "lpt") for d in "0123456789¹²³"]
)
#: Characters that reorder the text shown (``evil\u202etxt.exe``): refused.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: Characters Windows refuses in a name (and ``:`` opens a stream there).
_WINDOWS_FORBIDDEN = frozenset('<>:"|?*')


class NoNameError(DownloadError):
    """No candidate gave a usable file name (not retried: another request
    would get the same names)."""


class NameTaken(Exception):
    """The name the response gave is another download's (here or in another
    process), or a file of it is already there: the response is closed, and
    the download goes on as a download of *destination*."""

    def __init__(self, destination: Destination) -> None:
        super().__init__(destination.path)
        self.destination = destination


def check_named(*, fname: Any, dest: Any, revalidate: bool, max_age: float | None) -> None:
    """Check the other arguments of a server-named download.

    :raises ValueError: for *fname* or *dest* (the name is the server's), and
        *revalidate* or *max_age* (a file is revalidated by its name, known
        only once the response arrives)
    """
    for given, what in ((fname is not None, "fname"), (dest is not None, "dest"),
                        (revalidate, "revalidate"), (max_age is not None, "max_age")):  # fmt: skip
        if given:
            raise ValueError(f"use_content_disposition lets the server name the file: "
                             f"pass it or {what}, not both")  # fmt: skip


def flight_key(target: str) -> str:
    """The key under which a manager holds a server-named download of
    *target* (the URL with its query) in flight: never a path."""
    return "\0content-disposition " + target


def placeholder_fname(target: str) -> str:
    """The name the temporary file of a server-named download of *target* is
    made for (``dlmanager-HASH``): never published, and independent of the server."""
    return "dlmanager-" + hashlib.sha256(target.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def check_server_name(name: str, longest: int = NAME_MAX) -> str:
    """Return *name* if a server may choose it (pure).

    Stricter than a name the caller gives (:func:`~dlmanager.names.validate_fname`
    and :func:`~dlmanager.names.check_name_length` apply too): no leading dot
    (hidden files, dlmanager's own), no control or bidirectional-override
    character, no trailing dot or space, no Windows device name (``con``,
    ``nul.txt``, ``com1``...), at most 255 bytes in UTF-8, and on Windows none
    of ``<>:"|?*``. A name with a path separator is refused, not cut down to
    its last part.

    :raises ValueError: naming what is wrong with it
    """
    validate_fname(name)
    if name.startswith("."):
        raise ValueError(f"invalid file name {name!r}: hidden (starts with '.')")
    if any(unicodedata.category(c) == "Cc" or c in _BIDI for c in name):
        raise ValueError(f"invalid file name {name!r}: contains a control character")
    if name.endswith((".", " ")) or name != name.strip():
        raise ValueError(f"invalid file name {name!r}: begins or ends with a space or a dot")
    if name.split(".", 1)[0].rstrip(" ").lower() in _DEVICES:
        raise ValueError(f"invalid file name {name!r}: a device name on Windows")
    if os.name == "nt" and any(c in _WINDOWS_FORBIDDEN for c in name):
        raise ValueError(f"invalid file name {name!r}: a character Windows refuses")
    if name == STATE_DIR or is_temporary(name) or is_sidecar(name):
        raise ValueError(f"invalid file name {name!r}: reserved for dlmanager's own files")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeError:
        raise ValueError(f"invalid file name {name!r}: not valid Unicode") from None
    if size > NAME_MAX:
        raise ValueError(f"invalid file name {name[:40]!r}...: {size} bytes, more than {NAME_MAX}")
    return check_name_length(name, longest)


def url_name(url: str) -> str:
    """The last segment of *url*'s path, percent-decoded (maybe empty)."""
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])


def choose_name(
    disposition: str | None, final_url: str, url: str, longest: int = NAME_MAX
) -> tuple[str | None, list[str]]:
    """The first valid name among, in order, the ``Content-Disposition``
    header's (``filename*=``, then ``filename=``), the final URL's (after
    redirects) and the given URL's (pure).

    :return: ``(name or None, why each candidate before it was rejected)``
    """
    candidates = [(f"Content-Disposition {where}", name)
                  for where, name in disposition_names(disposition)]  # fmt: skip
    candidates.append(("the final URL", url_name(final_url)))
    if final_url != url:
        candidates.append(("the URL", url_name(url)))
    rejected = []
    for where, name in candidates:
        if not name:
            rejected.append(f"{where} gives no name")
            continue
        try:
            return check_server_name(name, longest), rejected
        except ValueError as exc:
            rejected.append(f"{where}: {exc}")
    return None, rejected


class Naming:
    """Names a server-named download once its first response arrives.

    :param directory: the manager's directory
    :param destdir: the directory as the manager shows it (``get_dest``)
    :param claim: ``claim(download, shown)``, the manager's
        (:meth:`Flights.claim <dlmanager.flights.Flights.claim>`): records the
        download in flight under the name *shown* (as ``get_dest`` gives it)
        and returns the download of that name to let end first, or None
    """

    def __init__(
        self,
        directory: Directory,
        destdir: str,
        claim: Callable[[Download, str], Download | None],
    ) -> None:
        self.directory = directory
        self.destdir = destdir
        self.claim = claim

    def resolve(self, download: Download, headers: Any, final_url: str) -> Destination:
        """The destination of *download*, named from the response (*headers*,
        *final_url*), its lock held.

        :raises NoNameError: when no candidate is valid
        :raises NameTaken: when that name is busy or its file is there
        """
        url = download.get_url()
        name, rejected = choose_name(header(headers, "Content-Disposition"), final_url, url,
                                     self.directory.name_max)  # fmt: skip
        shown_url = redact_url(url)
        for why in rejected if name is not None else ():
            log.warning("%s: not naming the file after %s", shown_url, why)
        if name is None:
            raise NoNameError(f"{shown_url}: no usable file name ({'; '.join(rejected)})", url=url)
        shown = os.path.join(self.destdir, name)
        after = self.claim(download, shown)
        destination = self.directory.destination(shown, after=after)
        log.info("%s is named %s by the server's response", shown_url, name)
        if after is not None and not after.join(0):
            raise NameTaken(destination)  # another download of that name, in flight here
        lock = destination.lock
        if lock is not None and not lock.try_acquire():
            raise NameTaken(destination)  # in flight in another process or manager
        if regular_file(destination.path):
            destination.release()
            raise NameTaken(destination)  # there already: kept, or replaced once verified
        if os.path.lexists(destination.path):
            log.warning("%s is not a regular file: replacing it with the download",
                        destination.path)  # fmt: skip
        return destination


def named_by_response(
    download: Download,
    naming: Naming,
    part: Sink,
    rename: Callable[[Destination], None],
) -> Callable[[Any, str], None]:
    """The ``on_response`` hook of a transfer of the server-named *download*:
    the first response names it (:meth:`Naming.resolve`), then *rename* (the
    download's) takes the destination and *part* is published under its
    name; the responses of later attempts change nothing."""
    named = False

    def on_response(headers: Any, final_url: str) -> None:
        nonlocal named
        if named:
            return
        destination = naming.resolve(download, headers, final_url)
        named = True
        rename(destination)
        part.dest = destination.path

    return on_response
