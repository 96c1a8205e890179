"""Write-behind (``disk/writeback.py``): which ranges of a temporary file are handed
to the kernel's writeback while it is written, and the ``sync_file_range`` call itself.

The ranges are recorded through the ``start`` parameter of
:class:`~dlmanager.disk.writeback.Writeback`, on real files.
"""

from __future__ import annotations

import errno
import os
import sys
import threading

import pytest

from dlmanager.disk.partfile import PartFile
from dlmanager.disk.writeback import WRITE_BEHIND, Writeback, sync_file_range_write
from tests.conftest import read

KIB = 1024
MIB = 1024 * KIB


class Recorder:
    """A ``start`` that records the ranges handed over, as ``(offset, nbytes)``."""

    def __init__(self, error: OSError | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.error = error
        self._lock = threading.Lock()

    def __call__(self, fd: int, offset: int, nbytes: int) -> None:
        with self._lock:
            self.calls.append((offset, nbytes))
        if self.error is not None:
            raise self.error


def create(destdir: str, every: int, start: Recorder) -> PartFile:
    return PartFile.create(os.path.join(destdir, "file.bin"), writeback=Writeback(every, start))


def test_a_stream_hands_over_each_run_of_every_bytes(destdir: str) -> None:
    recorder = Recorder()
    part = create(destdir, MIB, recorder)
    for _ in range(18):  # 4.5 MiB
        part.write(b"x" * (256 * KIB))
    part.discard()
    assert recorder.calls == [(0, MIB), (MIB, MIB), (2 * MIB, MIB), (3 * MIB, MIB)]


def test_uneven_writes_are_handed_over_once_past_every_byte(destdir: str) -> None:
    recorder = Recorder()
    part = create(destdir, MIB, recorder)
    for _ in range(12):  # 3.5 MiB in writes of 300 KiB
        part.write(b"x" * (300 * KIB))
    part.discard()
    # Each range handed over starts where the previous one ended, after
    # the first write that takes it to a mebibyte or more.
    assert recorder.calls == [(0, 1200 * KIB), (1200 * KIB, 1200 * KIB), (2400 * KIB, 1200 * KIB)]


def test_a_file_smaller_than_every_pays_nothing(destdir: str) -> None:
    recorder = Recorder()
    small = create(destdir, WRITE_BEHIND, recorder)
    small.write(b"s" * (64 * KIB))
    small.publish()
    assert recorder.calls == []
    almost = create(destdir, WRITE_BEHIND, recorder)
    for _ in range(WRITE_BEHIND // (256 * KIB) - 1):
        almost.write(b"a" * (256 * KIB))
    almost.write(b"a" * (256 * KIB - 1))
    almost.discard()
    assert recorder.calls == []


def test_each_region_written_in_place_is_followed_on_its_own(destdir: str) -> None:
    """As the connections of a segmented download write, interleaved."""
    recorder = Recorder()
    part = create(destdir, MIB, recorder)
    chunk = b"r" * (256 * KIB)
    for i in range(10):  # 2.5 MiB into each of the regions from 0 and from 8 MiB
        part.pwrite(i * len(chunk), chunk)
        part.pwrite(8 * MIB + i * len(chunk), chunk)
    part.discard()
    assert sorted(recorder.calls) == [(0, MIB), (MIB, MIB), (8 * MIB, MIB), (9 * MIB, MIB)]


def test_a_refused_start_turns_it_off_and_the_writes_go_on(destdir: str) -> None:
    recorder = Recorder(OSError(errno.EINVAL, "not here"))
    part = create(destdir, 256 * KIB, recorder)
    data = os.urandom(2 * MIB)
    for offset in range(0, len(data), 128 * KIB):
        part.write(data[offset : offset + 128 * KIB])
    part.publish()
    assert recorder.calls == [(0, 256 * KIB)]
    assert read(os.path.join(destdir, "file.bin")) == data


def test_no_writeback_follows_a_file_without_one(destdir: str) -> None:
    recorder = Recorder()
    assert Writeback(0, recorder).follow(0) is None
    part = PartFile.create(os.path.join(destdir, "file.bin"), writeback=None)
    part.write(b"x" * (2 * WRITE_BEHIND))
    part.publish()
    assert recorder.calls == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sync_file_range is Linux's")
def test_sync_file_range_starts_the_writeback_or_says_why_not(destdir: str) -> None:
    path = os.path.join(destdir, "written.bin")
    with open(path, "wb") as handle:
        handle.write(b"w" * MIB)
        handle.flush()
        sync_file_range_write(handle.fileno(), 0, MIB)  # no error: started
    reader, writer = os.pipe()
    try:
        with pytest.raises(OSError) as raised:
            sync_file_range_write(reader, 0, MIB)
        assert raised.value.errno == errno.ESPIPE
    finally:
        os.close(reader)
        os.close(writer)
