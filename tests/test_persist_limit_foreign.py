"""PersistLimit(include_foreign=False): only the files dlmanager downloaded count and go.

Every file of dlmanager's is downloaded from a loopback server by a manager (so it
carries its metadata as a real download does: extended attributes, or a sidecar
where the filesystem refuses them); a user's own file is written by hand.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from dlmanager import DownloadManager
from dlmanager.disk import mounts
from dlmanager.disk.metadata import read_info
from dlmanager.persist_limit import PersistLimit
from tests.conftest import listing
from tests.server import FaultServer, make_data
from tests.test_persist_limit_live import eventually

#: A fixed epoch for explicit access times: a file used at BASE + i.
BASE = 1_600_000_000


def fetch(server: FaultServer, directory: str, sizes: dict[str, int], first: int = 0) -> None:
    """Download files of *sizes* into *directory*; file i is then used at BASE + first + i."""
    for name, size in sizes.items():
        server.add(f"/{name}", make_data(size, seed=len(name) + size))
    with DownloadManager(directory) as manager:
        for name in sizes:
            manager.download(server.url(f"/{name}"), name)
    for i, name in enumerate(sizes, first):
        path = os.path.join(directory, name)
        assert read_info(path) is not None, f"{name} has no metadata"
        os.utime(path, (BASE + i, BASE + i))


def own(directory: str, name: str, size: int, used: float) -> str:
    """A user's own file of *size* bytes used at *used*."""
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(b"u" * size)
    os.utime(path, (used, used))
    return path


def names(limit: PersistLimit) -> list[str]:
    return [os.path.basename(file.path) for file in limit.files]


@pytest.fixture
def mixed(server: FaultServer, destdir: str, storage: str) -> str:
    """Three downloaded files of 10,000 bytes (a, b, c, in that order of use)
    and a user's own file, bigger and used before them all."""
    fetch(server, destdir, {"a.bin": 10_000, "b.bin": 10_000, "c.bin": 10_000})
    own(destdir, "mine.txt", 50_000, used=BASE - 100)
    return destdir


def test_the_default_counts_and_evicts_every_file_as_in_0_1_1(mixed: str) -> None:
    limit = PersistLimit(25_000, file_limit=1)
    assert limit.include_foreign

    limit.register_dir_content(mixed)

    assert names(limit) == ["mine.txt", "a.bin", "b.bin", "c.bin"]
    assert limit.total_size == 80_000
    removed = [os.path.basename(path) for path in limit.remove_old_files()]
    assert removed == ["mine.txt", "a.bin"]


def test_a_users_file_is_neither_counted_nor_evicted(mixed: str, storage: str) -> None:
    limit = PersistLimit(25_000, file_limit=1, include_foreign=False)

    limit.register_dir_content(mixed)

    assert names(limit) == ["a.bin", "b.bin", "c.bin"]
    assert limit.total_size == 30_000
    removed = [os.path.basename(path) for path in limit.remove_old_files()]
    assert removed == ["a.bin"]
    kept = {"b.bin", "c.bin", "mine.txt"}
    if storage == "sidecar":  # the evicted file's sidecar went with it
        kept |= {".b.bin.dlmanager.json", ".c.bin.dlmanager.json"}
    assert set(listing(mixed)) == kept


def test_max_files_counts_only_dlmanagers_files(mixed: str) -> None:
    limit = PersistLimit(0, max_files=2, include_foreign=False)
    limit.register_dir_content(mixed)

    assert [os.path.basename(path) for path in limit.remove_old_files()] == ["a.bin"]
    assert os.path.exists(os.path.join(mixed, "mine.txt"))


def test_register_file_and_touch_skip_a_users_file(mixed: str) -> None:
    limit = PersistLimit(1, file_limit=1, include_foreign=False)
    mine = os.path.join(mixed, "mine.txt")

    limit.register_file(mine)
    limit.touch(mine)
    limit.register_file(os.path.join(mixed, "a.bin"))

    assert names(limit) == ["a.bin"]
    assert os.stat(mine).st_atime > BASE  # the use is recorded on disk all the same


def test_a_file_replaced_by_a_users_own_is_forgotten(mixed: str) -> None:
    limit = PersistLimit(1, file_limit=1, include_foreign=False)
    limit.register_dir_content(mixed)
    path = os.path.join(mixed, "a.bin")
    os.remove(path)
    own(mixed, "a.bin", 10_000, used=BASE)

    limit.touch(path)

    assert names(limit) == ["b.bin", "c.bin"]


def test_a_file_replaced_since_it_was_registered_is_not_evicted(mixed: str) -> None:
    limit = PersistLimit(1, file_limit=1, include_foreign=False)
    limit.register_dir_content(mixed)
    os.remove(os.path.join(mixed, "a.bin"))
    own(mixed, "a.bin", 10_000, used=BASE)  # the index does not know yet

    removed = [os.path.basename(path) for path in limit.remove_old_files()]

    assert removed == ["b.bin"]
    assert os.path.exists(os.path.join(mixed, "a.bin"))


def test_a_downloaded_file_edited_by_hand_is_the_users(mixed: str) -> None:
    with open(os.path.join(mixed, "a.bin"), "ab") as handle:
        handle.write(b"my notes")
    limit = PersistLimit(1, file_limit=1, include_foreign=False)
    limit.register_dir_content(mixed)

    assert names(limit) == ["b.bin", "c.bin"]


def test_rescans_without_an_observer_skip_a_users_file(
    mixed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mounts, "remote_filesystem", lambda directory: "nfs")
    with PersistLimit(25_000, file_limit=1, include_foreign=False) as limit:
        limit.watch(mixed)
        assert not limit.watching
        own(mixed, "later.txt", 90_000, used=BASE - 50)

        removed = [os.path.basename(path) for path in limit.remove_old_files()]

    assert removed == ["a.bin"]
    assert sorted(names(limit)) == ["b.bin", "c.bin"]


@pytest.fixture
def watched(mixed: str) -> Iterator[PersistLimit]:
    if not sys.platform.startswith("linux"):
        pytest.skip("live accounting is verified with inotify")
    with PersistLimit(25_000, file_limit=1, include_foreign=False) as limit:
        limit.watch(mixed)
        assert limit.watching
        yield limit


def test_the_live_watch_skips_a_users_file(
    server: FaultServer, mixed: str, watched: PersistLimit
) -> None:
    own(mixed, "later.txt", 90_000, used=BASE - 50)
    fetch(server, mixed, {"d.bin": 10_000}, first=3)  # a download after the user's file
    eventually(lambda: names(watched)[-1:] == ["d.bin"], "the download is registered")

    assert "later.txt" not in names(watched)
    assert watched.total_size == 40_000
    removed = [os.path.basename(path) for path in watched.remove_old_files()]
    assert removed == ["a.bin", "b.bin"]
    assert {"later.txt", "mine.txt"} <= set(listing(mixed))


def test_include_foreign_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="include_foreign must be True or False, not 'no'"):
        PersistLimit(1000, include_foreign="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        PersistLimit(1000, 5, None, None, False)  # type: ignore[misc]  # keyword-only
    with pytest.raises(AttributeError):
        PersistLimit(1000).include_foreign = False  # type: ignore[misc]
