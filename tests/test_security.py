"""Nothing lands outside the destination, nothing leaks to another host, nothing runs forever.

- Redirects: ``Authorization`` and cookies stay with their origin; loops,
  over-long chains and other schemes than http(s) end with a clear error.
- ``max_size``: a file announced too big is refused before a byte is written;
  a body that goes past the limit (no length, endless, decompressed) is cut off.
- Symlinks planted at the final or a temporary path are never followed.
- Names that would escape the directory are refused by the library and the CLI.

dlmanager takes names from the URL's path, ``fname``/``-o`` and manifests
only: it does not read ``Content-Disposition``.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dlmanager import (
    Download,
    DownloadManager,
    EventKind,
    RetryPolicy,
    Timeouts,
    TooLargeError,
    TransferError,
)
from dlmanager.cli import main
from dlmanager.disk import checkpoint as checkpoints
from dlmanager.disk import layout
from dlmanager.disk.partfile import PartFile
from dlmanager.session import MAX_REDIRECTS, DownloadSession
from dlmanager.transport.attempt import Attempt
from dlmanager.transport.senders import Senders
from tests.conftest import ThroughRequests, listing, read, temporaries
from tests.loopback import BackgroundServer, LoopbackHandler, SilentListener
from tests.server import FaultServer, Resource, make_data, strong_etag

DATA = make_data(300_000, seed=11)
SESSIONS = [requests.Session, DownloadSession, ThroughRequests]


def run(destdir: str, url: str, fname: str | None = "file.bin", **kwargs: Any) -> Any:
    """Download *url* with a manager; return the download's error, or None."""
    with DownloadManager(destdir, retry=RetryPolicy(backoff_factor=0.001), **kwargs) as manager:
        download = manager.download(url, fname)
        assert download is not None
        download.wait(raise_if_error=False)
        error = download.error()  # received: leaving the block does not raise it
    return None if error is None else error[1]


@pytest.fixture
def other() -> Iterator[FaultServer]:
    """A second server: another origin (same host, another port)."""
    with FaultServer().start() as srv:
        yield srv


def localhost(server: FaultServer, path: str) -> str:
    """*path* on *server* under another host name (same address and port)."""
    return f"http://localhost:{server.host_port[1]}{path}"


# --- redirects: credentials ---------------------------------------------------------------


@pytest.mark.parametrize("session_class", SESSIONS)
@pytest.mark.parametrize("how", ["auth", "header"])
@pytest.mark.parametrize(
    ("target", "sent"),
    [("same origin", True), ("other port", False), ("other host", False), ("both", False)],
)
def test_authorization_stays_with_its_origin(
    server: FaultServer,
    other: FaultServer,
    destdir: str,
    session_class: type[requests.Session],
    how: str,
    target: str,
    sent: bool,
) -> None:
    server.add("/file.bin", DATA)
    other.add("/file.bin", DATA)
    location, final = {
        "same origin": (server.url("/file.bin"), server),
        "other port": (other.url("/file.bin"), other),
        "other host": (localhost(server, "/file.bin"), server),
        "both": (localhost(other, "/file.bin"), other),
    }[target]
    server.redirect("/start", location)

    with session_class() as session:
        if how == "auth":
            session.auth = ("user", "secret")
        else:
            session.headers["Authorization"] = "Bearer secret"
        assert run(destdir, server.url("/start"), session=session) is None

    assert read(os.path.join(destdir, "file.bin")) == DATA
    (first,) = server.requests_for("/start")
    assert "authorization" in first.headers
    (last,) = final.requests_for("/file.bin")
    assert ("authorization" in last.headers) is sent


@pytest.mark.parametrize("session_class", SESSIONS)
@pytest.mark.parametrize(("target", "sent"), [("same host", True), ("other host", False)])
def test_cookies_stay_with_their_host(
    server: FaultServer,
    destdir: str,
    session_class: type[requests.Session],
    target: str,
    sent: bool,
) -> None:
    location = server.url("/file.bin") if target == "same host" else localhost(server, "/file.bin")
    redirect = {"Location": location, "Set-Cookie": "sid=from-server; Path=/"}
    server.add("/start", Resource(b"", statuses=[(302, redirect)]))
    server.add("/file.bin", DATA)

    with session_class() as session:
        session.cookies.set("jar", "for-127", domain="127.0.0.1")
        assert run(destdir, server.url("/start"), session=session) is None

    (first,) = server.requests_for("/start")
    assert first.headers["cookie"] == "jar=for-127"
    (last,) = server.requests_for("/file.bin")
    cookies = last.headers.get("cookie", "")
    assert ("sid=from-server" in cookies) is sent
    assert ("jar=for-127" in cookies) is sent


def test_download_session_keeps_domainless_cookies_on_the_first_origin(
    server: FaultServer, destdir: str
) -> None:
    # requests sends a cookie set without a domain to every host; after a
    # redirect elsewhere, a DownloadSession does not, on any later hop either.
    server.redirect("/start", localhost(server, "/hop"))
    server.redirect("/hop", localhost(server, "/file.bin"))
    server.add("/file.bin", DATA)

    with DownloadSession() as session:
        session.cookies.set("token", "secret")
        assert run(destdir, server.url("/start"), session=session) is None

    assert server.requests_for("/start")[0].headers["cookie"] == "token=secret"
    assert "cookie" not in server.requests_for("/hop")[0].headers
    assert "cookie" not in server.requests_for("/file.bin")[0].headers


def test_download_session_keeps_domainless_cookies_on_a_same_origin_redirect(
    server: FaultServer, destdir: str
) -> None:
    server.redirect("/start", server.url("/file.bin"))
    server.add("/file.bin", DATA)

    with DownloadSession() as session:
        session.cookies.set("token", "secret")
        assert run(destdir, server.url("/start"), session=session) is None

    assert server.requests_for("/file.bin")[0].headers["cookie"] == "token=secret"


# --- redirects: loops, long chains, other schemes ------------------------------------------


@pytest.mark.parametrize(
    ("session_class", "limit"),
    [(None, MAX_REDIRECTS), (ThroughRequests, MAX_REDIRECTS), (requests.Session, 30)],
)
def test_redirect_loop_ends_clearly_without_retries(
    server: FaultServer, destdir: str, session_class: type[requests.Session] | None, limit: int
) -> None:
    server.redirect("/a", server.url("/b"))
    server.redirect("/b", server.url("/a"))
    session = session_class() if session_class is not None else None

    error = run(destdir, server.url("/a"), session=session)

    assert isinstance(error, TransferError)
    assert not error.retryable
    assert str(error) == (
        f"too many redirects (more than {limit}) from {server.url('/a')}: "
        f"a redirect loop ({server.url('/a')} -> {server.url('/b')} -> {server.url('/a')})"
    )
    assert len(server.requests) == limit + 1  # one chain, not retried
    assert listing(destdir) == []


def test_redirect_chain_up_to_the_limit_is_followed(
    server: FaultServer, destdir: str, make_session: Any
) -> None:
    server.add("/file.bin", DATA)
    for hop in range(MAX_REDIRECTS):
        following = f"/hop{hop + 1}" if hop + 1 < MAX_REDIRECTS else "/file.bin"
        server.redirect(f"/hop{hop}", server.url(following))

    assert run(destdir, server.url("/hop0"), session=make_session()) is None
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_redirect_chain_past_the_limit_fails(
    server: FaultServer, destdir: str, make_session: Any
) -> None:
    server.add("/file.bin", DATA)
    for hop in range(MAX_REDIRECTS + 1):
        following = f"/hop{hop + 1}" if hop < MAX_REDIRECTS else "/file.bin"
        server.redirect(f"/hop{hop}", server.url(following))

    error = run(destdir, server.url("/hop0"), session=make_session())

    assert isinstance(error, TransferError)
    assert not error.retryable
    assert str(error) == f"too many redirects (more than 10) from {server.url('/hop0')}"
    assert server.requests_for("/file.bin") == []
    assert listing(destdir) == []


@pytest.mark.parametrize("session_class", SESSIONS)
@pytest.mark.parametrize("scheme", ["ftp", "file", "data", "gopher"])
def test_redirect_to_another_scheme_fetches_nothing(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    silent_listener: SilentListener,
    session_class: type[requests.Session],
    scheme: str,
) -> None:
    secret = os.path.join(os.fspath(tmp_path), "secret.txt")
    with open(secret, "wb") as handle:
        handle.write(b"not for download")
    port = silent_listener.port
    target = {
        "ftp": f"ftp://127.0.0.1:{port}/file.bin",
        "file": f"file://{secret}",
        "data": "data:text/plain,not%20for%20download",
        "gopher": f"gopher://127.0.0.1:{port}/1",
    }[scheme]
    server.redirect("/file.bin", target)

    with session_class() as session:
        error = run(destdir, server.url("/file.bin"), session=session)

    assert isinstance(error, TransferError)
    assert not error.retryable
    assert str(error) == f"{server.url('/file.bin')}: redirected to a non-http(s) URL: {target}"
    assert len(server.requests) == 1
    assert listing(destdir) == []
    assert temporaries(destdir) == []
    assert not silent_listener.connected()


# --- max_size -----------------------------------------------------------------------------


def run_limited(destdir: str, url: str, max_size: int, **kwargs: Any) -> tuple[Any, list[int]]:
    """Download *url* with *max_size*; return the error and the progress reported."""
    received: list[int] = []

    def on_event(event: Any) -> None:
        if event.kind is EventKind.PROGRESS:
            received.append(event.received)

    with DownloadManager(destdir, max_size=max_size, **kwargs) as manager:
        download = manager.download(url, "file.bin", on_event=on_event)
        assert download is not None
        download.wait(raise_if_error=False)
        error = download.error()  # received: leaving the block does not raise it
    return (None if error is None else error[1]), received


def test_announced_size_beyond_max_size_writes_nothing(server: FaultServer, destdir: str) -> None:
    server.add("/file.bin", DATA)

    error, received = run_limited(destdir, server.url("/file.bin"), 100_000)

    assert isinstance(error, TooLargeError)
    assert error.limit == 100_000
    assert error.received == 0
    assert str(error) == (
        f"{server.url('/file.bin')}: the file is {len(DATA)} bytes, "
        "more than max_size (100000 bytes)"
    )
    assert not any(received)  # not a byte written
    assert len(server.requests) == 1  # not retried
    assert listing(destdir) == []
    assert temporaries(destdir) == []


def test_file_of_exactly_max_size_is_downloaded(server: FaultServer, destdir: str) -> None:
    server.add("/file.bin", DATA)

    error, _ = run_limited(destdir, server.url("/file.bin"), len(DATA))

    assert error is None
    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("framing", ["chunked", "no_length"])
def test_body_without_length_is_cut_at_max_size(
    server: FaultServer, destdir: str, framing: str
) -> None:
    server.add("/file.bin", Resource(DATA, **{framing: True}))

    error, received = run_limited(destdir, server.url("/file.bin"), 100_000, chunk_size=16_384)

    assert isinstance(error, TooLargeError)
    assert str(error).endswith("the body went past max_size (100000 bytes): cut off")
    assert 100_000 - 16_384 < error.received <= 100_000  # cut at the first chunk past it
    assert max(received) <= 100_000
    assert len(server.requests) == 1
    assert listing(destdir) == []
    assert temporaries(destdir) == []


@pytest.mark.parametrize("framing", ["chunked", "no_length"])
def test_body_without_length_within_max_size(
    server: FaultServer, destdir: str, framing: str
) -> None:
    server.add("/file.bin", Resource(DATA, **{framing: True}))

    error, _ = run_limited(destdir, server.url("/file.bin"), len(DATA))

    assert error is None
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_decompressed_body_is_held_to_max_size(server: FaultServer, destdir: str) -> None:
    # A gzip body of a few KiB that inflates to 10 MB: the decoded bytes count.
    server.add("/file.bin", Resource(bytes(10_000_000), gzip=True))

    error, _ = run_limited(destdir, server.url("/file.bin"), 1_000_000)

    assert isinstance(error, TooLargeError)
    assert listing(destdir) == []


class _EndlessHandler(LoopbackHandler["EndlessServer"]):
    def serve(self) -> None:
        owner = self.owner
        try:
            if owner.partial is None:
                self.send_response(200)
            else:
                start, total = owner.partial
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
            self.send_header("Content-Type", "application/octet-stream")
            if owner.chunked:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self.command != "GET":
                return
            block = bytes(65536)
            body = itertools.repeat(block, owner.cap // len(block))
            if self.send_body(body, chunked=owner.chunked) and owner.chunked:
                self.end_chunks()  # past the bound: a complete file
        finally:
            owner.handler_done.set()


class EndlessServer(BackgroundServer):
    """Answers every GET with a body that never ends (up to *cap* bytes, as a bound).

    :param partial: ``(start, total)`` to answer 206 with the Content-Range
        ``bytes START-(TOTAL-1)/TOTAL`` (then always chunked)
    """

    handler = _EndlessHandler
    cap = 256 * 1024 * 1024

    def __init__(self, chunked: bool, partial: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.chunked = chunked or partial is not None
        self.partial = partial
        self.handler_done = threading.Event()


@pytest.mark.parametrize("chunked", [True, False])
def test_endless_body_is_cut_off(destdir: str, chunked: bool) -> None:
    endless = EndlessServer(chunked).start()
    try:
        error, _ = run_limited(destdir, endless.url("/file.bin"), 1_000_000)

        assert isinstance(error, TooLargeError)
        assert error.limit == 1_000_000
        # The client hung up: the server's writes fail long before its bound.
        assert endless.handler_done.wait(10)
        assert endless.bytes_sent < endless.cap
    finally:
        endless.stop()
    assert listing(destdir) == []
    assert temporaries(destdir) == []


def test_content_range_total_beyond_max_size(server: FaultServer) -> None:
    server.add("/file.bin", DATA)
    attempt = Attempt(
        requests,
        server.url("/file.bin"),
        dest=None,
        offset=1000,
        validator=strong_etag(DATA),
        timeouts=Timeouts(),
        chunk_size=65536,
        max_size=len(DATA) - 1,
        senders=Senders(),
    )

    with pytest.raises(TooLargeError, match=f"the file is {len(DATA)} bytes"):
        attempt.open()

    (request,) = server.requests
    assert request.range == "bytes=1000-"  # the total came from Content-Range


def test_partial_body_past_max_size_counts_the_bytes_before() -> None:
    # A 206 for bytes 200000- of a file of max_size bytes, that goes on and on.
    endless = EndlessServer(chunked=True, partial=(200_000, 300_000)).start()
    attempt = Attempt(
        requests,
        endless.url("/file.bin"),
        dest=None,
        offset=200_000,
        validator=None,
        timeouts=Timeouts(),
        chunk_size=10_000,
        max_size=300_000,
        senders=Senders(),
    )
    try:
        info = attempt.open()
        assert (info.start, info.total) == (200_000, 300_000)
        with pytest.raises(TooLargeError):
            for _ in attempt.body():
                pass
        assert attempt.received <= 100_000
    finally:
        attempt.close()
        endless.stop()


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "1M"])
def test_invalid_max_size(destdir: str, value: Any) -> None:
    with pytest.raises(ValueError, match="max_size"):
        Download("http://127.0.0.1/x", os.path.join(destdir, "x"), max_size=value)
    with pytest.raises(ValueError, match="max_size"):
        DownloadManager(destdir, max_size=value)


def test_cli_max_file_size(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/big.bin", DATA)
    server.add("/small.bin", DATA[:1000])

    status = main([server.url("/big.bin"), server.url("/small.bin"), "-d", destdir])

    assert status == 0
    capsys.readouterr()
    os.remove(os.path.join(destdir, "big.bin"))
    os.remove(os.path.join(destdir, "small.bin"))

    urls = [server.url("/big.bin"), server.url("/small.bin")]
    status = main([*urls, "-d", destdir, "-q", "--max-file-size", "100K"])

    assert status == 1
    assert "more than --max-file-size (102400 bytes)" in capsys.readouterr().err
    assert listing(destdir) == ["small.bin"]


@pytest.mark.parametrize("value", ["0", "-1", "lots"])
def test_cli_max_file_size_must_be_a_size(
    destdir: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["http://127.0.0.1:1/x", "-d", destdir, "--max-file-size", value])

    assert excinfo.value.code == 2
    assert "--max-file-size" in capsys.readouterr().err


# --- symlinks -----------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: os.PathLike[str]) -> str:
    """A file outside the destination directory that must never change."""
    path = os.path.join(os.fspath(tmp_path), "outside.txt")
    with open(path, "wb") as handle:
        handle.write(b"precious")
    os.utime(path, ns=(1_000_000_000_000_000_000, 1_000_000_000_000_000_000))
    return path


def assert_untouched(path: str) -> None:
    status = os.stat(path)
    assert (status.st_atime_ns, status.st_mtime_ns) == (10**18, 10**18)
    assert read(path) == b"precious"


@pytest.mark.parametrize("dangling", [False, True])
def test_symlink_at_final_path_is_replaced_not_followed(
    server: FaultServer, destdir: str, outside: str, dangling: bool
) -> None:
    server.add("/file.bin", DATA)
    target = outside + ".missing" if dangling else outside
    dest = os.path.join(destdir, "file.bin")
    os.symlink(target, dest)

    assert run(destdir, server.url("/file.bin")) is None

    assert not os.path.islink(dest)
    assert read(dest) == DATA
    assert_untouched(outside)
    assert not os.path.lexists(outside + ".missing")


def test_symlink_at_final_path_with_a_matching_checksum_is_replaced(
    server: FaultServer, destdir: str, outside: str
) -> None:
    # Even when the link's target has the expected content, the file is not
    # taken from outside the directory.
    server.add("/file.bin", b"precious")
    dest = os.path.join(destdir, "file.bin")
    os.symlink(outside, dest)

    with DownloadManager(destdir) as manager:
        download = manager.download(
            server.url("/file.bin"),
            checksum="sha256:" + hashlib.sha256(b"precious").hexdigest(),
        )
        assert download is not None
        download.wait(raise_if_error=False)

    assert not os.path.islink(dest)
    assert read(dest) == b"precious"
    assert_untouched(outside)


def test_bare_download_replaces_a_symlink(server: FaultServer, destdir: str, outside: str) -> None:
    server.add("/file.bin", DATA)
    dest = os.path.join(destdir, "file.bin")
    os.symlink(outside, dest)

    download = Download(server.url("/file.bin"), dest)
    download.start()
    download.wait()

    assert not os.path.islink(dest)
    assert read(dest) == DATA
    assert_untouched(outside)


@pytest.mark.parametrize("dangling", [False, True])
def test_temporary_file_is_never_opened_through_a_symlink(
    destdir: str, outside: str, monkeypatch: pytest.MonkeyPatch, dangling: bool
) -> None:
    # The name has 32 random bits; force it to test what happens on a match.
    name = ".file.bin.0123abcd.part"
    monkeypatch.setattr(layout, "temporary_name", lambda fname: name)
    target = outside + ".missing" if dangling else outside
    os.symlink(target, os.path.join(destdir, name))

    with pytest.raises(OSError) as excinfo:  # FileExistsError, or a StorageError wrapping it
        PartFile.create(os.path.join(destdir, "file.bin"))

    assert excinfo.value.errno == errno.EEXIST

    assert_untouched(outside)
    assert not os.path.lexists(outside + ".missing")


def test_planted_resumable_temporary_symlink_is_not_adopted(
    server: FaultServer, destdir: str, outside: str
) -> None:
    server.add("/file.bin", DATA)
    url = server.url("/file.bin")
    part = os.path.join(destdir, ".file.bin.0123abcd.part")
    os.symlink(outside, part)
    state = checkpoints.Checkpoint(url, len(DATA), strong_etag(DATA), ((0, 8),))
    checkpoints.save(checkpoints.checkpoint_path(part), state)

    assert run(destdir, url) is None

    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert_untouched(outside)


# --- names --------------------------------------------------------------------------------

BAD_NAMES = ["..", ".", "", "../file.bin", "../../escape", "sub/file.bin", "a\\b", "a\x00b"]
BAD_NAMES += [".dlmanager", ".file.bin.0123abcd.part", ".file.bin.0123abcd.ckpt"]


def snapshot(tmp_path: os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Everything under *tmp_path*, and the names beside it."""
    root = os.fspath(tmp_path)
    tree = sorted(
        os.path.relpath(os.path.join(top, name), root)
        for top, dirs, files in os.walk(root)
        for name in dirs + files
    )
    return tree, sorted(os.listdir(os.path.dirname(root)))


@pytest.fixture
def deep_destdir(tmp_path: os.PathLike[str]) -> str:
    """A destination a few levels down, so that an escape would land in tmp_path."""
    path = os.path.join(os.fspath(tmp_path), "a", "b", "dest")
    os.makedirs(path)
    return path


@pytest.mark.parametrize("fname", [*BAD_NAMES, "ABSOLUTE"])
def test_manager_refuses_escaping_names(
    server: FaultServer, deep_destdir: str, tmp_path: os.PathLike[str], fname: str
) -> None:
    server.add("/file.bin", DATA)
    if fname == "ABSOLUTE":
        fname = os.path.join(os.fspath(tmp_path), "absolute.bin")
    with DownloadManager(deep_destdir) as manager:
        before = snapshot(tmp_path)
        with pytest.raises(ValueError, match="file name"):
            manager.download(server.url("/file.bin"), fname)
        assert snapshot(tmp_path) == before

    assert server.requests == []
    assert listing(deep_destdir) == []


@pytest.mark.parametrize(
    "path", ["/", "/%2e%2e", "/x/%2E", "/a%2Fb", "/a%5Cb", "/a%00b", "/.dlmanager", "/x/..%2f.."]
)
def test_manager_refuses_escaping_names_from_urls(
    server: FaultServer, deep_destdir: str, tmp_path: os.PathLike[str], path: str
) -> None:
    with DownloadManager(deep_destdir) as manager:
        before = snapshot(tmp_path)
        with pytest.raises(ValueError, match="pass fname"):
            manager.download(server.url(path))
        assert snapshot(tmp_path) == before

    assert server.requests == []


@pytest.mark.parametrize("fname", [*BAD_NAMES, "ABSOLUTE"])
def test_cli_output_refuses_escaping_names(
    server: FaultServer,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
    fname: str,
) -> None:
    server.add("/file.bin", DATA)
    if fname == "ABSOLUTE":
        fname = os.path.join(os.fspath(tmp_path), "absolute.bin")
    dest = os.path.join(os.fspath(tmp_path), "a", "b", "dest")
    before = snapshot(tmp_path)

    with pytest.raises(SystemExit) as excinfo:
        main([server.url("/file.bin"), "-d", dest, "-o", fname])

    assert excinfo.value.code == 2
    # A name with a directory part is a path, which -d cannot go with.
    path = os.path.dirname(fname)
    expected = "is a path (it has a directory part), and -d" if path else "--output: invalid"
    assert expected in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    assert server.requests == []


@pytest.mark.parametrize("fname", [name for name in BAD_NAMES if name.strip()] + ["ABSOLUTE"])
def test_cli_manifest_refuses_escaping_names(
    server: FaultServer,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
    fname: str,
) -> None:
    server.add("/file.bin", DATA)
    if fname == "ABSOLUTE":
        fname = os.path.join(os.fspath(tmp_path), "absolute.bin")
    manifest = os.path.join(os.fspath(tmp_path), "manifest.txt")
    with open(manifest, "w", encoding="utf-8") as handle:
        handle.write(f"{server.url('/file.bin')} good.bin\n{server.url('/file.bin')} {fname}\n")
    dest = os.path.join(os.fspath(tmp_path), "a", "b", "dest")
    before = snapshot(tmp_path)

    with pytest.raises(SystemExit) as excinfo:
        main(["-i", manifest, "-d", dest])

    assert excinfo.value.code == 2
    assert f"{manifest}:2: invalid file name" in capsys.readouterr().err
    assert snapshot(tmp_path) == before
    assert server.requests == []


# --- hostile headers ----------------------------------------------------------------------


def test_retry_after_date_out_of_range_is_ignored(server: FaultServer, destdir: str) -> None:
    retry_after = {"Retry-After": "Mon, 01 Feb 2021 00:100000000000000000000:00 GMT"}
    server.add("/file.bin", Resource(DATA, statuses=[(503, retry_after)]))

    assert run(destdir, server.url("/file.bin")) is None

    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert len(server.requests) == 2


@pytest.mark.parametrize("length", ["\u00b2", "1" * 30, "-5", "0x10"])
def test_stored_length_that_is_not_a_number_is_ignored(
    server: FaultServer, destdir: str, length: str
) -> None:
    # Read when no Content-Length is sent, as by Google Cloud Storage.
    headers = {"x-goog-stored-content-length": length}
    server.add("/file.bin", Resource(DATA, chunked=True, headers=headers))

    assert run(destdir, server.url("/file.bin")) is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
