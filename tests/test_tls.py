"""HTTPS against a local server whose certificate comes from a throwaway CA (trustme).

Verification is on by default: a certificate from an unknown CA fails at
once, clearly, without retries and without leaving anything behind; the CA
can be supplied through the caller's session, ``REQUESTS_CA_BUNDLE``, a
:class:`~dlmanager.session.DownloadSession` or ``--ca-bundle``. A client
certificate is presented, and HTTPS goes through a proxy's tunnel
(``CONNECT``), on both transports (dlmanager's own and requests).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from dlmanager import Download, DownloadManager, EventKind, RetryPolicy, TransferError
from dlmanager.cli import main
from dlmanager.session import DownloadSession
from tests.conftest import ThroughRequests, listing, read, temporaries
from tests.loopback import BackgroundServer, LoopbackHandler, LoopbackServer, RecordedRequest
from tests.server import FaultServer, make_data

trustme = pytest.importorskip(
    "trustme", reason="trustme (in the test extra) makes the certificates of the HTTPS tests"
)

DATA = make_data(200_000, seed=7)


class HTTPSServer(FaultServer):
    """A :class:`FaultServer` that speaks TLS with a certificate issued by *ca*."""

    def __init__(self, ca: Any) -> None:
        super().__init__()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(self._context)

    def _make_server(self) -> LoopbackServer:
        httpd = super()._make_server()
        # The handshake happens in the handler's thread, not in the accepting one.
        httpd.socket = self._context.wrap_socket(
            httpd.socket, server_side=True, do_handshake_on_connect=False
        )
        return httpd

    def url(self, path: str) -> str:
        return "https" + super().url(path)[len("http") :]


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture
def ca_path(ca: Any, tmp_path: os.PathLike[str]) -> str:
    """The CA's certificate as a PEM file."""
    path = os.path.join(os.fspath(tmp_path), "ca.pem")
    ca.cert_pem.write_to_path(path)
    return path


@pytest.fixture
def https(ca: Any) -> Iterator[HTTPSServer]:
    with HTTPSServer(ca).start() as server:
        server.add("/file.bin", DATA)
        yield server


@pytest.fixture(autouse=True)
def _no_ca_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests say which CA bundle the environment names, if any."""
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


def fetch(destdir: str, url: str, **kwargs: Any) -> tuple[DownloadManager, list[EventKind]]:
    """Download *url* into *destdir* with a manager; return it and the events seen."""
    kinds: list[EventKind] = []
    with DownloadManager(destdir, **kwargs) as manager:
        manager.download(url, "file.bin", on_event=lambda event: kinds.append(event.kind))
    return manager, kinds


def assert_unverified(error: BaseException, url: str) -> None:
    assert isinstance(error, TransferError)
    assert str(error).startswith(f"TLS certificate verification failed for {url}: ")
    assert "certificate" in str(error).split(": ", 1)[1]  # OpenSSL's reason
    assert not error.retryable
    assert error.history == ()  # not retried


# --- verification on by default ---------------------------------------------------------


def test_unknown_ca_fails_at_once_and_clearly(
    https: HTTPSServer, destdir: str, make_session: Any
) -> None:
    kinds: list[EventKind] = []
    manager = DownloadManager(destdir, session=make_session())
    try:
        download = manager.download(
            https.url("/file.bin"), on_event=lambda event: kinds.append(event.kind)
        )
        assert download is not None
        with pytest.raises(TransferError) as excinfo:
            download.wait()
    finally:
        manager.close()

    assert_unverified(excinfo.value, https.url("/file.bin"))
    assert EventKind.RETRYING not in kinds
    assert https.requests == []  # no request got past the handshake
    assert listing(destdir) == []
    assert temporaries(destdir) == []


def test_a_bare_download_verifies_too(https: HTTPSServer, destdir: str) -> None:
    download = Download(https.url("/file.bin"), os.path.join(destdir, "file.bin"))
    download.start()
    with pytest.raises(TransferError) as excinfo:
        download.wait()

    assert_unverified(excinfo.value, https.url("/file.bin"))
    assert listing(destdir) == []


def test_redirect_to_an_unverified_server_names_both_urls(
    server: FaultServer, https: HTTPSServer, destdir: str, make_session: Any
) -> None:
    server.redirect("/file.bin", https.url("/file.bin"))

    manager = DownloadManager(destdir, session=make_session())
    try:
        download = manager.download(server.url("/file.bin"))
        assert download is not None
        with pytest.raises(TransferError) as excinfo:
            download.wait()
    finally:
        manager.close()

    message = str(excinfo.value)
    assert message.startswith(f"TLS certificate verification failed for {https.url('/file.bin')}")
    assert f"(redirected from {server.url('/file.bin')})" in message
    assert not excinfo.value.retryable


def test_a_server_that_does_not_speak_tls_fails_at_once(
    server: FaultServer, destdir: str, make_session: Any
) -> None:
    server.add("/file.bin", DATA)
    url = "https" + server.url("/file.bin")[len("http") :]
    download = Download(url, os.path.join(destdir, "file.bin"), session=make_session())
    download.start()
    with pytest.raises(TransferError) as excinfo:
        download.wait()

    assert str(excinfo.value).startswith(f"TLS error with {url}: [SSL: WRONG_VERSION_NUMBER]")
    assert not excinfo.value.retryable
    assert excinfo.value.history == ()
    assert listing(destdir) == []


class _HangUp(LoopbackHandler["HangUpServer"]):
    def handle(self) -> None:
        """Read nothing: the connection is closed before the TLS handshake."""


class HangUpServer(BackgroundServer):
    """A server that closes every connection as soon as it is accepted."""

    handler = _HangUp


@pytest.fixture
def hangs_up() -> Iterator[str]:
    """The URL of a server that closes every connection before the TLS handshake."""
    with HangUpServer() as server:
        yield "https" + server.url("/file.bin")[len("http") :]


def test_a_handshake_cut_by_the_network_is_retried(
    hangs_up: str, destdir: str, make_session: Any
) -> None:
    kinds: list[EventKind] = []
    download = Download(
        hangs_up,
        os.path.join(destdir, "file.bin"),
        session=make_session(),
        retry=RetryPolicy(total=2, backoff_factor=0.001),
        on_event=lambda event: kinds.append(event.kind),
    )
    download.start()
    with pytest.raises(TransferError) as excinfo:
        download.wait()

    assert str(excinfo.value).startswith(f"TLS error with {hangs_up}: ")
    assert excinfo.value.retryable
    assert kinds.count(EventKind.RETRYING) == 2
    assert listing(destdir) == []


# --- supplying the CA -------------------------------------------------------------------


def test_callers_session_with_verify(https: HTTPSServer, destdir: str, ca_path: str) -> None:
    with requests.Session() as session:
        session.verify = ca_path
        fetch(destdir, https.url("/file.bin"), session=session)

    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_download_session_with_verify(https: HTTPSServer, destdir: str, ca_path: str) -> None:
    with DownloadSession(verify=ca_path) as session:
        fetch(destdir, https.url("/file.bin"), session=session)

    assert read(os.path.join(destdir, "file.bin")) == DATA


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"])
def test_ca_bundle_variable(
    https: HTTPSServer,
    destdir: str,
    ca_path: str,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    make_session: Any,
) -> None:
    monkeypatch.setenv(variable, ca_path)

    _, kinds = fetch(destdir, https.url("/file.bin"), session=make_session())
    download = Download(https.url("/file.bin"), os.path.join(destdir, "bare.bin"))
    download.start()
    download.wait()

    assert EventKind.RETRYING not in kinds
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert read(os.path.join(destdir, "bare.bin")) == DATA


def test_session_settings_are_not_cached_past_a_change(
    https: HTTPSServer, destdir: str, ca_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = https.url("/file.bin")
    with DownloadSession() as session:

        def get() -> None:
            session.get(url, timeout=10).close()
            session.close()  # new connections next time (requests < 2.32 keeps their CA)

        with pytest.raises(requests.exceptions.SSLError):
            get()
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", ca_path)
        get()  # the variable set since is read
        monkeypatch.delenv("REQUESTS_CA_BUNDLE")
        with pytest.raises(requests.exceptions.SSLError):
            get()
        session.verify = ca_path
        get()  # and so is the session's verify


def test_session_verify_wins_over_the_variable(
    https: HTTPSServer, destdir: str, ca_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = os.path.join(destdir, "..", "other-ca.pem")
    trustme.CA().cert_pem.write_to_path(other)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", other)

    with DownloadSession(verify=ca_path) as session:
        fetch(destdir, https.url("/file.bin"), session=session)

    assert read(os.path.join(destdir, "file.bin")) == DATA


def test_download_session_rejects_an_invalid_verify() -> None:
    with pytest.raises(ValueError, match="verify"):
        DownloadSession(verify="")
    with pytest.raises(ValueError, match="verify"):
        DownloadSession(verify=1)  # type: ignore[arg-type]


def test_several_connections_over_https(https: HTTPSServer, destdir: str, ca_path: str) -> None:
    data = make_data(2_000_000, seed=8)
    https.add("/big.bin", data)

    session = DownloadSession(16, verify=ca_path)
    options: dict[str, Any] = {"connections": 4, "min_split_size": 256 * 1024}
    with session, DownloadManager(destdir, session=session, **options) as manager:
        manager.download(https.url("/big.bin"))

    assert read(os.path.join(destdir, "big.bin")) == data
    ranges = [r.range for r in https.requests_for("/big.bin") if r.range]
    assert len(ranges) >= 3  # the first request, then one per further connection


# --- the command line -------------------------------------------------------------------


def test_cli_fails_clearly_without_the_ca(
    https: HTTPSServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([https.url("/file.bin"), "-d", destdir, "-q"]) == 1

    err = capsys.readouterr().err
    assert f"TLS certificate verification failed for {https.url('/file.bin')}" in err
    assert "--ca-bundle" in err
    assert listing(destdir) == []


def test_cli_ca_bundle(https: HTTPSServer, destdir: str, ca_path: str) -> None:
    https.add("/big.bin", make_data(1_000_000, seed=9))

    urls = [https.url("/file.bin"), https.url("/big.bin")]
    status = main([*urls, "-d", destdir, "-q", "--ca-bundle", ca_path])

    assert status == 0
    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert read(os.path.join(destdir, "big.bin")) == make_data(1_000_000, seed=9)


def test_cli_ca_bundle_must_exist(destdir: str, capsys: pytest.CaptureFixture[str]) -> None:
    missing = os.path.join(destdir, "missing.pem")

    with pytest.raises(SystemExit) as excinfo:
        main(["https://127.0.0.1:1/file.bin", "-d", destdir, "--ca-bundle", missing])

    assert excinfo.value.code == 2
    assert f"no readable CA bundle at {missing!r}" in capsys.readouterr().err


# --- client certificates ----------------------------------------------------------------


class ClientCertServer(HTTPSServer):
    """An :class:`HTTPSServer` that asks every client for a certificate from *ca*."""

    def __init__(self, ca: Any) -> None:
        super().__init__(ca)
        self._context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(self._context)


@pytest.fixture
def client_cert(ca: Any, tmp_path: os.PathLike[str]) -> tuple[str, str]:
    """A client certificate issued by the test CA, and its key, as PEM files."""
    issued = ca.issue_cert("client@example.test")
    cert = os.path.join(os.fspath(tmp_path), "client.pem")
    key = os.path.join(os.fspath(tmp_path), "client.key")
    issued.cert_chain_pems[0].write_to_path(cert)
    issued.private_key_pem.write_to_path(key)
    return cert, key


@pytest.mark.parametrize("through", ["own", "requests"])
def test_a_client_certificate_is_presented(
    ca: Any, destdir: str, ca_path: str, client_cert: tuple[str, str], through: str
) -> None:
    session_class = DownloadSession if through == "own" else ThroughRequests
    with ClientCertServer(ca).start() as server:
        server.add("/file.bin", DATA)
        with session_class(verify=ca_path) as session:
            session.cert = client_cert
            fetch(destdir, server.url("/file.bin"), session=session)
        with session_class(verify=ca_path) as session:  # no certificate: refused
            manager = DownloadManager(destdir, session=session, retry=RetryPolicy(total=0))
            with manager:
                download = manager.download(server.url("/file.bin"), "refused.bin")
                assert download is not None
                download.wait(raise_if_error=False)
                error = download.error()

    assert read(os.path.join(destdir, "file.bin")) == DATA
    assert error is not None and isinstance(error[1], TransferError)
    assert "refused.bin" not in listing(destdir)


# --- through a proxy (CONNECT) ----------------------------------------------------------


class _Tunnel(LoopbackHandler["TunnelProxy"]):
    def do_CONNECT(self) -> None:
        """Open a tunnel to the host:port asked for, and relay bytes both ways."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.owner._record(RecordedRequest(self.command, self.path, headers))
        host, _, port = self.path.rpartition(":")
        self.close_connection = True
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            self.send_page(502)
            return
        with upstream:
            self.send_response(200, "Connection established")
            self.end_headers()
            self.wfile.flush()
            sockets = [self.connection, upstream]
            while not self.owner._stopping.is_set():
                readable, _, _ = select.select(sockets, [], [], 0.1)
                for source in readable:
                    data = source.recv(65536)
                    if not data:
                        return
                    (upstream if source is self.connection else self.connection).sendall(data)


class TunnelProxy(BackgroundServer):
    """A forward proxy that only tunnels (``CONNECT``), as HTTPS through a proxy needs."""

    handler = _Tunnel


@pytest.mark.parametrize("through", ["own", "requests"])
def test_https_through_a_proxy_tunnel(
    https: HTTPSServer, destdir: str, ca_path: str, monkeypatch: pytest.MonkeyPatch, through: str
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    session_class = DownloadSession if through == "own" else ThroughRequests
    with TunnelProxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.base_url)
        with session_class(verify=ca_path) as session:
            fetch(destdir, https.url("/file.bin"), session=session)

    assert read(os.path.join(destdir, "file.bin")) == DATA
    port = https.host_port[1]
    assert [(r.method, r.path) for r in proxy.requests] == [("CONNECT", f"127.0.0.1:{port}")]
