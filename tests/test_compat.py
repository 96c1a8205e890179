"""dlmanager 0.1.1 behaviours, with the duck-typed Mock sessions its users pass.

Mocks are the point here: existing test suites (mozregression's among them)
hand the manager a ``unittest.mock.Mock`` session whose response has only
``headers`` and ``iter_content``; that must keep working.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any
from unittest.mock import Mock

import pytest

from dlmanager import manager as download_manager
from tests.conftest import listing, read, temporaries


def mock_session(
    data: bytes, *, gate: threading.Event | None = None, headers: dict[str, str] | None = None
) -> Mock:
    """A session whose response yields *data* in chunks.

    With a *gate*, the body is slow: 4-byte chunks, each waiting up to 10 ms
    for the gate to open.
    """

    def iter_content(chunk_size: int = 4) -> Iterator[bytes]:
        if gate is not None:
            chunk_size = 4  # a slow body: thousands of chunks, 10 ms each
        rest = data
        while rest:
            if gate is not None:
                gate.wait(0.01)
            chunk, rest = rest[:chunk_size], rest[chunk_size:]
            yield chunk

    response = Mock()
    response.headers = {"Content-length": str(len(data))} if headers is None else headers
    response.iter_content = iter_content
    return Mock(get=Mock(return_value=response))


@pytest.fixture
def dest(destdir: str) -> str:
    return os.path.join(destdir, "dest")


def make_download(dest: str, session: Mock, **kwargs: Any) -> download_manager.Download:
    finished = kwargs.pop("finished_callback", None) or Mock()
    return download_manager.Download(
        "http://url", dest, finished_callback=finished, chunk_size=4, session=session, **kwargs
    )


def test_creation(dest: str) -> None:
    dl = make_download(dest, mock_session(b""))
    assert not dl.is_canceled()
    assert not dl.is_running()
    assert dl.error() is None
    assert dl.get_url() == "http://url"
    assert dl.get_dest() == dest


def test_download(dest: str) -> None:
    finished = Mock()
    dl = make_download(dest, mock_session(b"1234" * 4), finished_callback=finished)
    assert not os.path.exists(dest)
    dl.start()
    dl.wait()
    assert not dl.is_running()
    finished.assert_called_once_with(dl)
    assert read(dest) == b"1234" * 4


def test_request_asks_for_identity_stream(dest: str) -> None:
    session = mock_session(b"abcd")
    dl = make_download(dest, session)
    dl.start()
    dl.wait()
    args, kwargs = session.get.call_args
    assert args == ("http://url",)
    assert kwargs["stream"] is True
    assert kwargs["headers"]["Accept-Encoding"] == "identity"


def test_progress_sequence(dest: str) -> None:
    calls: list[tuple[Any, int, int]] = []
    dl = make_download(dest, mock_session(b"1234" * 4))
    dl.set_progress(lambda d, current, total: calls.append((d, current, total)))
    dl.start()
    dl.wait()
    assert calls == [(dl, 0, 16), (dl, 4, 16), (dl, 8, 16), (dl, 12, 16), (dl, 16, 16)]


@pytest.mark.parametrize(
    "headers",
    [{"content-length": "8"}, {"CONTENT-LENGTH": "8"}, {"x-goog-stored-content-length": "8"}],
)
def test_total_from_any_header_spelling(dest: str, headers: dict[str, str]) -> None:
    calls: list[tuple[int, int]] = []
    dl = make_download(
        dest,
        mock_session(b"12345678", headers=headers),
        progress=lambda d, c, t: calls.append((c, t)),
    )
    dl.start()
    dl.wait()
    assert calls == [(0, 8), (4, 8), (8, 8)]


def test_progress_not_called_without_total(dest: str) -> None:
    calls: list[tuple[int, int]] = []
    events: list[int] = []
    dl = make_download(
        dest,
        mock_session(b"12345678", headers={}),
        progress=lambda d, c, t: calls.append((c, t)),
        on_event=lambda event: events.append(event.received),
    )
    dl.start()
    dl.wait()
    assert calls == []
    assert events[-1] == 8
    assert read(dest) == b"12345678"


def test_error_in_thread(dest: str) -> None:
    session = mock_session(b"")
    session.get.return_value.headers = {"Content-length": "24"}
    session.get.return_value.iter_content = Mock(side_effect=OSError)
    finished = Mock()
    dl = make_download(dest, session, finished_callback=finished)
    dl.start()
    with pytest.raises(OSError):
        dl.wait()
    error = dl.error()
    assert error is not None and error[0] is OSError
    finished.assert_called_once_with(dl)
    assert listing(os.path.dirname(dest)) == []


def test_http_error_detected_with_raise_for_status(dest: str) -> None:
    from dlmanager import HTTPStatusError

    session = mock_session(b"<html>error page</html>")
    session.get.return_value.raise_for_status.side_effect = RuntimeError("404 Client Error")
    dl = make_download(dest, session)
    dl.start()
    with pytest.raises(HTTPStatusError, match="404 Client Error"):
        dl.wait()
    assert listing(os.path.dirname(dest)) == []


def test_longer_body_than_announced_is_an_error(dest: str) -> None:
    from dlmanager import IncompleteBodyError

    session = mock_session(b"123456789", headers={"Content-Length": "4"})
    dl = make_download(dest, session, retry=0)
    dl.start()
    with pytest.raises(IncompleteBodyError, match="longer"):
        dl.wait()
    assert listing(os.path.dirname(dest)) == []


def test_cancel(dest: str) -> None:
    gate = threading.Event()
    started = threading.Event()
    finished = Mock()
    dl = make_download(
        dest,
        mock_session(b"1234" * 1000, gate=gate),
        finished_callback=finished,
        progress=lambda d, c, t: started.set(),
    )
    dl.start()
    assert started.wait(5)
    dl.cancel()
    with pytest.raises(download_manager.DownloadInterrupt):
        dl.wait()
    assert dl.is_canceled()
    assert not os.path.exists(dest)
    assert temporaries(os.path.dirname(dest)) == []
    finished.assert_called_once_with(dl)


def test_wait_cancels_on_exception_in_waiting_thread(dest: str) -> None:
    dl = make_download(dest, mock_session(b"1234" * 1000, gate=threading.Event()))
    original_join = dl.thread.join
    calls = iter("123")

    def join(timeout: float | None = None) -> None:
        next(calls)  # raises StopIteration after a few calls, like a Ctrl-C would
        original_join(timeout)

    dl.thread.join = join  # type: ignore[method-assign]
    dl.start()
    with pytest.raises(StopIteration):
        dl.wait()
    assert dl.is_canceled()
    original_join()
    assert not os.path.exists(dest)
    assert temporaries(os.path.dirname(dest)) == []


class TestManager:
    def do_download(
        self, manager: download_manager.DownloadManager, fname: str, data: bytes, **kw: Any
    ) -> download_manager.Download | None:
        manager.session = mock_session(data, **kw)
        return manager.download("http://foo/" + fname, fname)

    def test_download_dedup_and_existing(self, destdir: str) -> None:
        manager = download_manager.DownloadManager(destdir)
        gate = threading.Event()
        dl1 = self.do_download(manager, "foo", b"hello" * 4, gate=gate)
        assert isinstance(dl1, download_manager.Download)
        assert dl1.is_running()
        progress = Mock()
        manager.session = mock_session(b"other")
        assert manager.download("http://bar", "foo", progress=progress) is dl1
        dl3 = self.do_download(manager, "foo2", b"hello you" * 4)
        assert isinstance(dl3, download_manager.Download) and dl3 is not dl1
        gate.set()
        dl3.wait()
        dl1.wait()
        assert progress.call_args[0] == (dl1, 20, 20)
        assert self.do_download(manager, "foo", b"hello2" * 4) is None
        assert read(os.path.join(destdir, "foo")) == b"hello" * 4
        assert read(os.path.join(destdir, "foo2")) == b"hello you" * 4
        assert manager._downloads == {}

    def test_cancel_with_predicate(self, destdir: str) -> None:
        manager = download_manager.DownloadManager(destdir)
        gate = threading.Event()
        dl1 = self.do_download(manager, "foo", b"foo" * 50000, gate=gate)
        dl2 = self.do_download(manager, "bar", b"bar" * 50000, gate=gate)
        dl3 = self.do_download(manager, "foobar", b"foobar" * 4)
        assert dl1 is not None and dl2 is not None and dl3 is not None
        manager.cancel(cancel_if=lambda dl: os.path.basename(dl.get_dest()) == "foo")
        assert dl1.is_canceled()
        assert not dl2.is_canceled()
        dl3.wait()
        manager.cancel()
        assert dl2.is_canceled()
        assert not dl3.is_canceled()
        dl1.wait(raise_if_error=False)
        dl2.wait(raise_if_error=False)
        assert listing(destdir) == ["foobar"]
        assert read(os.path.join(destdir, "foobar")) == b"foobar" * 4
        assert manager._downloads == {}

    def test_cancel_reaches_downloads_a_test_put_in_downloads(self, destdir: str) -> None:
        # mozregression's test of BuildDownloadManager.focus_download fills
        # _downloads with Download objects it made (is_running mocked) and
        # expects cancel(cancel_if=...) to cancel the others.
        manager = download_manager.DownloadManager(destdir)
        current = download_manager.Download("http://url", os.path.join(destdir, "current"))
        other = download_manager.Download("http://url", os.path.join(destdir, "other"))
        manager._downloads = {current.get_dest(): current, other.get_dest(): other}
        current.is_running = Mock(return_value=True)  # type: ignore[method-assign]
        other.is_running = Mock(return_value=True)  # type: ignore[method-assign]

        manager.cancel(cancel_if=lambda dl: dl.get_dest() != current.get_dest())

        assert other.is_canceled()
        assert not current.is_canceled()

    def test_download_joins_a_download_a_test_put_in_downloads(self, destdir: str) -> None:
        # The same test then asks for that file: download() returns the
        # download found in the replaced _downloads, with the progress attached.
        manager = download_manager.DownloadManager(destdir)
        current = download_manager.Download("http://url", manager.get_dest("current"))
        current.set_progress = Mock()  # type: ignore[method-assign]
        manager._downloads = {current.get_dest(): current}
        progress = Mock()

        assert manager.download("http://url", "current", progress=progress) is current
        current.set_progress.assert_called_once_with(progress)
        assert manager._downloads == {current.get_dest(): current}
        manager.close()

    def test_hooks_called_by_subclass(self, destdir: str) -> None:
        seen: list[tuple[str, str]] = []

        class Manager(download_manager.DownloadManager):
            def _download_started(self, dl: download_manager.Download) -> None:
                seen.append(("started", os.path.basename(dl.get_dest())))
                super()._download_started(dl)

            def _download_finished(self, dl: download_manager.Download) -> None:
                seen.append(("finished", os.path.basename(dl.get_dest())))
                super()._download_finished(dl)

        manager = Manager(destdir)
        dl = self.do_download(manager, "f", b"data")
        assert dl is not None
        dl.wait()
        assert seen == [("started", "f"), ("finished", "f")]
        assert manager._downloads == {}

    def test_requests_module_as_session(self, destdir: str) -> None:
        import requests

        manager = download_manager.DownloadManager(destdir, session=requests)
        assert manager.session is requests


# -- sessions written for 0.1.1 ---------------------------------------------------------------


class OldSession:
    """A hand-written session of the 0.1.1 era: ``get(url, stream)`` and nothing more."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[str, bool]] = []
        self.chunk_sizes: list[int] = []

    def get(self, url: str, stream: bool = False) -> Any:
        self.calls.append((url, stream))
        response = Mock()
        response.headers = {"Content-length": str(len(self.data))}

        def iter_content(chunk_size: int) -> Iterator[bytes]:
            self.chunk_sizes.append(chunk_size)
            for start in range(0, len(self.data), chunk_size):
                yield self.data[start : start + chunk_size]

        response.iter_content = iter_content
        return response


def test_a_session_whose_get_takes_only_url_and_stream(destdir: str) -> None:
    session = OldSession(b"0123456789" * 10_000)
    manager = download_manager.DownloadManager(destdir, session=session)
    try:
        download = manager.download("http://foo/f.bin")
        assert download is not None
        download.wait()
    finally:
        manager.close()
    assert session.calls == [("http://foo/f.bin", True)]  # called as 0.1.1 did
    assert read(os.path.join(destdir, "f.bin")) == session.data
    assert listing(destdir) == ["f.bin"]


@pytest.mark.parametrize(("chunk_size", "asked"), [(None, 16 * 1024), (4096, 4096)])
def test_iter_content_is_asked_for_the_chunk_size_of_0_1_1(
    destdir: str, chunk_size: int | None, asked: int
) -> None:
    session = OldSession(b"x" * 100_000)
    dl = download_manager.Download(
        "http://foo/f.bin", os.path.join(destdir, "f.bin"), chunk_size=chunk_size, session=session
    )
    dl.start()
    dl.wait()
    assert session.chunk_sizes == [asked]
    assert read(os.path.join(destdir, "f.bin")) == session.data
