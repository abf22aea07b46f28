"""The sandbox that renders user-supplied prompt templates, and their checks.

A constitution may replace the built-in prompt templates with its own. Those
are Jinja2 templates from a file someone else may have written, so they are
rendered in Jinja2's immutable sandbox (no attribute tricks, no mutation) with
two more limits: no huge repetition (``'x' * 10**10``) and no huge powers.
``check_template`` proves a template at validation time by rendering it once
on sample values, so a typo in a variable or attribute is found by
``cai principles validate``, not in the middle of a generation run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from constitution.errors import did_you_mean

MAX_REPEAT = 100_000
"""Longest string or list that ``*`` may build in a template."""

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


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, also refusing huge ``*`` repetitions and ``**`` powers."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError("exponent too large in a template")
        if operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                    raise SecurityError(f"a template may not build sequences longer than {MAX_REPEAT:,}")
        return super().call_binop(context, operator, left, right)


def sandbox(filters: dict[str, Callable[..., Any]]) -> TemplateSandbox:
    """A sandbox configured like the package templates' environment, with these filters."""
    env = TemplateSandbox(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(filters)
    return env


def _sample(kind: str) -> dict[str, Any]:
    from constitution.schema import Principle  # a cycle at module level: schema imports this lazily

    text = "sample text"
    chat = [{"role": "user", "content": text}]
    principle = {name: [text] if name in ("tags", "examples") else text for name in Principle.model_fields}
    values = {
        "conversation": chat,
        "response": text,
        "response_a": text,
        "response_b": text,
        "critique": text,
        "request": text,
        "question": text,
        "principle": principle,
        "examples": [dict.fromkeys(EXAMPLE_KEYS, text) | {"conversation": chat, "needs_change": True}],
    }
    return {name: values[name] for name in TEMPLATE_VARIABLES[kind]}


def check_template(kind: str, source: str) -> None:
    """Raise ``ValueError`` with a readable message if a custom template is unusable.

    Args:
        kind: ``"critique"``, ``"revision"`` or ``"comparison"``.
        source: The template text.
    """
    env = sandbox(dict.fromkeys(TEMPLATE_FILTERS, lambda value, *args: str(value)))
    try:
        ast = env.parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"Jinja2 syntax error on template line {exc.lineno}: {exc.message}") from None
    allowed = TEMPLATE_VARIABLES[kind]
    unknown = sorted(jinja2.meta.find_undeclared_variables(ast) - allowed - set(env.globals))
    if unknown:
        raise ValueError(
            f"unknown variable {unknown[0]!r}{did_you_mean(unknown[0], allowed)} "
            f"(this template may use: {', '.join(sorted(allowed))})"
        )
    for node in ast.find_all(jinja2.nodes.Filter):
        if node.name not in env.filters:
            known = [*TEMPLATE_FILTERS, *env.filters]
            raise ValueError(f"unknown filter {node.name!r}{did_you_mean(node.name, known)}")
    try:
        env.from_string(source).render(**_sample(kind))
    except SecurityError as exc:
        raise ValueError(f"template is not allowed in the sandbox: {exc}") from None
    except jinja2.TemplateError as exc:
        raise ValueError(f"template fails on sample values: {exc}") from None
