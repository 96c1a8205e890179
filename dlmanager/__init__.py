"""dlmanager: download files over HTTP(S) in background threads into a size-capped directory.

The public names are imported on first use (:pep:`562`): ``import dlmanager``
alone, as the command's ``--version`` and ``--help`` do, loads no download
machinery and no HTTP library.
"""

from __future__ import annotations

import importlib
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dlmanager.cache import OfflineWarning, retrieve
    from dlmanager.config import Timeouts
    from dlmanager.disk.metadata import FileInfo
    from dlmanager.download import Download
    from dlmanager.errors import (
        ChecksumError,
        DlManagerError,
        DownloadError,
        DownloadInterrupt,
        HTTPStatusError,
        IncompleteBodyError,
        InsufficientSpaceError,
        ResumeError,
        StallError,
        StorageError,
        TooLargeError,
        TransferError,
    )
    from dlmanager.events import DownloadEvent, DownloadState, EventKind
    from dlmanager.fetch import fetch_bytes
    from dlmanager.manager import DownloadManager
    from dlmanager.persist_limit import PersistLimit
    from dlmanager.retry import RetryPolicy

__version__ = "1.0.0.dev0"

__all__ = [
    "ChecksumError",
    "DlManagerError",
    "Download",
    "DownloadError",
    "DownloadEvent",
    "DownloadInterrupt",
    "DownloadManager",
    "DownloadState",
    "EventKind",
    "FileInfo",
    "HTTPStatusError",
    "IncompleteBodyError",
    "InsufficientSpaceError",
    "OfflineWarning",
    "PersistLimit",
    "ResumeError",
    "RetryPolicy",
    "StallError",
    "StorageError",
    "Timeouts",
    "TooLargeError",
    "TransferError",
    "__version__",
    "fetch_bytes",
    "retrieve",
]

#: The module each public name is imported from, on first use.
_SOURCES: dict[str, str] = {
    "ChecksumError": "dlmanager.errors",
    "DlManagerError": "dlmanager.errors",
    "Download": "dlmanager.download",
    "DownloadError": "dlmanager.errors",
    "DownloadEvent": "dlmanager.events",
    "DownloadInterrupt": "dlmanager.errors",
    "DownloadManager": "dlmanager.manager",
    "DownloadState": "dlmanager.events",
    "EventKind": "dlmanager.events",
    "FileInfo": "dlmanager.disk.metadata",
    "HTTPStatusError": "dlmanager.errors",
    "IncompleteBodyError": "dlmanager.errors",
    "InsufficientSpaceError": "dlmanager.errors",
    "OfflineWarning": "dlmanager.cache",
    "PersistLimit": "dlmanager.persist_limit",
    "ResumeError": "dlmanager.errors",
    "RetryPolicy": "dlmanager.retry",
    "StallError": "dlmanager.errors",
    "StorageError": "dlmanager.errors",
    "Timeouts": "dlmanager.config",
    "TooLargeError": "dlmanager.errors",
    "TransferError": "dlmanager.errors",
    "fetch_bytes": "dlmanager.fetch",
    "retrieve": "dlmanager.cache",
}


def _import_public_name(name: str) -> object:
    """Import the public name *name* from its module, once (the module's ``__getattr__``).

    A submodule is imported too (``dlmanager.errors``, ``dlmanager.manager``):
    code written when this package imported them all may reach them as
    attributes of ``dlmanager`` alone.
    """
    source = _SOURCES.get(name)
    if source is not None:
        value = getattr(importlib.import_module(source), name)
        globals()[name] = value  # later lookups do not come here
        return value
    if not name.startswith("_"):
        try:
            return importlib.import_module(f"{__name__}.{name}")  # binds the attribute
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not TYPE_CHECKING:
    # For the interpreter only: type checkers see the imports above, so a
    # misspelt name stays an error for them.
    __getattr__ = _import_public_name


def __dir__() -> list[str]:
    return sorted({*globals(), *_SOURCES})


logging.getLogger(__name__).addHandler(logging.NullHandler())
