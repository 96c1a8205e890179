"""Filling a file over one connection: the single-stream way.

The body is appended to the temporary file, hashed on the way when a
checksum is to be checked, and checkpointed at the runtime's interval from
the runtime's checkpoint thread (so even while the server stalls); a file
fetched within one interval never pays for a checkpoint.
"""

from __future__ import annotations

import contextlib
import threading

from dlmanager.checksum import Hasher
from dlmanager.disk.sinks import Sink
from dlmanager.errors import DownloadInterrupt, StorageError
from dlmanager.transfer.steps import Checkpointer, Job, pump
from dlmanager.transport.attempt import STALL, Attempt
from dlmanager.transport.headers import ResponseInfo

__all__ = ["Stream"]


class Stream:
    """Append one attempt's body to *part*, checkpointed by *checkpointer*."""

    def __init__(self, job: Job, part: Sink, checkpointer: Checkpointer) -> None:
        self.job = job
        self.part = part
        self.checkpointer = checkpointer
        # A checkpoint that failed in the checkpoint thread, raised in the stream's.
        self._failure: StorageError | None = None
        self._failure_lock = threading.Lock()

    def fill(self, attempt: Attempt, info: ResponseInfo, hasher: Hasher | None) -> None:
        """Append *attempt*'s body; checkpoint it when it can be resumed.

        :raises IncompleteBodyError: when it ends short of the announced size
        :raises StorageError: when a write or a checkpoint fails
        :raises DownloadInterrupt: when cancelled
        """
        part, events, cancel = self.part, self.job.events, self.job.cancel
        streaming = [True]  # False once the loop is over: no checkpoint after it

        def checkpoint() -> None:
            try:
                self.checkpointer.save(lambda: [(0, part.size)], streaming)
            except StorageError as exc:
                # Raised in the stream's thread; ending the attempt wakes a
                # read that waits for a slow or silent server.
                with self._failure_lock:
                    self._failure = self._failure or exc
                attempt.abort(STALL)

        def write(chunk: bytes) -> bool:
            part.write(chunk)
            if hasher is not None:
                hasher.update(chunk)
            self._raise_failure()
            events.advance(part.size)
            return True

        with contextlib.ExitStack() as stack:
            if self.job.resumable(info):
                stack.enter_context(self.job.runtime.checkpoints.every(checkpoint))
                stack.callback(self.checkpointer.stop, streaming)
            try:
                pump(attempt, self.job, write, cancel.is_set)
            except DownloadInterrupt:
                raise
            except BaseException:
                self._raise_failure()  # the checkpoint's failure is the real cause
                raise
        self._raise_failure()
        if info.total is not None and part.size != info.total:
            raise attempt.length_error(info.total, "shorter", part.size)

    def _raise_failure(self) -> None:
        with self._failure_lock:
            failure = self._failure
        if failure is not None:
            raise failure from failure.__cause__
