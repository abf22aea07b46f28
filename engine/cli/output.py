"""What commands print besides their results: notes, failures shown as written, reports written as JSON.

Import it inside a command, not at the top of a command module: it loads
:mod:`constitution` (pydantic), and ``cai ... --help`` loads only click.

How ``cai``'s one error handler (:mod:`engine.cli`) shows an error:

- a :class:`~constitution.errors.ConstitutionError`: its problems, one
  ``FILE:LINE: FIELD: MESSAGE`` line each (the format of ``cai principles validate``);
- a :class:`CommandFailed` (and :class:`Interrupted`): its message as written;
- any other :class:`~constitution.errors.UserError`: ``error: MESSAGE``.

It exits with the error's ``exit_code``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from constitution.errors import ConstitutionError, UserError
from engine.errors import INTERRUPTED


class CommandFailed(UserError):
    """A command's own verdict, printed as it is written (no ``error:`` in front).

    For messages that already name what failed, e.g. ``FILE: exists already; pass --force to overwrite``,
    or that sum up what the command printed before (``2 problems in 1 file``, ``failed gates: ...``).
    """


class Interrupted(CommandFailed):
    """Ctrl-C (or SIGTERM) once what was finished is saved; the message says how to go on."""

    exit_code = INTERRUPTED


def shown(error: UserError) -> str:
    """The text ``cai`` prints for ``error`` (see the module's docstring)."""
    if isinstance(error, ConstitutionError | CommandFailed):
        return str(error)
    return f"error: {error}"


def note(message: str) -> None:
    """A line for the person at the terminal, on stderr (results go to stdout)."""
    click.echo(message, err=True)


def write_json(path: Path, data: Any) -> None:
    """Write a command's report as indented JSON and say so.

    Raises:
        CommandFailed: The file cannot be written.
    """
    try:
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CommandFailed(f"{path}: cannot write: {exc.strerror}") from None
    click.echo(f"wrote {path}")
