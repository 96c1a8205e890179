"""The parsers of what servers, callers and manifests send, fed arbitrary input.

Each raises only the exception its docstring documents, whatever the text,
and gives back what it was given where a round trip makes sense. (Size
strings and manifest lines are fuzzed in test_cli_parsing.py; checksum specs
and digest headers in test_checksum.py: here are their remaining entry
points.)
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import os
import re
import string
import urllib.parse
from typing import Any

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from dlmanager.checksum import ALGORITHMS, Checksum, parse_checksum, server_digests
from dlmanager.disk.layout import STATE_DIR, is_temporary
from dlmanager.errors import ResumeError
from dlmanager.names import check_url, name_from_url, validate_fname
from dlmanager.retry import parse_retry_after
from dlmanager.transport.headers import parse_content_range, response_info

FUZZ = settings(max_examples=200, deadline=None, database=None)

#: Text that looks like what it is fed more often than random text would.
_DIGITISH = st.text(alphabet="0123456789\u0660\u0669\u00b2\uff11", min_size=1, max_size=6)
_BLANKS = st.sampled_from(["", " ", "  ", "\t", "\xa0", "\n", "\r\n"])
_RANGEISH = st.one_of(
    st.text(alphabet="bytes 0123456789-/*\t\u0660\u00b2\n,", max_size=40),
    st.builds(
        "{}{}{}{}-{}/{}{}".format,
        _BLANKS,
        st.sampled_from(["bytes", "BYTES", "byte", "items"]),
        _BLANKS,
        _DIGITISH,
        _DIGITISH,
        st.one_of(_DIGITISH, st.just("*")),
        _BLANKS,
    ),
)
_URLISH = st.text(alphabet=string.printable + "\x00\u00e9%/\\.", max_size=60)
_OFFSETS = st.integers(min_value=0, max_value=2**63)


# --- Content-Range (transfer.py) ------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(max_size=60), _RANGEISH))
def test_parse_content_range_raises_only_value_error(value: str) -> None:
    try:
        start, end, total = parse_content_range(value)
    except ValueError:
        return
    assert 0 <= start <= end
    assert total is None or end < total
    # Only ASCII digits and blanks: what was parsed is what was written.
    size = "[*]" if total is None else f"0*{total}"
    assert re.fullmatch(f"[ \t]*bytes[ \t]+0*{start}-0*{end}/{size}[ \t]*", value, re.I)


@FUZZ
@given(_OFFSETS, _OFFSETS, st.one_of(st.none(), _OFFSETS), st.sampled_from(["bytes", "BYTES"]))
def test_parse_content_range_round_trip(
    start: int, length: int, total: int | None, unit: str
) -> None:
    end = start + length
    assume(total is None or end < total)
    text = f"{unit} {start}-{end}/{'*' if total is None else total}"
    assert parse_content_range(text) == (start, end, total)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(
            [
                *("Content-Length", "Content-Range", "Content-Encoding", "ETag"),
                *("Last-Modified", "Accept-Ranges", "x-goog-stored-content-length"),
            ]
        ),
        st.one_of(
            _RANGEISH, st.text(max_size=30), st.builds("{}{}{}".format, _BLANKS, _DIGITISH, _BLANKS)
        ),
        max_size=7,
    ),
    st.sampled_from([200, 206]),
    st.integers(min_value=0, max_value=10**6),
    st.one_of(st.none(), st.integers(min_value=1, max_value=10**6)),
)
def test_response_headers_raise_only_resume_error(
    headers: dict[str, str], status: int, offset: int, end: int | None
) -> None:
    response: Any = type("Response", (), {"headers": headers, "status_code": status})()
    try:
        info = response_info(response, "http://example.com/f", None, offset, end)
    except ResumeError:
        assert status == 206
        return
    assert info.length is None or info.length >= 0
    assert info.total is None or info.total >= 0
    if status == 206:
        assert info.start == offset


# --- checksums (checksum.py) ----------------------------------------------------------------

_ANYTHING = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.binary(max_size=20),
    st.integers(),
    st.floats(),
    st.lists(st.text(max_size=5), max_size=3),
)


@FUZZ
@given(_ANYTHING)
def test_parse_checksum_raises_only_value_error(value: Any) -> None:
    try:
        parsed = parse_checksum(value)
    except ValueError as exc:
        assert str(exc)
        return
    assert value is None or isinstance(value, str)
    assert parsed is None or parsed.algorithm in ALGORITHMS


@FUZZ
@given(_ANYTHING, _ANYTHING)
def test_checksum_constructor_raises_only_value_error(algorithm: Any, hexdigest: Any) -> None:
    try:
        value = Checksum(algorithm, hexdigest)
    except ValueError:
        return
    assert value.algorithm in ALGORITHMS
    assert value.hexdigest == value.hexdigest.lower()


@FUZZ
@given(
    st.binary(max_size=100),
    st.sampled_from(["md5", "sha1", "sha256", "sha512", "blake2b"]),
    st.booleans(),
    st.sampled_from(["", " ", "\t"]),
)
def test_checksum_round_trip(data: bytes, algorithm: str, upper: bool, blank: str) -> None:
    digest = hashlib.new(algorithm, data).hexdigest()
    spec = (
        f"{blank}{algorithm.upper() if upper else algorithm}:{digest.upper() if upper else digest}"
    )

    value = Checksum.parse(spec + blank)

    assert (value.algorithm, value.hexdigest) == (algorithm, digest)
    assert Checksum.parse(str(value)) == value
    assert parse_checksum(value) is value


@FUZZ
@given(st.binary(max_size=100), st.sampled_from(["sha-256", "sha-512"]), st.booleans())
def test_server_digest_round_trip(data: bytes, name: str, repr_digest: bool) -> None:
    algorithm = name.replace("-", "")
    encoded = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    headers = (
        {"Repr-Digest": f"{name}=:{encoded}:"} if repr_digest else {"Digest": f"{name}={encoded}"}
    )

    (found,) = server_digests(headers)

    assert (found.algorithm, found.hexdigest) == (
        algorithm,
        hashlib.new(algorithm, data).hexdigest(),
    )


# --- Retry-After (retry.py) -----------------------------------------------------------------


_NUMBERS = st.one_of(st.integers(min_value=-1, max_value=100), st.integers(min_value=0))
_DATEISH = st.builds(
    "{}, {} {} {} {}:{}:{} {}".format,
    st.sampled_from(["Mon", "Sun", "Xyz", ""]),
    _NUMBERS,
    st.sampled_from(["Jan", "Dec", "Foo"]),
    st.one_of(st.sampled_from([0, 1, 69, 70, 1900, 2024, 9999, 10000]), _NUMBERS),
    _NUMBERS,
    _NUMBERS,
    _NUMBERS,
    st.sampled_from(["GMT", "UTC", "+0000", "-2359", "+99999", "EST", "Z", ""]),
)
#: An HTTP-date whose minutes do not fit a C long: ``datetime`` raises
#: OverflowError, which ``parse_retry_after`` must treat as "no date".
_OVERFLOWING_DATE = "Mon, 01 Feb 2021 00:100000000000000000000:00 GMT"


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=60), st.text(alphabet="0123456789 "), _DATEISH))
@example(_OVERFLOWING_DATE)
def test_parse_retry_after_never_raises(value: str | None) -> None:
    delay = parse_retry_after(value, now=1_700_000_000.0)
    assert delay is None or delay >= 0


@FUZZ
@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(f" {seconds} ") == float(seconds)


@FUZZ
@given(
    st.integers(min_value=0, max_value=4_000_000_000),
    st.integers(min_value=-(10**6), max_value=10**6),
)
def test_parse_retry_after_dates(moment: int, ahead: int) -> None:
    value = email.utils.formatdate(moment, usegmt=True)
    assert parse_retry_after(value, now=moment - ahead) == max(0.0, float(ahead))


# --- names and URLs (paths.py) --------------------------------------------------------------


@FUZZ
@given(st.one_of(st.text(max_size=40), _URLISH, st.none(), st.integers()))
def test_validate_fname_raises_only_value_error(fname: Any) -> None:
    try:
        valid = validate_fname(fname)
    except ValueError:
        return
    assert valid == fname
    assert os.path.basename(valid) == valid
    assert valid not in ("", ".", "..", STATE_DIR)
    assert "\x00" not in valid and "/" not in valid and "\\" not in valid
    assert not is_temporary(valid)
    assert os.path.normpath(os.path.join("/dest", valid)) == os.path.join("/dest", valid)


@FUZZ
@given(st.one_of(st.text(max_size=60), _URLISH.map(lambda path: "http://example.com/" + path)))
def test_name_from_url_raises_only_value_error(url: str) -> None:
    try:
        name = name_from_url(url)
    except ValueError:
        return
    assert validate_fname(name) == name


@FUZZ
@given(st.text(min_size=1, max_size=30))
def test_name_from_url_round_trip(fname: str) -> None:
    assume(fname not in (".", ".."))
    try:
        validate_fname(fname)
    except ValueError:
        assume(False)
    url = "https://example.com/dir/" + urllib.parse.quote(fname, safe="")
    assert name_from_url(url) == fname


@FUZZ
@given(st.one_of(st.text(max_size=60), _URLISH, _URLISH.map(lambda rest: "http://" + rest)))
def test_check_url_raises_only_value_error(url: str) -> None:
    try:
        check_url(url)
    except ValueError:
        return
    parts = urllib.parse.urlsplit(url)
    assert parts.scheme.lower() in ("http", "https")
    assert parts.netloc
