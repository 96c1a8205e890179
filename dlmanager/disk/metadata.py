"""What dlmanager remembers of a file it published: where it came from, its validators, its times.

Every file a download publishes carries a :class:`FileInfo`, written before
the atomic rename so that the data and what describes it arrive together:

- as extended attributes of the temporary file (they move with it):
  ``user.xdg.origin.url``, the freedesktop attribute that ``curl --xattr``
  and ``wget --xattr`` write and desktop tools show, holds the URL asked for
  (credentials removed); ``user.dlmanager.info`` holds the rest as JSON;
- where the filesystem refuses extended attributes (found out once per
  directory), or refuses one this long (a very long URL), in a hidden
  sidecar file ``.NAME.dlmanager.json`` beside the file, written atomically
  (a temporary name, then a rename) before the file's own rename. The
  sidecar records the file's inode and size: one that does not match the
  file at ``NAME`` (left by a crash between the two renames, or by a file
  replaced by hand) is ignored, and removed by the next manager on the
  directory. Size limits never count sidecars (hidden names), and eviction
  removes a file's sidecar with it.

A file that has neither (a user's own file, one downloaded by an earlier
version or by another tool) has no :class:`FileInfo`: dlmanager did not
download it. Reading never raises: what cannot be read or parsed is None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import json
import os
import secrets
import stat
import urllib.parse
from typing import Any

from dlmanager.redact import get_logger

__all__ = [
    "INFO_ATTR",
    "ORIGIN_ATTR",
    "SIDECAR_SUFFIX",
    "FileInfo",
    "MetadataStore",
    "is_sidecar",
    "read_info",
    "remove_sidecar",
    "sidecar_fname",
    "sidecar_matches",
    "sidecar_path",
    "strip_credentials",
    "utcnow",
]

log = get_logger(__name__)

#: The freedesktop attribute of the URL a file was downloaded from.
ORIGIN_ATTR = "user.xdg.origin.url"
#: dlmanager's own attribute: the rest of :class:`FileInfo`, as JSON.
INFO_ATTR = "user.dlmanager.info"
SIDECAR_SUFFIX = ".dlmanager.json"
_VERSION = 1
#: Errors of ``setxattr`` that mean "no extended attributes on this filesystem".
_NO_XATTRS = frozenset(
    getattr(errno, name)
    for name in ("ENOTSUP", "EOPNOTSUPP", "ENOSYS", "EPERM", "EACCES")
    if hasattr(errno, name)
)
#: Errors of ``setxattr`` that mean "not this one": too big for the filesystem.
_TOO_BIG = frozenset(
    getattr(errno, name) for name in ("E2BIG", "ENOSPC", "ERANGE") if hasattr(errno, name)
)
_HAS_XATTRS = hasattr(os, "setxattr")


@dataclasses.dataclass(frozen=True)
class FileInfo:
    """What dlmanager knows of a file it downloaded (see :meth:`DownloadManager.info
    <dlmanager.DownloadManager.info>`).

    :ivar url: the URL asked for, without credentials
    :ivar final_url: the URL the file came from, after redirects
    :ivar etag: the ``ETag`` the server sent with it, or None
    :ivar last_modified: its ``Last-Modified``, as sent, or None
    :ivar size: its size in bytes
    :ivar checksum: ``"ALGORITHM:HEX"`` it was verified against (the
        caller's checksum, else a digest the server announced), or None
    :ivar downloaded_at: when it was published (aware, UTC)
    :ivar validated_at: when the server last confirmed it (its download,
        or a revalidation answered ``304 Not Modified``; aware, UTC)
    """

    url: str
    final_url: str
    etag: str | None
    last_modified: str | None
    size: int
    checksum: str | None
    downloaded_at: datetime.datetime
    validated_at: datetime.datetime

    @classmethod
    def published(
        cls,
        url: str,
        final_url: str,
        etag: str | None,
        last_modified: str | None,
        size: int,
        checksum: str | None,
    ) -> FileInfo:
        """The info of a file published now from *url* (credentials stripped)."""
        now = utcnow()
        return cls(strip_credentials(url), strip_credentials(final_url), etag, last_modified,
                   size, checksum, now, now)  # fmt: skip

    def age(self, now: datetime.datetime | None = None) -> float:
        """Seconds since the file was last validated (never negative)."""
        now = now or utcnow()
        return max(0.0, (now - self.validated_at).total_seconds())

    def as_json(self) -> dict[str, Any]:
        """The fields as JSON values (times as ISO 8601 strings)."""
        fields = dataclasses.asdict(self)
        fields["downloaded_at"] = self.downloaded_at.isoformat()
        fields["validated_at"] = self.validated_at.isoformat()
        return fields


def utcnow() -> datetime.datetime:
    """Now, aware, in UTC (the times of :class:`FileInfo`)."""
    return datetime.datetime.now(datetime.timezone.utc)


def strip_credentials(url: str) -> str:
    """*url* without its ``user:password@`` part (what a file's metadata records)."""
    if "@" not in url:
        return url  # the common case, without parsing
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def sidecar_fname(fname: str) -> str:
    """The name of the sidecar of the file *fname*."""
    return f".{fname}{SIDECAR_SUFFIX}"


def sidecar_path(path: str) -> str:
    """The path of the sidecar of the file at *path*."""
    directory, fname = os.path.split(path)
    return os.path.join(directory, sidecar_fname(fname))


def is_sidecar(name: str) -> str | None:
    """The file name whose sidecar the base name *name* is, or None."""
    if (
        name.startswith(".")
        and name.endswith(SIDECAR_SUFFIX)
        and len(name) > len(SIDECAR_SUFFIX) + 1
    ):
        return name[1 : -len(SIDECAR_SUFFIX)]
    return None


def _stamp(when: datetime.datetime) -> float:
    return when.timestamp()


def _time(value: object) -> datetime.datetime:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)


def _optional_str(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"not a string: {value!r}")
    return value


def encode(info: FileInfo, **extra: object) -> bytes:
    """*info* (its URL too) and *extra* fields as the JSON that is stored."""
    record = {
        "version": _VERSION,
        "url": info.url,
        "final_url": info.final_url,
        "etag": info.etag,
        "last_modified": info.last_modified,
        "size": info.size,
        "checksum": info.checksum,
        "downloaded_at": _stamp(info.downloaded_at),
        "validated_at": _stamp(info.validated_at),
        **extra,
    }
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def decode(data: bytes, url: str | None = None) -> tuple[FileInfo, dict[str, Any]] | None:
    """The :class:`FileInfo` in *data* (with *url* as its URL when given) and the
    whole record; None when it is not one (malformed, or of a later version)."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict) or record.get("version") != _VERSION:
            return None
        size = record["size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        origin = url if url is not None else record["url"]
        final = record.get("final_url") or origin
        if not isinstance(origin, str) or not isinstance(final, str):
            return None
        info = FileInfo(
            url=origin,
            final_url=final,
            etag=_optional_str(record.get("etag")),
            last_modified=_optional_str(record.get("last_modified")),
            size=size,
            checksum=_optional_str(record.get("checksum")),
            downloaded_at=_time(record["downloaded_at"]),
            validated_at=_time(record["validated_at"]),
        )
    except (ValueError, KeyError, TypeError, OverflowError, OSError):
        return None
    return info, record


def _read_xattrs(target: int | str) -> FileInfo | bool | None:
    """The :class:`FileInfo` in *target*'s extended attributes; None when it has
    none; False when the filesystem has no extended attributes."""
    if not _HAS_XATTRS:
        return False
    try:
        data = os.getxattr(target, INFO_ATTR, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_XATTRS:
            return False
        return None  # ENODATA: no such attribute (or the file is gone)
    try:  # the URL shown to other tools; the record has it too, should it be removed
        origin: str | None = os.fsdecode(os.getxattr(target, ORIGIN_ATTR, follow_symlinks=False))
    except OSError:
        origin = None
    decoded = decode(data, origin)
    return decoded[0] if decoded else None


def _read_sidecar(path: str, fstat: os.stat_result) -> FileInfo | None:
    """The :class:`FileInfo` of the sidecar of *path*, if it describes the file
    whose status is *fstat* (same inode and size)."""
    try:
        with open(sidecar_path(path), "rb") as handle:
            data = handle.read(1 << 20)
    except OSError:
        return None
    decoded = decode(data)
    if decoded is None:
        return None
    info, record = decoded
    if record.get("inode") != fstat.st_ino or info.size != fstat.st_size:
        return None  # another file's: left by a crash, or the file was replaced by hand
    return info


def read_info(path: str) -> FileInfo | None:
    """The :class:`FileInfo` of the regular file at *path*, or None when dlmanager
    did not download it (or it is gone, or not a regular file)."""
    try:
        fstat = os.lstat(path)
    except OSError:
        return None
    if not stat.S_ISREG(fstat.st_mode):  # a regular file, not a link to one
        return None
    found = _read_xattrs(path)
    if isinstance(found, FileInfo):
        return found if found.size == fstat.st_size else None
    return _read_sidecar(path, fstat)


def sidecar_matches(path: str) -> bool:
    """Whether the sidecar of *path* describes the file there now (same inode
    and size); False when either is gone."""
    try:
        fstat = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(fstat.st_mode) and _read_sidecar(path, fstat) is not None


def remove_sidecar(path: str) -> None:
    """Remove the sidecar of the file at *path*, if it has one; never raises."""
    with contextlib.suppress(OSError):
        os.unlink(sidecar_path(path))


def _write_atomically(path: str, data: bytes) -> None:
    """Write *data* into the file *path* through a temporary name and a rename.

    :raises OSError: when it cannot be written (the temporary file is removed)
    """
    directory, fname = os.path.split(path)
    temporary = os.path.join(directory, f"{fname}.{secrets.token_hex(4)}.new")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class MetadataStore:
    """Writes the :class:`FileInfo` of the files published in one directory.

    Whether the directory's filesystem takes extended attributes is found
    out by the first write, and remembered.
    """

    def __init__(self) -> None:
        self.xattrs: bool | None = None if _HAS_XATTRS else False

    def stamp(self, fd: int, dest: str, info: FileInfo) -> None:
        """Record *info* for the open temporary file *fd*, to be published at
        *dest*: on the file itself, else in the sidecar of *dest*.

        :raises OSError: when neither can be written
        """
        if self.xattrs is not False and self._set(fd, info):
            return  # (an earlier version's sidecar is ignored, then removed: see the module)
        _write_atomically(sidecar_path(dest), encode(info, inode=os.fstat(fd).st_ino))

    def validated(self, path: str, when: datetime.datetime) -> FileInfo | None:
        """Record that the file at *path* was confirmed by its server at *when*
        (its metadata is rewritten in place); its new :class:`FileInfo`, or None
        when it has none (then nothing is written)."""
        info = read_info(path)
        if info is None:
            return None
        info = dataclasses.replace(info, validated_at=when)
        try:
            found = _read_xattrs(path)
            if isinstance(found, FileInfo):
                os.setxattr(path, INFO_ATTR, encode(info), follow_symlinks=False)
            else:
                _write_atomically(sidecar_path(path), encode(info, inode=os.lstat(path).st_ino))
        except OSError as exc:
            log.warning("Cannot record the validation of %s: %s", path, exc)
        return info

    def _set(self, fd: int, info: FileInfo) -> bool:
        """Set *info* as extended attributes of *fd*; whether they were set."""
        try:
            os.setxattr(fd, ORIGIN_ATTR, os.fsencode(info.url))
            os.setxattr(fd, INFO_ATTR, encode(info))
        except OSError as exc:
            if exc.errno in _NO_XATTRS and self.xattrs is None:
                log.debug("No extended attributes here (%s): metadata goes to sidecar files", exc)
                self.xattrs = False
            elif exc.errno not in _TOO_BIG:
                log.debug("Cannot set extended attributes: %s", exc)
            for name in (ORIGIN_ATTR, INFO_ATTR):
                with contextlib.suppress(OSError):
                    os.removexattr(fd, name)
            return False
        self.xattrs = True
        return True
