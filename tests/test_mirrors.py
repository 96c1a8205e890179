"""Mirrors: one file from several sources, against real loopback servers (one per host)."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Iterator

import pytest

from dlmanager import ChecksumError, Download, DownloadError, DownloadManager, RetryPolicy, Timeouts
from dlmanager.cli.parsing import parse_manifest
from dlmanager.disk.metadata import read_info
from dlmanager.events import DownloadEvent, EventKind
from dlmanager.transfer.sources import Version, joinable
from tests.conftest import listing, read, write
from tests.loopback import free_port
from tests.server import FaultServer, Resource, make_data
from tests.test_cli import run_in_ci

KIB = 1024
MIB = 1024 * KIB
DATA = make_data(2 * MIB, seed=18)
OTHER = make_data(2 * MIB, seed=19)  # another version of the file, of the same size
FAST = RetryPolicy(total=2, backoff_factor=0.001, backoff_max=0.01)
SHA = "sha256:" + hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def mirror() -> Iterator[FaultServer]:
    """A second host."""
    with FaultServer().start() as srv:
        yield srv


def gets(server: FaultServer, path: str = "/file.bin") -> list[str | None]:
    """The Range header of each GET of *path* (None for the whole file)."""
    return [r.range for r in server.requests_for(path) if r.method == "GET"]


def fetch(destdir: str, url: str, mirrors: list[str], **kw: object) -> Download:
    with DownloadManager(destdir, retry=FAST, **kw) as manager:  # type: ignore[arg-type]
        download = manager.download(url, mirrors=mirrors, checksum=kw.pop("checksum", None))  # type: ignore[arg-type]
        assert download is not None
        download.wait(raise_if_error=False)
        download.error()  # received: the manager does not raise it again
    return download


def download(destdir: str, url: str, mirrors: list[str], **kw: object) -> Download:
    """Download *url* with *mirrors* into destdir/file.bin, waiting for the end."""
    dl = Download(url, os.path.join(destdir, "file.bin"), mirrors=mirrors,
                  retry=FAST, **kw)  # type: ignore[arg-type]  # fmt: skip
    dl.start()
    dl.wait(raise_if_error=False)
    return dl


# -- decisions (pure) --------------------------------------------------------------------


def test_joinable_needs_the_size_and_a_strong_validator() -> None:
    lm, lm2 = "Tue, 14 Nov 2023 22:13:20 GMT", "Wed, 15 Nov 2023 22:13:20 GMT"
    assert joinable(Version(10, '"a"', lm), Version(10, '"a"', lm2))
    assert not joinable(Version(10, '"a"', lm), Version(10, '"b"', lm))  # both ETags: they rule
    assert joinable(Version(10, '"a"', lm), Version(10, None, lm))  # else Last-Modified
    assert not joinable(Version(10, None, lm), Version(10, None, lm2))
    assert not joinable(Version(10, None, None), Version(10, None, None))  # nothing to compare
    assert not joinable(Version(10, '"a"', lm), Version(11, '"a"', lm))
    assert not joinable(Version(None, '"a"', lm), Version(None, '"a"', lm))


def test_mirrors_are_checked_like_the_url(destdir: str) -> None:
    with DownloadManager(destdir) as manager:
        with pytest.raises(ValueError, match="unsupported URL scheme in 'ftp://x/f'"):
            manager.download("http://127.0.0.1:9/f", mirrors=["ftp://x/f"])
        with pytest.raises(ValueError, match="a list of URLs, not a single string"):
            manager.download("http://127.0.0.1:9/f", mirrors="http://127.0.0.1:9/g")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="only for a GET without a body, not a POST"):
            manager.download("http://127.0.0.1:9/f", mirrors=["http://127.0.0.1:9/g"],
                             method="POST", data=b"x")  # fmt: skip
    assert listing(destdir) == []


# -- a source that fails: the next takes over --------------------------------------------


def test_a_refused_source_hands_over_to_the_mirror(mirror: FaultServer, destdir: str) -> None:
    mirror.add("/file.bin", DATA)
    url = f"http://127.0.0.1:{free_port()}/file.bin"
    dl = fetch(destdir, url, [mirror.url("/file.bin")])
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    info = read_info(os.path.join(destdir, "file.bin"))
    assert info is not None
    assert info.url == url  # the file's origin stays the URL given
    assert info.final_url == mirror.url("/file.bin")  # the source it came from


def test_a_404_hands_over_to_the_mirror(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    mirror.add("/file.bin", DATA)
    dl = fetch(destdir, server.url("/file.bin"), [mirror.url("/file.bin")])
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert os.listdir(destdir) == ["file.bin"]


def test_a_stalled_source_resumes_on_the_mirror(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", Resource(DATA, stall_after=[100_000] * 5))
    mirror.add("/file.bin", DATA)
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                  timeout=Timeouts(read=None, stall=0.3))  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    # Same ETag and size: the mirror continues the bytes held instead of starting over.
    assert gets(mirror) == ["bytes=300000-"]  # after 3 attempts of 100000 bytes each


def test_every_source_failing_names_each(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", Resource(DATA, statuses=[500] * 10))
    refused = f"http://127.0.0.1:{free_port()}/file.bin"
    dl = fetch(destdir, server.url("/file.bin"), [refused, mirror.url("/missing")])
    error = dl.error()
    assert error is not None
    exc = error[1]
    assert isinstance(exc, DownloadError)
    message = str(exc)
    assert message.startswith("every source failed (3): ")
    assert f"{server.url('/file.bin')}: HTTP 500" in message
    assert f"{refused}: cannot connect" in message
    assert f"{mirror.url('/missing')}: HTTP 404" in message
    assert [url for url, _ in exc.source_errors] == [
        server.url("/file.bin"), refused, mirror.url("/missing")]  # fmt: skip
    assert exc.url == server.url("/file.bin")
    assert listing(destdir) == []


# -- sources combined only when safe -----------------------------------------------------


def test_a_mirror_of_another_size_is_dropped_with_a_warning(
    server: FaultServer, mirror: FaultServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/file.bin", DATA)
    mirror.add("/file.bin", DATA + b"more")
    with caplog.at_level(logging.WARNING, logger="dlmanager"):
        dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                      connections=4, min_split_size=64 * KIB)  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("Dropping source" in w and "differs" in w for w in warnings), warnings
    # Asked by the connections it was given at first (at once), never again.
    assert 1 <= len(gets(mirror)) <= 2


def test_different_etags_without_checksum_are_never_mixed(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", DATA)
    # Same size, another ETag, and it serves ranges whatever If-Range says.
    mirror.add("/file.bin", Resource(OTHER, ignore_if_range=True))
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                  connections=4, min_split_size=64 * KIB)  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert 1 <= len(gets(mirror)) <= 2  # its answers were not joined: left out at once


def test_different_etags_resume_on_the_mirror_starts_over(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", Resource(DATA, drop_after=[1000] * 10))  # too little to count
    mirror.add("/file.bin", Resource(OTHER, ignore_if_range=True))
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")])
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == OTHER  # one version, byte-exact
    # Its 206 of another version was refused: it started over from byte 0.
    assert gets(mirror) == ["bytes=3000-", None]


def test_segments_over_two_sources_with_a_checksum(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", DATA)
    mirror.add("/file.bin", Resource(DATA, etag='"another-etag"'))
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                  connections=4, min_split_size=64 * KIB, checksum=SHA)  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert any(r and r != "bytes=0-" for r in gets(server))
    assert all(r and r.startswith("bytes=") for r in gets(mirror))
    assert gets(mirror)


def test_segments_over_two_sources_with_the_same_etag(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", DATA)
    mirror.add("/file.bin", DATA)
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                  connections=4, min_split_size=64 * KIB)  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert gets(mirror) and all(r and r.startswith("bytes=") for r in gets(mirror))


def test_a_failing_mirror_loses_its_segments(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", DATA)
    mirror.add("/file.bin", Resource(DATA, statuses=[503] * 50))
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                  connections=4, min_split_size=64 * KIB)  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_a_mismatch_starts_over_from_one_source(
    server: FaultServer, mirror: FaultServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    server.add("/file.bin", DATA)
    mirror.add("/file.bin", OTHER)  # same size: its segments are taken under a checksum
    with caplog.at_level(logging.WARNING, logger="dlmanager"):
        dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")],
                      connections=4, min_split_size=64 * KIB, checksum=SHA)  # fmt: skip
    assert dl.error() is None
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert any("fetching it again from one source" in r.getMessage() for r in caplog.records)
    assert len(gets(server)) > 1 and gets(mirror)


def test_a_mismatch_on_every_source_fails(
    server: FaultServer, mirror: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", OTHER)
    mirror.add("/file.bin", OTHER)
    dl = download(destdir, server.url("/file.bin"), [mirror.url("/file.bin")], checksum=SHA)
    error = dl.error()
    assert error is not None and isinstance(error[1], ChecksumError)
    assert str(error[1]).startswith("every source failed (2): ")
    assert len(gets(server)) == 1 and len(gets(mirror)) == 1
    assert listing(destdir) == []


# -- the command -------------------------------------------------------------------------


def test_manifest_continuation_lines_list_mirrors() -> None:
    sha = "sha256:" + "ab" * 32
    lines = [
        "http://a.example/x.bin x.bin " + sha + "\n",
        "  http://b.example/x.bin\thttp://c.example/x.bin  # two mirrors\n",
        "\thttp://d.example/x.bin\n",
        "   # an indented comment\n",
        "http://a.example/y.bin\n",
        "  http://a.example/y.bin\n",  # its own URL: not a mirror
    ]
    items = parse_manifest(lines, "list.txt")
    assert [(i.url, i.fname, i.mirrors) for i in items] == [
        ("http://a.example/x.bin", "x.bin",
         ("http://b.example/x.bin", "http://c.example/x.bin", "http://d.example/x.bin")),
        ("http://a.example/y.bin", None, ()),
    ]  # fmt: skip
    assert items[0].checksum is not None


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (["  http://b.example/x\n"],
         "list.txt:1: an indented line lists mirrors of the entry above"),
        (["http://a.example/x\n", "  http://b.example/x x.bin\n"],
         "list.txt:2: unsupported URL scheme in 'x.bin'"),
        (["http://a.example/x\n", "  ftp://b.example/x\n"],
         "list.txt:2: unsupported URL scheme in 'ftp://b.example/x'"),
    ],
)  # fmt: skip
def test_manifest_continuation_lines_say_what_is_wrong(lines: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(problem)):
        parse_manifest(lines, "list.txt")


def test_command_mirror(server: FaultServer, mirror: FaultServer, destdir: str) -> None:
    mirror.add("/file.bin", DATA)
    server.add("/file.bin", Resource(DATA, statuses=[404]))
    result = run_in_ci([server.url("/file.bin"), "--mirror", mirror.url("/file.bin"),
                        "-x", "4", "-d", destdir, "--retries", "0"])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert "failed, trying the next one" not in result.stdout  # the library's log stays quiet
    assert gets(mirror)


def test_command_mirror_needs_one_url_and_an_http_url(destdir: str) -> None:
    two = run_in_ci(["http://127.0.0.1:9/a", "http://127.0.0.1:9/b", "--mirror",
                     "http://127.0.0.1:9/c", "-d", destdir])  # fmt: skip
    assert two.returncode == 2
    assert two.stderr.strip() == "dlmanager: --mirror needs exactly one URL"
    bad = run_in_ci(["http://127.0.0.1:9/a", "--mirror", "file:///etc/passwd", "-d", destdir])
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("dlmanager: --mirror: unsupported URL scheme")
    assert listing(destdir) == []


def test_command_manifest_with_mirrors(
    server: FaultServer, mirror: FaultServer, destdir: str, tmp_path: os.PathLike[str]
) -> None:
    mirror.add("/a.bin", DATA)
    mirror.add("/b.bin", OTHER)
    refused = f"http://127.0.0.1:{free_port()}"
    manifest = write(os.path.join(os.fspath(tmp_path), "list.txt"), (
        f"{refused}/a.bin\n"
        f"    {mirror.url('/a.bin')}\n"
        f"{server.url('/b.bin')} b.bin {'sha256:' + hashlib.sha256(OTHER).hexdigest()}\n"
        f"\t{refused}/b.bin {mirror.url('/b.bin')}\n"
    ))  # fmt: skip
    result = run_in_ci(["-i", manifest, "-d", destdir, "--retries", "0"])
    assert result.returncode == 0, result.stderr
    assert read(os.path.join(destdir, "a.bin")) == DATA
    assert read(os.path.join(destdir, "b.bin")) == OTHER
    assert sorted(listing(destdir)) == ["a.bin", "b.bin"]


def test_an_unreachable_source_hands_over_at_once_without_retrying_it(
    mirror: FaultServer, destdir: str
) -> None:
    """A refused connection moves to the next source without a backoff on the
    dead one (its retries would only delay the mirror that works)."""
    mirror.add("/file.bin", DATA)
    url = f"http://127.0.0.1:{free_port()}/file.bin"
    events: list[DownloadEvent] = []
    slow = RetryPolicy(total=5, backoff_factor=30)
    dl = Download(url, os.path.join(destdir, "file.bin"), mirrors=[mirror.url("/file.bin")],
                  retry=slow, on_event=events.append)  # fmt: skip
    dl.start()
    dl.wait()
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert [e for e in events if e.kind is EventKind.RETRYING] == []
