"""DownloadManager against a real loopback server: naming, dedup, bounds, cleanup."""

from __future__ import annotations

import contextlib
import gc
import hashlib
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dlmanager import (
    ChecksumError,
    Download,
    DownloadEvent,
    DownloadInterrupt,
    DownloadManager,
    DownloadState,
    EventKind,
    HTTPStatusError,
    PersistLimit,
    RetryPolicy,
    Timeouts,
)
from dlmanager import destination as destination_module
from dlmanager.disk.layout import STATE_DIR, temporary_name
from dlmanager.disk.locks import StateDir
from dlmanager.session import DownloadSession
from tests.conftest import listing, parts, read, start_python, temporaries
from tests.server import FaultServer, Resource, make_data

DATA = make_data(100_000, seed=7)
WAIT = 10.0  # seconds: a bound, never a wait


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll *condition* until it holds; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(0.02)


@pytest.fixture
def manager(destdir: str, fast_retry: RetryPolicy) -> Any:
    manager = DownloadManager(destdir, retry=fast_retry)
    yield manager
    manager.close()


def test_fname_derived_from_url_is_percent_decoded(
    server: FaultServer, manager: DownloadManager, destdir: str
) -> None:
    server.add("/builds/a%20b.bin?x=1", DATA)
    dl = manager.download(server.url("/builds/a%20b.bin?x=1"))
    assert dl is not None
    dl.wait()
    assert read(os.path.join(destdir, "a b.bin")) == DATA


@pytest.mark.parametrize(
    "path", ["/", "/dir/", "/..", "/%2e%2e", "/a%2Fb", "/a%5Cb", "/a%00b", "/.x.0123abcd.part"]
)
def test_unusable_names_from_urls_are_refused(
    server: FaultServer, manager: DownloadManager, destdir: str, path: str
) -> None:
    with pytest.raises(ValueError, match="file name"):
        manager.download(server.url(path))
    assert server.requests == []
    assert listing(destdir) == []


@pytest.mark.parametrize("fname", ["", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "a\x00"])
def test_escaping_fnames_are_refused(manager: DownloadManager, destdir: str, fname: str) -> None:
    with pytest.raises(ValueError, match="file name"):
        manager.download("http://127.0.0.1:9/x", fname)
    assert listing(destdir) == []


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "x", "http://"])
def test_invalid_urls_are_refused(manager: DownloadManager, url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        manager.download(url, "x")


def test_destdir_is_created(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "a", "b")
    DownloadManager(path).close()
    assert os.path.isdir(path)


def test_destdir_that_is_a_file(tmp_path: Any) -> None:
    path = os.path.join(str(tmp_path), "file")
    with open(path, "w") as handle:
        handle.write("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        DownloadManager(path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_destdir(tmp_path: Any) -> None:
    os.chmod(str(tmp_path), 0o500)
    try:
        with pytest.raises(PermissionError, match="not writable"):
            DownloadManager(str(tmp_path))
    finally:
        os.chmod(str(tmp_path), 0o700)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"retry": -1}, "retry"),
        ({"retry": "3"}, "retry"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"timeout": Timeouts}, "timeout"),
    ],
)
def test_invalid_options(destdir: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DownloadManager(destdir, **kwargs)


def test_existing_file_is_a_cache_hit_and_counts_as_a_use(
    server: FaultServer, manager: DownloadManager, destdir: str
) -> None:
    path = os.path.join(destdir, "f.bin")
    with open(path, "wb") as handle:
        handle.write(b"cached")
    os.utime(path, (1_000_000, 1_000_000))
    server.add("/f.bin", DATA)
    assert manager.download(server.url("/f.bin")) is None
    assert server.requests == []
    assert os.stat(path).st_atime > time.time() - 60
    assert os.stat(path).st_mtime == 1_000_000
    assert read(path) == b"cached"


@pytest.mark.parametrize("limit", [None, PersistLimit(10**9)])
def test_a_downloaded_file_counts_as_used_when_it_lands(
    server: FaultServer, destdir: str, limit: PersistLimit | None
) -> None:
    # Its use (the access time, which every process's eviction orders by) is
    # when it lands, not when its temporary file was made, with or without a limit.
    server.add("/f.bin", Resource(DATA, stall_after=[50_000], stall_seconds=0.3))
    receiving: list[int] = []

    def on_event(event: DownloadEvent) -> None:
        if event.received and not receiving:
            receiving.append(time.time_ns())

    timeouts = Timeouts(read=None, stall=None)
    with DownloadManager(destdir, persist_limit=limit, timeout=timeouts) as manager:
        manager.download(server.url("/f.bin"), on_event=on_event)
    assert os.stat(os.path.join(destdir, "f.bin")).st_atime_ns > receiving[0]
    assert read(os.path.join(destdir, "f.bin")) == DATA


def test_concurrency_bound_queues_without_connecting(server: FaultServer, destdir: str) -> None:
    for i in range(6):
        server.add(f"/f{i}.bin", Resource(DATA, stall_after=[1000]))
    manager = DownloadManager(destdir, max_workers=2, timeout=Timeouts(read=None, stall=None))
    try:
        downloads = [manager.download(server.url(f"/f{i}.bin")) for i in range(6)]
        wait_until(lambda: len(server.requests) == 2)
        states = [dl.state for dl in downloads if dl is not None]
        assert states.count(DownloadState.RUNNING) == 2
        assert states.count(DownloadState.QUEUED) == 4
        assert all(dl is not None and dl.is_running() for dl in downloads)
    finally:
        manager.cancel()
        manager.wait(raise_if_error=False)
    assert len(server.requests) == 2
    assert listing(destdir) == []
    manager.close()


def test_many_downloads_complete_through_a_small_pool(server: FaultServer, destdir: str) -> None:
    files = {f"/f{i}.bin": make_data(5000 + i, seed=i) for i in range(100)}
    for path, data in files.items():
        server.add(path, data)
    with DownloadManager(destdir, max_workers=4) as manager:
        for path in files:
            manager.download(server.url(path))
    for path, data in files.items():
        assert read(os.path.join(destdir, path[1:])) == data
    assert manager._downloads == {}
    assert len(server.requests) == 100


def test_manager_is_safe_from_many_threads(server: FaultServer, destdir: str) -> None:
    for i in range(5):
        server.add(f"/f{i}.bin", make_data(50_000, seed=i))
    manager = DownloadManager(destdir)
    results: list[Download | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for i in range(5):
            dl = manager.download(server.url(f"/f{i}.bin"))
            with lock:
                results.append(dl)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    manager.wait()
    manager.close()
    for i in range(5):
        assert len(server.requests_for(f"/f{i}.bin")) == 1
        assert read(os.path.join(destdir, f"f{i}.bin")) == make_data(50_000, seed=i)
    started = {id(dl) for dl in results if dl is not None}
    assert len(started) == 5


def test_wait_raises_errors(server: FaultServer, manager: DownloadManager) -> None:
    server.add("/missing.bin", Resource(DATA, statuses=[404]))
    manager.download(server.url("/missing.bin"))
    with pytest.raises(HTTPStatusError) as info:
        manager.wait()
    assert info.value.status_code == 404
    assert manager._downloads == {}


def test_session_is_assignable(server: FaultServer, manager: DownloadManager, destdir: str) -> None:
    import requests

    server.add("/f.bin", DATA)
    calls: list[str] = []

    class CountingSession(requests.Session):
        def get(self, url: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            calls.append(url)
            return super().get(url, **kwargs)

    with CountingSession() as session:
        manager.session = session
        dl = manager.download(server.url("/f.bin"))
        assert dl is not None
        dl.wait()
    assert calls == [server.url("/f.bin")]


def test_try_finally_cancel_idiom_leaves_nothing(server: FaultServer, destdir: str) -> None:
    for i in range(3):
        server.add(f"/f{i}.bin", Resource(DATA, stall_after=[5000]))
    manager = DownloadManager(destdir, timeout=Timeouts(read=None, stall=None))
    downloads: list[Download] = []
    with pytest.raises(RuntimeError, match="harness failed"):
        try:
            for i in range(3):
                dl = manager.download(server.url(f"/f{i}.bin"))
                assert dl is not None
                downloads.append(dl)
            wait_until(lambda: len(parts(destdir)) == 3)
            raise RuntimeError("harness failed")
        finally:
            manager.cancel()
    for dl in downloads:
        dl.thread.join(5)
        assert not dl.thread.is_alive()
        with pytest.raises(DownloadInterrupt):
            dl.wait()
    assert listing(destdir) == []
    manager.close()


def test_persist_limit_evicts_least_recently_used(server: FaultServer, destdir: str) -> None:
    for name in ("a", "b", "c"):
        server.add(f"/{name}.bin", DATA)
    limit = PersistLimit(size_limit=2 * len(DATA) + 1, file_limit=1)
    manager = DownloadManager(destdir, persist_limit=limit)
    for name in ("a", "b"):
        dl = manager.download(server.url(f"/{name}.bin"))
        assert dl is not None
        dl.wait()
    assert sorted(listing(destdir)) == ["a.bin", "b.bin"]
    # A use of "a" makes "b" the least recently used.
    assert manager.download(server.url("/a.bin")) is None
    dl = manager.download(server.url("/c.bin"))
    assert dl is not None
    dl.wait()
    assert sorted(listing(destdir)) == ["a.bin", "c.bin"]
    manager.close()


def test_files_are_used_in_the_order_they_were_published(server: FaultServer, destdir: str) -> None:
    # One at a time: a publishes before b starts, b before c. a's thread only
    # gets to its end (where the manager records the download) after b has
    # ended entirely: still, a is the least recently used, and goes first.
    for name in ("a", "b", "c"):
        server.add(f"/{name}.bin", DATA)
    started: dict[str, Download] = {}
    all_started = threading.Event()

    class LateA(DownloadManager):
        def _download_finished(self, dl: Download) -> None:
            if dl.get_dest().endswith("a.bin"):
                assert all_started.wait(WAIT)
                assert started["b"].join(WAIT)
            super()._download_finished(dl)

    limit = PersistLimit(size_limit=2 * len(DATA) + 1, file_limit=1)
    with LateA(destdir, persist_limit=limit, max_workers=1) as manager:
        for name in ("a", "b", "c"):
            dl = manager.download(server.url(f"/{name}.bin"))
            assert dl is not None
            started[name] = dl
        all_started.set()

    assert sorted(listing(destdir)) == ["b.bin", "c.bin"]


def test_stale_temporary_is_removed_and_not_counted(destdir: str) -> None:
    stale = os.path.join(destdir, temporary_name("f.bin"))
    with open(stale, "wb") as handle:
        handle.write(b"x" * 1000)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    limit = PersistLimit(size_limit=1)
    DownloadManager(destdir, persist_limit=limit).close()
    assert listing(destdir) == []
    assert limit.files == []


CHILD = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager, Timeouts
    manager = DownloadManager(sys.argv[2], timeout=Timeouts(read=None, stall=None),
                              connections=int(sys.argv[4]), min_split_size=16 * 1024)
    dl = manager.download(sys.argv[1])
    print("started", flush=True)
    if sys.argv[3] == "wait":
        dl.wait()
    else:  # exit once every connection is transferring
        import threading, time
        deadline = time.monotonic() + 10
        while dl.received < 30_000 * int(sys.argv[4]) - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert dl.is_running() and dl.received, "the download never ran"
    """
)


def start_child(url: str, destdir: str, mode: str, connections: int = 1) -> subprocess.Popen[str]:
    return start_python(["-c", CHILD, url, destdir, mode, str(connections)])


def test_killed_process_resumes_in_the_next_run(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", Resource(DATA, stall_after=[60_000]))
    child = start_child(server.url("/f.bin"), destdir, "wait")
    try:
        wait_until(lambda: any(name.endswith(".ckpt") for name in listing(destdir)))
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    left = temporaries(destdir)
    # Never under the final name; the killed process's lock file is left too.
    assert len(left) == 2 and sorted(listing(destdir)) == [STATE_DIR, *left]
    limit = PersistLimit(size_limit=1)
    limit.register_dir_content(destdir)
    assert limit.files == []
    old = time.time() - 3600
    for name in left:
        os.utime(os.path.join(destdir, name), (old, old))
    sent = server.bytes_sent
    with DownloadManager(destdir) as manager:
        assert temporaries(destdir) == left  # resumable: kept
        manager.download(server.url("/f.bin"))
    assert listing(destdir) == ["f.bin"]  # the next run cleaned up
    assert read(os.path.join(destdir, "f.bin")) == DATA
    resumed = server.requests[-1]
    assert resumed.range is not None and resumed.range.startswith("bytes=")
    assert resumed.headers["if-range"] == server.resource("/f.bin").etag
    assert 0 < server.bytes_sent - sent < len(DATA)


@pytest.mark.parametrize("connections", [1, 4])
def test_exit_with_running_downloads_is_quick_and_clean(
    server: FaultServer, destdir: str, connections: int
) -> None:
    data = make_data(400_000)  # 100 kB per connection, each stalling after 30 kB
    server.add("/f.bin", Resource(data, stall_after=[30_000] * connections))
    child = start_child(server.url("/f.bin"), destdir, "exit", connections)
    out, err = child.communicate(timeout=20)
    assert child.returncode == 0, err
    assert out.strip() == "started"
    assert listing(destdir) == []


# -- evict() and the _files_evicted hook ---------------------------------------------------


class RecordingManager(DownloadManager):
    """Records what each eviction removed, and in which thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.evicted: list[list[str]] = []
        self.threads: list[str] = []
        super().__init__(*args, **kwargs)

    def _files_evicted(self, paths: list[str]) -> None:
        super()._files_evicted(paths)
        self.evicted.append(list(paths))
        self.threads.append(threading.current_thread().name)


def cached(destdir: str, *names: str) -> list[str]:
    """Files of 1000 bytes in *destdir*, used in the order given (oldest first)."""
    paths = []
    for i, name in enumerate(names):
        path = os.path.join(destdir, name)
        with open(path, "wb") as handle:
            handle.write(b"x" * 1000)
        os.utime(path, (1_600_000_000 + i, 1_600_000_000 + i))
        paths.append(path)
    return paths


@pytest.mark.parametrize(
    ("limit", "removed"),
    [
        (lambda: PersistLimit(0, max_files=2), 2),  # count only
        (lambda: PersistLimit(2500, file_limit=1), 2),  # size only
        (lambda: PersistLimit(10_000, file_limit=1, max_files=1), 3),
    ],
)
def test_evict_prunes_without_downloading(
    destdir: str, limit: Callable[[], PersistLimit], removed: int
) -> None:
    paths = cached(destdir, "a.bin", "b.bin", "c.bin", "d.bin")
    with RecordingManager(destdir, persist_limit=limit()) as manager:
        assert manager.evict() == paths[:removed]
        assert manager.evicted == [paths[:removed]]
        assert manager.threads == [threading.current_thread().name]
        assert sorted(listing(destdir)) == [os.path.basename(p) for p in paths[removed:]]
        assert manager.evict() == []
        assert manager.evicted == [paths[:removed]]  # not called for nothing


def test_evict_without_a_limit_removes_nothing(destdir: str) -> None:
    cached(destdir, "a.bin", "b.bin")
    with RecordingManager(destdir) as manager:
        assert not manager.persist_limit.enabled
        assert manager.evict() == []
        assert manager.evicted == []
    assert sorted(listing(destdir)) == ["a.bin", "b.bin"]


def test_evict_spares_pinned_files(destdir: str) -> None:
    a, b, c = cached(destdir, "a.bin", "b.bin", "c.bin")
    with RecordingManager(destdir, persist_limit=PersistLimit(0, max_files=1)) as manager:
        with manager.pin("a.bin"):  # pinning is a use: a becomes the most recent
            os.utime(a, (1_500_000_000, 1_500_000_000))  # make it the oldest again
            manager.persist_limit.register_file(a)
            assert manager.evict() == [b, c]
        assert manager.evicted == [[b, c]]
        assert listing(destdir) == ["a.bin"]


def test_evict_spares_files_pinned_by_another_manager(destdir: str) -> None:
    a, b = cached(destdir, "a.bin", "b.bin")
    with DownloadManager(destdir) as other, other.pin("a.bin"):
        os.utime(a, (1_500_000_000, 1_500_000_000))  # the least recently used again
        limit = PersistLimit(0, max_files=1)
        with RecordingManager(destdir, persist_limit=limit) as manager:
            assert manager.evict() == [b]
            assert manager.evicted == [[b]]
    assert listing(destdir) == ["a.bin"]


def test_files_evicted_after_a_download(server: FaultServer, destdir: str) -> None:
    (old,) = cached(destdir, "old.bin")
    server.add("/new.bin", DATA)
    with RecordingManager(destdir, persist_limit=PersistLimit(0, max_files=1)) as manager:
        dl = manager.download(server.url("/new.bin"))
        assert dl is not None
        dl.wait()  # the finished callback, and so the hook, ran before wait() returns
        assert manager.evicted == [[old]]
        assert manager.threads == [dl.thread.name]
    assert listing(destdir) == ["new.bin"]


def test_files_evicted_when_a_download_makes_room(server: FaultServer, destdir: str) -> None:
    # The room is made as soon as the size is known, before the body arrives.
    older, _ = cached(destdir, "older.bin", "old.bin")
    server.add("/new.bin", DATA)
    limit = PersistLimit(len(DATA) + 1500, file_limit=1)
    seen: list[list[list[str]]] = []

    def on_event(event: DownloadEvent) -> None:
        if event.kind is EventKind.PROGRESS and not seen:
            seen.append(list(manager.evicted))

    with RecordingManager(destdir, persist_limit=limit) as manager:
        dl = manager.download(server.url("/new.bin"), on_event=on_event)
        assert dl is not None
        dl.wait()
    assert seen == [[[older]]]
    assert manager.evicted == [[older]]  # the room made was enough
    assert sorted(listing(destdir)) == ["new.bin", "old.bin"]


def test_a_failing_files_evicted_hook_fails_nothing(
    server: FaultServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(DownloadManager):
        def _files_evicted(self, paths: list[str]) -> None:
            raise RuntimeError("hook bug")

    (old,) = cached(destdir, "old.bin")
    server.add("/new.bin", DATA)
    with Broken(destdir, persist_limit=PersistLimit(0, max_files=1)) as manager:
        dl = manager.download(server.url("/new.bin"))
        assert dl is not None
        dl.wait()
        assert dl.state is DownloadState.DONE
        cached(destdir, "more.bin")
        manager.persist_limit.register_file(os.path.join(destdir, "more.bin"))
        assert manager.evict() == [os.path.join(destdir, "more.bin")]
    assert not os.path.exists(old)
    failures = [r for r in caplog.records if "_files_evicted hook" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None and "hook bug" in str(r.exc_info[1]) for r in failures)


# --- found by the soak (benchmarks/soak.py) ------------------------------------------------


def test_a_request_with_another_checksum_does_not_join_a_running_download(
    server: FaultServer, destdir: str
) -> None:
    old, new = b"old version " * 10_000, b"new version " * 10_000
    server.add("/f.bin", Resource(new, trickle=(20_000, 0.02)))
    with DownloadManager(destdir) as manager:
        first = manager.download(server.url("/f.bin"))
        wants_old = manager.download(server.url("/f.bin"), checksum=sha256_spec(old))
        wants_new = manager.download(server.url("/f.bin"), checksum=sha256_spec(new))
        assert first is not None and wants_old is not None and wants_new is not None
        # Each waits for the one before it, then checks the file it left.
        assert len({id(first), id(wants_old), id(wants_new)}) == 3
        first.wait()
        wants_old.wait(raise_if_error=False)
        wants_new.wait()
        error = wants_old.error()  # received here: leaving the block does not raise it

    assert error is not None and isinstance(error[1], ChecksumError)
    assert read(os.path.join(destdir, "f.bin")) == new


def test_a_request_with_the_same_checksum_joins(server: FaultServer, destdir: str) -> None:
    data = make_data(200_000)
    server.add("/f.bin", Resource(data, trickle=(20_000, 0.02)))
    with DownloadManager(destdir) as manager:
        first = manager.download(server.url("/f.bin"), checksum=sha256_spec(data))
        again = manager.download(server.url("/f.bin"), checksum=sha256_spec(data))
        without = manager.download(server.url("/f.bin"))

    assert first is again is without
    assert [r.method for r in server.requests].count("GET") == 1


def test_a_pinned_file_that_does_not_match_is_downloaded_again(
    server: FaultServer, destdir: str
) -> None:
    old, new = b"old version\n" * 1000, b"new version\n" * 1000
    server.add("/f.bin", new)
    with open(os.path.join(destdir, "f.bin"), "wb") as handle:
        handle.write(old)
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(DownloadManager(destdir))
        stack.enter_context(reader.pin("f.bin"))
        in_use = stack.enter_context(open(os.path.join(destdir, "f.bin"), "rb"))
        with DownloadManager(destdir) as manager:
            download = manager.download(server.url("/f.bin"), checksum=sha256_spec(new))
            assert download is not None
        assert in_use.read() == old  # the reader's open file is intact
    assert read(os.path.join(destdir, "f.bin")) == new


def test_a_file_evicted_while_it_is_checked_is_downloaded_again(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = b"x" * 10_000
    server.add("/f.bin", data)
    other = StateDir(destdir).lock("f.bin")  # another process downloads f.bin
    assert other is not None and other.try_acquire()
    real = destination_module.file_digests

    def evicted_first(path: str, algorithms: Any) -> Any:
        os.remove(path)  # another process evicts the file at this moment
        return real(path, algorithms)

    with DownloadManager(destdir) as manager:
        download = manager.download(server.url("/f.bin"), checksum=sha256_spec(data))
        assert download is not None
        with open(os.path.join(destdir, "f.bin"), "wb") as handle:
            handle.write(data)  # the other process publishes the file...
        monkeypatch.setattr(destination_module, "file_digests", evicted_first)
        other.release()  # ...and releases its lock
        download.wait()

    assert read(os.path.join(destdir, "f.bin")) == data
    assert [r.method for r in server.requests].count("GET") == 1


def test_closing_the_session_closes_its_sockets_at_once(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", Resource(make_data(3_000_000), wrong_content_range=True))
    gc.disable()  # as before the collector runs: cycles still hold responses
    try:
        manager = DownloadManager(destdir, connections=4, min_split_size=256 * 1024)
        download = manager.download(server.url("/f.bin"))
        assert download is not None
        download.wait()
        manager.close()
        assert client_sockets(server.host_port[1]) == []
    finally:
        gc.enable()


def sha256_spec(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def client_sockets(port: int) -> list[int]:
    """The inodes of this process's open TCP sockets connected to *port* on 127.0.0.1.

    The test server runs in this process too: its own ends of the
    connections (closed by its threads a moment later) are not counted.
    """
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if int(fields[2].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    mine = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/self/fd/{fd}")
            if link.startswith("socket:[") and int(link[8:-1]) in inodes:
                mine.append(int(link[8:-1]))
    return mine


# -- errors are never lost -------------------------------------------------------------------


def failed_download(manager: DownloadManager, server: FaultServer, name: str) -> Download:
    """Start a download of *name* that fails with a 404, and wait until it has failed."""
    server.add(f"/{name}", Resource(DATA, statuses=[404]))
    download = manager.download(server.url(f"/{name}"))
    assert download is not None
    wait_until(lambda: download.state is DownloadState.FAILED)
    return download


def test_wait_raises_the_error_of_a_download_that_failed_before_it(
    server: FaultServer, manager: DownloadManager
) -> None:
    download = failed_download(manager, server, "missing.bin")

    with pytest.raises(HTTPStatusError) as caught:
        manager.wait()

    assert caught.value.status_code == 404
    assert caught.value.url == download.get_url()
    assert caught.value.other_errors == ()  # type: ignore[attr-defined]
    manager.wait()  # raised once: the next wait has nothing to say


def test_leaving_the_block_raises_the_error_of_a_failed_download(
    server: FaultServer, destdir: str, fast_retry: RetryPolicy
) -> None:
    with pytest.raises(HTTPStatusError), DownloadManager(destdir, retry=fast_retry) as manager:
        failed_download(manager, server, "missing.bin")
    assert listing(destdir) == []


def test_the_first_error_is_raised_with_the_others_attached(
    server: FaultServer, manager: DownloadManager
) -> None:
    first = failed_download(manager, server, "a.bin")
    second = failed_download(manager, server, "b.bin")
    server.add("/ok.bin", DATA)
    manager.download(server.url("/ok.bin"))

    with pytest.raises(HTTPStatusError) as caught:
        manager.wait()

    assert caught.value.url == first.get_url()
    [other] = caught.value.other_errors  # type: ignore[attr-defined]
    assert isinstance(other, HTTPStatusError) and other.url == second.get_url()


@pytest.mark.parametrize("how", ["Download.wait", "Download.error"])
def test_an_error_already_received_is_not_raised_again(
    server: FaultServer, manager: DownloadManager, how: str
) -> None:
    download = failed_download(manager, server, "missing.bin")
    if how == "Download.wait":
        with pytest.raises(HTTPStatusError):
            download.wait()
    else:
        error = download.error()
        assert error is not None and isinstance(error[1], HTTPStatusError)

    manager.wait()  # does not raise it again


def test_a_cancelled_download_is_not_an_error(
    server: FaultServer, manager: DownloadManager
) -> None:
    server.add("/slow.bin", Resource(DATA, stall_after=[1000], stall_seconds=30))
    download = manager.download(server.url("/slow.bin"))
    assert download is not None
    download.cancel()
    manager.wait()
    assert download.state is DownloadState.CANCELLED


def test_wait_without_raising_forgets_the_errors(
    server: FaultServer, manager: DownloadManager
) -> None:
    download = failed_download(manager, server, "missing.bin")

    manager.wait(raise_if_error=False)
    manager.wait()

    error = download.error()  # the download keeps its own
    assert error is not None and isinstance(error[1], HTTPStatusError)


def test_download_error_is_an_exc_info_tuple(server: FaultServer, manager: DownloadManager) -> None:
    download = failed_download(manager, server, "missing.bin")
    error = download.error()
    assert error is not None
    kind, value, traceback = error
    assert kind is HTTPStatusError and isinstance(value, kind)
    assert traceback is value.__traceback__


# -- a good file is never deleted before its replacement is verified --------------------------


def put_file(destdir: str, name: str, data: bytes) -> os.stat_result:
    path = os.path.join(destdir, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return os.stat(path)


def assert_untouched(destdir: str, name: str, data: bytes, before: os.stat_result) -> None:
    path = os.path.join(destdir, name)
    after = os.stat(path)
    assert read(path) == data
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_mistyped_checksum_keeps_the_file_already_there(
    server: FaultServer, manager: DownloadManager, destdir: str
) -> None:
    good = b"the good file " * 1000
    before = put_file(destdir, "f.bin", good)
    server.add("/f.bin", good)
    mistyped = "sha256:" + hashlib.sha256(good).hexdigest()[:-1] + "0"

    download = manager.download(server.url("/f.bin"), checksum=mistyped)
    assert download is not None
    with pytest.raises(ChecksumError) as caught:
        download.wait()

    assert_untouched(destdir, "f.bin", good, before)
    path = os.path.join(destdir, "f.bin")
    assert str(caught.value).endswith(f"; the file already at {path} was left as it was")
    assert listing(destdir) == ["f.bin"]


@pytest.mark.parametrize("status", [404, 503])
def test_a_server_that_fails_keeps_the_file_already_there(
    server: FaultServer, manager: DownloadManager, destdir: str, status: int
) -> None:
    old, new = b"old version " * 1000, b"new version " * 1000
    before = put_file(destdir, "f.bin", old)
    server.add("/f.bin", Resource(new, statuses=[status] * 10))

    download = manager.download(server.url("/f.bin"), checksum=sha256_spec(new))
    assert download is not None
    with pytest.raises(HTTPStatusError) as caught:
        download.wait()

    assert caught.value.status_code == status
    assert "was left as it was" in str(caught.value)
    assert_untouched(destdir, "f.bin", old, before)
    assert listing(destdir) == ["f.bin"]


def test_a_file_that_does_not_match_is_replaced_once_verified(
    server: FaultServer, destdir: str
) -> None:
    old, new = b"old version " * 1000, b"new version " * 1000
    put_file(destdir, "f.bin", old)
    gate = threading.Event()
    server.add("/f.bin", Resource(new, stall_after=[5000], stall_seconds=30))
    manager = DownloadManager(destdir, timeout=Timeouts(read=None, stall=None))

    download = manager.download(
        server.url("/f.bin"), checksum=sha256_spec(new), on_event=lambda e: gate.set()
    )
    assert download is not None
    assert gate.wait(10)
    assert read(os.path.join(destdir, "f.bin")) == old  # while it downloads
    download.cancel()
    download.wait(raise_if_error=False)
    assert read(os.path.join(destdir, "f.bin")) == old  # cancelled: still the old one
    server.add("/f.bin", new)

    download = manager.download(server.url("/f.bin"), checksum=sha256_spec(new))
    assert download is not None
    download.wait()
    manager.close()

    assert read(os.path.join(destdir, "f.bin")) == new
    assert listing(destdir) == ["f.bin"]


# -- open() reads ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["w", "wb", "a", "ab", "r+", "rb+", "x", "w+b"])
def test_open_refuses_modes_that_write(manager: DownloadManager, destdir: str, mode: str) -> None:
    before = put_file(destdir, "f.bin", DATA)
    with pytest.raises(ValueError, match="only reads files"), manager.open("f.bin", mode):
        pass
    assert_untouched(destdir, "f.bin", DATA, before)


def test_open_reads_text_with_the_keywords_of_open(manager: DownloadManager, destdir: str) -> None:
    put_file(destdir, "notes.txt", "café\r\nbar\r\n".encode("latin-1"))
    with manager.open("notes.txt", "r", encoding="latin-1", newline="") as handle:
        assert handle.read() == "café\r\nbar\r\n"
    with manager.open("notes.txt", "rt", encoding="ascii", errors="replace") as handle:
        assert handle.read() == "caf\ufffd\nbar\n"
    with manager.open("notes.txt") as handle:
        assert handle.read().startswith(b"caf")


# -- cancel(keep_partial=True): a leftover the next download resumes ------------------------


@pytest.mark.parametrize("connections", [1, 4])
def test_a_cancel_that_keeps_the_bytes_lets_the_next_download_resume(
    server: FaultServer, destdir: str, connections: int
) -> None:
    data = make_data(2_000_000, seed=3)
    server.add("/f.bin", Resource(data, stall_after=[200_000] * 8, stall_seconds=60))
    options: dict[str, Any] = {"connections": connections, "min_split_size": 256 * 1024}
    with DownloadManager(destdir, timeout=Timeouts(read=None, stall=None), **options) as manager:
        download = manager.download(server.url("/f.bin"))
        assert download is not None
        wait_until(lambda: download.received >= 150_000)
        manager.cancel(keep_partial=True)
        with pytest.raises(DownloadInterrupt):
            download.wait()
    kept = temporaries(destdir)
    assert [name.rsplit(".", 1)[1] for name in kept] == ["ckpt", "part"]
    assert sorted(listing(destdir)) == kept  # hidden leftovers only
    server.add("/f.bin", data)  # the server recovered
    sent = server.bytes_sent

    with DownloadManager(destdir, **options) as manager:
        manager.download(server.url("/f.bin"))

    assert read(os.path.join(destdir, "f.bin")) == data
    assert listing(destdir) == ["f.bin"]
    again = server.bytes_sent - sent
    assert again <= len(data) - 150_000  # only the missing bytes
    assert all(r.range is not None for r in server.requests_for("/f.bin")[-connections:])


def test_a_kept_cancel_without_validator_keeps_nothing(server: FaultServer, destdir: str) -> None:
    server.add(
        "/f.bin",
        Resource(DATA, etag=None, last_modified=None, stall_after=[20_000], stall_seconds=60),
    )
    with DownloadManager(destdir, timeout=Timeouts(read=None, stall=None)) as manager:
        download = manager.download(server.url("/f.bin"))
        assert download is not None
        wait_until(lambda: download.received > 0)
        download.cancel(keep_partial=True)
        download.wait(raise_if_error=False)
    assert listing(destdir) == []  # could not be resumed safely: removed


def test_the_session_attribute_is_made_on_first_read_and_followed(
    server: FaultServer, destdir: str
) -> None:
    server.add("/a.bin", make_data(1000))
    server.add("/b.bin", make_data(1000))
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/a.bin"))
        manager.wait()
        session = manager.session  # 0.1.1 code reads it: a DownloadSession now
        assert isinstance(session, DownloadSession)
        assert manager.session is session
        session.headers["X-Build"] = "nightly"
        manager.download(server.url("/b.bin"))

    assert "x-build" not in server.requests_for("/a.bin")[0].headers
    assert server.requests_for("/b.bin")[0].headers["x-build"] == "nightly"
