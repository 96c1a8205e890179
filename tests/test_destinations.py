"""Destinations beyond a folder, in the library: a download into a caller's file
object (``Download(url, fileobj)``, ``DownloadManager.download(url, dest=fileobj)``)
and ``fetch_bytes()``, against real loopback servers with faults injected."""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

import dlmanager
from dlmanager import (
    ChecksumError,
    Download,
    DownloadManager,
    DownloadState,
    HTTPStatusError,
    IncompleteBodyError,
    RetryPolicy,
    StorageError,
    TooLargeError,
)
from dlmanager.disk.sinks import FileObjectSink
from dlmanager.session import DownloadSession
from tests.conftest import listing, read
from tests.server import FaultServer, Resource, make_data

DATA = make_data(300_000, seed=7)
PREFIX = b"kept before the download\n"
FAST = RetryPolicy(backoff_factor=0.001, backoff_max=0.01)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def positioned(prefix: bytes = PREFIX) -> io.BytesIO:
    """A BytesIO holding *prefix*, positioned after it."""
    buffer = io.BytesIO(prefix)
    buffer.seek(len(prefix))
    return buffer


def fetch_into(target: Any, url: str, **options: Any) -> Download:
    """Download *url* into *target*; waited for, errors raised."""
    options.setdefault("retry", FAST)
    download = Download(url, target, **options)
    download.start()
    download.wait()
    return download


# --- retries, resume and restarts -------------------------------------------------------------


def test_a_resume_continues_the_object_from_its_start_position(
    server: FaultServer, make_session: Callable[[], DownloadSession | None]
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))
    buffer = positioned()

    download = fetch_into(buffer, server.url("/f.bin"), session=make_session())

    assert buffer.getvalue() == PREFIX + DATA
    assert buffer.tell() == len(PREFIX) + len(DATA)  # after the last byte
    ranges = [request.range for request in server.requests_for("/f.bin")]
    assert ranges == [None, "bytes=100000-"]  # the file's bytes, not the object's
    assert download.state is DownloadState.DONE
    assert download.received == len(DATA)


def test_a_restart_takes_back_every_byte_of_the_first_try(
    server: FaultServer, make_session: Callable[[], DownloadSession | None]
) -> None:
    # The file changes between the two requests: the server sends the whole new,
    # shorter version; not one byte of the first try may follow it.
    shorter = make_data(150_000, seed=8)
    resource = Resource(DATA, drop_after=[120_000], change_after=1, changed_data=shorter)
    server.add("/f.bin", resource)
    buffer = positioned()

    fetch_into(buffer, server.url("/f.bin"), session=make_session())

    assert buffer.getvalue() == PREFIX + shorter
    requests = server.requests_for("/f.bin")
    assert [request.range for request in requests] == [None, "bytes=120000-"]


def test_a_server_that_ignores_ranges_restarts_the_object(server: FaultServer) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000], ignore_range=True))
    buffer = positioned()

    fetch_into(buffer, server.url("/f.bin"), checksum=sha256(DATA))

    assert buffer.getvalue() == PREFIX + DATA


def test_an_open_file_is_written_from_its_position_and_cut_after_the_download(
    server: FaultServer, tmp_path: os.PathLike[str]
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[50_000]))
    path = os.path.join(os.fspath(tmp_path), "out.bin")
    with open(path, "wb") as handle:
        handle.write(PREFIX + b"x" * 500_000)  # longer than the download
    with open(path, "r+b") as handle:
        handle.seek(len(PREFIX))
        download = fetch_into(handle, server.url("/f.bin"))
        assert handle.tell() == len(PREFIX) + len(DATA)
        assert download.get_dest() == path
        assert download.fileobj is handle
        assert not handle.closed  # the caller's to close
    assert read(path) == PREFIX + DATA
    assert sorted(os.listdir(os.fspath(tmp_path))) == ["out.bin"]  # no temporary file


def test_connections_are_one_stream_into_a_file_object(server: FaultServer) -> None:
    server.add("/f.bin", DATA)
    buffer = io.BytesIO()

    fetch_into(buffer, server.url("/f.bin"), connections=4, min_split_size=10_000)

    assert buffer.getvalue() == DATA
    assert [request.range for request in server.requests_for("/f.bin")] == [None]


# --- checksums, max_size, cancel: what is left ------------------------------------------------


def test_a_checksum_is_checked_across_a_resume_into_a_write_only_file(
    server: FaultServer, tmp_path: os.PathLike[str]
) -> None:
    # A file opened "wb" cannot be read back: the bytes are hashed as they come.
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))
    path = os.path.join(os.fspath(tmp_path), "out.bin")
    with open(path, "wb") as handle:
        download = fetch_into(handle, server.url("/f.bin"), checksum=sha256(DATA))
    assert read(path) == DATA
    assert download.state is DownloadState.DONE
    assert len(server.requests_for("/f.bin")) == 2


def test_a_checksum_mismatch_takes_the_bytes_back(server: FaultServer) -> None:
    server.add("/f.bin", DATA)
    buffer = positioned()

    with pytest.raises(ChecksumError):
        fetch_into(buffer, server.url("/f.bin"), checksum=sha256(b"another file"))

    assert buffer.getvalue() == PREFIX


def test_max_size_fails_before_any_byte(server: FaultServer) -> None:
    server.add("/f.bin", DATA)
    buffer = positioned()

    with pytest.raises(TooLargeError):
        fetch_into(buffer, server.url("/f.bin"), max_size=100_000)

    assert buffer.getvalue() == PREFIX


def test_max_size_cuts_a_body_without_length_and_takes_it_back(server: FaultServer) -> None:
    server.add("/f.bin", Resource(DATA, no_length=True))
    buffer = positioned()

    with pytest.raises(TooLargeError):
        fetch_into(buffer, server.url("/f.bin"), max_size=100_000)

    assert buffer.getvalue() == PREFIX


def test_a_failure_takes_the_bytes_back(server: FaultServer) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))
    buffer = positioned()

    with pytest.raises(IncompleteBodyError) as raised:
        fetch_into(buffer, server.url("/f.bin"), retry=0)

    assert buffer.getvalue() == PREFIX
    assert raised.value.dest == "<BytesIO>"
    assert "written" not in str(raised.value)  # nothing stays: nothing to tell


@pytest.mark.parametrize("keep_partial", [False, True])
def test_a_cancel_takes_the_bytes_back(server: FaultServer, keep_partial: bool) -> None:
    server.add("/f.bin", Resource(DATA, trickle=(5_000, 0.02)))
    buffer = positioned()
    got_bytes = threading.Event()
    download = Download(
        server.url("/f.bin"),
        buffer,
        progress=lambda dl, current, total: current > 20_000 and got_bytes.set(),
    )
    download.start()
    assert got_bytes.wait(10)

    download.cancel(keep_partial=keep_partial)
    download.wait(raise_if_error=False)

    assert download.state is DownloadState.CANCELLED
    assert buffer.getvalue() == PREFIX


class Uncuttable(io.RawIOBase):
    """A seekable binary object that cannot be truncated."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.position = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = (0, self.position, len(self.data))[whence] + offset
        return self.position

    def tell(self) -> int:
        return self.position

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self.data[self.position : self.position + len(chunk)] = chunk
        self.position += len(chunk)
        return len(chunk)

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("truncate")


def test_an_object_that_cannot_be_cut_is_overwritten_by_a_restart(server: FaultServer) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000], ignore_range=True))
    target = Uncuttable()

    fetch_into(target, server.url("/f.bin"))

    assert bytes(target.data) == DATA


def test_what_a_failure_leaves_in_an_object_that_cannot_be_cut_is_told(
    server: FaultServer,
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))
    target = Uncuttable()

    with pytest.raises(IncompleteBodyError) as raised:
        fetch_into(target, server.url("/f.bin"), retry=0)

    assert bytes(target.data) == DATA[:100_000]
    assert "100000 bytes had been written to <Uncuttable> (from byte 0)" in str(raised.value)
    assert "cannot be truncated" in str(raised.value)


def test_stale_bytes_an_object_cannot_shed_fail_the_download(server: FaultServer) -> None:
    # The first try wrote more than the whole new version, and nothing can cut it off.
    shorter = make_data(150_000, seed=8)
    resource = Resource(DATA, drop_after=[200_000], change_after=1, changed_data=shorter)
    server.add("/f.bin", resource)
    target = Uncuttable()

    with pytest.raises(StorageError) as raised:
        fetch_into(target, server.url("/f.bin"))

    message = str(raised.value)
    assert "bytes 150000 to 200000 of an earlier try follow the download" in message
    assert "cannot be truncated" in message


# --- bad objects ------------------------------------------------------------------------------


def test_bad_objects_are_refused_up_front(tmp_path: os.PathLike[str]) -> None:
    url = "http://127.0.0.1:9/f.bin"
    path = os.path.join(os.fspath(tmp_path), "f.txt")
    read_fd, write_fd = os.pipe()
    with open(path, "w") as text, open(path, "rb") as reading, os.fdopen(write_fd, "wb") as pipe:
        os.close(read_fd)
        closed = io.BytesIO()
        closed.close()
        cases: list[tuple[Any, type[Exception], str]] = [
            (io.StringIO(), TypeError, "is a text stream"),
            (text, TypeError, f"{path} is a text stream"),
            (reading, ValueError, f"{path} is not open for writing (mode 'rb')"),
            (closed, ValueError, "<BytesIO> is closed"),
            (pipe, ValueError, "is not seekable"),
            (42, ValueError, "dest must be"),
        ]
        for target, error, message in cases:
            with pytest.raises(error, match=re.escape(message)):
                Download(url, target)
    assert listing(os.fspath(tmp_path)) == ["f.txt"]


def test_revalidate_needs_a_path() -> None:
    with pytest.raises(ValueError, match="not a file object"):
        Download("http://127.0.0.1:9/f.bin", io.BytesIO(), max_age=60)


def test_a_file_object_sink_of_a_stream_is_never_rewound() -> None:
    stream = io.BytesIO()
    sink = FileObjectSink(stream, rewindable=False)
    sink.write(b"abc")
    with pytest.raises(StorageError, match="cannot start <BytesIO> over: 3 bytes"):
        sink.truncate()
    sink.discard()
    assert stream.getvalue() == b"abc"
    assert sink.left == 3


# --- through a manager ------------------------------------------------------------------------


def test_a_manager_downloads_into_file_objects_and_nothing_into_its_directory(
    server: FaultServer, destdir: str, make_session: Callable[[], DownloadSession | None]
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))
    first, second = positioned(), io.BytesIO()
    progress: list[tuple[int, int]] = []
    with DownloadManager(destdir, make_session(), retry=FAST, max_workers=1) as manager:
        one = manager.download(
            server.url("/f.bin"), dest=first, progress=lambda d, c, t: progress.append((c, t))
        )
        two = manager.download(server.url("/f.bin"), dest=second, checksum=sha256(DATA))
        assert one is not None and two is not None and one is not two  # never deduplicated
        manager.wait()
    assert first.getvalue() == PREFIX + DATA
    assert second.getvalue() == DATA
    assert progress[-1] == (len(DATA), len(DATA))
    assert one.get_dest() == "<BytesIO>"
    assert listing(destdir) == []


def test_a_manager_raises_what_failed_into_a_file_object(server: FaultServer, destdir: str) -> None:
    server.add("/missing.bin", Resource(DATA, statuses=[404]))
    buffer = positioned()
    with DownloadManager(destdir) as manager:
        manager.download(server.url("/missing.bin"), dest=buffer)
        with pytest.raises(HTTPStatusError):
            manager.wait()
    assert buffer.getvalue() == PREFIX


def test_a_manager_refuses_a_name_with_a_file_object(destdir: str) -> None:
    with DownloadManager(destdir) as manager:
        with pytest.raises(ValueError, match="not both"):
            manager.download("http://127.0.0.1:9/f.bin", "f.bin", dest=io.BytesIO())
        with pytest.raises(TypeError, match="text stream"):
            manager.download("http://127.0.0.1:9/f.bin", dest=io.StringIO())


def test_a_manager_cancel_takes_the_bytes_back(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", Resource(DATA, trickle=(5_000, 0.02)))
    buffer = positioned()
    got_bytes = threading.Event()
    with DownloadManager(destdir) as manager:
        download = manager.download(
            server.url("/f.bin"),
            dest=buffer,
            progress=lambda dl, current, total: current > 20_000 and got_bytes.set(),
        )
        assert got_bytes.wait(10)
        manager.cancel(keep_partial=True)
        manager.wait()
    assert download is not None and download.state is DownloadState.CANCELLED
    assert buffer.getvalue() == PREFIX
    assert listing(destdir) == []


# --- fetch_bytes ------------------------------------------------------------------------------


def test_fetch_bytes_returns_the_body_across_a_resume(
    server: FaultServer, make_session: Callable[[], DownloadSession | None]
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))

    body = dlmanager.fetch_bytes(
        server.url("/f.bin"), session=make_session(), retry=FAST, checksum=sha256(DATA)
    )

    assert body == DATA
    assert len(server.requests_for("/f.bin")) == 2


def test_fetch_bytes_raises_the_errors(server: FaultServer) -> None:
    server.add("/f.bin", DATA)
    server.add("/missing.bin", Resource(DATA, statuses=[404]))

    with pytest.raises(TooLargeError):
        dlmanager.fetch_bytes(server.url("/f.bin"), max_size=1_000)
    with pytest.raises(HTTPStatusError):
        dlmanager.fetch_bytes(server.url("/missing.bin"))
    with pytest.raises(ChecksumError):
        dlmanager.fetch_bytes(server.url("/f.bin"), checksum=sha256(b"other"))
    with pytest.raises(TypeError):
        dlmanager.fetch_bytes(server.url("/f.bin"), no_such_option=1)


def test_a_file_object_gets_the_body_of_a_post(server: FaultServer, destdir: str) -> None:
    server.add("/report", Resource(DATA))
    buffer = io.BytesIO(b"head:")
    buffer.seek(5)
    with DownloadManager(destdir) as manager:
        download = manager.download(
            server.url("/report"), dest=buffer, method="POST", data={"q": "x"}, headers={"X-A": "b"}
        )
        assert download is not None
        download.wait()
    assert buffer.getvalue() == b"head:" + DATA
    (request,) = server.requests_for("/report")
    assert (request.method, request.body, request.headers["x-a"]) == ("POST", b"q=x", "b")
