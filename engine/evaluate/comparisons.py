"""Human-labelled comparisons for checking a judge: the files ``cai judge-eval`` reads, and reviewed runs.

A file is JSONL, one comparison (or one line of several) per line, in one of
three layouts (see :func:`load_comparisons`); a run folder gives the pairs
people accepted or flipped in ``cai review`` (:func:`reviewed_comparisons`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from constitution.errors import did_you_mean
from constitution.yamlfile import not_a_regular_file
from engine.backends.base import Chat
from engine.errors import UserError
from engine.records.decisions import REVIEWS, ReviewError, load_decisions
from engine.records.labels import Verdict
from engine.records.trajectory import Trajectory
from engine.rundir import TRAJECTORIES, JsonlLog

BUILTIN_COMPARISONS = Path(__file__).resolve().parents[1] / "data" / "judge" / "comparisons.jsonl"
"""The shipped human-labelled comparisons (``cai judge-eval`` without a file)."""


class JudgeDataError(UserError):
    """A comparisons file cannot be used; the message names the file and line."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{file}:{line}: {message}" if line is not None else f"{file}: {message}")


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
    * ``corrects`` and ``incorrects`` (lists): every correct/incorrect pair is one comparison.

    Raises:
        JudgeDataError: The file is missing or unreadable, a line is not a JSON
            object, a field is missing or has the wrong type, a line mixes two
            layouts, an id repeats, or a category is not in the taxonomy (file:line).
    """
    path = BUILTIN_COMPARISONS if str(source) == "builtin" else Path(source)
    where = "builtin" if str(source) == "builtin" else str(source)
    if path.is_dir() and (path / "run.json").exists():
        return reviewed_comparisons(path)
    problem = not_a_regular_file(path)
    if problem:
        raise JudgeDataError(problem, file=where)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise JudgeDataError("no such file", file=where) from None
    except IsADirectoryError:
        raise JudgeDataError("is a folder, not a JSONL file", file=where) from None
    except UnicodeDecodeError:
        raise JudgeDataError("not UTF-8 text", file=where) from None
    except OSError as exc:
        raise JudgeDataError(f"cannot read: {exc.strerror}", file=where) from None
    out: list[LabelledComparison] = []
    given: dict[str, str] = {}  # id -> the line that has it
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JudgeDataError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=number) from None
        if not isinstance(row, dict):
            raise JudgeDataError(f"each line must be a JSON object, got {_json_kind(row)}", file=where, line=number)
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


def _json_kind(value: Any) -> str:
    """What a JSON value is, for messages: ``a number``, ``a list``..."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _comparisons(row: dict[str, Any], where: str, line: int, given: dict[str, str]) -> list[LabelledComparison]:
    """The comparisons of one line; ``given`` holds the ids earlier lines gave (and gets this line's)."""

    def fail(message: str) -> JudgeDataError:
        return JudgeDataError(message, file=where, line=line)

    def text(key: str) -> str:
        value = row.get(key)
        if value is None:
            raise fail(f"{key}: missing")
        if not isinstance(value, str):
            raise fail(f"{key}: must be text, got {_json_kind(value)}")
        if not value.strip():
            raise fail(f"{key}: must be non-empty text")
        return value

    def optional(key: str) -> str | None:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise fail(f"{key}: must be text, got {_json_kind(value)}")
        return value

    layouts = [name for name, keys in _LAYOUTS.items() if any(key in row for key in keys)]
    if len(layouts) > 1:
        raise fail(f"holds two layouts ({' and '.join(layouts)}); give the responses in one of them")
    conversation = _conversation(row, fail)
    principle, category = optional("principle"), optional("category")
    if category is not None:
        from constitution.taxonomy import HARM_TAGS, QUALITY_TAGS, TAGS

        if category not in TAGS:
            raise fail(
                f"category: {category!r} is not a tag of the taxonomy{did_you_mean(category, TAGS)} "
                f"(harm tags: {', '.join(HARM_TAGS)}; also {', '.join(QUALITY_TAGS)})"
            )
    raw_id = row.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
        raise fail(f"id: must be text or a whole number, got {_json_kind(raw_id)}")
    ident = "" if raw_id is None else str(raw_id).strip()
    if ident and ident in given:
        raise fail(f"id {ident!r} is already used on {given[ident]}; give each comparison its own id")
    if ident:
        given[ident] = f"line {line}"
    else:
        ident = f"line-{line}"  # the id made for a line without one
        if ident in given:
            raise fail(f"this line has no id, and {given[ident]} gives {ident!r}, the id made for it; add an id")
        given[ident] = f"line {line} (the id made for that line, which has none)"

    def make(suffix: str, a: str, b: str, better: Verdict) -> LabelledComparison:
        return LabelledComparison(ident + suffix, conversation, a, b, better, principle, category, where, line)

    if layouts == ["corrects/incorrects"]:
        lists = []
        for key in ("corrects", "incorrects"):
            value = row.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                got = "" if isinstance(value, list) else f" (got {_json_kind(value)})"
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
        got = "an empty list" if value == [] else _json_kind(value)
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
