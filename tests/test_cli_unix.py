"""The command as a good Unix tool, through the real entry point (a child process):
closed pipes, secrets, names decided before anything starts, and the messages a new
user meets first."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import textwrap
import time

import pytest

from tests.conftest import ROOT, child_env, listing, read, start_cli, temporaries, write
from tests.loopback import free_port
from tests.server import FaultServer, Resource, make_data
from tests.test_cli import file_lines, lines, run_cli

WAIT = 20.0


# --- a closed pipe ------------------------------------------------------------------------------


def test_head_1_ends_the_command_quietly_as_sigpipe_would(
    server: FaultServer, destdir: str
) -> None:
    files = {f"f{i}.bin": make_data(300_000, seed=i) for i in range(6)}
    for name, data in files.items():
        server.add(f"/{name}", Resource(data, trickle=(50_000, 0.02)))
    urls = [server.url(f"/{name}") for name in files]
    process = start_cli(["-d", destdir, "-j", "2", *urls])
    assert process.stdout is not None and process.stderr is not None
    first = process.stdout.readline()  # what `head -1` reads
    process.stdout.close()  # ... before it exits
    try:
        process.wait(WAIT)
    finally:
        if process.poll() is None:
            process.kill()
    with process.stderr:
        err = process.stderr.read()

    assert first.startswith("downloaded ")
    assert process.returncode == -signal.SIGPIPE, err
    assert err == ""  # no traceback, nothing at all
    for name in listing(destdir):  # nothing partial under a final name
        if name in files:
            assert read(os.path.join(destdir, name)) == files[name]
        else:
            assert name in temporaries(destdir), name


def test_demo_json_into_head_3(tmp_path: os.PathLike[str]) -> None:
    script = "set -o pipefail; python -m dlmanager demo --json | head -3"
    result = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert result.returncode == 128 + signal.SIGPIPE, result.stderr
    assert "Traceback" not in result.stderr
    assert [json.loads(line)["status"] for line in lines(result.stdout)] == ["downloaded"] * 3


# --- secrets --------------------------------------------------------------------------------------

QUERY = "?token=tok-42&X-Amz-Signature=amz-99"


def test_credentials_are_never_printed(server: FaultServer, destdir: str) -> None:
    host, port = server.host_port
    server.add("/ok.bin" + QUERY, Resource(make_data(20_000), drop_after=[5_000]))
    base = f"http://bob:pa55word@{host}:{port}"
    urls = [f"{base}/ok.bin{QUERY}", f"{base}/missing.bin{QUERY}"]

    for mode in ([], ["--json"], ["-vv"]):
        result = run_cli(["-d", destdir, *urls, *mode])
        assert result.returncode == 1
        printed = result.stdout + result.stderr
        assert "ok.bin" in printed and "missing.bin" in printed
        for secret in ("pa55word", "bob:", "tok-42", "amz-99"):
            assert secret not in printed, (mode, printed)
        assert "token=***" in printed
        os.remove(os.path.join(destdir, "ok.bin"))
    bad = run_cli(["-d", destdir, f"ftp://bob:pa55word@{host}/x{QUERY}"])
    assert bad.returncode == 2
    assert "pa55word" not in bad.stderr and "tok-42" not in bad.stderr


# --- names are decided before anything starts ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/builds/", "its path ends with '/'"),
        ("/a%2F..%2Fetc", "must not contain a path separator"),
    ],
)
def test_a_url_that_gives_no_name_is_bad_usage(
    server: FaultServer, destdir: str, path: str, why: str
) -> None:
    server.add("/fine.bin", b"x")
    result = run_cli(["-d", destdir, server.url("/fine.bin"), server.url(path)])

    assert result.returncode == 2
    (message,) = lines(result.stderr)
    assert why in message
    assert message.endswith("name it with -o NAME, or with 'URL NAME' in an -i file")
    assert "fname" not in message
    assert server.requests == []
    assert listing(destdir) == []


def test_a_name_too_long_is_bad_usage(server: FaultServer, destdir: str) -> None:
    result = run_cli(["-d", destdir, server.url("/" + "n" * 250 + ".bin")])
    assert result.returncode == 2
    assert "file name too long" in result.stderr
    assert server.requests == []


# --- what a new user meets first ------------------------------------------------------------


def test_a_server_that_is_down_is_told_at_once_once_per_retry(destdir: str) -> None:
    port = free_port()
    process = start_cli(["-d", destdir, f"http://127.0.0.1:{port}/f.bin"])
    assert process.stderr is not None
    try:
        ready, _, _ = select.select([process.stderr], [], [], WAIT)
        assert ready, "nothing said about the first failure"
        first = process.stderr.readline()
    finally:
        process.kill()
        process.communicate()
    assert first.startswith("retrying f.bin in ")
    assert first.rstrip().endswith(f"cannot connect to 127.0.0.1:{port}: connection refused")
    assert "Max retries" not in first


def test_a_connection_error_names_the_host_and_cause_once(destdir: str) -> None:
    port = free_port()
    result = run_cli(["-d", destdir, "--retries", "0", f"http://127.0.0.1:{port}/f.bin"])
    assert result.returncode == 1
    assert lines(result.stderr)[-1] == (
        f"failed http://127.0.0.1:{port}/f.bin: cannot connect to 127.0.0.1:{port}: "
        "connection refused"
    )


def test_singular_and_plural(server: FaultServer, destdir: str) -> None:
    server.add("/f.bin", Resource(make_data(10_000), drop_after=[1_000]))
    result = run_cli(["-d", destdir, server.url("/f.bin")])
    assert result.returncode == 0
    summary = lines(result.stdout)[-1]
    assert summary.startswith("dlmanager: 1 downloaded (9.8 KiB), 0 skipped, 0 failed, 1 retry,")
    ls = run_cli(["cache", "ls", destdir])
    assert "1 file, 9.8 KiB" in ls.stdout


@pytest.mark.parametrize(("typo", "hint"), [("lss", ""), ("cach", "did you mean 'cache'?")])
def test_a_mistyped_command_says_so(typo: str, hint: str) -> None:
    result = run_cli([typo])
    assert result.returncode == 2
    assert f"{typo!r} is not a command" in result.stderr
    assert "URL scheme" not in result.stderr
    assert hint in result.stderr


def test_manifest_comments_and_one_line_errors(
    server: FaultServer, destdir: str, tmp_path: os.PathLike[str]
) -> None:
    server.add("/a.bin", b"a")
    manifest = write(
        os.path.join(os.fspath(tmp_path), "m.txt"),
        textwrap.dedent(
            f"""\
            # builds
            {server.url("/a.bin")} first.bin   # the first one
            {server.url("/a.bin")} first.bin extra words
            """
        ),
    )
    result = run_cli(["-d", destdir, "-i", manifest])
    assert result.returncode == 2
    assert lines(result.stderr) == [
        f"dlmanager: {manifest}:3: too many fields: 4 ('first.bin extra words' after the URL);"
        " a line is URL [NAME] [ALGO:HEX], and a comment starts with ' #'"
    ]
    write(manifest, f"{server.url('/a.bin')} first.bin   # the first one\n")
    assert run_cli(["-d", destdir, "-i", manifest]).returncode == 0
    assert listing(destdir) == ["first.bin"]


def test_max_file_size_errors_name_the_option(server: FaultServer, destdir: str) -> None:
    server.add("/big.bin", make_data(50_000))
    result = run_cli(["-d", destdir, "--max-file-size", "10K", server.url("/big.bin")])
    assert result.returncode == 1
    assert "more than --max-file-size (10240 bytes)" in lines(result.stderr)[-1]
    assert "max_size" not in result.stderr


def test_a_file_another_process_downloaded_is_not_said_downloaded(
    server: FaultServer, destdir: str
) -> None:
    data = make_data(600_000)
    # The first process stalls halfway for a while: the second one meets its lock.
    server.add("/f.bin", Resource(data, stall_after=[300_000], stall_seconds=4))
    url = server.url("/f.bin")
    first = start_cli(["-d", destdir, url, "--timeout", "30"])
    deadline = time.monotonic() + WAIT
    while not temporaries(destdir):
        assert time.monotonic() < deadline, "the first process never started"
        time.sleep(0.02)
    second = start_cli(["-d", destdir, url, "-v"])
    assert second.stderr is not None
    for line in second.stderr:  # -v: the wait is logged
        if "is being downloaded by another process: waiting" in line:
            break
    out, _ = second.communicate(timeout=WAIT)
    _, err = first.communicate(timeout=WAIT)

    assert first.returncode == 0, err
    assert second.returncode == 0
    assert file_lines(out) == [f"skipped {url} (done by another process)"]
    assert len(server.requests_for("/f.bin")) == 2  # the first one's, and its resume
    assert read(os.path.join(destdir, "f.bin")) == data


@pytest.mark.parametrize("option", [["--max-files", "1"], ["--max-size", "20K"]])
def test_every_eviction_is_named(server: FaultServer, destdir: str, option: list[str]) -> None:
    for name in ("notes.txt", "report.pdf"):
        with open(os.path.join(destdir, name), "wb") as handle:
            handle.write(b"mine " * 2000)
        os.utime(os.path.join(destdir, name), (1, 1))  # used long ago
    server.add("/new.bin", make_data(15_000))
    result = run_cli(["-d", destdir, server.url("/new.bin"), *option, "--include-foreign"])
    assert result.returncode == 0
    shown = " ".join(option).replace("20K", "20.0 KiB")
    evicted = sorted(line for line in lines(result.stderr) if line.startswith("evicted "))
    assert evicted == [
        f"evicted notes.txt to stay under {shown}",
        f"evicted report.pdf to stay under {shown}",
    ]
    assert listing(destdir) == ["new.bin"]
