"""Checking one raw row of a prompt source, and the ids of a set as its rows are read.

A row's ``id`` may appear only once in a set; a row without one gets an id
derived from its conversation (``STEM-HASH``, with ``-2``, ``-3``... for
repeats). ``category`` (or ``tag``) must be a tag of the taxonomy, ``kind``
one of :data:`~engine.sources.items.KINDS`. Every message names the file and
the line (or row).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from constitution.errors import did_you_mean
from engine.sources.items import CATEGORIES, KINDS, Fail, PromptSetError, chat_problem, type_name, unknown_category
from engine.sources.layouts import messages_of


@dataclass
class Row:
    """A raw row and where it is, for error messages."""

    data: Any
    line: int | None = None
    row: int | None = None


@dataclass(frozen=True)
class Fields:
    """A checked row."""

    id: str
    """The row's own id, or (``explicit`` False) the id derived from its conversation, before any suffix."""
    explicit: bool
    messages: list[dict[str, str]]
    category: str | None
    kind: str | None
    line: int | None
    row: int | None

    @property
    def place(self) -> str:
        """``line 3`` or ``row 3``, for messages."""
        return f"line {self.line}" if self.line is not None else f"row {self.row}"


class Ids:
    """The final ids of a set as its rows are read, refusing the ids that would be ambiguous.

    An id a row gives must be unique. A row without one gets an id derived from
    its conversation; rows without an id and with the same conversation get
    ``-2``, ``-3``... suffixes in order. A derived id that equals an id a row
    gives is refused, whichever comes first. Holds the ids seen so far (and
    where), nothing else.
    """

    def __init__(self, where: str) -> None:
        self._where = where
        self._given: dict[str, str] = {}
        self._derived: dict[str, str] = {}
        self._derive = Dedupe()
        self.repeats = False
        """Whether two id-less rows had the same conversation (so derived ids got suffixes)."""

    def __call__(self, fields: Fields) -> str:
        def fail(message: str) -> PromptSetError:
            return PromptSetError(message, file=self._where, line=fields.line, row=fields.row)

        if fields.explicit:
            row_id = fields.id
            if row_id in self._given:
                raise fail(
                    f"id {row_id!r} is already used on {self._given[row_id]}; ids must be unique in a prompt set "
                    "(give one of the two rows another id)"
                )
            if row_id in self._derived:
                raise fail(
                    f"id {row_id!r} is the id made for {self._derived[row_id]}, a row without an id; "
                    f"give {self._derived[row_id]} an id of its own, or this row another id"
                )
            self._given[row_id] = fields.place
            return row_id
        row_id = self._derive(fields.id)
        self.repeats = self.repeats or row_id != fields.id
        if row_id in self._given:
            raise fail(
                f"this row has no id, and the id made from its conversation, {row_id!r}, is already used on "
                f"{self._given[row_id]}; give this row an id"
            )
        self._derived[row_id] = fields.place
        return row_id


class Dedupe:
    """Gives repeated ids ``-2``, ``-3``... suffixes, in order (earlier items keep theirs).

    Holds the ids seen so far, nothing else, so a set of any length can be
    deduplicated while it is read.
    """

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._counts: dict[str, int] = {}

    def __call__(self, row_id: str) -> str:
        new = row_id
        if new in self._seen:
            n = self._counts.get(row_id, 1)
            while new in self._seen:
                n += 1
                new = f"{row_id}-{n}"
            self._counts[row_id] = n
        self._seen.add(new)
        return new


def unchanged_id(row_id: str) -> str:
    """The id as it is: what a set with no repeated conversations uses instead of :class:`Dedupe`."""
    return row_id


def row_fields(raw: Row, where: str, *, stem: str) -> Fields | None:
    """Check a row; its prompt's fields, or None for a row whose prompt is empty (dropped)."""

    def fail(message: str) -> PromptSetError:
        return PromptSetError(message, file=where, line=raw.line, row=raw.row)

    row = raw.data
    if not isinstance(row, Mapping):
        raise fail(f"a row must be an object, got {type_name(row)}")
    messages = messages_of(row, fail)
    if not messages or (messages[-1]["role"] == "user" and not messages[-1]["content"].strip()):
        return None
    problem = chat_problem(messages)
    if problem:
        raise fail(problem)
    given = _optional_str(row, "id", fail, allow_int=True)
    row_id = given or _content_id(stem, messages)
    category = _category_of(row, fail)
    kind = _optional_str(row, "kind", fail)
    if kind is not None and kind not in KINDS:
        raise fail(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}{did_you_mean(kind, KINDS)}")
    return Fields(row_id, given is not None, messages, category, kind, raw.line, raw.row)


def _category_of(row: Mapping[str, Any], fail: Fail) -> str | None:
    """The row's ``category`` (or ``tag``): a tag of the taxonomy, or None."""
    category = _optional_str(row, "category", fail)
    tag = _optional_str(row, "tag", fail)
    if category is not None and tag is not None and category != tag:
        raise fail(f"category {category!r} and tag {tag!r} disagree; give one of them (they mean the same)")
    key, value = ("category", category) if category is not None else ("tag", tag)
    if value is not None and value not in CATEGORIES:
        raise fail(f"{key}: {unknown_category(value)}")
    return value


def _optional_str(row: Mapping[str, Any], key: str, fail: Fail, *, allow_int: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise fail(f"{key}: expected a string, got {type_name(value)}")
    return value.strip() or None


def _content_id(stem: str, messages: Sequence[Mapping[str, str]]) -> str:
    canonical = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{stem}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:12]}"
