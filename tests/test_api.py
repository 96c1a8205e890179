"""The public API: ``dlmanager.__all__`` and the import paths of dlmanager 0.1.1."""

from __future__ import annotations

import inspect
import re

import pytest

import dlmanager


def public_names() -> set[str]:
    """Classes and functions defined in dlmanager that the package namespace exposes
    (its ``dir()``: the names it imports on first use included)."""
    names = {"__version__"}
    for name in dir(dlmanager):
        if name.startswith("_"):
            continue
        obj = getattr(dlmanager, name)
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and (
            obj.__module__ == "dlmanager" or obj.__module__.startswith("dlmanager.")
        ):
            names.add(name)
    return names


def test_all_is_sorted_without_duplicates() -> None:
    assert dlmanager.__all__ == sorted(dlmanager.__all__)
    assert len(set(dlmanager.__all__)) == len(dlmanager.__all__)


def test_all_lists_the_public_names() -> None:
    assert set(dlmanager.__all__) == public_names()


def test_all_has_the_expected_names() -> None:
    for name in (
        "DlManagerError",
        "Download",
        "DownloadError",
        "DownloadInterrupt",
        "DownloadManager",
        "HTTPStatusError",
        "PersistLimit",
        "RetryPolicy",
        "Timeouts",
        "__version__",
    ):
        assert name in dlmanager.__all__


def test_star_import() -> None:
    namespace: dict[str, object] = {}
    exec("from dlmanager import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(dlmanager.__all__)
    for name, obj in namespace.items():
        assert obj is getattr(dlmanager, name)


def test_old_manager_import_path() -> None:
    from dlmanager.manager import Download, DownloadInterrupt, DownloadManager

    assert DownloadManager is dlmanager.DownloadManager
    assert Download is dlmanager.Download
    assert DownloadInterrupt is dlmanager.DownloadInterrupt
    assert inspect.isclass(DownloadManager)
    assert inspect.isclass(Download)


def test_old_persist_limit_import_path() -> None:
    from dlmanager.persist_limit import PersistLimit

    assert PersistLimit is dlmanager.PersistLimit


def test_download_interrupt_is_an_exception() -> None:
    from dlmanager.errors import DownloadInterrupt as FromErrors
    from dlmanager.manager import DownloadInterrupt

    assert DownloadInterrupt is FromErrors
    assert issubclass(DownloadInterrupt, Exception)
    with pytest.raises(Exception, match="stopped"):
        raise DownloadInterrupt("stopped")


def test_version() -> None:
    assert isinstance(dlmanager.__version__, str)
    assert re.match(r"^\d+\.\d+", dlmanager.__version__)
