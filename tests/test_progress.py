"""The ready-made progress bars, driven by real downloads from the loopback server."""

from __future__ import annotations

import io
import os

import pytest

from dlmanager import Download
from dlmanager.progress import rich_bar, tqdm_bar
from tests.conftest import read
from tests.server import FaultServer, Resource, make_data

DATA = make_data(300_000, seed=21)


def run(server: FaultServer, destdir: str, hook: object, resource: Resource | bytes) -> Download:
    server.add("/f.bin", resource)
    dl = Download(server.url("/f.bin"), os.path.join(destdir, "f.bin"), on_event=hook)  # type: ignore[arg-type]
    dl.start()
    dl.wait()
    return dl


@pytest.mark.parametrize("resource", [DATA, Resource(DATA, drop_after=[100_000])])
def test_tqdm_bar_counts_every_byte_once(
    server: FaultServer, destdir: str, resource: Resource | bytes
) -> None:
    out = io.StringIO()
    run(server, destdir, tqdm_bar(file=out, mininterval=0), resource)
    final = out.getvalue().strip().split("\r")[-1]
    assert final.startswith("f.bin: 100%")
    assert "293k/293k" in final  # 300,000 bytes, counted once even across the resume
    assert read(os.path.join(destdir, "f.bin")) == DATA


def test_tqdm_bar_without_a_total(server: FaultServer, destdir: str) -> None:
    out = io.StringIO()
    run(server, destdir, tqdm_bar(file=out, mininterval=0), Resource(DATA, no_length=True))
    final = out.getvalue().strip().split("\r")[-1]
    assert final.startswith("f.bin: 293k")  # bytes counted, no percentage without a total


def test_rich_bar_adds_and_removes_its_task(server: FaultServer, destdir: str) -> None:
    from rich.console import Console
    from rich.progress import Progress

    console = Console(file=io.StringIO(), force_terminal=False, width=100)
    seen: list[tuple[float, float | None]] = []
    with Progress(console=console, auto_refresh=False) as progress:
        hook = rich_bar(progress)

        def spy(event: object) -> None:
            hook(event)  # type: ignore[arg-type]
            seen.extend((task.completed, task.total) for task in progress.tasks)

        run(server, destdir, spy, DATA)
        assert progress.tasks == []
    assert seen[-1] == (len(DATA), len(DATA))
    assert all(total == len(DATA) for _, total in seen if total is not None)
