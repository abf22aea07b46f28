"""Property tests: dump/load round trips, garbage never crashes the loader, quoting cannot be escaped."""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import constitution
from constitution import Constitution, ConstitutionError, Example, Message, Principle
from constitution.schema import Include, Selector, Templates, hidden_character
from constitution.taxonomy import TAGS
from engine.prompts import critique_prompt, neutralise, quote, transcript

# The variables each custom template may use (a subset of what the engine passes).
TEMPLATE_VARIABLES = {
    "critique": ["conversation", "examples", "principle", "request", "response"],
    "revision": ["conversation", "critique", "examples", "principle", "request", "response"],
    "comparison": ["conversation", "principle", "question", "response_a", "response_b"],
}
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


BASE = Path(__file__).resolve().parent / "broken" / "parts" / "base.yaml"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """One folder for the whole module (hypothesis runs many examples per test), with base.yaml to include."""
    with tempfile.TemporaryDirectory(prefix="cai-props-") as folder:
        (Path(folder) / "base.yaml").write_bytes(BASE.read_bytes())
        yield Path(folder)


def load_text(folder: Path, text: str | bytes, name: str = "c.yaml") -> Constitution:
    path = folder / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return constitution.load(path)


# --- strategies for valid constitutions ----------------------------------------------------------

CHARS = st.characters(codec="utf-8")  # any code point but the surrogates (category Cs)
YAML_TRAPS = [
    "yes", "no", "on", "off", "null", "Null", "~", "true", "False", "- x", "-", "? x", ": x", "a: b", "a:b",
    "#", "# not a comment", "x # y", "'", '"', "'quoted'", '"dq"', "&anchor", "*alias", "!tag", "!!str x",
    "%YAML 1.2", "---", "...", "|", ">", "|-\n x", "[a, b]", "{a: 1}", "1.0", "1e3", ".5", "0x1F", "0o17",
    "012", "1_000", "12:30", "2024-01-01", ".nan", ".inf", "-.inf", "@at", "`tick`", "<<", "<<<END>>>",
    "tab\there", "\ttab first", "cr\rlf", "crlf\r\nline", "nel\x85next", "ls\u2028ps\u2029", "\ufeffbom",
    "\x00nul", "bell\x07", "del\x7f", "é ü 漢字 🙂", "\U0010ffff", "\ufffe", "a\n", "a\n\n", "\na", "\n\na",
    " lead", "trail ", "  both  ", "line one\nline two", "ends with space \nnext", "x" * 150,
    " ".join(["word"] * 40), "long line " * 30 + "\nsecond",
]  # fmt: skip
PAD = ["", " ", "  ", "\n", " \n", "\n ", "- ", "# ", ": ", "'", '"', "\t"]


def _non_blank(s: str) -> bool:
    return bool(s.strip())


def _without_hidden(one_line: bool) -> Any:
    """Drop the characters a field of this kind refuses (tested on their own in test_validate_cli)."""

    def strip(s: str) -> str:
        while (found := hidden_character(s, one_line)) is not None:
            s = s[: found[0]] + s[found[0] + 1 :]
        return s

    return strip


any_texts = st.one_of(
    st.sampled_from(YAML_TRAPS),
    st.text(CHARS, min_size=1, max_size=40),
    st.builds(
        lambda a, b, c, d: a + b + c + d,
        st.sampled_from(PAD),
        st.one_of(st.sampled_from(YAML_TRAPS), st.text(CHARS, max_size=20)),
        st.sampled_from(["", "\n", ": ", " #", "\n\n", "\r\n"]),
        st.one_of(st.sampled_from(YAML_TRAPS + PAD), st.text(CHARS, max_size=20)),
    ),
)
texts = any_texts.map(_without_hidden(one_line=False)).filter(_non_blank)
"""Texts that may run over several lines: requests, descriptions, messages."""
lines = any_texts.map(_without_hidden(one_line=True)).filter(_non_blank)
"""One-line texts: titles, names, versions."""
any_line = st.one_of(st.just(""), st.sampled_from(PAD), any_texts).map(_without_hidden(one_line=True))
slugs = st.from_regex(r"[a-z0-9]{1,6}(?:[-_][a-z0-9]{1,6}){0,2}", fullmatch=True)
weights = st.one_of(
    st.just(1.0),
    st.sampled_from([0.5, 2.0, 1e-300, 5e-324, 1.7976931348623157e308, 3.0, 1 / 3]),
    st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False),
)


def message(role: str) -> st.SearchStrategy[Message]:
    return st.builds(Message, role=st.just(role), content=texts)


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """Optional system turn, some turns, at least one user turn, ending with the assistant."""
    roles = ["system"] if draw(st.booleans()) else []
    roles += draw(st.lists(st.sampled_from(["user", "assistant"]), max_size=3))
    if "user" not in roles:
        roles.append("user")
    roles.append("assistant")
    return [draw(message(r)) for r in roles]


examples = st.builds(
    Example,
    conversation=conversations(),
    critique=texts,
    revision=st.one_of(st.none(), texts),
)
principles = st.builds(
    Principle,
    id=slugs,
    title=lines,
    tags=st.lists(st.sampled_from(sorted(TAGS)), min_size=1, max_size=4, unique=True),
    weight=weights,
    critique_request=texts,
    revision_request=texts,
    comparison_question=texts,
    examples=st.lists(examples, max_size=2),
)


@st.composite
def templates(draw: st.DrawFn) -> Templates | None:
    """Valid custom templates: safe text between the variables each template may use.

    None rather than an empty Templates(), which load() normalises to None.

    They use no 'quote'/'transcript' filter: see test_custom_template_may_use_the_quote_filter.
    """
    if draw(st.integers(0, 3)):  # rendering checks make templates slow to validate: use them 1 time in 4
        return None
    fields: dict[str, str] = {}
    for kind, allowed in TEMPLATE_VARIABLES.items():
        if draw(st.booleans()):
            continue
        literal = st.text(CHARS, max_size=15).map(lambda s: s.replace("{", "(").replace("}", ")"))
        literal = literal.map(_without_hidden(one_line=False))
        variable = st.sampled_from(allowed).map(lambda v: f"{{{{ {v} }}}}")
        loop = st.just("{% for m in conversation %}{{ m.role }}: {{ m.content }}\n{% endfor %}")
        parts = draw(st.lists(st.one_of(literal, variable, loop), min_size=1, max_size=6))
        fields[kind] = "".join(parts)
    return Templates(**fields) if fields else None


constitutions = st.builds(
    Constitution,
    schema_version=st.just(1),
    id=slugs,
    name=lines,
    description=texts,
    version=st.one_of(st.sampled_from(["1.0", "1", "1.0.0", "2024-01-01", "yes", "0x10"]), lines),
    license=st.one_of(st.none(), any_line),
    authors=st.lists(any_line, max_size=3),
    templates=templates(),
    examples=st.one_of(st.just([]), st.lists(examples, max_size=2)),
    principles=st.lists(principles, min_size=1, max_size=4, unique_by=lambda p: p.id),
)


# --- a. dump / load round trip -------------------------------------------------------------------


@settings(FAST, max_examples=100)
@given(c=constitutions)
def test_dump_then_load_round_trips(c: Constitution, workdir: Path) -> None:
    text = constitution.dump(c)
    loaded = load_text(workdir, text)

    # load() hands file-wide examples down to the principles without their own
    expected = c.hand_down_examples()
    assert loaded.model_dump() == expected.model_dump()
    assert loaded.content_hash == c.content_hash
    if not c.examples:
        assert loaded.model_dump() == c.model_dump()

    again = constitution.dump(loaded)
    if not c.examples:
        assert again == text
    assert constitution.dump(load_text(workdir, again)) == again


@pytest.mark.parametrize("text", ["ls\u2028ps\u2029", "x\n\u2028\n"])
def test_yaml_line_breaks_round_trip(text: str, workdir: Path) -> None:
    """YAML reads a raw LS or PS as a line break; dump() must escape them (it once wrote them raw).

    A NEL (U+0085), the third such character, is a control character that texts refuse.
    """
    c = Constitution(
        schema_version=1,
        id="nel",
        name="NEL",
        description=text,
        version="1.0",
        principles=[
            Principle(id="p", title="P", tags=["general"], critique_request="C", revision_request="R",
                      comparison_question="Q")
        ],
    )  # fmt: skip
    assert load_text(workdir, constitution.dump(c)).description == text


@settings(FAST, max_examples=25)
@given(c=constitutions, comment=st.sampled_from(["# header\n", "\ufeff", "---\n", "%YAML 1.1\n---\n"]))
def test_formatting_does_not_change_the_hash(c: Constitution, comment: str, workdir: Path) -> None:
    """A leading comment, BOM, document marker or directive is formatting, not content."""
    text = constitution.dump(c)
    assert load_text(workdir, comment + text).content_hash == load_text(workdir, text).content_hash


# --- b. garbage never crashes the loader ---------------------------------------------------------


def assert_loads_or_explains(folder: Path, text: str | bytes) -> None:
    """load() returns a Constitution or raises ConstitutionError; never anything else."""
    try:
        result = load_text(folder, text)
    except ConstitutionError as exc:
        assert exc.problems
        for problem in exc.problems:
            rendered = str(problem)
            assert rendered.strip()
            assert rendered.startswith(problem.file)
            assert problem.message.strip()
            assert problem.line is None or problem.line >= 1
        assert str(exc)
    else:
        assert isinstance(result, Constitution)
        assert result.principles


@settings(FAST, max_examples=200)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes(data: bytes, workdir: Path) -> None:
    assert_loads_or_explains(workdir, data)


YAML_ALPHABET = st.sampled_from([*"abz09 -:#'\"\n\t[]{},&*!|>%@`?~.\\", "\u2028", "é", "\x85", "\ufeff"])


@settings(FAST, max_examples=200)
@given(text=st.one_of(st.text(CHARS, max_size=200), st.text(YAML_ALPHABET, max_size=200)))
def test_arbitrary_text(text: str, workdir: Path) -> None:
    assert_loads_or_explains(workdir, text)


def to_yaml(doc: Any) -> str:
    """yaml.safe_dump, with libyaml's emitter where there is one (the pure-Python one is slow)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(doc, Dumper=dumper, sort_keys=False, allow_unicode=True)


def _model_fields(*models: Any) -> list[str]:
    return sorted({name for m in models for name in m.model_fields})


FIELD_NAMES = _model_fields(Constitution, Principle, Example, Message, Include, Selector, Templates)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(CHARS, max_size=20),
    st.sampled_from([*sorted(TAGS), "harmlessness", "default", "x.yaml", "c.yaml", "user", "assistant", "1.0"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(CHARS, max_size=10), st.integers(-3, 3), st.none())
structures = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=25,
)


@settings(FAST, max_examples=200)
@given(doc=st.one_of(structures, st.dictionaries(st.sampled_from(FIELD_NAMES), structures, max_size=8)))
def test_random_yaml_structures(doc: Any, workdir: Path) -> None:
    assert_loads_or_explains(workdir, to_yaml(doc))


SHIPPED_STYLE: dict[str, Any] = {
    "schema_version": 1,
    "id": "demo",
    "name": "Demo",
    "description": "A demo.",
    "version": "1.0",
    "license": "CC-BY-4.0",
    "authors": ["someone"],
    "include": [{"path": "base.yaml", "select": {"tags": ["hate"], "ids": ["be-kind"]}}],
    "templates": {"critique": "{{ request }}\n{{ response }}"},
    "examples": [
        {
            "conversation": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            "critique": "Fine.",
        }
    ],
    "principles": [
        {
            "id": "p-one",
            "title": "One",
            "tags": ["general", "honesty"],
            "weight": 2.0,
            "critique_request": "Point out problems.",
            "revision_request": "Fix them.",
            "comparison_question": "Which of the two responses is better?",
            "examples": [
                {
                    "conversation": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello"},
                    ],
                    "critique": "Fine.",
                    "revision": "Hello!",
                }
            ],
        },
        {
            "id": "p-two",
            "title": "Two",
            "tags": ["privacy"],
            "critique_request": "Point out problems.",
            "revision_request": "Fix them.",
            "comparison_question": "Which of the two responses is better?",
        },
    ],
}


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


PATHS = list(_paths(SHIPPED_STYLE))


def _mutate(doc: Any, path: tuple[Any, ...], action: str, value: Any) -> Any:
    doc = copy.deepcopy(doc)
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if action == "drop":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = value
    elif action == "rename" and isinstance(parent, dict):
        parent[f"{path[-1]}{value}" if isinstance(value, str) else str(value)] = parent.pop(path[-1])
    return doc


def test_shipped_style_document_is_valid(workdir: Path) -> None:
    loaded = load_text(workdir, yaml.safe_dump(SHIPPED_STYLE, sort_keys=False))
    assert [p.id for p in loaded.principles] == ["be-kind", "p-one", "p-two"]


@settings(FAST, max_examples=250)
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(PATHS), st.sampled_from(["drop", "replace", "rename"]), structures),
        min_size=1,
        max_size=3,
    )
)
def test_mutated_valid_document(mutations: list[tuple[tuple[Any, ...], str, Any]], workdir: Path) -> None:
    doc: Any = SHIPPED_STYLE
    for path, action, value in mutations:
        try:
            doc = _mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            assume(False)  # an earlier mutation removed or replaced this path
    assert_loads_or_explains(workdir, to_yaml(doc))


# --- c. quoted text cannot close its own delimiter -----------------------------------------------

RUN = re.compile(r"<{3,}|>{3,}")
angle_text = st.one_of(
    st.text(CHARS, max_size=60),
    st.text(st.sampled_from(list("<> \nab")), max_size=60),
    st.builds("".join, st.lists(st.sampled_from(["<<<", ">>>", "<", ">", "END", "RESPONSE", " ", "\n"]), max_size=12)),
)


@settings(FAST, max_examples=300)
@given(text=angle_text)
def test_neutralise_leaves_no_delimiter_runs(text: str) -> None:
    out = neutralise(text)
    assert not RUN.search(out)
    assert neutralise(out) == out
    assert out.count("<") == text.count("<") and out.count(">") == text.count(">")
    assert out.replace(" ", "") == text.replace(" ", "")
    if not RUN.search(text):
        assert out == text


@settings(FAST, max_examples=300)
@given(text=angle_text, label=st.sampled_from(["TEXT", "RESPONSE", "CONVERSATION", "A"]))
def test_quote_body_cannot_close_itself(text: str, label: str) -> None:
    out = quote(text, label)
    head, tail = f"<<<{label}>>>\n", f"\n<<<END {label}>>>"
    assert out.startswith(head) and out.endswith(tail)
    body = out[len(head) : -len(tail)]
    assert not RUN.search(body)
    assert out.count("<<<") == 2 and out.count(">>>") == 2


@settings(FAST, max_examples=100)
@given(
    contents=st.lists(angle_text, min_size=1, max_size=3),
    response=angle_text,
)
def test_rendered_prompt_has_exactly_its_own_delimiters(contents: list[str], response: str) -> None:
    conversation = [{"role": "user", "content": c} for c in contents]
    assert not RUN.search(transcript(conversation).replace("User: ", ""))
    principle = Principle(
        id="p",
        title="P",
        tags=["general"],
        critique_request="Critique.",
        revision_request="Revise.",
        comparison_question="Which?",
    )
    [message_] = critique_prompt(principle, conversation, response)
    prompt = message_["content"]
    [baseline] = critique_prompt(principle, [{"role": "user", "content": "x"}], "x")
    assert prompt.count("<<<RESPONSE>>>") == 1 and prompt.count("<<<END RESPONSE>>>") == 1
    assert prompt.count("<<<CONVERSATION>>>") == 1 and prompt.count("<<<END CONVERSATION>>>") == 1
    # the template's own delimiters, and not one more
    assert len(RUN.findall(prompt)) == len(RUN.findall(baseline["content"]))
