"""Start several downloads, work, and cancel everything from a ``finally:`` block.

Downloads run in background threads. Whatever ends the work (success, an
error, Ctrl-C), the ``finally:`` block stops what is still running, and every
cancelled download removes its temporary file: no partial file is left in DIR.

    python examples/cancel_in_finally.py -d downloads URL1 URL2 ...

Prints ``downloading NAME`` once a transfer has begun and ``done NAME`` once the
file is in place. Exit status: 0 when every file is in place, 1 when a
download failed, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dlmanager import DownloadEvent, DownloadManager, EventKind
from dlmanager.errors import DownloadError


def announce(event: DownloadEvent) -> None:
    """An ``on_event`` hook (called from the download thread)."""
    if event.kind is EventKind.STARTED:  # the response headers arrived
        name = os.path.basename(event.download.get_dest())
        # One write, so that the lines of several download threads do not mix.
        print(f"downloading {name}\n", end="", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download URLs; Ctrl-C leaves no partial file.")
    parser.add_argument("urls", nargs="+", metavar="URL")
    parser.add_argument("-d", "--destdir", default="downloads")
    args = parser.parse_args(argv)
    manager = DownloadManager(args.destdir)
    try:
        # Each call returns at once; None means the file is already there.
        started = [manager.download(url, on_event=announce) for url in args.urls]
        for download in started:
            if download is not None:
                # The "work": use each file as soon as it is in place. wait()
                # re-raises a download's error, and a Ctrl-C while it waits
                # cancels that download and raises KeyboardInterrupt at once.
                download.wait()
                print(f"done {os.path.basename(download.get_dest())}", flush=True)
    except KeyboardInterrupt:
        print("interrupted: cancelling the downloads", file=sys.stderr)
        return 130
    except DownloadError as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    finally:
        # Runs on success, error and Ctrl-C alike. cancel() returns at once;
        # close() waits until every download has stopped (and removed its
        # temporary file), then closes the HTTP session. `with DownloadManager(...)
        # as manager:` does the same when its block raises.
        manager.cancel()
        manager.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
