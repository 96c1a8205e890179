#!/usr/bin/env python3
"""Soak dlmanager: thousands of downloads through a server that misbehaves at random.

Run from a checkout as ``python benchmarks/soak.py`` (10,000 downloads; see
docs/reliability.rst for its duration), or ``python benchmarks/soak.py --quick``
(300 downloads in well under a minute; CI runs it). ``--help`` lists the options.

The script starts a :class:`tests.chaos.ChaosServer` on 127.0.0.1 (drops,
stalls, truncated bodies, 429/500/503 with and without Retry-After, ignored
ranges, wrong Content-Range, files changing content and validators between
requests, all drawn from ``--seed``), then ``--processes`` child processes
(this script with the hidden ``--child`` option), each running ``--managers``
:class:`~dlmanager.DownloadManager` objects (half over 4 connections per file,
half over one) in threads, all sharing ONE destination directory capped by a
:class:`~dlmanager.PersistLimit` below the total size, so that files are
evicted and downloaded again. Files are small (bytes to 64 KiB), medium (up to
1 MiB) or big (1 to 4 MiB); every name is requested by several managers and
processes; one request in ten passes ``checksum=`` with the digest of the
first version of the file; a few files answer every request with an error
status, so they can only fail.

At the end it checks, and exits 1 when a check fails:

* every download that reports success holds exactly one version the server
  sent (its sha256, read under a pin as soon as the download finishes), and
  the version of its checksum when it gave one: corrupted = 0;
* every failure is a :class:`~dlmanager.DownloadError` whose message names the
  URL, raised after the retry budget (a retryable error with ``RetryPolicy.total``
  failed attempts before it), or a :class:`~dlmanager.ChecksumError` of a file
  that changed on the server;
* every file left in the directory is one whole version of its name (nothing
  partial under a final name), and no temporary or checkpoint file is left;
* the directory holds nothing but those files: no ``.dlmanager/`` folder
  (its lock, pin and reservation files go with the downloads), and every
  child held no file lock once its managers were closed (``/proc/locks``);
* the size cap holds: the files left total less than the cap, or are no more
  than ``file_limit`` files (the most recently used files are kept anyway);
* in every child, the number of threads and open file descriptors is back to
  its value before the managers were created (waiting at most 8 s for idle
  helper threads to end): leaked = 0.

It prints details, then one summary line. Standard library, dlmanager and the
checkout's tests/chaos.py only.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB = 1024
MiB = 1024 * 1024
#: The block size of the per-block digests kept to diagnose a corrupted file.
BLOCK = 64 * KiB

#: The client's timeouts: the server's stalls (STALL_SECONDS) outlast the read timeout.
CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 0.5
STALL_WINDOW = 3.0
STALL_SECONDS = 1.0
#: The client's retry policy: the default budget, with short waits.
RETRY_TOTAL = 5
BACKOFF_FACTOR = 0.01
BACKOFF_MAX = 0.1
RETRY_AFTER_MAX = 0.2
#: The managers' options.
MAX_WORKERS = 4
CONNECTIONS = 4
MIN_SPLIT_SIZE = 256 * KiB
FILE_LIMIT = 5
#: The cap, as a share of the total size of the files that can be downloaded.
CAP_SHARE = 0.4
#: Downloads a manager's driver keeps started at once.
WINDOW = 2 * MAX_WORKERS
#: Share of requests that pass checksum= (the digest of the file's first version),
#: unless --checksums says otherwise.
CHECKSUM_SHARE = 0.1
#: One file in this many can never be downloaded (every GET gets an error status).
DOOMED_EVERY = 100
#: Longest wait, in seconds, for a child's threads and file descriptors to
#: return to their baseline once its managers are closed (idle request
#: threads of dlmanager end after 5 s).
LEAK_WAIT = 8.0
QUICK = {"files": 300, "processes": 4, "managers": 2}
LONG = {"files": 10000, "processes": 6, "managers": 2}


def _use_checkout() -> None:
    """Import dlmanager (and tests.chaos) from this checkout."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)


def _sha256(handle: Any) -> str:
    digest = hashlib.sha256()
    while block := handle.read(MiB):
        digest.update(block)
    return digest.hexdigest()


def _digest_and_blocks(handle: Any) -> tuple[str, int, list[str]]:
    """The sha256, the size and short digests of the BLOCK-sized blocks of a file
    (so that a corrupted file can be told which versions its blocks come from)."""
    digest = hashlib.sha256()
    blocks = []
    size = 0
    while block := handle.read(BLOCK):
        digest.update(block)
        blocks.append(hashlib.sha256(block).hexdigest()[:12])
        size += len(block)
    return digest.hexdigest(), size, blocks


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def _own_locks() -> int:
    """File locks held by this process, from /proc/locks (Linux; 0 elsewhere)."""
    pid = str(os.getpid())
    held = 0
    try:
        with open("/proc/locks", encoding="ascii") as handle:
            for line in handle:
                # "1: FLOCK  ADVISORY  WRITE PID MAJ:MIN:INODE 0 EOF"; "1: -> ..." waits
                fields = [field for field in line.split() if field != "->"]
                held += fields[4:5] == [pid]
    except OSError:
        return 0
    return held


# -- the workload -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Task:
    """One download request: a name, by a manager of a process, maybe with a checksum."""

    index: int
    process: int
    manager: int
    name: str
    checksum: str | None


@dataclasses.dataclass(frozen=True)
class Workload:
    sizes: dict[str, int]
    doomed: dict[str, str]  # name -> the fault answered to every GET
    tasks: list[Task]
    cap: int


def make_workload(
    files: int, processes: int, managers: int, seed: int, checksums: float = CHECKSUM_SHARE
) -> Workload:
    """Draw the files and the download requests from *seed*."""
    rng = random.Random(f"soak:{seed}")
    unique = max(8, files // 3)
    sizes: dict[str, int] = {}
    doomed: dict[str, str] = {}
    for i in range(unique):
        if i % DOOMED_EVERY == DOOMED_EVERY - 1:
            name = f"doomed{i:05d}.bin"
            doomed[name] = "503" if len(doomed) % 2 == 0 else "500"
            sizes[name] = rng.randint(1, 64 * KiB)
            continue
        draw = rng.random()
        if draw < 0.15:
            size = rng.randint(1 * MiB, 4 * MiB)
        elif draw < 0.35:
            size = rng.randint(64 * KiB, 1 * MiB)
        else:
            size = rng.randint(1, 64 * KiB)
        sizes[f"file{i:05d}.bin"] = size
    names = sorted(sizes)
    tasks = []
    for index in range(files):
        name = rng.choice(names)
        wants_checksum = rng.random() < checksums and name not in doomed
        tasks.append(
            Task(
                index=index,
                process=rng.randrange(processes),
                manager=rng.randrange(managers),
                name=name,
                checksum="v0" if wants_checksum else None,  # resolved by the parent
            )
        )
    downloadable = sum(size for name, size in sizes.items() if name not in doomed)
    cap = max(int(downloadable * CAP_SHARE), 3 * 4 * MiB)
    return Workload(sizes, doomed, tasks, cap)


# -- a child process ----------------------------------------------------------------------


def _child(spec_path: str, result_path: str) -> int:
    _use_checkout()
    from dlmanager import DownloadManager, PersistLimit, RetryPolicy, Timeouts

    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    policy = RetryPolicy(
        total=RETRY_TOTAL,
        backoff_factor=BACKOFF_FACTOR,
        backoff_max=BACKOFF_MAX,
        retry_after_max=RETRY_AFTER_MAX,
    )
    timeouts = Timeouts(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT, stall=STALL_WINDOW)
    threads_before, fds_before = threading.active_count(), _fd_count()
    started = time.monotonic()
    managers = [
        DownloadManager(
            spec["destdir"],
            persist_limit=PersistLimit(spec["cap"], file_limit=FILE_LIMIT),
            max_workers=MAX_WORKERS,
            retry=policy,
            timeout=timeouts,
            connections=connections,
            min_split_size=MIN_SPLIT_SIZE,
        )
        for connections in spec["connections"]
    ]
    by_manager: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
    for task in spec["tasks"]:
        by_manager[task["manager"]].append(task)
    records: list[dict[str, Any]] = []
    errors: list[str] = []

    def drive(m: int) -> None:
        try:
            _drive(managers[m], spec["base_url"], by_manager[m], policy, records)
        except BaseException as exc:  # reported by the parent
            errors.append(f"manager {m}: {exc!r}")

    drivers = [
        threading.Thread(target=drive, args=(m,), name=f"soak-driver-{m}")
        for m in range(len(managers))
    ]
    try:
        for driver in drivers:
            driver.start()
        for driver in drivers:
            driver.join()
    finally:
        for manager in managers:
            manager.close()
    elapsed = time.monotonic() - started
    managers.clear()
    deadline = time.monotonic() + LEAK_WAIT

    def back() -> bool:
        return threading.active_count() <= threads_before and _fd_count() <= fds_before

    while not back() and time.monotonic() < deadline:
        time.sleep(0.1)
    # What only the cyclic garbage collector would release is told apart from a leak.
    threads_waited, fds_waited, targets = threading.active_count(), _fd_count(), _fd_targets()
    gc.collect()
    while not back() and time.monotonic() < deadline + 1.0:
        time.sleep(0.1)
    result = {
        "records": records,
        "errors": errors,
        "elapsed": elapsed,
        "threads_before": threads_before,
        "threads_waited": threads_waited,
        "threads_after": threading.active_count(),
        "thread_names": sorted(t.name for t in threading.enumerate()),
        "fds_before": fds_before,
        "fds_waited": fds_waited,
        "fds_waited_targets": sorted(targets),
        "fds_after": _fd_count(),
        "fd_targets": sorted(_fd_targets()),
        "locks_held": _own_locks(),
    }
    with open(result_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


def _fd_targets() -> list[str]:
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return targets


def _drive(
    manager: Any,
    base_url: str,
    tasks: list[dict[str, Any]],
    policy: Any,
    records: list[dict[str, Any]],
) -> None:
    """Run *tasks* through *manager*, keeping WINDOW downloads started at once."""
    from dlmanager import DownloadState, EventKind

    inflight: collections.deque[tuple[dict[str, Any], Any]] = collections.deque()
    # The downloads in flight, with the record of the task that started each.
    owners: dict[int, tuple[Any, dict[str, Any]]] = {}

    def verify(name: str, record: dict[str, Any]) -> None:
        """Record the sha256 of *name*, read under a pin, unless it is gone already."""
        try:
            with manager.open(name) as handle:
                record["digest"], record["size"], record["blocks"] = _digest_and_blocks(handle)
        except FileNotFoundError:
            pass

    def start(task: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "index": task["index"],
            "process": task["process"],
            "manager": task["manager"],
            "name": task["name"],
            "checksum": task["checksum"] is not None,
            "outcome": None,
            "digest": None,
            "retries": 0,
            "resumes": 0,
            "restarts": 0,
            "error": None,
            "started": time.time(),
        }
        records.append(record)

        def on_event(event: Any) -> None:
            kind = event.kind
            if kind is EventKind.RETRYING:
                record["retries"] += 1
            elif kind is EventKind.RESUMED:
                record["resumes"] += 1
            elif kind is EventKind.RESTARTED:
                record["restarts"] += 1
            elif kind is EventKind.FINISHED and event.download.state is DownloadState.DONE:
                try:
                    verify(task["name"], record)
                except Exception as exc:
                    record["verify_error"] = repr(exc)

        url = f"{base_url}/{task['name']}"
        download = manager.download(url, task["name"], on_event=on_event, checksum=task["checksum"])
        if download is None:
            record["outcome"] = "hit"
            verify(task["name"], record)
            record["ended"] = time.time()
            return
        owner = owners.get(id(download))
        if owner is not None and owner[0] is download:
            record["joined"] = owner[1]["index"]
            record["joined_checksum"] = owner[1]["checksum"]
        else:
            owners[id(download)] = (download, record)
        inflight.append((record, download))

    def finish(record: dict[str, Any], download: Any) -> None:
        download.wait(raise_if_error=False)
        record["ended"] = time.time()
        if "joined" in record:
            owner = owners[id(download)][1]
            for key in ("digest", "size", "blocks"):
                record[key] = owner.get(key)
        elif not any(other is download for _, other in inflight):
            del owners[id(download)]  # no task joined it is left: its id may be reused
        state = download.state
        if state is DownloadState.DONE:
            record["outcome"] = "done"
        elif state is DownloadState.FAILED:
            record["outcome"] = "failed"
            record["error"] = _describe(download.error()[1], download.get_url(), policy)
        else:
            record["outcome"] = state.value

    for task in tasks:
        while len(inflight) >= WINDOW:
            finish(*inflight.popleft())
        start(task)
    while inflight:
        finish(*inflight.popleft())


def _describe(error: BaseException, url: str, policy: Any) -> dict[str, Any]:
    from dlmanager import DownloadError

    is_download_error = isinstance(error, DownloadError)
    return {
        "class": type(error).__name__,
        "message": str(error),
        "download_error": is_download_error,
        "names_url": url in str(error),
        "retryable": is_download_error and policy.is_retryable(error),
        "history": len(getattr(error, "history", ())),
    }


# -- the parent ---------------------------------------------------------------------------


@dataclasses.dataclass
class Checks:
    """What the parent found; every list holds one line per problem."""

    corrupted: list[str] = dataclasses.field(default_factory=list)
    unclear: list[str] = dataclasses.field(default_factory=list)
    leftovers: list[str] = dataclasses.field(default_factory=list)
    leaked: list[str] = dataclasses.field(default_factory=list)
    cap: list[str] = dataclasses.field(default_factory=list)
    children: list[str] = dataclasses.field(default_factory=list)
    gc_held: list[str] = dataclasses.field(default_factory=list)
    """Resources released only by the cyclic garbage collector (a problem with --strict)."""
    strict: bool = False

    def problems(self) -> list[str]:
        return [*self.children, *self.corrupted, *self.unclear, *self.leftovers, *self.leaked,
                *self.cap, *(self.gc_held if self.strict else ())]  # fmt: skip


def _spawn(spec: dict[str, Any], workdir: str, index: int) -> tuple[subprocess.Popen[bytes], str]:
    spec_path = os.path.join(workdir, f"child{index}.json")
    result_path = os.path.join(workdir, f"result{index}.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    stderr = open(os.path.join(workdir, f"child{index}.err"), "wb")  # noqa: SIM115
    with stderr:
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--child", spec_path, result_path],
            stdin=subprocess.DEVNULL,
            stdout=stderr,
            stderr=stderr,
            env=env,
            cwd=REPO,
        )
    return child, result_path


class _Sampler(threading.Thread):
    """Samples the total size of the final files in a directory while the soak runs."""

    def __init__(self, directory: str) -> None:
        super().__init__(name="soak-sampler", daemon=True)
        self.directory = directory
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            total = 0
            try:
                with os.scandir(self.directory) as entries:
                    for entry in entries:
                        if not entry.name.startswith("."):
                            try:
                                total += entry.stat().st_size
                            except OSError:
                                pass
            except OSError:
                continue
            self.peak = max(self.peak, total)


def _collect(
    children: list[tuple[subprocess.Popen[bytes], str]],
    workdir: str,
    timeout: float,
    checks: Checks,
    results: list[dict[str, Any]],
) -> None:
    """Wait for the children (*timeout* seconds in all) and load their results."""
    deadline = time.monotonic() + timeout
    for index, (child, result_path) in enumerate(children):
        try:
            child.wait(max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            checks.children.append(f"child {index} did not finish within {timeout:.0f} s")
            continue
        with open(os.path.join(workdir, f"child{index}.err"), "rb") as handle:
            output = handle.read().decode(errors="replace").strip()
        if child.returncode != 0 or not os.path.exists(result_path):
            checks.children.append(
                f"child {index} exited with {child.returncode}: {output[-2000:]}"
            )
            continue
        if output:  # a traceback of a thread, a warning...
            checks.children.append(f"child {index} wrote: {output[-2000:]}")
        with open(result_path, encoding="utf-8") as handle:
            results.append(json.load(handle))


def _run(args: argparse.Namespace) -> int:
    _use_checkout()
    from dlmanager.disk.layout import STATE_DIR, is_temporary
    from tests.chaos import ChaosConfig, ChaosFile, ChaosServer, Fault

    began = time.monotonic()
    workload = make_workload(args.files, args.processes, args.managers, args.seed, args.checksums)
    files = [
        ChaosFile(name, size, Fault(workload.doomed[name]) if name in workload.doomed else None)
        for name, size in sorted(workload.sizes.items())
    ]
    workdir = tempfile.mkdtemp(prefix="dlmanager-soak-")
    destdir = os.path.join(workdir, "dest")
    os.mkdir(destdir)
    config = ChaosConfig(seed=args.seed, rates=_rates(args.faults), stall_seconds=STALL_SECONDS)
    checks = Checks(strict=args.strict)
    results: list[dict[str, Any]] = []
    connections = [CONNECTIONS if m % 2 == 0 else 1 for m in range(args.managers)]
    with ChaosServer(files, config) as server:
        first = {name: "sha256:" + server.sha256(name, 0) for name in workload.sizes}
        children = []
        for p in range(args.processes):
            tasks = [
                {
                    "index": t.index,
                    "process": t.process,
                    "manager": t.manager,
                    "name": t.name,
                    "checksum": first[t.name] if t.checksum else None,
                }
                for t in workload.tasks
                if t.process == p
            ]
            spec = {
                "base_url": server.base_url,
                "destdir": destdir,
                "cap": workload.cap,
                "connections": connections,
                "tasks": tasks,
            }
            children.append(_spawn(spec, workdir, p))
        sampler = _Sampler(destdir)
        sampler.start()
        try:
            _collect(children, workdir, args.timeout, checks, results)
        finally:
            for child, _ in children:
                if child.poll() is None:  # the parent was interrupted
                    child.kill()
                    child.wait()
        sampler.stop.set()
        sampler.join()
        stats = server.stats
        versions = {name: server.digests(name) for name in workload.sizes}
        changed = {name for name in workload.sizes if server.version(name) > 0}
        changes = server.changes()
    records = [record for result in results for record in result["records"]]
    for result in results:
        checks.children.extend(f"child: {error}" for error in result["errors"])
    if not checks.children and len(records) != len(workload.tasks):
        checks.children.append(f"{len(records)} downloads recorded, {len(workload.tasks)} run")
    _check_records(records, workload, versions, first, changed, checks)
    for index, line in enumerate(checks.corrupted):
        record = next((r for r in records if line.startswith(f"download #{r['index']} ")), None)
        if record is not None and record.get("blocks"):
            file = server.files[record["name"]]
            checks.corrupted[index] += ": " + _explain(record, file, len(versions[file.name]))
    _check_children(results, checks)
    listing = _check_directory(destdir, workload, versions, checks, is_temporary, STATE_DIR)
    elapsed = time.monotonic() - began
    report = _report(args, workload, records, results, stats, listing, sampler.peak, checks,
                     elapsed, changes)  # fmt: skip
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if checks.problems() else 0


def _rates(scale: float) -> dict[Any, float]:
    """The chaos server's default rates times *scale* (the request faults at most 1 in all)."""
    from tests.chaos import DEFAULT_RATES, REQUEST_FAULTS

    rates = {fault: min(1.0, rate * scale) for fault, rate in DEFAULT_RATES.items()}
    total = sum(rates[fault] for fault in REQUEST_FAULTS)
    if total > 1.0:
        rates.update({fault: rates[fault] / total for fault in REQUEST_FAULTS})
    return rates


def _check_records(
    records: list[dict[str, Any]],
    workload: Workload,
    versions: dict[str, dict[str, int]],
    first: dict[str, str],
    changed: set[str],
    checks: Checks,
) -> None:
    for record in records:
        name, outcome = record["name"], record["outcome"]
        where = f"download #{record['index']} of {name}"
        if "verify_error" in record:
            checks.corrupted.append(f"{where}: reading it failed: {record['verify_error']}")
        if outcome in ("done", "hit"):
            digest = record["digest"]
            if name in workload.doomed:
                checks.corrupted.append(f"{where}: succeeded, but the server never sent it")
            elif digest is not None and digest not in versions[name]:
                checks.corrupted.append(f"{where}: {outcome}, but its bytes are no version served")
            elif digest is not None and record["checksum"] and digest != first[name][7:]:
                how = ""
                if "joined" in record:
                    how = f" (it joined download #{record['joined']}, which had no checksum)"
                checks.corrupted.append(
                    f"{where}: {outcome} with checksum= of version 0, but holds version "
                    f"{versions[name][digest]}{how}"
                )
        elif outcome == "failed":
            problem = _unclear(record, changed)
            if problem is not None:
                checks.unclear.append(f"{where}: {problem}: {record['error']}")
        else:
            checks.unclear.append(f"{where}: ended {outcome}")


def _explain(record: dict[str, Any], file: Any, count: int) -> str:
    """Which version each block of a corrupted download comes from, as runs."""
    known: dict[str, list[int]] = collections.defaultdict(list)
    for version in range(count):
        data = file.read(version)
        for i in range(0, len(data), BLOCK):
            known[f"{i // BLOCK}:" + hashlib.sha256(data[i : i + BLOCK]).hexdigest()[:12]].append(
                version
            )
    runs: list[list[Any]] = []
    for i, short in enumerate(record["blocks"]):
        versions = known.get(f"{i}:{short}")
        label = "v" + "/".join(map(str, versions)) if versions else "?"
        if runs and runs[-1][0] == label:
            runs[-1][2] = i
        else:
            runs.append([label, i, i])
    parts = [f"blocks {a}-{b} {label}" if a != b else f"block {a} {label}" for label, a, b in runs]
    return (
        f"{record.get('size')} of {file.size} bytes, {count} version(s) served, "
        f"{record['retries']} retries, {record['resumes']} resumes, {record['restarts']} "
        f"restarts; " + ", ".join(parts)
    )


def _unclear(record: dict[str, Any], changed: set[str]) -> str | None:
    """Why a failure is not a clear DownloadError after the retry budget, or None."""
    error = record["error"]
    if not error["download_error"]:
        return "not a DownloadError"
    if not error["names_url"]:
        return "its message does not name the URL"
    if error["retryable"]:
        if error["history"] < RETRY_TOTAL:
            return f"gave up after {error['history']} failed attempts, before the budget"
        return None
    # A task that joined a running download shares its outcome, so its checksum.
    checksum = record.get("joined_checksum", record["checksum"])
    if error["class"] == "ChecksumError" and checksum and record["name"] in changed:
        return None
    return "not retryable, and not the checksum mismatch of a changed file"


def _check_children(results: list[dict[str, Any]], checks: Checks) -> None:
    for index, result in enumerate(results):
        held = result["fds_waited"] - max(result["fds_after"], result["fds_before"])
        if held > 0:
            checks.gc_held.append(
                f"child {index}: {held} file descriptor(s) still open {LEAK_WAIT:.0f} s after "
                f"the managers were closed, released by gc.collect(): "
                f"{sorted(set(result['fds_waited_targets']) - set(result['fd_targets']))}"
            )
        threads = result["threads_after"] - result["threads_before"]
        fds = result["fds_after"] - result["fds_before"]
        if threads > 0:
            checks.leaked.append(
                f"child {index}: {threads} thread(s) left: {', '.join(result['thread_names'])}"
            )
        if fds > 0:
            checks.leaked.append(
                f"child {index}: {fds} file descriptor(s) left: {result['fd_targets']}"
            )
        if result["locks_held"]:
            checks.leaked.append(f"child {index}: {result['locks_held']} file lock(s) held")


def _check_directory(
    destdir: str,
    workload: Workload,
    versions: dict[str, dict[str, int]],
    checks: Checks,
    is_temporary: Any,
    state_dir: str,
) -> dict[str, int]:
    """Check the files left; return their sizes by name."""
    listing: dict[str, int] = {}
    for name in sorted(os.listdir(destdir)):
        path = os.path.join(destdir, name)
        if name == state_dir:
            left = sorted(os.listdir(path))
            checks.leftovers.append(f"coordination folder {state_dir}/ left, holding {left}")
            continue
        if is_temporary(name):
            checks.leftovers.append(f"temporary file left: {name}")
            continue
        if name not in workload.sizes:
            checks.leftovers.append(f"unexpected file: {name}")
            continue
        listing[name] = os.path.getsize(path)
        with open(path, "rb") as handle:
            digest = _sha256(handle)
        if digest not in versions[name]:
            checks.corrupted.append(
                f"{name} in the directory is no version served ({listing[name]} bytes, "
                f"{workload.sizes[name]} expected)"
            )
    total = sum(listing.values())
    if total >= workload.cap and len(listing) > FILE_LIMIT:
        checks.cap.append(
            f"cap exceeded: {len(listing)} files, {total} bytes, cap {workload.cap} bytes"
        )
    return listing


def _report(
    args: argparse.Namespace,
    workload: Workload,
    records: list[dict[str, Any]],
    results: list[dict[str, Any]],
    stats: Any,
    listing: dict[str, int],
    peak: int,
    checks: Checks,
    elapsed: float,
    changes: list[tuple[float, str, int]],
) -> dict[str, Any]:
    outcomes = collections.Counter(record["outcome"] for record in records)
    failures = [record for record in records if record["outcome"] == "failed"]
    by_class = collections.Counter(record["error"]["class"] for record in failures)
    unverified = sum(1 for r in records if r["outcome"] in ("done", "hit") and r["digest"] is None)
    retries = sum(record["retries"] for record in records)
    resumes = sum(record["resumes"] for record in records)
    restarts = sum(record["restarts"] for record in records)
    faults = {fault.value: count for fault, count in stats.faults.items()}
    total_size = sum(size for name, size in workload.sizes.items() if name not in workload.doomed)
    for line in checks.problems()[:50]:
        print(f"FAIL {line}", file=sys.stderr)
    if len(checks.problems()) > 50:
        print(f"FAIL ... and {len(checks.problems()) - 50} more", file=sys.stderr)
    print(
        f"outcomes: {outcomes['done']} downloaded, {outcomes['hit']} already there, "
        f"{outcomes['failed']} failed ({_counts(by_class) or 'none'}); "
        f"{len(failures) - len(checks.unclear)} clear; "
        f"{sum(1 for r in records if 'joined' in r)} joined a running download; "
        f"{unverified} evicted before they could be read"
    )
    print(
        f"server: {stats.requests} requests, {stats.partial} answered 206, "
        f"{stats.bytes_sent / MiB:.0f} MiB sent, {stats.retry_after} Retry-After; "
        f"directory: {len(listing)} files, {sum(listing.values()) / MiB:.1f} MiB left, "
        f"peak {peak / MiB:.1f} MiB, cap {workload.cap / MiB:.1f} MiB"
    )
    leaked = len(checks.leaked) + (len(checks.gc_held) if checks.strict else 0)
    for line in [] if checks.strict else checks.gc_held:
        print(f"note: {line}", file=sys.stderr)
    fault_text = " ".join(f"{kind}={count}" for kind, count in faults.items())
    summary = (
        f"soak: {len(records)} downloads ({args.processes} processes x {args.managers} "
        f"managers, {len(workload.sizes)} files, {total_size / MiB:.0f} MiB, seed {args.seed}), "
        f"faults: {fault_text}, retries={retries}, resumes={resumes}, restarts={restarts}, "
        f"failures={len(failures)} ("
        + ("all DownloadError" if not checks.unclear else f"{len(checks.unclear)} unclear")
        + f"), corrupted={len(checks.corrupted)}, leaked={leaked}"
        + ("" if checks.strict or not checks.gc_held else f" (gc-held={len(checks.gc_held)})")
        + ", "
        + ("cap held" if not checks.cap else "CAP EXCEEDED")
        + ("" if not checks.leftovers else f", leftovers={len(checks.leftovers)}")
        + ("" if not checks.children else f", children failed={len(checks.children)}")
        + f", {elapsed:.1f} s"
    )
    print(summary)
    return {
        "summary": summary,
        "command": " ".join(["python", "benchmarks/soak.py", *sys.argv[1:]]),
        "seed": args.seed,
        "downloads": len(records),
        "processes": args.processes,
        "managers": args.managers,
        "files": len(workload.sizes),
        "cap": workload.cap,
        "outcomes": dict(outcomes),
        "failures": dict(by_class),
        "faults": faults,
        "retries": retries,
        "resumes": resumes,
        "restarts": restarts,
        "unverified": unverified,
        "problems": checks.problems(),
        "elapsed": elapsed,
        "children": [{k: v for k, v in result.items() if k != "records"} for result in results],
        "records": records if args.records else [],
        "changes": changes if args.records else [],
        "machine": f"{os.cpu_count()} CPUs, {platform.platform()}, "
        f"{platform.python_implementation()} {platform.python_version()}",
    }


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Soak dlmanager with thousands of downloads through a faulty server.",
    )
    parser.add_argument(
        "--files", type=int, help=f"downloads to run (default {LONG['files']}; a third as "
        "many distinct files)"
    )  # fmt: skip
    parser.add_argument(
        "--processes", type=int, help=f"child processes (default {LONG['processes']})"
    )
    parser.add_argument(
        "--managers",
        type=int,
        help=f"DownloadManagers per process, in threads (default {LONG['managers']})",
    )
    parser.add_argument("--seed", type=int, default=1, help="names the run (default 1)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"the bounded variant CI runs: {QUICK['files']} downloads by "
        f"{QUICK['processes']} processes, unless --files or --processes say otherwise",
    )
    parser.add_argument(
        "--faults",
        type=float,
        default=1.0,
        help="multiply the fault rates of tests/chaos.py by this (default 1: about one "
        "request in four misbehaves)",
    )
    parser.add_argument(
        "--checksums",
        type=float,
        default=CHECKSUM_SHARE,
        help=f"share of the downloads that pass checksum= (default {CHECKSUM_SHARE})",
    )
    parser.add_argument("--json", metavar="FILE", help="write a report in JSON to FILE")
    parser.add_argument(
        "--timeout", type=float, default=None, help="seconds the children may take in all"
    )
    parser.add_argument("--keep", action="store_true", help="keep the destination directory")
    parser.add_argument(
        "--records", action="store_true", help="include every download's record in --json"
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="count as leaked what only the garbage collector releases after the managers close",
    )
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(*args.child)
    defaults = QUICK if args.quick else LONG
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.faults < 0:
        parser.error("--faults must be at least 0")
    if not 0 <= args.checksums <= 1:
        parser.error("--checksums must be in [0, 1]")
    if args.timeout is None:
        args.timeout = 120.0 + 1.0 * args.files
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
