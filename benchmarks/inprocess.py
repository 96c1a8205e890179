#!/usr/bin/env python3
"""Compare dlmanager with requests and urllib3 in one process, on many small files.

Run from a checkout as ``python benchmarks/inprocess.py`` (``--quick`` for a bounded
variant, ``--help`` for the options). The script:

* writes N deterministic files of 64 KiB (default 500, ``--quick`` 100; ``--size``
  sets another size) into a temporary directory and serves them on 127.0.0.1 with
  ``benchutil.start_server`` (nginx when it is installed, else a Python server in a
  child process);
* in this process, with every import done before any clock starts, downloads all N,
  ``--jobs`` (8) at a time, five ways: a ``requests.Session`` and a urllib3
  ``PoolManager`` that read the bodies and discard them; urllib3 writing each body to a
  temporary file in the destination, ``fsync`` and rename (the floor dlmanager is
  measured against); ``DownloadManager(dest, max_workers=8)`` in a ``with`` block; and
  the same with a caller's plain ``requests.Session()`` as ``session=``;
* takes the wall time and the process's CPU time (``time.process_time()``, all threads)
  of each run, in a fresh empty directory deleted afterwards, and checks every file
  (size and sha256; the discarding rows: every body's length);
* prints a fixed-width table of medians with the dlmanager rows' ratios to the floor,
  whether dlmanager meets its target, the machine and the command line (``--json FILE``
  also writes them as JSON); with ``--strace``, the system calls per file of the floor
  and of dlmanager (each in a child process under ``strace -f -c``).

The exit status is 0 unless a download was wrong or failed, or the server could not
start (1), or the run was interrupted (130). The dlmanager measured is this checkout's.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import random
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchutil import HOST, ServerHandle, fs_type, sha256_file, start_server, tail

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(REPO, "dlmanager", "__init__.py")) and REPO not in sys.path:
    sys.path.insert(0, REPO)  # this checkout's dlmanager, not an installed copy

import requests  # noqa: E402
import requests.adapters  # noqa: E402
import urllib3  # noqa: E402

import dlmanager  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
SIZE = 64 * KIB
SEED = 20240115
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
TIMEOUT = 60.0
TARGET = 1.3  # dlmanager's wall time at most this many times the floor's
FLOOR, DLMANAGER = "3", "4"
#: The counts printed per file under ``--strace`` (clone: clone + clone3).
SYSCALLS = ("total", "futex", "clone", "openat", "newfstatat", "fsync")


@dataclass(frozen=True)
class Source:
    name: str
    sha256: str
    size: int = SIZE


#: Downloads the sources from the base URL into the directory, so many at a time; returns
#: the body lengths when it discards the bodies, None when it writes files.
Runner = Callable[[Sequence[Source], str, str, int], "list[int] | None"]


# -- the five ways ------------------------------------------------------------------------


def _parallel(work: Callable[[Source], int], sources: Sequence[Source], jobs: int) -> list[int]:
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(work, sources))


def _requests_discard(sources: Sequence[Source], base: str, dest: str, jobs: int) -> list[int]:
    with requests.Session() as session:
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=jobs))

        def fetch(source: Source) -> int:
            with session.get(f"{base}/{source.name}", stream=True, timeout=TIMEOUT) as response:
                response.raise_for_status()
                return sum(len(block) for block in response.iter_content(MIB))

        return _parallel(fetch, sources, jobs)


def _urllib3_get(pool: urllib3.PoolManager, url: str, sink: Callable[[bytes], Any]) -> int:
    response = pool.request("GET", url, preload_content=False)
    try:
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status} for {url}")
        received = 0
        while block := response.read(MIB):
            sink(block)
            received += len(block)
        return received
    finally:
        response.release_conn()


def _urllib3_discard(sources: Sequence[Source], base: str, dest: str, jobs: int) -> list[int]:
    with urllib3.PoolManager(maxsize=jobs, retries=False, timeout=TIMEOUT) as pool:
        return _parallel(lambda s: _urllib3_get(pool, f"{base}/{s.name}", len), sources, jobs)


def _urllib3_write(sources: Sequence[Source], base: str, dest: str, jobs: int) -> None:
    with urllib3.PoolManager(maxsize=jobs, retries=False, timeout=TIMEOUT) as pool:

        def fetch(source: Source) -> int:
            fd, temp = tempfile.mkstemp(prefix=f".{source.name}.", suffix=".part", dir=dest)
            try:
                with open(fd, "wb") as out:
                    received = _urllib3_get(pool, f"{base}/{source.name}", out.write)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temp, os.path.join(dest, source.name))
            except BaseException:
                os.unlink(temp)
                raise
            return received

        _parallel(fetch, sources, jobs)


def _dlmanager(sources: Sequence[Source], base: str, dest: str, jobs: int) -> None:
    # One connection per file, as the other rows (a big file is not split).
    with dlmanager.DownloadManager(dest, max_workers=jobs, connections=1) as manager:
        for source in sources:
            manager.download(f"{base}/{source.name}", source.name)


def _dlmanager_session(sources: Sequence[Source], base: str, dest: str, jobs: int) -> None:
    session = requests.Session()  # closed after the manager, by the caller
    with (
        session,
        dlmanager.DownloadManager(dest, session, max_workers=jobs, connections=1) as manager,
    ):
        for source in sources:
            manager.download(f"{base}/{source.name}", source.name)


@dataclass
class Row:
    key: str
    title: str
    run: Runner
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.walls)

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)


def _rows() -> list[Row]:
    return [
        Row("1", "requests Session, discard", _requests_discard),
        Row("2", "urllib3 PoolManager, discard", _urllib3_discard),
        Row(FLOOR, "urllib3 + write + fsync + rename", _urllib3_write),
        Row(DLMANAGER, "dlmanager DownloadManager", _dlmanager),
        Row("5", "dlmanager, session=requests.Session()", _dlmanager_session),
    ]


def _size_label(size: int) -> str:
    for unit, name in ((1024 * MIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")):
        if size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


# -- running and checking ------------------------------------------------------------------


def _check(sources: Sequence[Source], dest: str, lengths: list[int] | None) -> str:
    """'' when the run got every file right, else what is wrong."""
    if lengths is not None:
        wrong = [f"{s.name}: {n} bytes" for s, n in zip(sources, lengths) if n != s.size]
    else:
        left = sorted(set(os.listdir(dest)) - {s.name for s in sources})
        wrong = [f"{name} left in the directory" for name in left]
        for source in sources:
            path = os.path.join(dest, source.name)
            if not os.path.isfile(path):
                wrong.append(f"{source.name} is missing")
            elif os.path.getsize(path) != source.size:
                wrong.append(f"{source.name} has {os.path.getsize(path)} bytes, not {source.size}")
            elif sha256_file(path) != source.sha256:
                wrong.append(f"{source.name} has the wrong sha256")
    more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
    return "; ".join(wrong[:3]) + more


def _run(
    row: Row, sources: Sequence[Source], base: str, tmp: str, jobs: int
) -> tuple[float, float]:
    """One run of *row* in a fresh empty directory: (wall s, CPU s); sets ``row.error``."""
    dest = os.path.join(tmp, f"out-{row.key}")
    os.makedirs(dest)
    try:
        gc.collect()
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            lengths = row.run(sources, base, dest, jobs)
        finally:
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        row.error = _check(sources, dest, lengths)
        if row.error:
            row.error = f"WRONG DOWNLOAD: {row.error}"
    except Exception as exc:
        row.error = f"{type(exc).__name__}: {exc}"
    finally:
        shutil.rmtree(dest, ignore_errors=True)
        if hasattr(os, "sync"):
            os.sync()  # this run's dirty pages are not the next run's to write back
    return wall, cpu


def _make_sources(data_dir: str, count: int, size: int = SIZE) -> list[Source]:
    rng = random.Random(SEED)
    sources = []
    for i in range(count):
        name = f"f{i:04d}.bin"
        digest = hashlib.sha256()
        with open(os.path.join(data_dir, name), "wb") as handle:
            for start in range(0, size, 16 * MIB):  # a big file is written in pieces
                block = rng.randbytes(min(16 * MIB, size - start))
                handle.write(block)
                digest.update(block)
        sources.append(Source(name, digest.hexdigest(), size))
    return sources


def _warm_up(sources: Sequence[Source], base: str) -> None:
    """Fetch every file once (no proxy) and check its bytes: warms and proves the server."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for source in sources:
        with opener.open(f"{base}/{source.name}", timeout=TIMEOUT) as response:
            digest = hashlib.sha256()
            while block := response.read(MIB):
                digest.update(block)
            if digest.hexdigest() != source.sha256:
                raise RuntimeError(f"the server sent the wrong bytes for {source.name}")


# -- system calls per file (--strace) ----------------------------------------------------


def _strace_child(key: str, base: str, dest: str, count: int, jobs: int) -> int:
    """The child of ``--strace``: row *key* on one file (warm-up), then on *count* files."""
    row = {row.key: row for row in _rows()}[key]
    sources = [Source(f"f{i:04d}.bin", "") for i in range(max(count, 1))]
    for part, chosen in (("warm", sources[:1]), ("run", sources[:count])):
        os.makedirs(os.path.join(dest, part))
        row.run(chosen, base, os.path.join(dest, part), jobs)
    return 0


def _parse_strace(path: str) -> dict[str, int]:
    """The calls of each system call (and ``total``) in a ``strace -c`` summary."""
    with open(path, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    rule = next(line for line in lines if line.startswith("------"))
    spans, start = [], 0
    for dashes in rule.split(" "):  # fixed-width columns: calls is the 4th (of 6)
        spans.append((start, start + len(dashes)))
        start += len(dashes) + 1
    counts: dict[str, int] = {}
    for line in lines[lines.index(rule) + 1 :]:
        if line.startswith("------") or not line.strip():
            continue
        name = line.split()[-1]
        calls = int(line[spans[3][0] : spans[3][1]])
        counts[name] = counts.get(name, 0) + calls
    counts["clone"] = counts.get("clone", 0) + counts.pop("clone3", 0)
    return counts


def _strace_row(
    row: Row, sources: Sequence[Source], base: str, tmp: str, jobs: int
) -> dict[str, float] | str:
    """System calls per file of *row*: a child run on all the files less one on none."""
    runs: dict[int, dict[str, int]] = {}
    for count in (0, len(sources)):
        out, dest = os.path.join(tmp, "strace.txt"), os.path.join(tmp, "strace-out")
        argv = ["strace", "-f", "-c", "-o", out, sys.executable, os.path.abspath(__file__)]
        argv += ["--strace-child", row.key, base, dest, str(count), "--jobs", str(jobs)]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                return f"strace {shlex.join(argv[5:])} failed: {done.stderr.strip()[-500:]}"
            wrong = _check(sources[:count], os.path.join(dest, "run"), None)
            if wrong:
                return f"WRONG DOWNLOAD under strace: {wrong}"
            runs[count] = _parse_strace(out)
        except (ValueError, IndexError, StopIteration) as exc:
            return f"cannot read strace's summary ({exc}):\n{tail(out)}"
        finally:
            shutil.rmtree(dest, ignore_errors=True)
    full, empty = runs[len(sources)], runs[0]
    return {name: (n - empty.get(name, 0)) / len(sources) for name, n in sorted(full.items())}


# -- reporting ----------------------------------------------------------------------------

HEADER = (
    f"{'row':<42}{'runs':>5}{'median s':>10}{'best s':>8}{'files/s':>9}{'CPU s':>8}"
    f"{'wall vs 3':>11}{'CPU vs 3':>10}"
)


def _ratios(row: Row, floor: Row) -> tuple[float, float] | None:
    if row.key in (FLOOR, "1", "2") or not (row.ok and floor.ok) or floor.cpu <= 0:
        return None
    return row.wall / floor.wall, row.cpu / floor.cpu


def _table(rows: Sequence[Row], count: int) -> list[str]:
    lines = [HEADER, "-" * len(HEADER)]
    floor = next(row for row in rows if row.key == FLOOR)
    for row in rows:
        start = f"{row.key} {row.title:<40}{len(row.walls):>5}"
        if not row.ok:
            lines.append(f"{start}{'FAILED':>10}  {row.error[: len(HEADER) - len(start) - 12]}")
            continue
        ratios = _ratios(row, floor)
        wall, cpu = (f"{r:.2f}x" for r in ratios) if ratios else ("-", "-")
        lines.append(
            f"{start}{row.wall:>10.3f}{min(row.walls):>8.3f}{count / row.wall:>9.0f}"
            f"{row.cpu:>8.3f}{wall:>11}{cpu:>10}"
        )
    lines.append("-" * len(HEADER))
    return lines


def _target(rows: Sequence[Row]) -> dict[str, Any]:
    text = "dlmanager within 1.3x of urllib3 + write + fsync + rename (wall)"
    dl, floor = (next(row for row in rows if row.key == key) for key in (DLMANAGER, FLOOR))
    ratios = _ratios(dl, floor)
    value = ratios[0] if ratios else None
    met = value <= TARGET if value is not None else None
    return {"text": text, "value": value, "bound": f"<= {TARGET}x", "met": met}


def _strace_lines(result: dict[str, Any]) -> list[str]:
    lines = textwrap.wrap(
        "system calls per file (strace -f -c in a child process: a run of all the files less"
        " a run of none, each after a one-file warm-up; clone counts clone3 too):",
        width=len(HEADER),
        subsequent_indent="  ",
    )
    lines.append(f"{'row':<42}" + "".join(f"{name:>11}" for name in SYSCALLS))
    for label, counts in result.items():
        if isinstance(counts, str):
            lines.append(f"{label:<42}FAILED: {counts}")
        else:
            lines.append(f"{label:<42}" + "".join(f"{counts.get(n, 0):>11.1f}" for n in SYSCALLS))
    return lines


# -- the benchmark --------------------------------------------------------------------------


def _measure(args: argparse.Namespace, rows: list[Row], tmp: str) -> tuple[str, Any]:
    """Serve the files, run every row, and with --strace count system calls."""
    data_dir = os.path.join(tmp, "data")
    os.makedirs(data_dir)
    sources = _make_sources(data_dir, args.files, args.size)
    if hasattr(os, "sync"):
        os.sync()  # written back now, not during the first measured runs
    server: ServerHandle | None = None
    try:
        server = start_server(args.server, tmp, data_dir)
        print(f"server: {server.description}", flush=True)
        base = server.base_url
        _warm_up(sources, base)
        order = random.Random("inprocess-order")
        for run in range(args.repeat + 1):  # round 0 warms up every row and is not counted
            # A new order each round (seeded): no row always runs right after another.
            for row in order.sample(rows, len(rows)):
                if row.error:
                    continue
                wall, cpu = _run(row, sources, base, tmp, args.jobs)
                if server.proc.poll() is not None:
                    raise RuntimeError("the server exited during the benchmark")
                label = f"  {row.key} {row.title}: run {run}/{args.repeat}"
                if row.error:
                    print(f"ERROR: {label.strip()}: {row.error}", file=sys.stderr, flush=True)
                    continue
                if run:
                    row.walls.append(wall)
                    row.cpus.append(cpu)
                note = "" if run else " (warm-up)"
                print(f"{label} {wall:.3f} s, CPU {cpu:.3f} s{note}", file=sys.stderr, flush=True)
        syscalls: Any = None
        if args.strace and shutil.which("strace") is None:
            syscalls = "strace not installed (apt-get install strace): system calls not counted"
        elif args.strace:
            syscalls = {
                f"{row.key} {row.title}": _strace_row(row, sources, base, tmp, args.jobs)
                for row in rows
                if row.key in (FLOOR, DLMANAGER)
            }
        return server.description, syscalls
    finally:
        if server is not None:
            server.stop()


def _bench(args: argparse.Namespace) -> int:
    for name in PROXY_VARIABLES:  # loopback only: requests must not go through a proxy
        os.environ.pop(name, None)
        os.environ.pop(name.upper(), None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = HOST
    rows = _rows()
    tmp = tempfile.mkdtemp(prefix="dlmanager-inprocess-", dir=args.tmpdir)
    try:
        server, syscalls = _measure(args, rows, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    title = f"{args.files} files of {_size_label(args.size)}, {args.jobs} at a time, in one process"
    lines = [title, *_table(rows, args.files)]
    target = _target(rows)
    lines.append("target (ratio of dlmanager to the floor, row 3):")
    if target["met"] is None:
        lines.append(f"  {target['text']}  n/a (a row failed)")
    else:
        verdict = "met" if target["met"] else "MISSED"
        value = f"{target['value']:.2f}x"
        lines.append(f"  {target['text']}  {value}  need {target['bound']}  {verdict}")
    lines.append("-" * len(HEADER))
    if isinstance(syscalls, dict):
        lines += [*_strace_lines(syscalls), "-" * len(HEADER)]
    fs = fs_type(os.path.realpath(os.path.dirname(tmp)))
    version = importlib.metadata.version
    versions = (
        f"requests {version('requests')}, urllib3 {version('urllib3')},"
        f" dlmanager {dlmanager.__version__} from {os.path.dirname(dlmanager.__file__ or '?')}"
    )
    notes = [
        f"{args.repeat} run(s) per row, in a new (seeded) order each round, after a warm-up"
        " (every file fetched through the server once and checked, then one unmeasured run of"
        " every row); medians; best s is the fastest run; files/s from the median.",
        "Each run: in this process, every import done before; gc.collect(), then the clock;"
        " a fresh empty directory; every file checked after the clock stops (size and sha256;"
        " rows 1-2 discard the bodies: every body's length), then the directory deleted and"
        " os.sync(). Row 3 fsyncs each file before its rename, not the directory.",
        "CPU s: time.process_time() of this process, all threads; the server is another"
        " process and not counted. wall/CPU vs 3: ratio of the dlmanager rows to row 3.",
        f"server: {server}",
        versions,
        f"files in {os.path.dirname(tmp)}{f' ({fs})' if fs else ''}",
    ]
    if isinstance(syscalls, str):
        notes.insert(0, syscalls)
    for note in notes:
        lines += textwrap.wrap(note, width=len(HEADER), subsequent_indent="  ")
    machine = (
        f"{os.cpu_count()} CPUs, {platform.platform()},"
        f" {platform.python_implementation()} {platform.python_version()}"
    )
    command = f"python {shlex.join(sys.argv)}"
    lines += [f"machine: {machine}", f"command: {command}"]
    print("\n".join(lines), flush=True)

    if args.json:
        floor = next(row for row in rows if row.key == FLOOR)
        report = {
            "command": command,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine,
            "quick": args.quick,
            "repeat": args.repeat,
            "files": args.files,
            "file_size": args.size,
            "jobs": args.jobs,
            "server": server,
            "versions": versions,
            "rows": [_row_json(row, floor, args.files) for row in rows],
            "target": target,
            "syscalls_per_file": syscalls,
            "table": lines,
        }
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    failed = [row for row in rows if row.error]
    wrong_strace = isinstance(syscalls, dict) and any(
        isinstance(v, str) and v.startswith("WRONG") for v in syscalls.values()
    )
    if failed or wrong_strace:
        names = ", ".join(f"{row.key} {row.title}" for row in failed) or "under strace"
        print(f"inprocess: failed: {names}", file=sys.stderr)
        return 1
    return 0


def _row_json(row: Row, floor: Row, count: int) -> dict[str, Any]:
    data: dict[str, Any] = {
        "row": row.key,
        "title": row.title,
        "runs": [{"wall_s": w, "cpu_s": c} for w, c in zip(row.walls, row.cpus)],
        "error": row.error or None,
    }
    if row.ok:
        ratios = _ratios(row, floor)
        data.update(
            median_wall_s=row.wall,
            best_s=min(row.walls),
            files_per_s=count / row.wall,
            median_cpu_s=row.cpu,
            wall_vs_floor=ratios[0] if ratios else None,
            cpu_vs_floor=ratios[1] if ratios else None,
        )
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare dlmanager with requests and urllib3 in one process: many small"
        " files from a loopback server (nginx when installed), wall and CPU time."
    )
    parser.add_argument(
        "--quick", action="store_true", help="bounded variant: 100 files, 3 runs per row"
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per row (default 5)")
    parser.add_argument("--files", type=int, default=None, help="how many files (default 500)")
    parser.add_argument(
        "--size",
        type=int,
        default=SIZE,
        help="each file's size in bytes (default 65536; 1073741824 with --files 1 --jobs 1"
        " compares one big file)",
    )
    parser.add_argument("--jobs", type=int, default=8, help="downloads at a time (default 8)")
    parser.add_argument(
        "--strace",
        action="store_true",
        help="also count the system calls per file of rows 3 and 4 (needs strace)",
    )
    parser.add_argument(
        "--tmpdir", default=None, help="directory for the temporary files (default: system's)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--server",
        choices=["auto", "nginx", "python"],
        default="auto",
        help="the loopback server (default auto: nginx when installed, else Python)",
    )
    parser.add_argument("--strace-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.strace_child:
        key, base, dest, count = args.strace_child
        return _strace_child(key, base, dest, int(count), args.jobs)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 5
    if args.files is None:
        args.files = 100 if args.quick else 500
    for name in ("repeat", "files", "jobs", "size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive")
    try:
        return _bench(args)
    except KeyboardInterrupt:
        print("inprocess: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"inprocess: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
