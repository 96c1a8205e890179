"""dlmanager.disk.mounts: which filesystem holds a directory, read from a mount table."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlmanager.disk import mounts
from dlmanager.disk.mounts import REMOTE_FILESYSTEMS, filesystem_type, remote_filesystem

MOUNTINFO = [
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n",
    "40 22 0:35 / /srv rw,relatime shared:2 - tmpfs tmpfs rw\n",
    "41 40 0:36 / /srv/build\\040cache rw,relatime - nfs4 server:/export rw,vers=4.2\n",
    "42 22 0:37 / /home/me/remote rw,nosuid shared:9 master:3 - fuse.sshfs me@host: rw\n",
    "garbage\n",
    "43 22 0:38 / /broken rw,relatime no-separator-here\n",
]


@pytest.mark.parametrize(
    ("path", "fstype"),
    [
        ("/", "ext4"),
        ("/usr/lib", "ext4"),
        ("/srv", "tmpfs"),
        ("/srv/builds", "tmpfs"),  # a prefix of the name is not a parent
        ("/srv/build cache", "nfs4"),  # \040 is a space
        ("/srv/build cache/a/b", "nfs4"),  # the deepest mount point wins
        ("/home/me/remote/x", "fuse.sshfs"),  # optional fields before "-"
        ("/broken/x", "ext4"),  # malformed lines are skipped
    ],
)
def test_filesystem_type(path: str, fstype: str) -> None:
    assert filesystem_type(MOUNTINFO, path) == fstype


def test_no_mount_point() -> None:
    assert filesystem_type([], "/x") == ""
    assert filesystem_type(MOUNTINFO[1:], "/x") == ""


def test_network_filesystems_are_remote() -> None:
    assert {"nfs", "nfs4", "cifs", "fuse.sshfs", "lustre"} <= REMOTE_FILESYSTEMS
    assert "ext4" not in REMOTE_FILESYSTEMS


def test_remote_filesystem_reads_the_mount_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = tmp_path / "mountinfo"
    table.write_text("".join(MOUNTINFO), encoding="utf-8")
    monkeypatch.setattr(mounts, "_MOUNTINFO", str(table))
    assert remote_filesystem("/srv/build cache/x") == "nfs4"
    assert remote_filesystem("/home/me/remote") == "fuse.sshfs"
    assert remote_filesystem("/srv/x") is None  # tmpfs: local
    table.write_text("1 0 8:1 / / rw - nfs server:/ rw\n", encoding="utf-8")
    assert remote_filesystem("/any") == "nfs"  # any nfs* type


def test_no_mount_table_means_not_remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mounts, "_MOUNTINFO", str(tmp_path / "missing"))
    assert remote_filesystem(str(tmp_path)) is None
