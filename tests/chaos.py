"""A loopback HTTP server that misbehaves at random, reproducibly: the soak test's adversary.

:class:`ChaosServer` serves generated files (:class:`ChaosFile`) on 127.0.0.1
with keep-alive, byte ranges, ETag and ``If-Range``, like the other loopback
servers of the project. Every GET draws its fate from a :class:`random.Random`
seeded with ``(seed, n)``, where *n* numbers the GETs in arrival order
(:meth:`ChaosServer.decision` is a pure function), so a seed names a run:

- ``drop``: reset the connection (RST), before the headers or at a random
  offset of the body;
- ``stall``: send nothing more for ``stall_seconds`` (set it above the
  client's read timeout), before the headers or at a random offset, then close;
- ``truncate``: end the body early with a clean close (FIN), the
  ``Content-Length`` promising more;
- ``429``, ``500``, ``503``: answer that status, with or without a
  ``Retry-After`` (seconds, or an HTTP date);
- ``ignore-range``: answer a ``Range`` with the whole file (200);
- ``bad-range``: answer a ``Range`` with a 206 whose ``Content-Range`` is not
  the range asked for (shifted, or of another total size);
- ``change`` (drawn on its own, on top of the others): the file gets new
  content and new validators (ETag, Last-Modified) before the answer.

A fault is counted (:attr:`ChaosServer.stats`) only when it changed the
answer: ``ignore-range`` and ``bad-range`` need a request that would have
got a 206, the body faults a body of at least one byte. The server records
the versions of each file it answered with (:meth:`ChaosServer.served`), so
that a checker can tell whether a downloaded file is exactly one version the
server sent, or a mix.

.. code-block:: python

    files = [ChaosFile("a.bin", 3_000_000), ChaosFile("b.bin", 5_000)]
    with ChaosServer(files, ChaosConfig(seed=7)) as server:
        url = server.url("a.bin")
        ...
        digests = server.digests("a.bin")  # sha256 of every version served so far
        print(server.stats.faults[Fault.DROP])
"""

from __future__ import annotations

import enum
import functools
import hashlib
import random
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from types import MappingProxyType
from typing import Any, cast
from urllib.parse import quote, unquote, urlsplit

from tests.loopback import BackgroundServer, LoopbackHandler, requested_range

__all__ = [
    "DEFAULT_RATES",
    "REQUEST_FAULTS",
    "ChaosConfig",
    "ChaosFile",
    "ChaosServer",
    "ChaosStats",
    "Decision",
    "Fault",
]

#: Last-Modified of version 0 of every file; version *v* is *v* days later.
BASE_TIME = 1_700_000_000
#: Seconds an idle keep-alive connection is kept open.
IDLE_TIMEOUT = 10.0
#: Files are generated, and sent, in blocks of this size.
BLOCK_SIZE = 64 * 1024
#: A ``bad-range`` answer is off by 1 to this many bytes.
MAX_SHIFT = 4096


class Fault(enum.Enum):
    """A misbehaviour of the :class:`ChaosServer` (see the module docstring)."""

    DROP = "drop"
    STALL = "stall"
    TRUNCATE = "truncate"
    STATUS_429 = "429"
    STATUS_500 = "500"
    STATUS_503 = "503"
    IGNORE_RANGE = "ignore-range"
    BAD_RANGE = "bad-range"
    CHANGE = "change"


#: The faults that decide how one request is answered, in the order of the
#: draw; at most one of them per request. ``CHANGE`` is drawn on its own.
REQUEST_FAULTS = (
    Fault.DROP,
    Fault.STALL,
    Fault.TRUNCATE,
    Fault.STATUS_429,
    Fault.STATUS_500,
    Fault.STATUS_503,
    Fault.IGNORE_RANGE,
    Fault.BAD_RANGE,
)
_STATUSES = {Fault.STATUS_429: 429, Fault.STATUS_500: 500, Fault.STATUS_503: 503}
_BODY_FAULTS = (Fault.DROP, Fault.STALL, Fault.TRUNCATE)

#: The probability of each fault per GET, when the configuration gives none:
#: about one request in four misbehaves, and one in fifty changes its file.
DEFAULT_RATES: Mapping[Fault, float] = MappingProxyType(
    {
        Fault.DROP: 0.05,
        Fault.STALL: 0.02,
        Fault.TRUNCATE: 0.05,
        Fault.STATUS_429: 0.02,
        Fault.STATUS_500: 0.02,
        Fault.STATUS_503: 0.02,
        Fault.IGNORE_RANGE: 0.04,
        Fault.BAD_RANGE: 0.04,
        Fault.CHANGE: 0.02,
    }
)


@dataclass(frozen=True)
class ChaosConfig:
    """How a :class:`ChaosServer` misbehaves.

    :param seed: names the run: the same seed gives the same decisions
    :param rates: the probability of each fault per GET; the request faults
        (all but ``CHANGE``) are exclusive, so their sum is at most 1
    :param retry_after: the share of status faults that carry ``Retry-After``
    :param early: the share of ``drop`` and ``stall`` faults that happen
        before the headers are sent
    :param stall_seconds: how long a ``stall`` sends nothing
    :raises ValueError: for a rate or share outside [0, 1], request rates
        summing to more than 1, or a stall that is not positive
    """

    seed: int = 0
    rates: Mapping[Fault, float] = field(default_factory=lambda: dict(DEFAULT_RATES))
    retry_after: float = 0.5
    early: float = 0.1
    stall_seconds: float = 1.0

    def __post_init__(self) -> None:
        for fault, rate in self.rates.items():
            if not isinstance(fault, Fault) or not 0.0 <= rate <= 1.0:
                raise ValueError(f"invalid rate {rate!r} for {fault!r}")
        if sum(self.rates.get(fault, 0.0) for fault in REQUEST_FAULTS) > 1.0 + 1e-9:
            raise ValueError("the request faults' rates sum to more than 1")
        for name in ("retry_after", "early"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], not {getattr(self, name)!r}")
        if not self.stall_seconds > 0:
            raise ValueError(f"stall_seconds must be > 0, not {self.stall_seconds!r}")
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))

    @classmethod
    def only(cls, fault: Fault, *, seed: int = 0, **options: Any) -> ChaosConfig:
        """A configuration where *fault* happens on every GET it applies to."""
        return cls(seed=seed, rates={fault: 1.0}, **options)

    @classmethod
    def calm(cls, *, seed: int = 0) -> ChaosConfig:
        """A configuration without any fault."""
        return cls(seed=seed, rates={})


@dataclass(frozen=True)
class Decision:
    """How the server answers one GET (drawn by :meth:`ChaosServer.decision`).

    :ivar fault: the request fault, or None
    :ivar change: the file changes (new version) before the answer
    :ivar cut: where a body fault cuts the body, as a fraction of it in
        [0, 1); -1.0 for a drop or stall before the headers
    :ivar shift: how many bytes a ``bad-range`` Content-Range is off
    :ivar retry_after: the ``Retry-After`` of a status fault: ``"0"``,
        ``"1"``, ``"date"`` (an HTTP date one second ahead) or None
    """

    fault: Fault | None
    change: bool
    cut: float
    shift: int
    retry_after: str | None


@dataclass(frozen=True)
class ChaosFile:
    """A generated file: every version is ``size`` deterministic pseudo-random bytes.

    The bytes of a version are derived from ``(name, version)``, a block of
    :data:`BLOCK_SIZE` at a time with :func:`hashlib.shake_256`, so that any
    range is cheap to produce. Every version has the same size: only the validators
    tell them apart.

    :param name: the file name, served at ``/<name>`` (no ``/``)
    :param size: the size in bytes
    :param always: a request fault answered to every GET of this file (a
        file that can never be downloaded), or None
    :raises ValueError: for an invalid name or size, or ``always=CHANGE``
    """

    name: str
    size: int
    always: Fault | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ValueError(f"invalid file name {self.name!r}")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or self.size < 0:
            raise ValueError(f"size must be an integer >= 0, not {self.size!r}")
        if self.always is Fault.CHANGE:
            raise ValueError("always must be a request fault")

    def etag(self, version: int) -> str:
        """The strong ETag of *version*."""
        key = f"{self.name}\0{self.size}\0{version}".encode()
        return '"' + hashlib.sha256(key).hexdigest()[:24] + f'-v{version}"'

    def last_modified(self, version: int) -> str:
        """The Last-Modified date of *version*."""
        return formatdate(BASE_TIME + 86_400 * version, usegmt=True)

    def chunks(self, version: int, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """Yield the bytes of *version* from ``start`` to ``stop`` (default: the end)."""
        stop = self.size if stop is None else min(stop, self.size)
        key = hashlib.sha256(f"{self.name}\0{version}".encode()).digest()
        offset = max(0, start)
        while offset < stop:
            index, skip = divmod(offset, BLOCK_SIZE)
            piece = _block(key, index)[skip : skip + stop - offset]
            offset += len(piece)
            yield piece

    def read(self, version: int, start: int = 0, stop: int | None = None) -> bytes:
        """The bytes of *version* from ``start`` to ``stop`` at once."""
        return b"".join(self.chunks(version, start, stop))

    def sha256(self, version: int) -> str:
        """The hex SHA-256 digest of *version*."""
        digest = hashlib.sha256()
        for chunk in self.chunks(version):
            digest.update(chunk)
        return digest.hexdigest()


@functools.lru_cache(maxsize=256)
def _block(key: bytes, index: int) -> bytes:
    """Block *index* of the content keyed *key* (the last 16 MiB used are cached)."""
    return hashlib.shake_256(key + index.to_bytes(8, "big")).digest(BLOCK_SIZE)


@dataclass(frozen=True)
class ChaosStats:
    """What a :class:`ChaosServer` has done so far (a snapshot)."""

    requests: int = 0
    """Requests received (GET and HEAD, whatever the answer)."""
    gets: int = 0
    """GETs of a served file: the requests that drew a :class:`Decision`."""
    bytes_sent: int = 0
    """File body bytes written to clients."""
    partial: int = 0
    """GETs answered with a 206."""
    faults: Mapping[Fault, int] = field(default_factory=dict)
    """How many times each fault was injected (every kind is a key)."""
    retry_after: int = 0
    """Status faults sent with a ``Retry-After`` header."""


class _Handler(LoopbackHandler["ChaosServer"]):
    """Serves the files of the owning :class:`ChaosServer`, injecting its faults
    (a HEAD gets the headers of a plain GET of the current version, no fault)."""

    server_version = "dlmanager-chaos"
    timeout = IDLE_TIMEOUT

    def serve(self) -> None:
        owner = self.owner
        file = owner.files.get(unquote(urlsplit(self.path).path).lstrip("/"))
        if file is None:
            self.send_page(HTTPStatus.NOT_FOUND)
            return
        if self.command != "GET":
            self._send_file(owner, file, owner.version(file.name), None)
            return
        decision, version = owner._begin(file)
        fault = decision.fault
        if fault in _STATUSES:
            owner._injected(fault, retry_after=decision.retry_after is not None)
            headers = {}
            if decision.retry_after is not None:
                headers["Retry-After"] = _render_retry_after(decision.retry_after)
            self.send_page(_STATUSES[fault], headers)
            return
        if fault in (Fault.DROP, Fault.STALL) and decision.cut < 0:
            owner._injected(cast(Fault, fault))
            self._cut(owner, cast(Fault, fault))
            return
        self._send_file(owner, file, version, decision)

    def _send_file(
        self, owner: ChaosServer, file: ChaosFile, version: int, decision: Decision | None
    ) -> None:
        """Send (part of) *version* of *file*, with the decision's fault, if any."""
        fault = decision.fault if decision is not None else None
        span = range(file.size)
        content_range: str | None = None
        validators = file.etag(version), file.last_modified(version)
        requested = requested_range(self.headers, file.size, *validators)
        if requested is not None and not requested:
            self.send_page(
                HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                {"Content-Range": f"bytes */{file.size}"},
            )
            return
        if requested is not None and fault is Fault.IGNORE_RANGE:
            owner._injected(fault)
        elif requested is not None and fault is Fault.BAD_RANGE:
            owner._injected(fault)
            assert decision is not None
            span, content_range = _bad_range(requested, file.size, decision.shift)
        elif requested is not None:
            span = requested
            content_range = f"bytes {span.start}-{span.stop - 1}/{file.size}"
        is_get = self.command == "GET"
        if is_get:
            owner._served_version(file.name, version, partial=content_range is not None)
        self.send_response(HTTPStatus.PARTIAL_CONTENT if content_range else HTTPStatus.OK)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(span)))
        self.send_header("ETag", file.etag(version))
        self.send_header("Last-Modified", file.last_modified(version))
        self.send_header("Accept-Ranges", "bytes")
        if content_range is not None:
            self.send_header("Content-Range", content_range)
        self.end_headers()
        if not is_get:
            return
        cut = span.stop
        if fault in _BODY_FAULTS and len(span):
            assert decision is not None
            owner._injected(fault)
            cut = span.start + int(decision.cut * len(span))
        if not self.send_body(file.chunks(version, span.start, cut)):
            self._cut(owner, Fault.DROP)
        elif cut < span.stop:
            self._cut(owner, cast(Fault, fault))

    def _cut(self, owner: ChaosServer, fault: Fault) -> None:
        """End the connection as *fault* does: RST, silence then FIN, or FIN."""
        if fault is Fault.STALL:
            self.stall(owner.config.stall_seconds)
        if fault is Fault.DROP:
            self.reset()
        else:
            self.abort()


def _bad_range(requested: range, size: int, shift: int) -> tuple[range, str]:
    """The bytes and Content-Range of a wrong answer to a request of *requested*.

    The range is shifted by *shift* bytes when the file allows it, else the
    right bytes are sent with another total size; either way the header is
    consistent with the body, so only a client that checks it against what it
    asked for can tell.
    """
    start = requested.start + shift
    if start < size:
        span = range(start, min(requested.stop + shift, size))
        return span, f"bytes {span.start}-{span.stop - 1}/{size}"
    return requested, f"bytes {requested.start}-{requested.stop - 1}/{size + shift}"


def _render_retry_after(form: str) -> str:
    if form == "date":
        return formatdate(time.time() + 1.0, usegmt=True)
    return form


class ChaosServer(BackgroundServer):
    """Serve ``files`` on 127.0.0.1 (a free port), misbehaving as *config* says.

    Use it as a context manager: entering starts the server in a daemon
    thread, leaving stops it, promptly even while connections stall.

    :param files: the files to serve, at ``/<name>``
    :param config: the faults to inject (see :class:`ChaosConfig`)
    :raises ValueError: for duplicate file names
    """

    handler = _Handler

    def __init__(self, files: Sequence[ChaosFile], config: ChaosConfig | None = None) -> None:
        self.files: Mapping[str, ChaosFile] = {file.name: file for file in files}
        if len(self.files) != len(files):
            raise ValueError("file names must be unique")
        super().__init__()
        self.config = config or ChaosConfig()
        self._versions = dict.fromkeys(self.files, 0)
        self._served: dict[str, dict[int, int]] = {name: {} for name in self.files}
        self._faults = dict.fromkeys(Fault, 0)
        self._gets = self._partial = self._retry_after = 0
        self._changes: list[tuple[float, str, int]] = []
        self._digests: dict[tuple[str, int], str] = {}
        self._digest_lock = threading.Lock()

    def url(self, name: str) -> str:
        """The URL of the file *name*.

        :raises KeyError: for a name the server does not serve
        :raises RuntimeError: before :meth:`start`
        """
        return super().url("/" + quote(self.files[name].name))

    # -- what happened -----------------------------------------------------------------

    def decision(self, n: int) -> Decision:
        """How the *n*-th GET (from 0) of a served file is answered: a pure function
        of the seed, the rates and *n*."""
        config = self.config
        rng = random.Random(f"chaos:{config.seed}:{n}")
        # Always the same draws in the same order, whatever they decide.
        change = rng.random() < config.rates.get(Fault.CHANGE, 0.0)
        draw, early, cut = rng.random(), rng.random(), rng.random()
        shift = rng.randint(1, MAX_SHIFT)
        with_retry_after, form = rng.random(), rng.choice(("0", "1", "date"))
        fault: Fault | None = None
        bound = 0.0
        for kind in REQUEST_FAULTS:
            bound += config.rates.get(kind, 0.0)
            if draw < bound:
                fault = kind
                break
        if fault in (Fault.DROP, Fault.STALL) and early < config.early:
            cut = -1.0
        retry_after = form if fault in _STATUSES and with_retry_after < config.retry_after else None
        return Decision(fault, change, cut, shift, retry_after)

    def version(self, name: str) -> int:
        """The current version of the file *name* (0 until it first changes)."""
        with self._lock:
            return self._versions[name]

    def changes(self) -> list[tuple[float, str, int]]:
        """Every change so far: ``(time.time(), name, new version)``, oldest first."""
        with self._lock:
            return list(self._changes)

    def served(self, name: str) -> Mapping[int, int]:
        """How many 200/206 answers each version of *name* got (version -> count)."""
        with self._lock:
            return dict(self._served[name])

    def sha256(self, name: str, version: int) -> str:
        """The hex SHA-256 digest of *version* of the file *name* (computed once)."""
        key = (name, version)
        with self._digest_lock:
            if key not in self._digests:
                self._digests[key] = self.files[name].sha256(version)
            return self._digests[key]

    def digests(self, name: str) -> dict[str, int]:
        """The digest of every version of *name* so far, mapped to its version."""
        return {self.sha256(name, v): v for v in range(self.version(name) + 1)}

    @property
    def stats(self) -> ChaosStats:
        """A snapshot of the counters."""
        with self._lock:
            return ChaosStats(
                requests=len(self.requests),
                gets=self._gets,
                bytes_sent=self._bytes_sent,
                partial=self._partial,
                faults=dict(self._faults),
                retry_after=self._retry_after,
            )

    # -- for the handler ---------------------------------------------------------------

    def _begin(self, file: ChaosFile) -> tuple[Decision, int]:
        """Draw the decision of a GET of *file*, apply its change; return it and the
        version to answer with."""
        with self._lock:
            n = self._gets
            self._gets += 1
        decision = self.decision(n)
        if file.always is not None:
            decision = Decision(file.always, False, decision.cut, decision.shift, None)
        with self._lock:
            if decision.change:
                self._versions[file.name] += 1
                self._faults[Fault.CHANGE] += 1
                self._changes.append((time.time(), file.name, self._versions[file.name]))
            return decision, self._versions[file.name]

    def _injected(self, fault: Fault, *, retry_after: bool = False) -> None:
        with self._lock:
            self._faults[fault] += 1
            self._retry_after += retry_after

    def _served_version(self, name: str, version: int, *, partial: bool) -> None:
        with self._lock:
            served = self._served[name]
            served[version] = served.get(version, 0) + 1
            self._partial += partial
