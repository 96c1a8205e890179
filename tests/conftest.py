"""Shared fixtures: a fault server, a silent listener, a destination, both transports; helpers."""

from __future__ import annotations

import errno
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from dlmanager import RetryPolicy
from dlmanager.disk.layout import is_part, is_temporary
from dlmanager.session import DownloadSession
from tests.loopback import SilentListener
from tests.server import FaultServer


@pytest.fixture
def server() -> Iterator[FaultServer]:
    """A fresh fault server on 127.0.0.1, stopped after the test."""
    with FaultServer().start() as srv:
        yield srv


@pytest.fixture
def silent_listener() -> Iterator[SilentListener]:
    """A socket on 127.0.0.1 that accepts connections and never answers, closed after the test."""
    with SilentListener() as listener:
        yield listener


@pytest.fixture
def destdir(tmp_path: os.PathLike[str]) -> str:
    """An existing, empty destination directory."""
    path = os.path.join(os.fspath(tmp_path), "dest")
    os.mkdir(path)
    return path


class ThroughRequests(DownloadSession):
    """A DownloadSession whose requests go through ``requests``: the manager's
    own transport serves a ``DownloadSession`` itself, not a subclass."""


@pytest.fixture(params=["own", "requests"])
def make_session(request: pytest.FixtureRequest) -> Callable[[], DownloadSession | None]:
    """What a manager is given, for a test to run on both transports: None
    (dlmanager's own transport) or a :class:`ThroughRequests` session."""
    if request.param == "own":
        return lambda: None
    return ThroughRequests


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """The default retry budget with near-zero backoff, so fault tests run fast."""
    return RetryPolicy(backoff_factor=0.001, backoff_max=0.01)


def temporaries(directory: str) -> list[str]:
    """dlmanager's temporary files left in *directory*."""
    return sorted(name for name in os.listdir(directory) if is_temporary(name))


def listing(directory: str) -> list[str]:
    """The names in *directory*: all of them, dlmanager's hidden ones included
    (when nothing runs, a destination holds only its files)."""
    return os.listdir(directory)


def parts(directory: str) -> list[str]:
    """dlmanager's temporary data files (not checkpoints) in *directory*."""
    return sorted(name for name in os.listdir(directory) if is_part(name))


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def write(path: str, text: str) -> str:
    """Write *text* (UTF-8) to *path*, such as a manifest; return *path*."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Seconds any child Python process of a test may take.
SUBPROCESS_TIMEOUT = 60


def child_env() -> dict[str, str]:
    """The environment of a child Python process: this checkout first, no ``CI``."""
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    path = env.get("PYTHONPATH")
    env["PYTHONPATH"] = ROOT if not path else ROOT + os.pathsep + path
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_python(
    args: list[str], stdin: str = "", timeout: float = SUBPROCESS_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run ``python ARGS`` from the checkout to its end, capturing its output."""
    return subprocess.run(
        [sys.executable, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(),
        cwd=ROOT,
        check=False,
    )


def start_python(args: list[str], stdin: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Start ``python ARGS`` from the checkout, its output in text pipes.

    :param stdin: ``subprocess.PIPE`` to talk to it; none by default (as in CI)
    """
    return subprocess.Popen(
        [sys.executable, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )


def start_cli(args: list[str]) -> subprocess.Popen[str]:
    """Start the command, ``python -m dlmanager ARGS``, as a user would."""
    return start_python(["-m", "dlmanager", *args])


def xattrs_work(directory: str) -> bool:
    """Whether files in *directory* take user extended attributes."""
    probe = os.path.join(directory, ".xattr-probe")
    with open(probe, "wb"):
        pass
    try:
        os.setxattr(probe, "user.dlmanager.probe", b"1")
        return True
    except OSError:
        return False
    finally:
        os.unlink(probe)


def refuse_xattrs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process see a filesystem that refuses extended attributes
    (file metadata then goes to sidecar files)."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOTSUP, "Operation not supported")

    monkeypatch.setattr(os, "setxattr", refuse)
    monkeypatch.setattr(os, "getxattr", refuse)


@pytest.fixture(params=["xattrs", "sidecar"])
def storage(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Both ways a file carries its metadata: extended attributes (where the
    test directory takes them) and sidecar files (a filesystem refusing them)."""
    if request.param == "xattrs":
        if not xattrs_work(str(tmp_path)):
            pytest.skip("no user extended attributes on this filesystem")
    else:
        refuse_xattrs(monkeypatch)
    return str(request.param)
