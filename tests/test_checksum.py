"""Unit tests of dlmanager.checksum: parsing, server headers, hashing."""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import struct
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from dlmanager import checksum
from dlmanager.checksum import (
    ALGORITHMS,
    Checksum,
    Hasher,
    available,
    file_digests,
    parse_checksum,
    server_digests,
)

DATA = b"The quick brown fox jumps over the lazy dog\n" * 100
CALLER_ALGORITHMS = ("md5", "sha1", "sha256", "sha512", "blake2b")
HEX_LENGTHS = {"md5": 32, "sha1": 40, "sha256": 64, "sha512": 128, "blake2b": 128, "crc32c": 8}
# The standard check value of CRC-32C (Castagnoli): crc32c(b"123456789").
CRC32C_CHECK = "e3069283"

FUZZ = settings(max_examples=200, deadline=None, database=None)


def hexdigest(algorithm: str, data: bytes = DATA) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def b64digest(algorithm: str, data: bytes = DATA) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii")


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def reference_crc32c(data: bytes, value: int = 0) -> int:
    """A slow reference CRC32C, to check the wrappers without the optional modules."""
    crc = value ^ 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


class ReferenceCrc32c:
    """A CRC32C hash object like the ones the optional modules give."""

    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        self.value = reference_crc32c(bytes(data), self.value)

    def hexdigest(self) -> str:
        return f"{self.value:08x}"


@pytest.fixture
def no_crc32c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make crc32c unavailable, whatever is installed."""
    monkeypatch.setattr(checksum, "_crc32c_backend", lambda: None)


@pytest.fixture
def fake_crc32c(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make crc32c available through the slow reference implementation."""
    monkeypatch.setattr(checksum, "_crc32c_backend", lambda: ReferenceCrc32c)


@pytest.fixture
def fresh_backend(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget the cached crc32c backend before and after the test."""
    monkeypatch.delitem(sys.modules, "google_crc32c", raising=False)
    monkeypatch.delitem(sys.modules, "crc32c", raising=False)
    checksum._crc32c_backend.cache_clear()
    yield
    checksum._crc32c_backend.cache_clear()


# --- Checksum.parse -----------------------------------------------------------------------


def test_reference_crc32c() -> None:
    assert f"{reference_crc32c(b'123456789'):08x}" == CRC32C_CHECK
    assert reference_crc32c(b"6789", reference_crc32c(b"12345")) == int(CRC32C_CHECK, 16)


def test_algorithms() -> None:
    assert ALGORITHMS == ("md5", "sha1", "sha256", "sha512", "blake2b", "crc32c")


@pytest.mark.parametrize("algorithm", CALLER_ALGORITHMS)
def test_parse(algorithm: str) -> None:
    digest = hexdigest(algorithm)
    assert len(digest) == HEX_LENGTHS[algorithm]
    parsed = Checksum.parse(f"{algorithm}:{digest}")
    assert parsed == Checksum(algorithm, digest, "checksum")
    assert parsed.algorithm == algorithm
    assert parsed.hexdigest == digest
    assert parsed.source == "checksum"


def test_parse_blake2b_is_the_default_64_byte_digest() -> None:
    digest = hashlib.blake2b(DATA).hexdigest()
    assert Checksum.parse(f"blake2b:{digest}").hexdigest == digest
    with pytest.raises(ValueError, match="128 hex digits"):
        Checksum.parse(f"blake2b:{hashlib.blake2b(DATA, digest_size=32).hexdigest()}")


@pytest.mark.parametrize("algorithm", CALLER_ALGORITHMS)
def test_parse_ignores_case(algorithm: str) -> None:
    digest = hexdigest(algorithm)
    parsed = Checksum.parse(f"{algorithm.upper()}:{digest.upper()}")
    assert parsed == Checksum(algorithm, digest)
    assert parsed.hexdigest == digest
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(digest))
    assert Checksum.parse(f"{algorithm.title()}:{mixed}").hexdigest == digest


@pytest.mark.parametrize(
    "template",
    [" {a}:{d}", "{a}:{d} ", "\t{a}:{d}\n", "  {a} : {d}  ", "{a}:\t{d}", "\r\n{a}:{d}\r\n"],
)
def test_parse_strips_whitespace(template: str) -> None:
    digest = hexdigest("sha256")
    assert Checksum.parse(template.format(a="sha256", d=digest)) == Checksum("sha256", digest)


@pytest.mark.parametrize(
    ("spelling", "algorithm"),
    [("sha-256", "sha256"), ("SHA-256", "sha256"), ("sha-512", "sha512"), ("Sha-512", "sha512")],
)
def test_parse_dashed_spellings(spelling: str, algorithm: str) -> None:
    digest = hexdigest(algorithm)
    parsed = Checksum.parse(f"{spelling}:{digest}")
    assert parsed.algorithm == algorithm
    assert str(parsed) == f"{algorithm}:{digest}"


@pytest.mark.parametrize("value", [None, 42, 1.5, b"sha256:00", ["sha256", "00"], Checksum])
def test_parse_not_a_string(value: Any) -> None:
    with pytest.raises(ValueError, match="must be a string") as info:
        Checksum.parse(value)
    assert type(value).__name__ in str(info.value)


@pytest.mark.parametrize("spec", ["", "   ", "sha256", "sha256=" + "0" * 64, "0" * 64])
def test_parse_no_colon(spec: str) -> None:
    with pytest.raises(ValueError, match="no ':'"):
        Checksum.parse(spec)


@pytest.mark.parametrize(
    "name", ["sha384", "sha224", "sha3_256", "sha-1", "blake2s", "crc32", "", "md 5", "sha256x"]
)
def test_parse_unknown_algorithm(name: str) -> None:
    with pytest.raises(ValueError, match="unknown algorithm") as info:
        Checksum.parse(f"{name}:{'0' * 64}")
    message = str(info.value)
    assert "supported: md5, sha1, sha256, sha512, blake2b" in message
    assert repr(name) in message


@pytest.mark.parametrize("name", ["crc32c", "CRC32C", " crc32c "])
def test_parse_rejects_crc32c(name: str) -> None:
    with pytest.raises(ValueError, match="crc32c is only taken from server headers") as info:
        Checksum.parse(f"{name}:{CRC32C_CHECK}")
    assert "md5, sha1, sha256, sha512, blake2b" in str(info.value)


@pytest.mark.parametrize("spec", ["sha256:", "sha256:   ", "md5:\t"])
def test_parse_empty_digest(spec: str) -> None:
    with pytest.raises(ValueError, match="hex digest is empty"):
        Checksum.parse(spec)


@pytest.mark.parametrize(
    "digest",
    [
        "g" * 64,
        "0x" + "0" * 62,
        "0" * 32 + " " + "0" * 31,
        "0" * 32 + "_" + "0" * 31,
        "0" * 63 + "-",
        "\uff10" * 64,  # fullwidth zeros: digits to str.isdigit, not hex
        "\u0660" * 64,  # Arabic-Indic zeros
        "0" * 63 + "\u00e9",
        "sha256:" + "0" * 57,
    ],
)
def test_parse_invalid_hex(digest: str) -> None:
    with pytest.raises(ValueError, match="invalid hex digits"):
        Checksum.parse(f"sha256:{digest}")


@pytest.mark.parametrize("algorithm", CALLER_ALGORITHMS)
@pytest.mark.parametrize("delta", [-1, 1, -2])
def test_parse_wrong_length(algorithm: str, delta: int) -> None:
    length = HEX_LENGTHS[algorithm] + delta
    with pytest.raises(ValueError) as info:
        Checksum.parse(f"{algorithm}:{'a' * length}")
    message = str(info.value)
    assert f"a {algorithm} digest has {HEX_LENGTHS[algorithm]} hex digits, not {length}" in message


def test_parse_wrong_length_of_other_algorithm() -> None:
    with pytest.raises(ValueError, match="has 64 hex digits, not 32"):
        Checksum.parse(f"sha256:{hexdigest('md5')}")


def test_parse_error_shortens_long_input() -> None:
    with pytest.raises(ValueError) as info:
        Checksum.parse("x" * 10_000)
    assert len(str(info.value)) < 300


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_str_round_trip(algorithm: str) -> None:
    digest = "0123456789abcdef" * 8
    value = Checksum(algorithm, digest[: HEX_LENGTHS[algorithm]])
    assert str(value) == f"{algorithm}:{value.hexdigest}"
    if algorithm != "crc32c":
        assert Checksum.parse(str(value)) == value
        assert str(Checksum.parse(str(value).upper())) == str(value)


def test_checksum_is_frozen_and_hashable() -> None:
    value = Checksum.parse(f"md5:{hexdigest('md5')}")
    with pytest.raises(AttributeError):
        value.algorithm = "sha1"  # type: ignore[misc]
    assert {value, Checksum("md5", hexdigest("md5"))} == {value}
    assert value != Checksum("md5", hexdigest("md5"), "Content-MD5")


def test_checksum_constructor_normalises_case() -> None:
    value = Checksum("SHA256", hexdigest("sha256").upper(), "Digest")
    assert value == Checksum("sha256", hexdigest("sha256"), "Digest")


@pytest.mark.parametrize(
    ("algorithm", "digest"),
    [("sha384", "0" * 96), ("sha-256", "0" * 64), ("md5", "0" * 31), ("md5", "z" * 32)],
)
def test_checksum_constructor_validates(algorithm: str, digest: str) -> None:
    with pytest.raises(ValueError):
        Checksum(algorithm, digest)


# --- parse_checksum -----------------------------------------------------------------------


def test_parse_checksum_none() -> None:
    assert parse_checksum(None) is None


def test_parse_checksum_passes_a_checksum_through() -> None:
    value = Checksum("md5", hexdigest("md5"), "Content-MD5")
    assert parse_checksum(value) is value


def test_parse_checksum_parses_text() -> None:
    assert parse_checksum(f" SHA-256:{hexdigest('sha256')} ") == Checksum(
        "sha256", hexdigest("sha256")
    )


@pytest.mark.parametrize("value", ["sha256", "nope:00", 12, b"md5:00"])
def test_parse_checksum_invalid(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_checksum(value)


# --- server_digests -----------------------------------------------------------------------


def crc32c_b64(value: int) -> str:
    return base64.b64encode(struct.pack(">I", value)).decode("ascii")


@pytest.mark.parametrize("name", ["Content-MD5", "content-md5", "CONTENT-MD5", "Content-Md5"])
@pytest.mark.parametrize("mapping", [dict, CaseInsensitiveDict])
def test_content_md5(name: str, mapping: Any) -> None:
    headers = mapping({name: b64digest("md5"), "Content-Length": "10"})
    assert server_digests(headers) == (Checksum("md5", hexdigest("md5"), "Content-MD5"),)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "not base64!",
        hexdigest("md5"),  # hex, not base64: decodes to 24 bytes
        b64digest("sha1"),  # wrong length
        b64digest("md5")[:-4],
        b64digest("md5") + "AAAA",
        "=" + b64digest("md5"),
        b64digest("md5").replace("+", "-").replace("/", "_") + "\u00e9",
        "\u00e9" * 24,
    ],
)
def test_content_md5_malformed_is_skipped(value: str) -> None:
    assert server_digests({"Content-MD5": value}) == ()


def test_content_md5_without_padding_and_with_whitespace() -> None:
    digest = b64digest("md5")
    assert digest.endswith("==")
    for value in (digest.rstrip("="), f"  {digest}\t"):
        assert server_digests({"Content-MD5": value}) == (
            Checksum("md5", hexdigest("md5"), "Content-MD5"),
        )


@pytest.mark.parametrize("name", ["x-goog-hash", "X-Goog-Hash", "X-GOOG-HASH"])
@pytest.mark.parametrize("mapping", [dict, CaseInsensitiveDict])
def test_x_goog_hash(name: str, mapping: Any) -> None:
    crc = int(CRC32C_CHECK, 16)
    headers = mapping({name: f"crc32c={crc32c_b64(crc)},md5={b64digest('md5')}"})
    assert server_digests(headers) == (
        Checksum("crc32c", CRC32C_CHECK, "x-goog-hash"),
        Checksum("md5", hexdigest("md5"), "x-goog-hash"),
    )


def test_x_goog_hash_joined_and_cased() -> None:
    # Two x-goog-hash headers, joined by requests with ", ".
    value = f"CRC32C={crc32c_b64(0x00000001)}, Md5={b64digest('md5')}"
    assert server_digests(CaseInsensitiveDict({"X-Goog-Hash": value})) == (
        Checksum("crc32c", "00000001", "x-goog-hash"),
        Checksum("md5", hexdigest("md5"), "x-goog-hash"),
    )


def test_x_goog_hash_crc32c_is_big_endian() -> None:
    raw = bytes([0x12, 0x34, 0x56, 0x78])
    value = "crc32c=" + base64.b64encode(raw).decode()
    assert server_digests({"x-goog-hash": value})[0].hexdigest == "12345678"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "crc32c",
        "crc32c=",
        "crc32c=!!!!",
        "crc32c=" + base64.b64encode(b"\x00\x00\x00").decode(),  # 3 bytes
        "crc32c=" + base64.b64encode(b"\x00" * 5).decode(),  # 5 bytes
        "md5=" + b64digest("sha1"),
        "sha256=" + b64digest("sha256"),  # not an x-goog-hash algorithm
        "=" + b64digest("md5"),
        ",,,",
    ],
)
def test_x_goog_hash_malformed_is_skipped(value: str) -> None:
    assert server_digests({"x-goog-hash": value}) == ()


def test_x_goog_hash_keeps_the_good_members() -> None:
    value = f"crc32c=garbage, md5={b64digest('md5')}, junk"
    assert server_digests({"x-goog-hash": value}) == (
        Checksum("md5", hexdigest("md5"), "x-goog-hash"),
    )


@pytest.mark.parametrize("name", ["Repr-Digest", "repr-digest", "REPR-DIGEST"])
@pytest.mark.parametrize("mapping", [dict, CaseInsensitiveDict])
def test_repr_digest(name: str, mapping: Any) -> None:
    value = f"sha-256=:{b64digest('sha256')}:, sha-512=:{b64digest('sha512')}:"
    assert server_digests(mapping({name: value})) == (
        Checksum("sha256", hexdigest("sha256"), "Repr-Digest"),
        Checksum("sha512", hexdigest("sha512"), "Repr-Digest"),
    )


def test_repr_digest_ignores_other_algorithms_and_parameters() -> None:
    value = (
        f"unixsum=:AAAA:, md5=:{b64digest('md5')}:, sha=:{b64digest('sha1')}:,"
        f"sha-256=:{b64digest('sha256')}:;foo=bar"
    )
    assert server_digests({"Repr-Digest": value}) == (
        Checksum("sha256", hexdigest("sha256"), "Repr-Digest"),
    )


@pytest.mark.parametrize(
    "value",
    [
        f"sha-256={b64digest('sha256')}",  # not a byte sequence
        f"sha-256=:{b64digest('sha256')}",
        f"sha-256={b64digest('sha256')}:",
        f"sha-256=:{b64digest('sha512')}:",  # wrong length
        "sha-256=::",
        "sha-256=:",
        "sha-256",
        f"sha-256=:{hexdigest('sha256')}:",
        f'sha-256="{b64digest("sha256")}"',
    ],
)
def test_repr_digest_malformed_is_skipped(value: str) -> None:
    assert server_digests({"Repr-Digest": value}) == ()


@pytest.mark.parametrize("name", ["Digest", "digest", "DIGEST"])
@pytest.mark.parametrize("mapping", [dict, CaseInsensitiveDict])
def test_digest(name: str, mapping: Any) -> None:
    value = f"SHA-256={b64digest('sha256')},sha-512={b64digest('sha512')}, Md5={b64digest('md5')}"
    assert server_digests(mapping({name: value})) == (
        Checksum("sha256", hexdigest("sha256"), "Digest"),
        Checksum("sha512", hexdigest("sha512"), "Digest"),
        Checksum("md5", hexdigest("md5"), "Digest"),
    )


@pytest.mark.parametrize(
    "value",
    [
        f"SHA={b64digest('sha1')}",  # RFC 3230's SHA-1: not read
        f"UNIXsum=12345, SHA-256={b64digest('md5')}",
        f"SHA-256=:{b64digest('sha256')}:",
        "MD5=",
        "MD5",
        f"MD5 {b64digest('md5')}",
        "SHA-512=" + "A" * 200,
    ],
)
def test_digest_malformed_is_skipped(value: str) -> None:
    assert server_digests({"Digest": value}) == ()


def test_all_headers_in_order_and_deduplicated() -> None:
    crc = crc32c_b64(int(CRC32C_CHECK, 16))
    headers = {
        "digest": f"MD5={b64digest('md5')}, SHA-256={b64digest('sha256')}",
        "repr-digest": f"sha-256=:{b64digest('sha256')}:",
        "x-goog-hash": f"crc32c={crc}, md5={b64digest('md5')}",
        "content-md5": b64digest("md5"),
    }
    assert server_digests(headers) == (
        Checksum("md5", hexdigest("md5"), "Content-MD5"),
        Checksum("crc32c", CRC32C_CHECK, "x-goog-hash"),
        Checksum("sha256", hexdigest("sha256"), "Repr-Digest"),
    )


def test_conflicting_digests_are_all_kept() -> None:
    other = b64digest("md5", b"other")
    headers = {"Content-MD5": b64digest("md5"), "Digest": f"MD5={other}"}
    assert server_digests(headers) == (
        Checksum("md5", hexdigest("md5"), "Content-MD5"),
        Checksum("md5", hexdigest("md5", b"other"), "Digest"),
    )


@pytest.mark.parametrize("headers", [None, "Content-MD5: x", 42, [("Content-MD5", "x")], {}])
def test_no_headers(headers: Any) -> None:
    assert server_digests(headers) == ()


def test_non_text_header_values_are_skipped() -> None:
    headers: dict[Any, Any] = {
        "Content-MD5": b64digest("md5").encode(),
        "Digest": [f"MD5={b64digest('md5')}"],
        "Repr-Digest": None,
        3: "x",
        "x-goog-hash": f"md5={b64digest('md5')}",
    }
    assert server_digests(headers) == (Checksum("md5", hexdigest("md5"), "x-goog-hash"),)


def test_server_digests_feed_a_hasher(fake_crc32c: None) -> None:
    data = b"123456789"
    headers = CaseInsensitiveDict(
        {
            "x-goog-hash": f"crc32c={crc32c_b64(int(CRC32C_CHECK, 16))}",
            "Repr-Digest": f"sha-256=:{b64digest('sha256', data)}:",
        }
    )
    hasher = Hasher(server_digests(headers))
    hasher.update(data)
    assert hasher.mismatches() == []
    assert hasher.hexdigests() == {"crc32c": CRC32C_CHECK, "sha256": hexdigest("sha256", data)}


# --- available and the crc32c backends -----------------------------------------------------


@pytest.mark.parametrize("algorithm", CALLER_ALGORITHMS)
def test_available(algorithm: str) -> None:
    assert available(algorithm)


@pytest.mark.parametrize("algorithm", ["sha384", "SHA256", "", "crc32"])
def test_not_available(algorithm: str) -> None:
    assert not available(algorithm)


def test_crc32c_unavailable(no_crc32c: None) -> None:
    assert not available("crc32c")
    assert available("sha256")


def test_crc32c_available_with_a_backend(fake_crc32c: None) -> None:
    assert available("crc32c")


def test_crc32c_when_installed() -> None:
    if not available("crc32c"):
        pytest.skip("neither google_crc32c nor crc32c is installed")
    hasher = Hasher([Checksum("crc32c", CRC32C_CHECK, "x-goog-hash")])
    hasher.update(b"12345")
    hasher.update(memoryview(b"6789"))
    assert hasher.hexdigests() == {"crc32c": CRC32C_CHECK}
    assert hasher.mismatches() == []


def test_google_crc32c_wrapper() -> None:
    google_crc32c = pytest.importorskip("google_crc32c")
    digest = checksum._GoogleCrc32c(google_crc32c)
    digest.update(b"1234")
    digest.update(memoryview(b"..5678").cast("B")[2:])
    digest.update(memoryview(bytearray(b"9")))
    assert digest.hexdigest() == CRC32C_CHECK


def test_crc32c_module_wrapper() -> None:
    crc32c = pytest.importorskip("crc32c")
    digest = checksum._Crc32cFunction(crc32c.crc32c)
    digest.update(b"1234")
    digest.update(memoryview(b"..5678")[2:])
    digest.update(memoryview(bytearray(b"9")))
    assert digest.hexdigest() == CRC32C_CHECK


class FakeGoogleChecksum:
    def __init__(self) -> None:
        self.value = 0

    def update(self, data: bytes) -> None:
        assert type(data) is bytes  # the real C extension refuses anything else
        self.value = reference_crc32c(data, self.value)

    def digest(self) -> bytes:
        return struct.pack(">I", self.value)


def fake_module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def test_backend_prefers_google_crc32c(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    google = fake_module("google_crc32c", Checksum=FakeGoogleChecksum, implementation="c")
    monkeypatch.setitem(sys.modules, "google_crc32c", google)
    monkeypatch.setitem(sys.modules, "crc32c", fake_module("crc32c", crc32c=None))
    assert available("crc32c")
    digest = checksum._new_hash("crc32c")
    assert isinstance(digest, checksum._GoogleCrc32c)
    digest.update(b"12345")
    digest.update(memoryview(bytearray(b"6789")))
    assert digest.hexdigest() == CRC32C_CHECK


def test_backend_skips_pure_python_google_crc32c(
    monkeypatch: pytest.MonkeyPatch, fresh_backend: None
) -> None:
    google = fake_module("google_crc32c", Checksum=FakeGoogleChecksum, implementation="python")
    monkeypatch.setitem(sys.modules, "google_crc32c", google)
    monkeypatch.setitem(sys.modules, "crc32c", fake_module("crc32c", crc32c=reference_crc32c))
    digest = checksum._new_hash("crc32c")
    assert isinstance(digest, checksum._Crc32cFunction)
    digest.update(b"123456789")
    assert digest.hexdigest() == CRC32C_CHECK


def test_backend_none(monkeypatch: pytest.MonkeyPatch, fresh_backend: None) -> None:
    # None in sys.modules makes the import fail, as when the module is missing.
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    monkeypatch.setitem(sys.modules, "crc32c", None)
    assert not available("crc32c")
    assert checksum._new_hash("crc32c") is None
    hasher = Hasher([Checksum("crc32c", CRC32C_CHECK, "x-goog-hash")])
    assert not hasher
    assert hasher.skipped == (Checksum("crc32c", CRC32C_CHECK, "x-goog-hash"),)


def test_backend_is_cached(monkeypatch: pytest.MonkeyPatch, fresh_backend: None) -> None:
    monkeypatch.setitem(sys.modules, "google_crc32c", None)
    monkeypatch.setitem(sys.modules, "crc32c", None)
    assert not available("crc32c")
    monkeypatch.setitem(sys.modules, "crc32c", fake_module("crc32c", crc32c=reference_crc32c))
    assert not available("crc32c")
    checksum._crc32c_backend.cache_clear()
    assert available("crc32c")


# --- Hasher -------------------------------------------------------------------------------


def all_checksums(data: bytes = DATA) -> list[Checksum]:
    return [Checksum(algorithm, hexdigest(algorithm, data)) for algorithm in CALLER_ALGORITHMS]


def test_hasher_computes_every_algorithm() -> None:
    hasher = Hasher(all_checksums())
    assert hasher
    view = memoryview(DATA)
    for start in range(0, len(DATA), 333):
        hasher.update(view[start : start + 333])
    assert hasher.hexdigests() == {a: hexdigest(a) for a in CALLER_ALGORITHMS}
    assert hasher.hexdigests()["blake2b"] == hashlib.blake2b(DATA).hexdigest()
    assert hasher.mismatches() == []
    assert hasher.skipped == ()


def test_hasher_bytes_and_empty_updates() -> None:
    hasher = Hasher(all_checksums())
    hasher.update(b"")
    hasher.update(DATA[:10])
    hasher.update(memoryview(b""))
    hasher.update(bytearray(DATA[10:]))
    assert hasher.mismatches() == []


def test_hasher_of_nothing() -> None:
    hasher = Hasher([Checksum("sha256", hexdigest("sha256", b""))])
    assert hasher.hexdigests() == {"sha256": hashlib.sha256().hexdigest()}
    assert hasher.mismatches() == []


def test_hasher_mismatches() -> None:
    good_md5 = Checksum("md5", hexdigest("md5"), "Content-MD5")
    bad_md5 = Checksum("md5", hexdigest("md5", b"other"), "Digest")
    bad_sha256 = Checksum.parse(f"sha256:{hexdigest('sha256', b'other')}")
    hasher = Hasher([good_md5, bad_sha256, bad_md5])
    hasher.update(DATA)
    assert sorted(hasher.hexdigests()) == ["md5", "sha256"]
    assert hasher.mismatches() == [
        (bad_sha256, hexdigest("sha256")),
        (bad_md5, hexdigest("md5")),
    ]


def test_hasher_digests_can_be_read_midway() -> None:
    expected = Checksum("sha1", hexdigest("sha1"))
    hasher = Hasher([expected])
    hasher.update(DATA[:100])
    assert hasher.mismatches() == [(expected, hexdigest("sha1", DATA[:100]))]
    hasher.update(DATA[100:])
    assert hasher.mismatches() == []


def test_hasher_one_hash_per_algorithm(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    original = checksum._new_hash

    def counting(algorithm: str) -> Any:
        made.append(algorithm)
        return original(algorithm)

    monkeypatch.setattr(checksum, "_new_hash", counting)
    Hasher([Checksum("md5", "0" * 32), Checksum("md5", "1" * 32), Checksum("sha1", "0" * 40)])
    assert made == ["md5", "sha1"]


def test_hasher_empty() -> None:
    hasher = Hasher([])
    assert not hasher
    hasher.update(DATA)
    assert hasher.hexdigests() == {}
    assert hasher.mismatches() == []
    assert hasher.skipped == ()


def test_hasher_takes_any_iterable() -> None:
    hasher = Hasher(iter(all_checksums()))
    hasher.update(DATA)
    assert hasher.mismatches() == []
    assert len(hasher.hexdigests()) == len(CALLER_ALGORITHMS)


def test_hasher_skips_crc32c_when_unavailable(no_crc32c: None) -> None:
    crc = Checksum("crc32c", "deadbeef", "x-goog-hash")
    md5 = Checksum("md5", hexdigest("md5"), "x-goog-hash")
    hasher = Hasher([crc, md5, crc])
    assert hasher
    assert hasher.skipped == (crc, crc)
    hasher.update(DATA)
    assert hasher.hexdigests() == {"md5": hexdigest("md5")}
    assert hasher.mismatches() == []  # the wrong crc32c is not checked

    only_crc = Hasher([crc])
    assert not only_crc
    only_crc.update(DATA)
    assert only_crc.mismatches() == []


def test_hasher_with_crc32c(fake_crc32c: None) -> None:
    good = Checksum("crc32c", CRC32C_CHECK, "x-goog-hash")
    bad = Checksum("crc32c", "deadbeef", "x-goog-hash")
    hasher = Hasher([good, bad])
    assert hasher.skipped == ()
    hasher.update(b"123456789")
    assert hasher.hexdigests() == {"crc32c": CRC32C_CHECK}
    assert hasher.mismatches() == [(bad, CRC32C_CHECK)]


# --- file_digests -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, bytes]:
    """A file of about 3 MiB of pseudo-random bytes, not a multiple of the block size."""
    data = random.Random(1234).randbytes(3 * (1 << 20) + 12345)
    path = os.path.join(os.fspath(tmp_path_factory.mktemp("checksum")), "big.bin")
    with open(path, "wb") as stream:
        stream.write(data)
    return path, data


def test_file_digests(big_file: tuple[str, bytes]) -> None:
    path, data = big_file
    result = file_digests(path, CALLER_ALGORITHMS)
    assert result == {a: hexdigest(a, data) for a in CALLER_ALGORITHMS}
    assert list(result) == list(CALLER_ALGORITHMS)
    assert result["blake2b"] == hashlib.blake2b(data).hexdigest()


@pytest.mark.parametrize("block_size", [1 << 20, 4097, 1 << 16, 1 << 24])
def test_file_digests_block_sizes(big_file: tuple[str, bytes], block_size: int) -> None:
    path, data = big_file
    result = file_digests(path, ["sha256", "md5"], block_size=block_size)
    assert result == {"sha256": hexdigest("sha256", data), "md5": hexdigest("md5", data)}


def test_file_digests_reads_once(
    big_file: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = big_file[0]
    opened: list[str] = []
    real_open = open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(file)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    file_digests(path, CALLER_ALGORITHMS)
    assert opened == [path]


def test_file_digests_small_and_empty_files(tmp_path: Path) -> None:
    for data in (b"", b"x", DATA):
        path = os.path.join(os.fspath(tmp_path), "f")
        with open(path, "wb") as stream:
            stream.write(data)
        assert file_digests(path, ["sha1", "blake2b"], block_size=7) == {
            "sha1": hexdigest("sha1", data),
            "blake2b": hexdigest("blake2b", data),
        }


def test_file_digests_duplicates_and_iterables(big_file: tuple[str, bytes]) -> None:
    path, data = big_file
    result = file_digests(path, iter(["md5", "md5", "sha1"]))
    assert result == {"md5": hexdigest("md5", data), "sha1": hexdigest("sha1", data)}


def test_file_digests_skips_unavailable_crc32c(
    big_file: tuple[str, bytes], no_crc32c: None
) -> None:
    path, data = big_file
    assert file_digests(path, ["crc32c", "md5"]) == {"md5": hexdigest("md5", data)}
    assert file_digests(path, ["crc32c"]) == {}


def test_file_digests_crc32c(tmp_path: Path, fake_crc32c: None) -> None:
    path = os.path.join(os.fspath(tmp_path), "f")
    with open(path, "wb") as stream:
        stream.write(b"123456789")
    assert file_digests(path, ["crc32c"], block_size=4) == {"crc32c": CRC32C_CHECK}


def test_file_digests_nothing_to_compute_does_not_open(tmp_path: Path) -> None:
    missing = os.path.join(os.fspath(tmp_path), "missing")
    assert file_digests(missing, []) == {}


def test_file_digests_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        file_digests(os.path.join(os.fspath(tmp_path), "missing"), ["md5"])


@pytest.mark.parametrize("algorithm", ["sha384", "SHA256", "sha-256", ""])
def test_file_digests_unknown_algorithm(big_file: tuple[str, bytes], algorithm: str) -> None:
    with pytest.raises(ValueError, match="unknown checksum algorithm"):
        file_digests(big_file[0], ["md5", algorithm])


@pytest.mark.parametrize("block_size", [0, -1])
def test_file_digests_bad_block_size(big_file: tuple[str, bytes], block_size: int) -> None:
    with pytest.raises(ValueError, match="block_size"):
        file_digests(big_file[0], ["md5"], block_size=block_size)


# --- fuzzing ------------------------------------------------------------------------------

_ALGORITHM_NAMES = st.sampled_from(
    [*ALGORITHMS, "SHA256", "sha-256", "SHA-512", "sha-1", "sha384", " md5 ", ""]
)
_HEXISH = st.text(alphabet="0123456789abcdefABCDEF xg:\t\u00e9\uff10", max_size=140)
_SPECS = st.one_of(
    st.text(),
    st.builds(lambda a, h: f"{a}:{h}", _ALGORITHM_NAMES, _HEXISH),
    st.builds(
        lambda a, n: f"{a}:{'a' * n}", _ALGORITHM_NAMES, st.integers(min_value=0, max_value=130)
    ),
)


@FUZZ
@given(_SPECS)
def test_fuzz_parse(spec: str) -> None:
    try:
        value = Checksum.parse(spec)
    except ValueError as exc:
        assert str(exc)
        return
    assert value.algorithm in CALLER_ALGORITHMS
    assert re.fullmatch(r"[0-9a-f]+", value.hexdigest)
    assert len(value.hexdigest) == HEX_LENGTHS[value.algorithm]
    assert Checksum.parse(str(value)) == value


_HEADER_NAMES = st.one_of(
    st.sampled_from(
        ["Content-MD5", "content-md5", "x-goog-hash", "X-Goog-Hash", "Repr-Digest", "DIGEST"]
    ),
    st.text(max_size=20),
)
_B64ISH = st.one_of(
    st.sampled_from(
        [b64digest(a) for a in ("md5", "sha1", "sha256", "sha512")] + [crc32c_b64(0xE3069283)]
    ),
    st.text(alphabet='ABCDEFabcdef0123456789+/=:;"\u00e9 ', max_size=100),
)
_MEMBER = st.builds(
    lambda name, sep, value: f"{name}{sep}{value}",
    st.sampled_from(["md5", "MD5", "crc32c", "sha-256", "SHA-512", "sha", "", "x"]),
    st.sampled_from(["=", "=:", " = ", ""]),
    st.builds(lambda v, end: v + end, _B64ISH, st.sampled_from([":", "", ";a=b", ":;q=1"])),
)
_HEADER_VALUES = st.one_of(
    st.text(),
    _B64ISH,
    st.lists(_MEMBER, max_size=4).map(", ".join),
)


@FUZZ
@given(st.dictionaries(_HEADER_NAMES, _HEADER_VALUES, max_size=6), st.booleans())
def test_fuzz_server_digests(headers: dict[str, str], case_insensitive: bool) -> None:
    mapping: Any = CaseInsensitiveDict(headers) if case_insensitive else headers
    result = server_digests(mapping)
    assert isinstance(result, tuple)
    assert len({(c.algorithm, c.hexdigest) for c in result}) == len(result)
    for value in result:
        assert value.algorithm in ALGORITHMS
        assert len(value.hexdigest) == HEX_LENGTHS[value.algorithm]
        assert value.source in ("Content-MD5", "x-goog-hash", "Repr-Digest", "Digest")
