"""``dlmanager get``: names, manifests, size limits, revalidation, JSON, logging, bars, Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from dlmanager.cli import main
from tests.conftest import (
    ROOT,
    SUBPROCESS_TIMEOUT,
    child_env,
    listing,
    read,
    start_cli,
    temporaries,
    write,
)
from tests.server import CHANGED_LAST_MODIFIED, FaultServer, Resource, make_data, strong_etag
from tests.test_cli import file_lines, lines, run_in_ci


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# --- names and manifests ----------------------------------------------------------------


def test_output_names_the_file(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(9_000)
    server.add("/download?id=7", data)

    assert main([server.url("/download?id=7"), "-o", "build.zip", "-d", destdir]) == 0

    assert listing(destdir) == ["build.zip"]
    assert read(os.path.join(destdir, "build.zip")) == data
    (line,) = file_lines(capsys.readouterr().out)
    assert line.startswith(f"downloaded {server.url('/download?id=7')} -> ")
    assert os.path.join(destdir, "build.zip") in line


def test_manifest_gives_names_and_checksums(
    server: FaultServer, destdir: str, tmp_path: os.PathLike[str]
) -> None:
    first, second, third = make_data(5_000, seed=1), make_data(6_000, seed=2), b"third"
    server.add("/get?f=1", first)
    server.add("/get?f=2", second)
    server.add("/files/third.txt", third)
    manifest = write(
        os.path.join(os.fspath(tmp_path), "manifest.txt"),
        "# url  name  checksum\n"
        f"{server.url('/get?f=1')}  one.bin  {sha256(first)}\n"
        f"{server.url('/get?f=2')}\ttwo.bin\n"
        f"{server.url('/files/third.txt')} - {sha256(third)}\n",
    )

    assert main(["-i", manifest, "-d", destdir]) == 0

    assert sorted(listing(destdir)) == ["one.bin", "third.txt", "two.bin"]
    assert read(os.path.join(destdir, "one.bin")) == first
    assert read(os.path.join(destdir, "two.bin")) == second


def test_manifest_checksum_mismatch_fails_that_file_only(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.add("/good.bin", make_data(4_000, seed=1))
    server.add("/bad.bin", make_data(4_000, seed=2))
    wrong = sha256(b"something else")
    manifest = write(
        os.path.join(os.fspath(tmp_path), "m.txt"),
        f"{server.url('/good.bin')}\n{server.url('/bad.bin')} bad.bin {wrong}\n",
    )

    assert main(["-i", manifest, "-d", destdir]) == 1

    assert listing(destdir) == ["good.bin"]
    assert temporaries(destdir) == []
    (failure,) = lines(capsys.readouterr().err)
    assert failure.startswith(f"failed {server.url('/bad.bin')}: ")
    assert "sha256" in failure


def test_invalid_manifest_line_exits_2_before_anything_starts(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.add("/a.bin", make_data(1_000))
    manifest = write(
        os.path.join(os.fspath(tmp_path), "m.txt"),
        f"{server.url('/a.bin')}\n\n{server.url('/a.bin')} ../../etc/passwd\n",
    )

    with pytest.raises(SystemExit) as excinfo:
        main(["-i", manifest, "-d", destdir])

    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert f"{manifest}:3: invalid file name '../../etc/passwd'" in err
    assert server.requests == []
    assert listing(destdir) == []


def test_two_urls_for_one_name_is_bad_usage(
    server: FaultServer,
    destdir: str,
    tmp_path: os.PathLike[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    manifest = write(
        os.path.join(os.fspath(tmp_path), "m.txt"),
        f"{server.url('/a.bin')} same.bin\n{server.url('/b.bin')} same.bin\n",
    )

    with pytest.raises(SystemExit) as excinfo:
        main(["-i", manifest, "-d", destdir])

    assert excinfo.value.code == 2
    assert "two URLs for the file name 'same.bin'" in capsys.readouterr().err


# --- size limits -----------------------------------------------------------------------


def test_max_size_evicts_the_least_recently_used(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    names = [f"f{i}.bin" for i in range(5)]
    for i, name in enumerate(names):
        server.add(f"/{name}", make_data(40_000, seed=i))
    urls = [server.url(f"/{name}") for name in names]

    # One at a time, so that the order of use is the order of the URLs.
    assert main([*urls, "-d", destdir, "-j", "1", "--max-size", "100K"]) == 0

    kept = sorted(listing(destdir))
    assert kept == names[-2:]
    assert sum(os.path.getsize(os.path.join(destdir, n)) for n in kept) < 100 * 1024
    out = capsys.readouterr().out
    assert "5 downloaded" in lines(out)[-1]
    assert "3 evicted" in lines(out)[-1]


def test_max_files_keeps_that_many(server: FaultServer, destdir: str) -> None:
    names = [f"g{i}.bin" for i in range(4)]
    for i, name in enumerate(names):
        server.add(f"/{name}", make_data(1_000, seed=i))

    status = main(
        [server.url(f"/{n}") for n in names] + ["-d", destdir, "-j", "1", "--max-files", "2"]
    )

    assert status == 0
    assert sorted(listing(destdir)) == names[-2:]


def own_file(directory: str, name: str, size: int, used: float) -> str:
    """A user's own file of *size* bytes, last used *used* seconds ago."""
    path = write(os.path.join(directory, name), "u" * size)
    os.utime(path, (time.time() - used, time.time() - used))
    return path


def test_max_size_never_evicts_a_users_own_file(server: FaultServer, destdir: str) -> None:
    mine = own_file(destdir, "mine.iso", 150_000, used=3600)  # the oldest, and the biggest
    names = [f"f{i}.bin" for i in range(4)]
    for i, name in enumerate(names):
        server.add(f"/{name}", make_data(40_000, seed=i))
    urls = [server.url(f"/{name}") for name in names]

    result = run_in_ci([*urls, "-d", destdir, "-j", "1", "--max-size", "100K"])

    assert result.returncode == 0, result.stderr
    assert sorted(listing(destdir)) == ["f2.bin", "f3.bin", "mine.iso"], result.stderr
    assert read(mine) == b"u" * 150_000
    evicted = [line.split()[1] for line in lines(result.stderr) if line.startswith("evicted ")]
    assert evicted == ["f0.bin", "f1.bin"], result.stderr


def test_max_size_include_foreign_evicts_a_users_own_file(
    server: FaultServer, destdir: str
) -> None:
    own_file(destdir, "mine.iso", 150_000, used=3600)
    names = [f"f{i}.bin" for i in range(4)]
    for i, name in enumerate(names):
        server.add(f"/{name}", make_data(40_000, seed=i))
    urls = [server.url(f"/{name}") for name in names]

    result = run_in_ci([*urls, "-d", destdir, "-j", "1", "--max-size", "100K", "--include-foreign"])

    assert result.returncode == 0, result.stderr
    assert sorted(listing(destdir)) == ["f2.bin", "f3.bin"], result.stderr
    evicted = [line.split()[1] for line in lines(result.stderr) if line.startswith("evicted ")]
    assert evicted[0] == "mine.iso", result.stderr


# --- revalidation ----------------------------------------------------------------------

OLD = make_data(50_000, seed=1)
NEW = make_data(60_000, seed=2)


def change(resource: Resource) -> None:
    resource.data = NEW
    resource.etag = strong_etag(NEW)
    resource.last_modified = CHANGED_LAST_MODIFIED


@pytest.fixture
def there(server: FaultServer, destdir: str) -> Resource:
    """``/f.bin``, downloaded once into *destdir* by the command."""
    resource = server.add("/f.bin", Resource(OLD))
    result = run_in_ci([server.url("/f.bin"), "-d", destdir])
    assert result.returncode == 0, result.stderr
    assert len(server.requests_for("/f.bin")) == 1
    return resource


def test_revalidate_gets_the_new_version_in_one_request(
    server: FaultServer, destdir: str, there: Resource
) -> None:
    change(there)

    result = run_in_ci([server.url("/f.bin"), "-d", destdir, "--revalidate"])

    assert result.returncode == 0, result.stderr
    assert read(os.path.join(destdir, "f.bin")) == NEW
    requests = server.requests_for("/f.bin")
    assert len(requests) == 2
    assert requests[1].headers.get("if-none-match") == strong_etag(OLD)
    (line,) = file_lines(result.stdout)
    assert line.startswith(f"downloaded {server.url('/f.bin')} -> ")
    assert lines(result.stdout)[-1].startswith("dlmanager: 1 downloaded (58.6 KiB), 0 skipped,")


def test_revalidate_reports_an_unchanged_file_up_to_date(
    server: FaultServer, destdir: str, there: Resource
) -> None:
    sent = server.bytes_sent

    result = run_in_ci([server.url("/f.bin"), "-d", destdir, "--revalidate"])

    assert result.returncode == 0, result.stderr
    assert len(server.requests_for("/f.bin")) == 2  # one conditional request
    assert server.bytes_sent == sent  # a 304: no body
    assert read(os.path.join(destdir, "f.bin")) == OLD
    assert file_lines(result.stdout) == [
        f"up to date {server.url('/f.bin')} (not modified on the server)"
    ]
    assert lines(result.stdout)[-1].startswith(
        "dlmanager: 0 downloaded (0 B), 0 skipped, 1 up to date, 0 failed in "
    )

    result = run_in_ci([server.url("/f.bin"), "-d", destdir, "--revalidate", "--json"])

    assert result.returncode == 0, result.stderr
    (outcome,) = map(json.loads, lines(result.stdout))
    assert outcome["status"] == "not_modified"
    assert outcome["size"] == len(OLD)
    assert outcome["reason"] == "not modified on the server"
    assert "1 up to date" in result.stderr


def test_max_age_uses_a_fresh_file_without_a_request(
    server: FaultServer, destdir: str, there: Resource
) -> None:
    change(there)

    result = run_in_ci([server.url("/f.bin"), "-d", destdir, "--max-age", "3600"])

    assert result.returncode == 0, result.stderr
    assert len(server.requests_for("/f.bin")) == 1  # none more
    assert read(os.path.join(destdir, "f.bin")) == OLD
    (line,) = file_lines(result.stdout)
    assert re.fullmatch(
        rf"skipped {re.escape(server.url('/f.bin'))} \(already in .*, validated \d+s ago\)", line
    )

    result = run_in_ci([server.url("/f.bin"), "-d", destdir, "--max-age", "0"])

    assert result.returncode == 0, result.stderr
    assert len(server.requests_for("/f.bin")) == 2  # too old: revalidated
    assert read(os.path.join(destdir, "f.bin")) == NEW


def test_up_to_date_on_a_terminal(server: FaultServer, destdir: str, there: Resource) -> None:
    status, output = run_in_terminal([server.url("/f.bin"), "-d", destdir, "--revalidate"])

    assert status == 0, output
    assert "up to date f.bin  (not modified on the server)" in output
    assert "1 up to date" in output


@pytest.mark.parametrize("bad", ["-1", "soon", "inf"])
def test_a_bad_max_age_is_bad_usage(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["http://127.0.0.1:9/f.bin", f"--max-age={bad}"])

    assert excinfo.value.code == 2
    assert "--max-age" in capsys.readouterr().err


# --- JSON and logging ------------------------------------------------------------------


def test_json_prints_one_object_per_file(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(12_345)
    server.add("/new.bin", data)
    server.add("/old.bin", b"x")
    with open(os.path.join(destdir, "old.bin"), "wb") as handle:
        handle.write(b"here")
    urls = [server.url("/new.bin"), server.url("/old.bin"), server.url("/missing.bin")]

    assert main([*urls, "-d", destdir, "--json"]) == 1

    out, err = capsys.readouterr()
    results = {r["url"]: r for r in map(json.loads, lines(out))}
    assert set(results) == set(urls)
    new, old, missing = (results[url] for url in urls)
    assert new["status"] == "downloaded"
    assert new["size"] == len(data)
    assert new["path"] == os.path.join(destdir, "new.bin")
    assert new["error"] is None
    assert old["status"] == "skipped"
    assert old["size"] == 4
    assert "already in" in old["reason"]
    assert missing["status"] == "failed"
    assert missing["http_status"] == 404
    assert missing["error"] == "HTTPStatusError"
    assert "404" in missing["reason"]
    assert "1 downloaded" in err
    assert f"failed {server.url('/missing.bin')}" in err


def test_verbose_logs_retries_with_the_url(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data(60_000)
    server.add("/drop.bin", Resource(data, drop_after=[10_000]))
    url = server.url("/drop.bin")

    assert main([url, "-d", destdir, "-v", "-x", "1"]) == 0

    err = capsys.readouterr().err
    info = [line for line in lines(err) if line.startswith("dlmanager: INFO: ")]
    assert any("retrying" in line.lower() and url in line for line in info), err
    assert any("resuming" in line.lower() and url in line for line in info), err
    assert read(os.path.join(destdir, "drop.bin")) == data


def test_without_verbose_nothing_is_logged(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/drop.bin", Resource(make_data(60_000), drop_after=[10_000]))

    assert main([server.url("/drop.bin"), "-d", destdir]) == 0

    # The retry and the resume are told in a line each, but no log record is.
    err = capsys.readouterr().err
    assert [line.split()[0] for line in lines(err)] == ["retrying", "resuming"]
    assert "INFO" not in err


def test_quiet_tells_no_retry(
    server: FaultServer, destdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    server.add("/drop.bin", Resource(make_data(60_000), drop_after=[10_000]))

    assert main([server.url("/drop.bin"), "-d", destdir, "--quiet"]) == 0

    assert capsys.readouterr().err == ""


# --- a real terminal and a real Ctrl-C -------------------------------------------------


def run_in_terminal(args: list[str]) -> tuple[int, str]:
    """Run ``python -m dlmanager ARGS`` with a pseudo-terminal as standard output."""
    master, slave = pty.openpty()
    env = {**child_env(), "COLUMNS": "100", "TERM": "xterm"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dlmanager", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    os.close(slave)
    output = bytearray()
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
            elif process.poll() is not None:
                break
        status = process.wait(timeout=SUBPROCESS_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
        assert process.stderr is not None
        process.stderr.close()
    # Without the terminal's control sequences (colours, cursor moves).
    return status, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))


def test_bars_on_a_terminal(server: FaultServer, destdir: str) -> None:
    big = make_data(3_000_000, seed=1)
    server.add("/big.bin", Resource(big, trickle=(200_000, 0.05), trickle_after=0))
    server.add("/small.bin", make_data(1_000, seed=2))

    status, output = run_in_terminal(
        [server.url("/big.bin"), server.url("/small.bin"), "-d", destdir, "-x", "1"]
    )

    assert status == 0, output
    assert read(os.path.join(destdir, "big.bin")) == big
    assert "total" in output  # the total bar
    assert "━" in output  # bars were drawn
    assert "MiB/s" in output or "kB/s" in output or "MB/s" in output  # with a speed
    assert "done" in output and "big.bin" in output
    assert "dlmanager: 2 downloaded" in output  # the summary after the bars


def test_ctrl_c_prints_what_finished(server: FaultServer, destdir: str) -> None:
    server.add("/small.bin", make_data(2_000))
    server.add("/stuck.bin", Resource(make_data(200_000), stall_after=[50_000]))
    urls = [server.url("/small.bin"), server.url("/stuck.bin")]
    process = start_cli([*urls, "-d", destdir, "--timeout", "30"])
    try:
        for _ in range(200):  # 10 s at most
            if "small.bin" in listing(destdir) and server.bytes_sent >= 52_000:
                break
            assert process.poll() is None, "dlmanager exited early"
            time.sleep(0.05)
        else:
            pytest.fail("the downloads never got going")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted; finished before: small.bin; 1 cancelled; 1 partial file kept" in err
    assert file_lines(out) == [line for line in file_lines(out) if "small.bin" in line]
    # The stuck file's bytes are kept, hidden, for the next run to resume.
    assert sorted(listing(destdir)) == [*temporaries(destdir), "small.bin"]
    assert len(temporaries(destdir)) == 2
