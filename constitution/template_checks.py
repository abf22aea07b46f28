"""Checks of user-supplied prompt templates, at validation time.

:func:`check_template` proves a template by rendering it once on sample
values, so a typo in a variable or attribute is found by ``cai principles
validate``, not in the middle of a generation run, and
:func:`check_for_principles` renders it for each real principle. Principles
and examples are typed structurally here, so that the schema, which calls
these checks from its validators, is not imported back.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import jinja2
import jinja2.meta
import jinja2.nodes

from constitution.errors import did_you_mean
from constitution.templating import (
    RefusedTagError,
    TemplateFailure,
    TemplateSandbox,
    compile_template,
    render_template,
    sandbox,
)

TEMPLATE_VARIABLES: dict[str, frozenset[str]] = {
    "critique": frozenset({"conversation", "response", "request", "principle", "examples"}),
    "revision": frozenset({"conversation", "response", "critique", "request", "principle", "examples"}),
    "comparison": frozenset({"conversation", "response_a", "response_b", "question", "principle"}),
}
"""Variables each prompt template may use; anything else is a validation error."""

EXAMPLE_KEYS = ("conversation", "response", "critique", "revision", "needs_change")
"""Keys of each item of ``examples`` in the critique and revision templates."""

TEMPLATE_FILTERS = ("quote", "transcript")
"""Filters that ``engine.prompts`` adds to Jinja2's built-in ones."""

SAMPLE_TEXT = "sample text"
"""What every text variable holds when a template is checked."""


class Example(Protocol):
    """What the templates read of a few-shot example (:class:`constitution.schema.Example`)."""

    @property
    def conversation(self) -> Sequence[Any]: ...
    @property
    def critique(self) -> str: ...
    @property
    def revised(self) -> str: ...
    @property
    def needs_change(self) -> bool: ...


class Principle(Protocol):
    """What the templates read of a principle (:class:`constitution.schema.Principle`).

    Typed structurally so that this module needs nothing from the schema,
    which imports it to check templates at validation time.
    """

    @property
    def id(self) -> str: ...
    @property
    def critique_request(self) -> str: ...
    @property
    def revision_request(self) -> str: ...
    @property
    def comparison_question(self) -> str: ...
    @property
    def examples(self) -> Sequence[Example]: ...
    def model_dump(self) -> dict[str, Any]: ...


def example_values(example: Example) -> dict[str, Any]:
    """A few-shot example as the critique and revision templates see it."""
    chat = [m.model_dump() for m in example.conversation]
    values = (chat[:-1], chat[-1]["content"], example.critique, example.revised, example.needs_change)
    return dict(zip(EXAMPLE_KEYS, values, strict=True))


def _sample(kind: str, principle: Principle | None = None, fields: Sequence[str] = ()) -> dict[str, Any]:
    """Values to render a ``kind`` template with: a real principle's, or stand-ins for ``fields`` of one."""
    text = SAMPLE_TEXT
    chat = [{"role": "user", "content": text}]
    if principle is None:
        values = {name: [text] if name in ("tags", "examples") else text for name in fields}
        examples = [dict.fromkeys(EXAMPLE_KEYS, text) | {"conversation": chat, "needs_change": True}]
        requests = {"critique": text, "revision": text, "comparison": text}
    else:
        values = principle.model_dump()
        examples = [example_values(e) for e in principle.examples]
        requests = {
            "critique": principle.critique_request,
            "revision": principle.revision_request,
            "comparison": principle.comparison_question,
        }
    sample = {
        "conversation": chat,
        "response": text,
        "response_a": text,
        "response_b": text,
        "critique": text,
        "request": requests[kind],
        "question": requests[kind],
        "principle": values,
        "examples": examples,
    }
    return {name: sample[name] for name in TEMPLATE_VARIABLES[kind]}


@functools.cache
def _checker() -> TemplateSandbox:
    """The sandbox that checks templates, with stand-ins for the engine's filters."""
    return sandbox(dict.fromkeys(TEMPLATE_FILTERS, lambda value, *args: str(value)))


def check_template(kind: str, source: str, principle_fields: Sequence[str] = ()) -> None:
    """Raise ``ValueError`` with a readable message if a custom template is unusable.

    Args:
        kind: ``"critique"``, ``"revision"`` or ``"comparison"``.
        source: The template text.
        principle_fields: The fields of a principle (``principle.X`` in the template), given stand-in values.
    """
    env = _checker()
    try:
        ast = env.parse(source)
    except RefusedTagError as exc:
        raise ValueError(f"template line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"Jinja2 syntax error on template line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise ValueError("template is nested too deeply to compile") from None
    known = [name for name in env.filters if ":" not in name]
    for node in ast.find_all(jinja2.nodes.Filter):
        if node.name not in env.filters:
            raise ValueError(
                f"unknown filter {node.name!r}{did_you_mean(node.name, known)} (template line {node.lineno})"
            )
    for test in ast.find_all(jinja2.nodes.Test):
        if test.name not in env.tests:
            raise ValueError(
                f"unknown test {test.name!r}{did_you_mean(test.name, env.tests)} (template line {test.lineno})"
            )
    allowed = TEMPLATE_VARIABLES[kind]
    try:
        undeclared = jinja2.meta.find_undeclared_variables(ast)
    except jinja2.TemplateError as exc:
        raise ValueError(f"template does not compile: {exc.message or exc}") from None
    unknown = sorted(undeclared - allowed - set(env.globals))
    if unknown:
        raise ValueError(
            f"unknown variable {unknown[0]!r}{did_you_mean(unknown[0], allowed)} "
            f"(this template may use: {', '.join(sorted(allowed))})"
        )
    template = compile_template(env, source)
    try:
        render_template(template, _sample(kind, fields=principle_fields))
    except TemplateFailure as exc:
        raise ValueError(exc.describe(" on sample values")) from None


def check_for_principles(templates: Mapping[str, str], principles: Sequence[Principle]) -> Iterator[tuple[str, str]]:
    """Render each custom template for each principle it will be used with.

    Yields:
        ``(kind, message)`` for each template that fails, for the first principle it fails for.
    """
    env = _checker()
    for kind, source in templates.items():
        try:
            template = compile_template(env, source)
        except TemplateFailure as exc:
            yield kind, exc.describe()
            continue
        for p in principles:
            try:
                render_template(template, _sample(kind, p))
            except TemplateFailure as exc:
                yield kind, exc.describe(f" for principle {p.id!r}")
                break
