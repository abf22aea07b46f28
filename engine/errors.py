"""The one root of user-facing errors, as the engine sees it.

Every error the project raises for bad input descends from :class:`UserError`
(defined in :mod:`constitution.errors`, the lowest layer, so principle files
share it). ``cai``'s command group catches it once and prints ``error: MESSAGE``
in one line, exiting with the error's ``exit_code``; anything else is a
programming error and may show a traceback.

Exit codes: 1 bad input or a failed operation, 2 a usage error (flags that
contradict each other, a run that needs ``--force``), 3 a quality gate that
failed (``cai eval --fail-over``), 130 interrupted.
"""

from __future__ import annotations

from constitution.errors import UserError

USAGE = 2
"""Exit code of a usage error: the flags or folders asked for something that cannot be done as asked."""

GATE = 3
"""Exit code of a quality gate that failed."""

INTERRUPTED = 130
"""Exit code after Ctrl-C (or SIGTERM) once what was finished is saved."""

__all__ = ["GATE", "INTERRUPTED", "USAGE", "UserError"]
