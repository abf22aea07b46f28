"""Checks shared by everything that opens a file a user named (prompt sets, comparisons, run configs).

Opening a named pipe, a terminal or a device for reading blocks or never
ends (``/dev/zero``), so such paths are refused before they are opened.
"""

from __future__ import annotations

import stat
from pathlib import Path


def not_a_regular_file(path: Path) -> str | None:
    """Why ``path`` cannot be read as a data file (a pipe, socket or device), or None when it can.

    A path that does not exist or cannot be inspected gives None: opening it
    then raises the ordinary error, which callers already turn into a message.
    """
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"is {kind}, not a regular file; refused (reading it could block forever): give a file"
