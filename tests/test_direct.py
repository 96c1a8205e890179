"""The manager's own transport keeps every rule of a DownloadSession, as requests applies them.

Each test runs twice: through dlmanager's own transport (``transport/direct.py``:
a manager given no session, or a ``DownloadSession``) and through ``requests``
(a ``DownloadSession`` subclass, which the own transport leaves to
``requests``). Covered: proxies from the environment and ``NO_PROXY``, proxy
credentials, ``.netrc`` and ``user:pass@`` credentials and where they go on a
redirect, cookies, the error of a connection refused or cut, and that a
manager without a session never imports ``requests``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dlmanager import DownloadManager, RetryPolicy, TransferError
from dlmanager.session import DownloadSession
from dlmanager.transport.direct import redirect_target, strips_auth
from tests.conftest import read, run_python
from tests.loopback import free_port
from tests.server import FaultServer, Resource, make_data

DATA = make_data(100_000, seed=5)


Make = Callable[[], "DownloadSession | None"]


@pytest.fixture(autouse=True)
def _no_proxy_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """The tests say which proxies and .netrc the environment names, if any."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NETRC", os.path.join(os.fspath(tmp_path), "no.netrc"))


@pytest.fixture
def proxy() -> Iterator[FaultServer]:
    """A forward proxy for ``http://files.invalid``: it serves the file itself,
    under the absolute URL a proxied request names."""
    with FaultServer().start() as srv:
        srv.add("http://files.invalid/file.bin", DATA)
        yield srv


def fetch(destdir: str, url: str, session: Any, **kwargs: Any) -> BaseException | None:
    """Download *url* as file.bin; the download's error, or None."""
    retry = RetryPolicy(total=kwargs.pop("retries", 0), backoff_factor=0.001)
    with DownloadManager(destdir, session=session, retry=retry, **kwargs) as manager:
        download = manager.download(url, "file.bin")
        assert download is not None
        download.wait(raise_if_error=False)
        error = download.error()
    if session is not None:
        session.close()
    return None if error is None else error[1]


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode("latin1")).decode()


# --- proxies ---------------------------------------------------------------------------------


def test_the_proxy_of_the_environment_is_used(
    proxy: FaultServer, destdir: str, make_session: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.base_url)

    assert fetch(destdir, "http://files.invalid/file.bin", make_session()) is None

    assert read(os.path.join(destdir, "file.bin")) == DATA
    (request,) = proxy.requests
    assert request.path == "http://files.invalid/file.bin"
    assert request.headers["host"] == "files.invalid"
    assert "proxy-authorization" not in request.headers


def test_proxy_credentials_go_to_the_proxy_only(
    proxy: FaultServer, destdir: str, make_session: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, port = proxy.host_port
    monkeypatch.setenv("http_proxy", f"http://agent:s%3Acret@{host}:{port}")

    assert fetch(destdir, "http://files.invalid/file.bin", make_session()) is None

    (request,) = proxy.requests
    assert request.headers["proxy-authorization"] == basic("agent", "s:cret")
    assert "authorization" not in request.headers


def test_no_proxy_sends_the_request_straight_to_the_server(
    proxy: FaultServer,
    server: FaultServer,
    destdir: str,
    make_session: Make,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add("/file.bin", DATA)
    monkeypatch.setenv("HTTP_PROXY", proxy.base_url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")

    assert fetch(destdir, server.url("/file.bin"), make_session()) is None

    assert proxy.requests == []
    assert len(server.requests_for("/file.bin")) == 1


def test_the_session_proxies_are_used(proxy: FaultServer, destdir: str, make_session: Make) -> None:
    session = make_session() or DownloadSession()
    session.proxies = {"http": proxy.base_url}

    assert fetch(destdir, "http://files.invalid/file.bin", session) is None

    assert [r.path for r in proxy.requests] == ["http://files.invalid/file.bin"]


# --- credentials -----------------------------------------------------------------------------


def test_credentials_in_the_url_are_sent_as_basic_auth(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/file.bin", DATA)
    host, port = server.host_port

    url = f"http://us%40er:pa%20ss@{host}:{port}/file.bin"
    assert fetch(destdir, url, make_session()) is None

    (request,) = server.requests_for("/file.bin")
    assert request.headers["authorization"] == basic("us@er", "pa ss")


def test_netrc_credentials_are_sent_to_their_host_only(
    server: FaultServer,
    destdir: str,
    make_session: Make,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: os.PathLike[str],
) -> None:
    netrc = os.path.join(os.fspath(tmp_path), "netrc")
    with open(netrc, "w") as handle:
        handle.write("machine 127.0.0.1 login robot password hunter2\n")
    os.chmod(netrc, 0o600)
    monkeypatch.setenv("NETRC", netrc)
    port = server.host_port[1]
    server.redirect("/start", f"http://localhost:{port}/file.bin")
    server.add("/file.bin", DATA)

    assert fetch(destdir, server.url("/start"), make_session()) is None

    (first,) = server.requests_for("/start")
    assert first.headers["authorization"] == basic("robot", "hunter2")
    (last,) = server.requests_for("/file.bin")
    assert "authorization" not in last.headers  # localhost is another origin


def test_url_credentials_do_not_follow_a_redirect_to_another_origin(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    host, port = server.host_port
    server.redirect("/start", f"http://localhost:{port}/file.bin")
    server.add("/file.bin", DATA)

    assert fetch(destdir, f"http://user:secret@{host}:{port}/start", make_session()) is None

    assert "authorization" in server.requests_for("/start")[0].headers
    assert "authorization" not in server.requests_for("/file.bin")[0].headers


# --- cookies ---------------------------------------------------------------------------------


def test_a_cookie_set_by_a_redirect_is_sent_on_the_next_hop_and_kept(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    redirect = {"Location": server.url("/file.bin"), "Set-Cookie": "sid=abc; Path=/"}
    server.add("/start", Resource(b"", statuses=[(302, redirect)]))
    server.add("/file.bin", DATA)
    server.add("/again.bin", DATA)

    retry = RetryPolicy(total=0)
    with DownloadManager(destdir, session=make_session(), retry=retry) as manager:
        manager.download(server.url("/start"), "file.bin")
        manager.wait()
        manager.download(server.url("/again.bin"))
        manager.wait()

    assert server.requests_for("/file.bin")[0].headers["cookie"] == "sid=abc"
    assert server.requests_for("/again.bin")[0].headers["cookie"] == "sid=abc"


# --- errors ----------------------------------------------------------------------------------


def test_a_refused_connection_reads_the_same(destdir: str, make_session: Make) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/file.bin"

    error = fetch(destdir, url, make_session())

    assert isinstance(error, TransferError)
    assert str(error) == f"{url}: cannot connect to 127.0.0.1:{port}: connection refused"
    assert error.retryable


def test_a_proxy_that_refuses_is_named(
    destdir: str, make_session: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")

    error = fetch(destdir, "http://files.invalid/file.bin", make_session())

    assert isinstance(error, TransferError)
    assert str(error) == (
        f"http://files.invalid/file.bin: cannot connect to the proxy 127.0.0.1:{port}: "
        "connection refused"
    )


def test_a_body_cut_short_is_resumed(server: FaultServer, destdir: str, make_session: Make) -> None:
    server.add("/file.bin", Resource(DATA, drop_after=[30_000]))

    assert fetch(destdir, server.url("/file.bin"), make_session(), retries=2) is None

    assert read(os.path.join(destdir, "file.bin")) == DATA
    _first, second = server.requests_for("/file.bin")
    assert second.headers["range"] == "bytes=30000-"


def test_a_manager_without_a_session_does_not_import_requests(
    server: FaultServer, destdir: str
) -> None:
    server.add("/file.bin", DATA)
    code = (
        "import sys\n"
        "from dlmanager import DownloadManager\n"
        f"with DownloadManager({destdir!r}) as manager:\n"
        f"    manager.download({server.url('/file.bin')!r})\n"
        "print(sorted(m for m in ('requests', 'rich', 'watchdog') if m in sys.modules))\n"
    )

    result = run_python(["-c", code])

    assert result.stdout.strip() == "[]", result.stderr
    assert read(os.path.join(destdir, "file.bin")) == DATA


# --- the rules, as pure functions ---------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "strip"),
    [
        ("http://a/x", "http://a/y", False),
        ("http://a/x", "http://b/x", True),
        ("http://a/x", "https://a/x", False),  # the upgrade requests allows
        ("http://a:80/x", "https://a:443/x", False),
        ("http://a:8080/x", "https://a/x", True),
        ("https://a/x", "http://a/x", True),
        ("http://a/x", "http://a:80/x", False),
        ("http://a/x", "http://a:81/x", True),
    ],
)
def test_strips_auth_as_requests_does(old: str, new: str, strip: bool) -> None:
    import requests

    assert strips_auth(old, new) is strip
    assert requests.Session().should_strip_auth(old, new) is strip


@pytest.mark.parametrize(
    ("location", "target"),
    [
        ("/b", "http://h/b"),
        ("b", "http://h/a/b"),
        ("//other/c", "http://other/c"),
        ("https://x/y?q=1", "https://x/y?q=1"),
        ("/caf\xc3\xa9", "http://h/caf%C3%A9"),  # UTF-8 read as latin-1 by http.client
    ],
)
def test_redirect_target(location: str, target: str) -> None:
    assert redirect_target("http://h/a/x", location) == target
