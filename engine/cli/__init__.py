"""The ``cai`` command line: the command group, its one error handler, and the commands in their modules.

One module per command group: :mod:`.principles` (``cai principles ...``),
:mod:`.data` (``generate``, ``label``, ``merge``, ``export``), :mod:`.review`,
:mod:`.judge` (``judge-eval``), :mod:`.explain` (``explain``), :mod:`.train` (``cai train ...``),
:mod:`.eval` (``eval``, ``eval-scorers``); :mod:`.options` declares the
options several commands share, :mod:`.output` how errors and notes are shown.

Only ``click`` is imported at start-up; each command imports what it needs, so
``cai principles ...`` never loads torch, transformers or trl and answers fast
enough for an editor or a pre-commit hook.

Errors: a command raises (or lets through) a
:class:`~constitution.errors.UserError`; the group prints it in one line and
exits with its ``exit_code`` (see :mod:`engine.errors` and :mod:`.output`). A
failed file operation ends the same way (:func:`describe_os_error`); anything
else is a programming error and shows its traceback.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import click

from engine.cli.data import export_, generate, label, merge
from engine.cli.eval import eval_, eval_scorers
from engine.cli.explain import explain
from engine.cli.judge import judge_eval
from engine.cli.principles import principles
from engine.cli.review import review
from engine.cli.train import train


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: which file, what went wrong, what to do."""
    import errno

    where = f"{exc.filename}: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        advice = "free some space, then run the same command again (what was finished is kept)"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        advice = "choose a folder you can write to (e.g. another --out), or fix its permissions"
    elif exc.filename:
        advice = "check the path and run the same command again"
    else:
        advice = "run the same command again (what was finished is kept)"
    return f"{where}{reason}; {advice}"


def _say(text: str) -> None:
    with contextlib.suppress(OSError):  # the terminal is gone (hung up, or the pipe's reader died): the exit code tells
        click.echo(text, err=True)


class _Commands(click.Group):
    """The ``cai`` group: the one place where an error a command raises becomes a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        import errno

        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `cai ... | head`: the reader left; nothing to say
                sys.stderr.close()
                sys.exit(1)
            _say(f"error: {describe_os_error(exc)}")
            sys.exit(1)
        except Exception as exc:
            from constitution.errors import UserError

            if not isinstance(exc, UserError):
                raise
            from engine.cli.output import shown

            _say(shown(exc))
            sys.exit(exc.exit_code)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="cai-engine", prog_name="cai")
def cli() -> None:
    """Constitutional AI self-critique engine.

    Principles written in YAML drive critique-and-revise loops over a language
    model; the results become AI-feedback preference data for RLAIF and DPO.

    Start with the shipped constitution, then generate data with the embedded model:

    \b
        cai principles validate principles/
        cai principles show default --principle violent-crime --render
        cai generate --out runs/demo --prompts mixed --limit 8 --revisions 1
        cai export runs/demo --format parquet
    """


for _command in (principles, generate, label, merge, export_, review, judge_eval, explain, eval_, eval_scorers, train):
    cli.add_command(_command)


def main() -> None:
    """Entry point of the ``cai`` console script (and of ``python -m engine``)."""
    cli(prog_name="cai")
