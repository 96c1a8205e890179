"""Keep a download cache under a size cap, pinning the file in use so it is not evicted.

The first URL is a reference build that the harness keeps open for the whole
session (to compare the others against, say); the others are downloaded into
the cache one after another. A PersistLimit evicts the least recently used
files to stay under SIZE bytes: the reference soon is the least recently
used, but being open through ``manager.open()`` it is pinned and stays.

    python examples/cap_cache.py -d cache --size 5000000000 REFERENCE_URL URL1 URL2 ...

Prints the files each download evicted and the size of the cache.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse
from collections.abc import Sequence

from dlmanager import DownloadManager, PersistLimit


def cached(destdir: str) -> dict[str, int]:
    """The files of the cache and their sizes (hidden names are dlmanager's own)."""
    names = (name for name in os.listdir(destdir) if not name.startswith("."))
    return {name: os.path.getsize(os.path.join(destdir, name)) for name in names}


def fetch(manager: DownloadManager, url: str) -> str:
    """Download *url* into the cache unless it is there; return its file name."""
    fname = os.path.basename(urllib.parse.urlsplit(url).path)
    download = manager.download(url, fname)  # None: a cache hit, which counts as a use
    if download is not None:
        download.wait()  # once it has finished, least recently used files are evicted
    return fname


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download into a size-capped cache.")
    parser.add_argument("reference", metavar="REFERENCE_URL", help="kept open throughout")
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("-d", "--destdir", default="cache")
    parser.add_argument("--size", type=int, required=True, help="the cap, in bytes")
    args = parser.parse_args(argv)
    # file_limit=1: the newest file is kept even when it alone exceeds the cap.
    limit = PersistLimit(size_limit=args.size, file_limit=1)
    with DownloadManager(args.destdir, persist_limit=limit) as manager:
        reference = fetch(manager, args.reference)
        # Open (and so pin) the reference until the end of the session. Pinned
        # files still count toward the cap, but no process sharing the cache
        # evicts them: other files are evicted instead.
        with manager.open(reference) as handle:
            print(f"reference {reference}: {len(handle.read())} bytes, pinned")
            for url in args.urls:
                before = cached(args.destdir)
                fname = fetch(manager, url)
                with manager.pin(fname) as path:  # STAND-IN for using the build
                    print(f"fetched {fname}: {os.path.getsize(path)} bytes")
                after = cached(args.destdir)
                for name in sorted(before.keys() - after.keys()):
                    print(f"  evicted {name} ({before[name]} bytes)")
                print(f"  cache: {sum(after.values())} of {args.size} bytes", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
