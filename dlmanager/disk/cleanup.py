"""Temporary files left by stopped downloads: which to keep for resuming, which to remove.

Also the metadata sidecars that no longer describe a file
(:func:`remove_stale_sidecars`).

A ``.part`` file is stale when no process holds its lock and it is older than
a moment (its writer locks it right after creating it). A stale one that has a
valid checkpoint is kept for a later download of the same file to resume,
unless it is too old; a checkpoint without its ``.part`` file goes whatever its
age. :func:`stale_action` decides, :func:`remove_stale_temporaries` acts.
"""

from __future__ import annotations

import os
import re
import stat
import time

from dlmanager.disk import checkpoint, layout
from dlmanager.disk.locks import try_exclusive
from dlmanager.disk.metadata import SIDECAR_SUFFIX, is_sidecar, sidecar_matches
from dlmanager.redact import get_logger

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: an open file cannot be removed anyway
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "RESUMABLE_MAX_AGE",
    "STALE_MIN_AGE",
    "leftover_fnames",
    "remove_stale_sidecars",
    "remove_stale_temporaries",
    "stale_action",
]

log = get_logger(__name__)

#: A temporary file younger than this is never taken for stale: its writer may
#: not have locked it yet.
STALE_MIN_AGE = 2.0
#: A resumable temporary file (one with a checkpoint) is kept this long, in
#: seconds, for a later download of the same file to resume.
RESUMABLE_MAX_AGE = 7 * 24 * 3600.0

#: The temporary name a sidecar is written under before its rename.
_SIDECAR_TEMPORARY = re.compile(
    r"\..+" + re.escape(SIDECAR_SUFFIX) + r"\.[0-9a-f]{8}\.new", re.DOTALL
)

KEEP = "keep"
REMOVE = "remove"  # when nobody holds it
REMOVE_ORPHAN = "remove orphan"  # a checkpoint whose data file is gone: whatever holds it


def stale_action(
    kind: str,
    age: float,
    *,
    part_exists: bool,
    resumable: bool,
    min_age: float = STALE_MIN_AGE,
    resumable_max_age: float = RESUMABLE_MAX_AGE,
) -> str:
    """What to do with one temporary file: :data:`KEEP`, :data:`REMOVE` (if no
    process holds its lock) or :data:`REMOVE_ORPHAN`.

    :param kind: ``part``, ``ckpt`` or ``ckpt.new``
    :param age: seconds since it was last written
    :param part_exists: for a checkpoint, whether its ``.part`` file exists
    :param resumable: for a ``.part`` file, whether it has a valid checkpoint
    """
    if kind != "part":
        return KEEP if part_exists else REMOVE_ORPHAN
    if age < min_age:
        return KEEP
    if resumable and age < resumable_max_age:
        return KEEP
    return REMOVE


def remove_stale_temporaries(
    directory: str,
    min_age: float = STALE_MIN_AGE,
    resumable_max_age: float = RESUMABLE_MAX_AGE,
) -> list[str]:
    """Remove the temporary files in *directory* that no live process writes
    and that cannot be resumed (see :func:`stale_action`); return their paths."""
    if fcntl is None:  # pragma: no cover
        return []
    removed: list[str] = []
    now = time.time()
    try:
        found = layout.scan_temporaries(directory)
    except OSError:
        return []
    names = {temporary.name for temporary in found}
    for temporary in found:
        try:
            status = os.lstat(temporary.path)
        except OSError:
            continue
        if not stat.S_ISREG(status.st_mode):
            continue
        part = _part_name(temporary.name)
        is_part = temporary.kind == "part"
        action = stale_action(
            temporary.kind,
            now - status.st_mtime,
            part_exists=part in names or os.path.lexists(os.path.join(directory, part)),
            resumable=is_part
            and checkpoint.load(layout.checkpoint_path(temporary.path)) is not None,
            min_age=min_age,
            resumable_max_age=resumable_max_age,
        )
        if action == REMOVE_ORPHAN:
            _unlink(temporary.path, removed)
        elif action == REMOVE:
            with try_exclusive(temporary.path) as locked:
                if locked:
                    _unlink(temporary.path, removed)
                    checkpoint.remove(layout.checkpoint_path(temporary.path))
    return removed


def remove_stale_sidecars(directory: str, min_age: float = STALE_MIN_AGE) -> list[str]:
    """Remove the metadata sidecars in *directory* that describe no file there
    (its file is gone, or is another file now: see :mod:`dlmanager.disk.metadata`),
    and the temporary files of sidecars whose writer stopped; return their paths.

    Nothing younger than *min_age* seconds is removed: a sidecar is renamed
    into place a moment before its file is.
    """
    removed: list[str] = []
    now = time.time()
    try:
        names = [name for name in os.listdir(directory or ".") if name.startswith(".")]
    except OSError:
        return removed
    for name in names:
        fname = is_sidecar(name)
        writing = fname is None and _SIDECAR_TEMPORARY.fullmatch(name) is not None
        if fname is None and not writing:
            continue
        path = os.path.join(directory, name)
        try:
            status = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(status.st_mode) or now - status.st_mtime < min_age:
            continue
        if writing or not sidecar_matches(os.path.join(directory, fname or "")):
            _unlink(path, removed)
    return removed


def leftover_fnames(directory: str) -> set[str]:
    """The destination names that have a temporary file in *directory*.

    Their download looks for a leftover to resume, and removes the ones that
    cannot be (such as a ``.part`` file without checkpoint, left by a process
    killed before its first checkpoint). One scan of the directory, so that
    each download need not scan it again.
    """
    try:
        found = layout.scan_temporaries(directory)
    except OSError:
        return set()
    return {temporary.fname for temporary in found if temporary.kind in ("part", "ckpt")}


def _part_name(name: str) -> str:
    """The ``.part`` name a temporary file's base *name* belongs with."""
    base = name[: -len(".new")] if name.endswith(".new") else name
    stem, _ = os.path.splitext(base)
    return stem + layout.TEMP_SUFFIX


def _unlink(path: str, removed: list[str]) -> None:
    try:
        os.unlink(path)
    except OSError:
        return
    removed.append(path)
    log.debug("Removed stale temporary file %s", path)
