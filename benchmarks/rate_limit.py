#!/usr/bin/env python3
"""Measure how closely dlmanager keeps to a bandwidth limit (``max_rate=``).

Run from a checkout as ``python benchmarks/rate_limit.py`` (``--quick`` for a
variant of a few seconds, ``--help`` for the options). The script serves a
file with ``benchutil.start_server`` (nginx when installed, else a Python
server; its unlimited location), then, in this process, downloads it under
a limit in these cases:

* one download, one connection, ``Download(max_rate=R)``;
* one download, four connections sharing ``max_rate=R``;
* three downloads of a manager, ``DownloadManager(max_rate=R)`` for their total;
* one connection reading whole 256 KiB chunks instead of pieces (what the
  limit did before it read pieces; for comparison).

It samples the bytes received every 10 ms and prints, for each case, the
rate measured over each window (5 s; 2 s with ``--quick``) after the start,
its error against the target, and the largest amount received in any
0.25 s, as a multiple of a quarter second's worth (1.0 is perfectly smooth;
the first window includes the initial burst of a quarter second's worth).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchutil import start_server

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(REPO, "dlmanager", "__init__.py")) and REPO not in sys.path:
    sys.path.insert(0, REPO)  # this checkout's dlmanager, not an installed copy

from dlmanager import Download, DownloadManager  # noqa: E402
from dlmanager.rate import TokenBucket  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
SAMPLE = 0.01
SMOOTH = 0.25


def sample(received: Callable[[], int], seconds: float) -> list[tuple[float, int]]:
    """``(time, bytes)`` every :data:`SAMPLE` seconds for *seconds*."""
    start = time.monotonic()
    points = [(0.0, received())]
    while points[-1][0] < seconds:
        time.sleep(SAMPLE)
        points.append((time.monotonic() - start, received()))
    return points


def at(points: list[tuple[float, int]], moment: float) -> int:
    """The bytes received at *moment* (the last sample not after it)."""
    got = 0
    for when, size in points:
        if when > moment:
            break
        got = size
    return got


def report(name: str, rate: int, points: list[tuple[float, int]], window: float, n: int) -> None:
    rates = [(at(points, (i + 1) * window) - at(points, i * window)) / window for i in range(n)]
    quarter = rate * SMOOTH
    steps = int(n * window / SMOOTH)
    burst = max(at(points, (i + 1) * SMOOTH) - at(points, i * SMOOTH) for i in range(1, steps))
    cells = "  ".join(f"{r / MIB:6.3f} ({(r - rate) / rate * 100:+5.1f}%)" for r in rates)
    print(f"{name:<34} {rate / MIB:6.3f}  {cells}  {burst / quarter:4.2f}")


@contextmanager
def running(downloads: list[Download]) -> Iterator[Callable[[], int]]:
    for download in downloads:
        download.start()
    try:
        yield lambda: sum(download.received for download in downloads)
    finally:
        for download in downloads:
            download.cancel()
        for download in downloads:
            download.join()


def case_download(url: str, dest: str, rate: int, connections: int, seconds: float) -> list:
    download = Download(url, os.path.join(dest, f"c{connections}.bin"), max_rate=rate,
                        connections=connections, min_split_size=MIB)  # fmt: skip
    with running([download]) as received:
        return sample(received, seconds)


def case_manager(url: str, dest: str, rate: int, seconds: float) -> list:
    with DownloadManager(dest, max_rate=rate, connections=1) as manager:
        downloads = [manager.download(url, f"m{n}.bin") for n in range(3)]
        started = [d for d in downloads if d is not None]
        try:
            return sample(lambda: sum(d.received for d in started), seconds)
        finally:
            manager.cancel()


def whole(url: str, dest: str, rate: int, seconds: float) -> list:
    piece_size = TokenBucket.piece_size
    TokenBucket.piece_size = lambda self, largest: largest  # type: ignore[method-assign]
    try:
        return case_download(url, dest, rate, 1, seconds)
    finally:
        TokenBucket.piece_size = piece_size  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one 2 s window per case")
    parser.add_argument(
        "--rate", type=int, default=None, help="bytes per second (1 MiB; --quick: 512 KiB)"
    )
    parser.add_argument("--windows", type=int, default=None, help="windows per case (default 3)")
    parser.add_argument("--server", choices=["auto", "nginx", "python"], default="auto")
    args = parser.parse_args(argv)
    window = 2.0 if args.quick else 5.0
    n = args.windows or (1 if args.quick else 3)
    rate = args.rate or (512 * KIB if args.quick else MIB)
    seconds = window * n
    with tempfile.TemporaryDirectory(prefix="dlm-rate-") as tmp:
        data_dir = os.path.join(tmp, "data")
        os.mkdir(data_dir)
        with open(os.path.join(data_dir, "big.bin"), "wb") as out:
            out.truncate(int(rate * (seconds + 5)))  # never finished within the windows
        server = start_server(args.server, tmp, data_dir)
        try:
            url = f"{server.base_url}/big.bin"
            print(f"server: {server.description}; windows of {window:g} s after the start")
            heads = "  ".join(f"window {i + 1} MiB/s (err)" for i in range(n))
            print(f"{'case':<34} {'target':>6}  {heads}  max {SMOOTH:g}s")
            cases: list[tuple[str, Callable[[str], list]]] = [
                ("Download, 1 connection", lambda d: case_download(url, d, rate, 1, seconds)),
                ("Download, 4 connections", lambda d: case_download(url, d, rate, 4, seconds)),
                ("manager total, 3 downloads", lambda d: case_manager(url, d, rate, seconds)),
                ("1 connection, whole 256K chunks", lambda d: whole(url, d, rate, seconds)),
            ]
            for name, case in cases:
                dest = tempfile.mkdtemp(dir=tmp)
                report(name, rate, case(dest), window, n)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    threading.current_thread().name = "rate_limit"
    sys.exit(main())
