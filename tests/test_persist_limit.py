"""Unit tests of PersistLimit: registration, least-recently-used eviction, touch."""

from __future__ import annotations

import gc
import glob
import logging
import os
import threading
import time
from pathlib import Path

import pytest

from dlmanager.disk.layout import temporary_name
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
    assert limit.max_files is None
    assert limit.enabled
    assert repr(limit) == (
        "PersistLimit(size_limit=1000, file_limit=5, max_files=None, include_foreign=True, "
        "files=0, total_size=0)"
    )
    assert repr(PersistLimit(0, max_files=3)) == (
        "PersistLimit(size_limit=0, file_limit=5, max_files=3, include_foreign=True, files=0, "
        "total_size=0)"
    )


@pytest.mark.parametrize(
    ("size_limit", "file_limit"),
    [(-1, 5), (100, -1), (1.5, 5), (100, 2.0), (True, 5), (100, False), ("100", 5), (None, 5)],
)
def test_invalid_limits(size_limit: object, file_limit: object) -> None:
    with pytest.raises(ValueError, match="limit must be an integer >= 0"):
        PersistLimit(size_limit, file_limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_files", [0, -1, 1.5, True, False, "3"])
def test_invalid_max_files(max_files: object) -> None:
    with pytest.raises(ValueError, match="max_files must be an integer >= 1 or None"):
        PersistLimit(1000, max_files=max_files)  # type: ignore[arg-type]


def test_max_files_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        PersistLimit(1000, 5, None, 3)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("size_limit", "file_limit", "max_files", "enabled"),
    [
        (1000, 5, None, True),
        (0, 5, None, False),
        (1000, 0, None, False),
        (0, 0, None, False),
        (0, 5, 3, True),
        (1000, 0, 3, True),
        (0, 0, 1, True),
    ],
)
def test_enabled(size_limit: int, file_limit: int, max_files: int | None, enabled: bool) -> None:
    limit = PersistLimit(size_limit, file_limit, max_files=max_files)
    assert limit.enabled is enabled
    with pytest.raises(AttributeError):
        limit.enabled = not enabled  # type: ignore[misc]


def test_enabled_follows_the_limits() -> None:
    limit = PersistLimit(0)
    assert not limit.enabled
    limit.max_files = 2
    assert limit.enabled
    limit.max_files = None
    limit.size_limit = 10
    assert limit.enabled


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


# -- max_files -----------------------------------------------------------------------------


def sized_files(tmp_path: Path, sizes: list[int]) -> list[str]:
    """Files of *sizes* bytes, least recently used first."""
    return [make(tmp_path, f"{i}.bin", size, BASE + i) for i, size in enumerate(sizes)]


def registered(limit: PersistLimit, files: list[str]) -> PersistLimit:
    for path in files:
        limit.register_file(path)
    return limit


def test_max_files_alone_evicts_by_count(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A size limit of 0 turns the size rule off, not the count rule; sizes do not matter.
    files = sized_files(tmp_path, [1, 500, 2, 300, 3])
    limit = registered(PersistLimit(0, max_files=3), files)
    caplog.set_level(logging.INFO, logger="dlmanager.persist_limit")
    assert limit.remove_old_files() == files[:2]
    assert [os.path.exists(path) for path in files] == [False, False, True, True, True]
    assert paths(limit) == files[2:]
    assert limit.total_size == 305
    assert limit.remove_old_files() == []
    evicted = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Evicted")]
    assert evicted == [
        f"Evicted {files[0]} (1 bytes): 5 files, more than max_files=3",
        f"Evicted {files[1]} (500 bytes): 4 files, more than max_files=3",
    ]


def test_max_files_follows_the_use_order(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [10, 10, 10])
    limit = registered(PersistLimit(0, max_files=2), files)
    limit.touch(files[0])
    assert limit.remove_old_files() == [files[1]]
    assert paths(limit) == [files[2], files[0]]


def test_max_files_is_a_ceiling_below_file_limit(tmp_path: Path) -> None:
    # file_limit (default 5) is the size rule's floor: it does not hold files
    # back from the count rule, so max_files may be lower.
    files = sized_files(tmp_path, [10] * 6)
    limit = registered(PersistLimit(10**9, max_files=2), files)
    assert limit.file_limit == 5
    assert limit.remove_old_files() == files[:4]
    assert paths(limit) == files[4:]


def test_file_limit_still_floors_the_size_rule_with_max_files(tmp_path: Path) -> None:
    # Under the ceiling, file_limit keeps its 0.1.1 meaning for the size rule.
    files = sized_files(tmp_path, [100] * 6)
    limit = registered(PersistLimit(1, file_limit=3, max_files=4), files)
    assert limit.remove_old_files() == files[:3]
    assert paths(limit) == files[3:]


@pytest.mark.parametrize(
    ("size_limit", "max_files", "kept"),
    [
        (250, 3, 2),  # the count rule takes 2, then the size rule 1 more
        (10_000, 3, 3),  # the count rule alone
        (150, 4, 1),  # the size rule alone: the count rule would take 1
    ],
)
def test_max_files_with_a_size_limit(
    tmp_path: Path, size_limit: int, max_files: int, kept: int
) -> None:
    files = sized_files(tmp_path, [100] * 5)
    limit = registered(PersistLimit(size_limit, file_limit=1, max_files=max_files), files)
    assert limit.remove_old_files() == files[: 5 - kept]
    assert paths(limit) == files[5 - kept :]


def test_max_files_with_the_size_rule_off_by_file_limit(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [100] * 4)
    limit = registered(PersistLimit(1, file_limit=0, max_files=3), files)
    assert limit.remove_old_files() == files[:1]  # only the count rule applies


def test_max_files_keeps_protected_files_and_counts_them(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [10] * 5)
    limit = registered(PersistLimit(0, max_files=2, protect=lambda p: p == files[0]), files)
    # 5 > 2: files[0] is protected, so files[1], then files[2], then files[3] go.
    assert limit.remove_old_files() == files[1:4]
    assert paths(limit) == [files[0], files[4]]
    assert os.path.exists(files[0])
    # Unprotected, it is the least recently used again, and within the count.
    limit.protect = None
    assert limit.remove_old_files() == []
    limit.max_files = 1
    assert limit.remove_old_files() == [files[0]]


def test_max_files_when_every_file_is_protected(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [10] * 4)
    limit = registered(PersistLimit(0, max_files=1), files)
    assert limit.remove_old_files(protect=lambda path: True) == []
    assert paths(limit) == files
    assert limit.remove_old_files() == files[:3]  # the heap is intact afterwards


def test_reservations_do_not_count_toward_max_files(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [10] * 3)
    limit = registered(PersistLimit(0, max_files=3), files)
    limit.reserve("download in flight", 10**9)
    limit.reserve(str(tmp_path / "next.bin"), 10**9)
    assert limit.remove_old_files() == []
    # With a size rule, they count toward the size only.
    limit.size_limit, limit.file_limit = 10**9, 1
    assert limit.remove_old_files() == files[:2]


def test_max_files_set_on_a_limit_that_was_off(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [10] * 3)
    limit = registered(PersistLimit(0), files)
    assert limit.remove_old_files() == []
    limit.max_files = 1
    assert limit.remove_old_files() == files[:2]


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


def test_touch_records_the_access_time_as_stored(tmp_path: Path) -> None:
    # The index holds what other processes see on disk; the mtime is kept to the ns.
    a = make(tmp_path, "a.bin", 100, BASE)
    os.utime(a, ns=(BASE * 10**9, BASE * 10**9 + 123))
    limit = PersistLimit(1000)
    limit.touch(a)
    [file] = limit.files
    st = os.stat(a)
    assert file.stat.st_atime_ns == st.st_atime_ns
    assert st.st_mtime_ns == BASE * 10**9 + 123


# -- protect -------------------------------------------------------------------------------


def test_protect_skips_a_file_and_goes_on(tmp_path: Path) -> None:
    limit, (b, d, c, a) = four_files(tmp_path)
    asked: list[str] = []

    def protect(path: str) -> bool:
        asked.append(path)
        return path == b

    limit.protect = protect
    # 400 >= 250: b is protected, d goes; 300 >= 250: c goes; 200 < 250.
    assert limit.remove_old_files() == [d, c]
    assert asked == [b, d, c]
    assert os.path.exists(b)
    assert paths(limit) == [b, a]
    assert limit.total_size == 200  # the protected file still counts
    # Once unprotected, it is the least recently used again.
    limit.protect = None
    limit.size_limit = 150
    assert limit.remove_old_files() == [b]


def test_protect_keyword(tmp_path: Path) -> None:
    files = [make(tmp_path, f"{i}.bin", 100, BASE + i) for i in range(3)]
    limit = PersistLimit(150, file_limit=1, protect=lambda path: True)
    for path in files:
        limit.register_file(path)
    assert limit.remove_old_files() == []
    assert paths(limit) == files
    assert limit.total_size == 300
    assert all(os.path.exists(path) for path in files)
    with pytest.raises(TypeError):
        PersistLimit(150, 1, lambda path: True)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="protect must be callable"):
        PersistLimit(150, protect="yes")  # type: ignore[arg-type]


def test_protect_that_fails_keeps_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    limit, (b, d, c, _) = four_files(tmp_path)

    def protect(path: str) -> bool:
        if path == b:
            raise RuntimeError("cannot tell")
        return False

    limit.protect = protect
    assert limit.remove_old_files() == [d, c]
    assert os.path.exists(b)
    assert "cannot tell" in caplog.text


def test_protect_may_use_the_limit(tmp_path: Path) -> None:
    # protect() runs without the index lock: it may call back, even from another thread.
    import threading

    limit, (b, d, c, a) = four_files(tmp_path)

    def protect(path: str) -> bool:
        worker = threading.Thread(target=limit.touch, args=(c,))
        worker.start()
        worker.join()  # would never end if the index lock were held here
        assert limit.files  # and it may read the index
        return path == b

    limit.protect = protect
    assert limit.remove_old_files() == [d, a]  # c was used meanwhile
    assert paths(limit) == [b, c]


# -- reservations --------------------------------------------------------------------------


def test_reserve_and_release() -> None:
    limit = PersistLimit(1000)
    assert limit.reserved == 0
    limit.reserve("x", 100)
    limit.reserve("y", 50)
    assert limit.reserved == 150
    limit.reserve("x", 10)  # replaces
    assert limit.reserved == 60
    limit.release("x")
    limit.release("x")  # unknown now: nothing
    limit.release("never reserved")
    assert limit.reserved == 50
    assert limit.total_size == 0
    for bad in (-1, 1.5, True, "1", None):
        with pytest.raises(ValueError, match="nbytes must be an integer >= 0"):
            limit.reserve("z", bad)  # type: ignore[arg-type]
    assert limit.reserved == 50


def test_reserved_bytes_make_eviction_earlier(tmp_path: Path) -> None:
    limit, (b, d, c, a) = four_files(tmp_path)
    limit.size_limit = 450
    assert limit.remove_old_files() == []  # 400 < 450
    limit.reserve("dl", 60)
    assert limit.remove_old_files() == [b]  # 460 >= 450, then 360 < 450
    assert limit.total_size == 300  # the files only
    limit.reserve("dl", 250)
    assert limit.remove_old_files() == [d, c]  # 550, 450, then 350
    limit.release("dl")
    assert limit.remove_old_files() == []
    assert paths(limit) == [a]


def test_reservation_ends_when_its_path_is_registered(tmp_path: Path) -> None:
    limit = PersistLimit(1000)
    dest = str(tmp_path / "a.bin")
    limit.reserve(dest, 100)
    limit.reserve("other", 7)
    make(tmp_path, "a.bin", 100, BASE)
    limit.touch(dest)
    assert limit.total_size == 100
    assert limit.reserved == 7  # counted once, as the file
    limit.release(dest)
    assert limit.reserved == 7


def test_count_in_flight_is_read_live_at_each_check(tmp_path: Path) -> None:
    limit, (b, d, c, a) = four_files(tmp_path)
    limit.size_limit = 450
    in_flight = [0]
    calls: list[int] = []

    def provider() -> int:
        calls.append(in_flight[0])
        return in_flight[0]

    limit.count_in_flight(provider)
    assert limit.remove_old_files() == []  # 400 + 0 < 450
    in_flight[0] = 60
    assert limit.reserved == 60
    limit.reserve("own", 40)
    assert limit.reserved == 100  # in addition to reserve()
    calls.clear()
    in_flight[0] = 160
    assert limit.remove_old_files() == [b, d]  # 400 + 200 >= 450, 300 + 200, then 200 + 200
    assert calls == [160]  # once per check, however many files go
    in_flight[0] = 0
    assert limit.reserved == 40
    limit.count_in_flight(None)
    in_flight[0] = 10**12
    assert limit.reserved == 40
    assert limit.remove_old_files() == []  # 200 + 40 < 450
    assert paths(limit) == [c, a]


def test_count_in_flight_counts_toward_the_size_rule_only(tmp_path: Path) -> None:
    files = sized_files(tmp_path, [1, 1, 1])
    limit = registered(PersistLimit(0, max_files=3), files)
    limit.count_in_flight(lambda: 10**12)
    assert limit.remove_old_files() == []


def test_count_in_flight_is_called_without_the_lock(tmp_path: Path) -> None:
    import threading

    limit, _ = four_files(tmp_path)
    limit.size_limit = 10**6  # nothing goes: only the check is made
    extra = make(tmp_path, "extra.bin", 1, BASE)

    def provider() -> int:
        # Another thread uses the limit meanwhile: it would wait for a lock held here.
        thread = threading.Thread(target=limit.register_file, args=(extra,))
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
        return 0

    limit.count_in_flight(provider)
    limit.remove_old_files()
    assert extra in paths(limit)


def test_count_in_flight_errors(tmp_path: Path) -> None:
    limit, _ = four_files(tmp_path)
    with pytest.raises(TypeError, match="provider must be callable or None"):
        limit.count_in_flight(42)  # type: ignore[arg-type]
    limit.count_in_flight(lambda: -1)
    with pytest.raises(ValueError, match="in-flight bytes must be an integer >= 0, not -1"):
        limit.remove_old_files()
    with pytest.raises(ValueError, match="in-flight bytes"):
        limit.reserved  # noqa: B018
    assert len(limit.files) == 4  # nothing was removed


# -- scanning ------------------------------------------------------------------------------


def test_register_dir_content_scans_without_globbing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make(tmp_path, "a.bin", 10, BASE + 1)
    (tmp_path / "target.bin").write_bytes(b"y" * 20)
    os.utime(tmp_path / "target.bin", (BASE, BASE))
    link = tmp_path / "link.bin"
    link.symlink_to(tmp_path / "target.bin")  # like glob + os.stat: counted
    (tmp_path / "broken").symlink_to(tmp_path / "missing")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "fifo")

    def no_glob(*args: object, **kwargs: object) -> list[str]:
        raise AssertionError("glob.glob called")

    monkeypatch.setattr("glob.glob", no_glob)
    limit = PersistLimit(1000)
    limit.register_dir_content(str(tmp_path))
    assert sorted(paths(limit)) == sorted([a, str(link), str(tmp_path / "target.bin")])
    assert limit.total_size == 50
    monkeypatch.undo()
    globbed = PersistLimit(1000)
    for path in glob.glob(os.path.join(glob.escape(str(tmp_path)), "*")):
        globbed.register_file(path)
    assert sorted(paths(globbed)) == sorted(paths(limit))


def test_register_dir_content_of_a_missing_directory(tmp_path: Path) -> None:
    limit = PersistLimit(1000)
    limit.register_dir_content(str(tmp_path / "missing"))
    assert limit.files == []


@pytest.mark.parametrize("enabled", [True, False])
def test_scanning_restores_the_garbage_collector(tmp_path: Path, enabled: bool) -> None:
    make(tmp_path, "a.bin", 10, BASE)
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        PersistLimit(1000).register_dir_content(str(tmp_path))
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_refresh_without_a_watched_directory_does_nothing(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 10, BASE)
    limit = PersistLimit(1000)
    limit.register_file(a)
    os.remove(a)
    limit.refresh()
    assert paths(limit) == [a]
    assert not limit.watching
    limit.close()  # nothing to close


def test_unchanged_registration_keeps_the_order(tmp_path: Path) -> None:
    # Same access time: the registration order decides, and registering an
    # unchanged file again (an observer event for our own touch) keeps it.
    a = make(tmp_path, "a.bin", 100, BASE)
    b = make(tmp_path, "b.bin", 100, BASE)
    limit = PersistLimit(1000)
    limit.register_file(a)
    limit.register_file(b)
    limit.register_file(a)
    assert paths(limit) == [a, b]


def test_concurrent_touches_and_evictions(tmp_path: Path) -> None:
    import threading

    files = [make(tmp_path, f"{i}.bin", 10, BASE + i) for i in range(200)]
    limit = PersistLimit(1000, file_limit=1)
    limit.register_dir_content(str(tmp_path))
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for i in range(300):
                limit.touch(files[(i * 7 + offset) % len(files)])
                limit.remove_old_files()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    present = [path for path in files if os.path.exists(path)]
    assert sorted(paths(limit)) == sorted(present)
    assert limit.total_size == 10 * len(present) < 1000


def test_protect_for_one_call(tmp_path: Path) -> None:
    # Each call may bring its own protect (holding pins until it returns), in
    # addition to the attribute; concurrent calls do not see each other's.
    limit, (b, d, c, a) = four_files(tmp_path)
    limit.protect = lambda path: path == b
    # c goes; a, the most recently used, is the file file_limit keeps.
    assert limit.remove_old_files(protect=lambda path: path == d) == [c]
    assert paths(limit) == [b, d, a]
    assert limit.protect(b)


def test_a_protected_file_does_not_take_the_place_of_a_recent_one(tmp_path: Path) -> None:
    # file_limit keeps the most recently used files: an old pinned file kept
    # anyway does not make the newest one go, even over the size limit.
    old = make(tmp_path, "old.bin", 100, BASE + 1)
    new = make(tmp_path, "new.bin", 100, BASE + 2)
    limit = PersistLimit(150, file_limit=1, protect=lambda path: path == old)
    limit.register_dir_content(str(tmp_path))
    assert limit.remove_old_files() == []
    assert limit.total_size == 200
    newer = make(tmp_path, "newer.bin", 100, BASE + 3)
    limit.register_file(newer)
    assert limit.remove_old_files() == [new]
    assert paths(limit) == [old, newer]


def test_a_protected_recent_file_counts_as_kept(tmp_path: Path) -> None:
    # The most recently used file is protected and is the one file_limit keeps.
    old = make(tmp_path, "old.bin", 100, BASE + 1)
    new = make(tmp_path, "new.bin", 100, BASE + 2)
    limit = PersistLimit(150, file_limit=1, protect=lambda path: path == new)
    limit.register_dir_content(str(tmp_path))
    assert limit.remove_old_files() == [old]
    assert paths(limit) == [new]


def test_evictions_at_once_remove_only_what_is_needed_in_lru_order(tmp_path: Path) -> None:
    """Downloads finishing together evict together: between them, exactly the
    least recently used files that bring the directory under the limit go."""
    directory = str(tmp_path)
    for i in range(10):
        path = os.path.join(directory, f"f{i}")
        with open(path, "wb") as handle:
            handle.write(b"x" * 1000)
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))
    barrier = threading.Barrier(8)

    def slow_protect(path: str) -> bool:
        time.sleep(0.01)  # the window in which another thread takes a candidate
        return False

    limit = PersistLimit(6500, file_limit=1, protect=slow_protect)
    limit.register_dir_content(directory)
    removed: list[str] = []

    def evict() -> None:
        barrier.wait()
        removed.extend(limit.remove_old_files())

    threads = [threading.Thread(target=evict) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(os.path.basename(p) for p in removed) == ["f0", "f1", "f2", "f3"]
    assert sorted(os.listdir(directory)) == [f"f{i}" for i in range(4, 10)]
