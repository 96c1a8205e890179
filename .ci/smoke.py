"""Smoke test of an installed dlmanager, run by the interpreter of a fresh virtual environment.

It must run outside the source tree, so that ``import dlmanager`` finds the
installed wheel: the public API imports, the ``dlmanager`` console script and
``python -m dlmanager`` work, ``dlmanager demo`` succeeds (with the installed
``rich``), and one real download from a loopback server gives the exact bytes.

Usage: VENV/bin/python .ci/smoke.py SOURCE_TREE
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import tempfile
import threading

EXPECTED_NAMES = {
    "Download",
    "DownloadError",
    "DownloadInterrupt",
    "DownloadManager",
    "HTTPStatusError",
    "PersistLimit",
    "RetryPolicy",
    "Timeouts",
    "__version__",
}


def fail(message: str) -> None:
    print(f"smoke: {message}", file=sys.stderr)
    sys.exit(1)


def check_import(source_tree: str) -> str:
    import dlmanager
    from dlmanager.manager import Download, DownloadInterrupt, DownloadManager  # noqa: F401
    from dlmanager.persist_limit import PersistLimit  # noqa: F401

    location = os.path.realpath(dlmanager.__file__)
    if location.startswith(os.path.realpath(source_tree) + os.sep):
        fail(f"imported the checkout ({location}), not the installed wheel")
    missing = EXPECTED_NAMES - set(dlmanager.__all__)
    if missing:
        fail(f"public names missing from dlmanager.__all__: {sorted(missing)}")
    for name in dlmanager.__all__:
        getattr(dlmanager, name)
    if not os.path.isfile(os.path.join(os.path.dirname(location), "py.typed")):
        fail("py.typed is not installed")
    return dlmanager.__version__


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        fail(f"{' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def check_download(script: str, work: str) -> None:
    served = os.path.join(work, "served")
    os.mkdir(served)
    data = os.urandom(3 * 1024 * 1024 + 17)
    with open(os.path.join(served, "build.bin"), "wb") as handle:
        handle.write(data)
    handler = functools.partial(QuietHandler, directory=served)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/build.bin"
        dest = os.path.join(work, "downloads")
        run(script, url, "-d", dest)
    finally:
        server.shutdown()
        server.server_close()
    with open(os.path.join(dest, "build.bin"), "rb") as handle:
        got = handle.read()
    if hashlib.sha256(got).digest() != hashlib.sha256(data).digest():
        fail("the downloaded file differs from the served one")
    # The file and nothing else: no temporary, no lock, no .dlmanager folder.
    if os.listdir(dest) != ["build.bin"]:
        fail(f"unexpected files left in the destination: {os.listdir(dest)}")


def main(source_tree: str) -> int:
    version = check_import(source_tree)
    script = os.path.join(os.path.dirname(sys.executable), "dlmanager")
    output = run(script, "--version").strip()
    if output != f"dlmanager {version}":
        fail(f"dlmanager --version printed {output!r}")
    if "usage: dlmanager" not in run(sys.executable, "-m", "dlmanager", "--help"):
        fail("python -m dlmanager --help printed no usage")
    with tempfile.TemporaryDirectory() as work:
        check_download(script, work)
    # The README's first set-up command: the demo, with the installed rich.
    if "0 differ from what the server sent" not in run(script, "demo"):
        fail("dlmanager demo did not check its files")
    print(f"smoke: dlmanager {version} installed from the wheel works ({sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        fail("usage: VENV/bin/python .ci/smoke.py SOURCE_TREE")
    sys.exit(main(sys.argv[1]))
