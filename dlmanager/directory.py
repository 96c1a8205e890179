"""A manager's destination directory: its files, its coordination with other processes, its cap.

:class:`Directory` prepares the directory (created, writable, stale
leftovers removed), makes the :class:`~dlmanager.destination.Destination` of
each download, records the uses of files, pins them, holds the reservations
of the downloads in flight, and applies a :class:`~dlmanager.PersistLimit`
(live accounting included). It knows nothing of requests or retries.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from typing import IO, TYPE_CHECKING, Any

from dlmanager.destination import Destination, mismatching
from dlmanager.disk.cleanup import (
    leftover_fnames,
    remove_stale_sidecars,
    remove_stale_temporaries,
)
from dlmanager.disk.locks import StateDir
from dlmanager.disk.metadata import MetadataStore
from dlmanager.disk.pins import Pins
from dlmanager.disk.reservations import Reservations
from dlmanager.events import DownloadEvent, EventCallback, EventKind
from dlmanager.names import check_name_length, name_max, validate_fname
from dlmanager.persist_limit import PersistLimit, mark_used
from dlmanager.redact import get_logger

if TYPE_CHECKING:
    from dlmanager.download import Download

__all__ = ["Directory", "mismatching", "present", "status"]

log = get_logger(__name__)

#: The modes of open() that DownloadManager.open accepts: reading only.
_READ_MODES = frozenset({"r", "rt", "tr", "rb", "br"})


def present(path: str) -> bool:
    """Whether a downloaded file is at *path*: a symlink, even to a file, is not one."""
    return status(path)[0]


def status(path: str) -> tuple[bool, bool]:
    """``(present, symlink)`` of *path*, from one ``lstat``: whether a downloaded
    file is there (see :func:`present`), and whether a symlink is."""
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        return False, False
    link = stat.S_ISLNK(mode)
    return not link, link


def _prepare(root: str) -> None:
    if os.path.exists(root) and not os.path.isdir(root):
        raise NotADirectoryError(f"destination {root!r} exists and is not a directory")
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise type(exc)(f"cannot create destination directory {root!r}: {exc}") from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise PermissionError(f"destination directory {root!r} is not writable")


class Directory:
    """The directory *root* (absolute), prepared, and its cap *limit*.

    :raises NotADirectoryError: when *root* is a file
    :raises PermissionError: when *root* is not writable
    """

    def __init__(self, root: str, limit: PersistLimit) -> None:
        self.root = root
        self.limit = limit
        _prepare(root)
        self.name_max = name_max(root)
        for path in remove_stale_temporaries(root):
            log.info("Removed a temporary file left by a stopped process: %s", path)
        for path in remove_stale_sidecars(root):
            log.info("Removed the metadata of a file no longer there: %s", path)
        # Names with a leftover to resume; other downloads skip the scan.
        self._leftovers = leftover_fnames(root)
        self._state = StateDir(root)
        self._state.remove_stale()
        self._pins = Pins(self._state, root)
        self._reservations = Reservations(self._state)
        self._watching = False  # whether this directory follows the limit live
        self.metadata = MetadataStore()  # finds out once whether xattrs work here
        if limit.enabled:
            try:
                # Live accounting: other processes' changes reach the index.
                limit.watch(root)  # registers what is there
                self._watching = True
                # And the room every process's downloads in flight reserved, read live.
                limit.count_in_flight(self._reservations.total)
            except RuntimeError:  # the limit already accounts for another directory
                limit.register_dir_content(root)

    def close(self) -> None:
        """Stop following the directory live (at the limit's last close)."""
        if self._watching:
            self.limit.close()
            self._watching = False

    def check_name(self, fname: str) -> str:
        """*fname* if it may be written here.

        :raises ValueError: when it would land outside, or is too long
        """
        return check_name_length(validate_fname(fname), self.name_max)

    def path(self, fname: str) -> str:
        return os.path.join(self.root, fname)

    def destination(self, shown: str, after: Download | None) -> Destination:
        """The :class:`Destination` of a new download of *shown* (as the
        manager's ``get_dest`` gives it), to start after *after* ends."""
        fname = os.path.basename(shown)
        leftovers = fname in self._leftovers
        self._leftovers.discard(fname)
        lock = self._state.lock(fname)
        return Destination(shown, self.path(fname), lock, leftovers, after, self.metadata)

    def mark_used(self, path: str) -> None:
        """Record a use of the file at *path* (in the index only when there is a limit)."""
        if self.limit.enabled:
            self.limit.touch(path)
        else:
            mark_used(path)

    def downloaded(self, shown: str, *, published: bool) -> None:
        """Record the use of the file a download put (*published*: itself) or
        found (done by another) at *shown* (as the manager's ``get_dest`` gives it).

        A file the download published was stamped used then (its access and
        modification times, by :meth:`PartFile.publish
        <dlmanager.disk.partfile.PartFile.publish>`): that stamp is its use,
        so that files are used in the order they were published, not in the
        order their downloads' threads got here. Only the index (with a
        limit) learns it.
        """
        path = self.path(os.path.basename(shown))
        if not published or os.utime not in os.supports_fd:
            self.mark_used(path)
        elif self.limit.enabled:
            self.limit.register_file(path)

    def evict(self) -> list[str]:
        """Apply the limit, sparing the files any process has pinned, and
        counting the room every process's downloads in flight reserved.

        :return: the paths removed, least recently used first
        """
        limit = self.limit
        if not limit.enabled:
            return []
        with self._pins.evicting() as protect:
            return limit.remove_old_files(protect=protect)

    def reserving(
        self, shown: str, on_event: EventCallback | None, evict: Callable[[], object]
    ) -> EventCallback | None:
        """An ``on_event`` hook that reserves the download's size against the cap.

        As soon as a download knows its size, that much room is reserved and
        made for it (*evict* is called), so that many downloads in flight do
        not overshoot the cap; the reservation ends with the download. When
        the limit is off, *on_event* is returned as is (no work added per chunk).
        """
        if not self.limit.enabled:
            return on_event
        fname = os.path.basename(shown)

        def hook(event: DownloadEvent) -> None:
            if event.kind is EventKind.STARTED and event.total:
                self._reservations.hold(fname, event.total)
                evict()
            elif event.kind is EventKind.FINISHED:
                self._reservations.release(fname)
            if on_event is not None:
                on_event(event)

        return hook

    @contextlib.contextmanager
    def open(self, fname: str, mode: str, **options: str | None) -> Iterator[IO[Any]]:
        """*fname* opened for reading, pinned while open (see :meth:`pin`).

        :raises ValueError: for a mode that writes, appends or creates
        """
        if mode not in _READ_MODES:
            raise ValueError(
                f"invalid mode {mode!r}: DownloadManager.open only reads files "
                f"(use one of {', '.join(repr(m) for m in sorted(_READ_MODES))})"
            )
        with self.pin(fname) as path, open(path, mode, **options) as handle:  # type: ignore[call-overload]
            yield handle

    @contextlib.contextmanager
    def pin(self, fname: str) -> Iterator[str]:
        """Keep *fname* from eviction by any process for the block (a use of it).

        :raises FileNotFoundError: when the file is not there
        """
        with self._pins.pin(self.path(fname)) as path:
            self.mark_used(path)
            yield path
