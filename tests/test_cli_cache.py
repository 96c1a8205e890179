"""``dlmanager cache ls|prune|clean DIR``."""

from __future__ import annotations

import fcntl
import json
import os
import time

import pytest

from dlmanager import DownloadManager
from dlmanager.cli import main
from dlmanager.disk.layout import STATE_DIR
from tests.conftest import listing, temporaries
from tests.test_cli import lines, run_cli

NOW = time.time()


def put(directory: str, name: str, size: int, used: float) -> str:
    """A file of *size* bytes last used *used* seconds ago."""
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(b"x" * size)
    os.utime(path, (NOW - used, NOW - used))
    return path


@pytest.fixture
def cache(destdir: str) -> str:
    put(destdir, "old.bin", 100_000, used=3_000)
    put(destdir, "mid.bin", 100_000, used=2_000)
    put(destdir, "new.bin", 100_000, used=1_000)
    return destdir


# --- ls --------------------------------------------------------------------------------------


def test_ls_lists_least_recently_used_first(cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    put(cache, ".new.bin.0123abcd.part", 5_000, used=0)

    assert main(["cache", "ls", cache]) == 0

    out = lines(capsys.readouterr().out)
    assert out[0].split() == ["NAME", "SIZE", "LAST", "USE"]
    assert [line.split()[0] for line in out[1:4]] == ["old.bin", "mid.bin", "new.bin"]
    assert "97.7 KiB" in out[1]
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(NOW - 3_000))
    assert used in out[1]
    assert out[4] == "3 files, 293.0 KiB"
    assert out[5].startswith("1 temporary file of unfinished downloads, 4.9 KiB")


def test_ls_json(cache: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cache", "ls", cache, "--json"]) == 0

    listing = json.loads(capsys.readouterr().out)
    assert [f["name"] for f in listing["files"]] == ["old.bin", "mid.bin", "new.bin"]
    assert listing["total"] == 300_000
    assert listing["files"][0]["last_use"] == pytest.approx(NOW - 3_000, abs=1)
    assert listing["temporary_files"] == 0


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


# --- prune -----------------------------------------------------------------------------------


def test_prune_removes_the_least_recently_used(
    cache: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cache", "prune", cache, "--max-size", "250K"]) == 0

    assert sorted(listing(cache)) == ["mid.bin", "new.bin"]
    out = lines(capsys.readouterr().out)
    assert out[0] == "removed old.bin (97.7 KiB)"
    assert out[-1] == "removed 1 file (97.7 KiB); kept 2 files, 195.3 KiB"


def test_prune_keeps_a_file_pinned_by_another_user(cache: str) -> None:
    with DownloadManager(cache) as other, other.pin("old.bin"):
        assert main(["cache", "prune", cache, "--max-size", "250K"]) == 0

    assert sorted(listing(cache)) == ["new.bin", "old.bin"]


def test_prune_max_files(cache: str) -> None:
    assert main(["cache", "prune", cache, "--max-files", "1"]) == 0

    assert listing(cache) == ["new.bin"]


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
    assert summary.startswith("removed 2 temporary files (48.9 KiB) and ")
    assert summary.endswith("; 1 in use by running downloads kept")


def test_cache_through_the_entry_point(cache: str) -> None:
    result = run_cli(["cache", "ls", cache])

    assert result.returncode == 0, result.stderr
    assert "3 files, 293.0 KiB" in result.stdout

    result = run_cli(["cache", "--help"])

    assert result.returncode == 0
    for command in ("ls", "prune", "clean"):
        assert command in result.stdout
