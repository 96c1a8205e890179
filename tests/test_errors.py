"""Unit tests of the exception hierarchy."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from dlmanager import errors
from dlmanager.errors import (
    DlManagerError,
    DownloadError,
    DownloadInterrupt,
    HTTPStatusError,
    IncompleteBodyError,
    InsufficientSpaceError,
    StallError,
    StorageError,
    TooLargeError,
    TransferError,
)
from dlmanager.retry import RequestHistory, RetryPolicy

URL = "http://example.com/f.bin"
DEST = "/tmp/dest/f.bin"


@pytest.mark.parametrize(
    ("cls", "base"),
    [
        (DlManagerError, Exception),
        (DownloadInterrupt, DlManagerError),
        (DownloadError, DlManagerError),
        (DownloadError, OSError),
        (HTTPStatusError, DownloadError),
        (TransferError, DownloadError),
        (IncompleteBodyError, TransferError),
        (StallError, TransferError),
        (IncompleteBodyError, OSError),
        (StallError, DlManagerError),
        (StorageError, DownloadError),
        (StorageError, OSError),
        (InsufficientSpaceError, StorageError),
        (TooLargeError, DownloadError),
    ],
)
def test_subclass(cls: type[BaseException], base: type[BaseException]) -> None:
    assert issubclass(cls, base)


@pytest.mark.parametrize(
    ("cls", "other"),
    [
        (DownloadInterrupt, DownloadError),
        (DownloadInterrupt, OSError),
        (DlManagerError, OSError),
        (HTTPStatusError, TransferError),
        (TransferError, HTTPStatusError),
        (StallError, IncompleteBodyError),
        (IncompleteBodyError, StallError),
    ],
)
def test_not_subclass(cls: type[BaseException], other: type[BaseException]) -> None:
    assert not issubclass(cls, other)


def test_module_all() -> None:
    assert sorted(errors.__all__) == sorted(
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, BaseException) and not name.startswith("_")
    )


def test_old_code_catching_ioerror_catches_a_failed_download() -> None:
    with pytest.raises(IOError) as info:
        raise HTTPStatusError("HTTP 404", status_code=404, url=URL)
    assert isinstance(info.value, HTTPStatusError)


def test_download_error_defaults() -> None:
    error = DownloadError("boom")
    assert str(error) == "boom"
    assert error.message == "boom"
    assert error.args == ("boom",)
    assert error.url == ""
    assert error.dest is None
    assert error.received == 0
    assert error.history == ()
    # One positional argument: OSError does not take it for (errno, strerror).
    assert error.errno is None
    assert error.strerror is None
    assert error.filename is None


def test_download_error_attributes() -> None:
    error = DownloadError("failed", url=URL, dest=DEST, received=12)
    assert (error.url, error.dest, error.received) == (URL, DEST, 12)
    assert str(error) == "failed"


def test_http_status_error_attributes() -> None:
    error = HTTPStatusError(
        "HTTP 503", status_code=503, retry_after=2.5, url=URL, dest=DEST, received=3
    )
    assert str(error) == "HTTP 503"
    assert error.status_code == 503
    assert error.retry_after == 2.5
    assert (error.url, error.dest, error.received) == (URL, DEST, 3)
    assert HTTPStatusError("HTTP error", status_code=None).retry_after is None


def test_http_status_error_requires_status_code() -> None:
    with pytest.raises(TypeError):
        HTTPStatusError("HTTP 503")  # type: ignore[call-arg]


def test_transfer_error_attributes() -> None:
    assert TransferError("reset").retryable is True
    error = TransferError("tls", retryable=False, url=URL, dest=DEST, received=5)
    assert str(error) == "tls"
    assert error.retryable is False
    assert (error.url, error.dest, error.received) == (URL, DEST, 5)


def test_incomplete_body_error_attributes() -> None:
    error = IncompleteBodyError("short body", expected=100, url=URL, received=40)
    assert str(error) == "short body"
    assert error.expected == 100
    assert error.received == 40
    assert error.retryable is True
    assert IncompleteBodyError("long", expected=1, retryable=False).retryable is False


def test_stall_error_attributes() -> None:
    error = StallError("stalled", url=URL, received=9)
    assert str(error) == "stalled"
    assert error.retryable is True
    assert error.received == 9


def test_interrupt_str() -> None:
    assert str(DownloadInterrupt("cancelled")) == "cancelled"
    assert str(DlManagerError()) == ""


def test_history_is_per_instance() -> None:
    first = TransferError("a", url=URL)
    policy = RetryPolicy(total=0)
    with pytest.raises(TransferError):
        RetryPolicy(total=1).increment(TransferError("earlier", url=URL)).increment(first)
    assert first.history == (RequestHistory("earlier", None, 0),)
    second = TransferError("b", url=URL)
    assert second.history == ()
    assert DownloadError.history == ()
    with pytest.raises(TransferError):
        policy.increment(second)
    assert second.history == ()


# -- pickling ------------------------------------------------------------------------------

HISTORY = (
    RequestHistory("HTTP 503", 503, 0),
    RequestHistory("connection reset", None, 1024),
)

ATTRIBUTES: dict[type[DownloadError], tuple[str, ...]] = {
    DownloadError: ("message", "url", "dest", "received"),
    HTTPStatusError: ("message", "url", "dest", "received", "status_code", "retry_after"),
    TransferError: ("message", "url", "dest", "received", "retryable"),
    IncompleteBodyError: ("message", "url", "dest", "received", "retryable", "expected"),
    StallError: ("message", "url", "dest", "received", "retryable"),
    StorageError: ("message", "url", "dest", "received", "errno"),
    InsufficientSpaceError: ("message", "url", "dest", "errno", "needed", "available"),
    TooLargeError: ("message", "url", "dest", "received", "limit"),
}


def samples() -> list[DownloadError]:
    return [
        DownloadError("failed", url=URL, dest=DEST, received=1),
        DownloadError("bare"),
        HTTPStatusError("HTTP 429", status_code=429, retry_after=3.0, url=URL, dest=DEST),
        HTTPStatusError("HTTP error", status_code=None, url=URL, received=2),
        TransferError("tls failure", retryable=False, url=URL, dest=None, received=3),
        IncompleteBodyError(
            "short body", expected=4096, retryable=False, url=URL, dest=DEST, received=100
        ),
        StallError("stalled", retryable=True, url=URL, dest=DEST, received=5),
        StorageError("disk full", errno=28, url=URL, dest=DEST, received=6),
        InsufficientSpaceError("no room", needed=10**9, available=5, url=URL, dest=DEST),
        TooLargeError("too big", limit=1024, url=URL, dest=DEST, received=1025),
    ]


def assert_same(copied: DownloadError, error: DownloadError) -> None:
    assert type(copied) is type(error)
    assert copied is not error
    assert str(copied) == str(error)
    assert copied.args == error.args
    for name in ATTRIBUTES[type(error)]:
        assert getattr(copied, name) == getattr(error, name), name
    assert copied.history == error.history


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("error", samples(), ids=lambda e: f"{type(e).__name__}-{e}")
def test_pickle_round_trip(error: DownloadError, protocol: int) -> None:
    error.history = HISTORY
    copied = pickle.loads(pickle.dumps(error, protocol=protocol))
    assert_same(copied, error)
    assert all(isinstance(entry, RequestHistory) for entry in copied.history)


@pytest.mark.parametrize("error", samples(), ids=lambda e: f"{type(e).__name__}-{e}")
def test_pickle_round_trip_without_history(error: DownloadError) -> None:
    copied = pickle.loads(pickle.dumps(error))
    assert_same(copied, error)
    assert copied.history == ()


def test_pickle_round_trip_of_a_raised_retry_error() -> None:
    policy = RetryPolicy(total=1).increment(
        HTTPStatusError("HTTP 503", status_code=503, url=URL, received=0)
    )
    with pytest.raises(HTTPStatusError) as info:
        policy.increment(HTTPStatusError("HTTP 502", status_code=502, url=URL, received=0))
    copied = pickle.loads(pickle.dumps(info.value))
    assert copied.status_code == 502
    assert copied.history == (RequestHistory("HTTP 503", 503, 0),)


@pytest.mark.parametrize("copier", [copy.copy, copy.deepcopy])
def test_copy(copier: Any) -> None:
    error = IncompleteBodyError("short", expected=10, url=URL, dest=DEST, received=4)
    error.history = HISTORY
    assert_same(copier(error), error)


@pytest.mark.parametrize("cls", [DlManagerError, DownloadInterrupt])
def test_pickle_plain_errors(cls: type[DlManagerError]) -> None:
    copied = pickle.loads(pickle.dumps(cls("cancelled")))
    assert type(copied) is cls
    assert str(copied) == "cancelled"
    assert copied.args == ("cancelled",)
