"""The mount table: whether a directory is on a network or cluster filesystem (Linux).

Live accounting (:mod:`dlmanager.disk.watch`) asks it before starting an observer:
inotify does not see the changes other machines make on such a filesystem.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = ["REMOTE_FILESYSTEMS", "filesystem_type", "remote_filesystem"]

#: Filesystems on which inotify (and the other native APIs) miss the changes
#: other machines make: watching them would leave the index silently stale.
REMOTE_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "coda",
        "gfs2",
        "glusterfs",
        "gpfs",
        "lustre",
        "ncpfs",
        "nfs",
        "nfs4",
        "ocfs2",
        "smb3",
        "smbfs",
        "fuse.ceph-fuse",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "fuse.juicefs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.sshfs",
        "fuse.goofys",
    }
)

_MOUNTINFO = "/proc/self/mountinfo"


def remote_filesystem(directory: str) -> str | None:
    """The type of the filesystem holding *directory* if it is a network one (Linux).

    :return: the type (``"nfs4"``, ``"fuse.sshfs"``...), or None for a local
        filesystem, or when the mount table cannot be read (not Linux)
    """
    try:
        with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.readlines()
    except OSError:
        return None
    fstype = filesystem_type(lines, os.path.realpath(directory))
    if fstype in REMOTE_FILESYSTEMS or fstype.startswith("nfs"):
        return fstype
    return None


def filesystem_type(mountinfo: Iterable[str], path: str) -> str:
    """The type of the filesystem mounted deepest above *path* in *mountinfo*.

    :param mountinfo: the lines of a ``/proc/PID/mountinfo`` file (see proc(5));
        malformed lines are skipped
    :param path: an absolute path without symlinks
    :return: the type, or ``""`` when no mount point holds *path*
    """
    best, fstype = -1, ""
    for line in mountinfo:
        fields = line.split()
        try:
            mount_point = _unescape(fields[4])
            fstype_here = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        inside = path == mount_point or path.startswith(os.path.join(mount_point, ""))
        if inside and len(mount_point) >= best:
            best, fstype = len(mount_point), fstype_here
    return fstype


def _unescape(field: str) -> str:
    r"""Undo the octal escapes (``\040`` for a space) of a mountinfo path."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
