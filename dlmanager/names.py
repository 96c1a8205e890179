"""Names: URLs that may be downloaded, and file names that may be written.

Every check here is pure (no file is touched, but :func:`name_max`'s one
``pathconf``): a URL must be http(s), a file name must land directly inside
its destination directory, not be one of dlmanager's own names (see
:mod:`dlmanager.disk.layout`), and fit the filesystem once dlmanager's
temporary suffixes are added to it.
"""

from __future__ import annotations

import os
import urllib.parse

from dlmanager.disk.layout import STATE_DIR, is_temporary

__all__ = [
    "DERIVED_NAME_OVERHEAD",
    "NAME_MAX",
    "as_path",
    "check_name_length",
    "check_url",
    "name_from_url",
    "name_max",
    "validate_fname",
]

#: Bytes the longest name derived from a file name adds to it: the
#: checkpoint being written, ``.NAME.XXXXXXXX.ckpt.new``.
DERIVED_NAME_OVERHEAD = len(".") + len(".12345678.ckpt.new")
#: The longest file name (in bytes) most filesystems hold, when they do not say.
NAME_MAX = 255


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
