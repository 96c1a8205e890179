#!/usr/bin/env python3
"""Draw the results of ``benchmarks/compare.py`` as a PNG bar chart (needs matplotlib).

``compare.py --chart OUT.png`` calls :func:`draw` after its run; to re-draw from a file
that ``compare.py --json RESULTS.json`` wrote, without running the benchmark again::

    python benchmarks/chart.py RESULTS.json OUT.png

One panel per case, since the cases have different units: the median throughput of
each tool (MB/s, or files/s for many small files; higher is better) as grouped bars,
with whiskers from the slowest to the fastest run, and the machine, date and command
in a caption. matplotlib is imported only when a chart is drawn (Agg backend, no
display); it is not an install requirement of dlmanager.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MATPLOTLIB_MISSING", "draw", "main", "matplotlib_problem"]

#: Said on stderr (exit status 2) when a chart is asked for and matplotlib is missing.
MATPLOTLIB_MISSING = (
    "the chart needs matplotlib, which is not installed: `pip install matplotlib`"
    " (it is not a requirement of dlmanager itself)"
)
MB = 1000 * 1000
TOOLS = ("curl", "aria2c", "parfive", "dlmanager 0.1.1", "dlmanager")
COLOURS = {
    "curl": "#8c8c8c",
    "aria2c": "#4c78a8",
    "parfive": "#54a24b",
    "dlmanager 0.1.1": "#b279a2",
    "dlmanager": "#f58518",
}
BAR = 0.26  # widest bar, in units of one group (one setting of a case)
GROUP = 0.84  # the most of a group's width its bars take together


def matplotlib_problem() -> str:
    """'' when matplotlib can be imported, else :data:`MATPLOTLIB_MISSING`."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return MATPLOTLIB_MISSING
    return ""


def _rates(row: Mapping[str, Any]) -> tuple[float, float, float]:
    """The median, slowest and fastest run's throughput of a measured row."""
    per_file = row["case"] == "c"
    amount = row["files"] if per_file else row["bytes"] / MB
    runs = [amount / run["wall_s"] for run in row["runs"] if run["wall_s"] > 0]
    median = row["files_per_s"] if per_file else row["mb_per_s"]
    # min/max include the median: with one run they differ from it only by rounding.
    return median, min([*runs, median]), max([*runs, median])


def _caption(report: Mapping[str, Any]) -> str:
    machine = report.get("machine") or {}
    server = str(report.get("server") or "?").split(" (")[0]  # "nginx/1.22.1"
    parts = [
        f"median of {report.get('repeat', '?')} run(s), whiskers from the slowest to the"
        f" fastest run; server: {server} on 127.0.0.1",
        f"{machine.get('cpus', '?')} CPUs, {machine.get('platform', '?')},"
        f" {machine.get('python', '?')}; {report.get('date') or 'date unknown'}",
        str(report.get("command", "")),
    ]
    return "\n".join(textwrap.shorten(part, 150, placeholder=" ...") for part in parts if part)


def _panel(ax: Any, case: str, title: str, rows: Sequence[Mapping[str, Any]]) -> None:
    settings = list(dict.fromkeys(row["setting"] for row in rows))
    for group, setting in enumerate(settings):
        present = [
            row
            for tool in TOOLS
            for row in rows
            if row["tool"] == tool and row["setting"] == setting
        ]
        width = min(BAR, GROUP / max(1, len(present)))
        for i, row in enumerate(present):
            x = group + (i - (len(present) - 1) / 2) * width
            colour = COLOURS[row["tool"]]
            if row.get("error") or "mb_per_s" not in row:
                ax.text(x, 0, "failed", rotation=90, ha="center", va="bottom", color="#c00000")
                continue
            median, low, high = _rates(row)
            ax.bar(x, median, width * 0.92, color=colour, label=row["tool"])
            ax.errorbar(
                x, median, yerr=[[median - low], [high - median]], color="black", capsize=2, lw=0.8
            )
            ax.annotate(
                f"{median:.0f}" if median >= 10 else f"{median:.1f}",
                (x, high),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
            )
    ax.set_xticks(range(len(settings)), settings)
    ax.set_xlim(-0.6, len(settings) - 0.4)
    ax.set_ylabel("files/s" if case == "c" else "MB/s (10\u2076 bytes/s)")
    ax.set_title(f"({case}) {title}", fontsize=9)
    ax.margins(y=0.12)
    ax.grid(axis="y", linewidth=0.4, alpha=0.6)
    ax.set_axisbelow(True)
    ax.tick_params(labelsize=8)


def draw(report: Mapping[str, Any], path: str, *, dpi: int = 100) -> None:
    """Write the chart of *report* (the structure ``compare.py --json`` writes) to *path*.

    :raises ImportError: matplotlib is not installed (see :func:`matplotlib_problem`).
    :raises ValueError: the report has no case with a row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cases: Mapping[str, Mapping[str, Any]] = report.get("cases") or {}
    keys = [key for key in cases if any(row["case"] == key for row in report["rows"])]
    if not keys:
        raise ValueError("the results hold no measured case")
    widths = [len({row["setting"] for row in report["rows"] if row["case"] == k}) for k in keys]
    fig, axes = plt.subplots(
        1,
        len(keys),
        figsize=(2.1 + 2.4 * sum(widths), 4.2),
        gridspec_kw={"width_ratios": widths},
        layout="constrained",
        squeeze=False,
    )
    tools = [t for t in TOOLS if any(row["tool"] == t for row in report["rows"])]
    try:
        for ax, key in zip(axes[0], keys):
            rows = [row for row in report["rows"] if row["case"] == key]
            title = textwrap.fill(str(cases[key].get("title", "")), 26 * widths[keys.index(key)])
            _panel(ax, key, title, rows)
        fig.suptitle(
            "dlmanager vs "
            + ", ".join(t for t in tools if t != "dlmanager")
            + ": throughput, higher is better",
            x=0.01,
            ha="left",
            fontsize=11,
        )
        handles = [Patch(color=COLOURS[tool], label=tool) for tool in tools]
        fig.legend(handles=handles, loc="outside upper right", ncols=len(tools), fontsize=8)
        fig.supxlabel(_caption(report), fontsize=6.5, color="#444444")
        fig.savefig(path, dpi=dpi, metadata={"Software": None})
    finally:
        plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Re-draw the chart of a `benchmarks/compare.py --json` results file."
    )
    parser.add_argument("results", help="the JSON file compare.py --json wrote")
    parser.add_argument("out", help="the PNG file to write")
    parser.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
    args = parser.parse_args(argv)
    problem = matplotlib_problem()
    if problem:
        print(f"chart: {problem}", file=sys.stderr)
        return 2
    try:
        with open(args.results, encoding="utf-8") as handle:
            report = json.load(handle)
        if not report.get("date"):  # written before compare.py recorded the date
            stamp = time.gmtime(os.path.getmtime(args.results))
            report["date"] = time.strftime("%Y-%m-%d (file date)", stamp)
        draw(report, args.out, dpi=args.dpi)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"chart: cannot draw {args.results}: {exc!r}", file=sys.stderr)
        return 1
    print(f"chart written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
