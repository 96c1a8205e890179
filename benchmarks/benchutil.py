"""Helpers shared by the benchmark scripts (imported as ``benchutil`` from this folder)."""

from __future__ import annotations

import hashlib
import socketserver
import sys
import threading

__all__ = ["fs_type", "serve_until_stdin_closes", "sha256_file"]


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
