#!/usr/bin/env python3
"""Compare the ``dlmanager`` command line with curl and aria2c on one machine.

Run from a checkout as ``python benchmarks/compare.py`` (``--quick`` for a bounded
variant, ``--help`` for the options). The script:

* writes deterministic data files into a temporary directory and serves them on
  127.0.0.1 (a free port) with nginx when it is installed (a child process with a
  generated configuration: one process, ``sendfile on``, and a ``/limited/`` location
  over the same files with ``limit_rate 20m``), else with a Python server in a child
  process (HTTP/1.1, single ``Range`` with 206 and ``If-Range`` by the rules of the
  test servers, ``tests/loopback.py``, ``ETag``, ``Last-Modified``, ``sendfile``,
  and a 20 MiB/s token bucket per connection under ``/limited/``);
* measures three cases: (a) one 1 GiB file over one connection; (b) one 256 MiB file
  from ``/limited/`` (20 MiB/s per connection), over one and over eight connections;
  (c) 500 files of 64 KiB, eight at a time;
* runs every tool as a child process (``curl``, ``aria2c`` when installed,
  ``python -m dlmanager`` from this checkout, and for (a) and (c) two Python peers, each
  by a driver script of ``peers.py``: ``parfive`` when it can be imported, and
  ``dlmanager`` 0.1.1, the version this project replaces, when ``--dlmanager-0.1.1 PATH``
  names the directory that holds its package) into a fresh empty directory, takes its
  wall time and its own CPU time and peak RSS from ``os.wait4``, and checks every file
  it wrote against the source's sha256 (a wrong file is an error: exit status 1);
* prints a fixed-width table of medians with the ratio to the reference tool, whether
  dlmanager meets its targets, the machine and the command line (``--json FILE`` also
  writes them as JSON; ``--chart OUT.png`` draws the medians as a bar chart with
  ``chart.py``, which needs matplotlib: without it the script says so and exits with 2
  before running anything), and removes its temporary files and stops the server on exit.

A missed target is reported, not an error: the exit status is 0 unless a download was
wrong, a tool failed or the server could not start (1), or the run was interrupted (130).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import peers
from benchutil import (
    HOST,
    ServerHandle,
    first_line,
    fs_type,
    sha256_file,
    start_server,
    tail,
)

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
MB = 1000 * 1000
#: Data files are generated in pieces of this size, never held in memory whole.
GEN_PIECE = 16 * MIB
SEED = 20240101
#: Seconds one tool run may take before it is killed and counted as failed.
RUN_TIMEOUT = 900.0
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APT_TOOLS = "apt-get install curl aria2"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")
CASE_KEYS = ("a", "b", "c")
PARFIVE = "parfive"
OLD_DLMANAGER = f"dlmanager {peers.OLD_VERSION}"


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: str  # relative to the data directory, with '/' separators; also the URL path
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def _write_random(path: str, size: int, rng: random.Random) -> SourceFile:
    digest = hashlib.sha256()
    with open(path, "wb") as handle:
        left = size
        while left:
            block = rng.randbytes(min(GEN_PIECE, left))
            handle.write(block)
            digest.update(block)
            left -= len(block)
    return SourceFile("", size, digest.hexdigest())


def _make_file(data_dir: str, relative: str, size: int, rng: random.Random) -> SourceFile:
    made = _write_random(os.path.join(data_dir, *relative.split("/")), size, rng)
    return SourceFile(relative, size, made.sha256)


# -- cases and tools ----------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    big: int
    limited: int
    small_count: int
    small_size: int


FULL = Sizes(big=GIB, limited=256 * MIB, small_count=500, small_size=64 * KIB)
QUICK = Sizes(big=64 * MIB, limited=32 * MIB, small_count=100, small_size=64 * KIB)


@dataclass(frozen=True)
class Case:
    key: str
    title: str
    files: tuple[SourceFile, ...]
    urls: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        return sum(source.size for source in self.files)

    @property
    def per_file(self) -> bool:
        return self.key == "c"


#: Builds a tool's command line from (case, output directory, directory for list files).
Builder = Callable[[Case, str, str], list[str]]


@dataclass
class Row:
    case: Case
    tool: str
    setting: str
    build: Builder
    walls: list[float] = field(default_factory=list)
    cpus: list[float] = field(default_factory=list)
    users: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)  # bytes
    error: str = ""
    env: dict[str, str] | None = None  # the tool's environment, when not the common one

    @property
    def label(self) -> str:
        return f"{self.case.key} {self.tool} {self.setting}"

    @property
    def wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus)

    @property
    def best(self) -> float:
        return min(self.walls)

    @property
    def user(self) -> float:
        return statistics.median(self.users)

    @property
    def peak_rss(self) -> int:
        return max(self.rss)

    @property
    def ok(self) -> bool:
        return not self.error and bool(self.walls)

    @property
    def rate(self) -> float:
        """MB/s, or files/s for a case of many files."""
        if self.case.per_file:
            return len(self.case.files) / self.wall
        return self.case.nbytes / self.wall / MB


def _curl(case: Case, out: str, lists: str) -> list[str]:
    # -q: ignore ~/.curlrc; --fail: an HTTP error is a failed run, not a saved error page.
    if len(case.urls) == 1:
        name = case.files[0].name
        return ["curl", "-q", "-sS", "--fail", "-o", os.path.join(out, name), case.urls[0]]
    config = os.path.join(lists, "curl.cfg")
    with open(config, "w", encoding="utf-8") as handle:
        for url, source in zip(case.urls, case.files):
            target = os.path.join(out, source.name).replace("\\", "\\\\").replace('"', '\\"')
            handle.write(f'url = "{url}"\noutput = "{target}"\n')
    return ["curl", "-q", "-sS", "--fail", "--parallel", "--parallel-max", "8", "-K", config]


ARIA2_COMMON = [
    "--no-conf=true",
    "--allow-overwrite=true",
    "--auto-file-renaming=false",
    "--file-allocation=none",
    "--console-log-level=warn",
    "--summary-interval=0",
    "--enable-color=false",
]


def _aria2c(connections: int) -> Builder:
    def build(case: Case, out: str, lists: str) -> list[str]:
        if len(case.urls) == 1:
            split = [f"-x{connections}", f"-s{connections}"]
            if connections > 1:
                split.append("-k1M")  # -k is --min-split-size
            name = case.files[0].name
            return ["aria2c", *split, *ARIA2_COMMON, "-d", out, "-o", name, case.urls[0]]
        listfile = os.path.join(lists, "aria2c.txt")
        with open(listfile, "w", encoding="utf-8") as handle:
            handle.writelines(f"{url}\n" for url in case.urls)
        return ["aria2c", "-j8", "-x1", *ARIA2_COMMON, "-i", listfile, "-d", out]

    return build


def _dlmanager(connections: int, jobs: int) -> Builder:
    def build(case: Case, out: str, lists: str) -> list[str]:
        argv = [sys.executable, "-m", "dlmanager", "-d", out, f"-x{connections}", f"-j{jobs}"]
        argv.append("--quiet")
        if len(case.urls) == 1:
            return [*argv, case.urls[0]]
        listfile = os.path.join(lists, "dlmanager.txt")
        with open(listfile, "w", encoding="utf-8") as handle:
            handle.writelines(f"{url}\n" for url in case.urls)
        return [*argv, "-i", listfile]

    return build


def _url_list(case: Case, lists: str, name: str) -> str:
    listfile = os.path.join(lists, name)
    with open(listfile, "w", encoding="utf-8") as handle:
        handle.writelines(f"{url}\n" for url in case.urls)
    return listfile


def _parfive(connections: int) -> Builder:
    def build(case: Case, out: str, lists: str) -> list[str]:
        return peers.parfive_argv(out, _url_list(case, lists, "parfive.txt"), connections)

    return build


def _old_dlmanager(path: str) -> Builder:
    def build(case: Case, out: str, lists: str) -> list[str]:
        return peers.old_dlmanager_argv(path, out, _url_list(case, lists, "old.txt"))

    return build


def _rows_for(case: Case, old_path: str, env: dict[str, str]) -> list[Row]:
    """The rows of *case*; dlmanager 0.1.1's only when *old_path* is given."""
    old_env = peers.old_dlmanager_env(env, old_path) if old_path else None
    if case.key == "a":
        rows = [
            Row(case, "curl", "1 conn", _curl),
            Row(case, "aria2c", "1 conn", _aria2c(1)),
            Row(case, "dlmanager", "1 conn", _dlmanager(1, 1)),
            Row(case, PARFIVE, "1 conn", _parfive(1)),
        ]
        if old_path:
            rows.append(Row(case, OLD_DLMANAGER, "1 conn", _old_dlmanager(old_path), env=old_env))
        return rows
    if case.key == "b":
        return [
            Row(case, "curl", "1 conn", _curl),
            Row(case, "aria2c", "1 conn", _aria2c(1)),
            Row(case, "aria2c", "8 conn", _aria2c(8)),
            Row(case, "dlmanager", "1 conn", _dlmanager(1, 1)),
            Row(case, "dlmanager", "8 conn", _dlmanager(8, 1)),
        ]
    rows = [
        Row(case, "curl", "8 jobs", _curl),
        Row(case, "aria2c", "8 jobs", _aria2c(1)),
        Row(case, "dlmanager", "8 jobs", _dlmanager(1, 8)),
        Row(case, PARFIVE, "8 jobs", _parfive(8)),
    ]
    if old_path:
        # 0.1.1 has no limit: every download starts its own thread at once.
        rows.append(Row(case, OLD_DLMANAGER, "all at once", _old_dlmanager(old_path), env=old_env))
    return rows


def _reference(row: Row, rows: Sequence[Row]) -> Row | None:
    """The row *row* is compared with: curl for (a), aria2c with the same connections for
    (b), aria2c -j8 for (c)."""
    tool, setting = {"a": ("curl", "1 conn"), "c": ("aria2c", "8 jobs")}.get(
        row.case.key, ("aria2c", row.setting)
    )
    for other in rows:
        if other.case is row.case and other.tool == tool and other.setting == setting:
            return other if other.ok else None
    return None


# -- running one tool -----------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    wall: float
    cpu: float
    user: float
    maxrss: int  # bytes
    returncode: int
    timed_out: bool


def _child_env() -> dict[str, str]:
    """The environment of every tool: no proxy, and this checkout first on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env["NO_PROXY"] = env["no_proxy"] = HOST
    previous = env.get("PYTHONPATH")
    env["PYTHONPATH"] = REPO + (os.pathsep + previous if previous else "")
    return env


#: Runs one tool: forks, execs it and prints its wall time and ``os.wait4`` rusage as JSON.
#: A small separate interpreter (``python -I -S -c``) rather than this process, because on
#: Linux a process's ru_maxrss starts at the peak RSS of the memory it replaced with
#: ``exec``: spawned from this process (vfork) every tool would report this process's peak.
#: Forked from the launcher, a tool reports at least the launcher's few MB (printed as
#: the floor), and its own peak above that.
LAUNCHER = """
import json, os, sys, time
spec = json.loads(sys.stdin.read())
null = os.open(os.devnull, os.O_RDONLY)
log = os.open(spec["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.chdir(spec["cwd"])
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:
        os.write(2, f"cannot run {spec['argv'][0]}: {exc}\\n".encode())
    os._exit(127)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
print(json.dumps({
    "wall": wall,
    "cpu": usage.ru_utime + usage.ru_stime,
    "user": usage.ru_utime,
    "maxrss": usage.ru_maxrss if sys.platform == "darwin" else usage.ru_maxrss * 1024,
    "returncode": os.waitstatus_to_exitcode(status),
}))
"""


def _run_once(argv: Sequence[str], cwd: str, env: dict[str, str], log_path: str) -> Measure:
    """Run *argv*; its wall time, own CPU time (user + sys) and peak RSS from ``wait4``."""
    spec = json.dumps({"argv": list(argv), "cwd": cwd, "env": env, "log": log_path})
    # A session of its own: the launcher and the tool are killed together, by its id.
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", LAUNCHER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    timed_out = False
    try:
        try:
            out, err = proc.communicate(spec, timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
    except BaseException:
        if proc.returncode is None:  # not reaped: the group id is still the launcher's
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    if timed_out:
        return Measure(RUN_TIMEOUT, 0.0, 0.0, 0, -9, timed_out=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the launcher failed ({proc.returncode}):\n{err.strip()}")
    result = json.loads(out.strip().splitlines()[-1])
    return Measure(
        wall=float(result["wall"]),
        cpu=float(result["cpu"]),
        user=float(result["user"]),
        maxrss=int(result["maxrss"]),
        returncode=int(result["returncode"]),
        timed_out=False,
    )


def _verify(out: str, files: Sequence[SourceFile]) -> str:
    """'' when every file is in *out* with its source's sha256, else what is wrong."""
    wrong: list[str] = []
    for source in files:
        path = os.path.join(out, source.name)
        if not os.path.isfile(path):
            wrong.append(f"{source.name} is missing")
            continue
        size = os.path.getsize(path)
        if size != source.size:
            wrong.append(f"{source.name} has {size} bytes, not {source.size}")
        elif sha256_file(path) != source.sha256:
            wrong.append(f"{source.name} has the wrong sha256")
    if not wrong:
        return ""
    more = f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""
    return "; ".join(wrong[:3]) + more


def _fresh_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)


def _run_row(row: Row, tmp: str, env: dict[str, str], run: int, runs: int) -> None:
    out = os.path.join(tmp, "out")
    lists = os.path.join(tmp, "lists")
    log_path = os.path.join(tmp, "tool.log")
    _fresh_dir(out)
    _fresh_dir(lists)
    argv = row.build(row.case, out, lists)
    try:
        measure = _run_once(argv, tmp, row.env or env, log_path)
        if measure.timed_out:
            row.error = f"killed after {RUN_TIMEOUT:.0f} s"
        elif measure.returncode != 0:
            row.error = f"exit status {measure.returncode}"
        else:
            row.error = _verify(out, row.case.files)
            if row.error:
                row.error = f"WRONG DOWNLOAD: {row.error}"
        if row.error:
            output = tail(log_path)
            print(
                f"ERROR: {row.label}, run {run}/{runs}: {row.error}\n"
                f"  command: {shlex.join(argv)}"
                + (f"\n{textwrap.indent(output, '  ')}" if output else ""),
                file=sys.stderr,
                flush=True,
            )
            return
        row.walls.append(measure.wall)
        row.cpus.append(measure.cpu)
        row.users.append(measure.user)
        row.rss.append(measure.maxrss)
        print(
            f"  {row.label}: run {run}/{runs} {measure.wall:.3f} s, CPU {measure.cpu:.3f} s"
            f" ({measure.user:.3f} user),"
            f" RSS {measure.maxrss / MB:.1f} MB",
            file=sys.stderr,
            flush=True,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(lists, ignore_errors=True)
        if hasattr(os, "sync"):
            os.sync()  # this run's dirty pages are not the next run's to write back


# -- reporting --------------------------------------------------------------------------------


def _size_label(size: int) -> str:
    if size % GIB == 0:
        return f"{size // GIB} GiB"
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    return f"{size // KIB} KiB"


@dataclass(frozen=True)
class Target:
    text: str
    value: float | None  # the measured ratio (or MB for memory, s/GiB for CPU)
    bound: str  # e.g. ">= 0.9x"; '' for a value that is only reported
    met: bool | None  # None: not measurable here, or only reported
    note: str = ""
    unit: str = "x"  # "x" (a ratio), "MB" or "s/GiB"

    def line(self) -> str:
        if self.value is None:
            return f"  {self.text:<52} n/a ({self.note})"
        if self.unit == "x":
            shown = f"{self.value:.2f}x"
        else:
            shown = f"{self.value:.{1 if self.unit == 'MB' else 2}f} {self.unit}"
        extra = f"  ({self.note})" if self.note else ""
        if self.met is None:
            return f"  {self.text:<52} {shown:>11}  reported{extra}"
        verdict = "met" if self.met else "MISSED"
        return f"  {self.text:<52} {shown:>11}  need {self.bound:<9} {verdict}{extra}"


def _find(rows: Sequence[Row], case: str, tool: str, setting: str) -> Row | None:
    for row in rows:
        if row.case.key == case and row.tool == tool and row.setting == setting:
            return row
    return None


def _ratio_target(
    text: str,
    rows: Sequence[Row],
    skipped: dict[str, str],
    subject: tuple[str, str, str],
    reference: tuple[str, str, str],
    minimum: float,
    *,
    strict: bool = False,
    aim: str = "",
) -> Target:
    """dlmanager's throughput over the reference's: met when >= *minimum* (> if *strict*)."""
    mine, theirs = _find(rows, *subject), _find(rows, *reference)
    bound = f"{'>' if strict else '>='} {minimum}x"
    if mine is None:
        return Target(text, None, bound, None, f"case {subject[0]} not run")
    if theirs is None:
        tool = reference[1]
        return Target(text, None, bound, None, skipped.get(tool, f"no {tool} row"))
    if not (mine.ok and theirs.ok):
        failed = mine if not mine.ok else theirs
        return Target(text, None, bound, None, f"{failed.label} failed")
    value = mine.rate / theirs.rate
    return Target(text, value, bound, value > minimum if strict else value >= minimum, aim)


def _cpu_per_gib(row: Row) -> float:
    return row.cpu / (row.case.nbytes / GIB)


def _cpu_target(rows: Sequence[Row]) -> Target:
    """(a): dlmanager's CPU time per GiB, reported with curl's for scale."""
    text = "(a) dlmanager CPU per GiB transferred"
    mine, curl = _find(rows, "a", "dlmanager", "1 conn"), _find(rows, "a", "curl", "1 conn")
    if mine is None or not mine.ok:
        return Target(text, None, "", None, "case a not run" if mine is None else "it failed")
    note = f"curl: {_cpu_per_gib(curl):.2f} s/GiB" if curl is not None and curl.ok else ""
    return Target(text, _cpu_per_gib(mine), "", None, note, unit="s/GiB")


def _targets(rows: Sequence[Row], skipped: dict[str, str]) -> list[Target]:
    """Issue 15's targets; each is n/a, with the reason, when its rows did not run."""
    dl = "dlmanager"
    targets = [
        _ratio_target(
            "(a) dlmanager throughput >= 1.0x curl",
            rows,
            skipped,
            ("a", dl, "1 conn"),
            ("a", "curl", "1 conn"),
            1.0,
            aim="aim 1.5x",
        ),
        _cpu_target(rows),
        _ratio_target(
            "(b) dlmanager -x8 >= 0.95x aria2c -x8 throughput",
            rows,
            skipped,
            ("b", dl, "8 conn"),
            ("b", "aria2c", "8 conn"),
            0.95,
        ),
        _ratio_target(
            "(b) dlmanager -x8 >= 6x dlmanager -x1 throughput",
            rows,
            skipped,
            ("b", dl, "8 conn"),
            ("b", dl, "1 conn"),
            6.0,
        ),
        _ratio_target(
            "(c) dlmanager -j8 files/s >= 0.8x aria2c -j8",
            rows,
            skipped,
            ("c", dl, "8 jobs"),
            ("c", "aria2c", "8 jobs"),
            0.8,
        ),
        _ratio_target(
            f"(c) dlmanager -j8 files/s > {PARFIVE} max_conn=8",
            rows,
            skipped,
            ("c", dl, "8 jobs"),
            ("c", PARFIVE, "8 jobs"),
            1.0,
            strict=True,
        ),
        _ratio_target(
            f"(c) dlmanager -j8 files/s > {OLD_DLMANAGER}",
            rows,
            skipped,
            ("c", dl, "8 jobs"),
            ("c", OLD_DLMANAGER, "all at once"),
            1.0,
            strict=True,
        ),
    ]
    measured = [row for row in rows if row.tool == dl and row.ok]
    text = "peak RSS < 100 MB in every dlmanager row"
    if measured:
        worst = max(measured, key=lambda row: row.peak_rss)
        value = worst.peak_rss / MB
        targets.append(
            Target(text, value, "< 100 MB", value < 100, f"largest: {worst.label}", unit="MB")
        )
    else:
        targets.append(Target(text, None, "< 100 MB", None, "no dlmanager row ran", unit="MB"))
    return targets


HEADER = (
    f"{'case':<6}{'tool':<17}{'conn/jobs':<12}{'runs':>5}{'median s':>10}{'best s':>8}"
    f"{'throughput':>16}{'CPU s':>9}{'CPU s/GiB':>11}{'user s':>8}{'peak RSS MB':>13}"
    f"{'rate vs ref':>13}{'CPU vs ref':>12}"
)


def _cpu_ratio(row: Row, ref: Row | None) -> float | None:
    """CPU time over the reference's, for (a) only."""
    if ref is None or row.case.key != "a" or ref.cpu <= 0:
        return None
    return row.cpu / ref.cpu


def _table(rows: Sequence[Row]) -> list[str]:
    lines = [HEADER, "-" * len(HEADER)]
    previous = ""
    for row in rows:
        case = row.case.key if row.case.key != previous else ""
        previous = row.case.key
        start = f"{case:<6}{row.tool:<17}{row.setting:<12}{len(row.walls):>5}"
        if not row.ok:
            lines.append(f"{start}{'FAILED':>10}  {row.error[: len(HEADER) - len(start) - 12]}")
            continue
        unit = "files/s" if row.case.per_file else "MB/s"
        ref = _reference(row, rows)
        rate_ratio = f"{row.rate / ref.rate:.2f}x" if ref is not None else "-"
        cpu = _cpu_ratio(row, ref)
        cpu_ratio = f"{cpu:.2f}x" if cpu is not None else "-"
        per_gib = "-" if row.case.per_file else f"{_cpu_per_gib(row):.3f}"
        lines.append(
            f"{start}{row.wall:>10.3f}{row.best:>8.3f}{f'{row.rate:.1f} {unit}':>16}"
            f"{row.cpu:>9.3f}{per_gib:>11}{row.user:>8.3f}{row.peak_rss / MB:>13.1f}"
            f"{rate_ratio:>13}{cpu_ratio:>12}"
        )
    lines.append("-" * len(HEADER))
    return lines


def _row_json(row: Row, rows: Sequence[Row]) -> dict[str, Any]:
    ref = _reference(row, rows)
    data: dict[str, Any] = {
        "case": row.case.key,
        "case_title": row.case.title,
        "tool": row.tool,
        "setting": row.setting,
        "files": len(row.case.files),
        "bytes": row.case.nbytes,
        "runs": [
            {"wall_s": w, "cpu_s": c, "user_s": u, "sys_s": c - u, "peak_rss_bytes": r}
            for w, c, u, r in zip(row.walls, row.cpus, row.users, row.rss)
        ],
        "error": row.error or None,
        "reference": f"{ref.tool} {ref.setting}" if ref is not None else None,
    }
    if row.ok:
        data.update(
            median_wall_s=row.wall,
            mb_per_s=row.case.nbytes / row.wall / MB,
            files_per_s=len(row.case.files) / row.wall,
            median_cpu_s=row.cpu,
            peak_rss_mb=row.peak_rss / MB,
            cpu_s_per_gib=None if row.case.per_file else _cpu_per_gib(row),
            rate_vs_reference=row.rate / ref.rate if ref is not None else None,
            cpu_vs_reference=_cpu_ratio(row, ref),
        )
    return data


# -- the benchmark ------------------------------------------------------------------------------


def _parse_cases(text: str) -> list[str]:
    keys = [part.strip().lower() for part in text.split(",") if part.strip()]
    unknown = [key for key in keys if key not in CASE_KEYS]
    if not keys or unknown:
        raise argparse.ArgumentTypeError(f"a comma list of a, b, c: {text!r}")
    return [key for key in CASE_KEYS if key in keys]


def _make_cases(data_dir: str, base_url: str, sizes: Sizes, keys: Sequence[str]) -> list[Case]:
    cases: list[Case] = []
    if "a" in keys:
        big = _make_file(data_dir, "big.bin", sizes.big, random.Random(SEED))
        cases.append(
            Case("a", f"one {_size_label(sizes.big)} file", (big,), (f"{base_url}/{big.path}",))
        )
    if "b" in keys:
        slow = _make_file(data_dir, "limited.bin", sizes.limited, random.Random(SEED + 1))
        title = f"one {_size_label(sizes.limited)} file at 20 MiB/s per connection"
        cases.append(Case("b", title, (slow,), (f"{base_url}/limited/{slow.path}",)))
    if "c" in keys:
        os.makedirs(os.path.join(data_dir, "small"), exist_ok=True)
        rng = random.Random(SEED + 2)
        small = tuple(
            _make_file(data_dir, f"small/f{i:04d}.bin", sizes.small_size, rng)
            for i in range(sizes.small_count)
        )
        title = f"{sizes.small_count} files of {_size_label(sizes.small_size)}"
        cases.append(Case("c", title, small, tuple(f"{base_url}/{s.path}" for s in small)))
    return cases


def _warm_up(cases: Sequence[Case], base_url: str) -> None:
    """Fetch every file once through the server (no proxy) and check its bytes.

    This warms the server and the page cache, and proves the server right before any tool
    is measured. The rate-limited file is fetched from the unlimited location (the same
    file); ``/limited/`` gets a one-byte Range request.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for case in cases:
        request = urllib.request.Request(case.urls[0], headers={"Range": "bytes=0-0"})
        with opener.open(request, timeout=30) as response:
            if response.status != 206 or len(response.read()) != 1:
                raise RuntimeError(f"the server did not answer a Range request for {case.urls[0]}")
        for source in case.files:
            url = f"{base_url}/{source.path}"
            digest = hashlib.sha256()
            with opener.open(url, timeout=60) as response:
                while block := response.read(MIB):
                    digest.update(block)
            if digest.hexdigest() != source.sha256:
                raise RuntimeError(f"the server sent the wrong bytes for {url}")


def _dlmanager_info(env: dict[str, str], tmp: str) -> tuple[str, str]:
    code = "import dlmanager, os; print(os.path.dirname(os.path.abspath(dlmanager.__file__)));"
    code += " print(dlmanager.__version__)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot import dlmanager from {REPO}:\n{done.stderr.strip()}")
    where, version = done.stdout.split()[:2]
    return where, version


def _bench(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    missing = [tool for tool in ("curl", "aria2c") if shutil.which(tool) is None]
    for tool in missing:
        print(f"{tool} not found: `{APT_TOOLS}` provides curl and aria2c; its rows are skipped")
    #: The tools whose rows are left out, and why.
    skipped = {tool: f"{tool} not installed" for tool in missing}
    tmp = tempfile.mkdtemp(prefix="dlmanager-compare-", dir=args.tmpdir)
    server: ServerHandle | None = None
    rows: list[Row] = []
    env = _child_env()
    parfive = old = peers.Peer()
    try:
        where, version = _dlmanager_info(env, tmp)
        print(f"dlmanager {version} from {where} (python -m dlmanager, PYTHONPATH={REPO})")
        if os.path.realpath(where) != os.path.realpath(os.path.join(REPO, "dlmanager")):
            print(f"warning: that is not this checkout's {os.path.join(REPO, 'dlmanager')}")
        parfive = peers.probe_parfive(env, tmp)
        if parfive.problem:
            skipped[PARFIVE] = parfive.problem
        old_option = f"--dlmanager-{peers.OLD_VERSION}"
        if args.old_dlmanager:
            old = peers.probe_old_dlmanager(args.old_dlmanager, env, tmp)
            if old.problem:
                skipped[OLD_DLMANAGER] = old.problem
            else:
                print(f"{OLD_DLMANAGER} rows: dlmanager {old.version} from {old.where}")
                if old.version != peers.OLD_VERSION:
                    print(f"warning: {old_option} holds dlmanager {old.version}")
        else:
            skipped[OLD_DLMANAGER] = f"no {old_option} PATH given"
        for tool in (PARFIVE, OLD_DLMANAGER):
            if tool in skipped:
                print(f"{tool} rows skipped: {skipped[tool]}")
        old_path = "" if OLD_DLMANAGER in skipped else args.old_dlmanager
        data_dir = os.path.join(tmp, "data")
        os.makedirs(data_dir)
        print(f"writing the data files into {data_dir} ...", file=sys.stderr, flush=True)
        # The cases need the base URL; the files do not depend on it, so write them first
        # with a placeholder and rebuild the URLs once the server has its port.
        cases = _make_cases(data_dir, "", sizes, args.cases)
        if hasattr(os, "sync"):
            os.sync()  # written back now, not during the first measured runs
        server = start_server(args.server, tmp, data_dir)
        print(f"server: {server.description}")
        cases = [
            Case(c.key, c.title, c.files, tuple(server.base_url + url for url in c.urls))
            for c in cases
        ]
        _warm_up(cases, server.base_url)
        startup = [
            _run_once(
                [sys.executable, "-m", "dlmanager", "--version"],
                tmp,
                env,
                os.path.join(tmp, "tool.log"),
            )
            for _ in range(3)
        ]
        # The least peak RSS a tool can report: the launcher's memory at fork, which is
        # what its forked child reports when there is no program to exec.
        floor = _run_once(
            [os.path.join(tmp, "no-such-program")], tmp, env, os.path.join(tmp, "tool.log")
        ).maxrss
        for case in cases:
            case_rows = [row for row in _rows_for(case, old_path, env) if row.tool not in skipped]
            rows += case_rows
            print(f"case {case.key}: {case.title}", file=sys.stderr, flush=True)
            order = random.Random(f"{case.key}-order")
            for run in range(1, args.repeat + 1):
                # A new order each round (seeded): on a shared machine, a tool that
                # always runs right after another inherits the same memory state.
                for row in order.sample(case_rows, len(case_rows)):
                    if not row.error:
                        _run_row(row, tmp, env, run, args.repeat)
                    if server.proc.poll() is not None:
                        raise RuntimeError("the server exited during the benchmark")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    lines = [f"case {case.key}: {case.title}" for case in cases]
    lines += _table(rows)
    targets = _targets(rows, skipped)
    lines.append(
        "targets (ratio of dlmanager to the reference; n/a, with the reason, when not measurable"
        " here):"
    )
    lines += [target.line() for target in targets]
    lines.append("-" * len(HEADER))
    start_wall = statistics.median(m.wall for m in startup)
    start_cpu = statistics.median(m.cpu for m in startup)
    start_rss = max(m.maxrss for m in startup)
    fs = fs_type(os.path.realpath(os.path.dirname(tmp)))
    tools = {
        "curl": (
            " ".join(first_line(["curl", "--version"]).split()[:2])
            if "curl" not in missing
            else "curl not installed"
        ),
        "aria2c": (
            "aria2c " + first_line(["aria2c", "--version"]).split()[-1]
            if "aria2c" not in missing
            else "aria2c not installed"
        ),
        PARFIVE: f"{PARFIVE} {parfive.version}" if parfive.version else skipped[PARFIVE],
        OLD_DLMANAGER: (
            f"dlmanager {old.version} from {old.where}" if old.version else skipped[OLD_DLMANAGER]
        ),
    }
    notes = [
        f"{args.repeat} run(s) per row, in a new (seeded) order each round, after one warm-up"
        " (every"
        " file fetched through the server once and checked); medians, except peak RSS"
        " (maximum); best s is the fastest run, user s the median user-mode CPU time (the"
        " tool's own work, less sensitive than wall and sys time to the machine's noise)."
        " Each run: a fresh empty directory, the tool as a child process, every"
        " file checked against its sha256, then deleted and os.sync().",
        "MB = 10^6 bytes. CPU s: user + sys of the tool's process (os.wait4), all threads;"
        " peak RSS: its ru_maxrss (Linux counts at least the launcher's memory at fork,"
        f" {floor / MB:.1f} MB here). The server is another process and not counted.",
        "rate vs ref: throughput ratio to curl (a), to aria2c with the same connections (b),"
        " to aria2c -j8 (c); CPU vs ref only for (a). CPU s/GiB: CPU s per GiB transferred.",
        f"dlmanager rows include the interpreter: python -m dlmanager --version alone takes"
        f" {start_wall:.3f} s, {start_cpu:.3f} s CPU, {start_rss / MB:.1f} MB peak RSS."
        " dlmanager fsyncs every file (and its directory) before the rename; the other tools"
        " do not.",
        f"{PARFIVE} and {OLD_DLMANAGER} run as python -c driver scripts (benchmarks/peers.py),"
        " interpreter included, over the same URL list. parfive: Downloader(max_conn=1 for (a),"
        " 8 for (c), max_splits=1: one connection per file, as the others; its default, 5 range"
        " requests per file, was slower here on small files), progress=False; it asks for each"
        " file's headers with one GET, fetches it with another and writes to the final name."
        f" {OLD_DLMANAGER}: PYTHONPATH=PATH, DownloadManager(out).download(url) per URL,"
        " which starts a thread per download at once (0.1.1 has no limit) over one"
        " requests.Session, then each Download's wait() and the manager's wait().",
        f"server: {server.description if server else '?'}",
        "tools: " + ", ".join(tools.values()),
        f"dlmanager {version} from {where}",
        f"files in {os.path.dirname(tmp)}{f' ({fs})' if fs else ''}",
    ]
    for note in notes:
        lines += textwrap.wrap(note, width=len(HEADER), subsequent_indent="  ")
    machine = (
        f"{os.cpu_count()} CPUs, {platform.platform()},"
        f" {platform.python_implementation()} {platform.python_version()}"
    )
    command = f"python {shlex.join(sys.argv)}"
    lines += [f"machine: {machine}", f"command: {command}"]
    print("\n".join(lines), flush=True)

    failed = [row for row in rows if row.error]
    report: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
        },
        "quick": args.quick,
        "repeat": args.repeat,
        "server": server.description if server else None,
        "tools": tools,
        "dlmanager": {"version": version, "path": where},
        "peak_rss_floor_mb": floor / MB,
        "dlmanager_startup": {
            "wall_s": start_wall,
            "cpu_s": start_cpu,
            "peak_rss_mb": start_rss / MB,
        },
        "files_dir": os.path.dirname(tmp),
        "filesystem": fs or None,
        "cases": {
            case.key: {"title": case.title, "files": len(case.files), "bytes": case.nbytes}
            for case in cases
        },
        "rows": [_row_json(row, rows) for row in rows],
        "targets": [
            {
                "text": t.text,
                "value": t.value,
                "bound": t.bound,
                "met": t.met,
                "note": t.note or None,
                "unit": t.unit,
            }
            for t in targets
        ],
        "table": lines,
    }
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
            handle.write("\n")
    status = 0
    if args.chart:
        from chart import draw  # matplotlib: only with --chart, checked before the run

        try:
            draw(report, args.chart)
            print(f"chart: {args.chart}")
        except (OSError, ValueError) as exc:
            print(f"compare: cannot write the chart {args.chart}: {exc}", file=sys.stderr)
            status = 1
    if failed:
        print(
            f"compare: {len(failed)} row(s) failed: " + ", ".join(row.label for row in failed),
            file=sys.stderr,
        )
        status = 1
    return status


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Compare the dlmanager command line with curl, aria2c, parfive and"
        " dlmanager 0.1.1 against a loopback server (nginx when installed): throughput, CPU"
        " and peak memory."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="bounded variant: 64 MiB, 32 MiB limited, 100 small files, 1 run per row",
    )
    parser.add_argument("--repeat", type=int, default=None, help="runs per row (default 3)")
    parser.add_argument(
        "--cases",
        type=_parse_cases,
        default=list(CASE_KEYS),
        help="comma list of cases to run: a (one big file), b (rate-limited file, 1 and 8"
        " connections), c (many small files); default a,b,c",
    )
    parser.add_argument(
        "--tmpdir", default=None, help="directory for the temporary files (default: system's)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--chart",
        metavar="PNG",
        help="also draw the medians as a PNG bar chart (needs matplotlib; re-draw from a --json"
        " file with benchmarks/chart.py)",
    )
    parser.add_argument(
        f"--dlmanager-{peers.OLD_VERSION}",
        dest="old_dlmanager",
        metavar="PATH",
        help=f"also run dlmanager {peers.OLD_VERSION}, the version this project replaces, in"
        " cases a and c: PATH is the directory that holds its dlmanager package (it needs six"
        " and requests)",
    )
    parser.add_argument(
        "--server",
        choices=["auto", "nginx", "python"],
        default="auto",
        help="the loopback server (default auto: nginx when installed, else Python)",
    )
    args = parser.parse_args(argv)

    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.repeat <= 0:
        parser.error("--repeat must be positive")
    if args.chart:
        # Checked before a run of several minutes, not after it.
        from chart import matplotlib_problem

        problem = matplotlib_problem()
        if problem:
            print(f"compare: {problem}", file=sys.stderr)
            return 2
        folder = os.path.dirname(os.path.abspath(args.chart))
        if not os.path.isdir(folder):
            parser.error(f"--chart: no directory {folder}")
    try:
        return _bench(args)
    except KeyboardInterrupt:
        print("compare: interrupted", file=sys.stderr)
        return 130
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
