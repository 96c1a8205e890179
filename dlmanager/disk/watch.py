"""Watching a directory: the lifecycle of a watchdog observer, and the changes it reports.

:class:`DirectoryWatcher` starts, checks and stops one observer of one directory and
turns its events into ``on_change(name, present)`` calls; what a change means for an
index is the caller's business (:class:`~dlmanager.PersistLimit`). :class:`SharedWatch`
counts the users of a watched directory. This module also keeps watchdog's own logs
about dlmanager's observers out of the way.
"""

from __future__ import annotations

import logging
import os
import threading
import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from dlmanager.disk import mounts
from dlmanager.redact import get_logger

if TYPE_CHECKING:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers.api import BaseObserver

__all__ = ["CannotWatch", "DirectoryWatcher", "OnChange", "SharedWatch", "changes"]

log = get_logger(__name__)

#: Seconds :meth:`DirectoryWatcher.stop` waits for the observer thread to end.
_JOIN_TIMEOUT = 10.0

#: ``on_change(name, present)``: see :class:`DirectoryWatcher`.
OnChange = Callable[[str, bool], None]


class CannotWatch(Exception):
    """No observer can follow the directory; the message says why."""


class DirectoryWatcher:
    """A non-recursive :mod:`watchdog` observer of *directory*, with a thread of its own.

    For each file of the directory that is created, modified (its content, access
    or modification time), moved in or out, renamed or deleted, the observer's
    thread calls ``on_change(name, present)``: *name* is the file's name in the
    directory, *present* False when the name is gone (deleted, moved away) and True
    when the file at that name is to be looked at again. Directories are ignored;
    an exception *on_change* raises is logged, and the observer goes on.

    *on_change* must be a bound method, and is held weakly: the watcher does not
    keep its object alive. Once that object is collected, events are ignored, and
    the observer is stopped when the watcher itself is collected.

    :param directory: the directory to follow
    :param on_change: a bound method ``on_change(name, present)``
    """

    def __init__(self, directory: str, on_change: OnChange) -> None:
        self.directory = directory
        if not isinstance(on_change, types.MethodType):
            raise TypeError(f"on_change must be a bound method, not {on_change!r}")
        # Its object, held weakly, and its function: as weakref.WeakMethod does,
        # without building a bound method per event.
        self._owner = weakref.ref(on_change.__self__)
        self._method = on_change.__func__
        self._observer: BaseObserver | None = None
        self._finalizer: Callable[[], object] | None = None

    def __repr__(self) -> str:
        return f"DirectoryWatcher({self.directory!r}, alive={self.alive})"

    @property
    def alive(self) -> bool:
        """Whether the observer runs and still follows the directory (False once it
        was removed or renamed, or the observer died, and before :meth:`start`)."""
        observer = self._observer
        if observer is None:
            return False
        emitters = tuple(observer.emitters)  # one atomic copy: the set may change meanwhile
        return observer.is_alive() and bool(emitters) and all(e.is_alive() for e in emitters)

    def start(self) -> None:
        """Start the observer.

        :raises CannotWatch: when watchdog cannot be imported, the directory is on
            a network filesystem (see :mod:`dlmanager.disk.mounts`), the platform
            has no native change notification, or the observer does not start
            (inotify limits reached, for example); nothing is left running then
        """
        try:
            from watchdog import events
            from watchdog.observers import Observer
            from watchdog.observers.polling import PollingObserver
        except ImportError as exc:
            raise CannotWatch(f"watchdog cannot be imported: {exc}") from None
        fstype = mounts.remote_filesystem(self.directory)
        if fstype is not None:
            raise CannotWatch(f"it is on a {fstype} filesystem, whose changes are not notified")
        event_filter: list[type[FileSystemEvent]] = [
            events.FileCreatedEvent,
            events.FileDeletedEvent,
            events.FileModifiedEvent,  # with inotify: IN_MODIFY and IN_ATTRIB
            events.FileMovedEvent,
        ]
        attrib = getattr(events, "FileAttribEvent", None)  # watchdog >= 7: IN_ATTRIB
        if attrib is not None:
            event_filter.append(attrib)
        observer: BaseObserver | None = None
        try:
            _quiet_watchdog()
            observer = Observer()
            if isinstance(observer, PollingObserver):
                raise CannotWatch("the platform has no file change notification")
            observer.name = f"dlmanager-watch {self.directory}"
            observer.schedule(
                _handler(self._owner, self._method),
                self.directory,
                recursive=False,
                event_filter=event_filter,
            )
            observer.start()
        except CannotWatch:
            if observer is not None:
                _stop(observer)
            raise
        except (OSError, RuntimeError) as exc:
            if observer is not None:
                _stop(observer)
            raise CannotWatch(f"the observer cannot start: {exc}") from None
        quiet = os.path.abspath(self.directory)
        _watchdog_noise.add(quiet)
        self._observer = observer
        # Not a method of self: the watcher can be collected, and that stops it.
        self._finalizer = weakref.finalize(self, _stop, observer, quiet)

    def stop(self) -> None:
        """Stop the observer and wait for its thread (and those it started) to end.

        Calling it again, or before :meth:`start`, does nothing. Never call it with
        a lock the owner's *on_change* takes: the observer's thread may be
        waiting for it.
        """
        finalizer = self._finalizer
        self._observer = self._finalizer = None
        if finalizer is not None:
            finalizer()  # once: it is dead afterwards


class SharedWatch:
    """The watch of one directory, shared by counted users: the first starts its
    observer, the last stops it.

    A user that comes while the observer is dead (or could not start) starts a
    new one. Not thread-safe: the owner serializes the calls with a lock, never
    one that *on_change* takes (stopping joins the observer's thread).
    """

    def __init__(self) -> None:
        #: The directory followed (as its first user spelt it), or None.
        self.directory: str | None = None
        self._users = 0
        self._watcher: DirectoryWatcher | None = None

    @property
    def live(self) -> bool:
        """Whether an observer follows :attr:`directory`."""
        watcher = self._watcher
        return watcher is not None and watcher.alive

    def add(self, directory: str, on_change: OnChange) -> bool:
        """Count one more user of *directory*, and start an observer unless one runs.

        :param on_change: see :class:`DirectoryWatcher`
        :return: False when an observer already ran (nothing changed), True when
            one was started
        :raises CannotWatch: when no observer can start; the user is counted,
            and the directory followed without one
        :raises RuntimeError: when another directory is followed
        """
        if self.directory is not None:
            if os.path.abspath(self.directory) != os.path.abspath(directory):
                raise RuntimeError(
                    f"already watching {self.directory!r}; close() before watching another"
                )
            self._users += 1
            if self.live:
                return False
            users = self._users
            self._stop()
            self._users = users
        else:
            self._users = 1
        self.directory = directory
        watcher = DirectoryWatcher(directory, on_change)
        watcher.start()
        self._watcher = watcher
        return True

    def remove(self) -> None:
        """Count one user less; at the last, stop the observer and follow nothing.

        Calling it when nothing is followed does nothing.
        """
        self._users -= 1
        if self._users <= 0:
            self._stop()

    def drop_dead(self) -> bool:
        """Stop and forget an observer that stopped following the directory (it
        was removed or renamed, or the observer died); the directory stays
        followed, without an observer.

        :return: whether there was one
        """
        watcher = self._watcher
        if watcher is None or watcher.alive:
            return False
        self._watcher = None
        watcher.stop()
        return True

    def _stop(self) -> None:
        watcher = self._watcher
        self._watcher = None
        self.directory = None
        self._users = 0
        if watcher is not None:
            watcher.stop()


def changes(event: FileSystemEvent) -> list[tuple[str, bool]]:
    """The ``(name, present)`` changes a watchdog *event* reports (see
    :class:`DirectoryWatcher`): none for a directory or an event of another kind."""
    if event.is_directory:
        return []
    kind = event.event_type
    if kind == "moved":
        found = [(_name(event.src_path), False)]
        if event.dest_path:
            found.append((_name(event.dest_path), True))
        return found
    if kind == "deleted":
        return [(_name(event.src_path), False)]
    if kind in _PRESENT:
        return [(_name(event.src_path), True)]
    return []


#: The kinds of event after which the file at the path is looked at again.
_PRESENT = frozenset({"created", "modified", "attrib", "closed"})


def _name(raw: bytes | str) -> str:
    return os.path.basename(os.fsdecode(raw))


def _handler(
    owner: weakref.ref[object], method: Callable[[object, str, bool], None]
) -> FileSystemEventHandler:
    """An event handler calling ``method(owner, name, present)`` while *owner* lives."""
    from watchdog.events import FileSystemEventHandler

    class _Handler(FileSystemEventHandler):
        def dispatch(self, event: FileSystemEvent) -> None:
            target = owner()
            if target is None:
                return
            try:
                for name, present in changes(event):
                    method(target, name, present)
            except Exception:  # an exception would end the observer's thread
                log.warning("Cannot apply %r", event, exc_info=True)

    return _Handler()


def _stop(observer: BaseObserver, quiet: str | None = None) -> None:
    """Stop *observer* and wait for its thread (and those it started) to end.

    :param quiet: the directory whose watchdog DEBUG records are dropped
        while it is watched (see :class:`_WatchdogNoise`)
    """
    if quiet is not None:
        _watchdog_noise.discard(quiet)
    try:
        observer.stop()
    except Exception:
        log.debug("Stopping %r failed", observer, exc_info=True)
    if observer.ident is None or observer is threading.current_thread():
        return  # never started, or this is its own thread (finalized there)
    observer.join(_JOIN_TIMEOUT)
    if observer.is_alive():
        log.warning("The observer thread %s did not stop", observer.name)


class _WatchdogNoise(logging.Filter):
    """Keeps watchdog's logs about dlmanager's own observers out of the way.

    It drops the ERROR log of a benign race of every stop (the inotify thread
    stopped between reading an event and handling it, see
    gorakhargosh/watchdog#963), which would otherwise reach the standard error
    of programs that do not configure logging; and watchdog's DEBUG records
    that name a directory dlmanager watches (one per file system event, some
    80 for one 20 MB download), which would drown dlmanager's own DEBUG
    records. Other users of watchdog keep its DEBUG records about theirs.
    """

    SHUTDOWN_RACE = "InotifyEmitter.queue_events() called when the thread is inactive"
    LOGGERS = (
        "watchdog.observers.inotify",
        "watchdog.observers.inotify_buffer",
        "watchdog.observers.inotify_c",
        "watchdog.observers.inotify_move_event_grouper",
    )

    def __init__(self) -> None:
        super().__init__()
        self.directories: frozenset[str] = frozenset()  # replaced whole: read without a lock
        self._lock = threading.Lock()
        self._observers: dict[str, int] = {}  # directory -> dlmanager observers of it

    def add(self, directory: str) -> None:
        with self._lock:
            self._observers[directory] = self._observers.get(directory, 0) + 1
            self.directories = frozenset(self._observers)

    def discard(self, directory: str) -> None:
        with self._lock:
            count = self._observers.pop(directory, 0) - 1
            if count > 0:
                self._observers[directory] = count
            self.directories = frozenset(self._observers)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg == self.SHUTDOWN_RACE:
            return False
        if record.levelno > logging.DEBUG or not self.directories:
            return True
        message = record.getMessage()
        return not any(directory in message for directory in self.directories)


_watchdog_noise = _WatchdogNoise()


def _quiet_watchdog() -> None:
    """Install :class:`_WatchdogNoise` on watchdog's loggers (once)."""
    for name in _WatchdogNoise.LOGGERS:
        logger = logging.getLogger(name)
        if _watchdog_noise not in logger.filters:
            logger.addFilter(_watchdog_noise)
