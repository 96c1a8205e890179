"""Fetch a dataset into the user's cache once, and print where it is.

What a tool or a test suite does before it reads a data file: the first run
downloads it (verified against its checksum), later runs find it in the
cache and make no request at all, or one conditional request every
``--max-age`` seconds to learn whether the server has a new version. When
that request cannot reach the server, the copy in the cache is used, with a
warning on stderr. Several copies of this script run at once download the
file once.

    python examples/retrieve_dataset.py URL [--checksum sha256:HEX] [--cache-dir DIR]
                                        [--max-age SECONDS]

Prints the path of the file (and nothing else) on stdout. The cache is
``--cache-dir``, else ``DLMANAGER_CACHE_DIR``, else the user's cache
directory (``~/.cache/dlmanager`` on Linux); ``DLMANAGER_CACHE_MAX_SIZE``
(``500M``, ``2G``) caps it. Exit status: 0 when the file is there, 1 when it
could not be fetched, 2 for bad arguments, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import dlmanager
from dlmanager.errors import DownloadError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fetch a file into the cache; print its path.")
    parser.add_argument("url", metavar="URL")
    parser.add_argument("--checksum", metavar="ALGORITHM:HEX", help="e.g. sha256:9f86d0...")
    parser.add_argument("--cache-dir", metavar="DIR", help="default: the user's cache")
    parser.add_argument(
        "--max-age",
        metavar="SECONDS",
        type=float,
        help="ask the server about a copy validated longer ago than this",
    )
    args = parser.parse_args(argv)
    try:
        # Downloads only when the file is not in the cache (or does not match
        # the checksum, or is older than --max-age and changed on the server);
        # returns its absolute path once it is there.
        path = dlmanager.retrieve(
            args.url, args.checksum, cache_dir=args.cache_dir, max_age=args.max_age
        )
    except KeyboardInterrupt:  # the download was cancelled: no partial file is left
        print("interrupted", file=sys.stderr)
        return 130
    except (DownloadError, ValueError) as exc:  # ValueError: a bad URL, checksum, name
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
