"""Ready-made progress bars for downloads, with ``tqdm`` or ``rich``.

Each function returns an ``on_event`` hook for :class:`~dlmanager.Download`
or :meth:`~dlmanager.DownloadManager.download`. The bar libraries are
imported only when a function is called, so dlmanager itself depends on
neither.

.. code-block:: python

    from dlmanager.progress import tqdm_bar

    dl = manager.download(url, on_event=tqdm_bar())
"""

from __future__ import annotations

import os
from typing import Any

from dlmanager.events import DownloadEvent, EventCallback, EventKind

__all__ = ["rich_bar", "tqdm_bar"]


def tqdm_bar(**options: Any) -> EventCallback:
    """An ``on_event`` hook that draws one ``tqdm`` bar for the download.

    :param options: passed to ``tqdm.tqdm`` (e.g. ``leave=False``, ``file=``)
    """
    from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]

    bar: Any = None

    def on_event(event: DownloadEvent) -> None:
        nonlocal bar
        if bar is None and event.kind is not EventKind.FINISHED:
            name = os.path.basename(event.download.get_dest())
            settings = {"desc": name, "unit": "B", "unit_scale": True, "unit_divisor": 1024}
            bar = tqdm(total=event.total, initial=event.received, **{**settings, **options})
        if bar is None:
            return
        if event.total is not None and bar.total != event.total:
            bar.total = event.total
        if event.received > bar.n:
            bar.update(event.received - bar.n)
        if event.kind is EventKind.FINISHED:
            bar.close()

    return on_event


def rich_bar(progress: Any) -> EventCallback:
    """An ``on_event`` hook that adds the download as a task of a ``rich`` progress.

    :param progress: a started ``rich.progress.Progress``; one task per
        download, removed when the download ends
    """
    task: Any = None

    def on_event(event: DownloadEvent) -> None:
        nonlocal task
        if task is None:
            name = os.path.basename(event.download.get_dest())
            task = progress.add_task(name, total=event.total, completed=event.received)
        progress.update(task, total=event.total, completed=event.received)
        if event.kind is EventKind.FINISHED:
            progress.remove_task(task)

    return on_event
