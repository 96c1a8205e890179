"""Shared fixtures: a fault-injecting loopback server and a destination directory."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from dlmanager import RetryPolicy
from dlmanager.paths import STATE_DIR, is_part, is_temporary
from tests.server import FaultServer


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A fresh fault server on 127.0.0.1, stopped after the test."""
    with FaultServer().start() as srv:
        yield srv


@pytest.fixture
def destdir(tmp_path: os.PathLike[str]) -> str:
    """An existing, empty destination directory."""
    path = os.path.join(os.fspath(tmp_path), "dest")
    os.mkdir(path)
    return path


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """The default retry budget with near-zero backoff, so fault tests run fast."""
    return RetryPolicy(backoff_factor=0.001, backoff_max=0.01)


def temporaries(directory: str) -> list[str]:
    """dlmanager's temporary files left in *directory*."""
    return sorted(name for name in os.listdir(directory) if is_temporary(name))


def listing(directory: str) -> list[str]:
    """The names in *directory*, without dlmanager's hidden state folder."""
    return [name for name in os.listdir(directory) if name != STATE_DIR]


def parts(directory: str) -> list[str]:
    """dlmanager's temporary data files (not checkpoints) in *directory*."""
    return sorted(name for name in os.listdir(directory) if is_part(name))


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()
