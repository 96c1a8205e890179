"""Unit tests of names.py (URL checks, file names) and of disk/layout.py and disk/cleanup.py."""

from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

import pytest

from dlmanager.disk.cleanup import STALE_MIN_AGE, remove_stale_temporaries
from dlmanager.disk.layout import STATE_DIR, TEMP_SUFFIX, is_temporary, temporary_name
from dlmanager.names import check_url, name_from_url, validate_fname

# -- check_url -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://example.com/f.bin",
        "https://example.com/dir/f.bin?x=1#frag",
        "HTTPS://Example.COM/F.BIN",
        "http://127.0.0.1:8000/f",
        "http://[::1]:8080/f",
        "http://user:pw@example.com/f",
    ],
)
def test_check_url_accepts_http_urls(url: str) -> None:
    check_url(url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/f", "unsupported URL scheme"),
        ("file:///etc/passwd", "unsupported URL scheme"),
        ("example.com/f.bin", "unsupported URL scheme"),
        ("/local/path", "unsupported URL scheme"),
        ("", "unsupported URL scheme"),
        ("http://", "no host"),
        ("http:///f.bin", "no host"),
        ("https:f.bin", "no host"),
        ("http://[::1/f", "invalid URL"),
    ],
)
def test_check_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_url(url)


@pytest.mark.parametrize("url", [None, b"http://example.com/f", 42])
def test_check_url_rejects_non_strings(url: object) -> None:
    with pytest.raises(ValueError, match="URL must be a string"):
        check_url(url)  # type: ignore[arg-type]


# -- validate_fname ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fname",
    [
        "f.bin",
        "...",
        ".hidden",
        "a..b",
        "with space.txt",
        "\u00e9t\u00e9.zip",
        "a:b",
        ".dlmanagerx",
    ],
)
def test_validate_fname_returns_valid_names(fname: str) -> None:
    assert validate_fname(fname) == fname


@pytest.mark.parametrize(
    ("fname", "message"),
    [
        ("", "invalid file name"),
        (".", "invalid file name"),
        ("..", "invalid file name"),
        ("a/b", "path separator"),
        ("/etc/passwd", "path separator"),
        ("../f.bin", "path separator"),
        ("dir/", "path separator"),
        ("a\\b", "path separator"),
        ("a\x00b", "NUL"),
        (STATE_DIR, "reserved"),
        (".f.bin.0123abcd.part", "reserved"),
    ],
)
def test_validate_fname_rejects(fname: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        validate_fname(fname)


@pytest.mark.parametrize("fname", [None, b"f.bin", 3])
def test_validate_fname_rejects_non_strings(fname: object) -> None:
    with pytest.raises(ValueError, match="must be a string"):
        validate_fname(fname)  # type: ignore[arg-type]


# -- name_from_url -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("http://example.com/f.bin", "f.bin"),
        ("http://example.com/a/b/c/f.tar.gz", "f.tar.gz"),
        ("http://example.com/f.bin?token=a/b", "f.bin"),
        ("http://example.com/f.bin#part/2", "f.bin"),
        ("http://example.com/with%20space.txt", "with space.txt"),
        ("http://example.com/%C3%A9t%C3%A9.zip", "\u00e9t\u00e9.zip"),
        ("http://example.com/a%3Bb", "a;b"),
        ("https://example.com:8443/dir/.hidden", ".hidden"),
    ],
)
def test_name_from_url(url: str, name: str) -> None:
    assert name_from_url(url) == name


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://example.com/",
        "http://example.com/dir/",
        "http://example.com/..",
        "http://example.com/%2E%2E",
        "http://example.com/a%2Fb",
        "http://example.com/a%5Cb",
        "http://example.com/a%00b",
        "http://example.com/.dlmanager",
        "http://example.com/.f.bin.0123abcd.part",
    ],
)
def test_name_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="pass fname") as info:
        name_from_url(url)
    assert repr(url) in str(info.value)


# -- temporary names -----------------------------------------------------------------------


def test_temporary_name_format() -> None:
    name = temporary_name("x.bin")
    assert re.fullmatch(r"\.x\.bin\.[0-9a-f]{8}\.part", name)
    assert name.endswith(TEMP_SUFFIX)
    assert is_temporary(name)
    with pytest.raises(ValueError, match="reserved"):
        validate_fname(name)


def test_temporary_names_are_unique() -> None:
    names = {temporary_name("x.bin") for _ in range(200)}
    assert len(names) == 200


@pytest.mark.parametrize("fname", ["x", ".hidden", "a.b.c", "with space", "\u00e9", "a\nb"])
def test_temporary_name_of_any_valid_name_is_temporary(fname: str) -> None:
    assert is_temporary(temporary_name(fname))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (".f.bin.0123abcd.part", True),
        (".f.0123abcd.part", True),
        (".a\nb.0123abcd.part", True),
        ("f.bin.0123abcd.part", False),  # not hidden
        (".f.bin.0123ABCD.part", False),  # upper-case hex
        (".f.bin.0123abc.part", False),  # 7 digits
        (".f.bin.0123abcde.part", False),  # 9 digits
        (".f.bin.0123abcg.part", False),
        (".0123abcd.part", False),  # no name
        (".f.bin.0123abcd.part.bak", False),
        (".f.bin.0123abcd.partial", False),
        (".f.bin.part", False),
        ("f.bin", False),
        ("f.bin.part", False),
        (".f.bin.0123abcd.part\n", False),  # not one of ours: ends with a newline
    ],
)
def test_is_temporary(name: str, expected: bool) -> None:
    assert is_temporary(name) is expected


# -- remove_stale_temporaries --------------------------------------------------------------

OLD = time.time() - 3600


def make(directory: Path, name: str, mtime: float | None = OLD) -> str:
    path = directory / name
    path.write_bytes(b"partial data")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return str(path)


def test_stale_temporary_is_removed(tmp_path: Path) -> None:
    stale = make(tmp_path, temporary_name("x.bin"))
    assert remove_stale_temporaries(str(tmp_path)) == [stale]
    assert not os.path.exists(stale)
    assert remove_stale_temporaries(str(tmp_path)) == []


def test_removed_paths_are_joined_to_the_directory(tmp_path: Path) -> None:
    name = temporary_name("x.bin")
    make(tmp_path, name)
    assert remove_stale_temporaries(str(tmp_path) + os.sep) == [str(tmp_path) + os.sep + name]


def test_locked_temporary_is_kept(tmp_path: Path) -> None:
    locked = make(tmp_path, temporary_name("x.bin"))
    fd = os.open(locked, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert remove_stale_temporaries(str(tmp_path), min_age=0) == []
        assert os.path.exists(locked)
    finally:
        os.close(fd)  # releases the lock: the writer is gone
    assert remove_stale_temporaries(str(tmp_path), min_age=0) == [locked]
    assert not os.path.exists(locked)


def test_young_temporary_is_kept(tmp_path: Path) -> None:
    young = make(tmp_path, temporary_name("x.bin"), mtime=time.time() - 1)
    assert STALE_MIN_AGE == 2.0
    assert remove_stale_temporaries(str(tmp_path)) == []
    assert remove_stale_temporaries(str(tmp_path), min_age=60) == []
    assert os.path.exists(young)
    assert remove_stale_temporaries(str(tmp_path), min_age=0.5) == [young]


def test_only_stale_temporaries_are_removed(tmp_path: Path) -> None:
    stale = make(tmp_path, temporary_name("a.bin"))
    young = make(tmp_path, temporary_name("b.bin"), mtime=time.time() + 60)
    kept = [
        make(tmp_path, "f.bin"),
        make(tmp_path, "f.bin.part"),
        make(tmp_path, ".f.bin.0123ABCD.part"),
        young,
    ]
    directory = tmp_path / temporary_name("dir")
    directory.mkdir()
    os.utime(directory, (OLD, OLD))
    link = tmp_path / temporary_name("link")
    os.symlink(kept[0], link)
    os.utime(link, (OLD, OLD), follow_symlinks=False)

    assert remove_stale_temporaries(str(tmp_path)) == [stale]
    for path in kept:
        assert os.path.exists(path)
    assert directory.is_dir()
    assert link.is_symlink()


def test_user_file_with_a_temporary_looking_name_plus_newline_is_kept(tmp_path: Path) -> None:
    # Not a name temporary_name() produces: it must not be taken for one and deleted.
    user_file = make(tmp_path, ".notes.0123abcd.part\n")
    assert remove_stale_temporaries(str(tmp_path)) == []
    assert os.path.exists(user_file)


def test_missing_directory_removes_nothing(tmp_path: Path) -> None:
    assert remove_stale_temporaries(str(tmp_path / "missing")) == []


def test_subdirectories_are_not_searched(tmp_path: Path) -> None:
    sub = tmp_path / "sub"
    sub.mkdir()
    nested = make(sub, temporary_name("x.bin"))
    assert remove_stale_temporaries(str(tmp_path)) == []
    assert os.path.exists(nested)


# -- leftovers with checkpoints ----------------------------------------------------------------


def _checkpointed(directory: Path, age: float) -> tuple[str, str]:
    from dlmanager.disk.checkpoint import Checkpoint, checkpoint_path, save

    part = make(directory, temporary_name("f.bin"), time.time() - age)
    ckpt = checkpoint_path(part)
    save(ckpt, Checkpoint("http://h/f.bin", 10, '"e"', ((0, 4),)))
    os.utime(ckpt, (time.time() - age, time.time() - age))
    return part, ckpt


def test_resumable_leftover_is_kept(tmp_path: Path) -> None:
    part, ckpt = _checkpointed(tmp_path, age=3600)
    assert remove_stale_temporaries(str(tmp_path)) == []
    assert os.path.exists(part) and os.path.exists(ckpt)


def test_resumable_leftover_expires(tmp_path: Path) -> None:
    part, _ = _checkpointed(tmp_path, age=3600)
    removed = remove_stale_temporaries(str(tmp_path), resumable_max_age=60)
    assert removed == [part]
    assert os.listdir(tmp_path) == []


def test_leftover_with_unreadable_checkpoint_is_removed(tmp_path: Path) -> None:
    part, ckpt = _checkpointed(tmp_path, age=3600)
    with open(ckpt, "w") as handle:
        handle.write("garbage")
    assert remove_stale_temporaries(str(tmp_path)) == [part]
    assert os.listdir(tmp_path) == []


def test_checkpoint_without_its_part_is_removed(tmp_path: Path) -> None:
    part, ckpt = _checkpointed(tmp_path, age=3600)
    os.unlink(part)
    assert remove_stale_temporaries(str(tmp_path)) == [ckpt]
    assert os.listdir(tmp_path) == []
