"""Helpers shared by the benchmark scripts (imported as ``benchutil`` from this folder).

They own the loopback server of the benchmarks: :func:`start_server` serves a directory of
data files on 127.0.0.1 (a free port) with nginx when it is installed (a child process with
a generated configuration: one process, ``sendfile on``, and a ``/limited/`` location over
the same files with ``limit_rate 20m``), else with a Python server in a child process
(``python benchmarks/benchutil.py --serve DATA_DIR``: HTTP/1.1, single ``Range`` with 206
and ``If-Range`` by the rules of the test servers, ``tests/loopback.py``, ``ETag``,
``Last-Modified``, ``sendfile``, and a 20 MiB/s token bucket per connection under
``/limited/``). They also hash files and name the filesystem a path is on.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.server
import os
import platform
import shutil
import socket
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "APT_NGINX",
    "HOST",
    "ServerHandle",
    "first_line",
    "fs_type",
    "serve_files",
    "serve_until_stdin_closes",
    "sha256_file",
    "start_server",
    "stop_process",
    "tail",
]

HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * KIB
#: Per-connection rate under ``/limited/`` (nginx ``limit_rate 20m`` is 20 MiB/s).
LIMIT_RATE = 20 * MIB
#: The Python server sends rate-limited bodies in pieces of this size.
PIECE = 64 * KIB
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APT_NGINX = "apt-get install nginx"


def sha256_file(path: str, block_size: int = 1024 * 1024) -> str:
    """The hex sha256 of the file at *path*."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(block_size):
            digest.update(block)
    return digest.hexdigest()


def fs_type(path: str) -> str:
    """The filesystem type of *path* from /proc/mounts, or '' when unknown."""
    best, kind = "", ""
    try:
        with open("/proc/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                mount = fields[1]
                inside = path == mount or path.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) > len(best):
                    best, kind = mount, fields[2]
    except OSError:
        return ""
    return kind


def serve_until_stdin_closes(server: socketserver.BaseServer, port: int) -> int:
    """Serve in a daemon thread, print *port*, and stop when standard input closes.

    The body of a benchmark's server child process: the parent reads the port
    from its standard output and ends the child by closing its standard input
    (or by exiting). Returns the exit status, 0.
    """
    thread = threading.Thread(target=server.serve_forever, name="bench-server", daemon=True)
    thread.start()
    print(port, flush=True)
    try:
        sys.stdin.read()  # returns when the parent closes the pipe (or exits)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    server.server_close()
    return 0


def first_line(argv: Sequence[str]) -> str:
    """The first line *argv* prints (standard output, else error), or '?'; for versions."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return "?"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "?"


# -- the Python fallback server (a child process: ``benchutil.py --serve DATA_DIR``) --


class _TokenBucket:
    """Allows *rate* bytes per second with bursts of at most *burst* bytes."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(min(burst, PIECE))
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def take(self, amount: int) -> None:
        """Wait until *amount* bytes (at most the burst) may be sent, and spend them."""
        self._refill()
        while self.tokens < amount:
            time.sleep((amount - self.tokens) / self.rate)
            self._refill()
        self.tokens -= amount


class _FileHandler(http.server.BaseHTTPRequestHandler):
    """Serves the files under ``root``; the same files, rate-limited, under ``/limited/``."""

    protocol_version = "HTTP/1.1"
    server_version = "compare-benchmark"
    root = ""
    timeout = 120

    def setup(self) -> None:
        super().setup()
        # One bucket per connection: 20 MiB/s, sent in 64 KiB pieces.
        self.bucket = _TokenBucket(LIMIT_RATE, 2 * PIECE)

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _resolve(self) -> tuple[str, bool] | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        limited = path.startswith("/limited/")
        if limited:
            path = path[len("/limited") :]
        relative = os.path.normpath(path.lstrip("/"))
        if relative.startswith("..") or os.path.isabs(relative):
            return None
        target = os.path.join(self.root, relative)
        return (target, limited) if os.path.isfile(target) else None

    def _respond(self, body: bool) -> None:
        resolved = self._resolve()
        if resolved is None:
            self.send_error(404)
            return
        target, limited = resolved
        with open(target, "rb") as source:
            status = os.fstat(source.fileno())
            size = status.st_size
            etag = f'"{status.st_mtime_ns:x}-{size:x}"'
            last_modified = email.utils.formatdate(status.st_mtime, usegmt=True)
            # The test servers' rules: one range or none, If-Range strong (tests/loopback.py).
            from tests.loopback import requested_range

            start, end, code = 0, size - 1, 200
            span = requested_range(self.headers, size, etag, last_modified)
            if span is not None and not span:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if span:
                start, end, code = span.start, span.stop - 1, 206
            length = end - start + 1
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body or length <= 0:
                return
            try:
                if limited:
                    self._send_limited(source, start, length)
                else:
                    self.connection.sendfile(source, start, length)
            except OSError:  # the client went away
                self.close_connection = True

    def _send_limited(self, source: Any, offset: int, length: int) -> None:
        while length > 0:
            piece = min(PIECE, length)
            self.bucket.take(piece)
            sent = self.connection.sendfile(source, offset, piece)
            if sent <= 0:  # the file shrank
                self.close_connection = True
                return
            offset += sent
            length -= sent

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # eight clients connecting at once must not wait for a SYN retry


def serve_files(data_dir: str) -> int:
    """Serve *data_dir* on 127.0.0.1 until stdin closes or SIGTERM; print the port first."""
    if REPO not in sys.path:
        sys.path.insert(0, REPO)  # for tests.loopback
    handler = type("Handler", (_FileHandler,), {"root": os.path.abspath(data_dir)})
    server = _Server((HOST, 0), handler)
    return serve_until_stdin_closes(server, server.server_address[1])


# -- starting and stopping the server ---------------------------------------------------


@dataclass
class ServerHandle:
    """A running server process and the base URL of its files."""

    proc: subprocess.Popen[bytes]
    base_url: str
    description: str

    def stop(self) -> None:
        """Stop the server (close its standard input, then terminate it) and reap it."""
        stop_process(self.proc)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Close *proc*'s standard input (a server of ours ends then), terminate it
    if it still runs (nginx does not read it), reap it, close its output."""
    if proc.stdin is not None and not proc.stdin.closed:
        try:
            proc.stdin.close()
        except OSError:
            pass
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_listening(proc: subprocess.Popen[bytes], port: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _nginx_quote(path: str) -> str:
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _nginx_config(server_dir: str, data_dir: str, port: int) -> str:
    q = _nginx_quote
    # As root, run as root: the temporary directory is private (mode 0700) to its owner.
    user = "user root;\n" if hasattr(os, "geteuid") and os.geteuid() == 0 else ""
    temp = {
        kind: q(os.path.join(server_dir, kind))
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    }
    data = data_dir.rstrip("/")
    return f"""{user}daemon off;
master_process off;
worker_processes 1;
pid {q(os.path.join(server_dir, "nginx.pid"))};
error_log {q(os.path.join(server_dir, "error.log"))} warn;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    keepalive_requests 100000;
    client_body_temp_path {temp["client_body"]};
    proxy_temp_path {temp["proxy"]};
    fastcgi_temp_path {temp["fastcgi"]};
    uwsgi_temp_path {temp["uwsgi"]};
    scgi_temp_path {temp["scgi"]};

    server {{
        listen {HOST}:{port};
        server_name localhost;
        root {q(data)};

        location / {{
        }}

        location /limited/ {{
            alias {q(data + "/")};
            limit_rate 20m;
        }}
    }}
}}
"""


def tail(path: str, lines: int = 15) -> str:
    """The last *lines* lines of the text file at *path*, or '' when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return "".join(handle.readlines()[-lines:]).rstrip()
    except OSError:
        return ""


def _start_nginx(nginx: str, tmp: str, data_dir: str) -> ServerHandle:
    server_dir = os.path.join(tmp, "nginx")
    os.makedirs(server_dir, exist_ok=True)
    error_log = os.path.join(server_dir, "error.log")
    conf = os.path.join(server_dir, "nginx.conf")
    version = first_line([nginx, "-v"]).removeprefix("nginx version: ")
    problem = ""
    for _ in range(5):  # another process may take the free port before nginx binds it
        port = _free_port()
        with open(conf, "w", encoding="utf-8") as handle:
            handle.write(_nginx_config(server_dir, data_dir, port))
        proc = subprocess.Popen(
            [nginx, "-p", server_dir + "/", "-c", conf, "-e", error_log],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        handle_ = ServerHandle(proc, f"http://{HOST}:{port}", "")
        if _wait_listening(proc, port):
            handle_.description = (
                f"{version} (one process, sendfile on, limit_rate 20m on /limited/)"
                f" on {HOST}:{port}"
            )
            return handle_
        handle_.stop()
        problem = tail(error_log)
        if "in use" not in problem:
            break
    raise RuntimeError(f"nginx did not start:\n{problem}")


def _start_python_server(data_dir: str) -> ServerHandle:
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", data_dir],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode("ascii", "replace").strip()
    handle = ServerHandle(proc, "", "")
    if not line.isdigit():
        handle.stop()
        raise RuntimeError(f"the Python server did not start (printed {line!r})")
    port = int(line)
    handle.base_url = f"http://{HOST}:{port}"
    handle.description = (
        f"Python {platform.python_version()} ThreadingHTTPServer (sendfile, 20 MiB/s token"
        f" bucket per connection on /limited/) on {HOST}:{port}"
    )
    return handle


def start_server(choice: str, tmp: str, data_dir: str) -> ServerHandle:
    """Serve *data_dir* on 127.0.0.1 (a free port); stop it with :meth:`ServerHandle.stop`.

    *choice* is ``"auto"`` (nginx when installed and it starts, else the Python server),
    ``"nginx"`` or ``"python"``; nginx keeps its configuration and logs in *tmp*.

    :raises RuntimeError: when the server chosen cannot start
    """
    nginx = shutil.which("nginx")
    if choice in ("auto", "nginx"):
        if nginx is None:
            if choice == "nginx":
                raise RuntimeError(f"nginx is not installed ({APT_NGINX} provides it)")
            print(f"nginx not found: `{APT_NGINX}` provides it; using a Python server instead")
        else:
            try:
                return _start_nginx(nginx, tmp, data_dir)
            except RuntimeError as exc:
                if choice == "nginx":
                    raise
                print(f"{exc}\nusing a Python server instead", file=sys.stderr)
    return _start_python_server(data_dir)


def main(argv: Sequence[str] | None = None) -> int:
    """``benchutil.py --serve DATA_DIR``: the Python server's child process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] != "--serve":
        print("usage: benchutil.py --serve DATA_DIR", file=sys.stderr)
        return 2
    return serve_files(args[1])


if __name__ == "__main__":
    sys.exit(main())
