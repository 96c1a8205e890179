"""The command line: ``dlmanager.cli.main`` in process, and ``python -m dlmanager`` for real."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import pytest

import dlmanager
from dlmanager.cli import main
from tests.conftest import (
    ROOT,
    SUBPROCESS_TIMEOUT,
    child_env,
    listing,
    read,
    run_python,
    start_cli,
    temporaries,
    write,
)
from tests.server import FaultServer, Resource, make_data

TIMEOUT_30 = ["--timeout", "30"]


def lines(text: str) -> list[str]:
    return text.splitlines()


def file_lines(text: str) -> list[str]:
    """The per-file lines of an output, without the ``dlmanager: `` summary."""
    return [line for line in lines(text) if not line.startswith("dlmanager: ")]


def run_cli(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return run_python(["-m", "dlmanager", *args], stdin)


def run_in_ci(
    args: list[str], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m dlmanager ARGS`` to its end as CI does: ``CI=true``, no
    terminal, standard input closed; *env* adds to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "dlmanager", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env={**child_env(), "CI": "true", **(env or {})},
        cwd=ROOT,
        check=False,
    )


# --- in process ----------------------------------------------------------------------------


def test_success_downloads_every_file(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    files = {f"f{i}.bin": make_data(20_000 + i, seed=i) for i in range(3)}
    for name, data in files.items():
        server.add(f"/{name}", data)
    urls = [server.url(f"/{name}") for name in files]

    assert main([*urls, "-d", destdir]) == 0

    out, err = capsys.readouterr()
    for name, data in files.items():
        assert read(os.path.join(destdir, name)) == data
    assert sorted(listing(destdir)) == sorted(files)
    assert temporaries(destdir) == []
    assert err == ""
    out_lines = file_lines(out)
    assert len(out_lines) == len(urls)
    assert lines(out)[-1].startswith("dlmanager: 3 downloaded (58.6 KiB), 0 skipped, 0 failed")
    for url, name in zip(urls, files):
        matching = [line for line in out_lines if url in line]
        assert len(matching) == 1
        assert matching[0].startswith("downloaded ")
        assert os.path.join(destdir, name) in matching[0]


def test_quiet_prints_one_line_per_file_and_no_summary(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(10_000)
    server.add("/a.bin", data)
    server.add("/b.bin", data)
    with open(os.path.join(destdir, "b.bin"), "wb") as handle:
        handle.write(data)

    assert main([server.url("/a.bin"), server.url("/b.bin"), "-d", destdir, "--quiet"]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert [line.split()[:2] for line in lines(out)] == [
        ["skipped", server.url("/b.bin")],
        ["downloaded", server.url("/a.bin")],
    ]
    assert read(os.path.join(destdir, "a.bin")) == data


def test_present_file_is_skipped_and_not_requested(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/here.bin", make_data(5_000, seed=1))
    server.add("/new.bin", make_data(5_000, seed=2))
    old = b"already here"
    with open(os.path.join(destdir, "here.bin"), "wb") as handle:
        handle.write(old)

    assert main([server.url("/here.bin"), server.url("/new.bin"), "-d", destdir]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert server.requests_for("/here.bin") == []
    assert read(os.path.join(destdir, "here.bin")) == old
    assert read(os.path.join(destdir, "new.bin")) == make_data(5_000, seed=2)
    out_lines = file_lines(out)
    assert len(out_lines) == 2
    assert lines(out)[-1].startswith("dlmanager: 1 downloaded (4.9 KiB), 1 skipped, 0 failed")
    (skipped,) = [line for line in out_lines if server.url("/here.bin") in line]
    assert skipped.startswith("skipped ")
    (downloaded,) = [line for line in out_lines if server.url("/new.bin") in line]
    assert downloaded.startswith("downloaded ")


def test_404_fails_and_the_others_are_downloaded(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"g1.bin": make_data(8_000, seed=1), "g2.bin": make_data(9_000, seed=2)}
    for name, data in good.items():
        server.add(f"/{name}", data)
    missing = server.url("/missing.bin")
    urls = [server.url("/g1.bin"), missing, server.url("/g2.bin")]

    assert main([*urls, "-d", destdir]) == 1

    out, err = capsys.readouterr()
    for name, data in good.items():
        assert read(os.path.join(destdir, name)) == data
    assert sorted(listing(destdir)) == sorted(good)
    (failure,) = lines(err)
    assert missing in failure
    assert "404" in failure
    assert len(file_lines(out)) == len(good)
    assert lines(out)[-1].startswith("dlmanager: 2 downloaded (16.6 KiB), 0 skipped, 1 failed")
    assert missing not in out


def test_non_http_url_is_bad_usage_and_nothing_starts(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/ok.bin", make_data(7_000))
    ftp = "ftp://127.0.0.1/file.bin"

    with pytest.raises(SystemExit) as excinfo:
        main([server.url("/ok.bin"), ftp, "-d", destdir])

    assert excinfo.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert ftp in err
    assert "only http and https" in err
    assert "Traceback" not in err
    assert server.requests == []
    assert listing(destdir) == []


def test_input_file_ignores_blank_lines_and_comments(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = {name: make_data(3_000, seed=i) for i, name in enumerate(["x.bin", "y.bin", "z.bin"])}
    for name, data in files.items():
        server.add(f"/{name}", data)
    server.add("/commented.bin", b"must not be downloaded")
    urls_file = write(
        os.path.join(os.fspath(tmp_path), "urls.txt"),
        "# a comment\n"
        f"{server.url('/x.bin')}\n"
        "\n"
        "   \n"
        f"{server.url('/y.bin')}  \n"  # an indented line would list mirrors of x.bin
        f"# {server.url('/commented.bin')}\n"
        f"   #{server.url('/commented.bin')}\n",
    )

    assert main([server.url("/z.bin"), "-i", urls_file, "-d", destdir]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    for name, data in files.items():
        assert read(os.path.join(destdir, name)) == data
    assert sorted(listing(destdir)) == sorted(files)
    assert server.requests_for("/commented.bin") == []
    assert len(file_lines(out)) == len(files)


def test_duplicate_urls_are_downloaded_once(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_data(6_000)
    server.add("/dup.bin", data)
    url = server.url("/dup.bin")
    urls_file = write(os.path.join(os.fspath(tmp_path), "urls.txt"), f"{url}\n{url}\n")

    assert main([url, url, "-i", urls_file, "-d", destdir]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert read(os.path.join(destdir, "dup.bin")) == data
    assert [r.method for r in server.requests_for("/dup.bin")].count("GET") == 1
    assert len(file_lines(out)) == 1


@pytest.mark.parametrize("named", ["derived", "explicit"])
def test_two_urls_for_one_file_name_are_bad_usage(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
    named: str,
) -> None:
    first, second = server.url("/a/same.bin"), server.url("/b/same.bin")
    text = f"{first}\n{second}\n" if named == "derived" else f"{first} x.bin\n{second} x.bin\n"
    manifest = write(os.path.join(os.fspath(tmp_path), "m.txt"), text)
    name = "same.bin" if named == "derived" else "x.bin"

    with pytest.raises(SystemExit) as caught:
        main(["-i", manifest, "-d", destdir])

    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"dlmanager: two URLs for the file name {name!r}: {first} and {second}\n"
    assert server.requests == []
    assert listing(destdir) == []


def test_the_same_file_named_twice_is_downloaded_once_with_its_checksum(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = make_data(3_000)
    server.add("/f.bin", data)
    url = server.url("/f.bin")
    # The same file three ways: derived name, explicit name, with a checksum.
    text = f"{url}\n{url} f.bin\n{url} - sha256:{'0' * 64}\n"
    manifest = write(os.path.join(os.fspath(tmp_path), "m.txt"), text)

    assert main(["-i", manifest, "-d", destdir]) == 1

    # One request, checked against the checksum (which does not match).
    assert [r.method for r in server.requests_for("/f.bin")].count("GET") == 1
    _, err = capsys.readouterr()
    assert "expected 000" in err
    assert listing(destdir) == []


def test_retries_0_fails_on_a_dropped_connection(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/drop.bin", Resource(make_data(50_000), drop_after=[1_000]))
    url = server.url("/drop.bin")

    assert main([url, "-d", destdir, "--retries", "0"]) == 1

    out, err = capsys.readouterr()
    assert file_lines(out) == []
    (failure,) = lines(err)
    assert url in failure
    assert listing(destdir) == []
    assert [r.method for r in server.requests_for("/drop.bin")].count("GET") == 1


def test_default_retries_recover_from_a_dropped_connection(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(50_000)
    server.add("/drop.bin", Resource(data, drop_after=[1_000]))

    assert main([server.url("/drop.bin"), "-d", destdir]) == 0

    out, err = capsys.readouterr()
    # Each retry is told as it happens, without -v, redirected too.
    retry, resume = lines(err)
    assert re.fullmatch(r"retrying drop\.bin in [0-9.]+ s after: body shorter than .*", retry)
    assert resume == "resuming drop.bin at 1000 B"
    assert read(os.path.join(destdir, "drop.bin")) == data
    assert temporaries(destdir) == []
    assert len(file_lines(out)) == 1
    assert "1 retry," in lines(out)[-1]
    assert [r.method for r in server.requests_for("/drop.bin")].count("GET") >= 2


def test_timeout_ends_a_stalled_download(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/stall.bin", Resource(make_data(100_000), stall_after=[1_000]))
    url = server.url("/stall.bin")

    start = time.monotonic()
    status = main([url, "-d", destdir, "--timeout", "0.3", "--retries", "0"])
    elapsed = time.monotonic() - start

    assert status == 1
    assert elapsed < 5.0
    out, err = capsys.readouterr()
    assert file_lines(out) == []
    (failure,) = lines(err)
    assert failure.startswith("failed ")
    assert url in failure
    assert listing(destdir) == []


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ([], "no URL"),
        (["-j", "0"], "--jobs"),
        (["--retries", "-1"], "--retries"),
        (["--timeout", "0"], "--timeout"),
        (["-x", "abc"], "--connections"),
        (["-o", "../escape.bin"], "--output '../escape.bin' is a path (it has a directory part)"),
        (["-o", ".."], "--output: invalid file name '..'"),
        (["-o", "-", "--max-size", "1M"], "-o - writes the body to standard output, and no file"),
        (["-o", "a.bin", "http://127.0.0.1:9/b.bin"], "--output needs exactly one URL"),
        (["--checksum", "sha256:00", "http://127.0.0.1:9/b.bin"], "--checksum needs exactly"),
        (["--max-size", "lots"], "not a size: 'lots'"),
        (["--max-size", "0"], "more than 0"),
        (["--max-files", "0"], "--max-files"),
        (["--json", "--quiet"], "not allowed with"),
    ],
)
def test_bad_usage_exits_2(
    server: FaultServer,
    destdir: str,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    problem: str,
) -> None:
    server.add("/f.bin", make_data(1_000))
    urls = [server.url("/f.bin")] if options else []

    with pytest.raises(SystemExit) as excinfo:
        main([*urls, "-d", destdir, *options])

    assert excinfo.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert problem in err
    # argparse's own errors show the usage; the checks of what it cannot
    # check are one line.
    if problem.startswith(("--output", "--checksum", "-o -")):
        assert err == f"dlmanager: {lines(err)[0].removeprefix('dlmanager: ')}\n"
    else:
        assert "usage:" in err
    assert server.requests == []
    assert listing(destdir) == []


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_input_file_exits_2(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    server.add("/f.bin", make_data(1_000))
    listing = os.path.join(os.fspath(tmp_path), "no-such-list.txt")
    if kind == "directory":
        listing = os.fspath(tmp_path)

    with pytest.raises(SystemExit) as excinfo:
        main([server.url("/f.bin"), "-i", listing, "-d", destdir])

    assert excinfo.value.code == 2
    _, err = capsys.readouterr()
    assert listing in err
    assert "cannot read" in err
    assert server.requests == []


def test_input_file_that_is_not_utf8_exits_2(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    listing = os.path.join(os.fspath(tmp_path), "binary.txt")
    with open(listing, "wb") as handle:
        handle.write(b"\xff\xfe\x00garbage\n")

    with pytest.raises(SystemExit) as excinfo:
        main([server.url("/f.bin"), "-i", listing, "-d", destdir])

    assert excinfo.value.code == 2
    _, err = capsys.readouterr()
    assert listing in err


def test_dest_that_is_a_file_exits_2(
    server: FaultServer,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.add("/f.bin", make_data(1_000))
    not_a_dir = os.path.join(os.fspath(tmp_path), "plain-file")
    with open(not_a_dir, "wb") as handle:
        handle.write(b"content")

    assert main([server.url("/f.bin"), "-d", not_a_dir]) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert not_a_dir in err
    assert len(lines(err)) == 1
    assert read(not_a_dir) == b"content"
    assert server.requests == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])

    assert excinfo.value.code == 0
    out, _ = capsys.readouterr()
    assert out == f"dlmanager {dlmanager.__version__}\n"


# --- the real entry point --------------------------------------------------------------------


def test_entry_point_downloads(server: FaultServer, destdir: str) -> None:
    data = make_data(30_000)
    server.add("/e.bin", data)
    url = server.url("/e.bin")

    result = run_cli([url, "-d", destdir])

    assert result.returncode == 0, result.stderr
    assert read(os.path.join(destdir, "e.bin")) == data
    assert result.stderr == ""
    (line,) = file_lines(result.stdout)
    assert line.startswith("downloaded ")
    assert url in line


def test_entry_point_reads_urls_from_stdin(server: FaultServer, destdir: str) -> None:
    files = {"s1.bin": make_data(4_000, seed=1), "s2.bin": make_data(4_000, seed=2)}
    for name, data in files.items():
        server.add(f"/{name}", data)
    stdin = "# from stdin\n" + "".join(f"{server.url('/' + name)}\n\n" for name in files)

    result = run_cli(["-i", "-", "-d", destdir], stdin=stdin)

    assert result.returncode == 0, result.stderr
    for name, data in files.items():
        assert read(os.path.join(destdir, name)) == data
    assert len(file_lines(result.stdout)) == len(files)


def test_entry_point_404(server: FaultServer, destdir: str) -> None:
    url = server.url("/nothing.bin")

    result = run_cli([url, "-d", destdir])

    assert result.returncode == 1
    (failure,) = lines(result.stderr)
    assert url in failure
    assert "404" in failure
    assert listing(destdir) == []


@pytest.mark.parametrize("served", ["the same file", "nothing (404)"])
def test_a_mistyped_checksum_keeps_the_file_already_there(
    server: FaultServer, destdir: str, served: str
) -> None:
    good = make_data(20_000, seed=5)
    path = os.path.join(destdir, "f.bin")
    with open(path, "wb") as handle:
        handle.write(good)
    before = os.stat(path)
    if served == "the same file":
        server.add("/f.bin", good)
    mistyped = "sha256:" + hashlib.sha256(good).hexdigest()[:-1] + "0"

    result = run_cli([server.url("/f.bin"), "-d", destdir, "--checksum", mistyped])

    assert result.returncode == 1
    assert f"; the file already at {path} was left as it was\n" in result.stderr
    assert read(path) == good
    assert os.stat(path).st_ino == before.st_ino
    assert listing(destdir) == ["f.bin"]


def test_entry_point_help() -> None:
    result = run_cli(["--help"])

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: dlmanager")
    for command in ("get", "cache", "demo"):
        assert f"    {command} " in result.stdout


def test_entry_point_get_help() -> None:
    result = run_cli(["get", "--help"])

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: dlmanager get")
    for option in ("--retries", "--max-size", "--max-files", "--json", "--output"):
        assert option in result.stdout


# --- Ctrl-C ----------------------------------------------------------------------------------


def test_ctrl_c_exits_130_and_keeps_what_was_received_for_the_rerun(
    server: FaultServer, destdir: str
) -> None:
    data = make_data(400_000)
    server.add("/big.bin", Resource(data, stall_after=[150_000]))
    command = [server.url("/big.bin"), "-d", destdir, "-x", "1", *TIMEOUT_30]
    process = start_cli(command)
    try:
        for _ in range(200):  # 10 s at most
            if temporaries(destdir) and server.bytes_sent >= 150_000:
                break
            if process.poll() is not None:
                pytest.fail(f"dlmanager exited early ({process.returncode})")
            time.sleep(0.05)
        else:
            pytest.fail("the download never started writing its temporary file")

        process.send_signal(signal.SIGINT)
        start = time.monotonic()
        out, err = process.communicate(timeout=10)
        elapsed = time.monotonic() - start
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130, err
    assert elapsed < 10
    assert "Traceback" not in err
    assert out == ""
    assert lines(err)[-1] == (
        "dlmanager: interrupted; finished before: none; 1 cancelled; 1 partial file kept "
        "(hidden): run the same command again to resume"
    )
    # Hidden, resumable: the temporary file and its checkpoint, nothing else.
    kept = temporaries(destdir)
    assert sorted(listing(destdir)) == kept
    assert [name.rsplit(".", 1)[-1] for name in kept] == ["ckpt", "part"]

    server.add("/big.bin", data)  # the rerun meets a healthy server
    sent = server.bytes_sent
    result = run_cli(command)

    assert result.returncode == 0, result.stderr
    assert read(os.path.join(destdir, "big.bin")) == data
    assert listing(destdir) == ["big.bin"]
    # Only the missing bytes were sent again.
    assert server.bytes_sent - sent == len(data) - 150_000
    assert (server.requests_for("/big.bin")[-1].range or "").startswith("bytes=150000-")
