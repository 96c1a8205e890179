"""The command's standard output and error: credentials masked, a closed pipe survived.

:class:`Output` wraps ``sys.stdout`` and ``sys.stderr`` for the duration of a
command (:func:`wrapped`): every text written goes through
:func:`~dlmanager.redact.redact` (so no line, summary, JSON object, log
record or error message shows a password or a token), and a write into a
pipe whose reader is gone (``dlmanager ... | head -1``) sets
:data:`pipe_closed` instead of raising ``BrokenPipeError`` from whatever
thread wrote; later writes to it are dropped. The command then stops its
downloads and ends as if killed by ``SIGPIPE`` (:func:`die_of_sigpipe`), the
way ``cat`` or ``grep`` end in a pipe, with no traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import IO, Any, TextIO

from dlmanager.redact import redact

__all__ = ["Output", "die_of_sigpipe", "pipe_closed", "reader_gone", "wrapped"]

#: Set when a write found its pipe closed (by any thread).
pipe_closed = threading.Event()


class Output:
    """A text stream that masks credentials and survives a closed pipe."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.broken = False

    def write(self, text: str) -> int:
        if self.broken:
            return len(text)
        try:
            return self.stream.write(redact(text))
        except BrokenPipeError:
            self._break()
            return len(text)

    def flush(self) -> None:
        if self.broken:
            return
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._break()

    def _break(self) -> None:
        self.broken = True
        reader_gone(self.stream)

    def isatty(self) -> bool:
        return not self.broken and self.stream.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def reader_gone(stream: IO[Any]) -> None:
    """The reader of *stream*'s pipe is gone: set :data:`pipe_closed`, and
    point its file descriptor at ``/dev/null``, so that what is left in it
    (flushed by the interpreter at exit) fails no more."""
    pipe_closed.set()
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)


@contextlib.contextmanager
def wrapped() -> Iterator[None]:
    """Wrap ``sys.stdout`` and ``sys.stderr`` in :class:`Output` for the block."""
    saved = sys.stdout, sys.stderr
    sys.stdout = Output(sys.stdout)
    sys.stderr = Output(sys.stderr)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def die_of_sigpipe() -> int:
    """End the process as if killed by ``SIGPIPE`` (status 141 in a shell);
    where there is no such signal, return 141."""
    sigpipe = getattr(signal, "SIGPIPE", None)
    if sigpipe is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        signal.signal(sigpipe, signal.SIG_DFL)
        os.kill(os.getpid(), sigpipe)
    return 128 + 13
