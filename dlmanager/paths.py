"""File names: safe destination names and the hidden temporary files.

A download writes into a temporary file beside its destination, named
``.<name>.<8 hex digits>.part``, with its checkpoint beside it
(``.<name>.<8 hex digits>.ckpt``): hidden, unique per download, and
recognisable by :func:`is_temporary` so that :class:`~dlmanager.PersistLimit`
never counts or evicts one. The writer holds an exclusive ``flock`` on the
``.part`` file for as long as it writes; :func:`remove_stale_temporaries`
removes the ones whose writer is gone and that cannot be resumed.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterator

from dlmanager.redact import get_logger

__all__ = [
    "TEMP_SUFFIX",
    "as_path",
    "check_name_length",
    "check_url",
    "is_temporary",
    "leftover_fnames",
    "name_from_url",
    "name_max",
    "remove_stale_temporaries",
    "temporary_name",
    "try_exclusive",
    "validate_fname",
]

log = get_logger(__name__)

TEMP_SUFFIX = ".part"
_TEMP_RE = re.compile(r"\.(?P<fname>.+)\.[0-9a-f]{8}\.(?P<kind>part|ckpt|ckpt\.new)", re.DOTALL)
#: Hidden folder reserved for dlmanager's own state inside a destination directory.
STATE_DIR = ".dlmanager"
#: A temporary file younger than this is never taken for stale: its writer may
#: not have locked it yet.
STALE_MIN_AGE = 2.0
#: Bytes the longest name derived from a file name adds to it: the
#: checkpoint being written, ``.NAME.XXXXXXXX.ckpt.new``.
DERIVED_NAME_OVERHEAD = len(".") + len(".12345678.ckpt.new")
#: The longest file name (in bytes) most filesystems hold, when they do not say.
NAME_MAX = 255
#: A resumable temporary file (one with a checkpoint) is kept this long, in
#: seconds, for a later download of the same file to resume.
RESUMABLE_MAX_AGE = 7 * 24 * 3600.0

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an open file cannot be removed anyway
    fcntl = None  # type: ignore[assignment]


def check_url(url: str) -> None:
    """Check that *url* is an absolute http or https URL.

    :raises ValueError: naming what is wrong with it
    """
    if not isinstance(url, str):
        raise ValueError(f"URL must be a string, not {type(url).__name__}")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ValueError(f"invalid URL {url!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"unsupported URL scheme in {url!r}: only http and https are downloaded")
    if not parts.netloc:
        raise ValueError(f"invalid URL {url!r}: no host")


def as_path(value: object, what: str) -> str:
    """*value* (a string or an :class:`os.PathLike`) as a string path.

    :raises ValueError: naming *what* when it is neither, or empty
    """
    try:
        path = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        path = None
    if not isinstance(path, str) or not path:
        raise ValueError(f"{what} must be a non-empty str or os.PathLike path, not {value!r}")
    return path


def name_max(directory: str) -> int:
    """The longest file name, in bytes, the filesystem of *directory* holds."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def check_name_length(fname: str, longest: int = NAME_MAX) -> str:
    """Return *fname* if it and the names dlmanager derives from it fit in
    *longest* bytes (the filesystem's limit on a file name).

    :raises ValueError: when it is too long, saying how long it may be
    """
    size = len(os.fsencode(fname))
    allowed = longest - DERIVED_NAME_OVERHEAD
    if size > allowed:
        raise ValueError(
            f"file name too long: {fname[:40]!r}... is {size} bytes, and may be at most "
            f"{allowed} here (the filesystem holds {longest}; dlmanager's temporary files "
            f"add {DERIVED_NAME_OVERHEAD}): pass a shorter name"
        )
    return fname


def validate_fname(fname: str) -> str:
    """Return *fname* if it names a file directly inside a destination directory.

    :raises ValueError: when it is empty, ``.`` or ``..``, absolute, contains a
        path separator or NUL, or is a name dlmanager reserves for itself
    """
    if not isinstance(fname, str):
        raise ValueError(f"file name must be a string, not {type(fname).__name__}")
    if fname in ("", ".", ".."):
        raise ValueError(f"invalid file name {fname!r}")
    if "\x00" in fname:
        raise ValueError(f"invalid file name {fname!r}: contains NUL")
    if "/" in fname or "\\" in fname or (os.altsep and os.altsep in fname):
        raise ValueError(f"invalid file name {fname!r}: must not contain a path separator")
    if fname == STATE_DIR or is_temporary(fname):
        raise ValueError(f"invalid file name {fname!r}: reserved for dlmanager's own files")
    return fname


def name_from_url(url: str, hint: str = "pass fname") -> str:
    """Derive a file name from the last segment of the URL's path (percent-decoded).

    :param hint: what the error message tells the caller to do instead
    :raises ValueError: when the URL gives no usable name
    """
    path = urllib.parse.urlsplit(url).path
    segment = path.rsplit("/", 1)[-1]
    name = urllib.parse.unquote(segment)
    try:
        return validate_fname(name)
    except ValueError as exc:
        reason = "its path ends with '/'" if not segment else str(exc)
        raise ValueError(f"cannot derive a file name from URL {url!r} ({reason}); {hint}") from None


def temporary_name(fname: str) -> str:
    """A fresh, unique, hidden temporary file name for the destination *fname*."""
    return f".{fname}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def is_temporary(name: str) -> bool:
    """Whether the base name *name* is one of dlmanager's temporary files."""
    return _TEMP_RE.fullmatch(name) is not None


def temporary_fname(name: str) -> str | None:
    """The destination file name a temporary file's base *name* belongs to, or None."""
    match = _TEMP_RE.fullmatch(name)
    return match.group("fname") if match else None


def is_part(name: str) -> bool:
    """Whether the base name *name* is a temporary data file (not a checkpoint)."""
    match = _TEMP_RE.fullmatch(name)
    return match is not None and match.group("kind") == "part"


def remove_stale_temporaries(
    directory: str,
    min_age: float = STALE_MIN_AGE,
    resumable_max_age: float = RESUMABLE_MAX_AGE,
) -> list[str]:
    """Remove temporary files in *directory* that no live process writes and
    that cannot be resumed.

    A ``.part`` file is stale when nobody holds its lock and it is older than
    *min_age* seconds. A stale one that has a valid checkpoint is kept for a
    later download of the same file to resume, unless it is older than
    *resumable_max_age*. Checkpoints without their ``.part`` file go too,
    whatever their age (a writer removes its ``.part`` file only to publish or
    discard it, and then removes the checkpoint itself). Returns the paths
    removed.
    """
    from dlmanager import checkpoint  # a leaf module; imported late to keep paths.py light

    if fcntl is None:  # pragma: no cover
        return []
    removed: list[str] = []
    now = time.time()
    try:
        entries = [e for e in os.scandir(directory) if is_temporary(e.name)]
    except OSError:
        return []
    names = {e.name for e in entries}
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if not is_part(entry.name):
            base = entry.name[: -len(".new")] if entry.name.endswith(".new") else entry.name
            part = base[: -len(".ckpt")] + TEMP_SUFFIX
            if part not in names and not os.path.lexists(os.path.join(directory, part)):
                _unlink(entry.path, removed)
            continue
        if age < min_age:
            continue
        ckpt = checkpoint.checkpoint_path(entry.path)
        resumable = age < resumable_max_age and checkpoint.load(ckpt) is not None
        with try_exclusive(entry.path) as locked:
            if locked and not resumable:
                _unlink(entry.path, removed)
                checkpoint.remove(ckpt)
    return removed


def leftover_fnames(directory: str) -> set[str]:
    """The destination names that have a temporary file in *directory*.

    Their download looks for a leftover to resume, and removes the ones that
    cannot be (such as a ``.part`` file without checkpoint, left by a process
    killed before its first checkpoint). One scan of the directory, so that
    each download need not scan it again.
    """
    try:
        names = os.listdir(directory)
    except OSError:
        return set()
    found = set()
    for name in names:
        match = _TEMP_RE.fullmatch(name)
        if match is not None and match.group("kind") in ("part", "ckpt"):
            found.add(match.group("fname"))
    return found


@contextlib.contextmanager
def try_exclusive(path: str) -> Iterator[bool]:
    """Hold *path*'s flock for the block if no one else does; yield whether we got it.

    False too when the file cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _unlink(path: str, removed: list[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        return
    removed.append(path)
    log.debug("Removed stale temporary file %s", path)
