"""``dlmanager cache ls|prune|clean [DIR]``: look after a download directory (default: the cache).

Its options, and the checks of them, are in :mod:`dlmanager.cli.options`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from typing import Any, TextIO

from dlmanager.cache import CACHE_DIR_VARIABLE, default_cache_dir
from dlmanager.cli.parsing import format_age, format_size, plural
from dlmanager.disk.cleanup import remove_stale_sidecars, remove_stale_temporaries
from dlmanager.disk.layout import STATE_DIR, is_temporary
from dlmanager.disk.locks import StateDir
from dlmanager.disk.metadata import FileInfo, read_info, utcnow
from dlmanager.manager import DownloadManager
from dlmanager.persist_limit import PersistLimit

__all__ = ["run"]


def run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    command = {"ls": _ls, "prune": _prune, "clean": _clean}[args.cache_command]
    try:
        directory = _directory(args, out)
        if directory is None:
            return 0
        return command(args, directory, out)
    except OSError as exc:
        print(f"dlmanager: {exc}", file=err)
        return 1


def _directory(args: argparse.Namespace, out: TextIO) -> str | None:
    """The directory to look after: DIR, else the default cache directory, named
    (None, once said so, when the default one does not exist yet)."""
    if args.dir is not None:
        return str(args.dir)
    directory = default_cache_dir()
    where = f"from {CACHE_DIR_VARIABLE}" if os.environ.get(CACHE_DIR_VARIABLE) else "the default"
    exists = os.path.isdir(directory)
    if args.cache_command == "ls" and args.json:
        if not exists:
            print(json.dumps(_listing(directory, [], []), sort_keys=True), file=out)
        return directory if exists else None
    print(f"cache directory: {directory} ({where})", file=out)
    if exists:
        return directory
    if os.path.lexists(directory):
        raise NotADirectoryError(f"not a directory: {directory}")
    nothing = {"ls": "nothing is cached", "prune": "nothing to prune", "clean": "nothing to clean"}
    print(f"it does not exist yet: {nothing[args.cache_command]}", file=out)
    return None


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


#: The fields of a file in ``ls --json`` that come from its :class:`FileInfo`.
_INFO_FIELDS = tuple(field.name for field in dataclasses.fields(FileInfo))


def _file_json(entry: os.DirEntry[str], info: FileInfo | None) -> dict[str, Any]:
    fstat = entry.stat(follow_symlinks=False)
    fields: dict[str, Any] = dict.fromkeys(_INFO_FIELDS)
    if info is not None:
        fields.update(info.as_json())
    fields.update(
        name=entry.name,
        size=fstat.st_size,
        last_use=fstat.st_atime,
        age=None if info is None else info.age(),
        downloaded_by_dlmanager=info is not None,
    )
    return fields


def _listing(
    directory: str, files: list[os.DirEntry[str]], temporaries: list[os.DirEntry[str]]
) -> dict[str, Any]:
    listed = [_file_json(entry, read_info(entry.path)) for entry in files]
    return {
        "directory": os.path.abspath(directory),
        "exists": os.path.isdir(directory),
        "files": listed,
        "total": sum(f["size"] for f in listed),
        "temporary_files": len(temporaries),
        "temporary_size": sum(e.stat(follow_symlinks=False).st_size for e in temporaries),
    }


def _ls(args: argparse.Namespace, directory: str, out: TextIO) -> int:
    files, temporaries = _entries(directory)
    if args.json:
        print(json.dumps(_listing(directory, files, temporaries), sort_keys=True), file=out)
        return 0
    now = utcnow()
    rows = [("NAME", "SIZE", "AGE", "LAST USE", "URL")]
    total = foreign = 0
    for entry in files:
        fstat = entry.stat(follow_symlinks=False)
        info = read_info(entry.path)
        foreign += info is None
        total += fstat.st_size
        used = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(fstat.st_atime))
        age = "-" if info is None else format_age(info.age(now))
        url = "-" if info is None else info.url
        rows.append((entry.name, format_size(fstat.st_size), age, used, url))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for name, size, age, used, url in rows:
        print(
            f"{name:<{widths[0]}}  {size:>{widths[1]}}  {age:>{widths[2]}}  "
            f"{used:<{widths[3]}}  {url}",
            file=out,
        )
    summary = f"{plural(len(files), 'file')}, {format_size(total)}"
    if foreign:
        summary += (
            f"; {foreign} not downloaded by dlmanager (URL '-'), which prune and --max-size "
            "leave alone unless --include-foreign"
        )
    print(summary, file=out)
    if temporaries:
        pending = sum(e.stat(follow_symlinks=False).st_size for e in temporaries)
        print(
            f"{plural(len(temporaries), 'temporary file')} of unfinished downloads, "
            f"{format_size(pending)} (dlmanager cache clean removes them)",
            file=out,
        )
    return 0


def _prune(args: argparse.Namespace, directory: str, out: TextIO) -> int:
    limit = PersistLimit(
        args.max_size or 0,
        file_limit=1,
        max_files=args.max_files,
        include_foreign=args.include_foreign,
    )
    directory = os.path.abspath(directory)  # as the manager names the files it removes
    before = {e.path: e.stat(follow_symlinks=False).st_size for e in _entries(directory)[0]}
    with DownloadManager(directory, persist_limit=limit) as manager:
        removed = manager.evict()
    for path in removed:
        print(f"removed {os.path.basename(path)} ({format_size(before.get(path, 0))})", file=out)
    left = [p for p in before if p not in removed]
    foreign = [] if args.include_foreign else [p for p in left if read_info(p) is None]
    kept = [before[p] for p in left if p not in foreign]
    freed = format_size(sum(before.get(path, 0) for path in removed))
    summary = (
        f"removed {plural(len(removed), 'file')} ({freed}); kept {plural(len(kept), 'file')}, "
        f"{format_size(sum(kept))}"
    )
    if foreign:
        summary += (
            f"; left alone {plural(len(foreign), 'file')} dlmanager did not download, "
            f"{format_size(sum(before[p] for p in foreign))} (--include-foreign counts them)"
        )
    print(summary, file=out)
    return 0


def _clean(args: argparse.Namespace, directory: str, out: TextIO) -> int:
    before = {e.path: e.stat(follow_symlinks=False).st_size for e in _entries(directory)[1]}
    # Two seconds of grace: a temporary file is created a moment before it is locked.
    remove_stale_temporaries(directory, min_age=2.0, resumable_max_age=0)
    stale_locks: list[str] = []
    if os.path.isdir(os.path.join(directory, STATE_DIR)):
        stale_locks = StateDir(directory).remove_stale()
    sidecars = remove_stale_sidecars(directory, min_age=2.0)  # their files are gone or replaced
    kept = {e.path for e in _entries(directory)[1]}
    removed = sorted(path for path in before if path not in kept)
    for path in removed + sorted(sidecars):
        print(f"removed {os.path.basename(path)}", file=out)
    freed = format_size(sum(before[path] for path in removed))
    print(
        f"removed {plural(len(removed), 'temporary file')} ({freed}), "
        f"{plural(len(stale_locks), 'stale lock file')} and "
        f"{plural(len(sidecars), 'orphaned sidecar')}"
        + (f"; {len(kept)} in use by running downloads kept" if kept else ""),
        file=out,
    )
    return 0
