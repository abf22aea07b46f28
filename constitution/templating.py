"""The sandbox that renders user-supplied prompt templates within a budget.

A constitution may replace the built-in prompt templates with its own. Those
are Jinja2 templates from a file someone else may have written, so they are
rendered in Jinja2's immutable sandbox (no attribute tricks, no mutation) and
within a **budget**, so that no template can hang a run or eat the machine's
memory:

- ``range()`` makes at most :data:`MAX_RANGE` numbers;
- one render takes at most :data:`MAX_STEPS` steps (a step is one loop
  iteration, one call of a function, method, macro or filter) and at most
  :data:`MAX_SECONDS` of CPU time, and calls nest at most :data:`MAX_DEPTH`
  deep (a macro that calls itself is stopped there);
- the text a render writes, in total, and every string or list it builds are
  at most :data:`MAX_OUTPUT` long; operations that multiply sizes (``*``,
  ``replace``, ``join``, ``indent``, widths in ``format`` and ``%``...) are
  refused *before* they build something larger, numbers at most
  :data:`MAX_INT_BITS` bits;
- ``{% include %}``, ``{% import %}`` and ``{% extends %}`` are refused: a
  template in a constitution must be self-contained.

:func:`render_template` turns every way a render can fail (a budget, the
sandbox, ``1/0``, a type error, a missing attribute, deep recursion) into a
:class:`TemplateFailure` with a readable reason and the template line.
:mod:`constitution.template_checks` proves templates at validation time.
"""

from __future__ import annotations

import functools
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Sized
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2 import pass_context
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from constitution.errors import UserError

MAX_REPEAT = 100_000
"""Longest string or list that ``*`` may build in a template."""
MAX_RANGE = 10_000
"""Most numbers one ``range()`` may make."""
MAX_STEPS = 100_000
"""Most steps (loop iterations and calls) in one render."""
MAX_SECONDS = 1.0
"""Most CPU seconds one render may take."""
MAX_DEPTH = 32
"""Deepest nesting of calls (macros calling macros) in one render."""
MAX_OUTPUT = 1_000_000
"""Most characters one render may write, and longest string or list it may build."""
MAX_INT_BITS = 4096
"""Largest integer (in bits) that arithmetic in a template may make."""

# Filters the sandbox inserts into every template (see _Instrument). Their names hold a
# character that Jinja2's lexer never reads as part of a filter name, so no template can name them.
_ITERATE = "budget:iterate"
_CONCAT = "budget:concat"
_WRITE = "budget:write"
_REFUSED_TAGS: dict[type[jinja2.nodes.Node], str] = {
    jinja2.nodes.Extends: "{% extends %}",
    jinja2.nodes.Include: "{% include %}",
    jinja2.nodes.Import: "{% import %}",
    jinja2.nodes.FromImport: "{% from ... import %}",
}


class TemplateBudgetError(SecurityError, UserError):
    """A template went over its budget: too many steps, too much time, output or nesting."""


class RefusedTagError(jinja2.TemplateSyntaxError, UserError):
    """A template uses a tag that constitutions may not use (include, import, extends)."""


class TemplateFailure(UserError, ValueError):
    """A custom template cannot be compiled or rendered.

    Attributes:
        category: ``"syntax"``, ``"sandbox"`` (refused by the sandbox), ``"budget"`` or ``"error"``.
        detail: What went wrong, with the template line where it is known.
    """

    def __init__(self, category: str, detail: str) -> None:
        self.category = category
        self.detail = detail
        super().__init__(self.describe())

    def describe(self, when: str = "") -> str:
        """The failure as one sentence; ``when`` (e.g. ``" for principle 'x'"``) says for what."""
        if self.category == "syntax":
            return self.detail
        if self.category == "sandbox":
            return f"template is not allowed in the sandbox{f' ({when.strip()})' if when else ''}: {self.detail}"
        if self.category == "budget":
            return f"template goes over its budget{when}: {self.detail}"
        return f"template fails{when}: {self.detail}"


# --------------------------------------------------------------------------- the budget of one render


@dataclass
class _Budget:
    steps: int = 0
    written: int = 0
    depth: int = 0
    deadline: float = field(default_factory=lambda: time.thread_time() + MAX_SECONDS)

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateBudgetError(f"more than {MAX_STEPS:,} steps (loop iterations and calls) in one render")
        # thread CPU time: not fooled by other threads or a suspended machine; read every 64 steps (a syscall)
        if not self.steps & 63 and time.thread_time() > self.deadline:
            raise TemplateBudgetError(f"more than {MAX_SECONDS:g} s of CPU time in one render")


_ACTIVE: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _budget() -> _Budget:
    budget = _ACTIVE.get()
    if budget is None:  # a programming error: sandboxed templates render through render_template
        raise SecurityError("a sandboxed template must be rendered with constitution.templating.render_template")
    return budget


def _size(value: Any) -> int | None:
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        return len(value)
    return None


def _refuse_size(size: int, what: str = "builds a value", unit: str = "characters or items") -> None:
    if size > MAX_OUTPUT:
        raise TemplateBudgetError(f"{what} of {size:,} {unit}; at most {MAX_OUTPUT:,}")


def _checked(value: Any) -> Any:
    size = _size(value)
    if size is not None:
        _refuse_size(size, "builds a value")
    return value


def _refuse_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateBudgetError(f"arithmetic makes a number of about {bits:,} bits; at most {MAX_INT_BITS:,}")


def _longest(values: Iterable[Any]) -> int:
    return max((max(len(str(v)), len(repr(v))) for v in values), default=0)


_PERCENT = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def _percent_size(template: str | bytes, values: Any) -> int:
    """An upper bound on the size of ``template % values``."""
    text = template.decode("latin-1") if isinstance(template, bytes) else template
    fields = widths = 0
    for width, precision, conversion in _PERCENT.findall(text):
        if conversion == "%":
            continue
        if "*" in (width, precision):
            raise TemplateBudgetError("'*' widths in % formatting are not allowed in templates; write the number")
        widths += int(width or 0) + int(precision or 0)
        fields += 1
    if isinstance(values, Mapping):
        items: Iterable[Any] = values.values()
    elif isinstance(values, tuple):
        items = values
    else:
        items = (values,)
    return len(text) + widths + fields * _longest(items)


def _format_size(template: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """An upper bound on the size of ``template.format(*args, **kwargs)``."""
    fields = widths = 0
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return 0  # the call itself raises a clearer error
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        if spec and "{" in spec:
            raise TemplateBudgetError("computed widths ('{:{w}}') are not allowed in templates; write the number")
        widths += sum(int(d) for d in re.findall(r"\d+", spec or ""))
        fields += 1
    return len(template) + widths + fields * _longest([*args, *kwargs.values()])


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    s, old, new = str(s), str(old), str(new)
    n = s.count(old) if old else len(s) + 1
    if isinstance(count, int) and count >= 0:
        n = min(n, count)
    return len(s) + n * max(0, len(new) - len(old))


def _join_size(separator: Any, items: Sized) -> int:
    return len(str(separator)) * max(0, len(items) - 1)


def _lines(s: str) -> int:
    return s.count("\n") + s.count("\r") + 1


# Upper bounds on what a filter or str method may build, checked before it runs: only for
# those whose output can be much larger than their input (the rest is checked afterwards).
_FILTER_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": lambda value, d="", attribute=None: _join_size(d, value),
    "center": lambda value, width=80: max(len(str(value)), int(width)),
    "indent": lambda s, width=4, first=False, blank=False: (
        len(str(s)) + (_lines(str(s)) + 1) * (len(width) if isinstance(width, str) else int(width))
    ),
    "wordwrap": lambda s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True: (
        len(str(s)) + (2 * len(str(s)) // max(int(width), 1) + _lines(str(s))) * len(wrapstring or "\n")
    ),
    "format": lambda value, *args, **kwargs: _percent_size(str(value), kwargs or args),
    "tojson": lambda value, indent=None: (
        len(str(value)) * (1 + (len(indent) if isinstance(indent, str) else indent or 0))
    ),
    "batch": lambda value, linecount, fill_with=None: len(value) + int(linecount),
    "slice": lambda value, slices, fill_with=None: len(value) + int(slices),
}
_METHOD_SIZES: dict[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": lambda s, items: _join_size(s, items),
    "center": lambda s, width, fillchar=" ": max(len(s), int(width)),
    "ljust": lambda s, width, fillchar=" ": max(len(s), int(width)),
    "rjust": lambda s, width, fillchar=" ": max(len(s), int(width)),
    "zfill": lambda s, width: max(len(s), int(width)),
    "expandtabs": lambda s, tabsize=8: len(s) + s.count("\t" if isinstance(s, str) else b"\t") * int(tabsize),
    "format": lambda s, *args, **kwargs: _format_size(s, args, kwargs),
    "format_map": lambda s, mapping: _format_size(s, (), mapping),
    "translate": lambda s, table: len(s) * max([1, *(len(v) for v in _values(table) if _size(v) is not None)]),
    "to_bytes": lambda n, length=1, *args, **kwargs: int(length),
}


def _values(table: Any) -> Iterable[Any]:
    return table.values() if isinstance(table, Mapping) else ()


def _materialised(value: Any) -> Any:
    """An iterable as a list (so that its length is known), anything sized as it is."""
    if isinstance(value, Sized) or not isinstance(value, Iterable):
        return value
    budget = _budget()
    items = []
    for item in value:
        budget.tick()
        items.append(item)
    return items


def _estimate(sizes: Callable[..., int], args: Sequence[Any], kwargs: Mapping[str, Any], what: str) -> None:
    try:
        size = sizes(*args, **kwargs)
    except TemplateBudgetError:
        raise
    except Exception:  # wrong arguments: the call itself fails with its own message
        return
    _refuse_size(size, f"{what} would build a value")


def _budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    sizes = _FILTER_SIZES.get(name)
    offset = 1 if hasattr(func, "jinja_pass_arg") else 0  # pass_context & co: the value comes second

    @functools.wraps(func)  # keeps jinja_pass_arg, so Jinja2 still passes the context
    def budgeted(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        if sizes is not None and len(args) > offset:
            args = (*args[:offset], _materialised(args[offset]), *args[offset + 1 :])
            _estimate(sizes, args[offset:], kwargs, f"the {name} filter")
        return _checked(func(*args, **kwargs))

    return budgeted


def _range(*args: int) -> range:
    numbers = range(*args)
    try:
        count = len(numbers)
    except OverflowError:  # more than sys.maxsize numbers
        count = MAX_RANGE + 1
    if count > MAX_RANGE:
        raise TemplateBudgetError(f"range() of more than {MAX_RANGE:,} numbers")
    return numbers


@pass_context
def _iterate(context: jinja2.runtime.Context, iterable: Any) -> Iterator[Any]:
    budget = _budget()
    for item in iterable:
        budget.tick()
        yield item


@pass_context
def _concat(context: jinja2.runtime.Context, parts: Sequence[Any]) -> str:
    texts = [str(p) for p in parts]
    _refuse_size(sum(map(len, texts)), "~ would build a value")
    return "".join(texts)


@pass_context
def _write(context: jinja2.runtime.Context, value: Any) -> str:
    text = str(value)
    budget = _budget()
    budget.written += len(text)
    _refuse_size(budget.written, "writes text", "characters")
    return text


class _Instrument(NodeTransformer):
    """Puts the budget into a template's syntax tree: loops, ``~`` and output go through it."""

    def visit_For(self, node: jinja2.nodes.For) -> jinja2.nodes.Node:
        self.generic_visit(node)
        node.iter = _filter(node.iter, _ITERATE)
        return node

    def visit_Concat(self, node: jinja2.nodes.Concat) -> jinja2.nodes.Node:
        self.generic_visit(node)
        return _filter(jinja2.nodes.List(node.nodes, lineno=node.lineno), _CONCAT)

    def visit_Output(self, node: jinja2.nodes.Output) -> jinja2.nodes.Node:
        self.generic_visit(node)
        node.nodes = [_filter(child, _WRITE) for child in node.nodes]
        return node


def _filter(node: jinja2.nodes.Node, name: str) -> jinja2.nodes.Filter:
    return jinja2.nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class BudgetedTemplate(jinja2.Template):
    """A template of the sandbox: ``render`` keeps to the budget and raises :class:`TemplateFailure`."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        return render_template(self, dict(*args, **kwargs))


class TemplateSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, with a budget for every render (see the module's documentation)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    template_class = BudgetedTemplate

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _range
        self.globals.pop("lipsum", None)  # makes megabytes of filler text in one call; no prompt needs it

    def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
        tree = super()._parse(source, name, filename)
        for node in tree.find_all(tuple(_REFUSED_TAGS)):
            tag = _REFUSED_TAGS[type(node)]
            raise RefusedTagError(
                f"{tag} is not allowed: a constitution's template must be self-contained", node.lineno, name, filename
            )
        instrumented = _Instrument().visit(tree)
        instrumented.set_environment(self)
        return instrumented  # type: ignore[no-any-return]

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        ints = isinstance(left, int) and isinstance(right, int)
        if operator == "**" and isinstance(right, int | float):
            if abs(right) > 64:
                raise SecurityError("exponent too large in a template")
            if isinstance(left, int) and right > 0:
                _refuse_bits(left.bit_length() * int(right))
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                    raise SecurityError(f"a template may not build sequences longer than {MAX_REPEAT:,}")
            if ints:
                _refuse_bits(left.bit_length() + right.bit_length())
        elif operator == "+":
            left_size, right_size = _size(left), _size(right)
            if left_size is not None and right_size is not None:
                _refuse_size(left_size + right_size, "+ would build a value")
            elif ints:
                _refuse_bits(max(left.bit_length(), right.bit_length()) + 1)
        elif operator == "%" and isinstance(left, str | bytes):
            _refuse_size(_percent_size(left, right), "% formatting would build a value")
        return _checked(super().call_binop(context, operator, left, right))

    def call(__self, __context: jinja2.runtime.Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        budget = _budget()
        budget.tick()
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        receiver = getattr(method, "__self__", None)
        sizes = _METHOD_SIZES.get(getattr(method, "__name__", ""))
        if sizes is not None and isinstance(receiver, str | bytes | int) and not isinstance(receiver, bool):
            if method.__name__ == "join" and args:
                args = (_materialised(args[0]), *args[1:])
            _estimate(sizes, (receiver, *args), kwargs, f"{method.__name__}()")
        budget.depth += 1
        try:
            if budget.depth > MAX_DEPTH:
                raise TemplateBudgetError(
                    f"calls nest more than {MAX_DEPTH} deep (does a macro call itself without end?)"
                )
            return _checked(super().call(__context, __obj, *args, **kwargs))
        finally:
            budget.depth -= 1


def sandbox(filters: dict[str, Callable[..., Any]]) -> TemplateSandbox:
    """A sandbox configured like the package templates' environment, with these filters."""
    env = TemplateSandbox(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters.update(filters)
    env.filters = {name: _budgeted_filter(name, func) for name, func in env.filters.items()}
    env.filters.update({_ITERATE: _iterate, _CONCAT: _concat, _WRITE: _write})
    return env


# --------------------------------------------------------------------------- compiling and rendering


def compile_template(env: TemplateSandbox, source: str) -> jinja2.Template:
    """Compile a custom template in the sandbox.

    Raises:
        TemplateFailure: A syntax error, a refused tag, or nesting too deep to compile.
    """
    try:
        return env.from_string(source)
    except RefusedTagError as exc:
        raise TemplateFailure("syntax", f"template line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateFailure("syntax", f"Jinja2 syntax error on template line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise TemplateFailure("syntax", "template is nested too deeply to compile") from None


def render_template(template: jinja2.Template, variables: Mapping[str, Any]) -> str:
    """Render a template of the sandbox within its budget.

    Raises:
        TemplateFailure: However the render failed, with a readable reason and the template line.
    """
    token = _ACTIVE.set(_Budget())
    try:
        return "".join(template.root_render_func(template.new_context(dict(variables))))
    except TemplateFailure:
        raise
    except RecursionError as exc:
        detail = "recursion too deep (does a macro call itself without end?)"
        raise TemplateFailure("budget", detail + _line_of(exc.__traceback__)) from None
    except TemplateBudgetError as exc:
        raise TemplateFailure("budget", f"{exc}{_line_of(exc.__traceback__)}") from None
    except SecurityError as exc:
        raise TemplateFailure("sandbox", f"{exc}{_line_of(exc.__traceback__)}") from None
    except jinja2.TemplateError as exc:
        raise TemplateFailure("error", f"{exc.message or exc}{_line_of(exc.__traceback__)}") from None
    except Exception as exc:  # any other failure of a user's template is the template's, not ours
        raise TemplateFailure("error", f"{type(exc).__name__}: {exc}{_line_of(exc.__traceback__)}") from None
    finally:
        _ACTIVE.reset(token)


def _line_of(tb: TracebackType | None) -> str:
    """`` (template line N)`` for the innermost template frame of a traceback, or ``""``."""
    line = None
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, jinja2.Template):
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    return f" (template line {line})" if line else ""
