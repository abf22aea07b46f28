"""Human-labelled comparisons for checking a judge: the files ``cai judge-eval`` reads, and reviewed runs.

A file is JSONL, one comparison (or one line of several) per line, in one of
three layouts or in the shape of the field's published multiple-choice files
(see :func:`load_comparisons`); a run folder gives the pairs people accepted or
flipped in ``cai review`` (:func:`reviewed_comparisons`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.audit.choice_files import (
    ChoiceItem,
    JudgeDataError,
    choice_item,
    is_option_label,
    json_kind,
    mentions_options,
    option_letters,
    read_rows,
    row_category,
    row_id,
    split_transcript,
)
from engine.backends.base import Chat
from engine.records.decisions import REVIEWS, ReviewError, load_decisions
from engine.records.labels import Verdict
from engine.records.trajectory import Trajectory
from engine.rundir import TRAJECTORIES, JsonlLog

__all__ = ["BUILTIN_COMPARISONS", "JudgeDataError", "LabelledComparison", "load_comparisons", "reviewed_comparisons"]

BUILTIN_COMPARISONS = Path(__file__).resolve().parents[1] / "data" / "judge" / "comparisons.jsonl"
"""The shipped human-labelled comparisons (``cai judge-eval`` without a file)."""


@dataclass(frozen=True)
class LabelledComparison:
    """A human judgment: which of two responses to a conversation is better."""

    id: str
    conversation: Chat
    response_a: str
    response_b: str
    better: Verdict
    principle: str | None = None
    """Principle to judge under (a principle id); None: sample from the constitution."""
    category: str | None = None
    file: str = ""
    line: int = 0


def load_comparisons(source: str | Path) -> list[LabelledComparison]:
    """Read human-labelled comparisons from a JSONL file (``builtin`` for the shipped set).

    A run folder instead gives the pairs people reviewed in it with ``cai review``
    (:func:`reviewed_comparisons`).

    Each line is an object with the conversation as ``prompt`` (text, or a list
    of ``{"role", "content"}``) or ``conversation`` / ``messages`` (such a
    list), optional ``id`` (unique in the file), ``principle`` (a principle id)
    and ``category`` (a tag of the taxonomy), and the responses in one of three
    layouts:

    * ``response_a``, ``response_b`` and ``better`` (``"A"`` or ``"B"``);
    * ``chosen`` and ``rejected`` (the chosen one is better);
    * ``corrects`` and ``incorrects`` (lists of response texts): every
      correct/incorrect pair is one comparison.

    A line may also be in the shape of the field's published multiple-choice
    files (the HHH evaluations of the Constitutional AI paper): ``prompt`` is
    the whole question as text (a ``Human:``/``Assistant:`` conversation, an
    instruction and an ``Options:`` block of `` (A) [[[response]]]`` lines) and
    ``corrects`` / ``incorrects`` hold option LABELS such as ``" (B)"``. Then
    the conversation is the prompt's, each correct/incorrect pair of options is
    one comparison with the options where the file put them (correct ``(B)``:
    ``response_a`` is option A's text, ``better`` is ``"B"``), and
    ``text_correct`` / ``text_incorrect`` (whole transcripts ending with the
    correct / incorrect reply) are checked against the options, or give the
    conversation and the two replies when the options are not responses. A
    file whose options are phrases (harm categories) is scored as written
    (:mod:`engine.audit.choice_files`), not by this protocol.

    Raises:
        JudgeDataError: The file is missing or unreadable, a line is not a JSON
            object, a field is missing or has the wrong type, a line mixes two
            layouts, an id repeats, a category is not in the taxonomy, option
            letters stand where response texts belong, or a published file's
            options are not responses (file:line).
    """
    path = BUILTIN_COMPARISONS if str(source) == "builtin" else Path(source)
    where = "builtin" if str(source) == "builtin" else str(source)
    if path.is_dir() and (path / "run.json").exists():
        return reviewed_comparisons(path)
    out: list[LabelledComparison] = []
    given: dict[str, str] = {}  # id -> the line that has it
    for number, row in read_rows(path, where):
        out.extend(_comparisons(row, where, number, given))
    if not out:
        raise JudgeDataError("no comparisons in this file", file=where)
    return out


_LAYOUTS = {
    "response_a/response_b/better": ("response_a", "response_b", "better"),
    "chosen/rejected": ("chosen", "rejected"),
    "corrects/incorrects": ("corrects", "incorrects"),
}
_CONVERSATION_KEYS = ("prompt", "conversation", "messages")
_LETTERS = (
    "hold option letters such as {example!r}, not response texts, and the prompt has no Options block of "
    "responses they could name; give the response texts themselves (in corrects/incorrects, or chosen/rejected), "
    "or text_correct and text_incorrect (each the whole transcript ending with that reply)"
)


def _comparisons(row: dict[str, Any], where: str, line: int, given: dict[str, str]) -> list[LabelledComparison]:
    """The comparisons of one line; ``given`` holds the ids earlier lines gave (and gets this line's)."""

    def fail(message: str) -> JudgeDataError:
        return JudgeDataError(message, file=where, line=line)

    def text(key: str) -> str:
        value = row.get(key)
        if value is None:
            raise fail(f"{key}: missing")
        if not isinstance(value, str):
            raise fail(f"{key}: must be text, got {json_kind(value)}")
        if not value.strip():
            raise fail(f"{key}: must be non-empty text")
        if is_option_label(value):
            raise fail(
                f"{key}: {value!r} is an option letter, not a response text; give the text of the response itself"
            )
        return value

    def optional(key: str) -> str | None:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise fail(f"{key}: must be text, got {json_kind(value)}")
        return value

    layouts = [name for name, keys in _LAYOUTS.items() if any(key in row for key in keys)]
    if len(layouts) > 1:
        raise fail(f"holds two layouts ({' and '.join(layouts)}); give the responses in one of them")
    conversation = _conversation(row, fail)
    principle = optional("principle")
    if layouts == ["corrects/incorrects"]:
        letters = [v for key in ("corrects", "incorrects") for v in _list(row.get(key)) if is_option_label(v)]
        if letters:
            published = isinstance(row.get("prompt"), str) and all(
                option_letters(row.get(key)) for key in ("corrects", "incorrects")
            )
            if not published:
                raise fail("corrects/incorrects: " + _LETTERS.format(example=letters[0]))
            return _published(choice_item(row, where, line, given), row, principle, optional, fail)
    category = row_category(row, fail)
    ident = row_id(row, line, given, fail)

    def make(suffix: str, a: str, b: str, better: Verdict) -> LabelledComparison:
        return LabelledComparison(ident + suffix, conversation, a, b, better, principle, category, where, line)

    if layouts == ["corrects/incorrects"]:
        lists = []
        for key in ("corrects", "incorrects"):
            value = row.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                got = "" if isinstance(value, list) else f" (got {json_kind(value)})"
                raise fail(f"{key}: must be a non-empty list of texts{got}")
            lists.append(value)
        return [
            make(f"-{i}-{j}", good, bad, "A")
            for (i, good), (j, bad) in itertools.product(enumerate(lists[0]), enumerate(lists[1]))
        ]
    if layouts == ["chosen/rejected"]:
        return [make("", text("chosen"), text("rejected"), "A")]
    better = row.get("better")
    letter = better.strip().upper().removeprefix("RESPONSE_") if isinstance(better, str) else None
    if letter not in ("A", "B"):
        shown = "missing" if better is None else f"{better!r} is not A or B"
        raise fail(f"better: {shown} (or give chosen/rejected, or corrects/incorrects)")
    return [make("", text("response_a"), text("response_b"), "A" if letter == "A" else "B")]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _short(text: str, most: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= most else text[: most - 3] + "..."


def _published(
    item: ChoiceItem,
    row: dict[str, Any],
    principle: str | None,
    optional: Callable[[str], str | None],
    fail: Callable[[str], JudgeDataError],
) -> list[LabelledComparison]:
    """The comparisons of a line of a published multiple-choice file (see :func:`load_comparisons`)."""

    def make(suffix: str, conversation: Chat, a: str, b: str, better: Verdict) -> LabelledComparison:
        return LabelledComparison(
            item.id + suffix, conversation, a, b, better, principle, item.category, item.file, item.line
        )

    given = {key: optional(key) for key in ("text_correct", "text_incorrect")}
    replies = {}
    for key, value in given.items():
        if value is not None:
            replies[key] = split_transcript(value)
            if replies[key] is None:
                raise fail(
                    f"{key}: must be the whole transcript ending with the assistant's reply "
                    "('\\n\\nHuman: ...\\n\\nAssistant: ...')"
                )
    parsed = item.parsed
    if parsed is not None and parsed.responses:
        texts = [o.text for o in parsed.options]
        for key, indexes, kind in (
            ("text_correct", item.correct, "correct"),
            ("text_incorrect", item.incorrect, "incorrect"),
        ):
            found = replies.get(key)
            if found is not None and not any(" ".join(found[1].split()) == " ".join(texts[i].split()) for i in indexes):
                names = " or ".join(item.labels[i] for i in indexes)
                raise fail(
                    f"{key}: ends with a reply that is not the {kind} option {names} "
                    f"({_short(found[1])!r}; option {item.labels[indexes[0]]} is {_short(texts[indexes[0]])!r}); "
                    f"fix {key} or {kind}s"
                )
        out = []
        for (ci, i), (ij, j) in itertools.product(enumerate(item.correct), enumerate(item.incorrect)):
            a, b = sorted((i, j))
            out.append(make(f"-{ci}-{ij}", parsed.conversation, texts[a], texts[b], "A" if a == i else "B"))
        return out
    good, bad = replies.get("text_correct"), replies.get("text_incorrect")
    if good is not None and bad is not None:
        if good[0] != bad[0]:
            raise fail(
                "text_correct and text_incorrect: differ before their last Assistant turn; "
                "give the same conversation in both, each ending with its reply"
            )
        if item.correct[0] < item.incorrect[0]:
            return [make("-0-0", good[0], good[1], bad[1], "A")]
        return [make("-0-0", good[0], bad[1], good[1], "B")]
    if parsed is not None:
        first = parsed.options[0]
        raise fail(
            f"the options of this file are not responses (e.g. '({first.label}) {_short(first.text)}'); "
            "our protocol compares two responses: judge it as written (`cai judge-eval FILE --protocol as-written`)"
        )
    if mentions_options(item.prompt):
        raise fail(
            "the options of this prompt could not be read as responses (each ' (A) [[[response]]]' on its own line "
            "after 'Options:', below a Human:/Assistant: conversation that ends with the human); give text_correct "
            "and text_incorrect, or judge it as written (`cai judge-eval FILE --protocol as-written`)"
        )
    example = next(v for v in _list(row.get("corrects")) if is_option_label(v))
    raise fail("corrects/incorrects: " + _LETTERS.format(example=example))


def _conversation(row: dict[str, Any], fail: Callable[[str], JudgeDataError]) -> Chat:
    keys = [key for key in _CONVERSATION_KEYS if row.get(key) is not None]
    if not keys:
        raise fail("prompt: missing (give prompt, conversation or messages)")
    if len(keys) > 1:
        raise fail(f"{' and '.join(keys)}: give the conversation once (prompt, conversation or messages)")
    key = keys[0]
    value = row[key]
    if key == "prompt" and isinstance(value, str):
        if not value.strip():
            raise fail("prompt: empty (the user's message the two responses answer)")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        expected = "text or a non-empty list of messages" if key == "prompt" else "a non-empty list of messages"
        got = "an empty list" if value == [] else json_kind(value)
        raise fail(f"{key}: must be {expected} ({{'role': ..., 'content': ...}}), got {got}")
    chat: Chat = []
    for i, m in enumerate(value):
        ok = isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        if not ok or m["role"] not in ("system", "user", "assistant"):
            raise fail(f"{key}[{i}]: must be {{'role': system|user|assistant, 'content': text}}")
        chat.append({"role": m["role"], "content": m["content"]})
    if chat[-1]["role"] != "user":
        raise fail(f"{key}: must end with a user message (the responses answer it)")
    return chat


def reviewed_comparisons(run_dir: Path) -> list[LabelledComparison]:
    """The pairs people accepted or flipped, as human-labelled comparisons for ``cai judge-eval DIR``.

    Decisions about texts the run no longer holds are skipped; dropped pairs
    carry no preference and are skipped too.

    Raises:
        JudgeDataError: The folder has no decisions, or none that gives a comparison.
    """
    where = str(run_dir / REVIEWS)
    try:
        decisions = load_decisions(run_dir)
    except ReviewError as exc:
        raise JudgeDataError(str(exc), file=where) from None
    if not decisions:
        raise JudgeDataError(f"no review decisions; review the pairs with `cai review {run_dir}` first", file=where)
    out = []
    for t in JsonlLog(run_dir / TRAJECTORIES, Trajectory, "trajectory").rows():
        decision = decisions.get(t.id)
        texts = None if decision is None or decision.action in (None, "drop") else decision.pair_texts(t)
        if texts is None:
            continue
        chosen, rejected = texts
        out.append(LabelledComparison(t.id, t.prompt, chosen, rejected, "A", None, t.category, where, 0))
    if not out:
        raise JudgeDataError("no accepted or flipped pair that matches the run's texts", file=where)
    return out
