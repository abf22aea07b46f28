"""Options that several ``cai`` commands take, each declared once with one spelling.

The judge's settings read ``--judge-...`` wherever they appear (``generate``,
``label``, ``judge-eval``); an output folder or file is ``-o/--out``. Spellings
that commands used before keep working as hidden aliases (:class:`Option`):
``--help`` and error messages show the current one only.

Options that mirror a field of a pydantic settings model (the run configs of
:mod:`engine.config`, :class:`engine.records.JudgeSettings`,
:class:`engine.train.TrainOptions`) keep literal defaults here, because only
click is imported at start-up; ``tests/test_cli_options.py`` checks that every
such default and name matches its field.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from engine.records import JudgeSettings

F = TypeVar("F", bound=Callable[..., Any])

FOLDER = click.Path(file_okay=False, path_type=Path)
"""A folder path (it need not exist yet)."""
FILE = click.Path(dir_okay=False, path_type=Path)
"""A file path (it need not exist yet)."""
EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
"""A file that must exist."""


class Option(click.Option):
    """A click option that also answers to old spellings, which ``--help`` and error messages leave out.

    Args:
        param_decls: The option's current names (and optionally its parameter name), as for ``click.option``.
        old: Former spellings that still work, e.g. ``("--cot",)`` for ``--judge-cot``.
        **attrs: Everything else ``click.Option`` takes.
    """

    def __init__(self, param_decls: Sequence[str], *, old: Sequence[str] = (), **attrs: Any) -> None:
        super().__init__([*param_decls, *old], **attrs)
        self.old = tuple(old)

    @contextlib.contextmanager
    def _current_names(self) -> Iterator[None]:
        names = self.opts
        self.opts = [name for name in names if name not in self.old]
        try:
            yield
        finally:
            self.opts = names

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        """The help line, with the current spelling only."""
        with self._current_names():
            return super().get_help_record(ctx)

    def get_error_hint(self, ctx: click.Context | None) -> str:
        """How a usage error names the option: by its current spelling."""
        with self._current_names():
            return super().get_error_hint(ctx)


def option(*param_decls: str, old: Sequence[str] = (), **attrs: Any) -> Callable[[F], F]:
    """``click.option`` with hidden old spellings (see :class:`Option`)."""
    return click.option(*param_decls, cls=Option, old=old, **attrs)


def stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator applying ``decorators`` so that ``--help`` lists their options in the order given."""

    def decorate(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return decorate


# ------------------------------------------------------------------ where results go


def out_option(
    help: str, *, required: bool = False, kind: click.Path[Any] = FOLDER, old: Sequence[str] = ()
) -> Callable[[F], F]:
    """``-o/--out``: the folder (or file) a command writes."""
    return option("-o", "--out", "out", old=old, required=required, type=kind, help=help)


def run_config_option(func: F) -> F:
    """``--config``: a YAML run configuration (``cai generate``, ``cai eval``); flags override it."""
    return click.option(
        "--config",
        "config_file",
        type=EXISTING_FILE,
        help="YAML file with any of these options (keys as the long flag names); flags override it.",
    )(func)


def json_report_option(func: F) -> F:
    """``--json``: also write a command's report as JSON."""
    return click.option("--json", "json_out", type=FILE, help="Also write the report here.")(func)


# ------------------------------------------------------------------ models and how they run


def base_url_option(func: F) -> F:
    """``--base-url``: the server of ``openai:NAME`` models."""
    return click.option(
        "--base-url",
        metavar="URL",
        help="Server of openai:NAME models, e.g. http://127.0.0.1:8080/v1 (default: $OPENAI_BASE_URL, else OpenAI).",
    )(func)


def backend_loader(base_url: str | None) -> Callable[..., Any]:
    """``load_backend`` with the server that ``--base-url`` names filled in."""
    from engine.backends import load_backend

    return functools.partial(load_backend, base_url=base_url)


def judge_model_option(
    help: str, *, default: str | None = None, old: Sequence[str] = (), multiple: bool = False
) -> Callable[[F], F]:
    """``--judge-model``: the model that judges (AI feedback, rewards, evaluation).

    With ``multiple`` the flag is given once per judge, and the value is a tuple.
    """
    if multiple:
        given = () if default is None else (default,)
        return option(
            "--judge-model", "judge_model", old=old, multiple=True, default=given, show_default=default, help=help
        )
    return option("--judge-model", "judge_model", old=old, default=default, show_default=default is not None, help=help)


def constitution_option(
    help: str = "Builtin name or YAML file.", *, default: str | None = "default"
) -> Callable[[F], F]:
    """``-c/--constitution``: a builtin constitution name or a YAML file."""
    return click.option("-c", "--constitution", default=default, show_default=default is not None, help=help)


def seed_option(help: str, *, default: int | None = 0) -> Callable[[F], F]:
    """``--seed``."""
    return click.option("--seed", type=int, default=default, show_default=default is not None, help=help)


def batch_size_option(
    help: str = "Requests per forward pass.", *, kind: click.ParamType[int, Any] | type[int] = int
) -> Callable[[F], F]:
    """``--batch-size`` of a model answering or judging (``cai train`` has its own: rows per device and step)."""
    return click.option("--batch-size", type=kind, default=16, show_default=True, help=help)


def chunk_size_option(help: str) -> Callable[[F], F]:
    """``--chunk-size``: how many prompts or rows go through together (and are saved together)."""
    return click.option("--chunk-size", type=int, default=64, show_default=True, help=help)


def dtype_option(func: F) -> F:
    """``--dtype`` of the model's weights."""
    return click.option("--dtype", default="auto", show_default=True, help="auto, bfloat16, float16, float32.")(func)


def device_option(func: F) -> F:
    """``--device`` the model runs on."""
    return click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")(func)


def best_of_options(func: F) -> F:
    """``--best-of N`` and ``--reward-model rm:PATH``: the first answer is the best of N samples (``cai generate``).

    Values and their combinations are checked by the run config (:func:`engine.config.check_best_of`).
    """
    return stack(
        click.option(
            "--best-of",
            type=int,
            default=1,
            show_default=True,
            metavar="N",
            help="Sample N first answers per prompt and keep the one --reward-model scores highest; the "
            "critique rounds start from it, and every sample and its reward are kept in the row. "
            "Needs --temperature above 0 and a preference model. Costs N answer calls per prompt.",
        ),
        click.option(
            "--reward-model",
            metavar="rm:PATH",
            help="Preference model that picks the best of --best-of: rm:PATH, a folder written by `cai train rm` "
            "(e.g. --best-of 4 --reward-model rm:models/rm).",
        ),
    )(func)


def check_shard(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--shard I/N``: checked as it is parsed, so a bad value is a usage error (exit 2)."""
    from engine.records import Shard

    if value is None:
        return None
    try:
        return str(Shard.parse(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


# ------------------------------------------------------------------ the judge's settings (JudgeSettings)


def _judge_principles(help: str, kind: click.ParamType[int, Any] | type[int] = int) -> Callable[[F], F]:
    return click.option("--judge-principles", type=kind, default=1, show_default=True, help=help)


def _judge_cot(func: F) -> F:
    return option(
        "--judge-cot",
        old=("--cot",),
        is_flag=True,
        help="Chain of thought: the judge reasons before it answers (its probabilities are then clamped).",
    )(func)


def _judge_band(func: F) -> F:
    return option(
        "--judge-band",
        old=("--band",),
        type=float,
        nargs=2,
        default=(0.4, 0.6),
        show_default=True,
        help="Chain of thought: clamp each order's probability to LOW HIGH.",
    )(func)


def _min_margin(help: str, kind: click.ParamType[float, Any] | type[float] = float) -> Callable[[F], F]:
    return click.option("--min-margin", type=kind, default=0.02, show_default=True, help=help)


def _pairing(func: F) -> F:
    return click.option(
        "--pairing",
        type=click.Choice(["best-worst", "final-initial"]),
        default="best-worst",
        show_default=True,
        help="Which candidates the judge compares.",
    )(func)


def _judge_aggregate(func: F) -> F:
    return click.option(
        "--judge-aggregate",
        type=click.Choice(["mean", "majority"]),
        default="mean",
        show_default=True,
        help="With several --judge-model: label by their mean probability, or by the share of them voting for it.",
    )(func)


def _judge_cot_reader(func: F) -> F:
    return option(
        "--judge-cot-reader",
        old=("--cot-reader",),
        type=click.Choice(["score", "parse"]),
        default="score",
        show_default=True,
        help="Chain of thought: score (A)/(B) after the reasoning, or parse the verdict the judge wrote.",
    )(func)


def _judge_cot_max_new_tokens(func: F) -> F:
    return option(
        "--judge-cot-max-new-tokens",
        old=("--cot-max-new-tokens",),
        type=click.IntRange(min=1),
        default=160,
        show_default=True,
        help="Chain of thought: most tokens of reasoning.",
    )(func)


def pair_judge_options(func: F) -> F:
    """How the judge labels a run's pairs: ``cai generate`` and ``cai label``.

    Values are checked by the settings model they fill (the run config, or
    :class:`~engine.records.JudgeSettings`), which names the flag.
    """
    return stack(
        _judge_principles("Principles per judged pair."),
        _judge_cot,
        _judge_band,
        _min_margin("Drop pairs with a smaller margin."),
        _pairing,
        _judge_aggregate,
    )(func)


def judge_check_options(func: F) -> F:
    """The judge gate before labelling: ``cai generate`` and ``cai label``."""
    return stack(
        click.option(
            "--judge-check",
            default="builtin",
            show_default=True,
            metavar="builtin|FILE|none",
            help="Check the judge on labelled comparisons before labelling; the accuracy and its interval go "
            "into labels.json and the card, with a warning when it is no better than chance.",
        ),
        click.option(
            "--judge-check-limit",
            type=click.IntRange(min=1),
            help="Comparisons the check uses (default: 16 of the builtin set, every one of a FILE).",
        ),
        click.option(
            "--require-judge-accuracy",
            type=click.FloatRange(0, 1),
            metavar="X",
            help="Refuse to label (exit 3) when the check's accuracy is below X, e.g. 0.7.",
        ),
    )(func)


def comparison_judge_options(func: F) -> F:
    """How the judge is run on labelled comparisons: ``cai judge-eval``.

    No candidates to choose between, so no ``--pairing``; the chain of thought
    can be read either way. Ranges are checked as the flags are parsed.
    """
    return stack(
        _judge_principles(
            "Principles sampled per comparison that names none; their probabilities are averaged.",
            click.IntRange(min=1),
        ),
        _judge_cot,
        _judge_cot_reader,
        _judge_band,
        _judge_cot_max_new_tokens,
        _min_margin(
            "Report how many comparisons reach this margin |2p-1| (labelling drops the rest) and how many are right.",
            click.FloatRange(0, 1),
        ),
    )(func)


JUDGE_FLAGS = {"judge_cot_reader": "cot_reader", "judge_cot_max_new_tokens": "cot_max_new_tokens"}
"""Judge flags that a run config does not hold, by their :class:`~engine.records.JudgeSettings` field."""


def judge_settings(**flags: Any) -> JudgeSettings:
    """The judge's :class:`~engine.records.JudgeSettings` from a command's judge flags (``judge_cot=...``).

    Flags are named as the run config names them (:data:`engine.config.JUDGE_FIELDS`) or
    in :data:`JUDGE_FLAGS`; values the settings refuse are a usage error (exit 2).
    """
    from pydantic import ValidationError

    from engine.config import JUDGE_FIELDS
    from engine.errors import USAGE, UserError
    from engine.records import JudgeSettings

    names = JUDGE_FIELDS | JUDGE_FLAGS
    try:
        return JudgeSettings(**{names[flag]: value for flag, value in flags.items()})
    except ValidationError as exc:
        raise UserError(exc.errors()[0]["msg"], exit_code=USAGE) from None
