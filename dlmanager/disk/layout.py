"""The on-disk layout of a destination directory: every name dlmanager makes there.

Beside a destination ``NAME``, a download writes into a hidden temporary file
``.NAME.XXXXXXXX.part`` (*XXXXXXXX* eight random hex digits), with its
checkpoint ``.NAME.XXXXXXXX.ckpt`` (written through ``.NAME.XXXXXXXX.ckpt.new``).
While processes coordinate, the hidden folder ``.dlmanager/`` holds
``KEY.lock``, ``KEY.pin`` and ``KEY.TOKEN.rsv`` files, where *KEY* is ``NAME``,
or a hash of it when ``NAME`` is too long, and the spare lock files a process
keeps locked for its next destination lock while it holds others,
``.OWNER.XXXXXXXX.part.lock`` (a temporary file's name, which no
destination may take, then ``.lock``). On a filesystem without extended
attributes, a finished file's metadata is in ``.NAME.dlmanager.json``
(written through ``.NAME.dlmanager.json.XXXXXXXX.new``; see
:mod:`dlmanager.disk.metadata`, which names them). This module makes those names,
parses them back, and scans a directory for them, once; nothing here opens,
locks or removes a file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets

__all__ = [
    "CHECKPOINT_SUFFIX",
    "LOCK_SUFFIX",
    "PIN_SUFFIX",
    "RESERVATION_SUFFIX",
    "STATE_DIR",
    "TEMP_SUFFIX",
    "Temporary",
    "checkpoint_path",
    "is_part",
    "is_temporary",
    "key",
    "scan_temporaries",
    "spare_lock_name",
    "temporary_fname",
    "temporary_name",
]

#: Hidden folder reserved for dlmanager's coordination files inside a destination.
STATE_DIR = ".dlmanager"
TEMP_SUFFIX = ".part"
CHECKPOINT_SUFFIX = ".ckpt"
LOCK_SUFFIX = ".lock"
PIN_SUFFIX = ".pin"
RESERVATION_SUFFIX = ".rsv"

_TEMP_RE = re.compile(r"\.(?P<fname>.+)\.[0-9a-f]{8}\.(?P<kind>part|ckpt|ckpt\.new)", re.DOTALL)
#: Coordination files of a name longer than this (in bytes) are named after
#: its hash, so that their names stay within the filesystem's limit.
_LONGEST_KEY = 200


def temporary_name(fname: str) -> str:
    """A fresh, unique, hidden temporary file name for the destination *fname*."""
    return f".{fname}.{secrets.token_hex(4)}{TEMP_SUFFIX}"


def spare_lock_name(owner: str) -> str:
    """A fresh name for a spare lock file of *owner* (a token of one process)."""
    return temporary_name(owner) + LOCK_SUFFIX


def checkpoint_path(part_path: str) -> str:
    """The checkpoint's path for the temporary file *part_path*."""
    base, _ = os.path.splitext(part_path)
    return base + CHECKPOINT_SUFFIX


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


@dataclasses.dataclass(frozen=True)
class Temporary:
    """A temporary file found in a directory.

    :ivar path: its path
    :ivar fname: the destination it belongs to
    :ivar kind: ``part``, ``ckpt`` or ``ckpt.new``
    """

    path: str
    fname: str
    kind: str

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def scan_temporaries(directory: str, fname: str | None = None) -> list[Temporary]:
    """The temporary files in *directory* (of the destination *fname* only, when given).

    :raises OSError: when the directory cannot be listed
    """
    prefix = f".{fname}." if fname is not None else "."
    found = []
    for name in os.listdir(directory or "."):
        if not name.startswith(prefix):
            continue
        match = _TEMP_RE.fullmatch(name)
        if match is None or (fname is not None and match.group("fname") != fname):
            continue
        found.append(Temporary(os.path.join(directory, name), match.group("fname"),
                               match.group("kind")))  # fmt: skip
    return found


def key(fname: str) -> str:
    """The part of the coordination files' names that stands for *fname*."""
    raw = os.fsencode(fname)
    if len(raw) <= _LONGEST_KEY:
        return fname
    return "#" + hashlib.sha256(raw).hexdigest()
