"""Tests of the fault-injecting test server itself, so every switch is known to work."""

from __future__ import annotations

import gzip
import http.client
import time
from collections.abc import Iterator

import pytest
import requests
from requests.exceptions import ChunkedEncodingError

from tests.loopback import parse_range
from tests.server import (
    CHANGED_LAST_MODIFIED,
    DEFAULT_LAST_MODIFIED,
    FaultServer,
    Resource,
    make_data,
    strong_etag,
)

DATA = make_data(1000)
PATH = "/file.bin"


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer().start() as srv:
        yield srv


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as sess:
        yield sess


def get(
    session: requests.Session, server: FaultServer, headers: dict[str, str] | None = None
) -> requests.Response:
    """GET the test file, reading the whole body, and close the response."""
    with session.get(server.url(PATH), headers=headers, timeout=5) as response:
        return response


def read_until_error(
    session: requests.Session, server: FaultServer, timeout: float = 5
) -> tuple[int, requests.RequestException | None]:
    """Stream the test file; return the body bytes received and the error that ended it."""
    received = 0
    with session.get(server.url(PATH), stream=True, timeout=(5, timeout)) as response:
        try:
            for chunk in response.iter_content(chunk_size=1):
                received += len(chunk)
        except requests.RequestException as error:
            return received, error
    return received, None


def test_make_data_is_deterministic() -> None:
    assert make_data(100) == make_data(100)
    assert len(make_data(12345, seed=3)) == 12345
    assert make_data(100, seed=1) != make_data(100, seed=2)


def test_plain_get(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, DATA)
    response = get(session, server)
    assert response.status_code == 200
    assert response.content == DATA
    assert response.headers["ETag"] == strong_etag(DATA)
    assert response.headers["ETag"].startswith('"')
    assert response.headers["Last-Modified"] == DEFAULT_LAST_MODIFIED
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Content-Length"] == str(len(DATA))
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_bodies_are_read_and_recorded_and_faults_consumed(
    server: FaultServer, session: requests.Session
) -> None:
    server.add(PATH, Resource(DATA, statuses=[503]))

    first = session.post(server.url(PATH), data=b"form=1", timeout=5)
    second = session.put(server.url(PATH), data=iter([b"chun", b"ked"]), timeout=5)  # chunked
    third = session.get(server.url(PATH), timeout=5)

    assert (first.status_code, second.content, third.content) == (503, DATA, DATA)
    assert [(r.method, r.body) for r in server.requests] == [
        ("POST", b"form=1"),
        ("PUT", b"chunked"),
        ("GET", None),
    ]
    assert server.requests[1].headers["transfer-encoding"] == "chunked"
    assert ("Transfer-Encoding", "chunked") in server.requests[1].lines


def test_no_validators_no_accept_ranges(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, etag=None, last_modified=None, accept_ranges=False))
    response = get(session, server)
    assert response.content == DATA
    for name in ("ETag", "Last-Modified", "Accept-Ranges"):
        assert name not in response.headers


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        ("bytes=0-9", 0, 9),
        ("bytes=990-", 990, 999),
        ("bytes=-5", 995, 999),
        ("bytes=-5000", 0, 999),
        ("bytes=500-5000", 500, 999),
    ],
)
def test_range(
    server: FaultServer, session: requests.Session, header: str, start: int, end: int
) -> None:
    server.add(PATH, DATA)
    response = get(session, server, {"Range": header})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert response.headers["Content-Length"] == str(end - start + 1)
    assert response.content == DATA[start : end + 1]


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range(server: FaultServer, session: requests.Session, header: str) -> None:
    server.add(PATH, DATA)
    response = get(session, server, {"Range": header})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{len(DATA)}"


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=9-2", "items=0-1", "bytes=-"])
def test_ignored_range(server: FaultServer, session: requests.Session, header: str) -> None:
    server.add(PATH, DATA)
    response = get(session, server, {"Range": header})
    assert response.status_code == 200
    assert response.content == DATA


def test_parse_range_on_empty_body() -> None:
    assert not parse_range("bytes=0-", 0)
    assert not parse_range("bytes=-1", 0)


@pytest.mark.parametrize(
    ("if_range", "honoured"),
    [
        (strong_etag(DATA), True),
        ('"something-else"', False),
        ("W/" + strong_etag(DATA), False),
        (DEFAULT_LAST_MODIFIED, True),
        (CHANGED_LAST_MODIFIED, False),
    ],
)
def test_if_range(
    server: FaultServer, session: requests.Session, if_range: str, honoured: bool
) -> None:
    server.add(PATH, DATA)
    response = get(session, server, {"Range": "bytes=10-19", "If-Range": if_range})
    assert response.status_code == (206 if honoured else 200)
    assert response.content == (DATA[10:20] if honoured else DATA)


def test_statuses_are_consumed_in_order(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, statuses=[(503, {"Retry-After": "1"}), 500, 429]))
    with session.head(server.url(PATH), timeout=5) as head:
        assert head.status_code == 200, "HEAD consumes no fault"
    first = get(session, server)
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "1"
    assert b"503" in first.content
    assert first.headers["Content-Type"].startswith("text/html")
    assert [get(session, server).status_code for _ in range(3)] == [500, 429, 200]
    assert server.resource(PATH).statuses == []


def test_status_fault_consumes_no_other_fault(
    server: FaultServer, session: requests.Session
) -> None:
    server.add(PATH, Resource(DATA, statuses=[503], drop_after=[10]))
    assert get(session, server).status_code == 503
    assert read_until_error(session, server)[0] == 10
    assert get(session, server).content == DATA


def test_drop_after(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, drop_after=[100, 0]))
    for expected in (100, 0):
        received, error = read_until_error(session, server)
        assert received == expected
        assert isinstance(error, (ChunkedEncodingError, requests.ConnectionError))
    assert get(session, server).content == DATA


def test_drop_after_a_range(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, drop_after=[5]))
    with session.get(server.url(PATH), headers={"Range": "bytes=100-"}, stream=True) as response:
        assert response.headers["Content-Length"] == str(len(DATA) - 100)
        assert response.raw.read(5) == DATA[100:105]
        with pytest.raises(ChunkedEncodingError):
            b"".join(response.iter_content(chunk_size=None))


def test_stall_then_close(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, stall_after=[10], stall_seconds=0.3))
    received, error = read_until_error(session, server, timeout=5)
    assert received == 10
    assert isinstance(error, ChunkedEncodingError)


def test_stall_trips_read_timeout(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, stall_after=[10], stall_seconds=0.3))
    received, error = read_until_error(session, server, timeout=0.05)
    assert received == 10
    assert isinstance(error, requests.ConnectionError)
    assert "timed out" in str(error)


@pytest.mark.parametrize(
    "resource",
    [
        Resource(DATA, stall_after=[3], stall_seconds=30),
        Resource(DATA, trickle=(1, 30.0), trickle_after=3),
    ],
    ids=["stall", "trickle"],
)
def test_stop_ends_a_long_wait(
    server: FaultServer, session: requests.Session, resource: Resource
) -> None:
    server.add(PATH, resource)
    with session.get(server.url(PATH), stream=True, timeout=30) as response:
        assert response.raw.read(3) == DATA[:3]
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 3
        with pytest.raises(ChunkedEncodingError):
            b"".join(response.iter_content(chunk_size=None))


def test_trickle_keeps_reads_alive(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA[:100], trickle=(10, 0.04), trickle_after=20))
    started = time.monotonic()
    received, error = read_until_error(session, server, timeout=0.2)
    assert (received, error) == (100, None)
    assert time.monotonic() - started >= 0.25, "8 pauses of 0.04 s outlast the read timeout"


def test_ignore_range(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, ignore_range=True))
    response = get(session, server, {"Range": "bytes=10-19"})
    assert response.status_code == 200
    assert "Content-Range" not in response.headers
    assert response.content == DATA


def test_wrong_content_range(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, wrong_content_range=True))
    response = get(session, server, {"Range": "bytes=10-19"})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 11-20/{len(DATA)}"
    assert response.headers["Content-Length"] == "10"
    assert response.content == DATA[10:20]


def test_no_length(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, no_length=True))
    response = get(session, server)
    assert "Content-Length" not in response.headers
    assert "Transfer-Encoding" not in response.headers
    assert response.headers["Connection"] == "close"
    assert response.content == DATA


def test_chunked(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, chunked=True))
    response = get(session, server)
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers
    assert response.content == DATA
    ranged = get(session, server, {"Range": "bytes=10-19"})
    assert ranged.status_code == 206
    assert ranged.content == DATA[10:20]


def test_chunked_drop(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, chunked=True, drop_after=[50]))
    received, error = read_until_error(session, server)
    assert received == 50
    assert isinstance(error, ChunkedEncodingError)


def test_gzip(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, gzip=True))
    response = get(session, server, {"Range": "bytes=10-19"})
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert response.headers["Content-Length"] == str(len(gzip.compress(DATA, mtime=0)))
    assert response.content == DATA


def test_change_after(server: FaultServer, session: requests.Session) -> None:
    new = make_data(500, seed=1)
    server.add(PATH, Resource(DATA, change_after=2, changed_data=new))
    old = [get(session, server) for _ in range(2)]
    assert [response.content for response in old] == [DATA, DATA]
    with session.head(server.url(PATH), timeout=5) as head:
        assert head.headers["ETag"] == strong_etag(new), "HEAD sees the change, not counted"
    changed = get(session, server)
    assert changed.content == new
    assert changed.headers["ETag"] == strong_etag(new) != old[0].headers["ETag"]
    assert changed.headers["Last-Modified"] == CHANGED_LAST_MODIFIED
    assert get(session, server).content == new


def test_redirect(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, DATA)
    server.redirect("/old", PATH)
    server.redirect("/moved", server.url(PATH), status=301)
    with session.get(server.url("/old"), timeout=5) as followed:
        assert followed.content == DATA
        assert [step.status_code for step in followed.history] == [302]
    with session.get(server.url("/moved"), allow_redirects=False, timeout=5) as response:
        assert response.status_code == 301
        assert response.headers["Location"] == server.url(PATH)


def test_unknown_path_is_404(server: FaultServer, session: requests.Session) -> None:
    with session.get(server.url("/missing"), timeout=5) as response:
        assert response.status_code == 404
        assert b"404" in response.content


def test_head(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, drop_after=[1]))
    with session.head(server.url(PATH), timeout=5) as response:
        assert response.status_code == 200
        assert response.headers["Content-Length"] == str(len(DATA))
        assert response.headers["ETag"] == strong_etag(DATA)
        assert response.content == b""
    assert server.resource(PATH).drop_after == [1]
    assert [request.method for request in server.requests_for(PATH)] == ["HEAD"]


def test_requests_are_recorded(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, DATA)
    get(session, server, {"Range": "bytes=0-1", "X-Custom-Header": "yes"})
    get(session, server)
    with session.get(server.url("/other"), timeout=5):
        pass
    assert [request.path for request in server.requests] == [PATH, PATH, "/other"]
    first, second = server.requests_for(PATH)
    assert first.method == "GET"
    assert first.range == "bytes=0-1"
    assert first.headers["x-custom-header"] == "yes"
    assert first.headers["host"] == "{}:{}".format(*server.host_port)
    assert second.range is None
    assert server.resource(PATH).gets == 2


def test_bytes_sent(server: FaultServer, session: requests.Session) -> None:
    server.add(PATH, Resource(DATA, drop_after=[30]))
    read_until_error(session, server)
    get(session, server, {"Range": "bytes=-100"})
    session.head(server.url(PATH), timeout=5).close()
    get(session, server)
    assert server.bytes_sent == 30 + 100 + len(DATA)


def test_keep_alive(server: FaultServer) -> None:
    server.add(PATH, DATA)
    server.add("/close", Resource(DATA, no_length=True))
    connection = http.client.HTTPConnection(*server.host_port, timeout=5)
    try:
        connection.request("GET", PATH)
        assert connection.getresponse().read() == DATA
        sock = connection.sock
        connection.request("GET", PATH)
        assert connection.getresponse().read() == DATA
        assert connection.sock is sock is not None
        connection.request("GET", "/close")
        assert connection.getresponse().read() == DATA
        assert connection.sock is None
    finally:
        connection.close()


def test_a_stalled_client_does_not_block_others(
    server: FaultServer, session: requests.Session
) -> None:
    server.add(PATH, DATA)
    server.add("/stall", Resource(DATA, stall_after=[10], stall_seconds=30))
    with session.get(server.url("/stall"), stream=True, timeout=5) as stalled:
        assert stalled.raw.read(10) == DATA[:10]
        with requests.Session() as other:
            assert get(other, server).content == DATA


def test_stop_is_idempotent_and_works_unstarted() -> None:
    unstarted = FaultServer()
    unstarted.stop()
    unstarted.stop()
    started = FaultServer().start()
    started.stop()
    started.stop()
    with pytest.raises(requests.ConnectionError), requests.Session() as session:
        session.get(started.url(PATH), timeout=5)
