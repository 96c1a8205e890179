#!/usr/bin/env python3
"""Measure how long the ``dlmanager`` command takes to start, and what it imports.

Run from a checkout as ``python benchmarks/startup.py`` (``--quick`` for a bounded
variant, ``--help`` for the options). The script:

* runs each command in a fresh child process (``python -m dlmanager --version``,
  ``--help``, the imports of a plain ``get``, one ``get`` of a 64 KiB file from a
  server in this process into a temporary directory, and, for reference, the bare
  interpreter, ``import urllib3`` and ``import requests``), in round-robin order
  after one discarded warm-up round, and prints the median wall and CPU time;
* compiles everything once into a temporary bytecode cache (``PYTHONPYCACHEPREFIX``),
  as an installed package is, whatever ``PYTHONDONTWRITEBYTECODE`` says;
* with ``--importtime``, prints the modules that cost most to import
  (``python -X importtime``, cumulative, the fastest of three runs) for
  ``--version`` and for the imports of ``get``.

The dlmanager measured is the one of this checkout (the directory above
``benchmarks``), not whatever copy is installed.
"""

from __future__ import annotations

import argparse
import http.server
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(url: str, dest: str) -> dict[str, list[str]]:
    """What is timed: a label and the arguments of ``python``."""
    return {
        "python -c pass": ["-c", "pass"],
        "python -c 'import urllib3'": ["-c", "import urllib3"],
        "python -c 'import requests'": ["-c", "import requests"],
        "dlmanager --version": ["-m", "dlmanager", "--version"],
        "dlmanager --help": ["-m", "dlmanager", "--help"],
        "import dlmanager.cli.get": ["-c", "import dlmanager.cli.get"],
        "dlmanager get URL (64 KiB)": ["-m", "dlmanager", "get", url, "-d", dest, "--quiet"],
    }


@contextmanager
def file_server(directory: str) -> Iterator[str]:
    """Serve *directory* on 127.0.0.1 from a thread; yield its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=directory, **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def run_once(args: list[str], env: dict[str, str], dest: str) -> tuple[float, float]:
    """Wall and CPU seconds of ``python ARGS``, which must succeed."""
    shutil.rmtree(dest, ignore_errors=True)  # the get downloads every time
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, check=True
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def import_table(args: list[str], env: dict[str, str], top: int) -> list[tuple[int, int, str]]:
    """The *top* modules by cumulative import time (the fastest of three runs), in µs."""
    best: dict[str, tuple[int, int]] = {}
    for _ in range(3):
        result = subprocess.run(
            [sys.executable, "-X", "importtime", *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        for line in result.stderr.splitlines():
            fields = line.removeprefix("import time:").split("|")
            if len(fields) != 3 or not fields[0].strip().isdigit():
                continue
            own, total, name = int(fields[0]), int(fields[1]), fields[2].rstrip()
            if name not in best or total < best[name][1]:
                best[name] = (own, total)
    rows = sorted(((t, o, n) for n, (o, t) in best.items()), reverse=True)
    return [(o, t, n) for t, o, n in rows[:top]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs of each command")
    parser.add_argument("--quick", action="store_true", help="3 runs: checks that it works")
    parser.add_argument(
        "--importtime", action="store_true", help="also print the costliest imports"
    )
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else args.repeat
    with tempfile.TemporaryDirectory(prefix="dlmanager-startup-") as work:
        served = os.path.join(work, "served")
        os.mkdir(served)
        with open(os.path.join(served, "file.bin"), "wb") as handle:
            handle.write(os.urandom(64 * 1024))
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONPYCACHEPREFIX=os.path.join(work, "pyc"))
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        dest = os.path.join(work, "dest")
        with file_server(served) as base:
            timed = commands(base + "file.bin", dest)
            for command in timed.values():  # warm-up: fills the bytecode cache
                run_once(command, env, dest)
            times: dict[str, list[tuple[float, float]]] = {label: [] for label in timed}
            for _ in range(repeat):
                for label, command in timed.items():
                    times[label].append(run_once(command, env, dest))
        print(f"{'command':<30} {'median wall ms':>15} {'best wall ms':>13} {'median CPU ms':>14}")
        print("-" * 75)
        for label, runs in times.items():
            walls, cpus = [w for w, _ in runs], [c for _, c in runs]
            print(
                f"{label:<30} {statistics.median(walls) * 1000:>15.1f} "
                f"{min(walls) * 1000:>13.1f} {statistics.median(cpus) * 1000:>14.1f}"
            )
        print("-" * 75)
        print(
            f"{repeat} run(s) per command in round-robin order after one warm-up round, each "
            "in a fresh process, bytecode compiled."
        )
        print(
            f"Python {platform.python_version()} on {platform.platform()}, "
            f"{os.cpu_count()} CPUs; dlmanager from {ROOT}"
        )
        if args.importtime:
            for label in ("dlmanager --version", "import dlmanager.cli.get"):
                print(f"\nCostliest imports of {label} (ms, cumulative and own):")
                for own, total, name in import_table(timed[label], env, 25):
                    print(f"  {total / 1000:7.1f} {own / 1000:6.1f}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
