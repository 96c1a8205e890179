"""dlmanager: download files over HTTP(S) in background threads into a size-capped directory."""

from __future__ import annotations

import logging

from dlmanager.config import Timeouts
from dlmanager.download import Download, DownloadEvent, DownloadState, EventKind
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
    "HTTPStatusError",
    "IncompleteBodyError",
    "InsufficientSpaceError",
    "PersistLimit",
    "ResumeError",
    "RetryPolicy",
    "StallError",
    "StorageError",
    "Timeouts",
    "TooLargeError",
    "TransferError",
    "__version__",
]

logging.getLogger(__name__).addHandler(logging.NullHandler())
