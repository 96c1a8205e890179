"""The command line's pure parsers: sizes and manifest lines (no server)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dlmanager.checksum import Checksum
from dlmanager.cli.parsing import Item, format_size, parse_manifest, parse_manifest_line, parse_size

SHA256 = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1", 1),
        ("1048576", 1048576),
        ("500b", 500),
        ("1k", 1024),
        ("1K", 1024),
        ("1KiB", 1024),
        ("1kb", 1000),
        ("500M", 500 * 1024**2),
        ("500MB", 500 * 1000**2),
        ("2G", 2 * 1024**3),
        ("2GiB", 2 * 1024**3),
        ("1.5G", 3 * 1024**3 // 2),
        ("0.1G", 1024**3 // 10),
        (".5M", 512 * 1024),
        ("1T", 1024**4),
        ("3TB", 3 * 1000**4),
        (" 10 M ", 10 * 1024**2),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "not a size"),
        ("M", "not a size"),
        ("-1M", "not a size"),
        ("1X", "not a size"),
        ("1iB", "not a size"),
        ("1.2.3G", "not a size"),
        ("1e9", "not a size"),
        ("0", "more than 0"),
        ("0.0001K", "more than 0"),
        ("\u0661\u0662M", "not a size"),  # Arabic-Indic digits: int() takes them, we do not
    ],
)
def test_invalid_sizes_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as excinfo:
        parse_size(text)

    assert repr(text) in str(excinfo.value)


@given(st.text(max_size=20))
def test_parse_size_raises_only_value_error(text: str) -> None:
    try:
        size = parse_size(text)
    except ValueError:
        return
    assert isinstance(size, int)
    assert size > 0


@given(st.integers(min_value=1, max_value=2**50), st.sampled_from(["", "K", "M", "G", "KiB", "MB"]))
def test_format_of_a_parsed_size(number: int, unit: str) -> None:
    size = parse_size(f"{number}{unit}")
    assert size >= number
    assert format_size(size).split()[-1] in ("B", "KiB", "MiB", "GiB", "TiB")


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (20 * 1024**2, "20.0 MiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("line", "item"),
    [
        ("", None),
        ("   \n", None),
        ("# a comment", None),
        ("   # http://example.com/x", None),
        ("http://example.com/a.bin", Item("http://example.com/a.bin")),
        ("  http://example.com/a.bin  \n", Item("http://example.com/a.bin")),
        ("http://example.com/a.bin b.bin", Item("http://example.com/a.bin", "b.bin")),
        (
            f"http://example.com/a.bin\tb.bin  {SHA256}",
            Item("http://example.com/a.bin", "b.bin", Checksum.parse(SHA256)),
        ),
        (f"https://x.org/a - {SHA256}", Item("https://x.org/a", None, Checksum.parse(SHA256))),
        (f"https://x.org/a {SHA256}", Item("https://x.org/a", None, Checksum.parse(SHA256))),
    ],
)
def test_manifest_lines(line: str, item: Item | None) -> None:
    assert parse_manifest_line(line) == item


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("ftp://example.com/a", "only http and https"),
        ("example.com/a", "URL"),
        ("http://example.com/a ../escape", "invalid file name"),
        ("http://example.com/a sub/dir.bin", "invalid file name"),
        ("http://example.com/a .dlmanager", "file name"),
        ("http://example.com/a b.bin sha256:xyz", "sha256"),
        ("http://example.com/a b.bin nope:abcd", "nope"),
        (f"http://example.com/a b.bin {SHA256} extra", "too many fields: 4"),
        ("http://example.com/a a b", "too many fields: 3"),
    ],
)
def test_invalid_manifest_lines_say_what_is_wrong(line: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_manifest_line(line)


def test_manifest_errors_name_the_source_and_line() -> None:
    lines = ["# list", "http://example.com/a", "", "gopher://example.com/b"]

    with pytest.raises(ValueError, match=r"^urls\.txt:4: .*gopher://example\.com/b"):
        parse_manifest(lines, "urls.txt")


@given(st.text(max_size=200))
def test_manifest_line_raises_only_value_error(line: str) -> None:
    try:
        item = parse_manifest_line(line)
    except ValueError:
        return
    if item is not None:
        assert item.url.startswith(("http://", "https://"))
        assert item.fname is None or ("/" not in item.fname and item.fname not in (".", ".."))
