"""One manager driven from many threads, for many downloads: no hang, no leak, no wrong cancel.

Each test reproduces a way an integrator (a test harness with several
threads, thousands of downloads in one process) met a hang, a leaked
resource or a download cancelled by mistake, through the public API, with
real threads and the real loopback server.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dlmanager import (
    DownloadInterrupt,
    DownloadManager,
    DownloadState,
    PersistLimit,
    RetryPolicy,
    StorageError,
    Timeouts,
)
from dlmanager.disk import locks
from tests.conftest import listing, read
from tests.loopback import SilentListener
from tests.server import FaultServer, Resource, make_data

DATA = make_data(50_000, seed=12)
WAIT = 20.0


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def stalled(server: FaultServer, name: str = "stalled.bin") -> str:
    """The URL of a file whose body stalls until the server stops."""
    server.add(f"/{name}", Resource(DATA, stall_after=[1000] * 5, stall_seconds=60))
    return server.url(f"/{name}")


# -- hangs and wrong cancels -------------------------------------------------------------------


def test_a_failure_taking_the_lock_gives_the_slot_back(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add("/f.bin", DATA)
    real = locks.StateDir.acquire
    failures = iter([OSError(5, "Input/output error")] * 3)

    def failing(self: Any, name: str, operation: int, *, blocking: bool) -> Any:
        error = next(failures, None)
        if error is not None:
            raise error
        return real(self, name, operation, blocking=blocking)

    monkeypatch.setattr(locks.StateDir, "acquire", failing)
    with DownloadManager(destdir, max_workers=1) as manager:
        for _ in range(3):  # more failures than slots
            download = manager.download(server.url("/f.bin"))
            assert download is not None
            with pytest.raises(StorageError, match=r"cannot lock .*Input/output error"):
                download.wait()
        download = manager.download(server.url("/f.bin"))
        assert download is not None
        download.wait()  # it got a slot: not QUEUED forever
    assert read(os.path.join(destdir, "f.bin")) == DATA


def test_a_destination_removed_and_created_again(server: FaultServer, tmp_path: Any) -> None:
    destdir = os.path.join(os.fspath(tmp_path), "dest")
    server.add("/f.bin", DATA)
    server.add("/g.bin", DATA)
    with DownloadManager(destdir, max_workers=1) as manager:
        os.rmdir(destdir)
        download = manager.download(server.url("/f.bin"))
        assert download is not None
        with pytest.raises(StorageError, match="is gone"):
            download.wait()
        os.mkdir(destdir)
        download = manager.download(server.url("/g.bin"))
        assert download is not None
        download.wait()
    assert listing(destdir) == ["g.bin"]


def test_wait_from_many_threads_while_another_starts_downloads(
    server: FaultServer, destdir: str
) -> None:
    for i in range(200):
        server.add(f"/f{i}.bin", make_data(2_000, seed=i))
    errors: list[BaseException] = []
    stop = threading.Event()
    manager = DownloadManager(destdir, max_workers=4)

    def waiter() -> None:
        while not stop.is_set():
            try:
                manager.wait()
            except BaseException as exc:
                errors.append(exc)

    waiters = [threading.Thread(target=waiter) for _ in range(6)]
    for thread in waiters:
        thread.start()
    try:
        downloads = [manager.download(server.url(f"/f{i}.bin")) for i in range(200)]
        manager.wait()
    finally:
        stop.set()
        for thread in waiters:
            thread.join(WAIT)
        manager.close()
    assert errors == []
    assert all(d is not None and d.state is DownloadState.DONE for d in downloads)
    assert len(listing(destdir)) == 200


def test_wait_waits_for_downloads_started_while_it_waits(server: FaultServer, destdir: str) -> None:
    server.add("/slow.bin", Resource(DATA, trickle=(10_000, 0.05)))
    server.add("/late.bin", Resource(DATA, trickle=(10_000, 0.05)))
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/slow.bin"))
        late: list[Any] = []

        def start_late() -> None:
            wait_until(lambda: os.path.exists(os.path.join(destdir, ".dlmanager")), "a lock")
            late.append(manager.download(server.url("/late.bin")))

        starter = threading.Thread(target=start_late)
        starter.start()
        manager.wait()
        starter.join(WAIT)
        assert late and late[0].state is DownloadState.DONE


def test_download_right_after_cancel_starts_a_new_download(
    server: FaultServer, destdir: str
) -> None:
    url = stalled(server)
    with DownloadManager(destdir, timeout=Timeouts(read=None, stall=None)) as manager:
        first = manager.download(url)
        assert first is not None
        wait_until(lambda: first.received > 0, "the first bytes")
        first.cancel()
        server.add("/stalled.bin", DATA)  # healthy from now on
        again = manager.download(url)

        assert again is not None and again is not first
        again.wait()  # not DownloadInterrupt
        with pytest.raises(DownloadInterrupt):
            first.wait()
    assert read(os.path.join(destdir, "stalled.bin")) == DATA
    assert listing(destdir) == ["stalled.bin"]


def test_a_cancel_if_that_raises_cancels_nothing_and_propagates(
    server: FaultServer, destdir: str
) -> None:
    url = stalled(server)
    server.add("/other.bin", Resource(DATA, stall_after=[1000], stall_seconds=60))
    with DownloadManager(destdir, timeout=Timeouts(read=None, stall=None)) as manager:
        downloads = [manager.download(url), manager.download(server.url("/other.bin"))]

        def broken(download: Any) -> bool:
            if download.get_url() == url:
                return True
            raise KeyError("no such build")

        with pytest.raises(KeyError, match="no such build"):
            manager.cancel(cancel_if=broken)
        assert not any(d is not None and d.is_canceled() for d in downloads)
        manager.cancel()


@pytest.mark.parametrize("how", ["close", "with block"])
def test_download_on_a_closed_manager_raises(server: FaultServer, destdir: str, how: str) -> None:
    server.add("/f.bin", DATA)
    if how == "close":
        manager = DownloadManager(destdir)
        manager.close()
        manager.close()  # again: nothing
    else:
        with DownloadManager(destdir) as manager:
            pass
    with pytest.raises(RuntimeError, match="is closed"):
        manager.download(server.url("/f.bin"))
    assert server.requests == []


# -- resources ---------------------------------------------------------------------------------


def test_queued_downloads_hold_no_thread_and_no_file(server: FaultServer, destdir: str) -> None:
    url = stalled(server)
    for i in range(300):
        server.add(f"/q{i}.bin", DATA)
    manager = DownloadManager(destdir, max_workers=1, timeout=Timeouts(read=None, stall=None))
    try:
        running = manager.download(url)
        assert running is not None
        wait_until(lambda: running.received > 0, "the first bytes")
        threads, fds = threading.active_count(), open_fds()

        queued = [manager.download(server.url(f"/q{i}.bin")) for i in range(300)]

        assert all(d is not None and d.state is DownloadState.QUEUED for d in queued)
        # None more (one may have ended meanwhile: a server thread, a socket).
        assert threading.active_count() <= threads
        assert open_fds() <= fds
        manager.cancel(cancel_if=lambda d: d is not running)
        for download in queued:
            assert download is not None
            with pytest.raises(DownloadInterrupt):
                download.wait()
        assert server.requests_for("/q0.bin") == []
    finally:
        manager.close()
    assert listing(destdir) == []


def test_close_returns_once_its_threads_have_ended(server: FaultServer, destdir: str) -> None:
    for i in range(20):
        server.add(f"/f{i}.bin", make_data(300_000, seed=i))
    before = set(threading.enumerate())
    manager = DownloadManager(
        destdir, persist_limit=PersistLimit(10**9), connections=4, min_split_size=64 * 1024
    )
    for i in range(20):
        manager.download(server.url(f"/f{i}.bin"))
    manager.wait()

    manager.close()

    left = [t.name for t in set(threading.enumerate()) - before if t.is_alive()]
    assert left == []


def test_without_a_limit_nothing_is_indexed(server: FaultServer, destdir: str) -> None:
    for i in range(50):
        server.add(f"/f{i}.bin", b"x")
    with DownloadManager(destdir, max_workers=8) as manager:
        for i in range(50):
            manager.download(server.url(f"/f{i}.bin"))
        manager.wait()
        for i in range(50):
            assert manager.download(server.url(f"/f{i}.bin")) is None  # hits
        assert manager.persist_limit.files == []


def test_with_a_limit_the_index_is_the_directory(server: FaultServer, destdir: str) -> None:
    for i in range(30):
        server.add(f"/f{i}.bin", b"x" * 1000)
    limit = PersistLimit(size_limit=10_000, file_limit=1)
    with DownloadManager(destdir, persist_limit=limit) as manager:
        for i in range(30):
            manager.download(server.url(f"/f{i}.bin"))
        manager.wait()
        names = sorted(os.path.basename(f.path) for f in limit.files)
        assert names == sorted(listing(destdir))
        assert len(names) < 30


# -- names and paths ---------------------------------------------------------------------------


def test_names_too_long_for_the_filesystem_are_refused_at_once(
    server: FaultServer, destdir: str
) -> None:
    server.add("/f.bin", DATA)
    longest = os.pathconf(destdir, "PC_NAME_MAX") - len("..12345678.ckpt.new")
    with DownloadManager(destdir) as manager:
        for name in ("a" * 252 + ".txt", "a" * (longest + 1), "é" * (longest // 2 + 1)):
            with pytest.raises(ValueError, match="file name too long"):
                manager.download(server.url("/f.bin"), name)
        assert server.requests == []
        fits = "b" * (longest - 4) + ".bin"
        download = manager.download(server.url("/f.bin"), fits)
        assert download is not None
        download.wait()
    assert listing(destdir) == [fits]


def test_a_relative_destination_is_resolved_once(
    server: FaultServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.add("/a.bin", DATA)
    server.add("/b.bin", DATA)
    monkeypatch.chdir(tmp_path)
    os.mkdir("elsewhere")
    limit = PersistLimit(size_limit=len(DATA), file_limit=1)
    with DownloadManager("dest", persist_limit=limit) as manager:
        assert manager.get_dest("a.bin") == os.path.join("dest", "a.bin")  # as given
        monkeypatch.chdir("elsewhere")
        manager.download(server.url("/a.bin"))
        manager.wait()
        manager.download(server.url("/b.bin"))
        manager.wait()
    monkeypatch.chdir(tmp_path)
    assert listing("dest") == ["b.bin"]  # evicted a.bin in the right folder
    assert listing("elsewhere") == []


# -- accounting --------------------------------------------------------------------------------


def test_two_managers_share_one_limit_until_the_last_closes(
    server: FaultServer, destdir: str
) -> None:
    server.add("/f.bin", make_data(100_000))
    limit = PersistLimit(size_limit=500_000, file_limit=1)
    first = DownloadManager(destdir, persist_limit=limit)
    second = DownloadManager(destdir, persist_limit=limit)
    first.close()
    assert limit.watching
    with open(os.path.join(destdir, "by-hand.bin"), "wb") as handle:
        handle.write(b"h" * 600_000)
    wait_until(lambda: limit.total_size == 600_000, "the file added by hand counted")
    second.download(server.url("/f.bin"))
    second.wait()
    second.close()
    assert not limit.watching
    assert listing(destdir) == ["f.bin"]  # the cap held: by-hand.bin was evicted


def test_a_cancelled_download_releases_its_reservation(server: FaultServer, destdir: str) -> None:
    url = stalled(server)
    limit = PersistLimit(size_limit=10**9)
    with DownloadManager(destdir, persist_limit=limit, timeout=Timeouts(read=None)) as manager:
        download = manager.download(url)
        assert download is not None
        wait_until(lambda: limit.reserved == len(DATA), "the reservation")
        download.cancel()
        download.wait(raise_if_error=False)
        assert limit.reserved == 0


def test_two_managers_of_one_process_say_another_manager(
    server: FaultServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/f.bin", Resource(DATA, trickle=(10_000, 0.05)))
    with (
        caplog.at_level(logging.INFO, logger="dlmanager"),
        DownloadManager(destdir) as first,
        DownloadManager(destdir) as second,
    ):
        a = first.download(server.url("/f.bin"))
        assert a is not None
        wait_until(lambda: a.received > 0, "the first bytes")
        b = second.download(server.url("/f.bin"))
        assert b is not None
        b.wait()
    assert "is being downloaded by another manager: waiting" in caplog.text
    assert "another process" not in caplog.text
    assert len(server.requests_for("/f.bin")) == 1


# -- no secret in a log, an error, a repr or a thread name --------------------------------------

SECRETS = ("s3cr3t-pw", "tok-123", "AKIAEXAMPLE", "goog-sig")


QUERY = "?token=tok-123&x=1&X-Amz-Credential=AKIAEXAMPLE&X-Goog-Signature=goog-sig"


def secret_url(server: FaultServer, path: str) -> str:
    host, port = server.host_port
    return f"http://alice:s3cr3t-pw@{host}:{port}{path}{QUERY}"


def test_credentials_never_reach_a_log_an_error_a_repr_or_a_thread_name(
    server: FaultServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/ok.bin" + QUERY, Resource(DATA, drop_after=[10_000]))
    server.add("/missing.bin" + QUERY, Resource(DATA, statuses=[404]))
    names: set[str] = set()
    shown: list[str] = []
    with (
        caplog.at_level(logging.DEBUG),
        DownloadManager(destdir, retry=RetryPolicy(backoff_factor=0.001)) as manager,
    ):
        ok = manager.download(secret_url(server, "/ok.bin"), "ok.bin")
        bad = manager.download(secret_url(server, "/missing.bin"), "missing.bin")
        assert ok is not None and bad is not None
        shown += [repr(ok), repr(bad)]
        names.update(t.name for t in threading.enumerate())
        ok.wait()
        with pytest.raises(Exception) as caught:
            bad.wait()
        shown += [str(caught.value), repr(caught.value)]
    records = [r.getMessage() + (r.exc_text or "") + r.threadName for r in caplog.records]
    assert len(records) > 10  # the test saw the DEBUG records
    for text in [*records, *shown, *names]:
        for secret in SECRETS:
            assert secret not in text, text
    assert "token=***" in str(caught.value)
    assert ok.get_url() == secret_url(server, "/ok.bin")  # what the caller gave is kept


def test_watchdog_debug_records_about_the_directory_are_dropped(
    server: FaultServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/f.bin", make_data(2_000_000))
    with (
        caplog.at_level(logging.DEBUG),
        DownloadManager(destdir, persist_limit=PersistLimit(10**9)) as manager,
    ):
        manager.download(server.url("/f.bin"))
    noisy = [r for r in caplog.records if r.name.startswith("watchdog")]
    assert noisy == [], [r.getMessage() for r in noisy[:3]]
    assert any(r.name.startswith("dlmanager") for r in caplog.records)


def test_close_cancels_a_download_that_a_newer_one_displaced(
    server: FaultServer, destdir: str
) -> None:
    import hashlib

    server.add("/f.bin", Resource(DATA, trickle=(256, 0.05)))
    manager = DownloadManager(destdir, max_workers=2)
    first = manager.download(server.url("/f.bin"))
    # Another checksum: a new download, which waits for the first one.
    second = manager.download(
        server.url("/f.bin"), checksum="sha256:" + hashlib.sha256(DATA).hexdigest()
    )
    assert first is not None and second is not None and first is not second
    wait_until(lambda: first.received > 0, "the first bytes")

    manager.close()

    assert first.state is DownloadState.CANCELLED
    assert second.state is DownloadState.CANCELLED
    assert listing(destdir) == []


def test_a_cancel_ends_a_request_waiting_for_headers_at_once(
    silent_listener: SilentListener, destdir: str
) -> None:
    before = set(threading.enumerate())
    manager = DownloadManager(destdir, timeout=Timeouts(read=60))
    download = manager.download(silent_listener.url("/f.bin"))
    assert download is not None
    # The request arrives, and is never answered.
    with silent_listener.accept(timeout=WAIT) as accepted:
        accepted.settimeout(WAIT)
        assert accepted.recv(4096).startswith(b"GET /f.bin")
        manager.close()
        # The client's side of the connection is shut down at once, not
        # when the 60 s read timeout passes.
        assert accepted.recv(4096) == b""
    assert download.state is DownloadState.CANCELLED
    assert [t.name for t in set(threading.enumerate()) - before] == []
