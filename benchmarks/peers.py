"""The Python peers of ``compare.py``: parfive and dlmanager 0.1.1, run by driver scripts.

Each peer runs as a child ``python -c`` driver (imported as ``peers`` from this folder), so
that ``compare.py`` measures it like the other tools (its own wall time, CPU time and peak
RSS). The drivers read the URLs from a list file, one a line, and download them into the
output directory under the last segment of their path:

* **parfive** (``pip install parfive``): ``parfive.Downloader(max_conn=N, max_splits=1,
  progress=False, overwrite=True)``, one ``enqueue_file(url, path=out)`` per URL, then
  ``download()``; a failed file (``Results.errors``) is exit status 1. ``max_splits=1``:
  one connection per file, like ``aria2c -x1`` and ``dlmanager -x1``.
* **dlmanager 0.1.1** (the version this project replaces; ``--dlmanager-0.1.1 PATH`` names
  the directory that holds its ``dlmanager`` package, run with ``PYTHONPATH=PATH``): its
  public API, ``DownloadManager(out)`` (0.1.1 has no worker limit: every ``download(url)``
  starts its own thread at once, over the manager's one ``requests.Session``), then each
  returned ``Download``'s ``wait()`` and the manager's ``wait()``. 0.1.1's
  ``DownloadManager.wait()`` alone iterates over the dict its threads remove themselves
  from (``RuntimeError: dictionary changed size during iteration``) and never sees the
  errors of the downloads that already ended, so the driver waits for every download
  first. The driver prints where it imported ``dlmanager`` from and exits with status 3
  when that is not under PATH.

The probes say, before the benchmark, whether a peer can run here and which version it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "OLD_VERSION",
    "Peer",
    "old_dlmanager_argv",
    "old_dlmanager_env",
    "parfive_argv",
    "probe_old_dlmanager",
    "probe_parfive",
]

#: The version of dlmanager this project replaces.
OLD_VERSION = "0.1.1"
#: Exit status of the dlmanager 0.1.1 driver when it imported another ``dlmanager``.
WRONG_PACKAGE = 3

PARFIVE_DRIVER = """
import sys
import parfive

out, listfile, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(listfile, encoding="utf-8") as handle:
    urls = handle.read().split()
downloader = parfive.Downloader(max_conn=conns, max_splits=1, progress=False, overwrite=True)
for url in urls:
    downloader.enqueue_file(url, path=out)
results = downloader.download()
if results.errors or len(results) != len(urls):
    for error in results.errors[:5]:
        print(f"{error.url}: {error.exception!r}", file=sys.stderr)
    sys.exit(f"parfive: {len(results.errors)} of {len(urls)} downloads failed")
"""

OLD_DLMANAGER_DRIVER = f"""
import os
import sys

root, out, listfile = os.path.realpath(sys.argv[1]), sys.argv[2], sys.argv[3]
import dlmanager

where = os.path.realpath(dlmanager.__file__)
print(f"dlmanager {{dlmanager.__version__}} from {{where}}", flush=True)
if not where.startswith(root + os.sep):
    print(f"that is not under {{root}}", file=sys.stderr)
    sys.exit({WRONG_PACKAGE})
with open(listfile, encoding="utf-8") as handle:
    urls = handle.read().split()
manager = dlmanager.DownloadManager(out)
downloads = [manager.download(url) for url in urls]
for download in downloads:
    if download is not None:
        download.wait()
manager.wait()
"""

#: Prints the version of ``dlmanager`` and the real path of its package directory.
OLD_DLMANAGER_PROBE = """
import os
import dlmanager
print(dlmanager.__version__)
print(os.path.dirname(os.path.realpath(dlmanager.__file__)))
"""


@dataclass(frozen=True)
class Peer:
    """What a probe found: the version and place of a peer, or why it cannot run."""

    version: str = ""
    where: str = ""
    problem: str = ""  # '' when the peer can run


def _python(code: str, args: Sequence[str], env: dict[str, str], cwd: str) -> tuple[int, str, str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout, done.stderr


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "no output"


def probe_parfive(env: dict[str, str], cwd: str) -> Peer:
    """parfive's version (and aiohttp's) when ``import parfive`` works in *env*."""
    code = "import aiohttp, parfive; print(parfive.__version__, aiohttp.__version__)"
    status, out, err = _python(code, [], env, cwd)
    if status != 0:
        return Peer(problem=f"parfive not importable ({_last_line(err)}): pip install parfive")
    parfive, aiohttp = out.split()[:2]
    return Peer(version=f"{parfive} (aiohttp {aiohttp})")


def old_dlmanager_env(env: dict[str, str], path: str) -> dict[str, str]:
    """*env* with ``PYTHONPATH`` set to *path* alone (not this checkout)."""
    return {**env, "PYTHONPATH": os.path.abspath(path)}


def probe_old_dlmanager(path: str, env: dict[str, str], cwd: str) -> Peer:
    """Where ``import dlmanager`` finds the old package with ``PYTHONPATH=path``."""
    root = os.path.realpath(path)
    if not os.path.isdir(os.path.join(root, "dlmanager")):
        return Peer(problem=f"no dlmanager package in --dlmanager-{OLD_VERSION} {path}")
    status, out, err = _python(OLD_DLMANAGER_PROBE, [], old_dlmanager_env(env, root), cwd)
    if status != 0:
        return Peer(problem=f"cannot import dlmanager from {path}: {_last_line(err)}")
    version, where = out.split()[:2]
    if not where.startswith(root + os.sep):
        return Peer(problem=f"PYTHONPATH={path} imports dlmanager from {where}")
    return Peer(version=version, where=where)


def parfive_argv(out: str, listfile: str, connections: int) -> list[str]:
    """The parfive driver's command line."""
    return [sys.executable, "-c", PARFIVE_DRIVER, out, listfile, str(connections)]


def old_dlmanager_argv(path: str, out: str, listfile: str) -> list[str]:
    """The dlmanager 0.1.1 driver's command line (run it with :func:`old_dlmanager_env`)."""
    return [sys.executable, "-c", OLD_DLMANAGER_DRIVER, os.path.abspath(path), out, listfile]
