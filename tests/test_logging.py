"""What dlmanager logs under the ``dlmanager`` logger, against a real loopback server.

Each fact is logged once, at INFO, naming the URL (or the path) and the reason:
retries, resumes, restarts, evictions and failures; a cancel is logged at DEBUG.
"""

from __future__ import annotations

import logging
import os
import re
import threading

import pytest

from dlmanager import (
    DownloadEvent,
    DownloadManager,
    DownloadState,
    EventKind,
    PersistLimit,
    RetryPolicy,
    Timeouts,
)
from dlmanager.disk.checkpoint import Checkpoint, checkpoint_path
from dlmanager.disk.checkpoint import save as save_checkpoint
from dlmanager.disk.layout import temporary_name
from tests.conftest import listing, read
from tests.server import FaultServer, Resource, make_data

KIB = 1024
DATA = make_data(100_000, seed=21)  # one connection (under the split size)
BIG = make_data(1024 * KIB, seed=22)  # four connections of 256 KiB


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """caplog, capturing the ``dlmanager`` loggers at every level."""
    caplog.set_level(logging.DEBUG, logger="dlmanager")
    return caplog


def ours(records: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of the ``dlmanager`` loggers so far."""
    return [r for r in records.records if r.name.startswith("dlmanager")]


def at(records: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    """The messages of dlmanager's records at *level* that contain *text*."""
    return [r.getMessage() for r in ours(records) if r.levelno == level and text in r.getMessage()]


def loud(records: pytest.LogCaptureFixture) -> list[str]:
    """dlmanager's records at WARNING or above."""
    return [r.getMessage() for r in ours(records) if r.levelno >= logging.WARNING]


def fetch(
    server: FaultServer,
    destdir: str,
    resource: Resource,
    retry: RetryPolicy,
    *,
    connections: int = 1,
    name: str = "file.bin",
) -> DownloadState:
    server.add("/" + name, resource)
    with DownloadManager(
        destdir,
        retry=retry,
        connections=connections,
        min_split_size=256 * KIB,
        chunk_size=64 * KIB,
    ) as manager:
        dl = manager.download(server.url("/" + name))
        assert dl is not None
        dl.wait(raise_if_error=False)
        dl.error()  # received: leaving the block does not raise it
    return dl.state


def test_dropped_connection_logs_a_retry_and_a_resume(
    server: FaultServer,
    destdir: str,
    fast_retry: RetryPolicy,
    records: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/file.bin")
    state = fetch(server, destdir, Resource(DATA, drop_after=[30_000]), fast_retry)
    assert state is DownloadState.DONE
    [retry] = at(records, logging.INFO, "retrying")
    assert url in retry
    assert "30000 of 100000 bytes received" in retry  # the error says what went wrong
    [resume] = at(records, logging.INFO, "Resuming")
    assert resume == f"Resuming {url} at byte 30000 after a failed attempt"
    assert at(records, logging.INFO, "Restarting") == []
    assert loud(records) == []


def test_dropped_connection_of_a_segment_logs_a_retry_and_a_resume(
    server: FaultServer,
    destdir: str,
    fast_retry: RetryPolicy,
    records: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/file.bin")
    # The second request (a segment) is cut short once.
    resource = Resource(BIG, drop_after=[len(BIG), 100 * KIB])
    assert fetch(server, destdir, resource, fast_retry, connections=4) is DownloadState.DONE
    assert read(os.path.join(destdir, "file.bin")) == BIG
    [retry] = at(records, logging.INFO, "retrying")
    match = re.match(rf"Attempt on bytes (\d+)-\d+ of {re.escape(url)} failed", retry)
    assert match is not None, retry
    assert "bytes received" in retry
    [resume] = at(records, logging.INFO, "Resuming")
    assert resume == f"Resuming {url} at byte {match.group(1)} after a failed attempt"
    assert loud(records) == []


def test_leftover_resume_names_the_url(
    server: FaultServer,
    destdir: str,
    fast_retry: RetryPolicy,
    records: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/file.bin")
    resource = server.add("/file.bin", Resource(DATA))
    assert resource.etag is not None
    part = os.path.join(destdir, temporary_name("file.bin"))
    with open(part, "wb") as handle:
        handle.write(DATA[:30_000])
    save_checkpoint(
        checkpoint_path(part), Checkpoint(url, len(DATA), resource.etag, ((0, 30_000),))
    )
    assert fetch(server, destdir, resource, fast_retry) is DownloadState.DONE
    assert read(os.path.join(destdir, "file.bin")) == DATA
    resumes = [m for m in at(records, logging.INFO, "Resuming") if url in m]
    assert resumes == [
        f"Resuming {url} with 30000 of {len(DATA)} bytes from a leftover temporary file"
    ]
    assert at(records, logging.INFO, "retrying") == []


def test_restart_logs_the_bytes_thrown_away_and_why(
    server: FaultServer,
    destdir: str,
    fast_retry: RetryPolicy,
    records: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/file.bin")
    # After the drop, the server answers the range request with the whole file.
    resource = Resource(DATA, drop_after=[30_000], ignore_range=True)
    assert fetch(server, destdir, resource, fast_retry) is DownloadState.DONE
    assert at(records, logging.INFO, "Restarting") == [
        f"Restarting {url} from byte 0, throwing away 30000 bytes: "
        "the server sent the whole file again"
    ]
    assert len(at(records, logging.INFO, "retrying")) == 1
    assert at(records, logging.INFO, "Resuming") == []


def test_eviction_logs_the_path_size_and_reason(
    server: FaultServer, destdir: str, records: pytest.LogCaptureFixture
) -> None:
    old = os.path.join(destdir, "old.bin")
    with open(old, "wb") as handle:
        handle.write(b"x" * 1234)
    os.utime(old, (1_600_000_000, 1_600_000_000))
    server.add("/new.bin", DATA)
    with DownloadManager(destdir, persist_limit=PersistLimit(0, max_files=1)) as manager:
        manager.download(server.url("/new.bin"))
    assert listing(destdir) == ["new.bin"]
    assert at(records, logging.INFO, "Evicted") == [
        f"Evicted {old} (1234 bytes): 2 files, more than max_files=1"
    ]
    assert loud(records) == []


def test_http_error_logs_one_failure_without_traceback(
    server: FaultServer,
    destdir: str,
    fast_retry: RetryPolicy,
    records: pytest.LogCaptureFixture,
) -> None:
    url = server.url("/file.bin")
    state = fetch(server, destdir, Resource(DATA, statuses=[404]), fast_retry)
    assert state is DownloadState.FAILED
    [failure] = at(records, logging.INFO, "failed")
    assert failure.startswith(f"Download of {url} failed: ")
    assert failure.endswith("HTTP 404")
    assert all(r.exc_info is None for r in ours(records) if r.levelno >= logging.INFO)
    assert at(records, logging.INFO, "retrying") == []
    assert loud(records) == []


@pytest.mark.parametrize("connections", [1, 4])
def test_a_successful_download_logs_nothing_loud(
    server: FaultServer,
    destdir: str,
    fast_retry: RetryPolicy,
    records: pytest.LogCaptureFixture,
    connections: int,
) -> None:
    state = fetch(server, destdir, Resource(BIG), fast_retry, connections=connections)
    assert state is DownloadState.DONE
    assert at(records, logging.DEBUG, "started")  # DEBUG records were captured
    assert loud(records) == []
    assert at(records, logging.INFO, "failed") == []


def test_cancel_is_logged_at_debug(
    server: FaultServer, destdir: str, records: pytest.LogCaptureFixture
) -> None:
    url = server.url("/file.bin")
    server.add("/file.bin", Resource(DATA, stall_after=[1000]))
    receiving = threading.Event()

    def on_event(event: DownloadEvent) -> None:
        if event.kind is EventKind.PROGRESS and event.received:
            receiving.set()

    with DownloadManager(destdir, timeout=Timeouts(read=None, stall=None)) as manager:
        dl = manager.download(url, on_event=on_event)
        assert dl is not None
        assert receiving.wait(10)
        dl.cancel()
        dl.wait(raise_if_error=False)
    assert dl.state is DownloadState.CANCELLED
    assert len(at(records, logging.DEBUG, f"Download of {url} cancelled")) == 1
    assert at(records, logging.INFO, "failed") == []
    assert loud(records) == []
