"""``python -m dlmanager``: the command line."""

from __future__ import annotations

import sys

from dlmanager.cli import main

if __name__ == "__main__":
    sys.exit(main())
