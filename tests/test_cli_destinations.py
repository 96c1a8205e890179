"""``dlmanager get -o``: a path with a directory part, and ``-o -`` (standard output),
in process and through the real entry point in pipes, as CI runs it."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dlmanager.cli import main
from tests.conftest import ROOT, SUBPROCESS_TIMEOUT, child_env, listing, read
from tests.server import FaultServer, Resource, make_data
from tests.test_cli import file_lines, lines

DATA = make_data(400_000, seed=3)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- -o PATH ------------------------------------------------------------------------------------


@pytest.fixture
def cwd(tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty current directory."""
    path = os.path.join(os.fspath(tmp_path), "cwd")
    os.mkdir(path)
    monkeypatch.chdir(path)
    return path


def test_output_path_puts_the_file_there(
    server: FaultServer, cwd: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/get?id=1", Resource(DATA, drop_after=[100_000]))
    os.makedirs(os.path.join(cwd, "sub", "dir"))
    url = server.url("/get?id=1")

    assert main([url, "-o", "sub/dir/build.bin", "--retries", "3"]) == 0

    assert read(os.path.join(cwd, "sub", "dir", "build.bin")) == DATA
    assert listing(os.path.join(cwd, "sub", "dir")) == ["build.bin"]  # nothing else
    assert sorted(listing(cwd)) == ["sub"]
    (line,) = file_lines(capsys.readouterr().out)
    assert line.startswith(f"downloaded {url} -> sub/dir/build.bin (")
    assert [request.range for request in server.requests_for("/get?id=1")][-1] == "bytes=100000-"


def test_output_path_is_relative_to_the_current_directory(
    server: FaultServer, cwd: str, tmp_path: os.PathLike[str]
) -> None:
    server.add("/f.bin", DATA)
    os.mkdir(os.path.join(os.fspath(tmp_path), "x"))

    assert main([server.url("/f.bin"), "-o", "../x/y.bin", "-q"]) == 0

    assert read(os.path.join(os.fspath(tmp_path), "x", "y.bin")) == DATA
    assert listing(cwd) == []


def test_output_path_replaces_a_symlink_never_writes_through_it(
    server: FaultServer, cwd: str
) -> None:
    server.add("/f.bin", DATA)
    os.mkdir("sub")
    with open("target.bin", "wb") as handle:
        handle.write(b"not to be touched")
    os.symlink(os.path.join(cwd, "target.bin"), os.path.join("sub", "link.bin"))

    assert main([server.url("/f.bin"), "-o", "sub/link.bin", "-q"]) == 0

    assert not os.path.islink(os.path.join("sub", "link.bin"))
    assert read(os.path.join("sub", "link.bin")) == DATA
    assert read("target.bin") == b"not to be touched"


@pytest.mark.parametrize(
    ("output", "extra", "problem"),
    [
        ("missing/dir/f.bin", [], "--output 'missing/dir/f.bin': no directory 'missing/dir'"),
        ("sub/f.bin", ["-d", "elsewhere"], "--output 'sub/f.bin' is a path (it has a directory"),
        ("sub", [], "--output 'sub': ./sub is a directory: give a file name"),
        ("sub/", [], "--output 'sub/' is a directory"),
        ("sub/..", [], "--output 'sub/..' is a directory"),
        ("sub/.dlmanager", [], "--output 'sub/.dlmanager': invalid file name '.dlmanager'"),
        ("-", ["-d", "elsewhere"], "-o - writes the body to standard output, and no file: -d"),
        (
            "-",
            ["--revalidate"],
            "-o - writes the body to standard output, and no file: --revalidate",
        ),
    ],
)
def test_bad_output_paths_are_bad_usage(
    server: FaultServer,
    cwd: str,
    capsys: pytest.CaptureFixture[str],
    output: str,
    extra: list[str],
    problem: str,
) -> None:
    server.add("/f.bin", DATA)
    os.mkdir("sub")

    with pytest.raises(SystemExit) as raised:
        main([server.url("/f.bin"), "-o", output, *extra])

    assert raised.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = lines(err)
    assert line.startswith(f"dlmanager: {problem}")
    assert server.requests == []
    assert sorted(listing(cwd)) == ["sub"]
    assert listing("sub") == []


def test_a_plain_name_is_still_a_name_in_dir(server: FaultServer, cwd: str) -> None:
    server.add("/f.bin", DATA)

    assert main([server.url("/f.bin"), "-o", "g.bin", "-d", "out", "-q"]) == 0

    assert listing(os.path.join(cwd, "out")) == ["g.bin"]


# --- -o - ---------------------------------------------------------------------------------------


def command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "dlmanager", *args]


def ci_env() -> dict[str, str]:
    return {**child_env(), "CI": "true"}


def run_to_pipe(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run the command as CI does (``CI=true``, no standard input), its
    standard output a pipe read as bytes."""
    return subprocess.run(
        command(args),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=ci_env(),
        cwd=ROOT,
        check=False,
    )


def test_stdout_gets_the_body_byte_exact_and_nothing_else(server: FaultServer) -> None:
    # A 503 first: before any byte, a failure is retried as usual.
    server.add("/f.bin", Resource(DATA, statuses=[503]))

    result = run_to_pipe(["-o", "-", server.url("/f.bin"), "--checksum", sha256(DATA)])

    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert result.stdout == DATA
    assert f"downloaded {server.url('/f.bin')} -> <stdout> (" in err
    assert "dlmanager: 1 downloaded" in err
    assert len(server.requests_for("/f.bin")) == 2


def test_stdout_with_json_keeps_the_object_on_stderr(server: FaultServer) -> None:
    server.add("/f.bin", DATA)

    result = run_to_pipe(["-o", "-", server.url("/f.bin"), "--json", "-x", "4"])

    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA
    record = json.loads(lines(result.stderr.decode())[0])
    assert record["status"] == "downloaded"
    assert record["size"] == len(DATA)
    assert [request.range for request in server.requests_for("/f.bin")] == [None]  # one stream


def test_stdout_failure_after_bytes_went_out_is_final(server: FaultServer) -> None:
    server.add("/f.bin", Resource(DATA, drop_after=[100_000]))

    result = run_to_pipe(["-o", "-", server.url("/f.bin")])

    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert result.stdout == DATA[:100_000]
    assert "100000 bytes had already gone out to <stdout>, which cannot be rewound" in err
    assert "Traceback" not in err
    assert len(server.requests_for("/f.bin")) == 1  # no resume, no restart


def test_stdout_checksum_mismatch_says_the_output_does_not_match(server: FaultServer) -> None:
    server.add("/f.bin", DATA)

    result = run_to_pipe(["-o", "-", server.url("/f.bin"), "--checksum", sha256(b"other")])

    err = result.stderr.decode()
    assert result.returncode == 1, err
    assert result.stdout == DATA  # out before it could be checked
    assert f"the {len(DATA)} bytes that went out to <stdout> do not match it" in err


def test_stdout_into_head_ends_quietly(server: FaultServer) -> None:
    big = make_data(3_000_000, seed=4)
    server.add("/f.bin", Resource(big, trickle=(64_000, 0.01)))
    script = (
        f"set -o pipefail; {sys.executable} -m dlmanager -o - {server.url('/f.bin')} | head -c 10"
    )

    result = subprocess.run(
        ["bash", "-c", script],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=ci_env(),
        cwd=ROOT,
        check=False,
    )

    assert result.stdout == big[:10]
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert result.stderr == b""  # no traceback, no line at all
    assert server.bytes_sent < len(big)  # stopped, not read to the end


def test_ctrl_c_says_how_much_went_out(server: FaultServer) -> None:
    server.add("/f.bin", Resource(DATA, stall_after=[50_000]))
    process = subprocess.Popen(
        command(["-o", "-", server.url("/f.bin"), "--timeout", "30"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ci_env(),
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        received = process.stdout.read(50_000)  # all that will come
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert received + out == DATA[:50_000]
    assert process.returncode == 130, err
    assert lines(err.decode()) == [
        f"dlmanager: interrupted after 48.8 KiB (50000 of {len(DATA)} bytes) of "
        f"{server.url('/f.bin')} went to standard output: the output is incomplete"
    ]


def test_stdout_sends_the_request_options(server: FaultServer) -> None:
    server.add("/api/export.csv", Resource(DATA))
    result = run_to_pipe(
        ["-o", "-", server.url("/api/export.csv"), "-H", "X-Token: 7", "--json-body", '{"a": 1}']
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == DATA
    (request,) = server.requests_for("/api/export.csv")
    assert request.method == "POST"
    assert request.headers["x-token"] == "7"
    assert json.loads(request.body) == {"a": 1}
