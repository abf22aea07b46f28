"""The row layouts a prompt is read from, the published transcript format among them.

A row is read with the first layout of :data:`LAYOUTS` that fits: a
``messages`` chat; a ``prompt`` string or chat; or a ``Human:``/``Assistant:``
transcript (the format of the well-known red-team and harmlessness datasets) in
a ``transcript``, ``chosen``, ``text`` or ``prompt`` column. A final assistant
turn is a response, not part of the prompt, and is dropped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from engine.sources.items import ROLES, Fail, type_name

TRANSCRIPT_COLUMNS = ("transcript", "chosen", "text", "prompt")
LAYOUTS = (
    "'messages': a list of {role, content} objects",
    "'prompt': a string, or a list of {role, content} objects",
    "a 'Human: ... Assistant: ...' transcript string in 'transcript', 'chosen', 'text' or 'prompt'",
)
"""The row layouts recognised, in the order they are tried (for error messages)."""

_TRANSCRIPT_START = re.compile(r"\A\s*Human:")
# A speaker marker counts only at the very start or after a blank line, so a
# "Human:" or "Time: 10:30" inside a turn never splits it.
_MARKER = re.compile(r"(?:\A\s*|\n[ \t\r]*\n[ \t]*)(Human|Assistant):")
_SPEAKERS = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> list[dict[str, str]]:
    """Split a ``Human:``/``Assistant:`` transcript into chat turns.

    Markers count only at the very start (after optional whitespace) or after a
    blank line, so ``Human:`` or ``10:30`` inside a turn is kept as text. Turn
    texts are stripped and consecutive turns of one speaker merged with a blank
    line. Every turn is kept, including a final assistant turn.

    Args:
        text: The transcript, e.g. ``"\\n\\nHuman: Hi\\n\\nAssistant: Hello"``.

    Returns:
        The turns as ``{"role", "content"}`` dicts (roles ``user`` and
        ``assistant``); empty if ``text`` has no leading ``Human:`` marker.
    """
    if not _TRANSCRIPT_START.match(text):
        return []
    marks = list(_MARKER.finditer(text))
    turns: list[dict[str, str]] = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        role, content = _SPEAKERS[mark.group(1)], text[mark.end() : end].strip()
        if turns and turns[-1]["role"] == role:
            joined = "\n\n".join(part for part in (turns[-1]["content"], content) if part)
            turns[-1] = {"role": role, "content": joined}
        else:
            turns.append({"role": role, "content": content})
    return turns


def messages_of(row: Mapping[str, Any], fail: Fail) -> list[dict[str, str]]:
    """The prompt chat of a row (final assistant turn dropped), by the first layout that fits.

    A blank column (null, whitespace, an empty list: an empty CSV cell, say) is
    passed over; a row whose layout columns are all blank gives ``[]``.
    """
    messages = row.get("messages")
    if not _blank(messages):
        return _drop_response(_chat(messages, "messages", fail), "messages", fail)
    prompt = row.get("prompt")
    if isinstance(prompt, str) and not _blank(prompt):
        if _TRANSCRIPT_START.match(prompt):
            return _drop_response(parse_transcript(prompt), "prompt", fail)
        return [{"role": "user", "content": prompt.strip()}]
    if isinstance(prompt, list) and prompt:
        return _drop_response(_chat(prompt, "prompt", fail), "prompt", fail)
    if not _blank(prompt):
        raise fail(f"prompt: expected a string or a list of {{role, content}} objects, got {type_name(prompt)}")
    for column in TRANSCRIPT_COLUMNS:
        value = row.get(column)
        if isinstance(value, str) and _TRANSCRIPT_START.match(value):
            return _drop_response(parse_transcript(value), column, fail)
    if any(key in row and _blank(row[key]) for key in ("messages", "prompt", *TRANSCRIPT_COLUMNS)):
        return []
    columns = ", ".join(repr(str(key)) for key in row) or "none"
    hint = ""
    found = [c for c in TRANSCRIPT_COLUMNS if isinstance(row.get(c), str)]
    if found:
        hint = f" ('{found[0]}' is not a transcript: it does not start with 'Human:')"
    raise fail(f"no prompt found{hint}; expected one of: {'; '.join(LAYOUTS)} (columns found: {columns})")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value)


def _chat(value: Any, name: str, fail: Fail) -> list[dict[str, str]]:
    if isinstance(value, str) and name == "messages":
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise fail(f"{name}: a string here must be a JSON list of {{role, content}} objects ({exc.msg})") from exc
    if not isinstance(value, list):
        raise fail(f"{name}: expected a list of {{role, content}} objects, got {type_name(value)}")
    chat: list[dict[str, str]] = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise fail(f"{name}[{i}]: expected a {{role, content}} object, got {type_name(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            shown = "missing" if role is None else repr(role)
            raise fail(f"{name}[{i}].role: must be one of {', '.join(ROLES)} ({shown})")
        if not isinstance(content, str):
            shown = "missing" if content is None else f"got {type_name(content)}"
            raise fail(f"{name}[{i}].content: expected a string ({shown})")
        chat.append({"role": role, "content": content})
    return chat


def _drop_response(chat: list[dict[str, str]], name: str, fail: Fail) -> list[dict[str, str]]:
    if chat and chat[-1]["role"] == "assistant":
        chat = chat[:-1]
    if chat and chat[-1]["role"] != "user":
        raise fail(f"{name}: the conversation must end with a user turn (or a user turn then one assistant turn)")
    return chat
