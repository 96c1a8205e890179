"""What the package and the command import: only what the path they take uses.

Each case runs in a fresh child process and reads its ``sys.modules`` at the
end: ``import dlmanager``, ``--version`` and ``--help`` load no download
machinery; a download whose output is not a terminal never loads ``rich``
(bars only), and one without a size limit never loads ``watchdog`` (only a
limit watches its directory). The counter-examples (a terminal, a limit)
show that each check can see the package it looks for. How long start-up
takes is measured, not asserted (``docs/performance.rst``).
"""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.conftest import run_python
from tests.server import FaultServer, Resource, make_data

#: What downloading needs and the package, the parser and --version do not.
MACHINERY = (
    "requests",
    "urllib3",
    "dlmanager.download",
    "dlmanager.manager",
    "dlmanager.session",
    "dlmanager.transfer",
)


def modules_after(code: str) -> set[str]:
    """The modules a child process has imported once it has run *code*."""
    script = textwrap.dedent(code) + textwrap.dedent(
        """
        import json as _json, sys as _sys
        print(_json.dumps(sorted(_sys.modules)))
        """
    )
    result = run_python(["-c", script])
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1]
    return set(json.loads(last))


def loaded(modules: set[str], package: str) -> bool:
    return any(name == package or name.startswith(package + ".") for name in modules)


@pytest.fixture
def url(server: FaultServer) -> str:
    server.add("/file.bin", Resource(make_data(100_000)))
    return server.url("/file.bin")


def test_import_dlmanager_loads_none_of_its_modules() -> None:
    modules = modules_after("import dlmanager")

    assert sorted(m for m in modules if m.startswith("dlmanager.")) == []
    assert not loaded(modules, "requests")
    assert not loaded(modules, "urllib3")


def test_a_public_name_is_imported_on_first_use() -> None:
    modules = modules_after("import dlmanager\nassert dlmanager.PersistLimit")

    assert "dlmanager.persist_limit" in modules


def test_a_submodule_is_reached_as_an_attribute_as_before() -> None:
    # Code written when the package imported all its modules.
    modules = modules_after(
        """
        import dlmanager
        assert dlmanager.errors.HTTPStatusError is dlmanager.HTTPStatusError
        assert dlmanager.manager.DownloadManager is dlmanager.DownloadManager
        for name in ("no_such_module", "_private", "__wrapped__"):
            assert not hasattr(dlmanager, name), name
        """
    )

    assert "dlmanager.manager" in modules


@pytest.mark.parametrize("argv", [["--version"], ["--help"], ["get", "--help"], ["cache", "-h"]])
def test_version_and_help_load_no_download_machinery(argv: list[str]) -> None:
    modules = modules_after(
        f"""
        import contextlib, io
        from dlmanager.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                main({argv!r})
            except SystemExit as exc:
                assert exc.code == 0, exc.code
        """
    )

    for package in (*MACHINERY, "rich", "watchdog"):
        assert not loaded(modules, package), package


@pytest.mark.parametrize("options", [[], ["--quiet"], ["--json"], ["-j", "2", "-x", "2", "-v"]])
def test_get_without_a_terminal_loads_neither_rich_nor_watchdog_nor_requests(
    url: str, destdir: str, options: list[str]
) -> None:
    # run_python's standard output is a pipe: plain lines or JSON, no bars.
    modules = modules_after(
        f"""
        from dlmanager.cli import main
        assert main(["get", {url!r}, "-d", {destdir!r}, *{options!r}]) == 0
        """
    )

    assert "dlmanager.download" in modules  # it did download
    assert not loaded(modules, "rich")
    assert not loaded(modules, "watchdog")
    assert not loaded(modules, "requests")  # the command's own transport does without


def test_bars_on_a_terminal_load_rich(url: str) -> None:
    modules = modules_after(
        f"""
        import io, sys
        from dlmanager.cli import parse_args
        from dlmanager.cli.get import make_reporter

        class Terminal(io.StringIO):
            def isatty(self):
                return True

        make_reporter(parse_args([{url!r}]), Terminal(), sys.stderr, 1).close()
        """
    )

    assert loaded(modules, "rich")


def test_a_manager_without_a_limit_loads_no_watchdog(url: str, destdir: str) -> None:
    modules = modules_after(
        f"""
        from dlmanager import DownloadManager
        with DownloadManager({destdir!r}) as manager:
            manager.download({url!r}).wait()
        """
    )

    assert "dlmanager.download" in modules
    assert not loaded(modules, "watchdog")
    assert not loaded(modules, "rich")


def test_a_size_limit_loads_watchdog_to_watch_its_directory(url: str, destdir: str) -> None:
    pytest.importorskip("watchdog")
    modules = modules_after(
        f"""
        from dlmanager.cli import main
        assert main(["get", {url!r}, "-d", {destdir!r}, "--max-size", "1G"]) == 0
        """
    )

    assert loaded(modules, "watchdog")
    assert not loaded(modules, "rich")
