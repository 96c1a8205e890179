"""Server-chosen names (``use_content_disposition=True``, ``--content-disposition``)
against a loopback server that sends the ``Content-Disposition`` headers a test
chooses: the name picked, hostile names refused with a fallback, and the
guarantees kept (one file per name, nothing outside the folder, nothing hidden)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dlmanager import DownloadManager
from dlmanager.errors import DownloadError
from dlmanager.server_names import check_server_name, choose_name
from tests.conftest import listing, read, run_python
from tests.loopback import BackgroundServer, LoopbackHandler, free_port

BODY = b"the body of the file\n" * 100


@dataclass
class Page:
    """What the server answers for one path."""

    disposition: str | None = None
    body: bytes = BODY
    location: str | None = None  # a redirect there instead
    gate: threading.Event | None = None  # the body waits for it
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(LoopbackHandler["NamingServer"]):
    def serve(self) -> None:
        page = self.owner.pages.get(self.path.split("?", 1)[0])
        if page is None:
            self.send_page(404)
            return
        if page.location is not None:
            self.send_page(302, {"Location": page.location})
            return
        self.send_response(200)
        if page.disposition is not None:
            # As raw bytes (latin-1), the way http.server sends any header.
            self.send_header("Content-Disposition", page.disposition)
        for name, value in page.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(page.body)))
        self.end_headers()
        if page.gate is not None:
            page.gate.wait(10)
        self.wfile.write(page.body)


class NamingServer(BackgroundServer):
    handler = _Handler

    def __init__(self) -> None:
        super().__init__()
        self.pages: dict[str, Page] = {}


@pytest.fixture
def naming() -> Iterator[NamingServer]:
    with NamingServer().start() as srv:
        yield srv


def fetch(srv: NamingServer, destdir: str, path: str, disposition: str | None, **kw: object) -> str:
    """Serve *disposition* at *path*, download it server-named; the name it got."""
    srv.pages[path] = Page(disposition)
    with DownloadManager(destdir) as manager:
        download = manager.download(srv.url(path), use_content_disposition=True, **kw)  # type: ignore[arg-type]
        assert download is not None
        download.wait()
    return os.path.relpath(download.get_dest(), destdir)


# -- which name ---------------------------------------------------------------------


def test_filename_star_is_preferred_to_filename(naming: NamingServer, destdir: str) -> None:
    value = "attachment; filename=\"plain.txt\"; filename*=UTF-8''na%C3%AFve.txt"
    assert fetch(naming, destdir, "/get", value) == "naïve.txt"
    assert listing(destdir) == ["naïve.txt"]
    assert read(os.path.join(destdir, "naïve.txt")) == BODY


def test_filename_star_in_iso_8859_1(naming: NamingServer, destdir: str) -> None:
    value = "attachment; filename*=iso-8859-1'fr'caf%E9.txt"
    assert fetch(naming, destdir, "/get", value) == "café.txt"


def test_quoted_filename_is_unescaped(naming: NamingServer, destdir: str) -> None:
    value = r'attachment; filename="report \"final\" 2024.pdf"'
    assert fetch(naming, destdir, "/get", value) == 'report "final" 2024.pdf'


def test_a_url_ending_with_a_slash_is_valid(naming: NamingServer, destdir: str) -> None:
    assert fetch(naming, destdir, "/dir/", 'attachment; filename="index.csv"') == "index.csv"


def test_without_a_header_the_url_names_the_file(naming: NamingServer, destdir: str) -> None:
    assert fetch(naming, destdir, "/files/data.bin", None) == "data.bin"


def test_a_redirect_gives_the_final_urls_name(naming: NamingServer, destdir: str) -> None:
    naming.pages["/latest"] = Page(location=naming.url("/builds/v2.tar"))
    naming.pages["/builds/v2.tar"] = Page()
    with DownloadManager(destdir) as manager:
        download = manager.download(naming.url("/latest"), use_content_disposition=True)
        assert download is not None
        download.wait()
    assert listing(destdir) == ["v2.tar"]
    assert download.get_dest() == os.path.join(destdir, "v2.tar")


def test_off_by_default_the_header_is_ignored(naming: NamingServer, destdir: str) -> None:
    naming.pages["/files/data.bin"] = Page('attachment; filename="other.txt"')
    with DownloadManager(destdir) as manager:
        download = manager.download(naming.url("/files/data.bin"))
        assert download is not None
        download.wait()
    assert listing(destdir) == ["data.bin"]


def test_no_usable_name_fails_and_leaves_nothing(naming: NamingServer, destdir: str) -> None:
    naming.pages["/dir/"] = Page('attachment; filename="../x"')
    with DownloadManager(destdir) as manager:
        download = manager.download(naming.url("/dir/"), use_content_disposition=True)
        assert download is not None
        with pytest.raises(DownloadError, match="no usable file name"):
            download.wait()
    assert len(naming.requests_for("/dir/")) == 1  # not retried
    assert listing(destdir) == []
    assert os.listdir(destdir) in ([], [".dlmanager"])


@pytest.mark.parametrize(
    ("kwargs", "what"),
    [({"fname": "x"}, "fname"), ({"revalidate": True}, "revalidate"), ({"max_age": 5}, "max_age")],
)
def test_conflicting_arguments_are_refused(
    destdir: str, kwargs: dict[str, object], what: str
) -> None:
    with DownloadManager(destdir) as manager, pytest.raises(ValueError, match=what):
        manager.download("http://127.0.0.1:9/", use_content_disposition=True, **kwargs)  # type: ignore[arg-type]


# -- hostile names ------------------------------------------------------------------

HOSTILE = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "sub/file.txt",
    "sub\\file.txt",
    ".hidden",
    ".bashrc",
    "a\x00b",
    "a\x1bb",
    "line\nbreak",
    "del\x7f",
    "evil\u202etxt.exe",
    "x" * 300,
    "é" * 130,  # 260 bytes in UTF-8
    "con",
    "NUL.txt",
    "com1.log",
    "trailing.",
    "trailing ",
    ".dlmanager",
    ".data.bin.0123abcd.part",
    ".data.bin.dlmanager.json",
    "",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match=r"invalid file name|too long"):
        check_server_name(name)


@pytest.mark.parametrize("name", ["report 2024.pdf", "naïve.txt", "a..b", "x" * 200, "日本.bin"])
def test_ordinary_names_are_accepted(name: str) -> None:
    assert check_server_name(name) == name


def test_a_rejected_candidate_falls_back_with_a_warning(
    naming: NamingServer, destdir: str, caplog: pytest.LogCaptureFixture
) -> None:
    value = 'attachment; filename="../../etc/passwd"'
    with caplog.at_level(logging.WARNING, logger="dlmanager"):
        assert fetch(naming, destdir, "/files/safe.bin", value) == "safe.bin"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("path separator" in w and "Content-Disposition filename" in w for w in warnings)


_HOSTILE_TEXT = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(
        alphabet=st.sampled_from(["/", "\\", ".", "\x00", "\x01", "\n", "a", "é", " ", "%"]),
        max_size=12,
    ),
    st.text(max_size=300),
)


def header_value(name: str, extended: bool) -> str:
    """A Content-Disposition naming *name*: ``filename*=`` percent-encoded, or a
    quoted ``filename=`` (extended when the name cannot go in a header as is)."""
    if extended or "\r" in name or "\n" in name or not _latin1(name):
        raw = name.encode("utf-8", "surrogatepass")
        return "attachment; filename*=UTF-8''" + urllib.parse.quote(raw, safe="")
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'attachment; filename="{escaped}"'


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.builds(header_value, _HOSTILE_TEXT, st.booleans()))
@example(value="attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd")
@example(value="attachment; filename*=UTF-8''%2Fetc%2Fpasswd")
@example(value="attachment; filename*=UTF-8''%2E%2E")
@example(value='attachment; filename="..\\..\\boot.ini"')
@example(value="attachment; filename=.profile")
def test_fuzzed_names_land_in_the_folder_visible_or_fall_back(
    naming: NamingServer, tmp_path_factory: pytest.TempPathFactory, value: str
) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    destdir = os.path.join(root, "dest")
    os.mkdir(destdir)
    got = fetch(naming, destdir, "/fallback.bin", value)
    # Whatever the name: one visible file, directly in the folder, nothing beside it.
    assert os.sep not in got and not got.startswith(".")
    assert sorted(os.listdir(root)) == ["dest"]
    assert listing(destdir) == [got]
    assert [n for n in os.listdir(destdir) if n != ".dlmanager"] == [got]
    assert read(os.path.join(destdir, got)) == BODY
    chosen, _ = choose_name(value, naming.url("/fallback.bin"), naming.url("/fallback.bin"))
    assert chosen == got


# -- whose file ---------------------------------------------------------------------


def test_a_file_of_that_name_already_there_is_kept(naming: NamingServer, destdir: str) -> None:
    with open(os.path.join(destdir, "report.pdf"), "wb") as f:
        f.write(b"mine")
    naming.pages["/get"] = Page('attachment; filename="report.pdf"')
    with DownloadManager(destdir) as manager:
        download = manager.download(naming.url("/get"), use_content_disposition=True)
        assert download is not None
        download.wait()
    assert download.done_by is not None
    assert read(os.path.join(destdir, "report.pdf")) == b"mine"
    assert download.get_dest() == os.path.join(destdir, "report.pdf")
    assert listing(destdir) == ["report.pdf"]


def test_a_mismatching_file_there_is_replaced_once_verified(
    naming: NamingServer, destdir: str
) -> None:
    with open(os.path.join(destdir, "report.pdf"), "wb") as f:
        f.write(b"old")
    naming.pages["/get"] = Page('attachment; filename="report.pdf"')
    checksum = "sha256:" + hashlib.sha256(BODY).hexdigest()
    with DownloadManager(destdir) as manager:
        download = manager.download(naming.url("/get"), use_content_disposition=True,
                                    checksum=checksum)  # fmt: skip
        assert download is not None
        download.wait()
    assert read(os.path.join(destdir, "report.pdf")) == BODY
    assert listing(destdir) == ["report.pdf"]


def test_one_name_from_two_urls_at_once_makes_one_file(naming: NamingServer, destdir: str) -> None:
    gate = threading.Event()
    naming.pages["/a"] = Page('attachment; filename="same.bin"', body=BODY, gate=gate)
    naming.pages["/b"] = Page('attachment; filename="same.bin"', body=BODY.upper(), gate=gate)
    with DownloadManager(destdir) as manager:
        first = manager.download(naming.url("/a"), use_content_disposition=True)
        second = manager.download(naming.url("/b"), use_content_disposition=True)
        assert first is not None and second is not None
        while len(naming.requests) < 2:  # both have their response headers, or wait for them
            threading.Event().wait(0.01)
        gate.set()
        first.wait()
        second.wait()
    assert listing(destdir) == ["same.bin"]
    assert read(os.path.join(destdir, "same.bin")) in (BODY, BODY.upper())  # one, whole
    assert [first.done_by, second.done_by].count(None) == 1
    assert first.get_dest() == second.get_dest() == os.path.join(destdir, "same.bin")


def test_the_same_url_twice_joins_the_download_in_flight(
    naming: NamingServer, destdir: str
) -> None:
    gate = threading.Event()
    naming.pages["/a"] = Page('attachment; filename="one.bin"', gate=gate)
    with DownloadManager(destdir) as manager:
        first = manager.download(naming.url("/a"), use_content_disposition=True)
        second = manager.download(naming.url("/a"), use_content_disposition=True)
        assert first is second
        gate.set()
    assert len(naming.requests_for("/a")) == 1


def test_get_dest_is_the_directory_until_the_name_is_known(
    naming: NamingServer, destdir: str
) -> None:
    gate = threading.Event()
    naming.pages["/a"] = Page('attachment; filename="late.bin"', gate=gate)
    with DownloadManager(destdir) as manager:
        download = manager.download(naming.url("/a"), use_content_disposition=True)
        assert download is not None
        seen = download.get_dest()
        gate.set()
        download.wait()
    assert download.get_dest() == os.path.join(destdir, "late.bin")
    assert seen in (destdir, os.path.join(destdir, "late.bin"))


# -- the command --------------------------------------------------------------------


def test_the_command_names_the_file_and_reports_it(
    naming: NamingServer, tmp_path: os.PathLike[str]
) -> None:
    naming.pages["/download"] = Page('attachment; filename="report 2024.pdf"')
    out = os.path.join(os.fspath(tmp_path), "out")
    result = run_python(["-m", "dlmanager", "--content-disposition",
                         naming.url("/download?id=3"), "-d", out])  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert listing(out) == ["report 2024.pdf"]
    assert "report 2024.pdf" in result.stdout


def test_the_command_refuses_content_disposition_with_output(tmp_path: os.PathLike[str]) -> None:
    result = run_python(["-m", "dlmanager", "--content-disposition", "-o", "x",
                         "http://127.0.0.1:9/x"])  # fmt: skip
    assert result.returncode == 2
    assert "--content-disposition" in result.stderr


def test_a_server_named_download_keeps_its_mirrors_and_rates(
    naming: NamingServer, destdir: str
) -> None:
    naming.pages["/get"] = Page('attachment; filename="named.bin"')
    refused = f"http://127.0.0.1:{free_port()}/get"
    with DownloadManager(destdir, max_rate=50_000_000) as manager:
        download = manager.download(refused, use_content_disposition=True,
                                    mirrors=[naming.url("/get")], max_rate=40_000_000)  # fmt: skip
        assert download is not None
        assert download.max_rate == 40_000_000
        download.wait()
    assert listing(destdir) == ["named.bin"]
    assert read(os.path.join(destdir, "named.bin")) == BODY
