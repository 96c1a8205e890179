"""Checksums: the caller's expected digest, the digests a server announces, and hashing.

A caller passes ``checksum="sha256:<hex digest>"`` (or a :class:`Checksum`);
:func:`server_digests` reads the digests a server sent in ``Content-MD5``,
``x-goog-hash``, ``Repr-Digest`` or ``Digest``; a :class:`Hasher` computes
every needed algorithm in one pass over the body, and :func:`file_digests`
does the same over a file already on disk.

Everything here is pure (no I/O) except :func:`file_digests`. ``crc32c`` is
computed only when the optional ``google_crc32c`` (or ``crc32c``) module is
installed with its C implementation; otherwise it is skipped, never computed
slowly in Python.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "ALGORITHMS",
    "Checksum",
    "Hasher",
    "available",
    "file_digests",
    "parse_checksum",
    "server_digests",
]

ALGORITHMS: tuple[str, ...] = ("md5", "sha1", "sha256", "sha512", "blake2b", "crc32c")

#: Digest size in bytes of each algorithm (blake2b with its default size).
_DIGEST_SIZES: dict[str, int] = {
    "md5": 16,
    "sha1": 20,
    "sha256": 32,
    "sha512": 64,
    "blake2b": 64,
    "crc32c": 4,
}
#: The algorithms a caller may give; crc32c only comes from server headers.
_CALLER_ALGORITHMS: tuple[str, ...] = tuple(a for a in ALGORITHMS if a != "crc32c")
_ALIASES: dict[str, str] = {"sha-256": "sha256", "sha-512": "sha512"}
_HEX_RE = re.compile(r"[0-9a-fA-F]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")

# Algorithm names, lower-cased, of each header form.
_GOOG_ALGORITHMS: dict[str, str] = {"crc32c": "crc32c", "md5": "md5"}
_REPR_DIGEST_ALGORITHMS: dict[str, str] = {"sha-256": "sha256", "sha-512": "sha512"}
_DIGEST_ALGORITHMS: dict[str, str] = {"sha-256": "sha256", "sha-512": "sha512", "md5": "md5"}


def _shorten(value: str, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Checksum:
    """An expected digest of a file.

    :ivar algorithm: one of :data:`ALGORITHMS`, lower-case
    :ivar hexdigest: the digest, lower-case hex
    :ivar source: where it came from: ``"checksum"`` for the caller's, else the
        name of the header that announced it (``"Content-MD5"``,
        ``"x-goog-hash"``, ``"Repr-Digest"``, ``"Digest"``)
    :raises ValueError: when the algorithm is unknown or the digest is not hex
        of its length (case is normalised to lower-case)
    """

    algorithm: str
    hexdigest: str
    source: str = "checksum"

    def __post_init__(self) -> None:
        if not isinstance(self.algorithm, str) or self.algorithm.lower() not in _DIGEST_SIZES:
            raise ValueError(
                f"unknown checksum algorithm {self.algorithm!r}; supported: {', '.join(ALGORITHMS)}"
            )
        algorithm = self.algorithm.lower()
        length = 2 * _DIGEST_SIZES[algorithm]
        if (
            not isinstance(self.hexdigest, str)
            or len(self.hexdigest) != length
            or not _HEX_RE.fullmatch(self.hexdigest)
        ):
            raise ValueError(f"a {algorithm} digest is {length} hex digits, not {self.hexdigest!r}")
        # Frozen: normalise through object.__setattr__, as dataclasses document.
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "hexdigest", self.hexdigest.lower())

    @classmethod
    def parse(cls, spec: str) -> Checksum:
        """Parse ``"ALGORITHM:HEXDIGEST"``, e.g. ``"sha256:9f86d0..."``.

        Case and surrounding whitespace do not matter; ``sha-256`` and
        ``sha-512`` are accepted for ``sha256`` and ``sha512``. The algorithm is
        one of md5, sha1, sha256, sha512 and blake2b (64-byte digest); crc32c is
        only taken from server headers.

        :param spec: the checksum as text
        :raises ValueError: when *spec* is not a string, has no ``:``, names an
            unknown algorithm, or its digest is not hex of the algorithm's length
        :return: the checksum, with source ``"checksum"``
        """
        if not isinstance(spec, str):
            raise ValueError(
                f"a checksum must be a string like 'sha256:<hex digest>', not {type(spec).__name__}"
            )
        name, colon, digest = spec.strip().partition(":")
        if not colon:
            raise ValueError(
                f"checksum {_shorten(spec)} has no ':' between the algorithm and the digest "
                "(expected e.g. 'sha256:<hex digest>')"
            )
        name = name.strip().lower()
        algorithm = _ALIASES.get(name, name)
        supported = ", ".join(_CALLER_ALGORITHMS)
        if algorithm == "crc32c":
            raise ValueError(
                f"checksum {_shorten(spec)}: crc32c is only taken from server headers; "
                f"give one of: {supported}"
            )
        if algorithm not in _CALLER_ALGORITHMS:
            raise ValueError(
                f"checksum {_shorten(spec)}: unknown algorithm {_shorten(name, 40)}; "
                f"supported: {supported}"
            )
        digest = digest.strip()
        if not digest:
            raise ValueError(f"checksum {_shorten(spec)}: the hex digest is empty")
        if not _HEX_RE.fullmatch(digest):
            raise ValueError(
                f"checksum {_shorten(spec)}: the digest has invalid hex digits "
                "(only 0-9 and a-f are allowed)"
            )
        expected = 2 * _DIGEST_SIZES[algorithm]
        if len(digest) != expected:
            raise ValueError(
                f"checksum {_shorten(spec)}: a {algorithm} digest has {expected} hex digits, "
                f"not {len(digest)}"
            )
        return cls(algorithm, digest.lower())

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hexdigest}"


def parse_checksum(value: Checksum | str | None) -> Checksum | None:
    """What the ``checksum=`` keyword accepts: a :class:`Checksum`, its text, or None.

    :param value: the checksum, or None for none
    :raises ValueError: when *value* is text that :meth:`Checksum.parse` rejects,
        or neither a string, a :class:`Checksum` nor None
    :return: the checksum, or None
    """
    if value is None or isinstance(value, Checksum):
        return value
    return Checksum.parse(value)


# --- server headers -----------------------------------------------------------------------


def _b64_hex(text: str, algorithm: str) -> str | None:
    """The hex of base64 *text* when it decodes to a digest of *algorithm*, else None."""
    text = text.strip()
    if not _BASE64_RE.fullmatch(text):
        return None
    text += "=" * (-len(text) % 4)  # some servers leave the padding out
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _DIGEST_SIZES[algorithm]:
        return None
    return raw.hex()


def _members(value: str) -> Iterable[tuple[str, str]]:
    """The ``name=value`` members of a comma-separated list, names lower-cased."""
    for item in value.split(","):
        name, equals, rest = item.partition("=")
        if equals:
            yield name.strip().lower(), rest.strip()


def server_digests(headers: Any) -> tuple[Checksum, ...]:
    """The digests a server announced for the full representation.

    Read, in this order:

    - ``Content-MD5``: the base64 md5 digest
    - ``x-goog-hash``: ``crc32c=<base64>, md5=<base64>`` (crc32c is the
      big-endian 4-byte CRC32C)
    - ``Repr-Digest`` (RFC 9530): ``sha-256=:<base64>:``, ``sha-512=:<base64>:``
    - ``Digest`` (RFC 3230): ``SHA-256=<base64>``, ``SHA-512=<base64>``,
      ``MD5=<base64>``

    Malformed values, unknown algorithms and digests of the wrong length are
    skipped; a digest announced twice is returned once. ``Content-MD5`` and
    ``Digest`` describe the body of *this* response: only use them for a
    complete (200) body, not a 206 part.

    :param headers: the response headers: any mapping, looked up case-insensitively
    :return: the digests, each with the header's name as its source
    """
    # The transport's lookup imports urllib3: imported here, with the first
    # response, so that parsing a checksum (the command's options) does not.
    from dlmanager.transport.headers import header

    found: dict[tuple[str, str], Checksum] = {}

    def add(algorithm: str, hexdigest: str | None, source: str) -> None:
        if hexdigest is not None and (algorithm, hexdigest) not in found:
            found[algorithm, hexdigest] = Checksum(algorithm, hexdigest, source)

    value = header(headers, "Content-MD5")
    if value is not None:
        for item in value.split(","):
            add("md5", _b64_hex(item, "md5"), "Content-MD5")

    value = header(headers, "x-goog-hash")
    if value is not None:
        for name, encoded in _members(value):
            if name in _GOOG_ALGORITHMS:
                algorithm = _GOOG_ALGORITHMS[name]
                add(algorithm, _b64_hex(encoded, algorithm), "x-goog-hash")

    value = header(headers, "Repr-Digest")
    if value is not None:
        for name, item in _members(value):
            encoded = item.partition(";")[0].strip()  # drop any parameters
            byte_sequence = len(encoded) >= 2 and encoded[0] == encoded[-1] == ":"
            if name in _REPR_DIGEST_ALGORITHMS and byte_sequence:
                algorithm = _REPR_DIGEST_ALGORITHMS[name]
                add(algorithm, _b64_hex(encoded[1:-1], algorithm), "Repr-Digest")

    value = header(headers, "Digest")
    if value is not None:
        for name, encoded in _members(value):
            if name in _DIGEST_ALGORITHMS:
                algorithm = _DIGEST_ALGORITHMS[name]
                add(algorithm, _b64_hex(encoded.strip('"'), algorithm), "Digest")

    return tuple(found.values())


# --- hashing ------------------------------------------------------------------------------


class _Hash(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...

    def hexdigest(self) -> str: ...


class _GoogleCrc32c:
    """CRC32C through ``google_crc32c.Checksum``."""

    def __init__(self, module: Any) -> None:
        self._checksum = module.Checksum()

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        # Its C extension takes only bytes, not a memoryview or a bytearray.
        self._checksum.update(data if type(data) is bytes else bytes(data))

    def hexdigest(self) -> str:
        return bytes(self._checksum.digest()).hex()


class _Crc32cFunction:
    """CRC32C through the ``crc32c`` module's ``crc32c(data, value)``."""

    def __init__(self, function: Callable[[Any, int], int]) -> None:
        self._function = function
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self._value = self._function(data, self._value)

    def hexdigest(self) -> str:
        return f"{self._value:08x}"


@functools.cache
def _crc32c_backend() -> Callable[[], _Hash] | None:
    """A factory of CRC32C hash objects, or None when no fast module is installed."""
    try:
        google = importlib.import_module("google_crc32c")
    except Exception:  # not installed, or broken (its import may warn, as an error)
        google = None
    # Its fallback when the C extension is missing is pure Python: far too slow.
    if google is not None and getattr(google, "implementation", "c") == "c":
        return functools.partial(_GoogleCrc32c, google)
    try:
        function = importlib.import_module("crc32c").crc32c
    except Exception:
        return None
    return functools.partial(_Crc32cFunction, function)


def available(algorithm: str) -> bool:
    """Whether *algorithm* can be computed here.

    :param algorithm: an algorithm name, e.g. ``"sha256"``
    :return: True for the hashlib algorithms of :data:`ALGORITHMS`; for
        ``crc32c`` only when ``google_crc32c`` or ``crc32c`` is installed;
        False for any other name
    """
    if algorithm == "crc32c":
        return _crc32c_backend() is not None
    return algorithm in ALGORITHMS


def _new_hash(algorithm: str) -> _Hash | None:
    if algorithm == "crc32c":
        factory = _crc32c_backend()
        return None if factory is None else factory()
    # The digests check integrity, not secrets: md5 and sha1 are fine under FIPS.
    return hashlib.new(algorithm, usedforsecurity=False)


class Hasher:
    """Streaming digests of several algorithms at once.

    :param checksums: the expected digests; one hash object is kept per distinct
        algorithm that is available, the others are listed in :attr:`skipped`
    """

    def __init__(self, checksums: Iterable[Checksum]) -> None:
        self._checksums = tuple(checksums)
        self._hashes: dict[str, _Hash] = {}
        skipped = []
        for checksum in self._checksums:
            algorithm = checksum.algorithm
            if algorithm not in self._hashes:
                new = _new_hash(algorithm) if available(algorithm) else None
                if new is None:
                    skipped.append(checksum)
                    continue
                self._hashes[algorithm] = new
        self._skipped = tuple(skipped)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes to every hash.

        :param data: the next bytes of the body
        """
        for digest in self._hashes.values():
            digest.update(data)

    def hexdigests(self) -> dict[str, str]:
        """The digests of the bytes fed so far (more may be fed after).

        :return: hex digest by algorithm, for each algorithm computed
        """
        return {algorithm: digest.hexdigest() for algorithm, digest in self._hashes.items()}

    def mismatches(self) -> list[tuple[Checksum, str]]:
        """The checksums that the bytes fed so far do not match.

        :return: ``(expected, actual hex digest)`` for every checksum whose
            algorithm was computed and differs, in the order given
        """
        actual = self.hexdigests()
        return [
            (checksum, actual[checksum.algorithm])
            for checksum in self._checksums
            if checksum.algorithm in actual and actual[checksum.algorithm] != checksum.hexdigest
        ]

    @property
    def skipped(self) -> tuple[Checksum, ...]:
        """The checksums whose algorithm is not available here, so not checked."""
        return self._skipped

    def __bool__(self) -> bool:
        return bool(self._hashes)


def file_digests(
    path: str, algorithms: Iterable[str], *, block_size: int = 1 << 20
) -> dict[str, str]:
    """Hash a file, reading it once, with several algorithms.

    :param path: the file
    :param algorithms: names from :data:`ALGORITHMS`; unavailable ones are skipped
    :param block_size: the size of each read
    :raises ValueError: for an unknown algorithm or a block size below 1
    :raises OSError: when the file cannot be read
    :return: hex digest by algorithm, for each available algorithm (an empty
        dict, without opening the file, when none is)
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, not {block_size!r}")
    hashes: dict[str, _Hash] = {}
    for algorithm in algorithms:
        if algorithm not in ALGORITHMS:
            raise ValueError(
                f"unknown checksum algorithm {algorithm!r}; supported: {', '.join(ALGORITHMS)}"
            )
        if algorithm not in hashes and available(algorithm):
            new = _new_hash(algorithm)
            if new is not None:
                hashes[algorithm] = new
    if not hashes:
        return {}
    buffer = bytearray(block_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as stream:
        while True:
            count = stream.readinto(buffer)
            if not count:
                break
            chunk = view[:count]
            for digest in hashes.values():
                digest.update(chunk)
    return {algorithm: digest.hexdigest() for algorithm, digest in hashes.items()}
