"""A download folder holds only its files once nothing runs (the 0.1.1 contract).

``os.listdir(destdir)`` after downloads, failures, cancels, pins, waits for
another process and killed processes: the downloaded files, the user's own,
and nothing of dlmanager's (no ``.dlmanager/`` folder, no lock, probe,
reservation or temporary file).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import textwrap
import threading
from typing import Any

import pytest

from dlmanager import (
    DownloadError,
    DownloadManager,
    DownloadState,
    PersistLimit,
    RetryPolicy,
    Timeouts,
)
from dlmanager.disk.layout import STATE_DIR
from tests.conftest import listing, read, start_python
from tests.server import FaultServer, Resource, make_data

DATA = make_data(600_000, seed=21)
OTHER = make_data(600_000, seed=22)
FAST = RetryPolicy(total=3, backoff_factor=0.001, backoff_max=0.01)
QUICK = Timeouts(connect=5, read=0.5, stall=None)

#: Every kind of fault the test server injects: the resource, and whether
#: the download succeeds despite it (the retry budget is 3 attempts).
FAULTS: dict[str, tuple[Any, bool]] = {
    "none": (lambda: Resource(DATA), True),
    "dropped": (lambda: Resource(DATA, drop_after=[100_000, 50_000]), True),
    "stalled": (lambda: Resource(DATA, stall_after=[100_000], stall_seconds=3), True),
    "503 then ok": (lambda: Resource(DATA, statuses=[503]), True),
    "500 forever": (lambda: Resource(DATA, statuses=[500] * 10), False),
    "404": (lambda: Resource(DATA, statuses=[404]), False),
    # Too few bytes per attempt to count as progress: the retry budget runs out.
    "truncated forever": (lambda: Resource(DATA, drop_after=[1000] * 40), False),
    "ignores Range": (
        lambda: Resource(DATA, drop_after=[100_000], ignore_range=True),
        True,
    ),
    "wrong Content-Range": (
        lambda: Resource(DATA, drop_after=[100_000], wrong_content_range=True),
        True,
    ),
    "changes mid-download": (
        lambda: Resource(DATA, drop_after=[100_000], change_after=1, changed_data=OTHER),
        True,
    ),
    "no length": (lambda: Resource(DATA, no_length=True), True),
    "chunked": (lambda: Resource(DATA, chunked=True), True),
    "gzip": (lambda: Resource(DATA, gzip=True), True),
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_after_every_fault_only_the_finished_file_is_left(
    server: FaultServer, destdir: str, fault: str, connections: int
) -> None:
    make, succeeds = FAULTS[fault]
    server.add("/f.bin", make())
    with DownloadManager(
        destdir,
        retry=FAST,
        timeout=QUICK,
        connections=connections,
        min_split_size=64 * 1024,
    ) as manager:
        download = manager.download(server.url("/f.bin"))
        assert download is not None
        download.wait(raise_if_error=False)
        assert (download.state is DownloadState.DONE) is succeeds, download.error()
        if not succeeds:
            assert isinstance(download.error()[1], DownloadError)  # type: ignore[index]
    if succeeds:
        assert listing(destdir) == ["f.bin"]
        assert read(os.path.join(destdir, "f.bin")) in (DATA, OTHER)
    else:
        assert listing(destdir) == []


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("outcome", ["checksum mismatch", "too large"])
def test_after_a_refused_file_nothing_is_left(
    server: FaultServer, destdir: str, connections: int, outcome: str
) -> None:
    server.add("/f.bin", DATA)
    options: dict[str, Any] = {"connections": connections, "min_split_size": 64 * 1024}
    checksum = None
    if outcome == "too large":
        options["max_size"] = 100_000
    else:
        checksum = sha256(OTHER)
    with DownloadManager(destdir, retry=FAST, **options) as manager:
        download = manager.download(server.url("/f.bin"), checksum=checksum)
        assert download is not None
        with pytest.raises(DownloadError):
            download.wait()
    assert listing(destdir) == []


def test_a_folder_in_use_holds_coordination_files_only_while_it_runs(
    server: FaultServer, destdir: str
) -> None:
    gate = threading.Event()
    server.add("/slow.bin", Resource(DATA, stall_after=[10_000], stall_seconds=30))
    server.add("/f.bin", DATA)
    with open(os.path.join(destdir, "mine.txt"), "w") as handle:
        handle.write("the user's own file")
    with DownloadManager(destdir, timeout=Timeouts(read=None, stall=None)) as manager:
        slow = manager.download(server.url("/slow.bin"), on_event=lambda e: gate.set())
        assert slow is not None
        assert gate.wait(10)
        # While it runs, other processes see its lock.
        assert os.listdir(os.path.join(destdir, STATE_DIR)) == ["slow.bin.lock"]
        slow.cancel()
        slow.wait(raise_if_error=False)
        manager.download(server.url("/f.bin"))
    assert sorted(listing(destdir)) == ["f.bin", "mine.txt"]


def test_pins_are_removed_with_the_last_pin(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", DATA)
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/f.bin"))
        manager.wait()
        with manager.pin("f.bin"), manager.open("f.bin") as handle:
            assert os.listdir(os.path.join(destdir, STATE_DIR)) == ["f.bin.pin"]
            assert handle.read() == DATA
        assert listing(destdir) == ["f.bin"]
        # An eviction round leaves no pin file behind either.
        assert manager.evict() == []
        assert listing(destdir) == ["f.bin"]


def test_eviction_leaves_only_the_files_kept(server: FaultServer, destdir: str) -> None:
    for i in range(4):
        server.add(f"/f{i}.bin", make_data(100_000, seed=i))
    limit = PersistLimit(size_limit=250_000, file_limit=1)
    with DownloadManager(destdir, persist_limit=limit, max_workers=1) as manager:
        for i in range(4):
            manager.download(server.url(f"/f{i}.bin"))
        manager.wait()
    assert sorted(listing(destdir)) == ["f2.bin", "f3.bin"]


WAITER = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager, Timeouts
    with DownloadManager(sys.argv[1], timeout=Timeouts(read=None, stall=None)) as manager:
        manager.download(sys.argv[2])
    """
)


def test_processes_sharing_a_folder_leave_only_the_file(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", Resource(DATA, trickle=(60_000, 0.02)))
    url = server.url("/f.bin")
    children = [start_python(["-c", WAITER, destdir, url]) for _ in range(3)]
    with DownloadManager(destdir) as manager:
        manager.download(url)  # this process may transfer it, or wait for another
    for child in children:
        _, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
    assert len(server.requests_for("/f.bin")) == 1
    assert listing(destdir) == ["f.bin"]


HOLDER = textwrap.dedent(
    """
    import sys, threading
    from dlmanager import DownloadManager, Timeouts
    manager = DownloadManager(sys.argv[1], timeout=Timeouts(read=None, stall=None))
    writing = threading.Event()
    manager.download(sys.argv[2], on_event=lambda event: event.received and writing.set())
    writing.wait()
    with manager.pin(sys.argv[3]):
        print("holding", flush=True)
        sys.stdin.readline()
    """
)


def test_the_next_manager_removes_what_a_killed_process_left(
    server: FaultServer, destdir: str
) -> None:
    server.add("/held.bin", Resource(DATA, stall_after=[10_000], stall_seconds=30))
    with open(os.path.join(destdir, "pinned.bin"), "wb") as handle:
        handle.write(b"pinned")
    child = start_python(
        ["-c", HOLDER, destdir, server.url("/held.bin"), "pinned.bin"], stdin=subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    left = sorted(os.listdir(os.path.join(destdir, STATE_DIR)))
    assert left == ["held.bin.lock", "pinned.bin.pin"]
    # Its temporary file, killed before its first checkpoint: not resumable.
    [part] = [name for name in os.listdir(destdir) if name.startswith(".held.bin.")]
    os.utime(os.path.join(destdir, part), (0, 0))  # the next run comes later

    DownloadManager(destdir).close()  # a run that downloads nothing cleans up too

    assert sorted(listing(destdir)) == ["pinned.bin"]


def test_without_working_file_locks_no_folder_is_made(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlmanager.disk import locks as locking

    class NoLocks:
        LOCK_EX, LOCK_SH, LOCK_NB = 2, 1, 4

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            raise OSError(38, "Function not implemented")

    monkeypatch.setattr(locking, "fcntl", NoLocks)
    server.add("/f.bin", DATA)
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/f.bin"))
        manager.wait()
        with manager.pin("f.bin"):
            assert listing(destdir) == ["f.bin"]
    assert listing(destdir) == ["f.bin"]
