"""Unit tests of PersistLimit: registration, least-recently-used eviction, touch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from dlmanager.paths import temporary_name
from dlmanager.persist_limit import File, PersistLimit

#: A fixed epoch for explicit access times: file i is used at BASE + i.
BASE = 1_600_000_000


def make(directory: Path, name: str, size: int, atime: float) -> str:
    """Create *name* with *size* bytes, used (atime) and modified (mtime) at *atime*."""
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (atime, atime))
    return str(path)


def paths(limit: PersistLimit) -> list[str]:
    return [file.path for file in limit.files]


# -- construction --------------------------------------------------------------------------


def test_defaults() -> None:
    limit = PersistLimit(1000)
    assert limit.size_limit == 1000
    assert limit.file_limit == 5
    assert limit.files == []
    assert limit.total_size == 0
    assert repr(limit) == "PersistLimit(size_limit=1000, file_limit=5, files=0, total_size=0)"


@pytest.mark.parametrize(
    ("size_limit", "file_limit"),
    [(-1, 5), (100, -1), (1.5, 5), (100, 2.0), (True, 5), (100, False), ("100", 5), (None, 5)],
)
def test_invalid_limits(size_limit: object, file_limit: object) -> None:
    with pytest.raises(ValueError, match="limit must be an integer >= 0"):
        PersistLimit(size_limit, file_limit)  # type: ignore[arg-type]


# -- registration --------------------------------------------------------------------------


def test_register_file(tmp_path: Path) -> None:
    path = make(tmp_path, "a.bin", 100, BASE)
    limit = PersistLimit(1000)
    limit.register_file(path)
    assert limit.total_size == 100
    [file] = limit.files
    assert isinstance(file, File)
    assert file.path == path
    assert file.stat.st_size == 100
    assert file.stat.st_atime == BASE


def test_registering_twice_counts_once(tmp_path: Path) -> None:
    path = make(tmp_path, "a.bin", 100, BASE)
    limit = PersistLimit(1000)
    limit.register_file(path)
    limit.register_file(path)
    assert limit.total_size == 100
    assert paths(limit) == [path]


def test_registering_again_refreshes_size_and_use(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    limit = PersistLimit(1000)
    limit.register_file(a)
    limit.register_file(b)
    make(tmp_path, "a.bin", 300, BASE + 3)
    limit.register_file(a)
    assert limit.total_size == 400
    assert paths(limit) == [b, a]


@pytest.mark.parametrize(
    "name",
    [
        temporary_name("a.bin"),
        ".a.bin.0123abcd.part",
    ],
)
def test_own_files_are_not_registered(tmp_path: Path, name: str) -> None:
    path = make(tmp_path, name, 100, BASE)
    limit = PersistLimit(1000)
    limit.register_file(path)
    assert limit.files == []
    assert limit.total_size == 0


def test_touch_does_not_register_own_files(tmp_path: Path) -> None:
    # "never registered, counted or removed" holds for touch() too.
    path = make(tmp_path, temporary_name("a.bin"), 100, BASE)
    limit = PersistLimit(1000)
    limit.touch(path)
    assert limit.files == []
    assert limit.total_size == 0


def test_missing_and_non_regular_paths_are_not_registered(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    limit = PersistLimit(1000)
    limit.register_file(str(tmp_path / "missing.bin"))
    limit.register_file(str(tmp_path / "sub"))
    limit.touch(str(tmp_path / "missing.bin"))
    limit.touch(str(tmp_path / "sub"))
    assert limit.files == []
    assert limit.total_size == 0


def test_register_dir_content(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 10, BASE + 2)
    b = make(tmp_path, "b.txt", 20, BASE + 1)
    make(tmp_path, temporary_name("c.bin"), 40, BASE)
    make(tmp_path, os.path.join(".dlmanager", "state"), 80, BASE)
    make(tmp_path, os.path.join("sub", "nested.bin"), 160, BASE)
    limit = PersistLimit(1000)
    limit.register_dir_content(str(tmp_path))
    assert paths(limit) == [b, a]
    assert limit.total_size == 30


def test_register_dir_content_pattern(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 10, BASE)
    make(tmp_path, "b.txt", 20, BASE)
    limit = PersistLimit(1000)
    limit.register_dir_content(str(tmp_path), "*.bin")
    assert paths(limit) == [a]


@pytest.mark.parametrize("dirname", ["a[1]", "what?", "star*dir", "[!x]", "**", "br{a,b}"])
def test_register_dir_content_with_glob_characters(tmp_path: Path, dirname: str) -> None:
    directory = tmp_path / dirname
    a = make(directory, "a.bin", 10, BASE + 1)
    b = make(directory, "b.bin", 20, BASE)
    # A sibling that the unescaped pattern would match must not be registered.
    make(tmp_path, os.path.join("a1", "other.bin"), 40, BASE)
    limit = PersistLimit(1000)
    limit.register_dir_content(str(directory))
    assert paths(limit) == [b, a]
    assert limit.total_size == 30


def test_hidden_destination_directory_is_counted(tmp_path: Path) -> None:
    # Hidden names inside the directory are skipped, not a hidden directory itself.
    destdir = tmp_path / ".dlmanager"
    a = make(destdir, "a.bin", 100, BASE)
    limit = PersistLimit(1000)
    limit.register_dir_content(str(destdir))
    assert paths(limit) == [a]


def test_files_are_least_recently_used_first(tmp_path: Path) -> None:
    c = make(tmp_path, "c.bin", 1, BASE + 1)
    a = make(tmp_path, "a.bin", 1, BASE + 3)
    b = make(tmp_path, "b.bin", 1, BASE + 2)
    limit = PersistLimit(1000)
    for path in (a, b, c):
        limit.register_file(path)
    assert paths(limit) == [c, b, a]


# -- eviction ------------------------------------------------------------------------------


def four_files(tmp_path: Path) -> tuple[PersistLimit, list[str]]:
    """Four 100-byte files registered in name order; their use order is b, d, c, a."""
    atimes = {"a": BASE + 4, "b": BASE + 1, "c": BASE + 3, "d": BASE + 2}
    created = {name: make(tmp_path, f"{name}.bin", 100, at) for name, at in atimes.items()}
    limit = PersistLimit(250, file_limit=1)
    for path in created.values():
        limit.register_file(path)
    return limit, [created[name] for name in "bdca"]


def test_remove_old_files_evicts_least_recently_used_first(tmp_path: Path) -> None:
    limit, (b, d, c, a) = four_files(tmp_path)
    assert limit.remove_old_files() == [b, d]
    assert not os.path.exists(b)
    assert not os.path.exists(d)
    assert os.path.exists(c)
    assert os.path.exists(a)
    assert paths(limit) == [c, a]
    assert limit.total_size == 200
    assert limit.remove_old_files() == []


def test_remove_old_files_continues_while_total_equals_the_limit(tmp_path: Path) -> None:
    files = [make(tmp_path, f"{i}.bin", 100, BASE + i) for i in range(3)]
    limit = PersistLimit(200, file_limit=1)
    for path in files:
        limit.register_file(path)
    # 300 >= 200, then 200 >= 200: removal stops only once the total is below the limit.
    assert limit.remove_old_files() == files[:2]
    assert limit.total_size == 100


def test_remove_old_files_keeps_file_limit_files(tmp_path: Path) -> None:
    files = [make(tmp_path, f"{i}.bin", 100, BASE + i) for i in range(5)]
    limit = PersistLimit(1, file_limit=3)
    for path in files:
        limit.register_file(path)
    assert limit.remove_old_files() == files[:2]
    assert paths(limit) == files[2:]
    assert [os.path.exists(path) for path in files] == [False, False, True, True, True]
    assert limit.remove_old_files() == []


def test_nothing_is_removed_under_the_size_limit(tmp_path: Path) -> None:
    files = [make(tmp_path, f"{i}.bin", 100, BASE + i) for i in range(10)]
    limit = PersistLimit(1001, file_limit=1)
    for path in files:
        limit.register_file(path)
    assert limit.remove_old_files() == []
    assert all(os.path.exists(path) for path in files)
    assert limit.total_size == 1000


@pytest.mark.parametrize(("size_limit", "file_limit"), [(0, 1), (1, 0), (0, 0)])
def test_zero_limit_disables_removal(tmp_path: Path, size_limit: int, file_limit: int) -> None:
    files = [make(tmp_path, f"{i}.bin", 100, BASE + i) for i in range(10)]
    limit = PersistLimit(size_limit, file_limit)
    for path in files:
        limit.register_file(path)
    assert limit.remove_old_files() == []
    assert all(os.path.exists(path) for path in files)
    assert paths(limit) == files


def test_file_deleted_behind_its_back(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    c = make(tmp_path, "c.bin", 100, BASE + 3)
    limit = PersistLimit(150, file_limit=1)
    for path in (a, b, c):
        limit.register_file(path)
    os.remove(a)
    assert limit.remove_old_files() == [a, b]
    assert not os.path.exists(b)
    assert os.path.exists(c)
    assert paths(limit) == [c]
    assert limit.total_size == 100


def test_repeated_registration_keeps_the_order(tmp_path: Path) -> None:
    # Re-registering leaves superseded heap entries behind; many of them must
    # not disturb the order (nor trigger removing a file twice).
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    c = make(tmp_path, "c.bin", 100, BASE + 3)
    limit = PersistLimit(150, file_limit=1)
    for path in (a, b, c):
        limit.register_file(path)
    for i in range(200):
        os.utime(b, (BASE + 10 + i, BASE))
        limit.register_file(b)
    assert limit.total_size == 300
    assert paths(limit) == [a, c, b]
    assert limit.remove_old_files() == [a, c]
    assert paths(limit) == [b]
    assert os.path.exists(b)


# -- touch ---------------------------------------------------------------------------------


def test_touch_makes_the_file_most_recently_used(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    c = make(tmp_path, "c.bin", 100, BASE + 3)
    limit = PersistLimit(150, file_limit=1)
    for path in (a, b, c):
        limit.register_file(path)
    before = time.time()
    limit.touch(a)
    after = time.time()
    assert paths(limit) == [b, c, a]
    assert limit.total_size == 300
    # The use is recorded on disk (atime); the modification time is kept.
    st = os.stat(a)
    assert before - 0.01 <= st.st_atime <= after + 0.01
    assert st.st_mtime == BASE + 1
    assert limit.remove_old_files() == [b, c]
    assert os.path.exists(a)


def test_touch_registers_an_unregistered_file(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 50, BASE + 2)
    limit = PersistLimit(1000)
    limit.register_file(b)
    limit.touch(a)
    assert paths(limit) == [b, a]
    assert limit.total_size == 150


def test_touch_twice_counts_once(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE)
    limit = PersistLimit(1000)
    limit.touch(a)
    limit.touch(a)
    limit.register_file(a)
    assert paths(limit) == [a]
    assert limit.total_size == 100


def test_touch_of_a_deleted_file_is_harmless(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    limit = PersistLimit(150, file_limit=1)
    limit.register_file(a)
    limit.register_file(b)
    os.remove(b)
    limit.touch(b)
    assert not os.path.exists(b)
    assert limit.remove_old_files() == [a]
    assert not os.path.exists(a)
