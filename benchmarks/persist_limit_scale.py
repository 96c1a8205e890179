#!/usr/bin/env python3
"""Measure :class:`dlmanager.PersistLimit` on a destination directory of many files.

Run from a checkout as ``python benchmarks/persist_limit_scale.py`` (``--files N`` for
another size, ``--quick`` for 10,000 files, ``--help`` for the options). The script:

* creates *N* files of a few bytes in a temporary directory, with distinct access times;
* for each way the manager can build its index, ``PersistLimit(...)`` +
  ``register_dir_content(dir)`` and ``PersistLimit(...)`` + ``watch(dir)`` (a live
  watchdog observer), runs a fresh child process (this script with the hidden
  ``--child`` option) that times building the index, then simulates finished
  downloads: each writes a hidden temporary file, renames it onto its name (as a
  download does), and times ``touch(path)`` + ``remove_old_files()`` under a cap that
  makes exactly one file go each time; the child reports its resident set size before
  and after building the index, and its peak;
* prints a table, says whether the targets are met (index under 1 s, every
  ``touch`` + ``remove_old_files`` under 10 ms), and removes its temporary directory.

Standard library and dlmanager only. The dlmanager measured is the one of this
checkout (the directory above ``benchmarks``), not whatever copy is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MB = 1000 * 1000
#: Bytes per file: "a few bytes".
FILE_SIZE = 4
#: Access time of file i: BASE + i (the oldest files go first).
BASE = 1_600_000_000
INDEX_TARGET = 1.0
EVICT_TARGET = 0.010
VARIANTS = ("register_dir_content", "watch")
CHILD_TIMEOUT = 600.0


def _use_checkout() -> None:
    """Import dlmanager from this checkout rather than from an installed copy."""
    if os.path.isfile(os.path.join(REPO, "dlmanager", "__init__.py")) and REPO not in sys.path:
        sys.path.insert(0, REPO)


def _rss() -> int:
    """The current resident set size of this process, in bytes (the peak if unknown)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _max_rss()


def _max_rss() -> int:
    """The peak resident set size of this process so far, in bytes (0 if unknown)."""
    if resource is None:
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


# -- the measured process (``--child VARIANT DIR``) -------------------------------------


def _child(variant: str, directory: str, downloads: int) -> int:
    _use_checkout()
    from dlmanager.persist_limit import PersistLimit

    names = os.listdir(directory)
    count = sum(1 for name in names if not name.startswith("."))
    # One more file of FILE_SIZE bytes makes the total reach the cap: one eviction.
    size_limit = count * FILE_SIZE + 1
    rss_before = _rss()
    start = time.perf_counter()
    limit = PersistLimit(size_limit, file_limit=5)
    if variant == "watch":
        limit.watch(directory)
    else:
        limit.register_dir_content(directory)
    index_time = time.perf_counter() - start
    rss_index = _rss()
    live = limit.watching
    indexed = len(limit.files)
    times: list[float] = []
    evicted = 0
    try:
        for i in range(downloads):
            name = f"{variant}-{i:04d}.bin"
            temporary = os.path.join(directory, f".{name}.0123abcd.part")
            path = os.path.join(directory, name)
            with open(temporary, "wb") as handle:
                handle.write(b"n" * FILE_SIZE)
            os.replace(temporary, path)
            start = time.perf_counter()
            limit.touch(path)
            removed = limit.remove_old_files()
            times.append(time.perf_counter() - start)
            evicted += len(removed)
    finally:
        limit.close()
    json.dump(
        {
            "variant": variant,
            "files": indexed,
            "live": live,
            "index_time": index_time,
            "median": statistics.median(times) if times else 0.0,
            "p95": sorted(times)[int(0.95 * (len(times) - 1))] if times else 0.0,
            "max": max(times, default=0.0),
            "downloads": len(times),
            "evicted": evicted,
            "rss_before": rss_before,
            "rss_index": rss_index,
            "rss_peak": _max_rss(),
        },
        sys.stdout,
    )
    return 0


# -- the driver ---------------------------------------------------------------------------


def _populate(directory: str, count: int) -> None:
    payload = b"f" * FILE_SIZE
    for i in range(count):
        path = os.path.join(directory, f"f{i:07d}.bin")
        with open(path, "wb") as handle:
            handle.write(payload)
        os.utime(path, (BASE + i, BASE + i))


def _run_child(variant: str, directory: str, downloads: int) -> dict[str, Any]:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        variant,
        "--dir",
        directory,
        "--downloads",
        str(downloads),
    ]
    done = subprocess.run(
        command, check=True, capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )
    if done.stderr.strip():
        print(done.stderr.rstrip(), file=sys.stderr)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def _bench(count: int, downloads: int, tmpdir: str | None) -> int:
    directory = tempfile.mkdtemp(prefix="dlmanager-persist-limit-", dir=tmpdir)
    try:
        start = time.perf_counter()
        _populate(directory, count)
        print(
            f"Created {count:,} files of {FILE_SIZE} bytes in {directory} "
            f"({time.perf_counter() - start:.1f} s)."
        )
        results = [_run_child(variant, directory, downloads) for variant in VARIANTS]
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    _report(results, count, downloads)
    met = all(
        r["index_time"] < INDEX_TARGET and r["max"] < EVICT_TARGET and r["evicted"] == downloads
        for r in results
    )
    return 0 if met else 1


def _report(results: list[dict[str, Any]], count: int, downloads: int) -> None:
    header = (
        f"{'index built by':<22}{'files':>9}{'live':>6}{'index s':>9}"
        f"{'median ms':>11}{'p95 ms':>8}{'max ms':>8}{'evicted':>9}"
        f"{'RSS idx MB':>12}{'peak MB':>9}"
    )
    print()
    print(f"PersistLimit at {count:,} files; touch + remove_old_files over {downloads} downloads")
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['variant']:<22}{r['files']:>9,}{'yes' if r['live'] else 'no':>6}"
            f"{r['index_time']:>9.3f}{r['median'] * 1000:>11.3f}{r['p95'] * 1000:>8.3f}"
            f"{r['max'] * 1000:>8.3f}{r['evicted']:>9}"
            f"{(r['rss_index'] - r['rss_before']) / MB:>12.1f}{r['rss_peak'] / MB:>9.1f}"
        )
    print()
    print(
        "index s: PersistLimit(...) + register_dir_content(dir) or + watch(dir); "
        "median/p95/max ms: touch(path) + remove_old_files() after a download, one "
        "eviction each; RSS idx MB: resident set growth while building the index; "
        "peak MB: ru_maxrss of the child."
    )
    for r in results:
        index_ok = r["index_time"] < INDEX_TARGET
        evict_ok = r["max"] < EVICT_TARGET
        print(
            f"{r['variant']}: index {r['index_time']:.3f} s "
            f"{'<' if index_ok else '>='} {INDEX_TARGET:g} s: {'met' if index_ok else 'NOT met'}; "
            f"every touch + remove_old_files {'<' if evict_ok else '>='} "
            f"{EVICT_TARGET * 1000:g} ms (max {r['max'] * 1000:.3f} ms): "
            f"{'met' if evict_ok else 'NOT met'}"
            + ("" if r["evicted"] == downloads else f"; evicted {r['evicted']}, not {downloads}")
        )
    print(
        f"Python {platform.python_version()} on {platform.platform()}, "
        f"{os.cpu_count()} CPUs; command: {' '.join([sys.executable, *sys.argv])}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time PersistLimit's index and eviction on a directory of many files."
    )
    parser.add_argument("--files", type=int, default=None, help="number of files (100,000)")
    parser.add_argument("--quick", action="store_true", help="bounded variant: 10,000 files")
    parser.add_argument(
        "--downloads", type=int, default=200, help="simulated finished downloads (200)"
    )
    parser.add_argument(
        "--tmpdir", default=None, help="directory for the temporary files (default: system's)"
    )
    # Hidden mode: one measured process.
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child, args.dir, args.downloads)
    if args.files is None:
        args.files = 10_000 if args.quick else 100_000
    if args.files <= 0 or args.downloads <= 0:
        parser.error("--files and --downloads must be positive")
    return _bench(args.files, args.downloads, args.tmpdir)


if __name__ == "__main__":
    sys.exit(main())
