"""A misbehaving disk: full, file too big, destination read-only or gone mid-run.

Real failures, no mocks of I/O: ``RLIMIT_FSIZE`` in a child process (EFBIG), a
small tmpfs when the test may mount one (ENOSPC), a directory removed, renamed
or made read-only under running downloads. Only the free-space figure is faked
(:func:`dlmanager.partfile.free_space`) where the check itself is tested.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dlmanager import (
    Download,
    DownloadEvent,
    DownloadManager,
    DownloadState,
    EventKind,
    InsufficientSpaceError,
    RetryPolicy,
    StorageError,
    Timeouts,
)
from dlmanager.disk import partfile
from dlmanager.disk.checkpoint import Checkpoint, checkpoint_path
from dlmanager.disk.checkpoint import save as save_checkpoint
from dlmanager.disk.layout import STATE_DIR, temporary_name
from tests.conftest import child_env, listing, parts, read, temporaries
from tests.server import FaultServer, Resource, make_data

KIB = 1024
MIB = 1024 * KIB
DATA = make_data(MIB, seed=21)
KEEP = make_data(10_000, seed=22)
FAST = RetryPolicy(backoff_factor=0.001, backoff_max=0.01)
#: Seconds a download of these tests may take before the test fails.
WAIT = 30.0


class Recorder:
    """Collects events; signals when a download has received bytes."""

    def __init__(self) -> None:
        self.events: list[DownloadEvent] = []
        self.got_bytes = threading.Event()

    def __call__(self, event: DownloadEvent) -> None:
        self.events.append(event)
        if event.kind is EventKind.PROGRESS and event.received:
            self.got_bytes.set()

    def kinds(self) -> list[EventKind]:
        return [event.kind for event in self.events]

    def bytes_seen(self) -> int:
        return max((e.received for e in self.events if e.kind is EventKind.PROGRESS), default=0)


def place_files(destdir: str, name: str) -> None:
    """An unrelated file, and a previous version of the destination: both must survive."""
    with open(os.path.join(destdir, "keep.bin"), "wb") as handle:
        handle.write(KEEP)
    with open(os.path.join(destdir, name), "wb") as handle:
        handle.write(b"previous version")


def assert_untouched(destdir: str, name: str) -> None:
    assert read(os.path.join(destdir, "keep.bin")) == KEEP
    assert read(os.path.join(destdir, name)) == b"previous version"
    assert temporaries(destdir) == []
    assert sorted(listing(destdir)) == sorted(["keep.bin", name])


def finish(dl: Download) -> BaseException:
    """Wait for *dl* (never forever) and return the error it failed with."""
    wait_for(lambda: not dl.is_running(), "the end of the download")
    dl.thread.join(WAIT)
    assert not dl.thread.is_alive(), "the download hangs"
    assert dl.state is DownloadState.FAILED
    error = dl.error()
    assert error is not None
    return error[1]


def start(
    server: FaultServer,
    destdir: str,
    resource: Resource | bytes,
    *,
    name: str = "big.bin",
    recorder: Recorder | None = None,
    **kwargs: Any,
) -> Download:
    server.add("/" + name, resource)
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("min_split_size", 64 * KIB)
    kwargs.setdefault("chunk_size", 16 * KIB)
    dl = Download(
        server.url("/" + name),
        os.path.join(destdir, name),
        on_event=recorder,
        **kwargs,
    )
    dl.start()
    return dl


# -- EFBIG: RLIMIT_FSIZE in a child process --------------------------------------------

CHILD = textwrap.dedent(
    """
    import json, resource, signal, sys
    # Without this the kernel kills the process (SIGXFSZ) instead of failing the write.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    url, dest, limit, connections = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    from dlmanager import Download, RetryPolicy, StorageError
    kinds = []
    dl = Download(url, dest, connections=connections, min_split_size=64 * 1024,
                  chunk_size=16 * 1024, retry=RetryPolicy(backoff_factor=0.001, backoff_max=0.01),
                  on_event=lambda event: kinds.append(event.kind.value))
    dl.start()
    dl.wait(raise_if_error=False)
    error = dl.error()[1]
    print(json.dumps({
        "state": dl.state.value,
        "storage_error": isinstance(error, StorageError),
        "type": type(error).__name__,
        "errno": getattr(error, "errno", None),
        "message": str(error),
        "cause": type(error.__cause__).__name__,
        "events": kinds,
    }))
    """
)


def run_limited(url: str, dest: str, limit: int, connections: int) -> dict[str, Any]:
    """Download *url* in a child process that may not write files past *limit* bytes."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url, dest, str(limit), str(connections)],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome: dict[str, Any] = json.loads(result.stdout)
    return outcome


def assert_efbig(outcome: dict[str, Any], destdir: str, action: str) -> None:
    assert outcome["state"] == "failed"
    assert outcome["storage_error"] and outcome["type"] == "StorageError"
    assert outcome["errno"] == errno.EFBIG
    assert outcome["cause"] == "OSError"
    prefix = f"cannot {action} {os.path.join(destdir, '.big.bin.')}"
    assert outcome["message"].startswith(prefix), outcome["message"]
    assert outcome["message"].endswith(f".part: {os.strerror(errno.EFBIG)}"), outcome["message"]
    assert "retrying" not in outcome["events"]  # a full disk is not worth another attempt


def test_file_too_big_one_connection(server: FaultServer, destdir: str) -> None:
    server.add("/big.bin", DATA)
    place_files(destdir, "big.bin")
    dest = os.path.join(destdir, "big.bin")
    outcome = run_limited(server.url("/big.bin"), dest, 256 * KIB, connections=1)
    assert_efbig(outcome, destdir, "write")
    assert len(server.requests) == 1
    assert_untouched(destdir, "big.bin")


def test_file_too_big_to_preallocate(server: FaultServer, destdir: str) -> None:
    server.add("/big.bin", DATA)
    place_files(destdir, "big.bin")
    dest = os.path.join(destdir, "big.bin")
    outcome = run_limited(server.url("/big.bin"), dest, 256 * KIB, connections=4)
    assert_efbig(outcome, destdir, f"preallocate {len(DATA)} bytes for")
    assert len(server.requests) == 1  # no other connection was opened
    assert_untouched(destdir, "big.bin")


def plant_leftover(destdir: str, url: str, data: bytes, held: int, validator: str) -> str:
    """A temporary file of full size holding ``data[:held]``, and its checkpoint."""
    part = os.path.join(destdir, temporary_name("big.bin"))
    with open(part, "wb") as handle:
        handle.write(data[:held])
        handle.truncate(len(data))
    save_checkpoint(checkpoint_path(part), Checkpoint(url, len(data), validator, ((0, held),)))
    return part


def test_file_too_big_in_several_connections(server: FaultServer, destdir: str) -> None:
    # A leftover already of full size needs no preallocation: the connections'
    # writes past the limit fail, and the first one stops them all.
    resource = server.add("/big.bin", DATA)
    assert resource.etag is not None
    url = server.url("/big.bin")
    place_files(destdir, "big.bin")
    plant_leftover(destdir, url, DATA, 128 * KIB, resource.etag)
    outcome = run_limited(url, os.path.join(destdir, "big.bin"), 512 * KIB, connections=4)
    assert_efbig(outcome, destdir, "write")
    assert 1 <= len(server.requests) <= 4
    assert all(r.range is not None for r in server.requests)
    assert_untouched(destdir, "big.bin")


# -- ENOSPC: a small tmpfs ----------------------------------------------------------------


@pytest.fixture
def tmpfs(tmp_path: Any) -> Iterator[str]:
    """A 1 MiB tmpfs (skipped where it cannot be mounted), holding keep.bin."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    path = os.path.join(os.fspath(tmp_path), "tmpfs")
    os.mkdir(path)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", path],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def test_disk_full_while_writing(server: FaultServer, tmpfs: str) -> None:
    # No announced size (chunked): nothing to check first, the disk fills up.
    place_files(tmpfs, "big.bin")
    free = partfile.free_space(tmpfs)
    data = make_data(2 * MIB, seed=23)
    recorder = Recorder()
    dl = start(server, tmpfs, Resource(data, chunked=True), recorder=recorder)
    error = finish(dl)
    assert type(error) is StorageError
    assert error.errno == errno.ENOSPC
    assert isinstance(error.__cause__, OSError) and error.__cause__.errno == errno.ENOSPC
    assert str(error).startswith(f"cannot write {os.path.join(tmpfs, '.big.bin.')}")
    assert str(error).endswith(f".part: {os.strerror(errno.ENOSPC)}")
    assert EventKind.RETRYING not in recorder.kinds()
    assert len(server.requests) == 1
    assert_untouched(tmpfs, "big.bin")
    assert partfile.free_space(tmpfs) == free  # all the space is given back


@pytest.mark.parametrize("connections", [1, 4])
def test_too_big_for_the_disk_is_refused_before_writing(
    server: FaultServer, tmpfs: str, connections: int
) -> None:
    place_files(tmpfs, "big.bin")
    data = make_data(2 * MIB, seed=24)
    recorder = Recorder()
    dl = start(server, tmpfs, data, recorder=recorder, connections=connections)
    error = finish(dl)
    assert isinstance(error, InsufficientSpaceError)
    assert error.errno == errno.ENOSPC
    assert error.needed == len(data)
    assert error.available == partfile.free_space(tmpfs)
    assert f"not enough free space in {tmpfs} for big.bin" in str(error)
    assert recorder.bytes_seen() == 0
    assert len(server.requests) == 1
    assert_untouched(tmpfs, "big.bin")


def test_preallocation_on_a_full_disk(
    server: FaultServer, tmpfs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The filesystem claims more room than it has: posix_fallocate finds out.
    monkeypatch.setattr(partfile, "free_space", lambda directory: 100 * MIB)
    place_files(tmpfs, "big.bin")
    data = make_data(2 * MIB, seed=25)
    dl = start(server, tmpfs, data, connections=4)
    error = finish(dl)
    assert isinstance(error, InsufficientSpaceError)
    assert error.errno == errno.ENOSPC
    assert error.needed == len(data)
    assert str(error).startswith(f"cannot preallocate {len(data)} bytes for ")
    assert len(server.requests) == 1
    assert_untouched(tmpfs, "big.bin")


# -- the free-space check (a faked free-space figure) --------------------------------------


def fake_free_space(monkeypatch: pytest.MonkeyPatch, available: int) -> list[str]:
    """Make every directory report *available* free bytes; return the directories asked."""
    asked: list[str] = []

    def free_space(directory: str) -> int:
        asked.append(directory)
        return available

    monkeypatch.setattr(partfile, "free_space", free_space)
    return asked


def test_free_space_is_what_statvfs_gives_this_user(tmp_path: Any) -> None:
    status = os.statvfs(os.fspath(tmp_path))
    free = partfile.free_space(os.fspath(tmp_path))
    assert free is not None and free > 0
    # Another process may write meanwhile: compare up to a few MiB.
    assert abs(free - status.f_bavail * status.f_frsize) < 64 * MIB
    assert partfile.free_space(os.path.join(os.fspath(tmp_path), "missing")) is None


@pytest.mark.parametrize("connections", [1, 4])
def test_free_space_checked_before_the_body_is_written(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch, connections: int
) -> None:
    asked = fake_free_space(monkeypatch, len(DATA) // 2)
    place_files(destdir, "big.bin")
    recorder = Recorder()
    dl = start(server, destdir, DATA, recorder=recorder, connections=connections)
    error = finish(dl)
    assert isinstance(error, InsufficientSpaceError)
    assert (error.needed, error.available) == (len(DATA), len(DATA) // 2)
    assert error.errno == errno.ENOSPC
    assert error.url == server.url("/big.bin")
    assert error.dest == os.path.join(destdir, "big.bin")
    assert str(error) == (
        f"not enough free space in {destdir} for big.bin: "
        f"{len(DATA)} bytes to write, {len(DATA) // 2} free"
    )
    assert asked == [destdir]
    assert recorder.bytes_seen() == 0  # not one byte of the body was written
    assert EventKind.RETRYING not in recorder.kinds()
    assert len(server.requests) == 1
    assert_untouched(destdir, "big.bin")


def test_a_margin_is_kept_free(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_free_space(monkeypatch, len(DATA) + partfile.SPACE_MARGIN - 1)
    error = finish(start(server, destdir, DATA))
    assert isinstance(error, InsufficientSpaceError)
    assert str(error).endswith(f"({partfile.SPACE_MARGIN} are kept free)")


def test_enough_free_space(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = fake_free_space(monkeypatch, len(DATA) + partfile.SPACE_MARGIN)
    dl = start(server, destdir, DATA, connections=4)
    dl.wait()
    assert read(os.path.join(destdir, "big.bin")) == DATA
    assert asked == [destdir]


def test_unknown_size_is_not_checked(
    server: FaultServer, destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked = fake_free_space(monkeypatch, 0)
    start(server, destdir, Resource(DATA, chunked=True)).wait()
    assert read(os.path.join(destdir, "big.bin")) == DATA
    assert asked == []


HELD = 768 * KIB
MISSING = len(DATA) - HELD


@pytest.mark.parametrize("connections", [1, 4])
@pytest.mark.parametrize("room", [0, -1])
def test_resume_needs_room_for_the_missing_bytes_only(
    server: FaultServer,
    destdir: str,
    monkeypatch: pytest.MonkeyPatch,
    connections: int,
    room: int,
) -> None:
    resource = server.add("/big.bin", DATA)
    assert resource.etag is not None
    url = server.url("/big.bin")
    part = os.path.join(destdir, temporary_name("big.bin"))
    with open(part, "wb") as handle:
        handle.write(DATA[:HELD])
    save_checkpoint(checkpoint_path(part), Checkpoint(url, len(DATA), resource.etag, ((0, HELD),)))
    fake_free_space(monkeypatch, MISSING + partfile.SPACE_MARGIN + room)
    dl = start(server, destdir, resource, connections=connections)
    if room < 0:
        error = finish(dl)
        assert isinstance(error, InsufficientSpaceError)
        assert error.needed == MISSING
        assert server.requests == []  # checked before asking for the rest
        assert temporaries(destdir) == []  # a failed download leaves nothing behind
        return
    dl.wait()
    assert read(os.path.join(destdir, "big.bin")) == DATA
    starts = [int((r.range or "bytes=-1-").split("=")[1].split("-")[0]) for r in server.requests]
    assert min(starts) == HELD


def test_check_counts_the_space_a_file_already_holds(
    destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    part = partfile.PartFile.create(os.path.join(destdir, "x.bin"))
    try:
        part.preallocate(MIB)
        fake_free_space(monkeypatch, 0)
        part.check_space(MIB)  # a preallocated temporary file needs no more room
        with pytest.raises(InsufficientSpaceError) as raised:
            part.check_space(MIB + 8 * KIB)
        assert raised.value.needed == 8 * KIB
    finally:
        part.discard()
    assert listing(destdir) == []


# -- the destination read-only or gone mid-run -----------------------------------------------


def chmod_protects(directory: str) -> bool:
    """Whether a directory without write permission refuses new files here (not for root)."""
    probe = os.path.join(directory, "probe")
    os.mkdir(probe, 0o500)
    try:
        with open(os.path.join(probe, "file"), "wb"):
            return False
    except PermissionError:
        return True
    finally:
        os.chmod(probe, 0o700)
        shutil.rmtree(probe)


def lock_file(destdir: str, name: str) -> str:
    return os.path.join(destdir, STATE_DIR, name + ".lock")


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    event = threading.Event()
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        event.wait(0.01)


@contextlib.contextmanager
def read_only_mount(path: str) -> Iterator[None]:
    """Bind-mount *path* read-only over itself (root only); skip where that fails."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("bind mounts need root on Linux")
    for command in (["mount", "--bind", path, path], ["mount", "-o", "remount,bind,ro", path]):
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            subprocess.run(["umount", path], capture_output=True, check=False)
            pytest.skip(f"cannot bind-mount read-only: {done.stderr.decode(errors='replace')}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, check=False)


def break_directory(how: str, path: str, stack: contextlib.ExitStack) -> None:
    if how == "removed":
        shutil.rmtree(path)
    elif how == "renamed":
        os.rename(path, path + ".moved")
    elif how == "read-only":
        os.chmod(path, 0o500)
        stack.callback(os.chmod, path, 0o755)
    else:
        stack.enter_context(read_only_mount(path))


@pytest.mark.parametrize("how", ["removed", "renamed", "read-only", "read-only-mount"])
def test_destination_broken_mid_run(server: FaultServer, tmp_path: Any, how: str) -> None:
    if how == "read-only" and not chmod_protects(os.fspath(tmp_path)):
        pytest.skip("root writes into a read-only directory anyway")
    broken = os.path.join(os.fspath(tmp_path), "broken")
    healthy = os.path.join(os.fspath(tmp_path), "healthy")
    files = {name: make_data(600 * KIB, seed=i) for i, name in enumerate("abcde")}
    for name, data in files.items():
        # The broken directory's files stall after a while; the others trickle in.
        fault: dict[str, Any] = {"trickle": (32 * KIB, 0.01)}
        if name in "abc":
            fault = {"stall_after": [100 * KIB] * 8, "stall_seconds": WAIT}
        # b comes in one stream: the server does not serve ranges.
        server.add(f"/{name}.bin", Resource(data, accept_ranges=name != "b", **fault))
    recorders = {name: Recorder() for name in files}
    options: dict[str, Any] = {
        "max_workers": 2,
        "connections": 2,
        "min_split_size": 256 * KIB,
        "timeout": Timeouts(read=None, stall=None),
        "retry": FAST,
    }
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(DownloadManager(broken, **options))
        other = stack.enter_context(DownloadManager(healthy, **options))
        with open(os.path.join(broken, "keep.bin"), "wb") as handle:
            handle.write(KEEP)
        downloads: dict[str, Download] = {}
        for name in files:
            manager = first if name in "abc" else other
            dl = manager.download(server.url(f"/{name}.bin"), on_event=recorders[name])
            assert dl is not None
            downloads[name] = dl
        # a (two connections) and b (one stream) are writing, and stall;
        # c waits for a slot: queued, it holds no thread and no lock yet.
        assert recorders["a"].got_bytes.wait(WAIT)
        assert recorders["b"].got_bytes.wait(WAIT)
        assert downloads["c"].state is DownloadState.QUEUED
        assert not downloads["c"].thread.is_alive()
        assert not os.path.exists(lock_file(broken, "c.bin"))
        break_directory(how, broken, stack)
        errors = {name: finish(downloads[name]) for name in "abc"}
        for name in "de":
            finishing = downloads[name]
            wait_for(lambda: not finishing.is_running(), f"the end of {name}")  # noqa: B023
            finishing.wait()
            assert read(os.path.join(healthy, f"{name}.bin")) == files[name]
    for name, error in errors.items():
        assert type(error) is StorageError, (name, error)
        assert error.dest == os.path.join(broken, f"{name}.bin")
        assert error.url == server.url(f"/{name}.bin")
        assert str(error).startswith("cannot "), str(error)
        # c fails taking its lock once a and b gave their slots back (or,
        # when the lock still worked, creating its temporary file).
        paths = [f" {broken}{os.sep}.{name}.bin."]
        if name == "c":
            paths.append(f" {lock_file(broken, 'c.bin')}:")
        assert any(path in str(error) for path in paths), str(error)
        assert EventKind.RETRYING not in recorders[name].kinds()
        if how in ("removed", "renamed"):
            assert error.errno == errno.ENOENT
            assert str(error).endswith(f"(the destination directory {broken} is gone)")
        else:
            assert error.errno in (errno.EACCES, errno.EROFS)
    assert sorted(listing(healthy)) == ["d.bin", "e.bin"]
    remaining = broken + ".moved" if how == "renamed" else broken
    if how == "removed":
        assert not os.path.exists(broken)  # nothing recreated it
    else:
        names = listing(remaining)
        assert not set(names) & {f"{name}.bin" for name in "abc"}  # no partial file
        assert read(os.path.join(remaining, "keep.bin")) == KEEP


def test_read_only_directory_before_the_start(server: FaultServer, destdir: str) -> None:
    if not chmod_protects(os.path.dirname(destdir)):
        pytest.skip("root writes into a read-only directory anyway")
    os.chmod(destdir, stat.S_IRUSR | stat.S_IXUSR)
    try:
        error = finish(start(server, destdir, DATA))
    finally:
        os.chmod(destdir, 0o755)
    assert type(error) is StorageError
    assert error.errno == errno.EACCES
    assert str(error).startswith(f"cannot create {os.path.join(destdir, '.big.bin.')}")
    assert server.requests == []
    assert parts(destdir) == []


def test_destination_removed_before_a_download_starts(server: FaultServer, destdir: str) -> None:
    server.add("/late.bin", make_data(10_000))
    with DownloadManager(destdir) as manager:
        shutil.rmtree(destdir)
        download = manager.download(server.url("/late.bin"))
        assert download is not None

        with pytest.raises(
            StorageError, match=r"cannot lock .* \(the destination directory .* is gone\)"
        ) as info:
            download.wait()

    assert info.value.url == server.url("/late.bin")
    assert info.value.errno == errno.ENOENT
    assert not os.path.exists(destdir)  # not created again by taking the lock
    assert server.requests == []


# --- leftovers and live downloads ---------------------------------------------------------


def test_a_temporary_removed_before_its_lock_is_replaced(
    destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A download has created its temporary file and not locked it yet; a
    # download of the same file looking for a leftover takes it for an
    # abandoned one (unlocked, no checkpoint) and removes it: the first one
    # must not write into a file that no longer has a name.
    real_lock = partfile._lock
    removed: list[str] = []

    def removed_first(fd: int) -> bool:
        if not removed:
            path = os.readlink(f"/proc/self/fd/{fd}")
            os.unlink(path)
            removed.append(path)
        return real_lock(fd)

    monkeypatch.setattr(partfile, "_lock", removed_first)

    part = partfile.PartFile.create(os.path.join(destdir, "same.bin"))
    try:
        assert part.path != removed[0]
        assert os.path.exists(part.path)
        assert temporaries(destdir) == [os.path.basename(part.path)]
    finally:
        part.discard()


def test_a_leftover_search_does_not_take_a_file_published_meanwhile(
    destdir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The writer publishes its temporary file (rename, then unlock) between
    # the search's open and its lock: the file locked is then the finished
    # one, which must not be written into.
    url = "http://127.0.0.1/same.bin"
    dest = os.path.join(destdir, "same.bin")
    part = os.path.join(destdir, temporary_name("same.bin"))
    with open(part, "wb") as f:
        f.write(b"x" * 60)
    save_checkpoint(checkpoint_path(part), Checkpoint(url, 100, '"v1"', ((0, 60),)))
    real_lock = partfile._lock

    def published_first(fd: int) -> bool:
        os.rename(part, dest)
        return real_lock(fd)

    monkeypatch.setattr(partfile, "_lock", published_first)

    assert partfile.PartFile.adopt(dest, url) is None
    assert read(dest) == b"x" * 60
