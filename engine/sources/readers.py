"""Prompt sources that can be read any number of times, each read checking every row again.

:class:`Listed` holds a small set in memory (the builtins); :class:`Streamed`
reads a file or dataset row by row each time, so memory stays flat in the
number of prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from engine.sources.items import PromptItem, PromptSetError
from engine.sources.rows import Dedupe, Fields, Ids, Row, row_fields, unchanged_id
from engine.sources.sampling import Spread


@dataclass(frozen=True)
class Scanned:
    """What a check of every row found."""

    count: int
    """Prompts in the source."""
    dropped: int
    """Rows with an empty prompt."""
    chosen: frozenset[str] | None
    """The ids ``limit`` chose; None when it took every prompt (or none was given)."""
    items: list[PromptItem]
    """With ``keep``: the prompts (those chosen), in source order; else empty."""


def _scanned(count: int, dropped: int, kept: list[PromptItem], spread: Spread | None) -> Scanned:
    if spread is None:
        return Scanned(count, dropped, None, kept)
    picks = spread.chosen()  # every prompt when the limit is no smaller than the set
    items = [item for _, _, item in picks if item is not None]
    chosen = None if spread.limit >= count else frozenset(prompt_id for _, prompt_id, _ in picks)
    return Scanned(count, dropped, chosen, items)


class Reader:
    """A source that can be read any number of times: each read checks every row again."""

    def scan(self, *, limit: int | None, seed: int, keep: bool) -> Scanned:
        """Check every row; count the prompts, choose ``limit`` of them, and keep them when asked."""
        raise NotImplementedError

    def items(self) -> Iterator[PromptItem]:
        """The prompts, read as they are asked for."""
        raise NotImplementedError

    def ids(self) -> Iterator[str]:
        """The prompts' ids, read as they are asked for."""
        return (item.id for item in self.items())


class Listed(Reader):
    """A small set already in memory (the builtins)."""

    def __init__(self, items: list[PromptItem], dropped: int) -> None:
        self.prompts = items
        self.dropped = dropped

    def scan(self, *, limit: int | None, seed: int, keep: bool) -> Scanned:
        if limit is None:
            return Scanned(len(self.prompts), self.dropped, None, list(self.prompts) if keep else [])
        spread = Spread(limit, seed)
        for item in self.prompts:
            spread.add(item.id, item.kind, item.category, item if keep else None)
        return _scanned(len(self.prompts), self.dropped, [], spread)

    def items(self) -> Iterator[PromptItem]:
        return iter(self.prompts)


class Streamed(Reader):
    """A file or dataset, read row by row each time.

    Once a scan has found no two id-less rows with the same conversation (the
    usual case), later reads hold no set of the ids read.

    Args:
        rows: Returns a fresh iterator over the raw rows.
        where: The file or source named in error messages.
        stem: Prefix of content-derived ids.
        source: What :attr:`PromptItem.source` says.
    """

    def __init__(self, rows: Callable[[], Iterable[Row]], where: str, *, stem: str, source: str) -> None:
        self._rows = rows
        self._where = where
        self._stem = stem
        self._source = source
        self._repeats: bool | None = None  # whether a derived id repeats, once a scan has seen every row

    def _fields(self) -> Iterator[Fields | None]:
        for raw in self._rows():
            yield row_fields(raw, self._where, stem=self._stem)

    def scan(self, *, limit: int | None, seed: int, keep: bool) -> Scanned:
        kept: list[PromptItem] = []
        spread = None if limit is None else Spread(limit, seed)
        ids = Ids(self._where)
        count = dropped = 0
        for fields in self._fields():
            if fields is None:
                dropped += 1
                continue
            row_id = ids(fields)
            item = self._item(row_id, fields) if keep else None
            if spread is not None:
                spread.add(row_id, fields.kind, fields.category, item)
            elif item is not None:
                kept.append(item)
            count += 1
        if not count:
            detail = f" ({dropped} row{'s' * (dropped != 1)} with an empty prompt)" if dropped else ""
            error = PromptSetError(f"no prompts in {self._where}{detail}")
            error.file = self._where
            raise error
        self._repeats = ids.repeats
        return _scanned(count, dropped, kept, spread)

    def items(self) -> Iterator[PromptItem]:
        derive = self._derive()
        for fields in self._fields():
            if fields is not None:
                yield self._item(fields.id if fields.explicit else derive(fields.id), fields)

    def ids(self) -> Iterator[str]:
        derive = self._derive()
        return (f.id if f.explicit else derive(f.id) for f in self._fields() if f is not None)

    def _derive(self) -> Callable[[str], str]:
        return Dedupe() if self._repeats is not False else unchanged_id

    def _item(self, row_id: str, fields: Fields) -> PromptItem:
        # Everything PromptItem's validators check was checked in row_fields, with the line in the message.
        return PromptItem.model_construct(
            id=row_id, messages=fields.messages, category=fields.category, kind=fields.kind, source=self._source
        )
