"""The soak test's chaos server (tests/chaos.py), and one short soak (benchmarks/soak.py)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Callable

import pytest
import requests

from tests.chaos import (
    DEFAULT_RATES,
    REQUEST_FAULTS,
    ChaosConfig,
    ChaosFile,
    ChaosServer,
    Decision,
    Fault,
)
from tests.conftest import ROOT, run_python

SIZE = 200_000
FILE = ChaosFile("a.bin", SIZE)
SOAK = os.path.join(ROOT, "benchmarks", "soak.py")

Serve = Callable[..., ChaosServer]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """``serve(config, *files)`` starts a ChaosServer (FILE by default), stopped after the test."""
    servers: list[ChaosServer] = []

    def start(config: ChaosConfig, *files: ChaosFile) -> ChaosServer:
        server = ChaosServer(files or (FILE,), config).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def raw_get(server: ChaosServer, name: str, headers: str = "") -> tuple[bytes, OSError | None]:
    """GET *name* on a new socket; return everything received and the error that ended it
    (None for a clean close)."""
    port = int(server.base_url.rsplit(":", 1)[1])
    request = f"GET /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except OSError as exc:
            return bytes(received), exc
    return bytes(received), None


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-cased names) and body of a raw response."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


# -- content and configuration --------------------------------------------------------


def test_versions_are_deterministic_sliceable_and_distinct() -> None:
    v0, v1 = FILE.read(0), FILE.read(1)
    assert len(v0) == len(v1) == SIZE
    assert v0 != v1
    assert ChaosFile("a.bin", SIZE).read(0) == v0
    assert ChaosFile("b.bin", SIZE).read(0) != v0
    assert FILE.read(1, 70_000, 70_010) == v1[70_000:70_010]
    assert FILE.sha256(1) == hashlib.sha256(v1).hexdigest()
    assert FILE.etag(0) != FILE.etag(1)
    assert FILE.etag(0).startswith('"') and FILE.etag(0).endswith('"')
    assert FILE.last_modified(0) != FILE.last_modified(1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rates": {Fault.DROP: 1.5}},
        {"rates": {Fault.DROP: 0.6, Fault.TRUNCATE: 0.6}},
        {"retry_after": 2.0},
        {"early": -0.1},
        {"stall_seconds": 0},
    ],
)
def test_invalid_configurations_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ChaosConfig(**kwargs)  # type: ignore[arg-type]


def test_invalid_files_and_servers_are_rejected() -> None:
    for name in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            ChaosFile(name, 1)
    with pytest.raises(ValueError):
        ChaosFile("a", -1)
    with pytest.raises(ValueError):
        ChaosFile("a", 1, always=Fault.CHANGE)
    with pytest.raises(ValueError, match="unique"):
        ChaosServer([FILE, FILE])


def test_change_is_drawn_apart_from_the_request_faults() -> None:
    config = ChaosConfig(rates={Fault.CHANGE: 1.0, Fault.TRUNCATE: 1.0})
    decision = ChaosServer([FILE], config).decision(0)
    assert decision.change and decision.fault is Fault.TRUNCATE
    assert set(REQUEST_FAULTS) | {Fault.CHANGE} == set(Fault) == set(DEFAULT_RATES)


# -- reproducibility ------------------------------------------------------------------


def decisions(config: ChaosConfig, count: int = 500) -> list[Decision]:
    server = ChaosServer([FILE], config)
    return [server.decision(n) for n in range(count)]


def test_the_same_seed_gives_the_same_decisions() -> None:
    assert decisions(ChaosConfig(seed=7)) == decisions(ChaosConfig(seed=7))
    assert decisions(ChaosConfig(seed=7)) != decisions(ChaosConfig(seed=8))


def test_every_fault_is_drawn_with_the_default_rates() -> None:
    drawn = decisions(ChaosConfig(seed=3), count=2000)
    kinds = {d.fault for d in drawn} | {Fault.CHANGE for d in drawn if d.change}
    assert kinds == {None, *Fault}
    assert any(d.cut < 0 for d in drawn) and any(d.retry_after for d in drawn)
    # About one request in four misbehaves (the sum of the request rates).
    faulty = sum(d.fault is not None for d in drawn) / len(drawn)
    assert 0.15 < faulty < 0.35


def test_the_same_seed_gives_the_same_answers(serve: Serve) -> None:
    def answers(server: ChaosServer) -> list[tuple[int, str, int]]:
        seen = []
        for _ in range(30):
            raw, error = raw_get(server, "a.bin", "Range: bytes=1000-\r\n")
            status = int(raw.split(b" ", 2)[1]) if raw else 0
            # A reset may lose bytes in flight: only a clean end tells the length.
            seen.append((status, type(error).__name__, len(raw) if error is None else -1))
        return seen

    config = ChaosConfig(seed=5, rates={**DEFAULT_RATES, Fault.STALL: 0.0})
    first, second = answers(serve(config)), answers(serve(config))
    assert first == second
    assert len(set(first)) > 3  # not all alike: faults did happen


# -- each fault, forced -----------------------------------------------------------------


def test_calm_server_serves_ranges_and_validators(serve: Serve) -> None:
    server = serve(ChaosConfig.calm())
    data = FILE.read(0)
    response = requests.get(server.url("a.bin"), timeout=10)
    assert response.status_code == 200 and response.content == data
    assert response.headers["ETag"] == FILE.etag(0)
    assert response.headers["Accept-Ranges"] == "bytes"
    response = requests.get(
        server.url("a.bin"), headers={"Range": "bytes=10-", "If-Range": FILE.etag(0)}, timeout=10
    )
    assert response.status_code == 206 and response.content == data[10:]
    assert response.headers["Content-Range"] == f"bytes 10-{SIZE - 1}/{SIZE}"
    stale = {"Range": "bytes=10-", "If-Range": FILE.etag(1)}
    assert requests.get(server.url("a.bin"), headers=stale, timeout=10).status_code == 200
    beyond = {"Range": f"bytes={SIZE}-"}
    assert requests.get(server.url("a.bin"), headers=beyond, timeout=10).status_code == 416
    assert requests.head(server.url("a.bin"), timeout=10).headers["Content-Length"] == str(SIZE)
    assert requests.get(server.base_url + "/missing", timeout=10).status_code == 404
    stats = server.stats
    assert stats.gets == 4 and stats.requests == 6 and stats.partial == 1
    assert not any(stats.faults.values())
    assert server.served("a.bin") == {0: 3}
    assert server.digests("a.bin") == {hashlib.sha256(data).hexdigest(): 0}


@pytest.mark.parametrize("early", [0.0, 1.0])
def test_drop_resets_the_connection(serve: Serve, early: float) -> None:
    server = serve(ChaosConfig.only(Fault.DROP, early=early))
    raw, error = raw_get(server, "a.bin")
    assert isinstance(error, ConnectionResetError)
    assert len(raw) < SIZE
    if early:
        assert raw == b""
    assert server.stats.faults[Fault.DROP] == 1


def test_truncate_closes_cleanly_before_the_announced_end(serve: Serve) -> None:
    server = serve(ChaosConfig.only(Fault.TRUNCATE))
    raw, error = raw_get(server, "a.bin", "Range: bytes=500-\r\n")
    assert error is None
    status, headers, body = split_response(raw)
    assert status == 206
    assert int(headers["content-length"]) == SIZE - 500 > len(body)
    assert body == FILE.read(0, 500, 500 + len(body))
    assert server.stats.faults[Fault.TRUNCATE] == 1


def test_stall_outlasts_the_read_timeout(serve: Serve) -> None:
    server = serve(ChaosConfig.only(Fault.STALL, early=1.0, stall_seconds=30.0))
    with pytest.raises(requests.ReadTimeout):
        requests.get(server.url("a.bin"), timeout=(5, 0.2))
    assert server.stats.faults[Fault.STALL] == 1


def test_stall_mid_body_then_closes(serve: Serve) -> None:
    server = serve(ChaosConfig.only(Fault.STALL, early=0.0, stall_seconds=0.2))
    raw, error = raw_get(server, "a.bin")
    assert error is None
    status, headers, body = split_response(raw)
    assert status == 200 and int(headers["content-length"]) == SIZE > len(body)
    assert body == FILE.read(0, 0, len(body))
    assert server.stats.faults[Fault.STALL] == 1


@pytest.mark.parametrize(
    ("fault", "status"),
    [(Fault.STATUS_429, 429), (Fault.STATUS_500, 500), (Fault.STATUS_503, 503)],
)
def test_error_statuses_with_and_without_retry_after(
    serve: Serve, fault: Fault, status: int
) -> None:
    with_header = serve(ChaosConfig.only(fault, retry_after=1.0))
    values = set()
    for _ in range(20):
        response = requests.get(with_header.url("a.bin"), timeout=10)
        assert response.status_code == status
        values.add(response.headers["Retry-After"])
    assert {"0", "1"} < values  # and HTTP dates
    for value in values - {"0", "1"}:
        assert parsedate_to_datetime(value).tzinfo is not None
    assert with_header.stats.faults[fault] == with_header.stats.retry_after == 20
    without = serve(ChaosConfig.only(fault, retry_after=0.0))
    response = requests.get(without.url("a.bin"), timeout=10)
    assert response.status_code == status and "Retry-After" not in response.headers


def test_ignore_range_sends_the_whole_file(serve: Serve) -> None:
    server = serve(ChaosConfig.only(Fault.IGNORE_RANGE))
    response = requests.get(server.url("a.bin"), headers={"Range": "bytes=10-"}, timeout=10)
    assert response.status_code == 200 and response.content == FILE.read(0)
    assert server.stats.faults[Fault.IGNORE_RANGE] == 1
    requests.get(server.url("a.bin"), timeout=10)  # no Range: nothing to ignore
    assert server.stats.faults[Fault.IGNORE_RANGE] == 1


@pytest.mark.parametrize(("start", "shifted"), [(10, True), (SIZE - 1, False)])
def test_bad_range_answers_another_range(serve: Serve, start: int, shifted: bool) -> None:
    server = serve(ChaosConfig.only(Fault.BAD_RANGE))
    asked = f"bytes={start}-"
    response = requests.get(server.url("a.bin"), headers={"Range": asked}, timeout=10)
    assert response.status_code == 206
    match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", response.headers["Content-Range"])
    assert match is not None
    first, last, total = map(int, match.groups())
    assert (first, last, total) != (start, SIZE - 1, SIZE)
    assert (first != start) is shifted and (total != SIZE) is not shifted
    # The body is what the wrong header claims: only checking it against the
    # request tells the fault.
    assert response.content == FILE.read(0, first, last + 1)
    assert server.stats.faults[Fault.BAD_RANGE] == 1


def test_change_bumps_content_and_validators(serve: Serve) -> None:
    server = serve(ChaosConfig.only(Fault.CHANGE))
    first = requests.get(server.url("a.bin"), timeout=10)
    assert first.content == FILE.read(1) and first.headers["ETag"] == FILE.etag(1)
    resume = {"Range": "bytes=10-", "If-Range": first.headers["ETag"]}
    second = requests.get(server.url("a.bin"), headers=resume, timeout=10)
    # The file changed again: If-Range no longer holds, the whole new version comes.
    assert second.status_code == 200 and second.content == FILE.read(2)
    assert second.headers["ETag"] == FILE.etag(2)
    assert server.version("a.bin") == 2 and server.stats.faults[Fault.CHANGE] == 2
    assert server.served("a.bin") == {1: 1, 2: 1}
    assert set(server.digests("a.bin").values()) == {0, 1, 2}
    assert [(name, version) for _, name, version in server.changes()] == [
        ("a.bin", 1),
        ("a.bin", 2),
    ]


def test_a_doomed_file_always_fails(serve: Serve) -> None:
    doomed = ChaosFile("doomed.bin", 10, always=Fault.STATUS_503)
    server = serve(ChaosConfig.calm(), doomed, FILE)
    assert [requests.get(server.url("doomed.bin"), timeout=10).status_code for _ in range(3)] == [
        503
    ] * 3
    assert requests.get(server.url("a.bin"), timeout=10).status_code == 200


def test_stop_ends_stalls_and_is_idempotent() -> None:
    server = ChaosServer([FILE], ChaosConfig.only(Fault.STALL, early=1.0, stall_seconds=600))
    with pytest.raises(RuntimeError, match="not started"):
        server.url("a.bin")
    with server:
        with pytest.raises(RuntimeError, match="only once"):
            server.start()
        with pytest.raises(requests.ReadTimeout):
            requests.get(server.url("a.bin"), timeout=(5, 0.1))
    assert server.open_connections == 0
    server.stop()


# -- the soak ---------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.exists(SOAK), reason="benchmarks/ is not in this copy")
def test_short_soak(tmp_path: Path) -> None:
    report_path = tmp_path / "soak.json"
    # Twice the default fault rates, so that 60 downloads meet every kind of fault.
    args = ["--files", "60", "--processes", "2", "--faults", "2", "--strict"]
    done = run_python([SOAK, *args, "--json", str(report_path)], timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(
        r"soak: 60 downloads \(2 processes x 2 managers, .*\), faults: drop=\d+ .* change=\d+, "
        r"retries=\d+, resumes=\d+, restarts=\d+, failures=\d+ \(all DownloadError\), "
        r"corrupted=0, leaked=0, cap held, [\d.]+ s",
        summary,
    ), summary
    report = json.loads(report_path.read_text())
    assert report["summary"] == summary
    assert report["downloads"] == 60 and not report["problems"]
    assert sum(report["faults"].values()) > 0
    assert report["outcomes"].get("done", 0) > 0
