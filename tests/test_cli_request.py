"""``dlmanager get -H/--method/--data/--json-body``: what the server receives for every
URL, and bad usage before anything starts (the options of ``dlmanager/cli/options.py``)."""

from __future__ import annotations

import json
import os

import pytest

from dlmanager.cli import main
from tests.conftest import listing, read, run_python, write
from tests.server import FaultServer, Resource, make_data
from tests.test_cli import run_in_ci

DATA = make_data(30_000, seed=5)


def test_headers_method_and_json_body_reach_the_server(server: FaultServer, destdir: str) -> None:
    server.add("/export.csv", DATA)

    result = run_in_ci(["-H", "X-Token: 1", "--header", "accept:  text/csv ", "--method",
                        "POST", "--json-body", '{"a":1}', server.url("/export.csv?year=2024"),
                        "-d", destdir])  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert listing(destdir) == ["export.csv"]
    assert read(os.path.join(destdir, "export.csv")) == DATA
    (seen,) = server.requests
    assert (seen.method, seen.path, seen.body) == ("POST", "/export.csv?year=2024", b'{"a":1}')
    assert (seen.headers["x-token"], seen.headers["accept"]) == ("1", "text/csv")
    assert seen.headers["content-type"] == "application/json"
    assert result.stdout.startswith(f"downloaded {server.url('/export.csv?year=2024')} -> ")


def test_data_from_a_file_is_sent_byte_for_byte_with_post(
    server: FaultServer, destdir: str, tmp_path: os.PathLike[str]
) -> None:
    server.add("/f.bin", DATA)
    body = b"line 1\r\nline 2\n\x00\xff"
    path = os.path.join(os.fspath(tmp_path), "body.bin")
    with open(path, "wb") as handle:
        handle.write(body)

    assert main([server.url("/f.bin"), "--data", f"@{path}", "-d", destdir, "-q"]) == 0

    (seen,) = server.requests
    assert (seen.method, seen.body, "content-type" in seen.headers) == ("POST", body, False)


def test_data_from_standard_input(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", DATA)

    result = run_python(["-m", "dlmanager", server.url("/f.bin"), "--method", "PUT",
                         "--data", "@-", "-d", destdir], stdin="x=1\n")  # fmt: skip

    assert result.returncode == 0, result.stderr
    (seen,) = server.requests
    assert (seen.method, seen.body) == ("PUT", b"x=1\n")


def test_the_options_go_with_every_url_of_a_manifest(
    server: FaultServer, destdir: str, tmp_path: os.PathLike[str]
) -> None:
    server.add("/a.bin", DATA)
    server.add("/b.bin", DATA)
    manifest = write(os.path.join(os.fspath(tmp_path), "urls.txt"),
                     f"{server.url('/a.bin')}\n{server.url('/b.bin')} b-renamed.bin\n")  # fmt: skip

    assert main(["-i", manifest, "-H", "X-Token: 1", "--data", "q", "-d", destdir, "-q"]) == 0

    assert sorted(listing(destdir)) == ["a.bin", "b-renamed.bin"]
    assert sorted((r.path, r.method, r.body, r.headers["x-token"]) for r in server.requests) == [
        ("/a.bin", "POST", b"q", "1"),
        ("/b.bin", "POST", b"q", "1"),
    ]


def test_a_post_that_fails_once_sent_is_not_retried(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/f.bin", Resource(DATA, statuses=[503]))

    assert main([server.url("/f.bin"), "--data", "q", "-d", destdir, "--json"]) == 1

    (line,) = capsys.readouterr().out.splitlines()
    assert "not retried: a POST is not retried once sent" in json.loads(line)["reason"]
    assert len(server.requests) == 1
    assert listing(destdir) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["-H", "X-Token 1"], "-H 'X-Token 1': a header is 'Name: value'"),
        (["-H", ": 1"], "a header is 'Name: value'"),
        (["-H", "X-A: 1\r\nX-B: 2"], "X-A: its value may not start with a blank nor hold a line"),
        (["-H", "Bad Name: 1"], "invalid header name 'Bad Name'"),
        (["-H", "Range: bytes=0-1"], "header Range may not be set"),
        (["-H", "X-A: 1", "-H", "x-a: 2"], "header x-a given twice"),
        (["--data", "x", "--json-body", "{}"], "not allowed with argument"),
        (["--json-body", "{bad"], "--json-body: not JSON"),
        (["--json-body", "@/no/such/file"], "--json-body: cannot read /no/such/file"),
        (["--data", "@/no/such/file"], "--data: cannot read /no/such/file"),
        (["--method", "PO ST"], "invalid method 'PO ST'"),
        (["--method", "HEAD"], "method HEAD cannot be used: a HEAD response has no body"),
        (["--data", "x", "--revalidate"], "--revalidate and --max-age apply to a GET"),
        (["--method", "DELETE", "--max-age", "60"], "--revalidate and --max-age apply"),
        (["--data", "@-", "-i", "-"], "--data @- and -i - both read standard input"),
    ],
)
def test_bad_request_options_are_bad_usage(
    server: FaultServer,
    destdir: str,
    options: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.add("/f.bin", DATA)

    with open(os.devnull) as stdin, pytest.raises(SystemExit) as excinfo:
        monkeypatch.setattr("sys.stdin", stdin)  # for -i - to read
        main([server.url("/f.bin"), "-d", destdir, *options])

    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert message in err.splitlines()[-1], err  # after argparse's usage, if any
    assert listing(destdir) == []
    assert server.requests == []


def test_bad_usage_in_ci_names_the_header(server: FaultServer, destdir: str) -> None:
    result = run_in_ci([server.url("/f.bin"), "-H", "X-Token", "-d", destdir])

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "dlmanager: -H 'X-Token': a header is 'Name: value'\n"
    assert server.requests == []
