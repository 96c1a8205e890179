"""Bandwidth limits on real downloads: max_rate= of a Download and of a manager, --limit-rate.

Behaviour only, never timing (the accuracy of the limit is measured by
``benchmarks/rate_limit.py``): a limited file is complete and right, a rate
changed while running is taken, a throttled download is cancelled promptly
(bounded by a generous timeout), the stall guard does not hold our own limit
against the server but still catches a stalled server, bad rates are
refused. The bucket itself is tested on a fake clock in ``test_rate.py``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable

import pytest

from dlmanager import Download, DownloadManager, RetryPolicy, Timeouts
from dlmanager.cli import main
from dlmanager.events import DownloadEvent, DownloadState, EventKind
from dlmanager.session import DownloadSession
from tests.conftest import listing, read, run_python, start_cli, temporaries
from tests.server import FaultServer, Resource, make_data

#: Generous bounds: how long a step may take on a loaded machine, not how long it should.
WAIT = 30.0


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.02)


def gets(server: FaultServer, path: str) -> int:
    return sum(1 for request in server.requests_for(path) if request.method == "GET")


@pytest.mark.parametrize("connections", [1, 4])
def test_a_limited_download_is_complete_and_right(
    server: FaultServer,
    destdir: str,
    make_session: Callable[[], DownloadSession | None],
    connections: int,
) -> None:
    data = make_data(600_000)
    server.add("/f.bin", data)
    with DownloadManager(destdir, make_session(), connections=connections,
                         min_split_size=100_000, max_rate=8_000_000) as manager:  # fmt: skip
        download = manager.download(server.url("/f.bin"), max_rate=4_000_000)
        assert download is not None and download.max_rate == 4_000_000
        manager.wait()
    assert read(os.path.join(destdir, "f.bin")) == data
    assert listing(destdir) == ["f.bin"]


def test_raising_the_rate_of_a_running_download_is_taken(server: FaultServer, destdir: str) -> None:
    data = make_data(2_000_000)  # about 8 minutes at 4 KiB/s
    server.add("/f.bin", data)
    download = Download(server.url("/f.bin"), os.path.join(destdir, "f.bin"),
                        connections=4, min_split_size=100_000, max_rate=4096)  # fmt: skip
    download.start()
    try:
        wait_for(lambda: download.received > 0, "a first byte")
        download.max_rate = None
        assert download.join(WAIT), "the new rate was not taken"
    finally:
        download.cancel()
    download.wait()
    assert read(os.path.join(destdir, "f.bin")) == data


def test_raising_the_rate_of_a_manager_is_taken_by_its_running_downloads(
    server: FaultServer, destdir: str, make_session: Callable[[], DownloadSession | None]
) -> None:
    files = {f"/{n}.bin": make_data(1_000_000, seed=n) for n in range(3)}
    for path, data in files.items():
        server.add(path, data)
    with DownloadManager(destdir, make_session(), max_rate=8192) as manager:
        downloads = [manager.download(server.url(path)) for path in files]
        wait_for(lambda: all(d is not None and d.received > 0 for d in downloads), "bytes")
        assert manager.max_rate == 8192
        manager.max_rate = 50_000_000
        for download in downloads:
            assert download is not None and download.join(WAIT), "the new rate was not taken"
        manager.wait()
    for path, data in files.items():
        assert read(os.path.join(destdir, path[1:])) == data


@pytest.mark.parametrize("connections", [1, 4])
def test_a_throttled_download_is_cancelled_promptly(
    server: FaultServer, destdir: str, connections: int
) -> None:
    server.add("/f.bin", make_data(1_000_000))
    with DownloadManager(destdir, connections=connections, min_split_size=100_000,
                         max_rate=1000) as manager:  # fmt: skip
        download = manager.download(server.url("/f.bin"), max_rate=100)
        assert download is not None
        wait_for(lambda: download.received > 0, "a first byte")
        download.cancel()
        assert download.join(WAIT), "the throttled download did not stop"
    assert download.state is DownloadState.CANCELLED
    assert listing(destdir) == []


def test_the_stall_guard_does_not_hold_our_own_limit_against_the_server(
    server: FaultServer, destdir: str, fast_retry: RetryPolicy
) -> None:
    # A 0.3 s stall window asking for 50 kB/s, and our own limit of 8 KiB/s:
    # the download sleeps most of the time, yet the server is never slow.
    data = make_data(24_000)
    server.add("/f.bin", data)
    events: list[DownloadEvent] = []
    download = Download(server.url("/f.bin"), os.path.join(destdir, "f.bin"),
                        timeout=Timeouts(stall=0.3, min_speed=50_000), retry=fast_retry,
                        max_rate=8192, on_event=events.append)  # fmt: skip
    download.start()
    download.wait()
    assert read(os.path.join(destdir, "f.bin")) == data
    assert gets(server, "/f.bin") == 1
    assert not [event for event in events if event.kind is EventKind.RETRYING]


def test_a_stalled_server_is_still_caught_under_a_limit(
    server: FaultServer, destdir: str, fast_retry: RetryPolicy
) -> None:
    data = make_data(40_000)
    server.add("/f.bin", Resource(data, stall_after=[10_000]))
    download = Download(server.url("/f.bin"), os.path.join(destdir, "f.bin"),
                        timeout=Timeouts(stall=0.5, min_speed=1000), retry=fast_retry,
                        max_rate=100_000)  # fmt: skip
    download.start()
    download.wait()
    assert read(os.path.join(destdir, "f.bin")) == data
    assert gets(server, "/f.bin") == 2  # the stalled one, then the resume


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "2M", True])
def test_a_bad_rate_is_refused_naming_it(server: FaultServer, destdir: str, bad: object) -> None:
    url = server.url("/f.bin")
    with pytest.raises(ValueError, match="max_rate"):
        Download(url, os.path.join(destdir, "f.bin"), max_rate=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_rate"):
        DownloadManager(destdir, max_rate=bad)  # type: ignore[arg-type]
    with DownloadManager(destdir, max_rate=1000) as manager:
        with pytest.raises(ValueError, match="max_rate"):
            manager.download(url, max_rate=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="max_rate"):
            manager.max_rate = bad  # type: ignore[assignment]
        assert manager.max_rate == 1000
    download = Download(url, os.path.join(destdir, "f.bin"), max_rate=1000)
    with pytest.raises(ValueError, match="max_rate"):
        download.max_rate = bad  # type: ignore[assignment]
    assert download.max_rate == 1000
    assert listing(destdir) == []


# -- the command --------------------------------------------------------------------------


RATES = [
    ["--limit-rate", "10M"],
    ["--limit-rate-total", "20MB/s"],
    ["--limit-rate=1.5MiB", "--limit-rate-total=4000000"],
]


@pytest.mark.parametrize("options", RATES)
def test_the_command_takes_rates(server: FaultServer, destdir: str, options: list[str]) -> None:
    data = make_data(300_000)
    server.add("/f.bin", data)
    assert main([server.url("/f.bin"), "-d", destdir, "-q", *options]) == 0
    assert read(os.path.join(destdir, "f.bin")) == data


@pytest.mark.parametrize("option", ["--limit-rate", "--limit-rate-total"])
@pytest.mark.parametrize("bad", ["0", "-1M", "fast", "2X", "1M/h", ""])
def test_a_bad_rate_is_bad_usage(option: str, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["http://127.0.0.1:9/f.bin", f"{option}={bad}"])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: not a rate above 0: {bad!r}" in err


def test_the_command_limits_a_download_to_standard_output(server: FaultServer) -> None:
    data = b"0123456789" * 30_000
    server.add("/f.txt", data)
    result = run_python(["-m", "dlmanager", server.url("/f.txt"), "-o", "-",
                         "--limit-rate", "10M", "--limit-rate-total", "20M"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == data.decode()


@pytest.mark.parametrize("option", ["--limit-rate", "--limit-rate-total"])
def test_a_throttled_command_is_interrupted_with_its_bytes_kept(
    server: FaultServer, destdir: str, option: str
) -> None:
    # 4 MB at 2 KiB/s: half an hour; unlimited, a blink (status 0, not 130).
    server.add("/f.bin", make_data(4_000_000))
    process = start_cli([server.url("/f.bin"), "-d", destdir, option, "2K"])
    try:
        wait_for(lambda: bool(temporaries(destdir)) and server.bytes_sent > 0, "a first byte")
        assert process.poll() is None, "dlmanager exited early"
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "f.bin" not in listing(destdir)  # no partial file under the final name


def test_a_limited_download_over_mirrors_shares_its_limit(destdir: str) -> None:
    """Segments over two sources, one refused at first, all under one limit."""
    data = make_data(800_000, seed=5)
    with FaultServer().start() as first, FaultServer().start() as second:
        first.add("/f.bin", Resource(data, statuses=[503, 503, 503, 503, 503, 503]))
        second.add("/f.bin", data)
        with DownloadManager(destdir, retry=RetryPolicy(total=1, backoff_factor=0.001),
                             connections=4, min_split_size=100_000) as manager:  # fmt: skip
            download = manager.download(
                first.url("/f.bin"), mirrors=[second.url("/f.bin")], max_rate=8_000_000
            )
            assert download is not None
            download.wait()
        assert gets(second, "/f.bin") >= 1
    assert read(os.path.join(destdir, "f.bin")) == data
    assert listing(destdir) == ["f.bin"]
