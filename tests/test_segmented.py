"""Multi-connection downloads, checkpoints and checksums against a real loopback server."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from dlmanager import (
    ChecksumError,
    Download,
    DownloadEvent,
    DownloadInterrupt,
    DownloadManager,
    EventKind,
    RetryPolicy,
    Timeouts,
)
from dlmanager.disk.checkpoint import Checkpoint, checkpoint_path
from dlmanager.disk.checkpoint import save as save_checkpoint
from dlmanager.disk.layout import temporary_name
from tests.conftest import listing, parts, read, temporaries
from tests.server import FaultServer, RecordedRequest, Resource, make_data

KIB = 1024
MIB = 1024 * KIB
DATA = make_data(2 * MIB, seed=11)
FAST = RetryPolicy(backoff_factor=0.001, backoff_max=0.01)


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.threads: set[str] = set()
        self.events: list[DownloadEvent] = []
        self.started = threading.Event()
        self._active = 0
        self.overlapped = False

    def __call__(self, download: Download, current: int, total: int) -> None:
        self._active += 1
        if self._active > 1:
            self.overlapped = True
        self.calls.append((current, total))
        self.threads.add(threading.current_thread().name)
        if current:
            self.started.set()
        self._active -= 1

    def on_event(self, event: DownloadEvent) -> None:
        self.events.append(event)


def start(
    server: FaultServer,
    destdir: str,
    resource: Resource | bytes,
    *,
    name: str = "file.bin",
    progress: Progress | None = None,
    **kwargs: Any,
) -> Download:
    server.add("/" + name, resource)
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("min_split_size", 256 * KIB)
    kwargs.setdefault("chunk_size", 64 * KIB)
    progress = progress or Progress()
    dl = Download(
        server.url("/" + name),
        os.path.join(destdir, name),
        progress=progress,
        on_event=progress.on_event,
        **kwargs,
    )
    dl.start()
    return dl


def by_start(value: str | None) -> int:
    """Sort key of a Range header: its first byte."""
    return -1 if value is None else int(value[len("bytes=") :].split("-")[0])


def ranges(server: FaultServer) -> list[str | None]:
    return [r.range for r in server.requests]


def test_four_connections(server: FaultServer, destdir: str) -> None:
    progress = Progress()
    resource = Resource(DATA)
    start(server, destdir, resource, connections=4, progress=progress).wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert listing(destdir) == ["file.bin"]
    requests = server.requests
    assert requests[0].range is None
    quarter = len(DATA) // 4
    assert sorted((r.range for r in requests[1:]), key=by_start) == [
        f"bytes={quarter}-{2 * quarter - 1}",
        f"bytes={2 * quarter}-{3 * quarter - 1}",
        f"bytes={3 * quarter}-{len(DATA) - 1}",
    ]
    assert all(r.headers["if-range"] == resource.etag for r in requests[1:])
    currents = [c for c, _ in progress.calls]
    assert currents == sorted(currents)
    assert currents[-1] == len(DATA) and max(currents) <= len(DATA)
    assert {t for _, t in progress.calls} == {len(DATA)}
    assert not progress.overlapped
    assert len(progress.threads) > 1  # reported from several connections' threads


def test_small_files_use_one_connection(server: FaultServer, destdir: str) -> None:
    start(server, destdir, DATA, connections=4, min_split_size=4 * MIB).wait()
    assert ranges(server) == [None]
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize(
    "resource",
    [
        Resource(DATA, etag=None, last_modified=None),
        Resource(DATA, accept_ranges=False),
        Resource(DATA, no_length=True),
    ],
    ids=["no-validator", "no-accept-ranges", "no-length"],
)
def test_split_only_when_the_server_allows_it(
    server: FaultServer, destdir: str, resource: Resource
) -> None:
    start(server, destdir, resource, connections=4).wait()
    assert ranges(server) == [None]
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_last_modified_is_enough_to_split(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA, etag=None)
    start(server, destdir, resource, connections=2).wait()
    assert len(server.requests) == 2
    assert server.requests[1].headers["if-range"] == resource.last_modified
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_server_ignoring_ranges_falls_back_to_one_stream(server: FaultServer, destdir: str) -> None:
    progress = Progress()
    start(server, destdir, Resource(DATA, ignore_range=True), connections=4, progress=progress)
    dl = start
    del dl
    wait_file(destdir)
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert ranges(server)[-1] is None  # the last attempt asked for the whole file
    assert EventKind.RESTARTED in [e.kind for e in progress.events]


def wait_file(destdir: str) -> None:
    deadline = time.monotonic() + 20
    while not os.path.exists(os.path.join(destdir, "file.bin")):
        assert time.monotonic() < deadline, "download did not finish"
        time.sleep(0.02)


def test_wrong_content_range_falls_back_to_one_stream(server: FaultServer, destdir: str) -> None:
    dl = start(server, destdir, Resource(DATA, wrong_content_range=True), connections=3)
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert ranges(server)[-1] is None


def test_content_change_during_parallel_download_is_never_mixed(
    server: FaultServer, destdir: str
) -> None:
    new = make_data(len(DATA), seed=12)
    resource = Resource(DATA, change_after=1, changed_data=new)
    start(server, destdir, resource, connections=4).wait()
    assert read(os.path.join(destdir, "file.bin")) == new


def test_server_ignoring_if_range_during_parallel_download(
    server: FaultServer, destdir: str
) -> None:
    new = make_data(len(DATA) + 100, seed=13)
    resource = Resource(DATA, change_after=1, changed_data=new, ignore_if_range=True)
    start(server, destdir, resource, connections=4).wait()
    assert read(os.path.join(destdir, "file.bin")) == new


def test_each_connection_retries_and_resumes(server: FaultServer, destdir: str) -> None:
    # The 2nd and 3rd requests (two segments) are cut short once each.
    resource = Resource(DATA, drop_after=[len(DATA), 100 * KIB, 100 * KIB])
    progress = Progress()
    start(server, destdir, resource, connections=4, progress=progress).wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    retries = [e for e in progress.events if e.kind is EventKind.RETRYING]
    assert len(retries) == 2
    assert [e.kind for e in progress.events].count(EventKind.RESUMED) == 2
    # Which segments the 2nd and 3rd requests asked for depends on timing (a
    # connection that finishes early takes over half of another's segment);
    # whatever they were, each cut request is resumed exactly at its cut.
    gets = [r for r in server.requests if r.method == "GET"]

    def offset(request: RecordedRequest) -> int:
        assert request.range is not None
        return int(request.range.removeprefix("bytes=").split("-")[0])

    later = {offset(r) for r in gets[3:]}
    for cut in gets[1:3]:
        assert offset(cut) + 100 * KIB in later, [r.range for r in gets]
    currents = [c for c, _ in progress.calls]
    assert currents == sorted(currents) and currents[-1] == len(DATA)


def test_a_slow_connection_gets_its_work_shared(server: FaultServer, destdir: str) -> None:
    data = make_data(8 * MIB, seed=14)
    # The second connection stalls for a second after 100 KiB, then drops.
    resource = Resource(data, stall_after=[len(data), 100 * KIB], stall_seconds=1.0)
    dl = start(
        server, destdir, resource, connections=2, min_split_size=MIB,
        timeout=Timeouts(read=None, stall=None),
    )  # fmt: skip
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == data
    half = len(data) // 2
    stolen = [
        r.range for r in server.requests[2:]
        if r.range and int(r.range[6:].split("-")[0]) > half + 100 * KIB
    ]  # fmt: skip
    assert stolen, f"no segment was taken over: {ranges(server)}"


def test_retry_budget_exhausted_in_one_connection_fails_the_download(
    server: FaultServer, destdir: str
) -> None:
    from dlmanager import IncompleteBodyError

    resource = Resource(DATA, drop_after=[len(DATA)] + [10 * KIB] * 20)
    dl = start(
        server, destdir, resource, connections=2, retry=RetryPolicy(total=2, backoff_factor=0)
    )
    with pytest.raises(IncompleteBodyError):
        dl.wait()
    assert listing(destdir) == []


def test_cancel_stops_every_connection(server: FaultServer, destdir: str) -> None:
    before = own_threads()
    progress = Progress()
    resource = Resource(DATA, stall_after=[300 * KIB] * 8)
    dl = start(
        server, destdir, resource, connections=4, progress=progress,
        timeout=Timeouts(read=None, stall=None),
    )  # fmt: skip
    assert progress.started.wait(10)
    deadline = time.monotonic() + 10
    while len(server.requests) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    began = time.monotonic()
    dl.cancel()
    dl.thread.join(5)
    assert not dl.thread.is_alive()
    assert time.monotonic() - began < 2
    with pytest.raises(DownloadInterrupt):
        dl.wait()
    assert listing(destdir) == []
    deadline = time.monotonic() + 5
    while own_threads() > before:
        assert time.monotonic() < deadline, threading.enumerate()
        time.sleep(0.01)


def own_threads() -> int:
    """Threads of dlmanager's in this process (the test server's are not counted)."""
    return sum(t.name.startswith("dlmanager") for t in threading.enumerate())


CHILD = textwrap.dedent(
    """
    import sys
    from dlmanager import Download, Timeouts
    dl = Download(sys.argv[1], sys.argv[2], connections=int(sys.argv[3]),
                  min_split_size=256 * 1024, chunk_size=64 * 1024,
                  timeout=Timeouts(read=None, stall=None))
    dl.start()
    dl.wait()
    """
)


@pytest.mark.parametrize("connections", [1, 4])
def test_sigkill_then_resume_fetches_only_missing_bytes(
    server: FaultServer, destdir: str, connections: int
) -> None:
    # Every first request of a range stalls after 300 KiB: the child holds
    # parts of several ranges when it is killed.
    resource = Resource(DATA, stall_after=[300 * KIB] * connections)
    server.add("/file.bin", resource)
    dest = os.path.join(destdir, "file.bin")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, server.url("/file.bin"), dest, str(connections)],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            saved = _checkpoint_in(destdir)
            # One stream checkpoints as chunks arrive, several every second.
            wanted = 1 if connections == 1 else 300 * KIB * connections * 0.9
            if saved is not None and saved.received >= wanted:
                break
            assert child.poll() is None, child.stderr.read() if child.stderr else ""
            assert time.monotonic() < deadline, f"no checkpoint: {listing(destdir)}"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    assert not os.path.exists(dest)
    held = _checkpoint_in(destdir)
    assert held is not None and 0 < held.received < len(DATA)
    sent = server.bytes_sent
    requests = len(server.requests)
    dl = Download(server.url("/file.bin"), dest, connections=connections, min_split_size=256 * KIB)
    dl.start()
    dl.wait()
    assert read(dest) == DATA
    assert listing(destdir) == ["file.bin"]
    resumed = server.requests[requests:]
    assert all(r.range is not None for r in resumed)
    assert all(r.headers["if-range"] == resource.etag for r in resumed)
    assert server.bytes_sent - sent <= len(DATA) - held.received + 64 * KIB


def _checkpoint_in(directory: str) -> Checkpoint | None:
    from dlmanager.disk.checkpoint import load

    for name in os.listdir(directory):
        if name.endswith(".ckpt"):
            return load(os.path.join(directory, name))
    return None


def _leftover(destdir: str, url: str, data: bytes, held: int, **overrides: Any) -> str:
    """Plant a part file holding data[:held] and its checkpoint, as a killed process leaves them."""
    part = os.path.join(destdir, temporary_name("file.bin"))
    with open(part, "wb") as handle:
        handle.write(data[:held])
    fields = {"url": url, "total": len(data), "validator": "", "ranges": ((0, held),)}
    fields.update(overrides.pop("fields", {}))
    fields.update(overrides)
    save_checkpoint(checkpoint_path(part), Checkpoint(**fields))
    return part


def test_adopted_leftover_is_resumed(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA)
    server.add("/file.bin", resource)
    assert resource.etag is not None
    _leftover(destdir, server.url("/file.bin"), DATA, 500 * KIB, validator=resource.etag)
    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"))
    dl.start()
    dl.wait()
    assert [r.range for r in server.requests] == [f"bytes={500 * KIB}-{len(DATA) - 1}"]
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert temporaries(destdir) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"url": "http://127.0.0.1:1/other.bin"},
        {"validator": '"stale"'},
        {"total": len(DATA) + 1},
    ],
    ids=["other-url", "changed-validator", "other-size"],
)
def test_leftover_that_disagrees_is_not_mixed_in(
    server: FaultServer, destdir: str, overrides: dict[str, Any]
) -> None:
    resource = Resource(DATA)
    server.add("/file.bin", resource)
    stale = make_data(len(DATA), seed=99)
    fields: dict[str, Any] = {"validator": resource.etag, **overrides}
    _leftover(destdir, server.url("/file.bin"), stale, 500 * KIB, fields=fields)
    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"))
    dl.start()
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert temporaries(destdir) == []


def test_unreadable_checkpoint_starts_over(server: FaultServer, destdir: str) -> None:
    server.add("/file.bin", DATA)
    part = _leftover(destdir, server.url("/file.bin"), DATA, 500 * KIB, validator='"x"')
    with open(checkpoint_path(part), "w") as handle:
        handle.write("{not json")
    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"))
    dl.start()
    dl.wait()
    assert ranges(server) == [None]
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert temporaries(destdir) == []


def test_checkpoint_is_valid_json_with_the_written_ranges(destdir: str) -> None:
    state = Checkpoint("http://h/x", 100, '"e"', ((0, 10), (50, 60)))
    path = os.path.join(destdir, "c.ckpt")
    save_checkpoint(path, state)
    with open(path) as handle:
        data = json.load(handle)
    assert data["ranges"] == [[0, 10], [50, 60]]
    assert Checkpoint.loads(json.dumps(data)) == state


# -- checksums ---------------------------------------------------------------------------------


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("connections", [1, 4])
def test_checksum_matches(server: FaultServer, destdir: str, connections: int) -> None:
    dl = start(server, destdir, DATA, connections=connections, checksum=sha256(DATA))
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("connections", [1, 4])
def test_checksum_mismatch_leaves_nothing(
    server: FaultServer, destdir: str, connections: int
) -> None:
    wrong = sha256(b"something else")
    dl = start(server, destdir, DATA, connections=connections, checksum=wrong)
    with pytest.raises(ChecksumError) as info:
        dl.wait()
    assert info.value.algorithm == "sha256"
    assert info.value.expected == wrong.split(":")[1]
    assert info.value.actual == hashlib.sha256(DATA).hexdigest()
    assert listing(destdir) == []
    assert len(server.requests) == (1 if connections == 1 else 4)  # not retried


def test_checksum_after_resume(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA, drop_after=[300 * KIB])
    start(server, destdir, resource, checksum="md5:" + hashlib.md5(DATA).hexdigest()).wait()
    assert server.requests[1].range is not None
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_invalid_checksum_is_refused_before_anything_starts(destdir: str) -> None:
    with pytest.raises(ValueError, match="sha256"):
        Download("http://127.0.0.1:9/x", os.path.join(destdir, "x"), checksum="sha256:xyz")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Content-MD5", base64.b64encode(hashlib.md5(b"other").digest()).decode()),
        (
            "Repr-Digest",
            "sha-256=:" + base64.b64encode(hashlib.sha256(b"x").digest()).decode() + ":",
        ),
        ("x-goog-hash", "md5=" + base64.b64encode(hashlib.md5(b"other").digest()).decode()),
    ],
)
def test_wrong_server_digest_is_an_error(
    server: FaultServer, destdir: str, name: str, value: str
) -> None:
    dl = start(server, destdir, Resource(DATA, headers={name: value}), retry=0)
    with pytest.raises(ChecksumError) as info:
        dl.wait()
    assert info.value.source.lower() == name.lower()
    assert listing(destdir) == []


def test_right_server_digest_passes(server: FaultServer, destdir: str) -> None:
    md5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    start(server, destdir, Resource(DATA, headers={"Content-MD5": md5})).wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_existing_file_is_checked_against_the_checksum(server: FaultServer, destdir: str) -> None:
    dest = os.path.join(destdir, "file.bin")
    with open(dest, "wb") as handle:
        handle.write(b"corrupt")
    server.add("/file.bin", DATA)
    with DownloadManager(destdir) as manager:
        assert manager.download(server.url("/file.bin"), checksum=sha256(b"corrupt")) is None
        assert server.requests == []
        dl = manager.download(server.url("/file.bin"), checksum=sha256(DATA))
        assert dl is not None
    assert read(dest) == DATA


# -- compressed responses ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["f.tar.gz", "F.TAR.GZ", "f.tgz", "f.TGZ"])
def test_gz_name_keeps_the_bytes_as_sent(server: FaultServer, destdir: str, name: str) -> None:
    progress = Progress()
    data = b"some text " * 50_000
    start(server, destdir, Resource(data, gzip=True), name=name, progress=progress,
          connections=4).wait()  # fmt: skip
    stored = read(os.path.join(destdir, name))
    assert stored == gzip.compress(data, mtime=0)
    assert gzip.decompress(stored) == data
    assert progress.calls[-1] == (len(stored), len(stored))
    assert ranges(server) == [None]  # never split


def test_manager_passes_connections(server: FaultServer, destdir: str) -> None:
    server.add("/file.bin", DATA)
    with DownloadManager(destdir, connections=3, min_split_size=256 * KIB) as manager:
        manager.download(server.url("/file.bin"))
    assert len(server.requests) == 3
    assert parts(destdir) == []
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("value", [0, -1, 1.5, True])
def test_invalid_connections(destdir: str, value: Any) -> None:
    with pytest.raises(ValueError, match="connections"):
        Download("http://127.0.0.1:9/x", os.path.join(destdir, "x"), connections=value)


def test_resumed_gaps_never_exceed_the_connections(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA)
    server.add("/file.bin", resource)
    assert resource.etag is not None
    # Eight separate gaps left by a killed multi-connection download.
    step = len(DATA) // 8
    held = tuple((i * step, i * step + step // 2) for i in range(8))
    part = _leftover(destdir, server.url("/file.bin"), DATA, len(DATA), validator=resource.etag)
    save_checkpoint(
        checkpoint_path(part),
        Checkpoint(server.url("/file.bin"), len(DATA), resource.etag, held),
    )
    with open(part, "r+b") as handle:  # only the held ranges hold the right bytes
        handle.write(bytes(len(DATA)))
        for start, end in held:
            handle.seek(start)
            handle.write(DATA[start:end])
    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"), connections=2)
    dl.start()
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert len(server.requests) == 8  # one per gap, two at a time
    assert server.max_concurrent <= 2


def test_gz_name_check_ignores_case(server: FaultServer, destdir: str) -> None:
    data = b"text " * 10_000
    start(server, destdir, Resource(data, gzip=True), name="F.TGZ").wait()
    assert read(os.path.join(destdir, "F.TGZ")) == gzip.compress(data, mtime=0)


@pytest.mark.parametrize("name", ["connections", "min_split_size"])
def test_manager_validates_split_options(destdir: str, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        DownloadManager(destdir, **{name: 0})
