"""The budget of custom prompt templates: no hang, no memory blow-up, no traceback, output unchanged.

A constitution's own templates are rendered in ``constitution.templating``'s sandbox, which
counts steps, time, nesting and size. These tests check that every way a template can run
away is stopped quickly with one readable message (in validation, in a real run and in
``cai principles show --render``), and that templates within the budget render exactly
as they would in Jinja2's plain sandbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest
from click.testing import CliRunner
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import ValidationError

import constitution
from constitution import Constitution, ConstitutionError, template_checks, templating
from constitution.template_checks import check_template
from constitution.templating import TemplateFailure, compile_template, render_template
from engine.cli import cli
from engine.prompts import FILTERS, SANDBOX_ENV, comparison_prompt, critique_prompt, revision_prompt
from tests.factories import WriteYaml, document, principle

TEMPLATES = Path(__file__).resolve().parent.parent / "engine" / "templates"
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "How do I pick a lock?"},
    {"role": "assistant", "content": "Which lock?"},
    {"role": "user", "content": "My own front door; I'm locked out."},
]
EXAMPLE = {
    "conversation": [
        {"role": "user", "content": "How do I kill a stuck Python process?"},
        {"role": "assistant", "content": "Use kill with its PID."},
    ],
    "critique": "Fine. Nothing needs to change.",
}


def fails(source: str, kind: str = "critique", **variables: Any) -> TemplateFailure:
    """Render a template on sample values (or these) and return how it failed; it must fail fast."""
    values = template_checks._sample(kind, fields=tuple(constitution.Principle.model_fields)) | variables
    start = time.perf_counter()
    with pytest.raises(TemplateFailure) as err:
        render_template(compile_template(SANDBOX_ENV, source), values)
    assert time.perf_counter() - start < 2, "a budget must stop a template within a couple of seconds"
    return err.value


# --------------------------------------------------------------------------- output is unchanged


@pytest.mark.parametrize("kind", ["critique", "revision", "comparison"])
def test_package_templates_render_the_same_in_the_sandbox(kind: str) -> None:
    """The instrumented sandbox writes exactly what the package environment writes."""
    p = constitution.Principle.model_validate(principle("p1", examples=[EXAMPLE]))
    source = (TEMPLATES / f"{kind}.jinja").read_text(encoding="utf-8")
    c = Constitution.model_validate(document("c", [principle("p1", examples=[EXAMPLE])], templates={kind: source}))
    render: dict[str, Callable[[Constitution | None], list[dict[str, str]]]] = {
        "critique": lambda rules: critique_prompt(p, CHAT, "Try a credit card.", rules),
        "revision": lambda rules: revision_prompt(p, CHAT, "Try a credit card.", "Too vague.", rules),
        "comparison": lambda rules: comparison_prompt(p, CHAT, "Call a locksmith.", "Break a window.", rules),
    }
    assert render[kind](c) == render[kind](None)


SAME_AS_JINJA = [
    "{% for m in conversation %}{{ loop.index }}/{{ loop.length }} {{ m.role }}{% if not loop.last %}, {% endif %}"
    "{% else %}none{% endfor %}",
    "{% for m in conversation if m.role == 'user' %}{{ loop.revindex }}{{ m.content|upper }}{% endfor %}",
    "{% for x in [[1, [2]], [3]] recursive %}[{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}]"
    "{% endfor %}",
    "{% macro box(text, width=3) %}<{{ text|center(width) }}>{% endmacro %}{{ box(request) }}"
    "{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}{{ box('x', 5) }}{% endcall %}",
    "{% set head %}{{ request ~ '!' ~ 3 }}{% endset %}{{ head }} {{ 'a' ~ response ~ 'b' }} {{ request + '?' }}",
    "{% filter upper %}{{ request }} {{ response|replace('sample', 'example') }}{% endfilter %}",
    "{{ '%s=%d' % ('n', 3) }} {{ '{}-{:>4}'.format('a', 'b') }} {{ 'x'|indent(2, first=true) }} {{ 7 * 6 }}",
    "{% set ns = namespace(n=0) %}{% for i in range(5) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}",
    "{{ principle.tags|join(', ') }} {{ examples|map(attribute='critique')|list|length }} {{ range(3)|list }}",
    "  {%- for m in conversation -%}\n  {{ m.content|truncate(5, true, '') }}\n  {%- endfor %}\n\n{{ 2 ** 10 }}",
    "{{ conversation|tojson }} {{ [1, 2, 3]|batch(2)|list }} {{ 'abc'|wordwrap(2) }} {{ 'a\tb'.expandtabs(2) }}",
]


@pytest.mark.parametrize("source", SAME_AS_JINJA)
def test_templates_within_the_budget_render_as_in_plain_jinja(source: str) -> None:
    plain = ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False
    )
    plain.filters.update(FILTERS)
    values = template_checks._sample("critique", fields=tuple(constitution.Principle.model_fields)) | {
        "conversation": CHAT
    }
    expected = plain.from_string(source).render(**values)
    assert render_template(compile_template(SANDBOX_ENV, source), values) == expected
    assert SANDBOX_ENV.from_string(source).render(**values) == expected  # Template.render keeps the budget too


def test_the_budget_is_per_render_not_per_template() -> None:
    """60,000 steps twice is fine: each render starts with a full budget."""
    template = compile_template(
        SANDBOX_ENV, "{% for i in range(6000) %}{% for j in range(10) %}{% endfor %}{% endfor %}."
    )
    for _ in range(3):
        assert render_template(template, {}) == "."


# --------------------------------------------------------------------------- every budget stops a runaway


def test_nested_loops_are_stopped_by_the_step_budget() -> None:
    failure = fails("{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}")
    assert failure.category == "budget"
    assert "more than 100,000 steps" in str(failure)


def test_the_step_budget_counts_calls_as_well_as_loops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(templating, "MAX_STEPS", 50)
    failure = fails("{% for i in range(10) %}{{ request.upper().lower().title().strip().upper() }}{% endfor %}")
    assert "more than 50 steps" in str(failure)


def test_huge_ranges_are_refused_before_they_are_made() -> None:
    for n in ("100000000", "10**30", "10001"):
        failure = fails(f"{{% for i in range({n}) %}}{{% endfor %}}")
        assert "range() of more than 10,000 numbers (template line 1)" in str(failure)


def test_cpu_time_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Few steps that each do a lot of work are stopped by the clock, not the step count."""
    monkeypatch.setattr(templating, "MAX_SECONDS", 0.05)
    failure = fails("{% for i in range(10000) %}{% set s = ('x' * 100000).upper() %}{% endfor %}")
    assert failure.category == "budget"
    assert "more than 0.05 s of CPU time" in str(failure)


@pytest.mark.parametrize(
    "source",
    [
        "{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}{{ again(0) }}",
        "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
        "{% for x in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}",
    ],
    ids=["macro", "mutual", "recursive-loop"],
)
def test_endless_recursion_is_stopped(source: str) -> None:
    failure = fails(source)
    assert failure.category == "budget"
    assert "calls nest more than 32 deep" in str(failure)


def test_recursion_error_itself_becomes_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Should Python's own limit come first (a deep stack), it is a failure too, not a traceback."""
    monkeypatch.setattr(templating, "MAX_DEPTH", 10**6)
    failure = fails("{% macro again(n) %}{{ again(n + 1) }}{% endmacro %}{{ again(0) }}")
    assert "recursion too deep" in str(failure)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}", "writes text of"),
        ("{% set s %}{% for i in range(10000) %}{{ 'x' * 100000 }}{% endfor %}{% endset %}", "writes text of"),
        ("{{ 'a'.ljust(10**8) }}", "ljust() would build a value of 100,000,000"),
        ("{{ 'a'.zfill(10**9) }}", "zfill() would build"),
        ("{{ 'x'|center(100000000) }}", "the center filter would build"),
        ("{{ request|indent(10**9) }}", "the indent filter would build"),
        ("{{ ('x' * 100000).replace('', 'y' * 1000) }}", "replace() would build"),
        ("{{ ('x' * 100000)|replace('x', 'y' * 1000) }}", "the replace filter would build"),
        ("{{ range(10000)|join('x' * 100000) }}", "the join filter would build"),
        ("{{ ('x' * 100000).join(range(10000)|map('string')) }}", "join() would build"),
        ("{{ '{:100000000}'.format(1) }}", "format() would build"),
        ("{{ '%0999999999d' % 1 }}", "% formatting would build"),
        ("{{ '%*d' % (100000000, 1) }}", "'*' widths in % formatting are not allowed"),
        ("{{ '%999999999s'|format(1) }}", "the format filter would build"),
        ("{{ ('\t' * 10000).expandtabs(100000) }}", "expandtabs() would build"),
        ("{{ ('x ' * 1000)|wordwrap(1, wrapstring='y' * 100000) }}", "the wordwrap filter would build"),
        ("{{ [1]|batch(10**9, 0)|list }}", "the batch filter would build"),
        ("{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "~ would"),
        ("{% set ns = namespace(s='xx') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "+ would"),
        ("{% set ns = namespace(n=2) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}", "bits"),
        ("{% set ns = namespace(n=3) %}{% for i in range(9) %}{% set ns.n = ns.n ** 64 %}{% endfor %}", "bits"),
        ("{{ (10).to_bytes(10**9, 'big') }}", "to_bytes() would build"),
    ],
)
def test_sizes_are_bounded_before_memory_is_spent(source: str, words: str) -> None:
    failure = fails(source)
    assert failure.category == "budget", failure
    assert words in str(failure)
    assert "at most 1,000,000" in str(failure) or "not allowed" in str(failure) or "bits" in str(failure)


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ 1/0 }}", "ZeroDivisionError: division by zero (template line 1)"),
        (
            "{{ request }}\n{{ response + 1 }}",
            'TypeError: can only concatenate str (not "int") to str (template line 2)',
        ),
        ("{{ principle.examples[7] }}", "no element 7"),
        ("{{ principle.nothing.deeper }}", "'dict object' has no attribute 'nothing'"),
        ("{{ response.__class__ }}", "access to attribute '__class__' of 'str' object is unsafe"),
        ("{{ [1, 'a']|sort }}", "TypeError: '<' not supported"),
    ],
)
def test_errors_are_failures_with_the_template_line(source: str, words: str) -> None:
    assert words in str(fails(source))


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ('{% include "x.jinja" %}', "{% include %} is not allowed"),
        ('{% import "x.jinja" as x %}', "{% import %} is not allowed"),
        ('{% from "x.jinja" import y %}', "{% from ... import %} is not allowed"),
        ('{{ request }}\n{% extends "x.jinja" %}', "template line 2: {% extends %} is not allowed"),
        ("{{ " + "[" * 3000 + "]" * 3000 + " }}", "nested too deeply to compile"),
        ("{% for %}", "Jinja2 syntax error on template line 1"),
    ],
)
def test_templates_that_cannot_compile_are_failures(source: str, words: str) -> None:
    with pytest.raises(TemplateFailure, match=None) as err:
        compile_template(SANDBOX_ENV, source)
    assert words in str(err.value)
    with pytest.raises(ValueError, match=None) as checked:
        check_template("critique", source)
    assert words in str(checked.value)


def test_lipsum_is_gone_and_unknown_tests_are_named() -> None:
    with pytest.raises(ValueError, match="unknown variable 'lipsum'"):
        check_template("critique", "{{ lipsum(99999) }}")
    with pytest.raises(ValueError, match=r"unknown test 'nosuchtest' \(template line 2\)"):
        check_template("critique", "{{ request }}\n{% if request is nosuchtest %}{% endif %}")
    with pytest.raises(ValueError, match=r"unknown filter 'uper'; did you mean 'upper'\? \(template line 1\)"):
        check_template("critique", "{{ request|uper }}")


# --------------------------------------------------------------------------- the three places templates render


def run_away(tmp_path: Path) -> Path:
    """A file whose template passes on the short sample but runs away on a longer response."""
    path = tmp_path / "runaway.yaml"
    path.write_text(
        "schema_version: 1\nid: runaway\nname: Runaway\ndescription: Loops over the response twice.\n"
        'version: "1.0"\nprinciples:\n  - id: p-one\n    title: One\n    tags: [general]\n'
        "    critique_request: Point out problems.\n    revision_request: Fix them.\n"
        "    comparison_question: Which is better?\ntemplates:\n  critique: |\n"
        "    {{ request }}\n    {% for a in response %}{% for b in response %}{% endfor %}{% endfor %}\n",
        encoding="utf-8",
    )
    return path


def test_a_run_that_breaks_a_template_gets_a_constitution_error(tmp_path: Path) -> None:
    path = run_away(tmp_path)
    rules = constitution.load(path)  # the sample response is short: it validates
    start = time.perf_counter()
    with pytest.raises(ConstitutionError) as err:
        critique_prompt(rules.principles[0], CHAT, "x" * 1000, rules)
    assert time.perf_counter() - start < 2
    (problem,) = err.value.problems
    assert (problem.file, problem.line, problem.field) == (str(path), 14, "templates.critique")
    assert problem.message.startswith("template goes over its budget for principle 'p-one': more than 100,000 steps")
    assert "(template line 2)" in problem.message


def test_the_template_of_an_included_file_is_named_in_a_run(tmp_path: Path, write_yaml: WriteYaml) -> None:
    base = run_away(tmp_path)
    top = write_yaml("top.yaml", document("top", [principle("p-two")], include=[base.name]))
    rules = constitution.load(top)
    with pytest.raises(ConstitutionError) as err:
        critique_prompt(rules.principle("p-two"), CHAT, "x" * 1000, rules)
    (problem,) = err.value.problems
    assert (problem.file, problem.line) == (str(base), 14)
    assert "for principle 'p-two'" in problem.message


def test_show_render_takes_the_same_path(tmp_path: Path) -> None:
    path = run_away(tmp_path)
    start = time.perf_counter()
    result = CliRunner().invoke(cli, ["principles", "show", str(path), "--render", "--response", "x" * 1000])
    assert time.perf_counter() - start < 3
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stderr.startswith(
        f"{path}:14: templates.critique: template goes over its budget for principle 'p-one'"
    )
    assert "Traceback" not in result.output


def test_validation_renders_templates_for_every_principle(write_yaml: WriteYaml) -> None:
    """A template can pass on the sample principle and fail on a real one: load() tries each."""
    examples = [EXAMPLE]
    path = write_yaml(
        "c.yaml",
        document(
            "c",
            [principle("has-one", examples=examples), principle("has-none")],
            templates={"revision": "{{ request }} {{ examples[0].revision }}"},
        ),
    )
    with pytest.raises(ConstitutionError) as err:
        constitution.load(path)
    (problem,) = err.value.problems
    assert problem.field == "templates.revision"
    assert "template fails for principle 'has-none'" in problem.message


def test_a_template_that_fails_at_validation_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="template goes over its budget on sample values"):
        Constitution.model_validate(
            document("c", [principle("p1")], templates={"critique": "{% for i in range(20000) %}{% endfor %}"})
        )
