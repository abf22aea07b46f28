"""What a prompt is: :class:`PromptItem`, the kinds and categories it may have, and :class:`PromptSetError`.

The checks of a chat shared by :class:`PromptItem` and the row reader
(:mod:`engine.sources.rows`) live here too, so both say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

from constitution.errors import did_you_mean
from constitution.taxonomy import HARM_TAGS, QUALITY_TAGS, TAGS
from engine.errors import UserError

KINDS = ("harmful", "benign", "near_miss")
"""Allowed values of :attr:`PromptItem.kind`."""

CATEGORIES = tuple(TAGS)
"""Allowed values of :attr:`PromptItem.category`: the taxonomy's harm tags, then its quality tags."""

ROLES = ("system", "user", "assistant")


class PromptSetError(UserError):
    """A prompt set could not be loaded.

    The message names the file (or source) and, where it can be known, the
    1-based line (JSONL, CSV, JSON syntax errors) or row.

    Attributes:
        file: The file, folder or source the problem is in.
        line: The 1-based line, when known.
        row: The 1-based row, for sources without lines (a JSON list, a dataset).
    """

    def __init__(
        self, message: str, *, file: str | None = None, line: int | None = None, row: int | None = None
    ) -> None:
        self.file = file
        self.line = line
        self.row = row
        self.reason = message
        where = file or ""
        if file is not None and line is not None:
            where = f"{file}:{line}"
        elif file is not None and row is not None:
            where = f"{file}: row {row}"
        super().__init__(f"{where}: {message}" if where else message)


class PromptItem(BaseModel):
    """One prompt: a chat ending with a user turn, with where it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Stable id, used to resume runs and to deduplicate."""
    messages: list[dict[str, str]]
    """The chat, ending with a user turn; a system turn may come first only."""
    category: str | None = None
    """Taxonomy tag (one of :data:`CATEGORIES`, see :mod:`constitution.taxonomy`) when known."""
    kind: str | None = None
    """``harmful``, ``benign`` or ``near_miss`` when known."""
    source: str
    """Where it came from: ``builtin:redteam``, ``prompts.jsonl``, ``hf:Anthropic/hh-rlhf:test``..."""

    @field_validator("id")
    @classmethod
    def _id_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("id must not be empty")
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str | None) -> str | None:
        if value is not None and value not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {value!r}{did_you_mean(value, KINDS)}")
        return value

    @field_validator("category")
    @classmethod
    def _known_category(cls, value: str | None) -> str | None:
        if value is not None and value not in CATEGORIES:
            raise ValueError(unknown_category(value))
        return value

    @field_validator("messages")
    @classmethod
    def _well_formed_chat(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        problem = chat_problem(value)
        if problem:
            raise ValueError(problem)
        return value


Fail = Callable[[str], PromptSetError]


def chat_problem(chat: Sequence[Mapping[str, str]]) -> str:
    """What is wrong with a prompt chat, or ``""``."""
    if not chat:
        return "the conversation is empty"
    for i, message in enumerate(chat):
        if message.get("role") not in ROLES:
            return f"messages[{i}].role: must be one of {', '.join(ROLES)}"
        if not isinstance(message.get("content"), str):
            return f"messages[{i}].content: expected a string"
        if message["role"] == "system" and i != 0:
            return f"messages[{i}]: a system turn may only come first"
    if chat[-1]["role"] != "user":
        return "the conversation must end with a user turn"
    return ""


def unknown_category(value: str) -> str:
    """The message for a category that is not a tag of the taxonomy, with the tags to choose from."""
    return (
        f"{value!r} is not a tag of the taxonomy{did_you_mean(value, CATEGORIES)} (harm tags: {', '.join(HARM_TAGS)}; "
        f"for benign prompts also {', '.join(QUALITY_TAGS)}; `cai principles tags` describes each)"
    )


def type_name(value: Any) -> str:
    """How a JSON value's type reads in a message: ``an object``, ``a list``, ``null``..."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)
