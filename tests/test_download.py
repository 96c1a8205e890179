"""Download against a real loopback server, with faults injected."""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from dlmanager import (
    Download,
    DownloadEvent,
    DownloadInterrupt,
    DownloadState,
    EventKind,
    HTTPStatusError,
    IncompleteBodyError,
    RetryPolicy,
    StallError,
    Timeouts,
)
from tests.conftest import listing, read, temporaries
from tests.loopback import SilentListener, free_port
from tests.server import FaultServer, Resource, make_data

DATA = make_data(300_000, seed=1)


class Recorder:
    """Collects progress calls and events, and can signal when one arrives."""

    def __init__(self) -> None:
        self.progress: list[tuple[int, int]] = []
        self.events: list[DownloadEvent] = []
        self.got_progress = threading.Event()
        self.retrying = threading.Event()

    def on_progress(self, download: Download, current: int, total: int) -> None:
        self.progress.append((current, total))
        if current:
            self.got_progress.set()

    def on_event(self, event: DownloadEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.RETRYING:
            self.retrying.set()

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    def errors(self) -> list[BaseException | None]:
        return [e.error for e in self.events if e.kind is EventKind.RETRYING]


def run_download(
    server: FaultServer,
    destdir: str,
    resource: Resource | bytes,
    *,
    recorder: Recorder | None = None,
    name: str = "file.bin",
    **kwargs: Any,
) -> Download:
    server.add("/" + name, resource)
    recorder = recorder or Recorder()
    kwargs.setdefault("retry", RetryPolicy(backoff_factor=0.001, backoff_max=0.01))
    dl = Download(
        server.url("/" + name),
        os.path.join(destdir, name),
        progress=recorder.on_progress,
        on_event=recorder.on_event,
        **kwargs,
    )
    dl.start()
    return dl


def assert_monotonic_progress(recorder: Recorder, total: int) -> None:
    currents = [current for current, _ in recorder.progress]
    assert currents == sorted(currents)
    assert currents[0] == 0 and currents[-1] == total
    assert {t for _, t in recorder.progress} == {total}


def assert_cancelled_cleanly(dl: Download) -> None:
    """The download's thread ends promptly, wait() raises, nothing is left on disk."""
    dl.thread.join(5)
    assert not dl.thread.is_alive()
    with pytest.raises(DownloadInterrupt):
        dl.wait()
    assert listing(os.path.dirname(dl.get_dest())) == []


def test_plain_download(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    dl = run_download(server, destdir, DATA, recorder=recorder)
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert listing(destdir) == ["file.bin"]
    assert dl.state is DownloadState.DONE
    assert_monotonic_progress(recorder, len(DATA))
    (request,) = server.requests
    assert request.headers["accept-encoding"] == "identity"
    assert request.range is None


def test_explicit_chunk_size_bounds_progress_steps(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    run_download(server, destdir, DATA, recorder=recorder, chunk_size=1000).wait()
    currents = [current for current, _ in recorder.progress]
    steps = [b - a for a, b in zip(currents, currents[1:])]
    assert max(steps) <= 1000
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_dropped_connections_resume_with_range_and_if_range(
    server: FaultServer, destdir: str
) -> None:
    recorder = Recorder()
    resource = Resource(DATA, drop_after=[50_000, 100_000])
    dl = run_download(server, destdir, resource, recorder=recorder)
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    requests = server.requests_for("/file.bin")
    assert [r.range for r in requests] == [None, "bytes=50000-", "bytes=150000-"]
    assert requests[1].headers["if-range"] == resource.etag
    assert recorder.kinds().count(EventKind.RESUMED) == 2
    assert all(isinstance(e, IncompleteBodyError) for e in recorder.errors())
    assert_monotonic_progress(recorder, len(DATA))
    assert temporaries(destdir) == []


def test_resume_falls_back_to_last_modified(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA, etag=None, drop_after=[1000])
    run_download(server, destdir, resource).wait()
    second = server.requests_for("/file.bin")[1]
    assert second.range == "bytes=1000-"
    assert second.headers["if-range"] == resource.last_modified
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_weak_etag_is_not_a_validator(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA, etag='W/"weak"', last_modified=None, drop_after=[1000])
    run_download(server, destdir, resource).wait()
    assert [r.range for r in server.requests] == [None, None]
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_no_validator_restarts_without_range(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, etag=None, last_modified=None, drop_after=[70_000])
    run_download(server, destdir, resource, recorder=recorder).wait()
    assert [r.range for r in server.requests] == [None, None]
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert EventKind.RESTARTED in recorder.kinds()
    assert_monotonic_progress(recorder, len(DATA))


def test_server_ignoring_range_restarts_cleanly(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, ignore_range=True, drop_after=[120_000])
    run_download(server, destdir, resource, recorder=recorder).wait()
    assert [r.range for r in server.requests] == [None, "bytes=120000-"]
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert EventKind.RESTARTED in recorder.kinds()
    assert_monotonic_progress(recorder, len(DATA))


def test_wrong_content_range_starts_over(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA, wrong_content_range=True, drop_after=[10_000])
    run_download(server, destdir, resource).wait()
    assert [r.range for r in server.requests] == [None, "bytes=10000-", None]
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_content_changed_between_attempts_is_never_mixed(server: FaultServer, destdir: str) -> None:
    new = make_data(len(DATA), seed=2)
    resource = Resource(DATA, drop_after=[100_000], change_after=1, changed_data=new)
    run_download(server, destdir, resource).wait()
    assert server.requests[1].range == "bytes=100000-"
    assert read(os.path.join(destdir, "file.bin")) == new


def test_retry_after_is_honoured(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, statuses=[(503, {"Retry-After": "0"}), (429, {"Retry-After": "0"})])
    # A backoff this long would hang the test: only Retry-After lets it finish.
    dl = run_download(
        server, destdir, resource, recorder=recorder, retry=RetryPolicy(backoff_factor=600)
    )
    dl.wait()
    delays = [e.delay for e in recorder.events if e.kind is EventKind.RETRYING]
    assert delays == [0.0, 0.0]
    assert [getattr(e, "status_code", None) for e in recorder.errors()] == [503, 429]
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("status", [408, 500, 502, 504])
def test_transient_statuses_are_retried(server: FaultServer, destdir: str, status: int) -> None:
    run_download(server, destdir, Resource(DATA, statuses=[status])).wait()
    assert len(server.requests) == 2
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_client_errors_fail_at_once_and_write_nothing(
    server: FaultServer, destdir: str, status: int
) -> None:
    dl = run_download(server, destdir, Resource(DATA, statuses=[status]))
    with pytest.raises(HTTPStatusError) as info:
        dl.wait()
    assert info.value.status_code == status
    assert info.value.url == dl.get_url()
    assert str(status) in str(info.value)
    assert len(server.requests) == 1
    assert listing(destdir) == []
    assert dl.state is DownloadState.FAILED


def test_retry_budget_exhausted_raises_last_error(server: FaultServer, destdir: str) -> None:
    policy = RetryPolicy(total=3, backoff_factor=0.001)
    dl = run_download(server, destdir, Resource(DATA, statuses=[500] * 10), retry=policy)
    with pytest.raises(HTTPStatusError) as info:
        dl.wait()
    assert info.value.status_code == 500
    assert len(info.value.history) == 3
    assert len(server.requests) == 4
    assert listing(destdir) == []


def test_retry_zero_disables_retries(server: FaultServer, destdir: str) -> None:
    dl = run_download(server, destdir, Resource(DATA, drop_after=[1000]), retry=0)
    with pytest.raises(IncompleteBodyError) as info:
        dl.wait()
    assert info.value.expected == len(DATA)
    assert len(server.requests) == 1
    assert listing(destdir) == []


def test_progress_resets_retry_budget(server: FaultServer, destdir: str) -> None:
    # Four interruptions, each after real progress, with a budget of two retries.
    drops = [70_000] * 4
    policy = RetryPolicy(total=2, backoff_factor=0.001)
    run_download(server, destdir, Resource(DATA, drop_after=drops), retry=policy).wait()
    assert len(server.requests) == 5
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_failure_leaves_an_existing_destination_untouched(
    server: FaultServer, destdir: str
) -> None:
    dest = os.path.join(destdir, "file.bin")
    with open(dest, "wb") as handle:
        handle.write(b"previous version")
    dl = run_download(server, destdir, Resource(DATA, drop_after=[5000]), retry=0)
    with pytest.raises(IncompleteBodyError):
        dl.wait()
    assert read(dest) == b"previous version"
    assert temporaries(destdir) == []


def test_stall_guard_ends_a_stalled_attempt(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, stall_after=[20_000])
    timeout = Timeouts(read=None, stall=0.3)
    dl = run_download(server, destdir, resource, recorder=recorder, timeout=timeout)
    dl.wait()
    assert [type(e) for e in recorder.errors()] == [StallError]
    assert server.requests[1].range == "bytes=20000-"
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_stall_guard_catches_a_trickle(server: FaultServer, destdir: str) -> None:
    resource = Resource(DATA, trickle=(10, 0.02), trickle_after=1000)
    timeout = Timeouts(read=5, stall=0.3, min_speed=10_000)
    dl = run_download(server, destdir, resource, timeout=timeout, retry=1)
    with pytest.raises(StallError, match="stalled"):
        dl.wait()
    assert len(server.requests) == 2
    assert listing(destdir) == []


def test_read_timeout_is_retried(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, stall_after=[1000])
    timeout = Timeouts(read=0.3, stall=None)
    run_download(server, destdir, resource, recorder=recorder, timeout=timeout).wait()
    assert len(recorder.errors()) == 1
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_cancel_while_server_stalls(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, stall_after=[10_000])
    dl = run_download(server, destdir, resource, recorder=recorder, timeout=Timeouts(read=None))
    assert recorder.got_progress.wait(5)
    dl.cancel()
    assert_cancelled_cleanly(dl)
    assert dl.state is DownloadState.CANCELLED
    assert dl.error() is None
    assert listing(destdir) == []


def test_cancel_during_backoff(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, statuses=[503] * 3)
    policy = RetryPolicy(backoff_factor=600, respect_retry_after=False)
    dl = run_download(server, destdir, resource, recorder=recorder, retry=policy)
    assert recorder.retrying.wait(5)
    dl.cancel()
    assert_cancelled_cleanly(dl)
    assert listing(destdir) == []


def test_cancel_while_waiting_for_headers(silent_listener: SilentListener, destdir: str) -> None:
    url = silent_listener.url("/never.bin")
    dl = Download(url, os.path.join(destdir, "never.bin"), timeout=Timeouts(read=None))
    dl.start()
    dl.cancel()
    assert_cancelled_cleanly(dl)
    assert listing(destdir) == []


def test_headers_read_timeout(silent_listener: SilentListener, destdir: str) -> None:
    from dlmanager import TransferError

    dest = os.path.join(destdir, "never.bin")
    dl = Download(silent_listener.url("/never.bin"), dest, timeout=Timeouts(read=0.2), retry=0)
    dl.start()
    with pytest.raises(TransferError):
        dl.wait()
    assert listing(destdir) == []


def test_connection_refused_is_a_transfer_error(destdir: str) -> None:
    from dlmanager import TransferError

    port = free_port()
    dl = Download(f"http://127.0.0.1:{port}/x", os.path.join(destdir, "x"), retry=0)
    dl.start()
    with pytest.raises(TransferError) as info:
        dl.wait()
    assert info.value.url.endswith("/x")
    assert listing(destdir) == []


def test_gzip_response_is_stored_decoded(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    data = b"compressible " * 20_000
    run_download(server, destdir, Resource(data, gzip=True), recorder=recorder).wait()
    assert read(os.path.join(destdir, "file.bin")) == data
    assert recorder.progress == []  # total unknown: the decoded size is not announced
    assert recorder.events[-1].received == len(data)


def test_gzip_truncated_is_an_error(server: FaultServer, destdir: str) -> None:
    data = make_data(200_000, seed=3)
    dl = run_download(server, destdir, Resource(data, gzip=True, drop_after=[5000]), retry=0)
    with pytest.raises(IncompleteBodyError):
        dl.wait()
    assert listing(destdir) == []


@pytest.mark.parametrize("framing", ["no_length", "chunked"])
def test_bodies_without_content_length(server: FaultServer, destdir: str, framing: str) -> None:
    run_download(server, destdir, Resource(DATA, **{framing: True})).wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_truncated_chunked_body_is_retried(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    resource = Resource(DATA, chunked=True, drop_after=[30_000])
    run_download(server, destdir, resource, recorder=recorder).wait()
    assert len(recorder.errors()) == 1
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_redirect_is_followed(server: FaultServer, destdir: str) -> None:
    server.add("/real.bin", DATA)
    server.redirect("/file.bin", server.url("/real.bin"))
    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"))
    dl.start()
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_empty_file(server: FaultServer, destdir: str) -> None:
    recorder = Recorder()
    run_download(server, destdir, b"", recorder=recorder).wait()
    assert read(os.path.join(destdir, "file.bin")) == b""
    assert recorder.progress == [(0, 0)]


def test_progress_callback_error_fails_the_download(server: FaultServer, destdir: str) -> None:
    server.add("/file.bin", DATA)

    def broken(download: Download, current: int, total: int) -> None:
        raise ZeroDivisionError("from the callback")

    dl = Download(server.url("/file.bin"), os.path.join(destdir, "file.bin"), progress=broken)
    dl.start()
    with pytest.raises(ZeroDivisionError):
        dl.wait()
    assert listing(destdir) == []


def test_start_twice_is_an_error(server: FaultServer, destdir: str) -> None:
    dl = run_download(server, destdir, DATA)
    with pytest.raises(RuntimeError, match="already started"):
        dl.start()
    dl.wait()


@pytest.mark.parametrize("chunk_size", [0, -1, 1.5, True])
def test_invalid_chunk_size(destdir: str, chunk_size: Any) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        Download("http://127.0.0.1/x", os.path.join(destdir, "x"), chunk_size=chunk_size)


def test_finished_callback_always_called(server: FaultServer, destdir: str) -> None:
    calls: list[DownloadState] = []
    server.add("/missing.bin", Resource(DATA, statuses=[404]))
    dl = Download(
        server.url("/missing.bin"),
        os.path.join(destdir, "missing.bin"),
        finished_callback=lambda d: calls.append(d.state),
    )
    dl.start()
    dl.wait(raise_if_error=False)
    assert calls == [DownloadState.FAILED]


def test_cancel_and_set_progress_from_the_progress_callback(
    server: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", DATA)
    calls: list[int] = []

    def progress(download: Download, current: int, total: int) -> None:
        calls.append(current)
        if current:
            download.set_progress(progress)
            download.cancel()

    dl = Download(
        server.url("/file.bin"),
        os.path.join(destdir, "file.bin"),
        chunk_size=1000,
        progress=progress,
    )
    dl.start()
    dl.thread.join(10)
    assert not dl.thread.is_alive()
    with pytest.raises(DownloadInterrupt):
        dl.wait()
    assert calls[0] == 0 and len(calls) == 2
    assert listing(destdir) == []


def test_failing_on_event_hook_does_not_skip_cleanup(server: FaultServer, destdir: str) -> None:
    server.add("/file.bin", DATA)
    finished: list[Download] = []

    def on_event(event: DownloadEvent) -> None:
        if event.kind is EventKind.FINISHED:
            raise RuntimeError("hook bug")

    dl = Download(
        server.url("/file.bin"),
        os.path.join(destdir, "file.bin"),
        on_event=on_event,
        finished_callback=finished.append,
    )
    dl.start()
    dl.wait()
    assert finished == [dl]
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("same_size", [True, False])
def test_server_ignoring_if_range_cannot_mix_versions(
    server: FaultServer, destdir: str, same_size: bool
) -> None:
    new = make_data(len(DATA) if same_size else len(DATA) + 10, seed=5)
    resource = Resource(
        DATA, ignore_if_range=True, drop_after=[100_000], change_after=1, changed_data=new
    )
    recorder = Recorder()
    run_download(server, destdir, resource, recorder=recorder).wait()
    assert [r.range for r in server.requests] == [None, "bytes=100000-", None]
    assert EventKind.RESTARTED in recorder.kinds()
    # The drop is a failed attempt; starting over is not.
    assert [type(e) for e in recorder.errors()] == [IncompleteBodyError]
    assert read(os.path.join(destdir, "file.bin")) == new


# -- inputs ------------------------------------------------------------------------------------


def test_a_path_like_destination(server: FaultServer, destdir: str) -> None:
    import pathlib

    server.add("/f.bin", DATA)
    dest = pathlib.Path(destdir) / "f.bin"
    dl = Download(server.url("/f.bin"), dest)
    dl.start()
    dl.wait()
    assert dl.get_dest() == str(dest)
    assert read(str(dest)) == DATA


@pytest.mark.parametrize("dest", [b"/tmp/f.bin", 3, None, ""])
def test_a_destination_that_is_not_a_path_is_refused(dest: Any) -> None:
    with pytest.raises(ValueError, match="dest must be"):
        Download("http://127.0.0.1/f.bin", dest)


@pytest.mark.parametrize("url", ["ftp://example.org/f.bin", "f.bin", "file:///etc/passwd", ""])
def test_an_unsupported_url_is_refused_in_the_callers_thread(destdir: str, url: str) -> None:
    threads = threading.active_count()
    with pytest.raises(ValueError, match=r"unsupported URL scheme|invalid URL"):
        Download(url, os.path.join(destdir, "f.bin"))
    assert threading.active_count() == threads
    assert listing(destdir) == []
