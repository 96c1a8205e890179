"""``dlmanager cache ls|prune|clean DIR``: look after a download directory.

Its options, and the checks of them, are in :mod:`dlmanager.cli.options`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TextIO

from dlmanager.cli.parsing import format_size, plural
from dlmanager.disk.cleanup import remove_stale_temporaries
from dlmanager.disk.layout import STATE_DIR, is_temporary
from dlmanager.disk.locks import StateDir
from dlmanager.manager import DownloadManager
from dlmanager.persist_limit import PersistLimit

__all__ = ["run"]


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command = {"ls": _ls, "prune": _prune, "clean": _clean}[args.cache_command]
    try:
        return command(args, out)
    except OSError as exc:
        print(f"dlmanager: {exc}", file=err)
        return 1


def _entries(directory: str) -> tuple[list[os.DirEntry[str]], list[os.DirEntry[str]]]:
    """The finished files of *directory*, least recently used first, and the temporary ones."""
    files, temporaries = [], []
    with os.scandir(directory) as found:
        for entry in found:
            if not entry.is_file(follow_symlinks=False):
                continue
            if is_temporary(entry.name):
                temporaries.append(entry)
            elif not entry.name.startswith("."):
                files.append(entry)
    files.sort(key=lambda e: (e.stat(follow_symlinks=False).st_atime, e.name))
    return files, temporaries


def _ls(args: argparse.Namespace, out: TextIO) -> int:
    files, temporaries = _entries(args.dir)
    total = sum(e.stat(follow_symlinks=False).st_size for e in files)
    pending = sum(e.stat(follow_symlinks=False).st_size for e in temporaries)
    if args.json:
        listing = {
            "directory": os.path.abspath(args.dir),
            "files": [
                {
                    "name": e.name,
                    "size": e.stat(follow_symlinks=False).st_size,
                    "last_use": e.stat(follow_symlinks=False).st_atime,
                }
                for e in files
            ],
            "total": total,
            "temporary_files": len(temporaries),
            "temporary_size": pending,
        }
        print(json.dumps(listing, sort_keys=True), file=out)
        return 0
    width = max([len(e.name) for e in files] + [4])
    print(f"{'NAME':<{width}}  {'SIZE':>10}  LAST USE", file=out)
    for entry in files:
        fstat = entry.stat(follow_symlinks=False)
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(fstat.st_atime))
        print(f"{entry.name:<{width}}  {format_size(fstat.st_size):>10}  {used}", file=out)
    print(f"{plural(len(files), 'file')}, {format_size(total)}", file=out)
    if temporaries:
        print(
            f"{plural(len(temporaries), 'temporary file')} of unfinished downloads, "
            f"{format_size(pending)} (dlmanager cache clean removes them)",
            file=out,
        )
    return 0


def _prune(args: argparse.Namespace, out: TextIO) -> int:
    limit = PersistLimit(args.max_size or 0, file_limit=1, max_files=args.max_files)
    before = {e.path: e.stat(follow_symlinks=False).st_size for e in _entries(args.dir)[0]}
    with DownloadManager(args.dir, persist_limit=limit) as manager:
        removed = manager.evict()
    for path in removed:
        print(f"removed {os.path.basename(path)} ({format_size(before.get(path, 0))})", file=out)
    kept = [size for path, size in before.items() if path not in removed]
    freed = format_size(sum(before.get(path, 0) for path in removed))
    print(
        f"removed {plural(len(removed), 'file')} ({freed}); kept {plural(len(kept), 'file')}, "
        f"{format_size(sum(kept))}",
        file=out,
    )
    return 0


def _clean(args: argparse.Namespace, out: TextIO) -> int:
    before = {e.path: e.stat(follow_symlinks=False).st_size for e in _entries(args.dir)[1]}
    # Two seconds of grace: a temporary file is created a moment before it is locked.
    remove_stale_temporaries(args.dir, min_age=2.0, resumable_max_age=0)
    stale_locks: list[str] = []
    if os.path.isdir(os.path.join(args.dir, STATE_DIR)):
        stale_locks = StateDir(args.dir).remove_stale()
    kept = {e.path for e in _entries(args.dir)[1]}
    removed = sorted(path for path in before if path not in kept)
    for path in removed:
        print(f"removed {os.path.basename(path)}", file=out)
    freed = format_size(sum(before[path] for path in removed))
    print(
        f"removed {plural(len(removed), 'temporary file')} ({freed}) and "
        f"{plural(len(stale_locks), 'stale lock file')}"
        + (f"; {len(kept)} in use by running downloads kept" if kept else ""),
        file=out,
    )
    return 0
