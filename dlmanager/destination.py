"""A download's destination, shared: what a request for it gets, whom it waits for, and why.

A :class:`~dlmanager.DownloadManager` gives each of its downloads a
:class:`Destination`: the path to write (resolved when the manager was
created), the lock other processes see, whether a leftover may be there to
resume, and an earlier download of the same file to let end first.
:meth:`Destination.claim` waits for both; :func:`found_done` decides whether
the file the download then finds is its result.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import stat
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dlmanager.checksum import Checksum, file_digests
from dlmanager.disk.locks import DestinationLock
from dlmanager.disk.metadata import MetadataStore, read_info, utcnow
from dlmanager.disk.partfile import leftover_progress
from dlmanager.errors import DownloadInterrupt, StorageError
from dlmanager.events import Events
from dlmanager.redact import get_logger
from dlmanager.revalidation import CURRENT, Conditions, conditions_for, fresh

if TYPE_CHECKING:
    from dlmanager.download import Download
    from dlmanager.server_names import Naming

__all__ = [
    "HIT",
    "JOIN",
    "START",
    "Destination",
    "found_done",
    "mismatching",
    "regular_file",
    "request_action",
]

log = get_logger(__name__)

#: How often a waiting download looks again, in seconds.
POLL = 0.1


def mismatching(path: str, expected: Checksum) -> bool:
    """Whether the file at *path* does not match *expected* (False once it is gone)."""
    try:
        actual = file_digests(path, [expected.algorithm]).get(expected.algorithm)
    except FileNotFoundError:
        return False
    if actual == expected.hexdigest:
        return False
    log.warning("%s does not match %s (it has %s): downloading it again; it stays as it is "
                "until the new one is verified", path, expected, actual)  # fmt: skip
    return True


def found_done(present: bool, checksum: Checksum | None, digest: str | None) -> bool:
    """Whether a file found at the destination once its lock is held is the
    download's result (pure): it is there, and matches *checksum* if one is
    given (*digest* is its digest in that algorithm)."""
    return present and (checksum is None or digest == checksum.hexdigest)


@dataclasses.dataclass(frozen=True)
class Destination:
    """A destination that a :class:`~dlmanager.DownloadManager` coordinates,
    given to :class:`~dlmanager.Download` as its *dest*.

    :ivar shown: the path :meth:`Download.get_dest() <dlmanager.Download.get_dest>`
        returns (as the manager's :meth:`~dlmanager.DownloadManager.get_dest` gives it)
    :ivar path: the path written, resolved when the manager was created
    :ivar lock: the destination's lock between processes, or None
    :ivar leftovers: whether a leftover of a stopped download may be there
    :ivar after: a download of the same destination to let end first
    :ivar metadata: records the metadata of the file published there
    :ivar naming: for a download the server names, what names it once the
        response arrives (:mod:`~dlmanager.server_names`); None otherwise
    """

    shown: str
    path: str
    lock: DestinationLock | None = None
    leftovers: bool = True
    after: Download | None = None
    metadata: MetadataStore = dataclasses.field(default_factory=MetadataStore)
    naming: Naming | None = None

    def claim(
        self, url: str, cancel: threading.Event, events: Events, give_way: Callable[[], object]
    ) -> str | None:
        """Let the earlier download end, then take the lock (waiting while
        another process or manager holds it, reporting its progress meanwhile).

        :param give_way: called before waiting (the download gives its
            transfer slot back meanwhile: others go first)
        :return: who was waited for (``"another download"``, ``"another
            process"``, ``"another manager"``), or None when nobody was: a
            leftover may have been left, and the file may be done
        :raises DownloadInterrupt: when cancelled meanwhile
        :raises StorageError: when the lock cannot be taken
        """
        waited = None
        previous = self.after
        if previous is not None and not previous.join(0):
            give_way()
            while not previous.join(POLL):
                if cancel.is_set():
                    raise DownloadInterrupt()
            waited = "another download"
        lock = self.lock
        if lock is None or _try_lock(lock, url):
            return waited
        waited = lock.holder()
        log.info("%s is being downloaded by %s: waiting", self.path, waited)
        give_way()
        while not _try_lock(lock, url):
            if cancel.wait(POLL * 2):
                raise DownloadInterrupt()
            held = leftover_progress(self.path)
            if held is not None:
                if held[1] is not None:
                    events.total = held[1]
                events.advance(held[0])
        return waited  # it finished, or died: then its bytes may be resumed

    def done(self, checksum: Checksum | None) -> bool:
        """Whether the file there is the download's result, once the lock is held
        (see :func:`found_done`): only for a destination other processes
        share (a lone :class:`~dlmanager.Download` downloads what it is asked)."""
        if self.lock is None or not regular_file(self.path):
            return False
        digest = None
        if checksum is not None:
            try:
                digest = file_digests(self.path, [checksum.algorithm]).get(checksum.algorithm)
            except FileNotFoundError:
                return False  # evicted meanwhile: downloaded again
        return found_done(True, checksum, digest)

    def revalidation(
        self,
        *,
        waited: str | None,
        asked_at: datetime.datetime | None,
        max_age: float | None,
        checksum: Checksum | None,
    ) -> Conditions | object | None:
        """What revalidating the file there takes, once the lock is held: the
        conditions of the request; :data:`~dlmanager.revalidation.CURRENT` when
        none is needed (validated within *max_age*, or since *asked_at* by whom
        the download *waited* for); None when there is no file to revalidate,
        or it does not match *checksum* (then it is downloaded again)."""
        try:
            fstat = os.lstat(self.path)
        except OSError:
            return None
        if not stat.S_ISREG(fstat.st_mode):
            return None
        info = read_info(self.path)
        just_validated = (
            waited is not None
            and info is not None
            and asked_at is not None
            and info.validated_at >= asked_at
        )
        if just_validated or fresh(info, max_age, utcnow()):
            return CURRENT
        if checksum is not None and mismatching(self.path, checksum):
            return None  # the caller's checksum wins: downloaded again
        return conditions_for(info, fstat.st_size, fstat.st_mtime)

    def release(self) -> None:
        """Release the lock, if held."""
        if self.lock is not None:
            self.lock.release()


JOIN = "join"  # the download in flight is the one asked for
HIT = "hit"  # the file is there
START = "start"  # a new download


def request_action(
    *,
    running: bool,
    running_checksum: Checksum | None,
    expected: Checksum | None,
    present: bool,
    mismatching: bool,
    same_request: bool = True,
) -> str:
    """What a request for a destination gets (pure): :data:`JOIN` the download
    in flight (unless it expects another checksum, or sends other request
    options: *same_request* is false), a :data:`HIT` on the file there
    (unless it does not match the checksum asked for), or a :data:`START`."""
    if running and same_request and (expected is None or running_checksum == expected):
        return JOIN
    if not running and present and not mismatching:
        return HIT
    return START


def regular_file(path: str) -> bool:
    """Whether *path* is a regular file itself (a symlink to one does not count)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except (OSError, ValueError):
        return False


def _try_lock(lock: DestinationLock, url: str) -> bool:
    try:
        return lock.try_acquire()
    except StorageError as exc:
        exc.url = url  # the lock knows the directory, not the URL
        raise
