"""Rendering principles into the prompts the models see.

One strict Jinja2 environment renders the package templates in
``engine/templates``; templates a constitution supplies are rendered in Jinja2's
immutable sandbox, within a budget of steps, time and output
(``constitution.templating``): one that fails raises a ``ConstitutionError``
naming its file, the template and the principle. Principle texts are values passed INTO templates and are
never rendered themselves. Model output quoted in a prompt goes through the
``quote`` filter, which delimits it and neutralises the delimiters inside it,
so a quoted response cannot close its own quotation and talk to the model.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2

from constitution.errors import ConstitutionError, Problem
from constitution.schema import Constitution, Message, Principle
from constitution.template_checks import TEMPLATE_VARIABLES, example_values
from constitution.templating import TemplateFailure, compile_template, render_template, sandbox

Chat = list[dict[str, str]]
"""A conversation in the usual chat format: ``[{"role": ..., "content": ...}]``."""

_RUNS = re.compile(r"<{3,}|>{3,}")


def neutralise(text: str) -> str:
    """Break every run of three or more ``<`` or ``>`` so quoted text cannot fake a delimiter."""
    if "<<<" not in text and ">>>" not in text:  # the common case, without the regex
        return text
    return _RUNS.sub(lambda m: " ".join(m.group()), text)


def quote(text: str, label: str = "TEXT") -> str:
    """Delimit untrusted text as ``<<<LABEL>>> ... <<<END LABEL>>>``."""
    return f"<<<{label}>>>\n{neutralise(text)}\n<<<END {label}>>>"


def transcript(conversation: Sequence[Mapping[str, str]]) -> str:
    """A conversation as ``User: ...`` / ``Assistant: ...`` paragraphs, delimiters neutralised."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    return "\n\n".join(f"{names.get(m['role'], m['role'])}: {neutralise(m['content'])}" for m in conversation)


FILTERS: dict[str, Callable[..., str]] = {"quote": quote, "transcript": transcript}

PACKAGE_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("engine", "templates"),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
    autoescape=False,
    auto_reload=False,  # package templates don't change while running; skips a stat() per render
)
PACKAGE_ENV.filters.update(FILTERS)
SANDBOX_ENV = sandbox(FILTERS)


@functools.lru_cache(maxsize=64)
def _sandboxed(source: str) -> jinja2.Template:
    return compile_template(SANDBOX_ENV, source)


def _render(constitution: Constitution | None, kind: str, principle_id: str, **variables: Any) -> Chat:
    assert set(variables) == TEMPLATE_VARIABLES[kind], f"template variables drifted for {kind}"
    custom = getattr(constitution.templates, kind) if constitution and constitution.templates else None
    if constitution is not None and custom is not None:
        try:
            text = render_template(_sandboxed(custom), variables)
        except TemplateFailure as exc:
            # validation rendered it for every principle; real conversations can still break it
            file, line = constitution.template_source(kind) or (f"constitution {constitution.id}", None)
            message = exc.describe(f" for principle {principle_id!r}")
            raise ConstitutionError([Problem(file, message, line, f"templates.{kind}")]) from None
    else:
        # Package templates use no globals: a shared context skips merging them on every render,
        # which is most of Jinja's per-call cost when thousands of prompts are rendered.
        template = PACKAGE_ENV.get_template(f"{kind}.jinja")
        text = "".join(template.root_render_func(template.new_context(variables, shared=True)))
    return [{"role": "user", "content": text.strip()}]


_PRINCIPLE_VALUES: dict[int, tuple[Principle, dict[str, Any], list[dict[str, Any]]]] = {}


def _principle_values(principle: Principle) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The principle and its examples as template values, computed once per principle object."""
    cached = _PRINCIPLE_VALUES.get(id(principle))
    if cached is None or cached[0] is not principle:  # ids can be reused after garbage collection
        if len(_PRINCIPLE_VALUES) > 4096:
            _PRINCIPLE_VALUES.clear()
        cached = (principle, principle.model_dump(), [example_values(e) for e in principle.examples])
        _PRINCIPLE_VALUES[id(principle)] = cached
    return cached[1], cached[2]


def _chat(conversation: Sequence[Message | Mapping[str, str]]) -> Chat:
    return [
        m.model_dump() if isinstance(m, Message) else {"role": m["role"], "content": m["content"]} for m in conversation
    ]


def critique_prompt(
    principle: Principle,
    conversation: Sequence[Message | Mapping[str, str]],
    response: str,
    constitution: Constitution | None = None,
) -> Chat:
    """The critic's prompt: find where ``response`` breaks ``principle``.

    Args:
        principle: The principle sampled for this round.
        conversation: The conversation before the response (ends with a user turn).
        response: The assistant response to critique.
        constitution: Supplies custom templates, if it has any.

    Raises:
        ConstitutionError: A custom template failed for these values (each prompt function alike).
    """
    values, examples = _principle_values(principle)
    return _render(
        constitution,
        "critique",
        principle.id,
        conversation=_chat(conversation),
        response=response,
        request=principle.critique_request,
        principle=values,
        examples=examples,
    )


def revision_prompt(
    principle: Principle,
    conversation: Sequence[Message | Mapping[str, str]],
    response: str,
    critique: str,
    constitution: Constitution | None = None,
) -> Chat:
    """The policy's prompt: rewrite ``response`` to fix what ``critique`` found."""
    values, examples = _principle_values(principle)
    return _render(
        constitution,
        "revision",
        principle.id,
        conversation=_chat(conversation),
        response=response,
        critique=critique,
        request=principle.revision_request,
        principle=values,
        examples=examples,
    )


def comparison_prompt(
    principle: Principle,
    conversation: Sequence[Message | Mapping[str, str]],
    response_a: str,
    response_b: str,
    constitution: Constitution | None = None,
) -> Chat:
    """The judge's prompt: which of two responses better follows ``principle``; answer (A) or (B)."""
    return _render(
        constitution,
        "comparison",
        principle.id,
        conversation=_chat(conversation),
        response_a=response_a,
        response_b=response_b,
        question=principle.comparison_question,
        principle=_principle_values(principle)[0],
    )
