"""``dlmanager get -o - URL``: one URL's body to standard output, and nothing else there.

The body is written to the binary standard output as it arrives, over one
connection, with no temporary file; every line, summary, bar, JSON object
and log record goes to standard error. Standard output cannot be rewound:
an attempt that fails before the first byte is retried as usual, one that
fails after it is final (exit status 1, the message says how many bytes went
out), and a ``--checksum`` mismatch is found once the bytes are out (exit
status 1, the message says the output does not match). When the reader of
the pipe goes away (``| head -c 100``), the download stops and the command
ends quietly, as for any other closed standard output
(:mod:`~dlmanager.cli.output`).
"""

from __future__ import annotations

import argparse
from typing import Any, BinaryIO, TextIO

from dlmanager.cli.get import logging_to, make_reporter
from dlmanager.cli.output import pipe_closed, reader_gone
from dlmanager.cli.parsing import format_size
from dlmanager.disk.sinks import FileObjectSink
from dlmanager.download import Download
from dlmanager.errors import DownloadInterrupt
from dlmanager.rate import TokenBucket
from dlmanager.runtime import Runtime

__all__ = ["PipeWriter", "to_stdout"]

#: How late, at most, the main thread notices a closed standard output, in seconds.
_POLL = 0.1


class PipeWriter:
    """The binary standard output, whose reader may go away.

    A write into a pipe whose reader is gone (``BrokenPipeError``) sets
    :data:`~dlmanager.cli.output.pipe_closed` and stops the download with
    :class:`~dlmanager.errors.DownloadInterrupt`, as a cancel would: nothing
    is reported.
    """

    name = "<stdout>"
    mode = "wb"
    closed = False

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self.stream.write(data)
        except BrokenPipeError:
            self._gone()
            raise DownloadInterrupt("standard output was closed") from None

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self._gone()
            raise DownloadInterrupt("standard output was closed") from None

    def _gone(self) -> None:
        reader_gone(self.stream)


def to_stdout(args: argparse.Namespace, session: Any, out: TextIO, err: TextIO) -> int:
    """Download the one URL of *args* to *out*'s binary stream; return the exit status.

    :param session: the command's transport
    :param out: standard output (its ``buffer`` takes the body)
    :param err: standard error (everything else)
    """
    item = args.items[0]
    reporter = make_reporter(args, err, err, 1)
    sink = FileObjectSink(PipeWriter(out.buffer), item.url, rewindable=False)  # type: ignore[arg-type]
    runtime = Runtime()
    download = Download(
        item.url,
        sink,
        session=session,
        on_event=reporter.hook(),
        runtime=runtime,
        retry=args.retries,
        timeout=args.timeout,
        connections=1,
        max_size=args.max_file_size,
        checksum=item.checksum,
        request=args.request,
        mirrors=item.mirrors,
        max_rate=args.limit_rate,
        total_rate=TokenBucket(args.limit_rate_total),
    )
    try:
        with logging_to(args.verbose, reporter), reporter:
            download.start()
            while not download.join(_POLL):
                if pipe_closed.is_set():  # standard error's reader went away
                    download.cancel()
    except KeyboardInterrupt:
        reporter.interrupted = True
        download.cancel()
    finally:
        download.join()
        runtime.close()
    if pipe_closed.is_set():
        return 1
    if reporter.interrupted:
        total = f" of {download.total}" if download.total is not None else ""
        print(
            f"dlmanager: interrupted after {format_size(sink.size)} ({sink.size}{total} bytes) "
            f"of {item.url} went to standard output: the output is incomplete",
            file=err,
        )
        return 130
    reporter.summary()
    return 1 if reporter.count("failed") else 0
