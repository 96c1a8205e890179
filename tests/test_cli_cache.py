"""``dlmanager cache ls|prune|clean [DIR]``, on the files of a loopback server and a user's own."""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import re
import time

import pytest

from dlmanager import DownloadManager
from dlmanager.cli import main
from dlmanager.disk.layout import STATE_DIR
from dlmanager.disk.metadata import MetadataStore, read_info, utcnow
from tests.conftest import listing, read, temporaries
from tests.server import FaultServer, make_data
from tests.test_cli import lines, run_cli, run_in_ci

NOW = time.time()


def put(directory: str, name: str, size: int, used: float) -> str:
    """A file of *size* bytes last used *used* seconds ago (a user's own, unless downloaded)."""
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(b"x" * size)
    os.utime(path, (NOW - used, NOW - used))
    return path


def fetch(server: FaultServer, directory: str, name: str, size: int, used: float) -> str:
    """Download *name* (*size* bytes) into *directory*, last used *used* seconds ago."""
    server.add(f"/files/{name}", make_data(size, seed=size + len(name)))
    with DownloadManager(directory) as manager:
        manager.download(server.url(f"/files/{name}"), name)
    path = os.path.join(directory, name)
    assert read_info(path) is not None
    os.utime(path, (NOW - used, NOW - used))
    return path


def validated(path: str, ago: datetime.timedelta) -> None:
    """Record that the server confirmed the file at *path* *ago*."""
    assert MetadataStore().validated(path, utcnow() - ago) is not None
    fstat = os.stat(path)
    os.utime(path, ns=(fstat.st_atime_ns, fstat.st_mtime_ns))  # its use unchanged


@pytest.fixture
def cache(server: FaultServer, destdir: str) -> str:
    """Three files downloaded, used 3000, 2000 and 1000 seconds ago."""
    fetch(server, destdir, "old.bin", 100_000, used=3_000)
    fetch(server, destdir, "mid.bin", 100_000, used=2_000)
    fetch(server, destdir, "new.bin", 100_000, used=1_000)
    return destdir


# --- ls --------------------------------------------------------------------------------------


def test_ls_lists_least_recently_used_first(
    server: FaultServer, cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put(cache, ".new.bin.0123abcd.part", 5_000, used=0)
    validated(os.path.join(cache, "old.bin"), datetime.timedelta(days=2, hours=1))
    validated(os.path.join(cache, "mid.bin"), datetime.timedelta(hours=3, minutes=5))

    assert main(["cache", "ls", cache]) == 0

    out = lines(capsys.readouterr().out)
    assert out[0].split() == ["NAME", "SIZE", "AGE", "LAST", "USE", "URL"]
    assert [line.split()[0] for line in out[1:4]] == ["old.bin", "mid.bin", "new.bin"]
    assert out[1].split()[1:4] == ["97.7", "KiB", "2d"]
    assert out[2].split()[3] == "3h"
    assert re.fullmatch(r"\d+s", out[3].split()[3])
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(NOW - 3_000))
    assert used in out[1]
    assert out[1].endswith(f"  {server.url('/files/old.bin')}")
    assert out[4] == "3 files, 293.0 KiB"
    assert out[5].startswith("1 temporary file of unfinished downloads, 4.9 KiB")


def test_ls_shows_a_dash_for_a_users_own_file(
    cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put(cache, "notes.txt", 10, used=5_000)

    assert main(["cache", "ls", cache]) == 0

    out = lines(capsys.readouterr().out)
    assert out[1].split()[0] == "notes.txt"
    assert out[1].split()[3] == "-"  # no age
    assert out[1].endswith("  -")  # no URL
    assert out[5].startswith("4 files, 293.0 KiB; 1 not downloaded by dlmanager")
    assert "--include-foreign" in out[5]


def test_ls_json(server: FaultServer, cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    put(cache, "notes.txt", 10, used=5_000)
    validated(os.path.join(cache, "old.bin"), datetime.timedelta(hours=1))

    assert main(["cache", "ls", cache, "--json"]) == 0

    listing = json.loads(capsys.readouterr().out)
    assert listing["directory"] == cache
    assert [f["name"] for f in listing["files"]] == ["notes.txt", "old.bin", "mid.bin", "new.bin"]
    assert listing["total"] == 300_010
    assert listing["temporary_files"] == 0
    mine, old = listing["files"][:2]
    fields = {
        "name", "size", "last_use", "age", "downloaded_by_dlmanager", "url", "final_url", "etag",
        "last_modified", "checksum", "downloaded_at", "validated_at",
    }  # fmt: skip
    assert set(old) == set(mine) == fields
    assert old["downloaded_by_dlmanager"] is True
    assert old["url"] == old["final_url"] == server.url("/files/old.bin")
    assert old["size"] == 100_000
    assert old["etag"].startswith('"')
    assert old["last_use"] == pytest.approx(NOW - 3_000, abs=1)
    assert old["age"] == pytest.approx(3_600, abs=60)
    validated_at = datetime.datetime.fromisoformat(old["validated_at"])
    downloaded_at = datetime.datetime.fromisoformat(old["downloaded_at"])
    assert (downloaded_at - validated_at).total_seconds() == pytest.approx(3_600, abs=60)
    assert mine["downloaded_by_dlmanager"] is False
    assert mine["size"] == 10
    assert mine["url"] is mine["age"] is mine["validated_at"] is None


def test_ls_does_not_change_the_order_of_use(cache: str) -> None:
    before = {n: os.stat(os.path.join(cache, n)).st_atime for n in listing(cache)}

    assert main(["cache", "ls", cache]) == 0

    assert {n: os.stat(os.path.join(cache, n)).st_atime for n in listing(cache)} == before


def test_not_a_directory_is_bad_usage(
    tmp_path: os.PathLike[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = os.path.join(os.fspath(tmp_path), "nowhere")

    with pytest.raises(SystemExit) as excinfo:
        main(["cache", "ls", missing])

    assert excinfo.value.code == 2
    assert f"not a directory: {missing}" in capsys.readouterr().err


def test_ls_without_dir_lists_the_cache_directory(server: FaultServer, cache: str) -> None:
    result = run_in_ci(["cache", "ls"], env={"DLMANAGER_CACHE_DIR": cache})

    assert result.returncode == 0, result.stderr
    out = lines(result.stdout)
    assert out[0] == f"cache directory: {cache} (from DLMANAGER_CACHE_DIR)"
    assert out[1].split()[0] == "NAME"
    assert [line.split()[0] for line in out[2:5]] == ["old.bin", "mid.bin", "new.bin"]
    assert out[2].endswith(server.url("/files/old.bin"))

    result = run_in_ci(["cache", "ls", "--json"], env={"DLMANAGER_CACHE_DIR": cache})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["directory"] == cache


def test_a_default_directory_not_there_yet_is_said_so(tmp_path: os.PathLike[str]) -> None:
    absent = os.path.join(os.fspath(tmp_path), "cache")
    for command in (["ls"], ["prune", "--max-size", "1M"], ["clean"]):
        result = run_in_ci(["cache", *command], env={"DLMANAGER_CACHE_DIR": absent})

        assert result.returncode == 0, result.stderr
        assert lines(result.stdout)[0] == f"cache directory: {absent} (from DLMANAGER_CACHE_DIR)"
        assert lines(result.stdout)[1].startswith("it does not exist yet: nothing ")
        assert not os.path.exists(absent)  # and still is not

    result = run_in_ci(["cache", "ls", "--json"], env={"DLMANAGER_CACHE_DIR": absent})

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "directory": absent, "exists": False, "files": [], "total": 0,
        "temporary_files": 0, "temporary_size": 0,
    }  # fmt: skip


def test_the_default_directory_follows_xdg_cache_home(tmp_path: os.PathLike[str]) -> None:
    home = os.path.join(os.fspath(tmp_path), "xdg")
    result = run_in_ci(["cache", "ls"], env={"XDG_CACHE_HOME": home, "DLMANAGER_CACHE_DIR": ""})

    assert result.returncode == 0, result.stderr
    assert lines(result.stdout)[0] == f"cache directory: {home}/dlmanager (the default)"


# --- prune -----------------------------------------------------------------------------------


def test_prune_removes_the_least_recently_used(
    cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "prune", cache, "--max-size", "250K"]) == 0

    assert sorted(listing(cache)) == ["mid.bin", "new.bin"]
    out = lines(capsys.readouterr().out)
    assert out[0] == "removed old.bin (97.7 KiB)"
    assert out[-1] == "removed 1 file (97.7 KiB); kept 2 files, 195.3 KiB"


def test_prune_of_a_relative_dir_tells_what_it_removed(
    cache: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    put(cache, "mine.iso", 200_000, used=9_000)
    monkeypatch.chdir(os.path.dirname(cache))

    assert main(["cache", "prune", os.path.basename(cache), "--max-files", "1"]) == 0

    assert sorted(listing(cache)) == ["mine.iso", "new.bin"]
    assert lines(capsys.readouterr().out) == [
        "removed old.bin (97.7 KiB)",
        "removed mid.bin (97.7 KiB)",
        "removed 2 files (195.3 KiB); kept 1 file, 97.7 KiB; left alone 1 file dlmanager did "
        "not download, 195.3 KiB (--include-foreign counts them)",
    ]


def test_prune_keeps_a_file_pinned_by_another_user(cache: str) -> None:
    with DownloadManager(cache) as other, other.pin("old.bin"):
        assert main(["cache", "prune", cache, "--max-size", "250K"]) == 0

    assert sorted(listing(cache)) == ["new.bin", "old.bin"]


def test_prune_max_files(cache: str) -> None:
    assert main(["cache", "prune", cache, "--max-files", "1"]) == 0

    assert listing(cache) == ["new.bin"]


def test_prune_never_removes_a_users_own_file(
    cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    mine = put(cache, "mine.iso", 200_000, used=9_000)  # the oldest, and the biggest

    assert main(["cache", "prune", cache, "--max-size", "250K"]) == 0

    assert sorted(listing(cache)) == ["mid.bin", "mine.iso", "new.bin"]
    assert read(mine) == b"x" * 200_000
    out = lines(capsys.readouterr().out)
    assert out == [
        "removed old.bin (97.7 KiB)",
        "removed 1 file (97.7 KiB); kept 2 files, 195.3 KiB; left alone 1 file dlmanager did "
        "not download, 195.3 KiB (--include-foreign counts them)",
    ]


def test_prune_include_foreign_counts_and_removes_every_file(cache: str) -> None:
    put(cache, "mine.iso", 200_000, used=9_000)

    result = run_in_ci(["cache", "prune", cache, "--max-size", "250K", "--include-foreign"])

    assert result.returncode == 0, result.stderr
    assert sorted(listing(cache)) == ["mid.bin", "new.bin"]
    assert lines(result.stdout) == [
        "removed mine.iso (195.3 KiB)",
        "removed old.bin (97.7 KiB)",
        "removed 2 files (293.0 KiB); kept 2 files, 195.3 KiB",
    ]


def test_prune_removes_a_files_sidecar_with_it(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)  # a filesystem without extended attributes
    monkeypatch.setattr(os, "getxattr", refuse)
    fetch(server, destdir, "old.bin", 100_000, used=3_000)
    fetch(server, destdir, "new.bin", 100_000, used=1_000)
    assert sorted(listing(destdir)) == [
        ".new.bin.dlmanager.json",
        ".old.bin.dlmanager.json",
        "new.bin",
        "old.bin",
    ]

    assert main(["cache", "prune", destdir, "--max-files", "1"]) == 0

    assert sorted(listing(destdir)) == [".new.bin.dlmanager.json", "new.bin"]


def test_prune_needs_a_limit(cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["cache", "prune", cache])

    assert excinfo.value.code == 2
    assert "--max-size or --max-files" in capsys.readouterr().err
    assert len(listing(cache)) == 3


# --- clean -----------------------------------------------------------------------------------


def test_clean_removes_leftovers_and_stale_locks_only(
    cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put(cache, ".gone.bin.0123abcd.part", 50_000, used=60)
    put(cache, ".gone.bin.0123abcd.ckpt", 100, used=60)
    live = put(cache, ".live.bin.89abcdef.part", 7_000, used=60)
    held = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_EX)  # a running download writes it
        os.mkdir(os.path.join(cache, STATE_DIR))
        stale_lock = put(os.path.join(cache, STATE_DIR), "gone.bin.lock", 0, used=60)

        assert main(["cache", "clean", cache]) == 0
    finally:
        os.close(held)

    assert temporaries(cache) == [".live.bin.89abcdef.part"]
    assert sorted(listing(cache)) == [".live.bin.89abcdef.part", "mid.bin", "new.bin", "old.bin"]
    assert not os.path.exists(stale_lock)
    assert not os.path.exists(os.path.join(cache, STATE_DIR))  # removed once empty
    summary = lines(capsys.readouterr().out)[-1]
    assert summary.startswith("removed 2 temporary files (48.9 KiB), ")
    assert summary.endswith(" and 0 orphaned sidecars; 1 in use by running downloads kept")


def test_clean_removes_orphaned_sidecars(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)  # a filesystem without extended attributes
    monkeypatch.setattr(os, "getxattr", refuse)
    gone = fetch(server, destdir, "gone.bin", 1_000, used=60)
    replaced = fetch(server, destdir, "replaced.bin", 1_000, used=60)
    fetch(server, destdir, "kept.bin", 1_000, used=60)
    os.remove(gone)  # by hand: its sidecar stays
    os.remove(replaced)
    put(destdir, "replaced.bin", 1_001, used=60)  # another file under that name
    old = time.time() - 60
    for name in (".gone.bin.dlmanager.json", ".replaced.bin.dlmanager.json"):
        os.utime(os.path.join(destdir, name), (old, old))  # past the grace period

    result = run_in_ci(["cache", "clean", destdir])

    assert result.returncode == 0, result.stderr
    assert sorted(listing(destdir)) == [".kept.bin.dlmanager.json", "kept.bin", "replaced.bin"]
    assert lines(result.stdout) == [
        "removed .gone.bin.dlmanager.json",
        "removed .replaced.bin.dlmanager.json",
        "removed 0 temporary files (0 B), 0 stale lock files and 2 orphaned sidecars",
    ]


def test_cache_through_the_entry_point(cache: str) -> None:
    result = run_cli(["cache", "ls", cache])

    assert result.returncode == 0, result.stderr
    assert "3 files, 293.0 KiB" in result.stdout

    result = run_cli(["cache", "--help"])

    assert result.returncode == 0
    for command in ("ls", "prune", "clean"):
        assert command in result.stdout
