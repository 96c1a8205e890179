"""Request options (``dlmanager/request.py``): their checks and decisions (pure), then
what a real server receives on both transports, and what becomes of such downloads:
never split nor resumed, retried by the rule of non-idempotent requests, redirected as
``requests`` does, joined in flight only by the same request."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import urllib3

from dlmanager import (
    Download,
    DownloadEvent,
    DownloadManager,
    EventKind,
    HTTPStatusError,
    IncompleteBodyError,
    RetryPolicy,
    TransferError,
    retrieve,
)
from dlmanager.cache import cache_fname
from dlmanager.errors import DownloadError
from dlmanager.request import (
    IDEMPOTENT_METHODS,
    OWNED_HEADERS,
    RequestOptions,
    basic_authorization,
    redirected,
    retry_refusal,
)
from dlmanager.session import DownloadSession
from tests.conftest import listing, read
from tests.loopback import free_port
from tests.server import FaultServer, Resource, make_data

Make = Callable[[], Any]
DATA = make_data(50_000, seed=17)


def build(**keywords: Any) -> RequestOptions:
    return RequestOptions.build(**keywords)


# --- the options, checked (pure) ------------------------------------------------------------


def test_idempotent_methods_are_urllib3s() -> None:
    assert urllib3.util.Retry.DEFAULT_ALLOWED_METHODS == IDEMPOTENT_METHODS


def test_no_option_is_a_plain_get() -> None:
    request = build()

    assert request == RequestOptions()
    assert (request.method, request.plain, request.ranged, request.idempotent) == (
        "GET",
        True,
        True,
        True,
    )
    assert request.target("http://h/f?a=1") == "http://h/f?a=1"


def test_the_method_is_upper_cased() -> None:
    assert build(method="post", data=b"x").method == "POST"


@pytest.mark.parametrize(
    ("method", "named"),
    [("PO ST", "'PO ST'"), ("GET\r\nX: 1", "invalid method"), ("", "invalid method"),
     ("HEAD", "no body"), ("connect", "tunnel"), (7, "string")],
)  # fmt: skip
def test_an_unusable_method_is_refused(method: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build(method=method)


def test_a_body_needs_a_method() -> None:
    with pytest.raises(ValueError, match="method='POST'"):
        build(data=b"x")

    assert build(method="GET", data=b"x").body == b"x"


def test_headers_are_read_case_insensitively_and_compared_by_value() -> None:
    request = build(headers={"X-Token": "1", "Accept": "text/csv"})

    assert request.headers["x-token"] == "1"
    assert "ACCEPT" in request.headers
    assert list(request.headers) == ["X-Token", "Accept"]
    assert request == build(headers=[("accept", "text/csv"), ("x-token", "1")])
    assert request != build(headers={"X-Token": "2", "Accept": "text/csv"})
    assert hash(request) == hash(build(headers={"x-token": "1", "accept": "text/csv"}))


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"X-A": "1\r\nInjected: yes"}, "X-A: its value"),
        ({"X-A": "1\nx"}, "line break"),
        ({"X-A": " 1"}, "X-A"),
        ({"X-A": 1}, "X-A: its value must be a string"),
        ({"Bad Name": "1"}, "'Bad Name'"),
        ({"X-A": "1", "x-a": "2"}, "x-a given twice"),
        ("X-A: 1", "mapping or"),
        *[({name.title(): "x"}, f"{name.title()} may not be set") for name in OWNED_HEADERS],
    ],
)
def test_a_bad_header_is_refused_by_name(headers: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        build(headers=headers)


def test_params_are_encoded_as_requests_does_and_appended() -> None:
    params = {"q": "a b", "tag": ["x", "y"], "none": None, "n": 2}
    request = build(params=params)

    assert request.query == "q=a+b&tag=x&tag=y&n=2"
    prepared = requests.Request("GET", "http://h/f", params=params).prepare()
    assert request.target("http://h/f") == prepared.url
    assert request.target("http://h/f") == "http://h/f?q=a+b&tag=x&tag=y&n=2"
    assert request.target("http://h/f?v=1#top") == "http://h/f?v=1&q=a+b&tag=x&tag=y&n=2#top"
    assert build(params=[("a", "1"), ("a", "2")]).query == "a=1&a=2"
    assert build(params="raw=%2F").query == "raw=%2F"


@pytest.mark.parametrize("params", [object(), [("a",)], {"a": object()}, {1: "x"}, b"\xff"])
def test_unusable_params_are_refused(params: Any) -> None:
    with pytest.raises(ValueError, match="params"):
        build(params=params)


def test_bodies_have_requests_meanings() -> None:
    form = build(method="POST", data={"a": "1", "b": ["2", "3"]})
    assert form.body == b"a=1&b=2&b=3"
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    text = build(method="POST", data="é")
    assert (text.body, "content-type" in text.headers) == ("é".encode(), False)
    as_json = build(method="POST", json={"a": [1, None]})
    assert json.loads(as_json.body or b"") == {"a": [1, None]}
    assert as_json.headers["Content-Type"] == "application/json"
    mine = build(method="POST", json=[], headers={"content-type": "application/vnd.x+json"})
    assert dict(mine.headers) == {"content-type": "application/vnd.x+json"}


@pytest.mark.parametrize(
    ("keywords", "named"),
    [
        ({"data": b"x", "json": {}}, "not both"),
        ({"json": float("nan")}, "JSON"),
        ({"json": object()}, "JSON"),
        ({"data": open(__file__, "rb")}, "file object"),  # noqa: SIM115
        ({"data": 12}, "data must be"),
    ],
)
def test_an_unusable_body_is_refused(keywords: dict[str, Any], named: str) -> None:
    try:
        with pytest.raises(ValueError, match=named):
            build(method="POST", **keywords)
    finally:
        if hasattr(keywords.get("data"), "close"):
            keywords["data"].close()


def test_auth_is_a_pair_of_strings_or_an_object() -> None:
    assert build(auth=["u", "p"]).auth == ("u", "p")
    assert basic_authorization("u", "p") == "Basic dTpw"
    assert basic_authorization("ü", "€") == "Basic " + "w7w64oKs"
    with pytest.raises(ValueError, match="auth must be"):
        build(auth=("u", "p", "x"))
    with pytest.raises(ValueError, match="auth must be"):
        build(auth="u:p")


def test_the_repr_shows_no_secret() -> None:
    request = build(method="POST", data=b"secret body", headers={"X-Token": "s3cret"},
                    auth=("user", "hunter2"), params={"token": "t0ken"})  # fmt: skip

    shown = repr(request)

    assert "s3cret" not in shown and "hunter2" not in shown and "secret body" not in shown
    assert "X-Token" in shown and "user" in shown and "11 bytes" in shown


@pytest.mark.parametrize(
    ("method", "body", "ranged", "idempotent"),
    [("GET", None, True, True), ("GET", b"x", False, True), ("PUT", None, False, True),
     ("POST", b"x", False, False), ("PATCH", None, False, False)],
)  # fmt: skip
def test_only_a_get_without_body_is_ranged(
    method: str, body: bytes | None, ranged: bool, idempotent: bool
) -> None:
    request = build(method=method, data=body)

    assert (request.ranged, request.idempotent) == (ranged, idempotent)


@pytest.mark.parametrize(
    ("method", "status", "after"),
    [("POST", 301, ("GET", False)), ("POST", 302, ("GET", False)), ("PUT", 303, ("GET", False)),
     ("PUT", 301, ("PUT", False)), ("POST", 307, ("POST", True)), ("PATCH", 308, ("PATCH", True)),
     ("GET", 303, ("GET", False))],
)  # fmt: skip
def test_a_redirect_changes_the_method_as_requests_does(
    method: str, status: int, after: tuple[str, bool]
) -> None:
    assert redirected(method, True, status) == after


def status_error(status: int, retry_after: float | None = None) -> HTTPStatusError:
    return HTTPStatusError("x", status_code=status, retry_after=retry_after)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransferError("refused", sent=False), True),
        (TransferError("reset"), False),
        (IncompleteBodyError("cut", expected=10), False),
        (status_error(503, 1.0), True),
        (status_error(429, 0.0), True),
        (status_error(503), False),
        (status_error(500), False),
    ],
)
def test_a_post_is_retried_only_when_never_sent_or_asked_again(
    error: DownloadError, retried: bool
) -> None:
    assert (retry_refusal(build(method="POST"), error) is None) is retried
    assert retry_refusal(build(method="PUT"), error) is None  # idempotent: any failure


def test_the_cache_name_tells_requests_apart() -> None:
    url = "https://h/data.csv"
    names = {
        cache_fname(url),
        cache_fname(url, build(params={"v": "1"})),
        cache_fname(url, build(method="POST", data=b"a")),
        cache_fname(url, build(method="POST", data=b"b")),
    }

    assert len(names) == 4
    assert all(name.endswith("-data.csv") for name in names)
    assert cache_fname(url, build(headers={"X": "1"}, auth=("u", "p"))) == cache_fname(url)
    assert cache_fname(url, build(params={"v": "1"})) == cache_fname(url + "?v=1")


# --- what the server receives, on both transports ------------------------------------------


def fetch(
    destdir: str, session: Any, url: str, fname: str | None = None, **keywords: Any
) -> Download:
    """Download *url* into *destdir* (with the download's *keywords*), once over."""
    with DownloadManager(destdir, session=session, retry=keywords.pop("retry", None)) as manager:
        download = manager.download(url, fname, **keywords)
        assert download is not None
        manager.wait(raise_if_error=False)  # its error, if any, is the test's to read
    return download


def test_headers_query_body_and_auth_reach_the_server(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/export.csv", DATA)

    download = fetch(destdir, make_session(), server.url("/export.csv?format=csv"),
                     method="POST", headers={"X-Token": "1"}, params={"rows": ["a", "b"]},
                     json={"a": 1}, auth=("user", "pass"))  # fmt: skip

    assert download.error() is None
    assert listing(destdir) == ["export.csv"]  # named after the path, not the query
    assert read(os.path.join(destdir, "export.csv")) == DATA
    (seen,) = server.requests
    assert (seen.method, seen.path) == ("POST", "/export.csv?format=csv&rows=a&rows=b")
    assert seen.body == b'{"a": 1}'
    assert seen.headers["x-token"] == "1"
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["content-length"] == "8"
    assert seen.headers["authorization"] == basic_authorization("user", "pass")
    assert seen.headers["accept-encoding"] == "identity"


def test_a_form_is_posted_and_a_put_sends_its_body(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/form.bin", DATA)
    server.add("/put.bin", DATA)

    fetch(destdir, make_session(), server.url("/form.bin"), method="POST", data={"q": "a&b"})
    fetch(destdir, make_session(), server.url("/put.bin"), method="PUT", data="é")

    form, put = server.requests
    assert (form.method, form.body) == ("POST", b"q=a%26b")
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"
    assert (put.method, put.body, "content-type" in put.headers) == ("PUT", "é".encode(), False)


def test_a_post_without_body_says_its_length_is_zero(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/f.bin", DATA)

    fetch(destdir, make_session(), server.url("/f.bin"), method="POST")

    (seen,) = server.requests
    assert (seen.method, seen.headers.get("content-length"), seen.body) == ("POST", "0", b"")


def test_session_headers_stay_and_the_downloads_win(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/a.bin", DATA)
    server.add("/b.bin", DATA)
    session = make_session() or DownloadSession()
    session.headers.update({"X-Session": "s", "User-Agent": "session-agent"})

    fetch(destdir, session, server.url("/a.bin"), headers={"user-agent": "mine", "X-Mine": "m"})
    fetch(destdir, session, server.url("/b.bin"))

    mine, plain = server.requests
    assert (mine.headers["x-session"], mine.headers["user-agent"]) == ("s", "mine")
    assert [name.lower() for name, _ in mine.lines].count("user-agent") == 1
    assert mine.headers["x-mine"] == "m"
    assert (plain.headers["user-agent"], "x-mine" in plain.headers) == ("session-agent", False)
    assert dict(session.headers)["User-Agent"] == "session-agent"  # the session is unchanged


def test_auth_wins_over_credentials_in_the_url(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/f.bin", DATA)
    host, port = server.host_port

    fetch(destdir, make_session(), f"http://url:cred@{host}:{port}/f.bin", auth=("u", "p"))

    (seen,) = server.requests
    assert seen.headers["authorization"] == basic_authorization("u", "p")


def test_an_auth_object_needs_a_requests_session(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", DATA)
    auth = requests.auth.HTTPBasicAuth("u", "p")

    with DownloadManager(destdir) as manager, pytest.raises(ValueError, match="requests session"):
        manager.download(server.url("/f.bin"), auth=auth)
    fetch(destdir, DownloadSession(), server.url("/f.bin"), auth=auth)

    (seen,) = server.requests
    assert seen.headers["authorization"] == basic_authorization("u", "p")


# --- never split, never resumed; retried by the rule of non-idempotent requests ------------


def test_a_post_is_one_stream_without_range(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    big = make_data(3_000_000, seed=3)
    server.add("/big.bin", big)
    session = make_session()
    with DownloadManager(destdir, session=session, connections=4, min_split_size=100_000) as m:
        posted = m.download(server.url("/big.bin"), "posted.bin", method="POST", data=b"q")
        assert posted is not None
        posted.wait()
        got = m.download(server.url("/big.bin"), "got.bin")  # the same file, by GET: split
        assert got is not None
        got.wait()

    posts = [r for r in server.requests if r.method == "POST"]
    gets = [r for r in server.requests if r.method == "GET"]
    assert len(posts) == 1 and posts[0].range is None
    assert len(gets) > 1 and any(r.range for r in gets)
    assert read(os.path.join(destdir, "posted.bin")) == big


def test_a_post_cut_mid_body_is_not_retried(
    server: FaultServer, destdir: str, make_session: Make, fast_retry: RetryPolicy
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[20_000]))

    download = fetch(destdir, make_session(), server.url("/f.bin"), method="POST", data=b"q",
                     retry=fast_retry)  # fmt: skip

    error = download.error()
    assert error is not None and isinstance(error[1], IncompleteBodyError)
    assert "not retried: a POST is not retried once sent" in str(error[1])
    assert [r.method for r in server.requests] == ["POST"]
    assert listing(destdir) == []


def test_a_put_cut_mid_body_starts_again_from_byte_0(
    server: FaultServer, destdir: str, make_session: Make, fast_retry: RetryPolicy
) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[20_000, 30_000]))
    kinds: list[EventKind] = []

    with DownloadManager(destdir, session=make_session(), retry=fast_retry) as manager:
        download = manager.download(server.url("/f.bin"), method="PUT", data=b"body",
                                    on_event=lambda e: kinds.append(e.kind))  # fmt: skip
        assert download is not None

    assert read(os.path.join(destdir, "f.bin")) == DATA
    assert [(r.method, r.range, r.body) for r in server.requests] == [("PUT", None, b"body")] * 3
    assert kinds.count(EventKind.RESTARTED) == 2 and EventKind.RESUMED not in kinds


def test_a_post_answered_503_with_retry_after_is_sent_again(
    server: FaultServer, destdir: str, make_session: Make, fast_retry: RetryPolicy
) -> None:
    server.add("/later.bin", Resource(DATA, statuses=[(503, {"Retry-After": "0"})]))
    server.add("/down.bin", Resource(DATA, statuses=[503]))
    session = make_session()

    later = fetch(destdir, session, server.url("/later.bin"), method="POST", data=b"q",
                  retry=fast_retry)  # fmt: skip
    down = fetch(destdir, session, server.url("/down.bin"), method="POST", data=b"q",
                 retry=fast_retry)  # fmt: skip

    assert later.error() is None
    assert [(r.method, r.body) for r in server.requests_for("/later.bin")] == [("POST", b"q")] * 2
    error = down.error()
    assert error is not None and isinstance(error[1], HTTPStatusError)
    assert "not retried" in str(error[1])
    assert len(server.requests_for("/down.bin")) == 1
    assert listing(destdir) == ["later.bin"]


def test_a_post_that_cannot_connect_is_retried(
    destdir: str, make_session: Make, fast_retry: RetryPolicy
) -> None:
    retries: list[DownloadEvent] = []

    def on_event(event: DownloadEvent) -> None:
        if event.kind is EventKind.RETRYING:
            retries.append(event)

    url = f"http://127.0.0.1:{free_port()}/f.bin"
    with DownloadManager(destdir, session=make_session(), retry=fast_retry.new(total=2)) as m:
        download = m.download(url, method="POST", data=b"q", on_event=on_event)
        assert download is not None
        m.wait(raise_if_error=False)

    error = download.error()
    assert error is not None and isinstance(error[1], TransferError)
    assert "connection refused" in str(error[1]) and not error[1].sent
    assert len(retries) == 2
    assert listing(destdir) == []


def cancel_after(destdir: str, session: Any, url: str, received: int, **keywords: Any) -> None:
    """Start a download of *url*, and cancel it with ``keep_partial`` once it
    received *received* bytes."""
    with DownloadManager(destdir, session=session) as manager:
        download = manager.download(url, **keywords)
        assert download is not None
        deadline = time.monotonic() + 10
        while download.received < received and time.monotonic() < deadline:
            time.sleep(0.01)
        assert download.received >= received
        manager.cancel(keep_partial=True)
        download.wait(raise_if_error=False)


def test_a_cancelled_post_keeps_nothing_to_resume(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/slow.bin", Resource(DATA, trickle=(1_000, 0.05), trickle_after=10_000))
    url = server.url("/slow.bin")

    cancel_after(destdir, make_session(), url, 10_000, method="POST", data=b"q")

    assert listing(destdir) == []


def test_a_post_does_not_resume_what_a_get_left(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/slow.bin", Resource(DATA, trickle=(1_000, 0.05), trickle_after=10_000))
    url = server.url("/slow.bin")
    cancel_after(destdir, make_session(), url, 10_000)
    assert listing(destdir) != ["slow.bin"]  # the GET's leftover, to resume

    server.add("/slow.bin", DATA)
    fetch(destdir, make_session(), url, method="POST", data=b"q")

    assert [(r.method, r.range) for r in server.requests] == [("GET", None), ("POST", None)]
    assert read(os.path.join(destdir, "slow.bin")) == DATA
    assert listing(destdir) == ["slow.bin"]  # the leftover went


# --- redirects ----------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "second"), [(303, ("GET", None)), (307, ("POST", b"q=1"))])
def test_a_redirected_post_follows_requests_rules(
    server: FaultServer,
    destdir: str,
    make_session: Make,
    status: int,
    second: tuple[str, bytes | None],
) -> None:
    server.add("/result.bin", DATA)
    server.redirect("/submit", "/result.bin", status)

    download = fetch(destdir, make_session(), server.url("/submit"), "out.bin", method="POST",
                     data={"q": "1"})  # fmt: skip

    assert download.error() is None
    first, then = server.requests
    assert (first.method, first.path, first.body) == ("POST", "/submit", b"q=1")
    assert (then.method, then.path, then.body) == (*second[:1], "/result.bin", second[1])
    assert ("content-type" in then.headers) is (second[1] is not None)
    assert read(os.path.join(destdir, "out.bin")) == DATA


@pytest.mark.parametrize(
    "credentials",
    [{"auth": ("user", "secret")}, {"headers": {"authorization": "Bearer secret"}}],
    ids=["auth", "header"],
)
def test_the_downloads_authorization_stays_with_its_origin(
    server: FaultServer, destdir: str, make_session: Make, credentials: dict[str, Any]
) -> None:
    with FaultServer() as other:  # another origin: another port
        other.add("/file.bin", DATA)
        server.redirect("/start", other.url("/file.bin"))

        fetch(destdir, make_session(), server.url("/start"), "file.bin", **credentials)

        (last,) = other.requests
    (first,) = server.requests
    assert "authorization" in first.headers
    assert [name for name, _ in last.lines if name.lower() == "authorization"] == []
    assert read(os.path.join(destdir, "file.bin")) == DATA


# --- in flight: the same request joins, another waits ----------------------------------------


def test_another_request_of_a_destination_waits_then_finds_the_file(
    server: FaultServer, destdir: str, make_session: Make
) -> None:
    server.add("/f.bin", Resource(DATA, trickle=(5_000, 0.02)))
    with DownloadManager(destdir, session=make_session()) as manager:
        first = manager.download(server.url("/f.bin"), method="POST", data=b"a")
        same = manager.download(server.url("/f.bin"), method="post", data=b"a")
        other = manager.download(server.url("/f.bin"), method="POST", data=b"b")
        plain = manager.download(server.url("/f.bin"))
        assert first is not None and other is not None and plain is not None
        assert same is first
        assert len({id(first), id(other), id(plain)}) == 3
        other.wait()
        plain.wait()

    assert (first.done_by, other.done_by, plain.done_by) == (
        None,
        "another download",
        "another download",
    )
    assert [(r.method, r.body) for r in server.requests] == [("POST", b"a")]


def test_the_request_of_a_download_is_shown(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", DATA)
    with DownloadManager(destdir) as manager:
        download = manager.download(server.url("/f.bin"), headers={"X-A": "1"})
        assert download is not None
    assert download.request == RequestOptions.build(headers={"x-a": "1"})


# --- bad input: a clear error, nothing written, nothing sent --------------------------------


@pytest.mark.parametrize(
    ("keywords", "named"),
    [
        ({"headers": {"X-A": "1\r\nX-B: 2"}}, "line break"),
        ({"headers": {"Range": "bytes=0-9"}}, "Range may not be set"),
        ({"method": "POST", "data": b"x", "json": {}}, "not both"),
        ({"method": "GE T"}, "invalid method"),
        ({"method": "POST", "revalidate": True}, "revalidate and max_age apply"),
        ({"method": "POST", "max_age": 60}, "revalidate and max_age apply"),
    ],
)
def test_bad_request_options_are_refused_before_anything_happens(
    server: FaultServer, destdir: str, keywords: dict[str, Any], named: str
) -> None:
    server.add("/f.bin", DATA)
    with DownloadManager(destdir) as manager:
        with pytest.raises(ValueError, match=named):
            manager.download(server.url("/f.bin"), **keywords)
        with pytest.raises(ValueError, match=named):
            Download(server.url("/f.bin"), os.path.join(destdir, "g.bin"), **keywords)

    assert listing(destdir) == []
    assert server.requests == []


def test_a_session_with_get_only_cannot_post(server: FaultServer, destdir: str) -> None:
    class GetOnly:  # a session written for dlmanager 0.1.1
        def get(self, url: str, stream: bool = False) -> Any:
            raise AssertionError("not called")

    with DownloadManager(destdir, session=GetOnly()) as manager:
        with pytest.raises(ValueError, match=r"GetOnly\) has no request\(\) method"):
            manager.download(server.url("/f.bin"), method="POST", data=b"x")
        with pytest.raises(ValueError, match=r"takes no headers="):
            manager.download(server.url("/f.bin"), headers={"X-A": "1"})
    assert listing(destdir) == []


def test_request_and_its_keywords_are_not_both_given(destdir: str) -> None:
    with pytest.raises(ValueError, match="not both"):
        Download("http://h/f", os.path.join(destdir, "f"), request=RequestOptions(), method="PUT")


# --- Download and retrieve -----------------------------------------------------------------


def test_a_download_alone_posts(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", DATA)
    path = os.path.join(destdir, "f.bin")

    download = Download(server.url("/f.bin"), path, method="POST", data=b"x", params={"a": "1"})
    download.start()
    download.wait()

    (seen,) = server.requests
    assert (seen.method, seen.path, seen.body) == ("POST", "/f.bin?a=1", b"x")
    assert read(path) == DATA


def test_retrieve_posts_once_and_names_each_request(
    server: FaultServer, tmp_path: os.PathLike[str]
) -> None:
    server.add("/data.csv", DATA)
    cache = os.fspath(tmp_path)
    url = server.url("/data.csv")

    first = retrieve(url, cache_dir=cache, method="POST", json={"q": 1})
    again = retrieve(url, cache_dir=cache, method="POST", json={"q": 1})
    other = retrieve(url, cache_dir=cache, method="POST", json={"q": 2})

    assert first == again != other
    assert first.read_bytes() == DATA == other.read_bytes()
    assert [r.body for r in server.requests] == [b'{"q": 1}', b'{"q": 2}']


def test_requests_in_threads_each_send_their_own(server: FaultServer, destdir: str) -> None:
    for index in range(8):
        server.add(f"/f{index}.bin", DATA)
    with DownloadManager(destdir, max_workers=8) as manager:
        threads = [
            threading.Thread(
                target=manager.download,
                args=(server.url(f"/f{index}.bin"),),
                kwargs={"headers": {"X-Index": str(index)}},
            )
            for index in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert sorted((r.path, r.headers["x-index"]) for r in server.requests) == [
        (f"/f{index}.bin", str(index)) for index in range(8)
    ]
