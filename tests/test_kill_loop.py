"""Downloading processes killed (SIGKILL) at random points, again and again.

After every kill the destination directory must be consistent: a file under
its final name is complete and byte-exact, and a temporary file is either a
resumable leftover whose checkpoint claims only bytes it really holds, or one
without checkpoint that no later download trusts. After the loop, one more run
finishes every file correctly and leaves no temporary file behind.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dlmanager.disk import checkpoint
from dlmanager.disk.layout import STATE_DIR, is_part, temporary_fname
from tests.conftest import child_env, listing, read
from tests.server import FaultServer, Resource, make_data

KIB = 1024
#: Seconds any single wait of these tests may take before the test fails.
WAIT = 30.0

CHILD = textwrap.dedent(
    """
    import sys
    from dlmanager import DownloadManager
    from dlmanager.runtime import Runtime
    destdir, interval, urls = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
    # Checkpoints as often as asked, so that short runs leave resumable leftovers.
    runtime = Runtime(checkpoint_interval=interval)
    with DownloadManager(destdir, max_workers=3, connections=3, runtime=runtime,
                         min_split_size=128 * 1024, chunk_size=16 * 1024) as manager:
        for url in urls:
            manager.download(url)
    """
)


class CountingServer(FaultServer):
    """A fault server that wakes waiters whenever it sends body bytes or ends a request."""

    def __init__(self) -> None:
        super().__init__()
        self.changed = threading.Condition()

    def _count_sent(self, count: int) -> None:
        super()._count_sent(count)
        with self.changed:
            self.changed.notify_all()

    def _busy(self, change: int) -> None:
        super()._busy(change)
        with self.changed:
            self.changed.notify_all()

    def wait_sent(self, target: int, child: subprocess.Popen[bytes]) -> None:
        """Wait until *target* body bytes were sent in all, or *child* has exited."""
        deadline = time.monotonic() + WAIT
        with self.changed:
            while self.bytes_sent < target and child.poll() is None:
                assert time.monotonic() < deadline, "the child made no progress"
                self.changed.wait(0.05)  # wakes at once on bytes; polls the child's exit

    def wait_idle(self) -> None:
        """Wait until every request is over (those of a killed child fail on their next write)."""
        with self.changed:
            assert self.changed.wait_for(lambda: self._active == 0, WAIT), "requests hang"


def serve_files(server: FaultServer) -> dict[str, bytes]:
    """Files of every kind, trickled so that a run takes a while."""
    trickle = {"trickle": (4 * KIB, 0.01)}
    files = {
        # split over several connections
        "multi.bin": (make_data(1536 * KIB, seed=1), {}),
        "multi2.bin": (make_data(900 * KIB, seed=2), {}),
        # one resumable stream (too small to split)
        "single.bin": (make_data(240 * KIB, seed=3), {}),
        # ranges ignored by the server: every resume starts over
        "restart.bin": (make_data(300 * KIB, seed=4), {"ignore_range": True}),
        # no announced size: never resumable
        "chunked.bin": (make_data(200 * KIB, seed=5), {"chunked": True}),
        "tiny.bin": (make_data(3 * KIB, seed=6), {}),
    }
    for name, (data, faults) in files.items():
        server.add("/" + name, Resource(data, **{**trickle, **faults}))
    return {name: data for name, (data, _) in files.items()}


def spawn(destdir: str, urls: list[str], interval: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, destdir, str(interval), *urls],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=child_env(),
    )


def check_consistent(destdir: str, files: dict[str, bytes], urls: dict[str, str]) -> int:
    """Assert that *destdir* is consistent; return how many resumable leftovers it holds."""
    resumable = 0
    for name in listing(destdir):
        path = os.path.join(destdir, name)
        if name == STATE_DIR:
            # The killed child's coordination files, removed by the next manager.
            for left in os.listdir(path):
                assert left.endswith((".lock", ".pin", ".rsv", ".rsv.new")), left
            continue
        if name in files:
            assert read(path) == files[name], f"{name} is not the complete file"
            continue
        fname = temporary_fname(name)
        assert fname in files, f"unexpected file {name}"
        if name.endswith(".ckpt"):
            # Written atomically: never torn, even by a kill in the middle.
            assert checkpoint.load(path) is not None, f"torn checkpoint {name}"
        if not is_part(name):
            continue
        ckpt = checkpoint.checkpoint_path(path)
        saved = checkpoint.load(ckpt)
        if saved is None:
            assert not os.path.exists(ckpt)
            continue  # never resumed: removed by the next download of fname
        data, held = files[fname], read(path)
        assert (saved.url, saved.total) == (urls[fname], len(data))
        assert len(held) <= saved.total
        for start, end in saved.ranges:
            assert held[start:end] == data[start:end], f"{name} lacks bytes it claims"
        resumable += saved.received > 0
    return resumable


def run_kill_loop(tmp_path: str, runs: int, seed: int, interval: float, most: int) -> None:
    """Kill *runs* children, each after up to *most* body bytes, then run one to its end.

    :param interval: seconds between two checkpoints in the children
    """
    destdir = os.path.join(tmp_path, "dest")
    rng = random.Random(seed)
    with CountingServer().start() as server:
        files = serve_files(server)
        urls = {name: server.url("/" + name) for name in files}
        url_list = list(urls.values())
        killed_with_leftovers = 0
        for _ in range(runs):
            server.wait_idle()
            child = spawn(destdir, url_list, interval)
            try:
                if rng.random() < 0.1:
                    pass  # killed while it starts up
                else:
                    # Killed after a random amount of the body went out.
                    server.wait_sent(server.bytes_sent + rng.randrange(0, most), child)
            finally:
                child.send_signal(signal.SIGKILL)
                _, err = child.communicate(timeout=WAIT)
            assert child.returncode in (0, -signal.SIGKILL), err.decode(errors="replace")
            if os.path.isdir(destdir):
                killed_with_leftovers += check_consistent(destdir, files, urls) > 0
            if all(os.path.exists(os.path.join(destdir, name)) for name in files):
                for name in rng.sample(sorted(files), 3):  # keep some work for the next runs
                    os.remove(os.path.join(destdir, name))
        # The loop did kill downloads in the middle, and they were resumed.
        assert killed_with_leftovers >= runs // 4, killed_with_leftovers
        assert any("if-range" in request.headers for request in server.requests)

        final = spawn(destdir, url_list, interval)
        _, err = final.communicate(timeout=WAIT * 2)
        assert final.returncode == 0, err.decode(errors="replace")
        for name, data in files.items():
            assert read(os.path.join(destdir, name)) == data, name
        # No temporary file left, and the killed children's lock files are gone.
        assert sorted(listing(destdir)) == sorted(files)


def test_killed_processes_leave_a_consistent_directory(tmp_path: Path) -> None:
    run_kill_loop(os.fspath(tmp_path), runs=20, seed=20240611, interval=0.1, most=1200 * KIB)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_processes_many_times(tmp_path: Path, seed: int) -> None:
    """A few minutes long: ``pytest -m slow`` selects it."""
    run_kill_loop(os.fspath(tmp_path), runs=100, seed=seed, interval=0.1, most=1200 * KIB)
