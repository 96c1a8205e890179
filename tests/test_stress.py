"""Stress: several threads share one DownloadManager against the fault-injecting loopback server.

Real threads, real sockets, the public API only. Worker threads, each with its own seeded
``random.Random``, loop for a bounded time choosing among: starting a download (names from a
small pool, so that requests collide and join running downloads; URLs that drop, stall, answer
503 or 404, or trickle; sometimes with the file's checksum), cancelling one of their downloads,
``manager.cancel(cancel_if=...)`` on a random subset, waiting on one download, ``manager.wait()``,
removing a finished file (so that it is downloaded again) and asking again for a file already
there. Every blocking call is bounded: a thread that hangs fails the test with the action it is
stuck in and the stacks of the threads involved.

At the end, once everything is waited for (and the manager closed):

- every download returned ends DONE, FAILED (with a DownloadError naming its URL, and never for
  a URL served without faults) or CANCELLED, and CANCELLED only if it was cancelled (by the
  download's ``cancel()`` or selected by a ``manager.cancel()``); none is still running, and no
  ``download()`` call returned a download that had been cancelled before the call began;
- the directory holds only final files, each with exactly the bytes served for its name;
- no transfer slot was lost: once nothing runs, max_workers new downloads all run at once;
- close() called while downloads run (one of them waiting for another download of its file,
  with a checksum) cancels every one of them within a few seconds;
- at no time were more than max_workers x connections connections to the server open (sampled,
  and seen by urllib3 as a pool that overflowed);
- the threads and file descriptors of the process are back to what they were before the
  manager was created (the loopback server's own ones aside), within a few seconds. (A socket
  that only the garbage collector closes fails the test through pytest's unraisable-exception
  hook: filterwarnings is "error".)

The short variant runs in every test run; ``pytest -m slow`` runs the long one, whose duration
``DLMANAGER_STRESS_SECONDS`` overrides. ``DLMANAGER_STRESS_SEED`` fixes the short variant's seed
(a fresh one is drawn otherwise); the seeds are in every failure message.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import logging
import os
import random
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import pytest

from dlmanager import Download, DownloadError, DownloadManager, DownloadState, RetryPolicy, Timeouts
from tests.server import FaultServer, Resource, make_data

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="counts file descriptors in /proc/self/fd"
)

#: Names the workers download: few enough that requests collide and join running downloads.
NAMES = tuple(f"f{i:02d}.bin" for i in range(30))
#: Sizes of the files, by name index: the three largest are split over several connections.
SIZES = (1, 3_000, 40_000, 100_000, 300_000, 700_000)
#: How each file is served: one URL per variant and name, all with the same bytes.
VARIANTS = ("ok", "drop", "stall", "503", "404", "trickle")
VARIANT_WEIGHTS = (4, 2, 2, 2, 1, 1)
#: Variants that never fail a request: a download of their URL has no reason to fail.
HEALTHY = frozenset({"ok", "trickle", "slow"})

WORKERS = 6
MAX_WORKERS = 3
CONNECTIONS = 4
MIN_SPLIT_SIZE = 64 * 1024
RETRY = RetryPolicy(total=3, backoff_factor=0.001, backoff_max=0.01)
TIMEOUTS = Timeouts(connect=5, read=1, stall=None)

SHORT_SECONDS = 5.0
SLOW_SECONDS = 180.0
SLOW_SEEDS = (1, 2, 3)
#: Longest a blocking call may still take once the workers stop starting things: the
#: downloads queued by then drain through MAX_WORKERS slots.
DRAIN_SECONDS = 30.0
#: Longest the downloads of SLOT_NAMES may take to all get a transfer slot, once nothing runs
#: (a slow file takes longer than that: all of them must be running at once).
SLOT_SECONDS = 5.0
#: Longest manager.close() may take before the test gives up on it.
CLOSE_SECONDS = 10.0
#: Longest manager.close() may take with downloads in flight: each stops "within about a second".
CLOSE_RUNNING_SECONDS = 3.0
#: Threads and file descriptors must be back to the baseline this long after close().
SETTLE_SECONDS = 3.0
#: Longest pause of a worker between two actions (so that six loops leave the downloads CPU).
MAX_PAUSE = 0.01
#: Problems listed in a failure message; the others are counted.
MAX_LISTED = 40


def data_of(index: int) -> bytes:
    return make_data(SIZES[index % len(SIZES)], seed=1000 + index)


#: Files served slowly after the run, to see that every transfer slot can still be used.
SLOT_NAMES = tuple(f"slot-{i}.bin" for i in range(MAX_WORKERS))
#: How a "slow" file is served: 32 kB at 256 bytes every 50 ms take 6 s, more than SLOT_SECONDS.
SLOW_TRICKLE = (256, 0.05)

DATA = {name: data_of(index) for index, name in enumerate(NAMES)}
DATA.update({name: make_data(32_000, seed=2000 + i) for i, name in enumerate(SLOT_NAMES)})
SHA256 = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in DATA.items()}


def make_resource(variant: str, index: int, data: bytes) -> Resource:
    """The resource of *variant*; faults are armed per download by :func:`arm`."""
    if variant == "stall":
        # Either the server cuts the stall short, or the client's read timeout (1 s) ends it.
        return Resource(data, stall_seconds=0.3 if index % 2 else 1.5)
    if variant == "trickle":
        return Resource(data, trickle=(16 * 1024, 0.005), trickle_after=index * 1000)
    return Resource(data)


def arm(variant: str, resource: Resource, rng: random.Random) -> None:
    """Queue one fault for the next GET of *resource* (lists are consumed one item per GET)."""
    size = len(resource.data)
    if variant == "drop":
        resource.drop_after.append(rng.randrange(size))
    elif variant == "stall":
        resource.stall_after.append(rng.randrange(size))
    elif variant == "503":
        resource.statuses.append(503)
    elif variant == "404":
        resource.statuses.extend([404] * rng.randint(1, 3))


# -- what the process holds --------------------------------------------------------------


def open_fds() -> dict[int, str]:
    """This process's open file descriptors and what they point to."""
    fds = {}
    for entry in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed meanwhile
            fds[int(entry)] = os.readlink(f"/proc/self/fd/{entry}")
    return fds


def tcp_sockets() -> dict[str, tuple[int, str, int]]:
    """``socket:[inode]`` -> (local port, description, remote port) for this host's TCP sockets."""
    sockets = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                sockets[f"socket:[{fields[9]}]"] = (
                    local_port,
                    f"port {local_port} -> port {remote_port}, tcp state {fields[3]}",
                    remote_port,
                )
    return sockets


def is_server_thread(thread: threading.Thread) -> bool:
    """Whether *thread* serves a connection of a loopback server (its own, not the client's)."""
    target = getattr(thread, "_target", None)
    return isinstance(getattr(target, "__self__", None), socketserver.BaseServer) or (
        thread.name.endswith("(process_request_thread)")
    )


def stack_of(thread: threading.Thread) -> str:
    frame = sys._current_frames().get(thread.ident or -1)
    if frame is None:
        return "    (no stack: the thread has ended)\n"
    return "".join(traceback.format_stack(frame))


def grouped_stacks(threads: list[threading.Thread]) -> str:
    """The stacks of *threads*, identical ones once with the names of the threads sharing them."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    for thread in threads:
        groups[stack_of(thread)].append(thread.name)
    return "\n".join(
        f"  {len(names)} thread(s): {', '.join(sorted(names)[:5])}"
        f"{' ...' if len(names) > 5 else ''}\n{stack}"
        for stack, names in groups.items()
    )


def bounded(function: Callable[[], object], timeout: float, what: str) -> str | None:
    """Run *function* in a daemon thread for at most *timeout* seconds.

    :return: None when it returned in time, else what went wrong (with its stack if it hangs)
    """
    raised: list[BaseException] = []

    def target() -> None:
        try:
            function()
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=target, name=f"stress: {what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return f"{what} did not return within {timeout:.0f} s; it is at:\n{stack_of(thread)}"
    if raised:
        formatted = "".join(traceback.format_exception(raised[0]))
        return f"{what} raised:\n{formatted}"
    return None


def poll(condition: Callable[[], bool], timeout: float) -> bool:
    """Whether *condition* holds within *timeout* seconds (polled: nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class PoolOverflows(logging.Handler):
    """Counts the connections urllib3 discards because the session's pool is full.

    The manager's own session keeps max_workers x connections connections per host: one
    returned to a full pool means that more than that many were open at once.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Connection pool is full" in record.getMessage():
            self.count += 1

    @classmethod
    @contextlib.contextmanager
    def watching(cls) -> Iterator[PoolOverflows]:
        handler = cls()
        logger = logging.getLogger("urllib3.connectionpool")
        logger.addHandler(handler)
        try:
            yield handler
        finally:
            logger.removeHandler(handler)


# -- the run ------------------------------------------------------------------------------


@dataclass
class Baseline:
    """The threads and file descriptors of the process before the manager was created."""

    threads: set[threading.Thread]
    fds: dict[int, str]
    server_port: int

    @classmethod
    def take(cls, server: FaultServer) -> Baseline:
        return cls(set(threading.enumerate()), open_fds(), server.host_port[1])

    def extra_threads(self) -> list[threading.Thread]:
        return [
            thread
            for thread in threading.enumerate()
            if thread not in self.threads and not is_server_thread(thread)
        ]

    def client_connections(self) -> int:
        """This process's open sockets connected to the server (the client's ends)."""
        sockets = tcp_sockets()
        return sum(
            1
            for target in open_fds().values()
            if target in sockets and sockets[target][2] == self.server_port
        )

    def extra_fds(self) -> dict[int, str]:
        """Descriptors opened since, except the server's own ends of its connections."""
        sockets = tcp_sockets()
        return {
            fd: target
            for fd, target in open_fds().items()
            if self.fds.get(fd) != target
            and not (target in sockets and sockets[target][0] == self.server_port)
        }

    def leaks(self) -> list[str]:
        problems = []
        threads = self.extra_threads()
        if threads:
            problems.append(
                f"{len(threads)} thread(s) more than before the manager was created: "
                f"{sorted(thread.name for thread in threads)}; their stacks:\n"
                + grouped_stacks(threads)
            )
        fds = self.extra_fds()
        if fds:
            sockets = tcp_sockets()
            described = [
                f"fd {fd} -> {target}" + (f" ({sockets[target][1]})" if target in sockets else "")
                for fd, target in sorted(fds.items())
            ]
            problems.append(
                f"{len(fds)} file descriptor(s) more than before the manager was created "
                f"({len(self.fds)} then, {len(open_fds())} now):\n  " + "\n  ".join(described)
            )
        return problems


class Stress:
    """Worker threads sharing one manager, and the record of everything they did."""

    def __init__(
        self, server: FaultServer, destdir: str, manager: DownloadManager, seed: int
    ) -> None:
        self.server = server
        self.destdir = destdir
        self.manager = manager
        self.seed = seed
        self.thread_seeds = {f"stress-worker-{i}": seed * 1000 + i for i in range(WORKERS)}
        self.abort = threading.Event()  # stops the workers early (when the test gives up)
        self._lock = threading.Lock()
        self._clock = itertools.count()  # logical time: orders calls and cancels
        #: Every Download returned by download(), kept alive so that ids stay unique.
        self.downloads: dict[int, Download] = {}
        #: The variant of each download's URL.
        self.variant: dict[int, str] = {}
        #: Downloads the test cancelled or selected in a manager.cancel() call.
        self.cancel_requested: dict[int, Download] = {}
        #: When a cancel of the download had returned, with the download cancelled.
        self.cancelled_at: dict[int, int] = {}
        #: What each worker is doing, and since when (monotonic).
        self.current: dict[str, tuple[str, float]] = {}
        self.problems: list[str] = []
        self.actions: collections.Counter[str] = collections.Counter()
        self.started = 0
        #: The most seen at once during the run, sampled (for the report).
        self.peaks: collections.Counter[str] = collections.Counter()

    def tick(self) -> int:
        with self._lock:
            return next(self._clock)

    def problem(self, message: str) -> None:
        with self._lock:
            self.problems.append(message)

    def doing(self, what: str) -> None:
        self.current[threading.current_thread().name] = (what, time.monotonic())

    # -- the workers ------------------------------------------------------------------

    def work(self, rng: random.Random, end: float) -> None:
        name = threading.current_thread().name
        mine: list[Download] = []
        actions: list[tuple[Callable[[random.Random, list[Download]], None], int]] = [
            (self.start_download, 40),
            (self.cancel_own, 8),
            (self.cancel_some, 3),
            (self.wait_one, 14),
            (self.wait_all, 2),
            (self.remove_file, 10),
            (self.download_present, 10),
        ]
        functions, weights = zip(*actions)
        try:
            while time.monotonic() < end and not self.abort.is_set():
                action = rng.choices(functions, weights)[0]
                with self._lock:
                    self.actions[action.__name__] += 1
                action(rng, mine)
                self.doing("pausing between actions")
                self.abort.wait(rng.uniform(0, MAX_PAUSE))
            self.doing("finished")
        except BaseException:
            action_name = self.current.get(name, ("?", 0.0))[0]
            self.problem(
                f"{name} (seed {self.thread_seeds[name]}): {action_name} raised:\n"
                + traceback.format_exc()
            )
            self.doing("stopped by an exception")

    def url(self, variant: str, fname: str) -> str:
        return self.server.url(f"/{variant}/{fname}")

    def download(
        self, mine: list[Download], variant: str, fname: str, checksum: str | None
    ) -> Download | None:
        url = self.url(variant, fname)
        self.doing(f"manager.download({url!r}, {fname!r}, checksum={checksum is not None})")
        called = self.tick()
        download = self.manager.download(url, fname, checksum=checksum)
        if download is None:
            return None
        if not isinstance(download, Download):
            self.problem(f"download({url!r}) returned {download!r}")
            return None
        with self._lock:
            if id(download) not in self.downloads:
                self.started += 1
                self.downloads[id(download)] = download
                self.variant[id(download)] = download.get_url().split("/")[3]
            cancelled = self.cancelled_at.get(id(download))
        if cancelled is not None and cancelled < called:
            self.problem(
                f"{threading.current_thread().name}: manager.download({url!r}, {fname!r}) "
                f"returned {download!r}, which had been cancelled before the call began "
                f"(the request is lost: it ends cancelled)"
            )
        mine.append(download)
        return download

    def start_download(self, rng: random.Random, mine: list[Download]) -> None:
        fname = rng.choice(NAMES)
        variant = rng.choices(VARIANTS, VARIANT_WEIGHTS)[0]
        arm(variant, self.server.resource(f"/{variant}/{fname}"), rng)
        checksum = SHA256[fname] if rng.random() < 0.2 else None
        self.download(mine, variant, fname, checksum)

    def download_present(self, rng: random.Random, mine: list[Download]) -> None:
        present = self.present()
        if present:
            self.download(mine, "ok", rng.choice(present), None)

    def present(self) -> list[str]:
        return sorted(name for name in os.listdir(self.destdir) if not name.startswith("."))

    def cancel_own(self, rng: random.Random, mine: list[Download]) -> None:
        running = [download for download in mine if download.is_running()]
        if not running:
            return
        download = rng.choice(running)
        self.doing(f"cancel() of {download!r}")
        with self._lock:
            self.cancel_requested[id(download)] = download
        download.cancel()
        if not download.is_canceled():
            self.problem(f"{download!r}.is_canceled() is False after cancel()")
        self.record_cancelled([download])

    def cancel_some(self, rng: random.Random, mine: list[Download]) -> None:
        share = rng.uniform(0.1, 0.5)
        selected: list[Download] = []

        def cancel_if(download: Download) -> bool:
            chosen = rng.random() < share
            if chosen:
                with self._lock:
                    self.cancel_requested[id(download)] = download
                selected.append(download)
            return chosen

        self.doing(f"manager.cancel(cancel_if=<about {share:.0%} of the downloads>)")
        self.manager.cancel(cancel_if=cancel_if)
        self.record_cancelled([download for download in selected if download.is_canceled()])

    def record_cancelled(self, downloads: list[Download]) -> None:
        now = self.tick()
        with self._lock:
            for download in downloads:
                self.cancelled_at.setdefault(id(download), now)

    def wait_one(self, rng: random.Random, mine: list[Download]) -> None:
        running = [download for download in mine if download.is_running()]
        if not running:
            return
        download = rng.choice(running)
        self.doing(f"wait(raise_if_error=False) on {download!r}")
        download.wait(raise_if_error=False)
        if download.is_running() or download.state not in (
            DownloadState.DONE,
            DownloadState.FAILED,
            DownloadState.CANCELLED,
        ):
            self.problem(f"{download!r}: wait() returned while it runs")

    def wait_all(self, rng: random.Random, mine: list[Download]) -> None:
        self.doing("manager.wait(raise_if_error=False)")
        self.manager.wait(raise_if_error=False)

    def remove_file(self, rng: random.Random, mine: list[Download]) -> None:
        present = self.present()
        if not present:
            return
        fname = rng.choice(present)
        self.doing(f"removing {fname} from the directory")
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(self.destdir, fname))

    # -- the run and the checks ----------------------------------------------------------

    def sample(self, baseline: Baseline, stop: threading.Event) -> None:
        """Record the peaks of what the process holds, every 50 ms until *stop* is set."""
        while not stop.wait(0.05):
            with self._lock:
                downloads = list(self.downloads.values())
            states = collections.Counter(download.state for download in downloads)
            now = {
                "threads": len(baseline.extra_threads()) - WORKERS - 1,  # not the test's
                "fds": len(baseline.extra_fds()),
                "connections": baseline.client_connections(),
                "queued": states[DownloadState.QUEUED],
                "running": states[DownloadState.RUNNING],
            }
            for key, value in now.items():
                self.peaks[key] = max(self.peaks[key], value)

    def run_workers(self, baseline: Baseline, seconds: float) -> None:
        """Run the workers for *seconds*; fail the test if one is still busy after the drain."""
        stop_sampling = threading.Event()
        sampler = threading.Thread(
            target=self.sample, args=(baseline, stop_sampling), name="stress-sampler", daemon=True
        )
        sampler.start()
        try:
            self._run_workers(seconds)
        finally:
            stop_sampling.set()
            sampler.join(10)

    def _run_workers(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        threads = [
            threading.Thread(
                target=self.work,
                args=(random.Random(seed), end),
                name=name,
                daemon=True,
            )
            for name, seed in self.thread_seeds.items()
        ]
        for thread in threads:
            thread.start()
        deadline = end + DRAIN_SECONDS
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        hung = [thread for thread in threads if thread.is_alive()]
        if hung:
            self.abort.set()
            now = time.monotonic()
            reports = []
            for thread in hung:
                what, since = self.current.get(thread.name, ("?", now))
                reports.append(
                    f"{thread.name} (seed {self.thread_seeds[thread.name]}) is still in: {what} "
                    f"(for {now - since:.1f} s, {DRAIN_SECONDS:.0f} s after the run ended); "
                    f"it is at:\n{stack_of(thread)}"
                )
            self.fail_hung("worker thread(s) hung:\n" + "\n".join(reports))

    def unfinished(self) -> list[Download]:
        with self._lock:
            downloads = list(self.downloads.values())
        return [download for download in downloads if download.is_running()]

    def fail_hung(self, report: str) -> NoReturn:
        """Fail with *report*, the downloads still running and the stacks of their threads."""
        unfinished = self.unfinished()
        listed = "\n  ".join(
            f"{download!r} state={download.state.value} canceled={download.is_canceled()}"
            for download in unfinished[:MAX_LISTED]
        )
        dlmanager_threads = [t for t in threading.enumerate() if t.name.startswith("dlmanager")]
        found = "".join(f"\nalso found: {problem}" for problem in self.problems[:MAX_LISTED])
        message = (
            f"{self.header()}\n{report}{found}\n"
            f"{len(unfinished)} download(s) still running:\n  {listed}\n"
            f"stacks of the {len(dlmanager_threads)} dlmanager thread(s):\n"
            + grouped_stacks(dlmanager_threads)
        )
        pytest.fail(message, pytrace=False)

    def header(self) -> str:
        seeds = ", ".join(f"{name}={seed}" for name, seed in self.thread_seeds.items())
        return (
            f"stress run with seed {self.seed} (thread seeds: {seeds}; "
            f"rerun with DLMANAGER_STRESS_SEED={self.seed}): "
            f"{self.started} downloads started, actions {dict(self.actions)}, "
            f"peaks during the run (beyond the baseline) {dict(self.peaks)}"
        )

    def check_slots_and_close(self) -> list[str]:
        """Once nothing runs: check that no transfer slot was lost, then close() the manager
        while downloads run, and check that it cancels them at once.

        Starts MAX_WORKERS slow downloads and waits (polling) until all of them transfer at
        once: one that stays queued means that a slot was never given back. Then asks for the
        first one's file again with its checksum (a new download, which waits for the running
        one), and closes the manager: close() must cancel all of them, within about a second.
        """
        problems = []
        probes = []
        for fname in SLOT_NAMES:
            download = self.download([], "slow", fname, None)
            assert download is not None, f"{fname} was already there"
            probes.append(download)
        if not poll(
            lambda: all(probe.state is DownloadState.RUNNING for probe in probes), SLOT_SECONDS
        ):
            problems.append(
                f"once nothing ran, {MAX_WORKERS} new downloads (max_workers={MAX_WORKERS}) did "
                f"not all get a transfer slot within {SLOT_SECONDS:.0f} s, a slot was never "
                f"given back: " + ", ".join(repr(probe) for probe in probes)
            )
        second = self.download([], "slow", SLOT_NAMES[0], SHA256[SLOT_NAMES[0]])
        if second is not None and second is not probes[0]:
            probes.append(second)
        with self._lock:  # close() cancels them
            self.cancel_requested.update((id(probe), probe) for probe in probes)
        running = [repr(probe) for probe in probes]
        started = time.monotonic()
        closing = bounded(self.manager.close, CLOSE_SECONDS, "manager.close()")
        if closing is not None:
            self.fail_hung(closing)
        took = time.monotonic() - started
        if took > CLOSE_RUNNING_SECONDS:
            problems.append(
                f"manager.close() took {took:.1f} s (more than {CLOSE_RUNNING_SECONDS:.0f} s) "
                f"with these downloads in flight: {', '.join(running)}"
            )
        problems += [
            f"{probe!r} was in flight when manager.close() was called, and was not cancelled "
            f"(close() returned after {took:.1f} s)"
            for probe in probes
            if probe.state is not DownloadState.CANCELLED
        ]
        return problems

    def check_downloads(self) -> list[str]:
        problems = []
        for key, download in self.downloads.items():
            state = download.state
            if download.is_running():
                problems.append(f"{download!r} still runs after manager.close()")
                continue
            if state is DownloadState.DONE:
                continue
            if state is DownloadState.FAILED:
                error = download.error()
                exc = None if error is None else error[1]
                if not isinstance(exc, DownloadError):
                    problems.append(f"{download!r} failed with {exc!r}, not a DownloadError")
                elif exc.url != download.get_url():
                    problems.append(f"{download!r} failed with {exc!r} whose url is {exc.url!r}")
                elif self.variant[key] in HEALTHY:
                    problems.append(
                        f"{download!r} of a URL that never fails failed: "
                        f"{type(exc).__name__}: {exc}"
                    )
            elif state is DownloadState.CANCELLED:
                if key not in self.cancel_requested:
                    error = download.error()
                    problems.append(
                        f"{download!r} ended cancelled, but the test never cancelled it "
                        f"(is_canceled()={download.is_canceled()}, error={error and error[1]!r})"
                    )
            else:
                problems.append(f"{download!r} ended in state {state.value}")
        return problems

    def check_directory(self) -> list[str]:
        problems = []
        for name in sorted(os.listdir(self.destdir)):
            path = os.path.join(self.destdir, name)
            if name.startswith(".") or name not in DATA:
                problems.append(f"the directory holds {name!r}, which is not a final file")
                continue
            if not os.path.isfile(path) or os.path.islink(path):
                problems.append(f"{name!r} in the directory is not a regular file")
                continue
            with open(path, "rb") as handle:
                content = handle.read()
            if content != DATA[name]:
                problems.append(
                    f"{name!r} has {len(content)} bytes (sha256 "
                    f"{hashlib.sha256(content).hexdigest()[:16]}), not the {len(DATA[name])} "
                    f"bytes served (sha256 {SHA256[name][7:23]})"
                )
        return problems


def stress_seconds(default: float) -> float:
    value = os.environ.get("DLMANAGER_STRESS_SECONDS")
    return float(value) if value else default


def run_stress(server: FaultServer, destdir: str, seed: int, seconds: float) -> None:
    for index, name in enumerate(NAMES):
        for variant in VARIANTS:
            server.add(f"/{variant}/{name}", make_resource(variant, index, DATA[name]))
    for name in SLOT_NAMES:
        server.add(f"/slow/{name}", Resource(DATA[name], trickle=SLOW_TRICKLE))
    baseline = Baseline.take(server)
    manager = DownloadManager(
        destdir,
        max_workers=MAX_WORKERS,
        retry=RETRY,
        timeout=TIMEOUTS,
        connections=CONNECTIONS,
        min_split_size=MIN_SPLIT_SIZE,
    )
    stress = Stress(server, destdir, manager, seed)
    closed = False
    with PoolOverflows.watching() as overflows:
        try:
            stress.run_workers(baseline, seconds)
            hung = bounded(
                lambda: manager.wait(raise_if_error=False),
                DRAIN_SECONDS,
                "the final manager.wait(raise_if_error=False)",
            )
            if hung is not None:
                stress.fail_hung(hung)
            closing = stress.check_slots_and_close()
            closed = True
        finally:
            if not closed:  # the test failed or broke: stop what still runs
                close_after_failure(manager)

    problems = list(stress.problems) + closing
    if stress.peaks["connections"] > MAX_WORKERS * CONNECTIONS:
        problems.append(
            f"{stress.peaks['connections']} connections to the server were open at once, more "
            f"than max_workers x connections = {MAX_WORKERS * CONNECTIONS}"
        )
    if overflows.count:
        problems.append(
            f"urllib3 discarded {overflows.count} connection(s) given back to the manager's pool "
            f"(sized for max_workers x connections = {MAX_WORKERS * CONNECTIONS}) because it was "
            f"full: more connections than that were open at once"
        )
    problems += stress.check_downloads()
    problems += stress.check_directory()
    if not poll(lambda: not baseline.leaks(), SETTLE_SECONDS):
        problems += [f"{SETTLE_SECONDS:.0f} s after close(): {leak}" for leak in baseline.leaks()]
    if problems:
        listed = "\n- ".join(problems[:MAX_LISTED])
        more = f"\n... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        pytest.fail(
            f"{stress.header()}\n{len(problems)} problem(s):\n- {listed}{more}", pytrace=False
        )
    print(stress.header())


def close_after_failure(manager: DownloadManager) -> None:
    """Stop what still runs when the test failed or broke, so that later tests are not disturbed."""
    manager.cancel()
    bounded(manager.close, CLOSE_SECONDS, "manager.close() after a failure")


def short_seed() -> int:
    value = os.environ.get("DLMANAGER_STRESS_SEED")
    return int(value) if value else random.SystemRandom().randrange(1_000_000)


def test_threads_sharing_a_manager_under_faults(server: FaultServer, destdir: str) -> None:
    run_stress(server, destdir, short_seed(), SHORT_SECONDS)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SLOW_SEEDS)
def test_threads_sharing_a_manager_under_faults_for_minutes(
    server: FaultServer, destdir: str, seed: int
) -> None:
    run_stress(server, destdir, seed, stress_seconds(SLOW_SECONDS))
