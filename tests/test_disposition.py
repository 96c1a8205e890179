"""The Content-Disposition parser (pure): which names a header suggests, best first."""

from __future__ import annotations

import pytest

from dlmanager.disposition import disposition_names


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("attachment; filename=\"a b.txt\"; filename*=UTF-8''na%C3%AFve.txt",
         [("filename*", "naïve.txt"), ("filename", "a b.txt")]),
        ("attachment; filename*=iso-8859-1'en'caf%E9.txt", [("filename*", "café.txt")]),
        ('attachment; filename="q\\"x\\\\y.txt"', [("filename", 'q"x\\y.txt')]),
        ("inline; filename=plain.txt", [("filename", "plain.txt")]),
        ('attachment; filename*0="a"; filename*1="b.txt"', [("filename", "ab.txt")]),
        ("attachment; FILENAME=upper.txt", [("filename", "upper.txt")]),
        ('attachment; filename="na\xc3\xafve.txt"', [("filename", "naïve.txt")]),  # raw UTF-8
        ('attachment; filename="caf\xe9.txt"', [("filename", "café.txt")]),  # raw ISO-8859-1
        ("attachment; filename=a%20b.txt", [("filename", "a%20b.txt")]),  # never decoded
        ("attachment; filename*=UTF-8''%FF.txt", []),  # not UTF-8
        ("attachment; filename*=koi8-r''x.txt; filename=y.txt", [("filename", "y.txt")]),
        ('attachment; filename="unterminated', []),
        ("attachment", []),
        ("", []),
        (None, []),
    ],
)  # fmt: skip
def test_disposition_names(value: str | None, names: list[tuple[str, str]]) -> None:
    assert disposition_names(value) == names
