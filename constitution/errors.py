"""The root of every user-facing error, and readable problems found in principle files.

:class:`UserError` is the one base of every error the project raises for bad
input (a bad file, a bad flag, an unknown model, a server that fails): it
carries the message the CLI prints in one line and the exit code. It lives
here, in the lowest layer, so that ``constitution`` and ``engine`` share it;
``engine.errors`` re-exports it. A programming error is anything else.

A :class:`Problem` names the file, the line where it can be known, the field path
(``principles[3].revision_request``) and a message. :class:`ConstitutionError`
carries one or more of them; its ``str`` is what the CLI prints.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a principle file."""

    file: str
    message: str
    line: int | None = None
    field: str = ""

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class UserError(Exception):
    """Bad input from a user: ``str(error)`` is the message, ``exit_code`` what ``cai`` exits with.

    Subclasses set a class-wide ``exit_code``; one raise may override it with
    ``UserError("...", exit_code=2)``.
    """

    exit_code: int = 1

    def __init__(self, *args: object, exit_code: int | None = None) -> None:
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class ConstitutionError(UserError):
    """A constitution could not be loaded; ``problems`` says why, one entry each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def field_path(loc: Sequence[str | int]) -> str:
    """Render a location tuple as ``principles[3].examples[0].critique``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
