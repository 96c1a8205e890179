"""Where ``get -o`` puts the one file: a name in DIR, a path, or standard output.

:func:`output_target` reads ``-o`` (with ``-d`` and the options about a
directory) and says where the file goes, or why that is bad usage. It is
part of the parsing of the command: no download machinery is imported here.

* ``-o NAME`` (no directory part): the file *NAME* in DIR, as always.
* ``-o PATH`` (with a directory part, ``sub/name``, ``./name``,
  ``/tmp/name``): the file at *PATH*, relative to the current directory as
  with ``wget -O`` and ``curl -o``; its directory must exist, and plays the
  part of DIR (the temporary file, the lock and the atomic publish are
  there), so ``-d`` cannot go with it.
* ``-o -``: the body goes to standard output, and nothing is written to any
  directory, so the options about one cannot go with it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from dlmanager.names import validate_fname

__all__ = ["STDOUT", "Target", "output_target"]

#: What ``-o`` takes for standard output.
STDOUT = "-"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where ``-o`` puts the file.

    :ivar fname: its name in :attr:`directory`, or None for standard output
    :ivar directory: the directory it goes to (DIR, or the path's directory),
        or None when ``-o`` names no directory (DIR, given with ``-d`` or
        not, is used)
    """

    fname: str | None
    directory: str | None = None

    @property
    def stdout(self) -> bool:
        return self.fname is None


def output_target(args: argparse.Namespace) -> Target:
    """Where ``-o`` (``args.output``) puts the file.

    ``args.dest`` is None unless ``-d`` was given.

    :raises ValueError: saying why it is bad usage
    """
    output: str = args.output
    if output == STDOUT:
        given = [
            option
            for option, value in (
                ("-d", args.dest),
                ("--max-size", args.max_size),
                ("--max-files", args.max_files),
                ("--include-foreign", args.include_foreign or None),
                ("--revalidate", args.revalidate or None),
                ("--max-age", args.max_age),
            )
            if value is not None
        ]
        if given:
            raise ValueError(
                f"-o - writes the body to standard output, and no file: {', '.join(given)} "
                "cannot go with it"
            )
        return Target(None)
    directory, name = os.path.split(output)
    if not directory:
        try:
            validate_fname(output)
        except ValueError as exc:
            raise ValueError(f"--output: {exc}") from None
        path = os.path.join(args.dest or ".", output)
        if _directory(path):
            raise ValueError(f"--output {output!r}: {path} is a directory: give a file name")
        return Target(output)
    if args.dest is not None:
        raise ValueError(
            f"--output {output!r} is a path (it has a directory part), and -d {args.dest!r} "
            "names another directory: give -o NAME with -d DIR, or the path alone"
        )
    if not name or _directory(output):
        raise ValueError(
            f"--output {output!r} is a directory: give a file name, as in "
            f"{os.path.join(output, 'NAME')!r}"
        )
    try:
        validate_fname(name)
    except ValueError as exc:
        raise ValueError(f"--output {output!r}: {exc}") from None
    if not os.path.isdir(directory):
        raise ValueError(
            f"--output {output!r}: no directory {directory!r} (-o does not create one: "
            "create it first, or use -d DIR -o NAME, which does)"
        )
    return Target(name, directory)


def _directory(path: str) -> bool:
    """Whether *path* is a directory itself (a symlink to one is replaced as any symlink)."""
    return os.path.isdir(path) and not os.path.islink(path)
