"""The checkpoint beside a temporary file: what a later process needs to resume it.

``.NAME.XXXXXXXX.ckpt`` (beside ``.NAME.XXXXXXXX.part``) is a small JSON
document: the URL, the file's size and validator, and the byte ranges already
written. It is written atomically (a ``.new`` file, fsync, rename) and only
after the data it describes was flushed to disk, so after a crash it never
claims bytes the temporary file does not hold.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from dlmanager.disk.layout import checkpoint_path
from dlmanager.redact import get_logger
from dlmanager.segments import Range, merge_ranges

__all__ = ["Checkpoint", "checkpoint_path", "load", "remove", "save"]

log = get_logger(__name__)

VERSION = 1


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """What is known about a partly downloaded file."""

    url: str
    total: int
    validator: str
    ranges: tuple[Range, ...]

    def dumps(self) -> str:
        return json.dumps(
            {
                "dlmanager_checkpoint": VERSION,
                "url": self.url,
                "total": self.total,
                "validator": self.validator,
                "ranges": [list(r) for r in self.ranges],
            }
        )

    @classmethod
    def loads(cls, text: str) -> Checkpoint:
        """Parse a checkpoint.

        :raises ValueError: when it is not a valid checkpoint of this version
        """
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"checkpoint is not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("dlmanager_checkpoint") != VERSION:
            raise ValueError("not a dlmanager checkpoint of a known version")
        url, total, validator = data.get("url"), data.get("total"), data.get("validator")
        if not isinstance(url, str) or not isinstance(validator, str) or not validator:
            raise ValueError("checkpoint lacks its URL or validator")
        if not isinstance(total, int) or isinstance(total, bool) or total < 0:
            raise ValueError(f"invalid size in checkpoint: {total!r}")
        ranges = data.get("ranges")
        if not isinstance(ranges, list):
            raise ValueError("checkpoint lacks its ranges")
        parsed = []
        for item in ranges:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in item)
                or not 0 <= item[0] <= item[1] <= total
            ):
                raise ValueError(f"invalid range in checkpoint: {item!r}")
            parsed.append((item[0], item[1]))
        return cls(url, total, validator, tuple(merge_ranges(parsed)))

    @property
    def received(self) -> int:
        return sum(end - start for start, end in self.ranges)


def save(path: str, checkpoint: Checkpoint) -> None:
    """Write *checkpoint* to *path* atomically and durably.

    :raises OSError: when it cannot be written; the checkpoint at *path*, if
        any, is then left as it was, and the ``.new`` file is removed
    """
    new = path + ".new"
    data = checkpoint.dumps().encode()
    fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(new, path)
    except BaseException:
        try:
            os.unlink(new)
        except OSError:
            pass
        raise


def load(path: str) -> Checkpoint | None:
    """Read the checkpoint at *path*; None when missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            return Checkpoint.loads(handle.read(64 * 1024))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        log.debug("Ignoring checkpoint %s: %s", path, exc)
        return None


def remove(path: str) -> None:
    """Remove the checkpoint at *path* and its ``.new`` file, if any."""
    for name in (path, path + ".new"):
        try:
            os.unlink(name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("Could not remove %s: %s", name, exc)
