"""The scripts in examples/, run as a user would: ``python examples/NAME.py ...``."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import IO

import pytest

from tests.conftest import ROOT, child_env, listing, parts, read, run_python, temporaries
from tests.server import FaultServer, Resource, make_data

EXAMPLES = os.path.join(ROOT, "examples")
SUBPROCESS_TIMEOUT = 30
LINE_TIMEOUT = 10


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, os.path.join(EXAMPLES, name), *args]


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_python([os.path.join(EXAMPLES, name), *args], timeout=SUBPROCESS_TIMEOUT)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def gets(server: FaultServer, path: str) -> int:
    return sum(request.method == "GET" for request in server.requests_for(path))


# --- prefetch_builds.py ----------------------------------------------------------------------


def serve_builds(server: FaultServer, count: int, size: int) -> dict[str, bytes]:
    builds = {f"build-{i}.tar.bz2": make_data(size + i, seed=i) for i in range(count)}
    for name, data in builds.items():
        server.add(f"/{name}", data)
    return builds


def test_prefetch_builds_tests_every_build_downloaded_once(
    server: FaultServer, destdir: str
) -> None:
    builds = serve_builds(server, 3, 300_000)

    result = run_example(
        "prefetch_builds.py", "-d", destdir, *(server.url(f"/{n}") for n in builds)
    )

    assert result.returncode == 0, result.stderr
    tested = [line for line in result.stdout.splitlines() if line.startswith("tested ")]
    assert tested == [
        f"tested {name}: {len(data)} bytes, sha256 {sha256(data)}" for name, data in builds.items()
    ]
    assert sorted(listing(destdir)) == sorted(builds)
    for name, data in builds.items():
        assert read(os.path.join(destdir, name)) == data
        # The prefetch and the harness's own request were one transfer.
        assert gets(server, f"/{name}") == 1
    assert temporaries(destdir) == []


def test_prefetch_builds_under_a_size_limit(server: FaultServer, destdir: str) -> None:
    builds = serve_builds(server, 4, 200_000)
    cap = 500_000

    result = run_example(
        "prefetch_builds.py",
        *("-d", destdir, "--size-limit", str(cap)),
        *(server.url(f"/{n}") for n in builds),
    )

    assert result.returncode == 0, result.stderr
    tested = [line for line in result.stdout.splitlines() if line.startswith("tested ")]
    assert tested == [
        f"tested {name}: {len(data)} bytes, sha256 {sha256(data)}" for name, data in builds.items()
    ]
    # The two most recent builds stay (file_limit=2), the older ones were evicted.
    kept = sorted(builds)[-2:]
    assert sorted(listing(destdir)) == kept
    assert sum(os.path.getsize(os.path.join(destdir, name)) for name in kept) < cap
    for name in kept:
        assert read(os.path.join(destdir, name)) == builds[name]


# --- cancel_in_finally.py --------------------------------------------------------------------


def pump(stream: IO[str], lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def next_line(lines: queue.Queue[str]) -> str:
    try:
        return lines.get(timeout=LINE_TIMEOUT)
    except queue.Empty:
        pytest.fail(f"the example printed nothing within {LINE_TIMEOUT}s")


def test_cancel_in_finally_ctrl_c_leaves_no_partial_file(
    server: FaultServer, destdir: str, tmp_path: os.PathLike[str]
) -> None:
    names = ["a.bin", "b.bin"]
    for seed, name in enumerate(names):
        server.add(f"/{name}", Resource(make_data(200_000, seed=seed), stall_after=[50_000]))
    stderr_path = os.path.join(os.fspath(tmp_path), "stderr.txt")
    lines: queue.Queue[str] = queue.Queue()
    with open(stderr_path, "w+", encoding="utf-8") as stderr:
        with subprocess.Popen(
            example("cancel_in_finally.py", "-d", destdir, *(server.url(f"/{n}") for n in names)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=child_env(),
            cwd=ROOT,
        ) as process:
            assert process.stdout is not None
            reader = threading.Thread(target=pump, args=(process.stdout, lines), daemon=True)
            reader.start()
            try:
                announced = sorted(next_line(lines) for _ in names)
                assert announced == [f"downloading {name}" for name in names]
                # Both transfers are in flight, each with its temporary file.
                assert len(parts(destdir)) == 2

                process.send_signal(signal.SIGINT)
                returncode = process.wait(timeout=SUBPROCESS_TIMEOUT)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            reader.join(LINE_TIMEOUT)
        stderr.seek(0)
        err = stderr.read()

    assert returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in err
    assert lines.empty()  # no "done" line
    assert temporaries(destdir) == []
    assert listing(destdir) == []


def test_cancel_in_finally_error_cancels_the_others(server: FaultServer, destdir: str) -> None:
    server.add("/slow.bin", Resource(make_data(200_000), stall_after=[50_000]))
    missing = server.url("/missing.bin")

    result = run_example("cancel_in_finally.py", "-d", destdir, missing, server.url("/slow.bin"))

    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("failed: ")
    assert "404" in result.stderr
    assert "done" not in result.stdout
    assert temporaries(destdir) == []
    assert listing(destdir) == []


def test_cancel_in_finally_success(server: FaultServer, destdir: str) -> None:
    files = {f"f{i}.bin": make_data(50_000, seed=i) for i in range(3)}
    for name, data in files.items():
        server.add(f"/{name}", data)

    result = run_example(
        "cancel_in_finally.py", "-d", destdir, *(server.url(f"/{n}") for n in files)
    )

    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if line.startswith("done ")] == [
        f"done {name}" for name in files
    ]
    for name, data in files.items():
        assert read(os.path.join(destdir, name)) == data
    assert sorted(listing(destdir)) == sorted(files)


# --- cap_cache.py ----------------------------------------------------------------------------


def test_cap_cache_stays_under_the_cap_and_keeps_the_pinned_reference(
    server: FaultServer, destdir: str
) -> None:
    names = ["reference.zip", "b1.zip", "b2.zip", "b3.zip"]
    files = {name: make_data(100_000, seed=i) for i, name in enumerate(names)}
    for name, data in files.items():
        server.add(f"/{name}", data)
    cap = 250_000

    result = run_example(
        "cap_cache.py",
        *("-d", destdir, "--size", str(cap)),
        *(server.url(f"/{n}") for n in names),
    )

    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    # The reference was the least recently used file from b2 on, but it was pinned.
    assert "  evicted b1.zip (100000 bytes)" in out
    assert "  evicted b2.zip (100000 bytes)" in out
    assert not any("evicted reference.zip" in line for line in out)
    assert sorted(listing(destdir)) == ["b3.zip", "reference.zip"]
    for name in ("b3.zip", "reference.zip"):
        assert read(os.path.join(destdir, name)) == files[name]
    assert sum(os.path.getsize(os.path.join(destdir, n)) for n in listing(destdir)) < cap
    assert gets(server, "/reference.zip") == 1
    assert temporaries(destdir) == []


# --- retrieve_dataset.py ---------------------------------------------------------------------


@pytest.fixture
def dataset(server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> tuple[str, bytes]:
    monkeypatch.delenv("DLMANAGER_CACHE_MAX_SIZE", raising=False)
    data = make_data(150_000, seed=7)
    server.add("/data/train.csv.gz", data)
    return server.url("/data/train.csv.gz"), data


def test_retrieve_dataset_downloads_once_then_uses_the_cache(
    server: FaultServer, destdir: str, dataset: tuple[str, bytes]
) -> None:
    url, data = dataset
    checksum = f"sha256:{sha256(data)}"

    first = run_example("retrieve_dataset.py", url, "--checksum", checksum, "--cache-dir", destdir)
    again = run_example("retrieve_dataset.py", url, "--checksum", checksum, "--cache-dir", destdir)

    assert first.returncode == 0, first.stderr
    assert again.returncode == 0, again.stderr
    path = first.stdout.strip()
    assert again.stdout.strip() == path
    assert os.path.dirname(path) == destdir
    assert path.endswith("-train.csv.gz")
    assert read(path) == data
    assert gets(server, "/data/train.csv.gz") == 1
    assert listing(destdir) == [os.path.basename(path)]

    stale = run_example("retrieve_dataset.py", url, "--cache-dir", destdir, "--max-age", "0")

    assert stale.returncode == 0, stale.stderr
    assert stale.stdout.strip() == path
    # One conditional request, answered 304: the copy was kept.
    [request] = server.requests_for("/data/train.csv.gz")[1:]
    assert "if-none-match" in request.headers
    assert read(path) == data


def test_retrieve_dataset_with_a_wrong_checksum_fails_and_keeps_the_copy(
    destdir: str, dataset: tuple[str, bytes]
) -> None:
    url, data = dataset
    path = run_example("retrieve_dataset.py", url, "--cache-dir", destdir).stdout.strip()

    result = run_example(
        "retrieve_dataset.py", url, "--checksum", "sha256:" + "0" * 64, "--cache-dir", destdir
    )

    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("failed: ")
    assert "left as it was" in result.stderr
    assert "Traceback" not in result.stderr
    assert read(path) == data
    assert temporaries(destdir) == []
