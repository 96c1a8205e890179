"""Destination locks (disk/locks.py): recycled as spares while others are held, never
taken from another holder, and gone with the last one."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import textwrap
import threading

import pytest

from dlmanager.disk import locks
from dlmanager.disk.layout import STATE_DIR, is_temporary
from dlmanager.disk.locks import DestinationLock, StateDir
from tests.conftest import listing, start_python


def held(state: StateDir, *fnames: str) -> list[DestinationLock]:
    """Locks of *fnames*, each taken."""
    taken = []
    for fname in fnames:
        lock = state.lock(fname)
        assert lock is not None and lock.try_acquire()
        taken.append(lock)
    return taken


def inode(path: str) -> int:
    return os.stat(path).st_ino


def spares(destdir: str) -> list[str]:
    """The spare lock files in *destdir*'s folder."""
    folder = os.path.join(destdir, STATE_DIR)
    return sorted(n for n in os.listdir(folder) if is_temporary(n.removesuffix(".lock")))


def test_a_lock_released_while_others_are_held_is_the_next_one(destdir: str) -> None:
    state = StateDir(destdir)
    a, b = held(state, "a.bin", "b.bin")
    a_inode = inode(a.path)
    a.release()
    # Renamed to a spare name, still locked: no other process can take it.
    assert not os.path.exists(a.path)
    (spare,) = spares(destdir)
    assert inode(os.path.join(destdir, STATE_DIR, spare)) == a_inode
    assert not locks.remove_if_unheld(os.path.join(destdir, STATE_DIR, spare))
    (c,) = held(state, "c.bin")
    assert inode(c.path) == a_inode  # the same file: none was created
    c.release()
    b.release()
    assert listing(destdir) == []  # with the last lock, the spares and the folder go


def test_a_spare_never_takes_a_lock_held_elsewhere(destdir: str) -> None:
    state, other = StateDir(destdir), StateDir(destdir)  # as two processes
    (taken_elsewhere,) = held(other, "x.bin")
    a, b = held(state, "a.bin", "b.bin")
    a.release()  # a spare now
    x = state.lock("x.bin")
    assert x is not None
    assert not x.try_acquire()  # its name exists: the spare is not linked there
    assert x.holder() == "another manager"
    (y,) = held(state, "y.bin")  # the spare serves the next one
    assert len(spares(destdir)) == 1
    for lock in (y, b, taken_elsewhere):
        lock.release()
    assert listing(destdir) == []


def test_without_hard_links_locks_are_made_as_usual(
    destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: str, dst: str) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_link)
    state = StateDir(destdir)
    a, b = held(state, "a.bin", "b.bin")
    a.release()
    (c,) = held(state, "c.bin")
    assert spares(destdir) == []  # the one kept could not serve: dropped
    c.release()
    d, e = held(state, "d.bin", "e.bin")
    d.release()
    assert spares(destdir) == []  # and none is kept any more
    e.release()
    b.release()
    assert listing(destdir) == []


HOLDER = textwrap.dedent(
    """
    import sys
    from dlmanager.disk.locks import StateDir
    state = StateDir(sys.argv[1])
    a, b = state.lock("a.bin"), state.lock("b.bin")
    assert a.try_acquire() and b.try_acquire()
    a.release()  # a spare, while b is held
    print("holding", flush=True)
    sys.stdin.readline()
    """
)


def test_the_spares_of_a_killed_process_are_removed(destdir: str) -> None:
    child = start_python(["-c", HOLDER, destdir], stdin=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "holding"
        assert len(spares(destdir)) == 1
        # Alive, it holds its spare: another process neither takes nor removes it.
        assert StateDir(destdir).remove_stale() == []
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=10)
    left = spares(destdir)
    assert len(left) == 1
    removed = StateDir(destdir).remove_stale()
    assert sorted(os.path.basename(p) for p in removed) == sorted(["b.bin.lock", *left])
    assert listing(destdir) == []


def test_managers_made_at_once_all_find_that_locks_work(tmp_path: pathlib.Path) -> None:
    """A manager made on a directory tries to lock every unheld coordination
    file (to remove those of killed processes) while another one probes
    whether locks work with a file of its own: the probe, finding its file
    locked, must not conclude that locks do not work."""
    directory = str(tmp_path)
    verdicts: list[bool] = []

    def make_many() -> None:
        for _ in range(300):
            state = StateDir(directory)
            verdicts.append(state.locks_work)
            state.remove_stale()

    threads = [threading.Thread(target=make_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(verdicts) == 1200
    assert all(verdicts), verdicts.count(False)
