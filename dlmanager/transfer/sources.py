"""The sources of one download (its URL and mirrors): which are usable, whose bytes may join.

A download given ``mirrors=`` has several sources of one file. A
:class:`Sources` is what its transfer asks, at each attempt, which URL to
request: the single stream takes the first source that has not failed
(:meth:`Sources.current`), each connection of a segmented download takes one
of the usable sources in turn (:meth:`Sources.pick`). A source fails for the
whole download once it failed beyond its retries (:meth:`Sources.fail`), or
when the size it announces differs from the size of the version being
fetched (:meth:`Sources.drop`, with a warning).

The decisions are pure (:func:`joinable`, :meth:`Sources.admit`): the first
response from byte 0 sets the version the bytes held belong to (its size and
validators); another source's bytes are joined to them only when the sizes
agree and, without a checksum, a strong validator agrees too (the same strong
``ETag`` when both send one, else the same ``Last-Modified``). A source that
cannot be joined is left out of the segments of that version (or, for a
single stream, its body starts the file over from byte 0). With a checksum,
any source of the same size may fill any segment: the checksum checks the
assembled file, and a mismatch starts over from one source
(:meth:`Sources.single`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Sequence

from dlmanager.errors import DownloadError, ResumeError
from dlmanager.names import check_url
from dlmanager.redact import get_logger, redact_url
from dlmanager.request import RequestOptions
from dlmanager.transport.headers import ResponseInfo, header

__all__ = ["DROP", "JOIN", "MISMATCH", "Source", "Sources", "Version", "check_mirrors", "joinable"]

log = get_logger(__name__)

JOIN = "join"  # the source's bytes may join the bytes held
DROP = "drop"  # the source announces another size: dropped for the download
MISMATCH = "mismatch"  # same size, but no validator says it is the same version


def check_mirrors(
    url: str, mirrors: Iterable[str] | None, request: RequestOptions
) -> tuple[str, ...]:
    """*mirrors* checked like *url*: a tuple of http(s) URLs, without *url*
    or repeats (dropped).

    :raises ValueError: for a URL that is not http(s), a lone string instead
        of a list, or mirrors with a request that is not a GET without a body
    """
    if mirrors is None:
        return ()
    if isinstance(mirrors, (str, bytes)):
        raise ValueError("mirrors must be a list of URLs, not a single string")
    urls: list[str] = []
    for mirror in mirrors:
        check_url(mirror)
        if mirror != url and mirror not in urls:
            urls.append(mirror)
    if urls and not request.ranged:
        raise ValueError(
            f"mirrors are used only for a GET without a body, not a {request.method}"
            + (" with a body" if request.body is not None else "")
        )
    return tuple(urls)


@dataclasses.dataclass(frozen=True)
class Version:
    """What a response says about the version of the file it serves.

    :ivar size: the size of the whole file, if known
    :ivar etag: its strong ``ETag`` (a weak one counts as none)
    :ivar last_modified: its ``Last-Modified``
    """

    size: int | None
    etag: str | None
    last_modified: str | None

    @classmethod
    def of(cls, info: ResponseInfo) -> Version:
        etag = header(info.headers, "ETag")
        strong = etag if etag and not etag.startswith("W/") else None
        return cls(info.total, strong, header(info.headers, "Last-Modified"))

    @classmethod
    def assumed(cls, size: int, validator: str) -> Version:
        """The version of a checkpoint: its size, and the validator it was sent with."""
        if validator.startswith('"'):
            return cls(size, validator, None)
        return cls(size, None, validator)


def joinable(held: Version, other: Version) -> bool:
    """Whether bytes of *other* may join bytes of *held* without a checksum:
    the same size, and the same strong ``ETag`` when both send one, else the
    same ``Last-Modified`` (pure)."""
    if held.size is None or held.size != other.size:
        return False
    if held.etag is not None and other.etag is not None:
        return held.etag == other.etag
    return held.last_modified is not None and held.last_modified == other.last_modified


class Source:
    """One URL of the file.

    :ivar url: the URL requested (the request's query appended)
    :ivar failure: why it failed for the download, once it did
    :ivar excluded: why it is left out of the version being fetched, if it is
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.failure: BaseException | None = None
        self.excluded: str | None = None

    def __repr__(self) -> str:
        return f"Source({redact_url(self.url)!r})"


class Sources:
    """The sources of one download, in order: its URL first, then its mirrors; thread-safe.

    :param urls: the URLs requested (each with the request's query)
    :param checksum: whether a checksum checks the file (segments may then
        come from any source of the same size)
    """

    def __init__(self, urls: Sequence[str], *, checksum: bool) -> None:
        if not urls:
            raise ValueError("a download needs at least one source")
        self.sources = tuple(Source(url) for url in urls)
        self.checksum = checksum
        self._lock = threading.Lock()
        self._reference = self.sources[0]  # whose version the bytes held are
        self._version: Version | None = None
        self._used: set[Source] = set()  # the sources of the bytes held
        self._single = False  # one source at a time (after a mixed file failed its checksum)
        self._error: DownloadError | None = None  # once every source failed

    @classmethod
    def of(
        cls, target: str, mirrors: Sequence[str], request: RequestOptions, checksum: object
    ) -> Sources | None:
        """The sources of a download of *target* (its URL with the query) with
        *mirrors* (checked, each gets the query too); None without mirrors."""
        if not mirrors:
            return None
        return cls([target, *map(request.target, mirrors)], checksum=checksum is not None)

    @property
    def several(self) -> bool:
        return len(self.sources) > 1

    @property
    def reference(self) -> Source:
        """The source whose version the bytes held belong to."""
        with self._lock:
            return self._reference

    @property
    def mixed(self) -> bool:
        """Whether the bytes held came from more than one source."""
        with self._lock:
            return len(self._used) > 1

    def others_left(self, source: Source) -> bool:
        """Whether a source other than *source* has not failed."""
        with self._lock:
            return any(s.failure is None for s in self.sources if s is not source)

    def current(self) -> Source:
        """The first source that has not failed.

        :raises DownloadError: when every source failed (see :meth:`error`)
        """
        with self._lock:
            for source in self.sources:
                if source.failure is None:
                    return source
        raise self.error()

    def pick(self, preferred: Source | None, index: int) -> Source:
        """The source for the next request of connection *index*: *preferred*
        while it is usable, else one of the usable sources, in turn.

        :raises ResumeError: when the sources left cannot continue the bytes
            held (the source of those failed): the file starts over
        :raises DownloadError: when every source failed
        """
        with self._lock:
            usable = [s for s in self.sources if s.failure is None and s.excluded is None]
            if self._single:
                usable = usable[:1]
        if not usable:
            source = self.current()  # raises when every source failed
            raise ResumeError(
                f"{source.url}: no source left that can continue the bytes held",
                url=source.url,
            )
        if preferred in usable:
            return preferred
        return usable[index % len(usable)]

    def if_range(self, source: Source, validator: str | None) -> str | None:
        """The ``If-Range`` for a range of *source*: the bytes held's
        validator, except for another source under a checksum (its size is
        checked, the checksum does the rest)."""
        with self._lock:
            if source is self._reference or not self.checksum:
                return validator
        return None

    def admit(self, source: Source, info: ResponseInfo) -> str:
        """Whether *source*'s response may join the bytes held: :data:`JOIN`,
        :data:`DROP` (another size) or :data:`MISMATCH` (not the same
        version as far as validators tell). The reference source, or any
        before a version is known, is :data:`JOIN`: the caller checks those
        as for a single URL."""
        with self._lock:
            held = self._version
            if held is None or source is self._reference:
                return JOIN
        other = Version.of(info)
        if held.size is not None and other.size is not None and held.size != other.size:
            return DROP
        if self.checksum and held.size is not None and held.size == other.size:
            return JOIN
        return JOIN if joinable(held, other) else MISMATCH

    def adopt(
        self, source: Source, info: ResponseInfo | None, version: Version | None = None
    ) -> None:
        """*source* sent the file from byte 0 (or a checkpoint of it was
        resumed, with *version*): its version is the one the bytes held
        belong to, and every source gets a new chance to join it."""
        with self._lock:
            self._reference = source
            self._version = version or (Version.of(info) if info is not None else None)
            self._used = {source}
            for each in self.sources:
                each.excluded = None

    def used(self, source: Source) -> None:
        """*source*'s bytes join the bytes held."""
        with self._lock:
            self._used.add(source)

    def single(self) -> None:
        """From now on, one source at a time: a file assembled from several
        failed its checksum, and is fetched again from one."""
        log.warning("The file assembled from several sources does not match its checksum: "
                    "fetching it again from one source")  # fmt: skip
        with self._lock:
            self._single = True

    def fail(self, source: Source, error: BaseException, *, quiet: bool = False) -> bool:
        """*source* failed beyond its retries: no more requests go to it.
        Whether it was not failed already."""
        with self._lock:
            if source.failure is not None:
                return False
            source.failure = error
            left = sum(1 for s in self.sources if s.failure is None)
        if self.several and not quiet:
            log.warning("Source %s failed%s: %s", redact_url(source.url),
                        ", trying the next one" if left else "", error)  # fmt: skip
        return True

    def drop(self, source: Source, info: ResponseInfo) -> None:
        """*source* announces another size than the version fetched: dropped."""
        with self._lock:
            size = self._version.size if self._version else None
        reason = f"its size ({info.total} bytes) differs from {size} bytes"
        error = DownloadError(f"{source.url}: dropped, {reason}", url=source.url)
        if self.fail(source, error, quiet=True):
            log.warning("Dropping source %s: %s", redact_url(source.url), reason)

    def exclude(self, source: Source, reason: str) -> None:
        """Leave *source* out of the version fetched (it may serve another one)."""
        log.info("Not joining bytes of %s: %s", redact_url(source.url), reason)
        with self._lock:
            if source is not self._reference:
                source.excluded = reason

    def error(self) -> DownloadError:
        """The error once every source failed: the last one's, naming each source and why."""
        with self._lock:
            if self._error is not None:
                return self._error
            failures = [(s.url, s.failure) for s in self.sources if s.failure is not None]
        last = failures[-1][1] if failures else None
        error = last if isinstance(last, DownloadError) else DownloadError("no source left")
        if self.several:
            lines = "; ".join(_named(url, why) for url, why in failures)
            error.message = f"every source failed ({len(failures)}): {lines}"
            error.url = self.sources[0].url
            error.source_errors = tuple(failures)
        with self._lock:
            self._error = error
        return error


def _named(url: str, error: BaseException) -> str:
    """*error*'s message, starting with *url* (most do already)."""
    shown, text = redact_url(url), str(error)
    return text if text.startswith(shown) else f"{shown}: {text}"
