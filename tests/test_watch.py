"""dlmanager.disk.watch: the changes a watchdog event reports, and a watcher's lifecycle."""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path

import pytest
from watchdog import events

from dlmanager.disk.watch import CannotWatch, DirectoryWatcher, SharedWatch, changes


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        (events.FileCreatedEvent("/d/a.bin"), [("a.bin", True)]),
        (events.FileModifiedEvent("/d/a.bin"), [("a.bin", True)]),
        (events.FileClosedEvent("/d/a.bin"), [("a.bin", True)]),
        (events.FileDeletedEvent("/d/a.bin"), [("a.bin", False)]),
        (events.FileMovedEvent("/d/a.bin", "/d/b.bin"), [("a.bin", False), ("b.bin", True)]),
        (events.FileMovedEvent("/d/a.bin", ""), [("a.bin", False)]),  # moved out
        (events.FileCreatedEvent(b"/d/\xff.bin"), [("\udcff.bin", True)]),  # bytes: fsdecoded
        (events.DirCreatedEvent("/d/sub"), []),
        (events.FileOpenedEvent("/d/a.bin"), []),
    ],
)
def test_changes(event: events.FileSystemEvent, expected: list[tuple[str, bool]]) -> None:
    assert changes(event) == expected


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="watched with inotify")


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, bool]] = []
        self.event = threading.Event()

    def on_change(self, name: str, present: bool) -> None:
        self.seen.append((name, present))
        self.event.set()


def observers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dlmanager-watch")]


@linux_only
def test_a_watcher_reports_changes_until_stopped(tmp_path: Path) -> None:
    recorder = Recorder()
    watcher = DirectoryWatcher(str(tmp_path), recorder.on_change)
    assert not watcher.alive
    watcher.start()
    try:
        assert watcher.alive
        (tmp_path / "a.bin").write_bytes(b"x")
        assert recorder.event.wait(3)
        assert ("a.bin", True) in recorder.seen
    finally:
        watcher.stop()
    assert not watcher.alive
    assert observers() == []
    watcher.stop()  # again: nothing


def test_the_callback_must_be_a_bound_method(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        DirectoryWatcher(str(tmp_path), lambda name, present: None)


@linux_only
def test_a_forgotten_watcher_stops_and_keeps_nothing_alive(tmp_path: Path) -> None:
    recorder = Recorder()
    watcher = DirectoryWatcher(str(tmp_path), recorder.on_change)
    watcher.start()
    del recorder  # held weakly: collected at once, the events go nowhere
    (tmp_path / "a.bin").write_bytes(b"x")
    time.sleep(0.1)
    del watcher
    gc.collect()
    assert observers() == []


@linux_only
def test_a_shared_watch_stops_at_its_last_user(tmp_path: Path) -> None:
    recorder = Recorder()
    shared = SharedWatch()
    assert shared.add(str(tmp_path), recorder.on_change)
    assert not shared.add(str(tmp_path), recorder.on_change)  # running: counted only
    with pytest.raises(RuntimeError, match="already watching"):
        shared.add(str(tmp_path / "other"), recorder.on_change)
    assert shared.live and shared.directory == str(tmp_path)
    assert not shared.drop_dead()
    shared.remove()
    assert shared.live
    shared.remove()
    assert not shared.live and shared.directory is None
    assert observers() == []


@linux_only
def test_a_shared_watch_without_an_observer_still_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dlmanager.disk import mounts

    monkeypatch.setattr(mounts, "remote_filesystem", lambda directory: "nfs4")
    recorder = Recorder()
    shared = SharedWatch()
    with pytest.raises(CannotWatch, match="nfs4"):
        shared.add(str(tmp_path), recorder.on_change)
    assert shared.directory == str(tmp_path) and not shared.live
    monkeypatch.undo()
    assert shared.add(str(tmp_path), recorder.on_change)  # a new user retries
    assert shared.live
    shared.remove()
    assert shared.live  # two users
    shared.remove()
    assert observers() == []
