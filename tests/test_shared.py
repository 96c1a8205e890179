"""Several processes sharing one destination directory (real processes, not threads)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

import pytest

from dlmanager import DownloadManager, PersistLimit
from dlmanager.disk.layout import STATE_DIR
from dlmanager.disk.locks import StateDir
from dlmanager.disk.reservations import Reservations
from tests.conftest import listing, read, start_python
from tests.server import FaultServer, Resource, make_data

WORKER = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager
    destdir, urls = sys.argv[1], sys.argv[2:]
    with DownloadManager(destdir, max_workers=4) as manager:
        for url in urls:
            manager.download(url)
    """
)


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return start_python(["-c", code, *args])


def finish(child: subprocess.Popen[str], timeout: float = 60) -> None:
    _, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err


def test_four_processes_transfer_each_file_once(server: FaultServer, destdir: str) -> None:
    files = {f"/f{i}.bin": make_data(150_000, seed=i) for i in range(20)}
    for path, data in files.items():
        # Slow enough that the processes overlap on every file.
        server.add(path, Resource(data, trickle=(30_000, 0.01)))
    urls = [server.url(path) for path in files]
    children = [spawn(WORKER, destdir, *urls) for _ in range(4)]
    for child in children:
        finish(child)
    for path, data in files.items():
        assert len(server.requests_for(path)) == 1, path
        assert read(os.path.join(destdir, path[1:])) == data
    # Nothing but the files: the coordination files went with the downloads.
    assert sorted(os.listdir(destdir)) == sorted(path[1:] for path in files)


HOLDER = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager, Timeouts
    manager = DownloadManager(sys.argv[1], timeout=Timeouts(read=None, stall=None))
    manager.download(sys.argv[2]).wait()
    """
)


def test_a_killed_downloader_is_taken_over(server: FaultServer, destdir: str) -> None:
    data = make_data(400_000, seed=3)
    resource = Resource(data, stall_after=[150_000], stall_seconds=60)
    server.add("/big.bin", resource)
    url = server.url("/big.bin")
    first = spawn(HOLDER, destdir, url)
    # It holds the lock once its checkpoint exists.
    wait_until(lambda: any(n.endswith(".ckpt") for n in os.listdir(destdir)))
    events: list[int] = []
    with DownloadManager(destdir) as manager:
        dl = manager.download(url, progress=lambda d, current, total: events.append(current))
        assert dl is not None
        wait_until(lambda: bool(events))  # progress reported from the other's file
        assert len(server.requests_for("/big.bin")) == 1  # it waits, it does not fetch
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        dl.wait()
    assert read(os.path.join(destdir, "big.bin")) == data
    resumed = server.requests_for("/big.bin")[1]
    assert resumed.range is not None  # took over the dead process's bytes
    assert listing(destdir) == ["big.bin"]


PINNER = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager
    manager = DownloadManager(sys.argv[1])
    with manager.pin(sys.argv[2]):
        print("pinned", flush=True)
        sys.stdin.readline()
    """
)


def test_a_file_pinned_by_another_process_is_not_evicted(server: FaultServer, destdir: str) -> None:
    data = {f"f{i}.bin": make_data(100_000, seed=i) for i in range(4)}
    for name, body in data.items():
        server.add("/" + name, body)
    limit = PersistLimit(size_limit=150_000, file_limit=1)
    with DownloadManager(destdir, persist_limit=limit) as manager:
        manager.download(server.url("/f0.bin"))
        manager.wait()
    pinner = start_python(["-c", PINNER, destdir, "f0.bin"], stdin=subprocess.PIPE)
    try:
        assert pinner.stdout is not None
        assert pinner.stdout.readline().strip() == "pinned"
        limit = PersistLimit(size_limit=150_000, file_limit=1)
        with DownloadManager(destdir, persist_limit=limit) as manager:
            for name in ("f1.bin", "f2.bin", "f3.bin"):
                dl = manager.download(server.url("/" + name))
                assert dl is not None
                dl.wait()
        # f0 is the least recently used, but pinned: the others went instead.
        assert sorted(listing(destdir)) == [STATE_DIR, "f0.bin", "f3.bin"]
        assert os.listdir(os.path.join(destdir, STATE_DIR)) == ["f0.bin.pin"]
    finally:
        pinner.communicate("\n", timeout=10)
    assert pinner.returncode == 0
    assert sorted(listing(destdir)) == ["f0.bin", "f3.bin"]  # the pin went with its holder


def test_pin_of_a_missing_file_raises(destdir: str) -> None:
    manager = DownloadManager(destdir)
    try:
        with pytest.raises(FileNotFoundError), manager.pin("absent.bin"):
            pass
    finally:
        manager.close()


def test_open_pins_while_open(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", b"content")
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/f.bin"))
        manager.wait()
        with manager.open("f.bin") as handle:
            assert handle.read() == b"content"


CAPPED = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager, PersistLimit
    destdir, cap, urls = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    limit = PersistLimit(size_limit=cap, file_limit=1)
    with DownloadManager(destdir, persist_limit=limit, max_workers=2) as manager:
        for url in urls:
            manager.download(url)
    """
)


def test_the_cap_holds_when_processes_share_a_directory(server: FaultServer, destdir: str) -> None:
    size, cap = 100_000, 450_000
    names = [f"p{p}-f{i}.bin" for p in range(4) for i in range(6)]
    for name in names:
        server.add("/" + name, Resource(make_data(size, seed=hash(name) % 1000),
                                        trickle=(20_000, 0.01)))  # fmt: skip
    children = [
        spawn(CAPPED, destdir, str(cap), *(server.url(f"/p{p}-f{i}.bin") for i in range(6)))
        for p in range(4)
    ]
    for child in children:
        finish(child)
    left = listing(destdir)
    total = sum(os.path.getsize(os.path.join(destdir, name)) for name in left)
    assert total <= cap, (total, left)
    assert left  # file_limit keeps at least the newest
    assert not [n for n in left if not n.endswith(".bin")]


def test_changes_behind_the_managers_back_are_seen(destdir: str) -> None:
    limit = PersistLimit(size_limit=10**9)
    with DownloadManager(destdir, persist_limit=limit):
        subprocess.run(
            [sys.executable, "-c", "import sys; open(sys.argv[1], 'wb').write(b'x' * 5000)",
             os.path.join(destdir, "added.bin")],
            check=True,
        )  # fmt: skip
        wait_until(lambda: limit.total_size == 5000, timeout=3)
        os.remove(os.path.join(destdir, "added.bin"))
        wait_until(lambda: limit.total_size == 0, timeout=3)
    assert not limit.watching  # the manager stopped what it started


def test_without_a_working_lock_two_writers_still_publish_one_good_file(
    server: FaultServer, destdir: str
) -> None:
    # As on a filesystem where locks succeed for everyone: no destination lock.
    from dlmanager import Download

    data = make_data(300_000, seed=9)
    server.add("/same.bin", Resource(data, trickle=(20_000, 0.01)))
    dest = os.path.join(destdir, "same.bin")
    downloads = [Download(server.url("/same.bin"), dest) for _ in range(2)]
    for dl in downloads:
        dl.start()
    for dl in downloads:
        dl.wait()
    assert len(server.requests) == 2  # the bandwidth a broken lock costs
    assert read(dest) == data
    assert listing(destdir) == ["same.bin"]


def test_room_is_reserved_for_other_processes_downloads(server: FaultServer, destdir: str) -> None:
    for i in range(3):
        server.add(f"/old{i}.bin", make_data(100_000, seed=i))
    limit = PersistLimit(size_limit=350_000, file_limit=1)
    with DownloadManager(destdir, persist_limit=limit) as manager:
        for i in range(3):
            manager.download(server.url(f"/old{i}.bin"))
            manager.wait()
        assert len(listing(destdir)) == 3
        # Another process starts a 200 kB download: room is made for it.
        holder = start_python(
            [
                "-c",
                "import sys; from dlmanager.disk.locks import StateDir;"
                " from dlmanager.disk.reservations import Reservations;"
                " r = Reservations(StateDir(sys.argv[1])); r.hold('big.bin', 200_000);"
                " print('held', flush=True); sys.stdin.readline()",
                destdir,
            ],
            stdin=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "held"
            assert Reservations(StateDir(destdir)).total() == 200_000
            server.add("/new.bin", make_data(10, seed=5))
            manager.download(server.url("/new.bin"))
            manager.wait()
        finally:
            holder.kill()  # killed, not released: the reservation must lapse by itself
            holder.communicate(timeout=10)
    # 300 kB of old files + 200 kB reserved + the new one: the oldest two went.
    assert Reservations(StateDir(destdir)).total() == 0  # a dead holder stops counting
    assert sorted(listing(destdir)) == [STATE_DIR, "new.bin", "old2.bin"]
    DownloadManager(destdir).close()  # the next manager removes what the dead one left
    assert sorted(listing(destdir)) == ["new.bin", "old2.bin"]


def test_a_directory_without_working_file_locks(
    server: FaultServer,
    destdir: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import errno
    import fcntl

    from dlmanager.disk import locks as locking

    class NoLocks:
        """fcntl as on an NFSv3 mount without a lock manager."""

        LOCK_EX, LOCK_SH, LOCK_NB, LOCK_UN = (
            fcntl.LOCK_EX,
            fcntl.LOCK_SH,
            fcntl.LOCK_NB,
            fcntl.LOCK_UN,
        )

        @staticmethod
        def flock(fd: int, operation: int) -> None:
            raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(locking, "fcntl", NoLocks)
    server.add("/f.bin", b"data")
    with caplog.at_level("WARNING", logger="dlmanager.disk.locks"):
        manager = DownloadManager(destdir)
    try:
        assert "File locks do not work" in caplog.text
        dl = manager.download(server.url("/f.bin"))
        assert dl is not None
        dl.wait()
        with manager.pin("f.bin") as path:  # not honoured, but usable
            assert read(path) == b"data"
    finally:
        manager.close()
    assert listing(destdir) == ["f.bin"]


def test_a_reservation_is_counted_while_other_processes_probe_them(destdir: str) -> None:
    state = StateDir(destdir)
    mine, other = Reservations(state), Reservations(state)
    # Another process probing every reservation file with a shared lock (as
    # total() does) at any moment cannot make hold() give up: the file is
    # locked under a hidden name before it appears.
    os.mkdir(state.path)
    for name in ("a.1.rsv", "b.2.rsv"):
        with open(state.file(name), "w") as handle:
            handle.write("7")  # left by dead processes: not held, not counted
    probes = [os.open(state.file(n), os.O_RDONLY) for n in ("a.1.rsv", "b.2.rsv")]
    for fd in probes:
        fcntl.flock(fd, fcntl.LOCK_SH)
    try:
        mine.hold("f.bin", 1000)
        mine.hold("g.bin", 24)
        writing = state.file(".h.bin.0123abcd.rsv.new")
        with open(writing, "w") as handle:
            handle.write("999")  # another process's, not locked yet: skipped

        assert other.total() == 1024
        assert mine.total() == 1024
    finally:
        for fd in probes:
            os.close(fd)
    mine.release("f.bin")
    mine.release("g.bin")
    assert other.total() == 0
    assert sorted(os.listdir(state.path)) == [".h.bin.0123abcd.rsv.new", "a.1.rsv", "b.2.rsv"]
    # The next manager removes what no process holds, and the folder with it.
    assert sorted(os.path.basename(p) for p in StateDir(destdir).remove_stale()) == [
        ".h.bin.0123abcd.rsv.new",
        "a.1.rsv",
        "b.2.rsv",
    ]
    assert os.listdir(destdir) == []
