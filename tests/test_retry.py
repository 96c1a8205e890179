"""Unit tests of the retry policy, Retry-After parsing and the timeout options."""

from __future__ import annotations

import calendar
import dataclasses
import math

import pytest

from dlmanager.config import Timeouts
from dlmanager.errors import (
    DownloadError,
    HTTPStatusError,
    IncompleteBodyError,
    StallError,
    TransferError,
)
from dlmanager.retry import (
    DEFAULT_STATUS_FORCELIST,
    RequestHistory,
    RetryPolicy,
    parse_retry_after,
)

URL = "http://example.com/f.bin"


def http_error(status: int | None, retry_after: float | None = None) -> HTTPStatusError:
    return HTTPStatusError(
        f"HTTP {status}", status_code=status, retry_after=retry_after, url=URL, received=0
    )


# -- RetryPolicy: construction -------------------------------------------------------------


def test_policy_defaults() -> None:
    policy = RetryPolicy()
    assert policy.total == 5
    assert policy.backoff_factor == 0.5
    assert policy.backoff_max == 20.0
    assert policy.backoff_jitter == 0.25
    assert policy.status_forcelist == frozenset({408, 429, 500, 502, 503, 504})
    assert policy.status_forcelist == DEFAULT_STATUS_FORCELIST
    assert policy.respect_retry_after is True
    assert policy.retry_after_max == 30.0
    assert policy.failures == 0
    assert policy.history == ()
    assert not policy.is_exhausted()


@pytest.mark.parametrize(
    "changes",
    [
        {"total": -1},
        {"total": 1.5},
        {"total": True},
        {"total": "3"},
        {"backoff_factor": -0.1},
        {"backoff_factor": True},
        {"backoff_factor": "1"},
        {"backoff_max": -1},
        {"retry_after_max": -0.5},
        {"retry_after_max": False},
        {"backoff_jitter": -0.01},
        {"backoff_jitter": 1.01},
    ],
)
def test_policy_rejects_invalid_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="retry"):
        RetryPolicy(**changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["backoff_factor", "backoff_max", "retry_after_max"])
def test_policy_rejects_nan(field: str) -> None:
    # "must be a number >= 0": NaN is not >= 0 (Timeouts rejects NaN the same way).
    with pytest.raises(ValueError, match=field):
        RetryPolicy(**{field: math.nan})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "changes",
    [
        {"total": 0},
        {"backoff_factor": 0},
        {"backoff_max": 0.0},
        {"retry_after_max": 0},
        {"backoff_jitter": 0},
        {"backoff_jitter": 1},
    ],
)
def test_policy_accepts_boundary_values(changes: dict[str, object]) -> None:
    policy = RetryPolicy(**changes)  # type: ignore[arg-type]
    for name, value in changes.items():
        assert getattr(policy, name) == value


def test_status_forcelist_is_frozen_from_any_iterable() -> None:
    policy = RetryPolicy(status_forcelist=[500, 503, 500])  # type: ignore[arg-type]
    assert policy.status_forcelist == frozenset({500, 503})
    assert isinstance(policy.status_forcelist, frozenset)
    # A frozen, hashable value object.
    assert hash(policy) == hash(RetryPolicy(status_forcelist=frozenset({503, 500})))


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.total = 3  # type: ignore[misc]


def test_new_returns_a_changed_copy() -> None:
    policy = RetryPolicy(total=3)
    changed = policy.new(backoff_factor=2.0)
    assert changed is not policy
    assert changed.total == 3
    assert changed.backoff_factor == 2.0
    assert policy.backoff_factor == 0.5
    with pytest.raises(ValueError):
        policy.new(total=-1)


def test_from_value() -> None:
    assert RetryPolicy.from_value(None) == RetryPolicy()
    assert RetryPolicy.from_value(3) == RetryPolicy(total=3)
    assert RetryPolicy.from_value(0).total == 0
    policy = RetryPolicy(total=7, backoff_factor=0.0)
    assert RetryPolicy.from_value(policy) is policy


@pytest.mark.parametrize("value", ["3", 1.5, True, False, [3], -1])
def test_from_value_rejects_other_values(value: object) -> None:
    with pytest.raises(ValueError):
        RetryPolicy.from_value(value)  # type: ignore[arg-type]


# -- RetryPolicy: what is retried ----------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (http_error(408), True),
        (http_error(429), True),
        (http_error(500), True),
        (http_error(502), True),
        (http_error(503), True),
        (http_error(504), True),
        (http_error(404), False),
        (http_error(403), False),
        (http_error(501), False),
        (http_error(None), False),
        (TransferError("reset", url=URL), True),
        (TransferError("tls", retryable=False, url=URL), False),
        (IncompleteBodyError("short", expected=10, url=URL), True),
        (IncompleteBodyError("long", expected=10, retryable=False, url=URL), False),
        (StallError("stalled", url=URL), True),
        (DownloadError("other", url=URL), False),
        (ValueError("not a download error"), False),
        (OSError("disk full"), False),
    ],
)
def test_is_retryable(error: BaseException, expected: bool) -> None:
    assert RetryPolicy().is_retryable(error) is expected


def test_is_retryable_follows_status_forcelist() -> None:
    policy = RetryPolicy(status_forcelist=frozenset({404}))
    assert policy.is_retryable(http_error(404))
    assert not policy.is_retryable(http_error(503))


# -- RetryPolicy: increment and exhaustion -------------------------------------------------


def test_increment_records_the_attempt_and_keeps_the_original() -> None:
    policy = RetryPolicy(total=3)
    error = HTTPStatusError("HTTP 503", status_code=503, url=URL, received=42)
    new = policy.increment(error)
    assert new.failures == 1
    assert new.history == (RequestHistory(error="HTTP 503", status_code=503, received=42),)
    assert new.total == 3
    # The shared policy is untouched.
    assert policy.failures == 0
    assert policy.history == ()


def test_increment_records_none_status_for_transfer_errors() -> None:
    new = RetryPolicy().increment(TransferError("connection reset", url=URL, received=7))
    assert new.history == (RequestHistory("connection reset", None, 7),)


def test_budget_is_exhausted_after_total_retries() -> None:
    policy = RetryPolicy(total=2)
    errors = [TransferError(f"failure {i}", url=URL, received=i) for i in range(3)]
    policy = policy.increment(errors[0])
    policy = policy.increment(errors[1])
    assert policy.failures == 2
    assert not policy.is_exhausted()
    with pytest.raises(TransferError) as info:
        policy.increment(errors[2])
    # The last attempt's own error is raised, carrying the earlier attempts.
    assert info.value is errors[2]
    assert info.value.history == (
        RequestHistory("failure 0", None, 0),
        RequestHistory("failure 1", None, 1),
    )


def test_total_zero_disables_retrying() -> None:
    error = http_error(503)
    with pytest.raises(HTTPStatusError) as info:
        RetryPolicy(total=0).increment(error)
    assert info.value is error
    assert info.value.history == ()


def test_non_retryable_error_is_raised_at_once_with_history() -> None:
    policy = RetryPolicy(total=10).increment(http_error(503))
    error = http_error(404)
    with pytest.raises(HTTPStatusError) as info:
        policy.increment(error)
    assert info.value is error
    assert info.value.status_code == 404
    assert info.value.history == (RequestHistory("HTTP 503", 503, 0),)


def test_is_exhausted() -> None:
    assert not RetryPolicy(total=2, failures=2).is_exhausted()
    assert RetryPolicy(total=2, failures=3).is_exhausted()
    assert RetryPolicy(total=0, failures=1).is_exhausted()


def test_progress_resets_consecutive_failures() -> None:
    policy = RetryPolicy(total=2)
    policy = policy.increment(TransferError("a", url=URL))
    policy = policy.increment(TransferError("b", url=URL))
    assert policy.failures == 2
    # An attempt that extended the data received counts as the first failure again.
    policy = policy.increment(TransferError("c", url=URL, received=100), progressed=True)
    assert policy.failures == 1
    policy = policy.increment(TransferError("d", url=URL))
    assert policy.failures == 2
    assert [entry.error for entry in policy.history] == ["a", "b", "c", "d"]
    with pytest.raises(TransferError) as info:
        policy.increment(TransferError("e", url=URL))
    assert len(info.value.history) == 4


# -- RetryPolicy: backoff ------------------------------------------------------------------


def test_no_backoff_before_the_first_failure() -> None:
    assert RetryPolicy().backoff_time(rand=lambda: 1.0) == 0.0


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 20.0), (30, 20.0)],
)
def test_backoff_doubles_up_to_the_maximum(failures: int, expected: float) -> None:
    policy = RetryPolicy(total=100, failures=failures)
    assert policy.backoff_time(rand=lambda: 0.5) == expected


@pytest.mark.parametrize(("rand", "expected"), [(0.0, 3.0), (0.5, 4.0), (1.0, 5.0), (0.25, 3.5)])
def test_backoff_jitter(rand: float, expected: float) -> None:
    policy = RetryPolicy(backoff_factor=1.0, backoff_jitter=0.25, failures=3)
    assert policy.backoff_time(rand=lambda: rand) == pytest.approx(expected)


def test_backoff_jitter_never_exceeds_the_maximum() -> None:
    policy = RetryPolicy(backoff_factor=1.0, backoff_max=10.0, backoff_jitter=0.5, failures=10)
    assert policy.backoff_time(rand=lambda: 1.0) == 10.0
    assert policy.backoff_time(rand=lambda: 0.0) == 5.0


def test_backoff_without_jitter_ignores_rand() -> None:
    policy = RetryPolicy(backoff_factor=1.0, backoff_jitter=0.0, failures=2)
    assert policy.backoff_time(rand=lambda: 0.0) == 2.0
    assert policy.backoff_time(rand=lambda: 1.0) == 2.0


def test_backoff_default_rand_stays_in_the_jitter_range() -> None:
    policy = RetryPolicy(backoff_factor=1.0, backoff_jitter=0.25, failures=3)
    for _ in range(100):
        assert 3.0 <= policy.backoff_time() <= 5.0


def test_backoff_after_very_many_consecutive_failures_is_the_maximum() -> None:
    # A "retry practically forever" policy must keep answering backoff_max,
    # not overflow computing backoff_factor * 2 ** (failures - 1).
    policy = RetryPolicy(total=10_000, failures=1100)
    assert policy.backoff_time(rand=lambda: 0.5) == 20.0


def test_sleep_time_honours_retry_after() -> None:
    policy = RetryPolicy(failures=1)
    for status in (413, 429, 503):
        assert policy.sleep_time(http_error(status, retry_after=7.0), rand=lambda: 0.5) == 7.0


def test_sleep_time_caps_retry_after() -> None:
    policy = RetryPolicy(failures=1, retry_after_max=30.0)
    assert policy.sleep_time(http_error(503, retry_after=3600.0), rand=lambda: 0.5) == 30.0


@pytest.mark.parametrize(
    "error",
    [
        http_error(500, retry_after=7.0),  # Retry-After only honoured on 413/429/503
        http_error(503, retry_after=None),
        TransferError("reset", url=URL),
    ],
)
def test_sleep_time_falls_back_to_backoff(error: DownloadError) -> None:
    policy = RetryPolicy(failures=2)
    assert policy.sleep_time(error, rand=lambda: 0.5) == 1.0


def test_sleep_time_can_ignore_retry_after() -> None:
    policy = RetryPolicy(failures=1, respect_retry_after=False)
    assert policy.sleep_time(http_error(429, retry_after=7.0), rand=lambda: 0.5) == 0.5


def test_request_history_fields() -> None:
    entry = RequestHistory("HTTP 503", 503, 10)
    assert entry.error == "HTTP 503"
    assert entry.status_code == 503
    assert entry.received == 10
    assert entry._fields == ("error", "status_code", "received")


# -- parse_retry_after ---------------------------------------------------------------------

# Wed, 21 Oct 2015 07:28:00 GMT
DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
DATE_TS = float(calendar.timegm((2015, 10, 21, 7, 28, 0)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("120", 120.0),
        ("  120 ", 120.0),
        ("86400", 86400.0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("12 seconds", None),
        ("   ", None),
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: unusable
        ("\u00b2", None),  # a latin-1 header byte that str.isdigit() accepts
    ],
)
def test_parse_retry_after_values(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=DATE_TS) == expected


def test_parse_retry_after_http_date() -> None:
    assert parse_retry_after(DATE, now=DATE_TS - 90) == 90.0
    assert parse_retry_after(DATE, now=DATE_TS) == 0.0


def test_parse_retry_after_date_in_the_past_is_zero() -> None:
    assert parse_retry_after(DATE, now=DATE_TS + 3600) == 0.0


def test_parse_retry_after_other_zone() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 09:28:00 +0200", now=DATE_TS - 10) == 10.0


def test_parse_retry_after_defaults_to_the_current_time() -> None:
    # A date long past gives 0 whatever the clock says.
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT") == 0.0


# -- Timeouts ------------------------------------------------------------------------------


def test_timeouts_defaults() -> None:
    timeouts = Timeouts()
    assert (timeouts.connect, timeouts.read, timeouts.stall) == (10.0, 30.0, 30.0)
    assert timeouts.min_speed == 1024
    assert timeouts.requests_timeout == (10.0, 30.0)


def test_timeouts_none_waits_forever() -> None:
    timeouts = Timeouts(connect=None, read=None, stall=None, min_speed=0)
    assert timeouts.requests_timeout == (None, None)
    assert timeouts.stall is None


@pytest.mark.parametrize(
    "changes",
    [
        {"connect": 0},
        {"connect": -1},
        {"read": 0.0},
        {"read": math.nan},
        {"stall": -0.5},
        {"stall": True},
        {"connect": "10"},
        {"min_speed": -1},
        {"min_speed": 1.5},
        {"min_speed": True},
        {"min_speed": None},
    ],
)
def test_timeouts_reject_invalid_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="timeout"):
        Timeouts(**changes)  # type: ignore[arg-type]


def test_timeouts_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Timeouts().read = 1.0  # type: ignore[misc]


def test_timeouts_from_value() -> None:
    assert Timeouts.from_value(None) == Timeouts()
    assert Timeouts.from_value(5) == Timeouts(connect=5, read=5, stall=5)
    assert Timeouts.from_value(2.5).requests_timeout == (2.5, 2.5)
    assert Timeouts.from_value(2.5).min_speed == 1024
    timeouts = Timeouts(connect=1.0)
    assert Timeouts.from_value(timeouts) is timeouts


@pytest.mark.parametrize("value", [0, -3, math.nan, True, "5", (1, 2)])
def test_timeouts_from_value_rejects_other_values(value: object) -> None:
    with pytest.raises(ValueError):
        Timeouts.from_value(value)  # type: ignore[arg-type]
