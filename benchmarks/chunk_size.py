#!/usr/bin/env python3
"""Measure which default read size (``chunk_size``) suits :class:`dlmanager.Download`.

Run from a checkout as ``python benchmarks/chunk_size.py`` (``--quick`` for a bounded
variant, ``--help`` for the options). The script:

* writes a deterministic file into a temporary directory and serves it over HTTP/1.1 from
  a separate process (``ThreadingHTTPServer`` on 127.0.0.1, port 0, body sent with
  ``socket.sendfile``), so the server is neither the bottleneck nor counted as client CPU;
* for every chunk size, and for a baseline that reads like dlmanager 0.1.1 (plain
  ``requests.get(stream=True).iter_content(16384)``), downloads the file in a fresh child
  process (this script with the hidden ``--child`` option), so that CPU time and peak RSS
  are those of one download; every download is checked against the file's sha256;
* prints a fixed-width table of medians, the machine and the command line, and removes
  its temporary files.

The dlmanager measured is the one of this checkout (the directory above ``benchmarks``),
not whatever copy is installed.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import importlib.metadata
import json
import os
import platform
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from benchutil import fs_type, serve_until_stdin_closes, sha256_file, stop_process

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

HOST = "127.0.0.1"
MIB = 1024 * 1024
MB = 1000 * 1000
BASELINE = "requests"
BASELINE_LABEL = "requests iter_content 16 KiB"
BASELINE_CHUNK = 16 * 1024
#: Reads the raw response with ``socket.recv_into`` and discards it: the loopback ceiling.
RAW = "raw"
SEED = 20240101
#: Seconds a single child download may take before the benchmark gives up.
CHILD_TIMEOUT = 900.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _use_checkout() -> None:
    """Import dlmanager from this checkout rather than from an installed copy."""
    if os.path.isfile(os.path.join(REPO, "dlmanager", "__init__.py")) and REPO not in sys.path:
        sys.path.insert(0, REPO)


# -- the server (a separate process: ``--serve PATH``) ---------------------------------


class _FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file at ``/file`` with a Content-Length, using ``sendfile``."""

    protocol_version = "HTTP/1.1"
    served_path = ""

    def do_GET(self) -> None:
        if self.path != "/file":
            self.send_error(404)
            return
        with open(self.served_path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            try:
                self.connection.sendfile(source)
            except OSError:  # the client went away
                self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(path: str) -> int:
    """Serve *path* until stdin is closed; print the port first."""
    handler = type("Handler", (_FileHandler,), {"served_path": path})
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    server.daemon_threads = True
    return serve_until_stdin_closes(server, server.server_address[1])


class _Server:
    """The server process, as a context manager that yields the file's URL."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> str:
        self._proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", self._path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.isdigit():
            self.__exit__()
            raise RuntimeError(f"the benchmark server did not start (printed {line!r})")
        return f"http://{HOST}:{int(line)}/file"

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc)


# -- one download (a child process: ``--child``) ----------------------------------------


class Progress:
    """A mozregression-style progress callback: a percentage, redrawn when it changes."""

    def __init__(self) -> None:
        self.calls = 0
        self.percent = -1
        self.line = ""

    def __call__(self, download: object, current: int, total: int) -> None:
        self.calls += 1
        percent = int(current * 100 / total) if total else 0
        if percent != self.percent:
            self.percent = percent
            self.line = f"Downloading build: {percent:3d}% ({current // MIB}/{total // MIB} MiB)"


def _max_rss() -> int:
    """The peak resident set size of this process so far, in bytes (0 if unknown)."""
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def _child(mode: str, url: str, dest: str, chunk_size: int) -> int:
    """Download *url* once and print one JSON line of measurements."""
    _use_checkout()
    # Never let an HTTP(S)_PROXY from the environment route loopback traffic elsewhere.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = HOST
    import requests

    import dlmanager

    rss_base = _max_rss()
    progress = Progress()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if mode == BASELINE:
        # What dlmanager 0.1.1 did, plus the fsync that Download.publish does.
        with requests.get(url, stream=True) as response:
            response.raise_for_status()
            total = int(response.headers["Content-Length"])
            received = 0
            with open(dest, "wb") as f:
                for chunk in response.iter_content(chunk_size):
                    f.write(chunk)
                    received += len(chunk)
                    progress(None, received, total)
                f.flush()
                os.fsync(f.fileno())
    elif mode == RAW:
        parts = urllib.parse.urlsplit(url)
        request = f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n"
        buffer = bytearray(chunk_size)
        with socket.create_connection((parts.hostname or HOST, parts.port or 80)) as sock:
            sock.sendall(request.encode("ascii"))
            while sock.recv_into(buffer):
                progress.calls += 1
    else:
        download = dlmanager.Download(url, dest, chunk_size=chunk_size, progress=progress)
        download.start()
        download.wait()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    result = {
        "wall": wall,
        "cpu": cpu,
        "calls": progress.calls,
        "rss_base": rss_base,
        "rss_peak": _max_rss(),
        "sha256": sha256_file(dest) if mode != RAW else "",
        "dlmanager": os.path.dirname(os.path.abspath(dlmanager.__file__)),
    }
    print(json.dumps(result), flush=True)
    return 0


# -- the benchmark ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    label: str
    mode: str
    chunk_size: int


@dataclass
class Runs:
    walls: list[float]
    cpus: list[float]
    calls: list[int]
    rss_peaks: list[int]
    rss_bases: list[int]


def _make_source(path: str, size: int) -> str:
    """Write *size* deterministic pseudo-random bytes to *path*; return their sha256."""
    rng = random.Random(SEED)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = rng.randbytes(min(MIB, left))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def _run_child(case: Case, url: str, dest: str) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--mode",
        case.mode,
        "--url",
        url,
        "--dest",
        dest,
        "--chunk-bytes",
        str(case.chunk_size),
    ]
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
        )
    finally:
        if os.path.exists(dest):
            os.unlink(dest)
    if proc.returncode != 0:
        raise RuntimeError(f"{case.label}: child failed ({proc.returncode}):\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of KiB: {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"chunk sizes must be positive KiB: {text!r}")
    return sizes


def _kib_label(kib: int) -> str:
    return f"{kib // 1024} MiB" if kib % 1024 == 0 else f"{kib} KiB"


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _table(
    cases: list[Case], runs: dict[Case, Runs], size: int, args: argparse.Namespace
) -> list[str]:
    header = (
        f"{'chunk size':<30}{'median s':>10}{'MB/s':>10}{'client CPU s':>14}"
        f"{'progress calls':>16}{'peak RSS MB':>13}{'avg read KiB':>14}"
    )
    lines = [header, "-" * len(header)]
    for case in cases:
        r = runs[case]
        wall = statistics.median(r.walls)
        calls = statistics.median(r.calls)
        lines.append(
            f"{case.label:<30}{wall:>10.3f}{size / wall / MB:>10.1f}"
            f"{statistics.median(r.cpus):>14.3f}{calls:>16.0f}"
            f"{max(r.rss_peaks) / MB:>13.1f}{size / max(calls, 1) / 1024:>14.1f}"
        )
    lines.append("-" * len(header))
    base = statistics.median(b for r in runs.values() for b in r.rss_bases)
    notes = [
        f"{size // MIB} MiB file, {args.repeat} run(s) per row in round-robin order after one"
        " discarded warm-up run, each download in a fresh child process; medians of the"
        " runs, except peak RSS (maximum).",
        "MB = 10^6 bytes. client CPU s: time.process_time() of the child around the download"
        " (all its threads); the server is a separate process and is not counted. peak RSS:"
        f" ru_maxrss of the child, of which ~{base / MB:.1f} MB is the interpreter with"
        " requests and dlmanager imported before the download.",
        "avg read KiB: file size / progress calls (chunk_size bounds each read; a read"
        " returns what has arrived). Both dlmanager and the baseline fsync the file.",
    ]
    for note in notes:
        lines += textwrap.wrap(note, width=len(header))
    return lines


def _bench(args: argparse.Namespace) -> int:
    size = args.size * MIB
    cases = [Case(_kib_label(kib), "dlmanager", kib * 1024) for kib in args.chunk_sizes]
    cases.append(Case(BASELINE_LABEL, BASELINE, BASELINE_CHUNK))
    runs = {case: Runs([], [], [], [], []) for case in cases}
    raw = Case("raw socket recv_into 1 MiB", RAW, MIB)
    ceiling: list[float] = []
    tmpdir = tempfile.mkdtemp(prefix="dlmanager-bench-", dir=args.tmpdir)
    used = ""
    try:
        source = os.path.join(tmpdir, "source.bin")
        expected = _make_source(source, size)
        dest = os.path.join(tmpdir, "dest.bin")
        with _Server(source) as url:
            _run_child(cases[0], url, dest)  # warm-up: page cache, server, imports
            for round_ in range(args.repeat):
                ceiling.append(float(_run_child(raw, url, dest)["wall"]))
                for case in cases:
                    result = _run_child(case, url, dest)
                    if result["sha256"] != expected:
                        raise RuntimeError(f"{case.label}: sha256 mismatch in run {round_ + 1}")
                    r = runs[case]
                    r.walls.append(float(result["wall"]))
                    r.cpus.append(float(result["cpu"]))
                    r.calls.append(int(result["calls"]))
                    r.rss_peaks.append(int(result["rss_peak"]))
                    r.rss_bases.append(int(result["rss_base"]))
                    used = str(result["dlmanager"])
                    print(
                        f"  run {round_ + 1}/{args.repeat} {case.label}: {result['wall']:.3f} s",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)

    lines = _table(cases, runs, size, args)
    ceiling_note = (
        f"server + loopback ceiling: {size / statistics.median(ceiling) / MB:.1f} MB/s (median;"
        " the response read with socket.recv_into into a 1 MiB buffer and discarded)."
    )
    lines += textwrap.wrap(ceiling_note, width=len(lines[0]))
    fs = fs_type(os.path.realpath(os.path.dirname(tmpdir)))
    lines += [
        f"files in {os.path.dirname(tmpdir)}{f' ({fs})' if fs else ''}; dlmanager from {used};"
        f" requests {_version('requests')}, urllib3 {_version('urllib3')}",
        f"machine: {os.cpu_count()} CPUs, {platform.platform()},"
        f" {platform.python_implementation()} {platform.python_version()}",
        f"command: python {shlex.join(sys.argv)}",
    ]
    print("\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Measure dlmanager download speed, CPU and memory per chunk_size "
        "against a loopback HTTP server."
    )
    parser.add_argument("--size", type=int, default=None, help="file size in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per row (default 3)")
    parser.add_argument(
        "--chunk-sizes",
        type=_parse_sizes,
        default=_parse_sizes("16,64,256,1024,4096"),
        help="comma list of chunk sizes in KiB (default 16,64,256,1024,4096)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="bounded variant for CI: 32 MiB, 1 run per row"
    )
    parser.add_argument(
        "--tmpdir", default=None, help="directory for the temporary files (default: system's)"
    )
    # Hidden modes: the server process and one measured download.
    parser.add_argument("--serve", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["dlmanager", BASELINE, RAW], help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--dest", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-bytes", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve:
        return _serve(args.serve)
    if args.child:
        return _child(args.mode, args.url, args.dest, args.chunk_bytes)
    if args.size is None:
        args.size = 32 if args.quick else 256
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.size <= 0 or args.repeat <= 0:
        parser.error("--size and --repeat must be positive")
    return _bench(args)


if __name__ == "__main__":
    sys.exit(main())
