"""PersistLimit.watch: a real watchdog observer following changes other processes make.

Every change is made by another process (``python -c``) unless the test is
about something else; the index must reflect it within a second. Tests poll
with a deadline (:func:`eventually`) instead of sleeping a fixed time.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dlmanager.disk import mounts
from dlmanager.disk.layout import STATE_DIR
from dlmanager.persist_limit import PersistLimit

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="live accounting is verified with inotify"
)

#: A fixed epoch for explicit access times: file i is used at BASE + i.
BASE = 1_600_000_000
#: How long a change may take to show in the index before a test fails.
DEADLINE = 3.0
POLL = 0.01


def eventually(predicate: Callable[[], bool], what: str, deadline: float = DEADLINE) -> float:
    """Poll *predicate* until it holds; fail after *deadline* seconds.

    :return: the seconds it took
    """
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > deadline:
            pytest.fail(f"not within {deadline} s: {what}")
        time.sleep(POLL)
    return time.monotonic() - start


def other_process(code: str, *args: str) -> None:
    """Run *code* in another Python process (``sys.argv[1:]`` are *args*)."""
    subprocess.run([sys.executable, "-c", code, *args], check=True, timeout=60)


def make(directory: Path, name: str, size: int, atime: float) -> str:
    path = directory / name
    path.write_bytes(b"x" * size)
    os.utime(path, (atime, atime))
    return str(path)


def names(limit: PersistLimit) -> list[str]:
    return [os.path.basename(file.path) for file in limit.files]


def sizes(limit: PersistLimit) -> dict[str, int]:
    return {os.path.basename(file.path): file.stat.st_size for file in limit.files}


@pytest.fixture(autouse=True)
def no_thread_left() -> Iterator[None]:
    """Every observer thread a test starts is gone when it ends."""
    before = set(threading.enumerate())
    yield
    left = [thread for thread in threading.enumerate() if thread not in before]
    assert left == [], f"threads left running: {left}"


@pytest.fixture
def limit() -> Iterator[PersistLimit]:
    """A PersistLimit without limits; the test watches what it wants."""
    with PersistLimit(0) as limit:
        yield limit


# -- watchdog itself -----------------------------------------------------------------------


def test_watchdog_reports_another_process_utime(tmp_path: Path) -> None:
    # inotify reports an access time change only as IN_ATTRIB: watchdog 6 turns it
    # into a FileModifiedEvent (on_modified), watchdog 7 into a FileAttribEvent
    # (on_attrib). PersistLimit listens to both; this records which one arrives.
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    path = make(tmp_path, "a.bin", 10, BASE)
    seen: list[tuple[str, str]] = []

    class Recorder(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            seen.append((event.event_type, os.fsdecode(event.src_path)))

    observer = Observer()
    observer.schedule(Recorder(), str(tmp_path), recursive=False)
    observer.start()
    try:
        other_process("import os, sys; os.utime(sys.argv[1], (1.6e9 + 5, 1.6e9))", path)
        eventually(lambda: any(p == path for _, p in seen), "an event for the utime")
    finally:
        observer.stop()
        observer.join()
    kinds = {kind for kind, p in seen if p == path}
    assert kinds & {"modified", "attrib"}, kinds


# -- the initial scan ----------------------------------------------------------------------


def test_watch_registers_the_directory_content(tmp_path: Path, limit: PersistLimit) -> None:
    a = make(tmp_path, "a.bin", 10, BASE + 2)
    b = make(tmp_path, "b.bin", 20, BASE + 1)
    make(tmp_path, ".hidden", 40, BASE)
    make(tmp_path, ".a.bin.0123abcd.part", 80, BASE)
    (tmp_path / STATE_DIR).mkdir()
    make(tmp_path / STATE_DIR, "state", 160, BASE)
    (tmp_path / "sub").mkdir()
    gone = make(tmp_path, "gone.bin", 320, BASE)
    limit.register_file(gone)
    os.remove(gone)
    limit.watch(str(tmp_path))
    assert limit.watching
    assert [f.path for f in limit.files] == [b, a]
    assert limit.total_size == 30


def test_watch_errors(tmp_path: Path, limit: PersistLimit) -> None:
    with pytest.raises(NotADirectoryError):
        limit.watch(str(tmp_path / "missing"))
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    limit.watch(str(tmp_path / "one"))
    with pytest.raises(RuntimeError, match="already watching"):
        limit.watch(str(tmp_path / "two"))
    threads = set(threading.enumerate())
    limit.watch(str(tmp_path / "one"))  # the same directory: nothing new, counted
    assert set(threading.enumerate()) == threads
    limit.close()
    assert limit.watching  # one watch() left
    with pytest.raises(RuntimeError, match="already watching"):
        limit.watch(str(tmp_path / "two"))
    limit.close()
    assert not limit.watching
    limit.watch(str(tmp_path / "two"))  # after the last close(), another one
    assert limit.watching


# -- changes by another process ------------------------------------------------------------


def test_file_created_by_another_process(tmp_path: Path, limit: PersistLimit) -> None:
    limit.watch(str(tmp_path))
    other_process(
        "import sys; open(sys.argv[1], 'wb').write(b'y' * 123)", str(tmp_path / "new.bin")
    )
    eventually(lambda: sizes(limit) == {"new.bin": 123}, "the new file registered")
    assert limit.total_size == 123


def test_file_replaced_by_another_process(tmp_path: Path, limit: PersistLimit) -> None:
    make(tmp_path, "a.bin", 10, BASE)
    limit.watch(str(tmp_path))
    assert sizes(limit) == {"a.bin": 10}
    seen_hidden: list[str] = []

    def replaced() -> bool:
        current = sizes(limit)
        seen_hidden.extend(name for name in current if name.startswith("."))
        return current == {"a.bin": 500}

    other_process(
        "import os, sys\n"
        "tmp = os.path.join(sys.argv[1], '.a.bin.0123abcd.part')\n"
        "with open(tmp, 'wb') as f:\n"
        "    for _ in range(5):\n"
        "        f.write(b'z' * 100)\n"
        "        f.flush()\n"
        "os.replace(tmp, os.path.join(sys.argv[1], 'a.bin'))\n",
        str(tmp_path),
    )
    eventually(replaced, "the replaced file registered with its new size")
    assert limit.total_size == 500
    assert seen_hidden == []


def test_file_modified_in_place_by_another_process(tmp_path: Path, limit: PersistLimit) -> None:
    a = make(tmp_path, "a.bin", 10, BASE)
    limit.watch(str(tmp_path))
    other_process("import sys; open(sys.argv[1], 'ab').write(b'y' * 90)", a)
    eventually(lambda: limit.total_size == 100, "the new size")


def test_file_touched_by_another_process_moves_in_lru_order(
    tmp_path: Path, limit: PersistLimit
) -> None:
    make(tmp_path, "a.bin", 10, BASE + 1)
    b = make(tmp_path, "b.bin", 10, BASE + 2)
    make(tmp_path, "c.bin", 10, BASE + 3)
    limit.watch(str(tmp_path))
    assert names(limit) == ["a.bin", "b.bin", "c.bin"]
    start = time.monotonic()
    # What a cache hit in another dlmanager process does: set the access time,
    # keep the modification time.
    other_process(
        "import os, sys, time\n"
        "st = os.stat(sys.argv[1])\n"
        "os.utime(sys.argv[1], ns=(time.time_ns(), st.st_mtime_ns))\n",
        b,
    )
    eventually(lambda: names(limit) == ["a.bin", "c.bin", "b.bin"], "b.bin used last")
    elapsed = time.monotonic() - start  # includes starting the other interpreter
    assert elapsed < 1.0, f"the use took {elapsed:.2f} s to show"
    assert limit.total_size == 30
    # And back: an access time in the past makes it the least recently used.
    other_process("import os, sys; os.utime(sys.argv[1], (1.6e9, 1.6e9))", b)
    eventually(lambda: names(limit) == ["b.bin", "a.bin", "c.bin"], "b.bin used first")


def test_file_deleted_by_another_process(tmp_path: Path, limit: PersistLimit) -> None:
    a = make(tmp_path, "a.bin", 10, BASE)
    make(tmp_path, "b.bin", 20, BASE)
    limit.watch(str(tmp_path))
    other_process("import os, sys; os.remove(sys.argv[1])", a)
    eventually(lambda: sizes(limit) == {"b.bin": 20}, "a.bin dropped")
    assert limit.total_size == 20


def test_files_moved_out_in_and_renamed(tmp_path: Path, limit: PersistLimit) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    a = make(watched, "a.bin", 10, BASE)
    make(watched, "b.bin", 20, BASE)
    outside = str(tmp_path / "a.bin")
    limit.watch(str(watched))
    move = "import os, sys; os.rename(sys.argv[1], sys.argv[2])"
    other_process(move, a, outside)
    eventually(lambda: sizes(limit) == {"b.bin": 20}, "a.bin moved out")
    other_process(move, outside, str(watched / "c.bin"))
    eventually(lambda: sizes(limit) == {"b.bin": 20, "c.bin": 10}, "c.bin moved in")
    other_process(move, str(watched / "b.bin"), str(watched / "d.bin"))
    eventually(lambda: sizes(limit) == {"c.bin": 10, "d.bin": 20}, "b.bin renamed d.bin")
    other_process(move, str(watched / "d.bin"), str(watched / ".hidden"))
    eventually(lambda: sizes(limit) == {"c.bin": 10}, "d.bin renamed to a hidden name")


def test_directories_and_hidden_files_are_ignored(tmp_path: Path, limit: PersistLimit) -> None:
    limit.watch(str(tmp_path))
    other_process(
        "import os, sys\n"
        "d = sys.argv[1]\n"
        "os.mkdir(os.path.join(d, 'sub'))\n"
        "open(os.path.join(d, 'sub', 'inner.bin'), 'wb').write(b'x')\n"
        "os.mkdir(os.path.join(d, '.dlmanager'))\n"
        "open(os.path.join(d, '.dlmanager', 'pins'), 'wb').write(b'x')\n"
        "open(os.path.join(d, '.hidden'), 'wb').write(b'x')\n"
        "open(os.path.join(d, '.x.0123abcd.part'), 'wb').write(b'x')\n"
        "open(os.path.join(d, 'last.bin'), 'wb').write(b'x' * 7)\n",
        str(tmp_path),
    )
    # last.bin is created last: once it shows, the earlier changes were handled.
    eventually(lambda: "last.bin" in sizes(limit), "last.bin registered")
    assert sizes(limit) == {"last.bin": 7}


# -- eviction with a live index ------------------------------------------------------------


def test_eviction_counts_files_added_by_another_process(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    make(tmp_path, "b.bin", 100, BASE + 2)
    with PersistLimit(250, file_limit=1) as limit:
        limit.watch(str(tmp_path))
        assert limit.remove_old_files() == []
        other_process(
            "import sys; open(sys.argv[1], 'wb').write(b'y' * 100)", str(tmp_path / "c.bin")
        )
        eventually(lambda: limit.total_size == 300, "c.bin counted")
        assert limit.remove_old_files() == [a]
        assert names(limit) == ["b.bin", "c.bin"]


def test_protect_keeps_a_file(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    make(tmp_path, "c.bin", 100, BASE + 3)
    asked: list[str] = []

    def protect(path: str) -> bool:
        asked.append(path)
        return path == a

    with PersistLimit(250, file_limit=1, protect=protect) as limit:
        limit.watch(str(tmp_path))
        assert limit.remove_old_files() == [b]
        assert asked == [a, b]
        assert os.path.exists(a)
        assert names(limit) == ["a.bin", "c.bin"]
        assert limit.total_size == 200  # the protected file still counts
        eventually(lambda: not os.path.exists(b) and "b.bin" not in names(limit), "b.bin gone")


def test_reserve_evicts_earlier_and_release_undoes_it(tmp_path: Path) -> None:
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    with PersistLimit(250, file_limit=1) as limit:
        limit.watch(str(tmp_path))
        limit.reserve("download-1", 40)
        assert limit.remove_old_files() == []  # 200 + 40 < 250
        limit.reserve("download-2", 10)
        assert limit.reserved == 50
        limit.release("download-2")
        assert limit.remove_old_files() == []  # the release undid the 250
        limit.reserve("download-2", 10)
        assert limit.remove_old_files() == [a]  # 200 + 50 >= 250
        assert limit.total_size == 100
        assert limit.reserved == 50
        limit.release("download-1")
        limit.release("download-2")
        assert limit.reserved == 0
        assert limit.remove_old_files() == []
        assert os.path.exists(b)


def test_a_reservation_keyed_by_its_path_ends_when_the_file_arrives(tmp_path: Path) -> None:
    dest = str(tmp_path / "new.bin")
    with PersistLimit(1000) as limit:
        limit.watch(str(tmp_path))
        limit.reserve(dest, 300)
        other_process(
            "import os, sys\n"
            "tmp = os.path.join(os.path.dirname(sys.argv[1]), '.new.bin.0123abcd.part')\n"
            "open(tmp, 'wb').write(b'x' * 300)\n"
            "os.replace(tmp, sys.argv[1])\n",
            dest,
        )
        eventually(lambda: limit.total_size == 300, "new.bin counted")
        assert limit.reserved == 0  # counted once, as a file


# -- without an observer -------------------------------------------------------------------


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "dlmanager.persist_limit" and record.levelno >= logging.WARNING
    ]


def check_rescans(tmp_path: Path, limit: PersistLimit) -> None:
    """remove_old_files() sees the files created and deleted behind its back."""
    a = make(tmp_path, "a.bin", 100, BASE + 1)
    assert limit.remove_old_files() == []
    assert names(limit) == ["a.bin"]
    b = make(tmp_path, "b.bin", 100, BASE + 2)
    make(tmp_path, "c.bin", 100, BASE + 3)
    assert limit.remove_old_files() == [a]  # 300 >= 250: it saw b and c
    os.remove(b)
    assert limit.remove_old_files() == []
    assert names(limit) == ["c.bin"]
    assert limit.total_size == 100


def test_fallback_when_the_observer_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from watchdog.observers import Observer

    def no_watches(self: object) -> None:
        raise OSError(28, "inotify watch limit reached")

    monkeypatch.setattr(Observer, "start", no_watches)
    caplog.set_level(logging.WARNING, logger="dlmanager.persist_limit")
    with PersistLimit(250, file_limit=1) as limit:
        limit.watch(str(tmp_path))
        assert not limit.watching
        check_rescans(tmp_path, limit)
    [message] = warnings_of(caplog)  # once, however many checks
    assert "live accounting" in message.lower()
    assert "inotify watch limit reached" in message
    assert "rescan" in message


def test_fallback_without_watchdog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "watchdog.observers", None)
    caplog.set_level(logging.WARNING, logger="dlmanager.persist_limit")
    with PersistLimit(250, file_limit=1) as limit:
        limit.watch(str(tmp_path))
        assert not limit.watching
        check_rescans(tmp_path, limit)
    [message] = warnings_of(caplog)
    assert "watchdog cannot be imported" in message


def test_fallback_on_a_network_filesystem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(mounts, "remote_filesystem", lambda directory: "nfs4")
    caplog.set_level(logging.WARNING, logger="dlmanager.persist_limit")
    with PersistLimit(250, file_limit=1) as limit:
        limit.watch(str(tmp_path))
        assert not limit.watching
        check_rescans(tmp_path, limit)
    [message] = warnings_of(caplog)
    assert "nfs4" in message


def test_refresh_rebuilds_the_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "remote_filesystem", lambda directory: "nfs")
    with PersistLimit(0) as limit:
        limit.watch(str(tmp_path))
        a = make(tmp_path, "a.bin", 10, BASE)
        assert names(limit) == []
        limit.refresh()
        assert names(limit) == ["a.bin"]
        os.remove(a)
        limit.refresh()
        assert names(limit) == []
        assert limit.total_size == 0


def test_watched_directory_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    watched = tmp_path / "watched"
    watched.mkdir()
    a = make(watched, "a.bin", 100, BASE)
    caplog.set_level(logging.WARNING, logger="dlmanager.persist_limit")
    with PersistLimit(50, file_limit=1) as limit:
        limit.watch(str(watched))
        os.remove(a)
        watched.rmdir()
        eventually(lambda: not limit.watching, "the observer notices")
        assert limit.remove_old_files() == []
        assert limit.files == []
        assert limit.total_size == 0
    [message] = warnings_of(caplog)
    assert "observer stopped" in message


# -- stopping ------------------------------------------------------------------------------


def observer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dlmanager-watch")]


def test_close_stops_the_observer(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    limit = PersistLimit(0)
    limit.watch(str(tmp_path))
    assert limit.watching
    assert len(observer_threads()) == 1
    limit.close()
    assert not limit.watching
    assert set(threading.enumerate()) == before
    limit.close()  # again: nothing
    # The index stays, but no longer follows the directory.
    make(tmp_path, "a.bin", 10, BASE)
    limit.register_dir_content(str(tmp_path))
    assert names(limit) == ["a.bin"]


def test_context_manager_closes(tmp_path: Path) -> None:
    before = set(threading.enumerate())
    with PersistLimit(0) as limit:
        limit.watch(str(tmp_path))
        assert limit.watching
    assert not limit.watching
    assert set(threading.enumerate()) == before


def test_context_manager_closes_on_error(tmp_path: Path) -> None:
    with pytest.raises(ZeroDivisionError), PersistLimit(0) as limit:
        limit.watch(str(tmp_path))
        1 / 0  # noqa: B018
    assert not limit.watching


def test_a_forgotten_limit_stops_its_observer(tmp_path: Path) -> None:
    limit = PersistLimit(0)
    limit.watch(str(tmp_path))
    assert len(observer_threads()) == 1
    del limit
    gc.collect()
    assert observer_threads() == []


def test_watchdogs_benign_shutdown_error_is_not_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with PersistLimit(10**9) as limit:
        limit.watch(os.fspath(tmp_path))
    logger = logging.getLogger("watchdog.observers.inotify")

    with caplog.at_level(logging.ERROR, logger="watchdog"):
        logger.error("InotifyEmitter.queue_events() called when the thread is inactive")
        logger.error("a real inotify problem")

    assert [r.getMessage() for r in caplog.records] == ["a real inotify problem"]
