"""``dlmanager demo`` through the real entry point: it finishes, and shows what it claims."""

from __future__ import annotations

import json
import os
import re
import subprocess

from dlmanager.cli.demo import CAP, FILES
from dlmanager.disk.layout import STATE_DIR
from tests.conftest import temporaries
from tests.test_cli import lines, run_cli
from tests.test_cli_get import run_in_terminal


def run_demo(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["demo", *args])


def test_demo_survives_its_faults_and_cleans_up() -> None:
    result = run_demo()

    assert result.returncode == 0, result.stderr
    out, err = result.stdout, result.stderr
    assert "Traceback" not in err
    # Every file was downloaded, through every kind of fault, and some were evicted.
    assert f"dlmanager: {len(FILES)} downloaded" in out
    assert "faults injected: 1 drop, 1 stall, 1 unavailable" in out
    assert re.search(r"retrying build-02\.zip .*body shorter", err), err
    assert re.search(r"retrying build-03\.zip .*read timed out", err), err
    assert re.search(r"retrying build-04\.zip .*HTTP 503", err), err
    assert "evicted build-" in err
    assert "0 differ from what the server sent; 0 temporary files left" in out
    # The temporary directory is gone.
    (directory,) = re.findall(r"downloading them into (\S+),", out)
    assert not os.path.exists(directory)


def test_demo_into_a_directory_keeps_it_under_the_cap(tmp_path: os.PathLike[str]) -> None:
    dest = os.path.join(os.fspath(tmp_path), "demo")

    result = run_demo("-d", dest)

    assert result.returncode == 0, result.stderr
    names = sorted(n for n in os.listdir(dest) if n != STATE_DIR)
    assert names, "everything was evicted"
    assert set(names) < {f.name for f in FILES}
    assert sum(os.path.getsize(os.path.join(dest, n)) for n in names) <= CAP
    assert temporaries(dest) == []


def test_demo_json_prints_one_object_per_file() -> None:
    result = run_demo("--json")

    assert result.returncode == 0, result.stderr
    results = [json.loads(line) for line in lines(result.stdout)]
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in results) == sorted(f.name for f in FILES)
    assert {r["status"] for r in results} == {"downloaded"}
    assert sum(r["retries"] for r in results) >= 3
    assert "faults injected" in result.stderr


def test_demo_on_a_terminal_draws_bars() -> None:
    status, output = run_in_terminal(["demo"])

    assert status == 0, output
    assert "━" in output
    assert "total" in output
    assert "retrying build-04.zip" in output
    assert "0 differ from what the server sent" in output
