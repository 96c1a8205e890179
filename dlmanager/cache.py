"""The user's download cache: where it is, and how big it may grow.

:func:`default_cache_dir` is the directory :func:`dlmanager.retrieve` and the
``dlmanager cache`` commands use when given none: ``DLMANAGER_CACHE_DIR``
when set, else the platform's user cache directory for dlmanager
(:mod:`platformdirs`: ``~/.cache/dlmanager`` on Linux, honouring
``XDG_CACHE_HOME``; ``~/Library/Caches/dlmanager`` on macOS).
:func:`default_cache_max_size` reads its optional size limit from
``DLMANAGER_CACHE_MAX_SIZE`` (a size as the command takes them: ``500M``,
``2G``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dlmanager.sizes import parse_size

__all__ = [
    "CACHE_DIR_VARIABLE",
    "CACHE_MAX_SIZE_VARIABLE",
    "default_cache_dir",
    "default_cache_max_size",
]

CACHE_DIR_VARIABLE = "DLMANAGER_CACHE_DIR"
CACHE_MAX_SIZE_VARIABLE = "DLMANAGER_CACHE_MAX_SIZE"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> str:
    """The user's dlmanager cache directory (not created here).

    :param environ: the environment to read (default: :data:`os.environ`)
    """
    environ = os.environ if environ is None else environ
    chosen = environ.get(CACHE_DIR_VARIABLE)
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    import platformdirs  # only when the default is asked for

    return str(platformdirs.user_cache_dir("dlmanager", appauthor=False))


def default_cache_max_size(environ: Mapping[str, str] | None = None) -> int | None:
    """The size limit of the user's cache in bytes (``DLMANAGER_CACHE_MAX_SIZE``), or None.

    :raises ValueError: when the variable is set to something that is not a size
    """
    environ = os.environ if environ is None else environ
    value = environ.get(CACHE_MAX_SIZE_VARIABLE, "").strip()
    if not value:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise ValueError(f"{CACHE_MAX_SIZE_VARIABLE}: {exc}") from None
