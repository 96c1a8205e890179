"""A finished download is durable: its bytes are fsync-ed before the rename, its name
after it and before DONE, and the writeback of a big file starts while it is written.

Real downloads from a loopback server into real files; the write-behind is
recorded through the runtime's ``writeback`` parameter, the fsync and rename
calls with spies that call the real ones.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from typing import Any

import pytest

from dlmanager import Download, DownloadManager, DownloadState, RetryPolicy
from dlmanager.disk.writeback import Writeback
from dlmanager.runtime import Runtime
from tests.conftest import read, temporaries
from tests.server import FaultServer, Resource, make_data
from tests.test_writeback import Recorder

KIB = 1024
MIB = 1024 * KIB
FAST = RetryPolicy(backoff_factor=0.001, backoff_max=0.01)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def runtime_with(writeback: Writeback) -> Iterator[Runtime]:
    runtime = Runtime(writeback=writeback)
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def recorded(recorder: Recorder) -> Iterator[Runtime]:
    """A runtime whose downloads start their writeback every 8 MiB (default), into *recorder*."""
    yield from runtime_with(Writeback(start=recorder))


@pytest.fixture
def recorded_often(recorder: Recorder) -> Iterator[Runtime]:
    """A runtime whose downloads start their writeback every 256 KiB, into *recorder*."""
    yield from runtime_with(Writeback(256 * KIB, recorder))


def check_ranges(calls: list[tuple[int, int]], size: int, every: int) -> None:
    """Each range handed over is at least *every* bytes, inside the file, and no
    byte is handed over twice."""
    end = 0
    for offset, nbytes in sorted(calls):
        assert nbytes >= every and offset >= end and offset + nbytes <= size, sorted(calls)
        end = offset + nbytes


def test_a_big_file_starts_its_writeback_a_small_one_does_not(
    server: FaultServer, destdir: str, recorder: Recorder, recorded: Runtime
) -> None:
    small, big = make_data(64 * KIB, seed=1), make_data(17 * MIB, seed=2)
    server.add("/small.bin", small)
    server.add("/big.bin", big)
    with DownloadManager(destdir, runtime=recorded, connections=1) as manager:
        manager.download(server.url("/small.bin"))
        manager.wait()
        assert recorder.calls == []
        manager.download(server.url("/big.bin"))
        manager.wait()
    # One run, handed over from its start each time 8 MiB more were written.
    assert len(recorder.calls) == 2
    assert recorder.calls[0][0] == 0 and recorder.calls[1][0] == sum(recorder.calls[0])
    check_ranges(recorder.calls, len(big), 8 * MIB)
    assert read(os.path.join(destdir, "big.bin")) == big


@pytest.mark.parametrize("connections", [1, 4])
def test_an_interrupted_download_resumes_and_publishes_with_its_writeback(
    server: FaultServer,
    destdir: str,
    recorder: Recorder,
    recorded_often: Runtime,
    connections: int,
) -> None:
    data = make_data(3 * MIB, seed=3)
    server.add("/file.bin", Resource(data, drop_after=[700 * KIB, 300 * KIB, 300 * KIB]))
    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"), retry=FAST,
                  connections=connections, min_split_size=256 * KIB, chunk_size=64 * KIB,
                  runtime=recorded_often)  # fmt: skip
    dl.start()
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == data
    assert temporaries(destdir) == []
    assert len([r for r in server.requests if r.method == "GET"]) > 1  # resumed
    check_ranges(recorder.calls, len(data), 256 * KIB)
    handed = sum(n for _, n in recorder.calls)
    if connections == 1:  # one run, continued where each dropped response stopped
        assert handed > len(data) - 256 * KIB
    else:  # a run per connection, and per range taken over
        assert handed > 0


def test_the_bytes_are_fsynced_before_the_rename_the_name_after_it_and_before_done(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = make_data(300 * KIB, seed=4)
    server.add("/file.bin", data)
    dest = os.path.join(destdir, "file.bin")
    download: list[Download] = []
    calls: list[tuple[Any, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        status = os.fstat(fd)
        what = "directory" if stat.S_ISDIR(status.st_mode) else status.st_ino
        calls.append(("fsync", what, download[0].state))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        if os.fspath(dst) == dest:
            calls.append(("rename", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    download.append(Download(server.url("/file.bin"), dest, connections=1))
    download[0].start()
    download[0].wait()
    monkeypatch.undo()
    assert download[0].state is DownloadState.DONE
    renames = [i for i, call in enumerate(calls) if call[0] == "rename"]
    assert len(renames) == 1
    rename = renames[0]
    inode = calls[rename][1]
    assert inode == os.stat(dest).st_ino
    # The file's own fsync comes before its rename, a fsync of the directory
    # after it, while the download still runs (DONE comes after).
    assert ("fsync", inode, DownloadState.RUNNING) in calls[:rename]
    assert ("fsync", "directory", DownloadState.RUNNING) in calls[rename:]
    assert read(dest) == data
