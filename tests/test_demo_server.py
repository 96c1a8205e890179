"""The demo's files and server (dlmanager.cli.demo_files, dlmanager.cli.demo_server): content,
HTTP semantics, faults, stats, prompt shutdown."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import os
import threading
from collections.abc import Callable, Iterator, Sequence

import pytest
import requests
from requests.exceptions import ChunkedEncodingError

from dlmanager import DownloadManager, RetryPolicy, Timeouts
from dlmanager.cli.demo_files import BLOCK_SIZE, DemoFile, Fault
from dlmanager.cli.demo_server import HOST, LAST_MODIFIED, DemoServer, DemoStats
from tests.conftest import read

SIZE = BLOCK_SIZE * 2 + 1234
PLAIN = DemoFile("plain.bin", SIZE)
JOIN_TIMEOUT = 5.0
BROKEN = (ChunkedEncodingError, requests.ConnectionError)
"""What requests raises when a body ends before its Content-Length."""

Serve = Callable[..., DemoServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(*files, rate=None)`` starts a DemoServer, closed after the test."""
    servers: list[DemoServer] = []

    def start(*files: DemoFile, rate: int | None = None) -> DemoServer:
        server = DemoServer(files, rate=rate).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def get(url: str, headers: dict[str, str] | None = None) -> requests.Response:
    """GET *url* on a new connection, reading the whole body."""
    with requests.get(url, headers=headers, timeout=5) as response:
        return response


def stream(
    url: str, headers: dict[str, str] | None = None, read_timeout: float = 5
) -> tuple[bytes, requests.RequestException | None]:
    """Read *url* byte by byte; return the body received and the error that ended it."""
    received = bytearray()
    with requests.get(url, headers=headers, stream=True, timeout=(5, read_timeout)) as response:
        try:
            for chunk in response.iter_content(chunk_size=1):
                received += chunk
        except requests.RequestException as error:
            return bytes(received), error
    return bytes(received), None


def run_in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


# -- content ------------------------------------------------------------------------


def test_content_is_deterministic_and_sliceable() -> None:
    data = PLAIN.read()
    assert len(data) == SIZE
    assert DemoFile("plain.bin", SIZE).read() == data
    for start, stop in [(0, 1), (BLOCK_SIZE - 3, BLOCK_SIZE + 3), (100, SIZE), (SIZE - 1, None)]:
        assert PLAIN.read(start, stop) == data[start:stop]
    assert b"".join(PLAIN.chunks(5, BLOCK_SIZE * 2)) == data[5 : BLOCK_SIZE * 2]
    assert DemoFile("other.bin", SIZE).read() != data
    # Blocks differ from each other, so a resume at a wrong offset cannot go unnoticed.
    assert data[:BLOCK_SIZE] != data[BLOCK_SIZE : 2 * BLOCK_SIZE]
    assert PLAIN.sha256() == hashlib.sha256(data).hexdigest()
    assert DemoFile("empty", 0).read() == b""


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": ""},
        {"name": "a/b"},
        {"name": ".."},
        {"size": -1},
        {"fault": Fault.DROP, "at": SIZE},
        {"fault": Fault.STALL, "at": -1},
        {"fault": Fault.STALL, "stall": 0},
        {"fault": Fault.SLOW, "slow_rate": 0},
    ],
)
def test_invalid_files_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(PLAIN, **kwargs)


def test_invalid_servers_are_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        DemoServer([PLAIN, PLAIN])
    with pytest.raises(ValueError, match="rate"):
        DemoServer([PLAIN], rate=0)


def test_lifecycle() -> None:
    server = DemoServer([PLAIN])
    with pytest.raises(RuntimeError, match="not started"):
        server.url(PLAIN.name)
    with server:
        with pytest.raises(RuntimeError, match="only once"):
            server.start()
        assert get(server.url(PLAIN.name)).status_code == 200
    server.close()  # idempotent
    with pytest.raises(RuntimeError, match="only once"):
        server.start()
    DemoServer([PLAIN]).close()  # never started


# -- HTTP -----------------------------------------------------------------------------


def test_binds_loopback_only(serve: Serve) -> None:
    server = serve(PLAIN)
    host, port = server.address
    assert host == HOST == "127.0.0.1"
    assert server.base_url == f"http://127.0.0.1:{port}"
    assert server.url(PLAIN.name) == f"http://127.0.0.1:{port}/plain.bin"


def test_full_get(serve: Serve) -> None:
    server = serve(PLAIN)
    response = get(server.url(PLAIN.name))
    assert response.status_code == 200
    assert response.content == PLAIN.read()
    assert hashlib.sha256(response.content).hexdigest() == server.sha256(PLAIN.name)
    assert response.headers["Content-Length"] == str(SIZE)
    assert response.headers["ETag"] == PLAIN.etag
    assert PLAIN.etag.startswith('"')
    assert response.headers["Last-Modified"] == LAST_MODIFIED
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in response.headers


def test_names_are_quoted(serve: Serve) -> None:
    spaced = DemoFile("a b%.bin", 10)
    server = serve(spaced)
    assert server.url(spaced.name).endswith("/a%20b%25.bin")
    assert get(server.url(spaced.name)).content == spaced.read()


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [
        ("bytes=10-99", 10, 100),
        ("bytes=0-0", 0, 1),
        (f"bytes={BLOCK_SIZE - 5}-", BLOCK_SIZE - 5, SIZE),
        ("bytes=-100", SIZE - 100, SIZE),
        (f"bytes=-{SIZE * 2}", 0, SIZE),
        (f"bytes=5-{SIZE * 2}", 5, SIZE),
        (f"bytes=0-{SIZE - 1}", 0, SIZE),
    ],
)
def test_range(serve: Serve, header: str, start: int, stop: int) -> None:
    server = serve(PLAIN)
    response = get(server.url(PLAIN.name), {"Range": header})
    assert response.status_code == 206
    assert response.content == PLAIN.read()[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"
    assert response.headers["Content-Length"] == str(stop - start)


@pytest.mark.parametrize("header", ["bytes=1-2,5-6", "bytes=9-3", "bytes=-", "items=1-2"])
def test_unusable_range_is_ignored(serve: Serve, header: str) -> None:
    server = serve(PLAIN)
    response = get(server.url(PLAIN.name), {"Range": header})
    assert response.status_code == 200
    assert response.content == PLAIN.read()


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 10}-{SIZE + 20}", "bytes=-0"])
def test_unsatisfiable_range(serve: Serve, header: str) -> None:
    server = serve(PLAIN)
    response = get(server.url(PLAIN.name), {"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize(
    ("if_range", "status"),
    [(PLAIN.etag, 206), (LAST_MODIFIED, 206), ('"stale"', 200), ("W/" + PLAIN.etag, 200)],
)
def test_if_range(serve: Serve, if_range: str, status: int) -> None:
    server = serve(PLAIN)
    response = get(server.url(PLAIN.name), {"Range": "bytes=100-", "If-Range": if_range})
    assert response.status_code == status
    assert response.content == PLAIN.read()[100 if status == 206 else 0 :]


def test_unknown_path(serve: Serve) -> None:
    server = serve(PLAIN)
    assert get(server.base_url + "/missing.bin").status_code == 404
    assert get(server.base_url + "/").status_code == 404
    assert get(server.base_url + "/plain.bin/x").status_code == 404


def test_head(serve: Serve) -> None:
    server = serve(PLAIN)
    with requests.head(server.url(PLAIN.name), timeout=5) as response:
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["Content-Length"] == str(SIZE)
        assert response.headers["ETag"] == PLAIN.etag
    with requests.head(server.base_url + "/missing", timeout=5) as response:
        assert response.status_code == 404


def test_keep_alive(serve: Serve) -> None:
    server = serve(PLAIN)
    host, port = server.address
    connection = http.client.HTTPConnection(host, port, timeout=5)
    try:
        connection.request("GET", "/plain.bin", headers={"Range": "bytes=0-9"})
        first = connection.getresponse()
        assert first.read() == PLAIN.read(0, 10)
        sock = connection.sock
        assert sock is not None
        connection.request("GET", "/missing")
        second = connection.getresponse()
        assert second.status == 404
        second.read()
        connection.request("HEAD", "/plain.bin")
        third = connection.getresponse()
        assert third.read() == b""
        assert connection.sock is sock
        assert server.stats.connections == 1
        assert server.stats.requests == 3
    finally:
        connection.close()


# -- faults -----------------------------------------------------------------------------


def test_drop_cuts_the_first_get_it_hits(serve: Serve) -> None:
    dropping = DemoFile("drop.bin", 20_000, Fault.DROP, at=3_000)
    server = serve(dropping)
    url = server.url(dropping.name)
    data = dropping.read()
    # A range before the fault offset does not set it off.
    assert get(url, {"Range": "bytes=0-2999"}).content == data[:3000]
    assert server.stats.faults[Fault.DROP] == 0
    # A HEAD does not either.
    requests.head(url, timeout=5).close()
    assert server.stats.faults[Fault.DROP] == 0
    received, error = stream(url)
    assert received == data[:3000]
    assert isinstance(error, BROKEN)
    assert server.stats.faults[Fault.DROP] == 1
    # Once only: the resume and a full GET succeed.
    resumed = get(url, {"Range": "bytes=3000-", "If-Range": dropping.etag})
    assert resumed.status_code == 206
    assert resumed.content == data[3000:]
    assert get(url).content == data
    assert server.stats.faults[Fault.DROP] == 1


def test_drop_inside_a_range(serve: Serve) -> None:
    dropping = DemoFile("drop.bin", 20_000, Fault.DROP, at=3_000)
    server = serve(dropping)
    received, error = stream(server.url(dropping.name), {"Range": "bytes=2000-9999"})
    assert received == dropping.read(2000, 3000)
    assert isinstance(error, BROKEN)


def test_unavailable_answers_503_once(serve: Serve) -> None:
    busy = DemoFile("busy.bin", 5_000, Fault.UNAVAILABLE)
    server = serve(busy)
    url = server.url(busy.name)
    with requests.head(url, timeout=5) as head:
        assert head.status_code == 200
    first = get(url)
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "1"
    second = get(url)
    assert second.status_code == 200
    assert second.content == busy.read()
    assert server.stats.faults == {
        Fault.DROP: 0,
        Fault.STALL: 0,
        Fault.UNAVAILABLE: 1,
        Fault.SLOW: 0,
    }


def test_short_stall_then_close(serve: Serve) -> None:
    stalling = DemoFile("stall.bin", 10_000, Fault.STALL, at=2_500, stall=0.3)
    server = serve(stalling)
    url = server.url(stalling.name)
    received, error = stream(url)  # no read timeout hit: the server closes after the stall
    assert received == stalling.read(0, 2500)
    assert isinstance(error, BROKEN)
    assert get(url).content == stalling.read()
    assert server.stats.faults[Fault.STALL] == 1


def test_stall_times_out_the_client_and_close_is_prompt(serve: Serve) -> None:
    stalling = DemoFile("stall.bin", 10_000, Fault.STALL, at=2_500, stall=600)
    server = serve(stalling)
    received, error = stream(server.url(stalling.name), read_timeout=0.3)
    assert received == stalling.read(0, 2500)
    assert isinstance(error, requests.ConnectionError)
    assert "timed out" in str(error)
    assert server.open_connections == 1
    # The handler is still stalled (for 600 s): closing ends the stall.
    closer = run_in_thread(server.close)
    closer.join(JOIN_TIMEOUT)
    assert not closer.is_alive()
    assert server.open_connections == 0


def test_close_is_prompt_while_throttled(serve: Serve) -> None:
    big = DemoFile("big.bin", 1_000_000)
    server = serve(big, rate=2_000)
    started = threading.Event()
    outcome: list[bytes] = []

    def client() -> None:
        received = bytearray()
        try:
            with requests.get(server.url(big.name), stream=True, timeout=(5, 30)) as response:
                for chunk in response.iter_content(chunk_size=1):
                    received += chunk
                    started.set()
        except requests.RequestException:
            pass
        outcome.append(bytes(received))

    reader = run_in_thread(client)
    assert started.wait(JOIN_TIMEOUT)
    closer = run_in_thread(server.close)
    closer.join(JOIN_TIMEOUT)
    assert not closer.is_alive()
    assert server.open_connections == 0
    reader.join(JOIN_TIMEOUT)
    assert not reader.is_alive()
    assert 0 < len(outcome[0]) < big.size
    assert outcome[0] == big.read(0, len(outcome[0]))


def test_throttled_content_is_intact(serve: Serve) -> None:
    small = DemoFile("small.bin", 3_000)
    server = serve(small, rate=20_000)
    assert get(server.url(small.name)).content == small.read()


def test_slow_fault_serves_everything(serve: Serve) -> None:
    slow = DemoFile("slow.bin", 30_000, Fault.SLOW, at=10_000, slow_rate=200_000)
    server = serve(slow)
    assert get(server.url(slow.name)).content == slow.read()
    assert get(server.url(slow.name)).content == slow.read()
    assert server.stats.faults[Fault.SLOW] == 1


def test_stats(serve: Serve) -> None:
    dropping = DemoFile("drop.bin", 1_000, Fault.DROP, at=400)
    server = serve(PLAIN, dropping)
    assert server.stats == DemoStats(faults=dict.fromkeys(Fault, 0))
    get(server.url(PLAIN.name))  # 1 request, SIZE bytes
    get(server.url(PLAIN.name), {"Range": "bytes=10-19"})  # range, 10 bytes
    get(server.url(PLAIN.name), {"Range": f"bytes={SIZE}-"})  # 416: no file bytes
    requests.head(server.url(PLAIN.name), timeout=5).close()
    get(server.base_url + "/missing")
    stream(server.url(dropping.name))  # drop: 400 bytes
    get(server.url(dropping.name), {"Range": "bytes=400-"})  # range, 600 bytes
    stats = server.stats
    assert stats.connections == 7  # one per requests.get
    assert stats.requests == 7
    assert stats.range_requests == 2
    assert stats.bytes_sent == SIZE + 10 + 400 + 600
    assert stats.faults[Fault.DROP] == 1
    assert sum(stats.faults.values()) == 1


def test_sha256_is_cached(serve: Serve) -> None:
    server = serve(PLAIN)
    assert server.sha256(PLAIN.name) == server.sha256(PLAIN.name) == PLAIN.sha256()
    with pytest.raises(KeyError):
        server.sha256("missing")


# -- through dlmanager --------------------------------------------------------------------


def demo_files() -> Sequence[DemoFile]:
    return [
        DemoFile("plain.bin", 150_000),
        DemoFile("drop.bin", 150_000, Fault.DROP, at=70_000),
        DemoFile("stall.bin", 150_000, Fault.STALL, at=80_000, stall=600),
        DemoFile("busy.bin", 150_000, Fault.UNAVAILABLE),
        DemoFile("slow.bin", 150_000, Fault.SLOW, at=1_000, slow_rate=1_000_000),
    ]


def test_download_manager_gets_every_file(serve: Serve, destdir: str) -> None:
    files = demo_files()
    server = serve(*files)
    retry = RetryPolicy(backoff_factor=0.001, backoff_max=0.01, retry_after_max=0.01)
    with DownloadManager(destdir, retry=retry, timeout=Timeouts(read=0.5, stall=None)) as manager:
        for file in files:
            manager.download(server.url(file.name), checksum=f"sha256:{server.sha256(file.name)}")
    for file in files:
        data = read(os.path.join(destdir, file.name))
        assert hashlib.sha256(data).hexdigest() == server.sha256(file.name)
    assert server.stats.faults == dict.fromkeys(Fault, 1)
    assert server.stats.range_requests >= 2  # the drop and the stall were resumed
