"""Test builds one after another while the next one downloads in the background.

This is what a bisecting test harness such as mozregression does: while build
N is being tested, build N+1 is already downloading, so the harness seldom
waits for the network.

    python examples/prefetch_builds.py -d builds URL1 URL2 URL3
    python examples/prefetch_builds.py -d builds --size-limit 2000000000 URL1 URL2

Prints one ``tested NAME: SIZE bytes, sha256 HEX`` line per build, in order.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import urllib.parse
from collections.abc import Sequence

from dlmanager import Download, DownloadManager, PersistLimit

QUARTERS: dict[str, int] = {}  # the last quarter reported, by file name


def report_progress(download: Download, current: int, total: int) -> None:
    """The 0.1.1 ``progress`` callback: a line per quarter done (no TTY needed).

    Called from the download thread after every chunk, once the size is known.
    """
    name, quarter = os.path.basename(download.get_dest()), 4 * current // max(total, 1)
    if QUARTERS.get(name) != quarter:
        QUARTERS[name] = quarter
        print(f"  {name}: {25 * quarter}%\n", end="", flush=True)  # one write per line


def run_tests(path: str) -> None:
    """STAND-IN for a real test run: hash the build and print its size."""
    digest = hashlib.sha256()
    with open(path, "rb") as build:
        for block in iter(lambda: build.read(1 << 20), b""):
            digest.update(block)
    name, size = os.path.basename(path), os.path.getsize(path)
    print(f"tested {name}: {size} bytes, sha256 {digest.hexdigest()}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Test builds, prefetching the next one.")
    parser.add_argument("urls", nargs="+", metavar="URL", help="the builds, in test order")
    parser.add_argument("-d", "--destdir", default="builds", help="the build cache")
    parser.add_argument("--size-limit", type=int, default=0, help="cap the cache (bytes)")
    args = parser.parse_args(argv)
    # (url, file name) of each build; a real harness knows its builds' names.
    builds = [(url, os.path.basename(urllib.parse.urlsplit(url).path)) for url in args.urls]
    # Optional: keep the cache under a size, evicting the least recently used builds
    # (but never the two newest: the build under test and the one prefetched).
    limit = PersistLimit(args.size_limit, file_limit=2) if args.size_limit else None
    # Leaving the with block waits for the downloads, or cancels them on an
    # exception (Ctrl-C included), so no partial file is left behind.
    with DownloadManager(args.destdir, persist_limit=limit) as manager:
        for index, (url, fname) in enumerate(builds):
            # For a build being prefetched, download() returns the running download
            # (our progress callback attached); None when the build is already there.
            download = manager.download(url, fname, progress=report_progress)
            if download is not None:
                download.wait()  # re-raises a failed download's error
            # Pin the build under test: a download finishing meanwhile cannot evict it.
            with manager.pin(fname) as path:
                if index + 1 < len(builds):
                    manager.download(*builds[index + 1])  # returns at once
                run_tests(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
