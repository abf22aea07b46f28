"""Loading the prompts a critique run starts from.

A prompt set is a list of :class:`PromptItem`: a chat that ends with a user turn,
a stable id (runs resume and deduplicate by it) and, when known, the taxonomy
category and the kind of request. :func:`load_prompts` reads them from

* the builtin sets ``redteam`` and ``helpful`` (also ``builtin:redteam``), and
  ``mixed``, the two interleaved, and the held-out evaluation sets
  ``eval-redteam`` and ``eval-benign`` (a bare builtin name always means the
  builtin: write ``./redteam`` for a file or folder of that name);
* a ``.jsonl``, ``.json`` (a list of rows), ``.csv`` (with a header row) or
  ``.txt`` (one prompt per non-empty line) file;
* a folder written by ``datasets``' ``save_to_disk`` (``PATH`` or ``PATH:SPLIT``,
  split ``train`` by default), or a hub dataset as ``hf:NAME[:SPLIT]``.

Each row is read with the first layout that fits: a ``messages`` chat; a
``prompt`` string or chat; or a ``Human:``/``Assistant:`` transcript in a
``transcript``, ``chosen``, ``text`` or ``prompt`` column (the format of the
well-known red-team and harmlessness datasets). A final assistant turn is a
response, not part of the prompt, and is dropped.

Rows are checked as they are read: an explicit ``id`` may appear only once in
a set (a row without one gets an id derived from its conversation), and a
``category`` (or ``tag``) must be a tag of the taxonomy
(:mod:`constitution.taxonomy`), ``kind`` one of :data:`KINDS`.

``limit=N`` takes a seeded sample of N prompts spread over the kinds and, within
each kind, over the categories (see :func:`sample_ids`), not the first N rows:
the first rows of a set are often all of one category.

For large sets, :func:`open_prompts` checks the whole source up front, keeping
no prompt, and then reads it again as it is iterated, so memory stays flat in
the number of prompts; :func:`load_prompts` returns a list.

``datasets`` and ``pyarrow`` are imported only when a dataset is loaded, so
importing this module stays fast.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from heapq import heapify, heappop, heappush, heapreplace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, field_validator

from constitution.errors import did_you_mean
from constitution.loader import exists
from constitution.taxonomy import HARM_TAGS, QUALITY_TAGS, TAGS
from constitution.yamlfile import not_a_regular_file

__all__ = [
    "BUILTIN_DIR",
    "BUILTIN_SETS",
    "CATEGORIES",
    "EVAL_DIR",
    "FILE_SUFFIXES",
    "KINDS",
    "LAYOUTS",
    "PromptItem",
    "PromptSet",
    "PromptSetError",
    "PromptStream",
    "load_prompt_set",
    "load_prompts",
    "open_prompts",
    "parse_transcript",
    "sample_ids",
]

log = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).parent / "data" / "prompts"
"""Where the builtin prompt files live (package data)."""

EVAL_DIR = Path(__file__).parent / "data" / "eval"
"""Where the held-out evaluation prompt files live (package data; never used for generation)."""

BUILTIN_SETS: dict[str, Path] = {
    "redteam": BUILTIN_DIR / "redteam.jsonl",
    "helpful": BUILTIN_DIR / "helpful.jsonl",
    "eval-redteam": EVAL_DIR / "redteam_eval.jsonl",
    "eval-benign": EVAL_DIR / "benign_eval.jsonl",
}
"""The builtin prompt sets by name (``eval-*``: held out from the generation sets, for ``cai eval``)."""

MIXED = "mixed"
"""Name of the builtin set that interleaves ``redteam`` and ``helpful``."""

KINDS = ("harmful", "benign", "near_miss")
"""Allowed values of :attr:`PromptItem.kind`."""

CATEGORIES = tuple(TAGS)
"""Allowed values of :attr:`PromptItem.category`: the taxonomy's harm tags, then its quality tags."""

ROLES = ("system", "user", "assistant")
FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".txt")
"""File extensions :func:`load_prompts` reads."""

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


class PromptSetError(Exception):
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
            raise ValueError(_unknown_category(value))
        return value

    @field_validator("messages")
    @classmethod
    def _well_formed_chat(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        problem = _chat_problem(value)
        if problem:
            raise ValueError(problem)
        return value


@dataclass(frozen=True)
class PromptSet:
    """What :func:`load_prompt_set` read."""

    source: str
    """The source as given."""
    items: list[PromptItem] = field(default_factory=list)
    """The prompts, in the order of the source (only those ``limit`` chose, when given)."""
    dropped: int = 0
    """Rows skipped because their final user turn was empty."""


@dataclass(frozen=True)
class PromptStream:
    """A checked prompt source that is read again, row by row, each time it is iterated.

    Made by :func:`open_prompts`. Iterating yields the same prompts, with the
    same ids, as :func:`load_prompts` returns, but holds only one at a time
    (plus the ids a ``limit`` chose and, only in a set where rows without an id
    repeat a conversation, the ids derived so far), so memory does not grow
    with the set.
    """

    source: str
    """The source as given."""
    count: int
    """How many prompts iterating yields (after ``limit``)."""
    dropped: int
    """Rows skipped because their final user turn was empty."""
    _reader: _Reader = field(repr=False, compare=False)
    _chosen: frozenset[str] | None = field(default=None, repr=False)
    """The ids ``limit`` chose; None: every prompt."""

    def __iter__(self) -> Iterator[PromptItem]:
        chosen = self._chosen
        if chosen is None:
            return self._reader.items()
        return (item for item in self._reader.items() if item.id in chosen)

    def __len__(self) -> int:
        return self.count

    def ids(self) -> Iterator[str]:
        """The ids of the prompts, in order (cheaper than iterating the prompts)."""
        chosen = self._chosen
        if chosen is None:
            return self._reader.ids()
        return (prompt_id for prompt_id in self._reader.ids() if prompt_id in chosen)


def open_prompts(source: str, *, limit: int | None = None, seed: int = 0) -> PromptStream:
    """Check a prompt set through, keeping no prompt, to iterate it afterwards.

    Every row is read and validated now, so a bad row, even the last, raises
    here, before any work starts; the stream then reads the source again as it
    is iterated. Builtin sets are small and stay in memory; ``datasets``
    sources are memory-mapped.

    Args:
        source: See :func:`load_prompts`.
        limit: See :func:`load_prompts`.
        seed: See :func:`load_prompts`.

    Returns:
        The stream; ``len()`` is the number of prompts it yields.

    Raises:
        PromptSetError: See :func:`load_prompts`. Should the source change
            between this check and the iteration, iterating may raise it too.
    """
    _check_limit(source, limit)
    reader = _open(source)
    scanned = reader.scan(limit=limit, seed=seed, keep=False)
    _warn_dropped(source, scanned.dropped)
    return PromptStream(
        source=source,
        count=scanned.count if scanned.chosen is None else len(scanned.chosen),
        dropped=scanned.dropped,
        _reader=reader,
        _chosen=scanned.chosen,
    )


def load_prompts(source: str, *, limit: int | None = None, seed: int = 0) -> list[PromptItem]:
    """Load a prompt set.

    Args:
        source: A builtin name (``redteam``, ``helpful``, ``mixed``,
            ``eval-redteam``, ``eval-benign``, optionally prefixed
            ``builtin:``), a ``.jsonl``/``.json``/``.csv``/``.txt``
            file, a ``save_to_disk`` folder (``PATH`` or ``PATH:SPLIT``), or
            ``hf:NAME[:SPLIT]``.
        limit: Keep only ``limit`` prompts, a seeded sample spread over kinds
            and categories (see :func:`sample_ids`; every row is still read
            and checked, so ids do not depend on it). The same seed and set
            give the same prompts, and a larger limit keeps those of a smaller.
        seed: Seed of the ``limit`` sample.

    Returns:
        The prompts, in the order of the source. For large sets, iterate
        :func:`open_prompts` instead: it holds one prompt at a time.

    Raises:
        PromptSetError: The source is missing, unreadable, or a row is malformed
            (a repeated id, a category outside the taxonomy, an unknown kind...);
            the message names the file and line (or row).
    """
    return load_prompt_set(source, limit=limit, seed=seed).items


def load_prompt_set(source: str, *, limit: int | None = None, seed: int = 0) -> PromptSet:
    """Like :func:`load_prompts`, also saying how many empty rows were dropped.

    Args:
        source: See :func:`load_prompts`.
        limit: See :func:`load_prompts`.
        seed: See :func:`load_prompts`.

    Returns:
        The prompt set.

    Raises:
        PromptSetError: See :func:`load_prompts`.
    """
    _check_limit(source, limit)
    scanned = _open(source).scan(limit=limit, seed=seed, keep=True)
    _warn_dropped(source, scanned.dropped)
    return PromptSet(source=source, items=scanned.items, dropped=scanned.dropped)


def sample_ids(entries: Iterable[tuple[str, str | None, str | None]], limit: int, *, seed: int = 0) -> set[str]:
    """Choose ``limit`` of ``(id, kind, category)`` entries, spread over kinds and categories.

    This is how ``limit=`` chooses prompts. Kinds take turns: each kind gets
    one pick before any gets a second, then picks go to the kinds in
    proportion to their sizes (the r-th pick of a kind of n entries comes at
    r / n; ties in a seeded order of the kinds). Within a kind, its categories
    share the kind's picks the same way, and within a kind and category the
    entries with the smallest hash of seed and id are taken. So the choice
    depends on the seed and the ids, not on the order of the entries: a set
    that grows keeps most of what was chosen, a larger ``limit`` keeps all of
    it, and every shard of a run sees the same choice.

    Args:
        entries: ``(id, kind, category)`` of each entry; ids must be unique.
        limit: How many to choose (all when there are no more than that).
        seed: The seed.

    Returns:
        The chosen ids.
    """
    spread = _Spread(limit, seed)
    for prompt_id, kind, category in entries:
        spread.add(prompt_id, kind, category, None)
    return {prompt_id for _, prompt_id, _ in spread.chosen()}


def _check_limit(source: str, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise PromptSetError(f"limit must be 0 or more, not {limit}", file=source)


def _unit(*parts: object) -> float:
    """A number in [0, 1) from a hash of ``parts``: the same on every run and machine."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


_Stratum = tuple["str | None", "str | None"]
"""(kind, category) of a prompt."""
_Pick = tuple[int, str, "PromptItem | None"]
"""A chosen prompt: its position in the source, its id and (when kept) the prompt."""
_G = TypeVar("_G", bound=Hashable)


class _Spread:
    """Chooses ``limit`` prompts as they are read (see :func:`sample_ids`).

    Holds, per (kind, category), the ``limit`` prompts with the smallest hash
    so far, so its memory is bounded by the limit times the number of strata
    (at most a few dozen: kinds and categories are fixed lists), not the set.
    """

    def __init__(self, limit: int, seed: int) -> None:
        self.limit = limit
        self.seed = seed
        self.count = 0
        self._sizes: dict[_Stratum, int] = {}
        self._best: dict[_Stratum, list[tuple[float, int, str, PromptItem | None]]] = {}

    def add(self, prompt_id: str, kind: str | None, category: str | None, item: PromptItem | None) -> None:
        """Offer one prompt (``item`` only when the caller wants the chosen prompts back)."""
        stratum = (kind, category)
        self._sizes[stratum] = self._sizes.get(stratum, 0) + 1
        if self.limit > 0:
            # A max-heap on the hash (negated): its top is the worst of the best ``limit`` so far.
            entry = (-_unit(self.seed, "prompt", prompt_id), self.count, prompt_id, item)
            heap = self._best.setdefault(stratum, [])
            if len(heap) < self.limit:
                heappush(heap, entry)
            elif entry > heap[0]:
                heapreplace(heap, entry)
        self.count += 1

    def chosen(self) -> list[_Pick]:
        """The chosen prompts, in the order they were offered."""
        quotas = _quotas(self._sizes, self.limit, self.seed)
        picks: list[_Pick] = []
        for stratum, heap in self._best.items():
            best = sorted(heap, reverse=True)[: quotas[stratum]]
            picks += [(index, prompt_id, item) for _, index, prompt_id, item in best]
        return sorted(picks, key=lambda pick: pick[0])


def _quotas(sizes: Mapping[_Stratum, int], limit: int, seed: int) -> dict[_Stratum, int]:
    """How many prompts of each (kind, category) ``limit`` takes: dealt over kinds, then over their categories."""
    kinds: dict[str | None, dict[str | None, int]] = {}
    for (kind, category), size in sizes.items():
        kinds.setdefault(kind, {})[category] = size
    per_kind = _deal({kind: sum(groups.values()) for kind, groups in kinds.items()}, limit, seed, "kind")
    quotas: dict[_Stratum, int] = {}
    for kind, groups in kinds.items():
        for category, taken in _deal(groups, per_kind[kind], seed, f"category of {kind}").items():
            quotas[(kind, category)] = taken
    return quotas


def _deal(sizes: Mapping[_G, int], take: int, seed: int, level: str) -> dict[_G, int]:
    """Deal ``take`` picks over groups: one each first, then in proportion to size.

    The r-th pick of a group of n comes at r / n; the ``take`` earliest picks
    win, simultaneous ones in a seeded order of the groups. The deal for a
    larger ``take`` extends the deal for a smaller one.
    """
    groups = list(sizes)
    got = dict.fromkeys(groups, 0)
    heap = [(0.0, _unit(seed, level, repr(group)), i) for i, group in enumerate(groups) if sizes[group] > 0]
    heapify(heap)
    for _ in range(min(take, sum(sizes.values()))):
        _, tie, i = heappop(heap)
        group = groups[i]
        got[group] += 1
        if got[group] < sizes[group]:
            heappush(heap, (got[group] / sizes[group], tie, i))
    return got


def _warn_dropped(source: str, dropped: int) -> None:
    if dropped:
        log.warning("%s: dropped %d row%s with an empty prompt", source, dropped, "s" * (dropped != 1))


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


# --------------------------------------------------------------------------- sources


_Fail = Callable[[str], PromptSetError]


@dataclass
class _Row:
    """A raw row and where it is, for error messages."""

    data: Any
    line: int | None = None
    row: int | None = None


@dataclass(frozen=True)
class _Scanned:
    """What a check of every row found."""

    count: int
    """Prompts in the source."""
    dropped: int
    """Rows with an empty prompt."""
    chosen: frozenset[str] | None
    """The ids ``limit`` chose; None when it took every prompt (or none was given)."""
    items: list[PromptItem]
    """With ``keep``: the prompts (those chosen), in source order; else empty."""


def _scanned(count: int, dropped: int, kept: list[PromptItem], spread: _Spread | None) -> _Scanned:
    if spread is None:
        return _Scanned(count, dropped, None, kept)
    picks = spread.chosen()  # every prompt when the limit is no smaller than the set
    items = [item for _, _, item in picks if item is not None]
    chosen = None if spread.limit >= count else frozenset(prompt_id for _, prompt_id, _ in picks)
    return _Scanned(count, dropped, chosen, items)


class _Reader:
    """A source that can be read any number of times: each read checks every row again."""

    def scan(self, *, limit: int | None, seed: int, keep: bool) -> _Scanned:
        """Check every row; count the prompts, choose ``limit`` of them, and keep them when asked."""
        raise NotImplementedError

    def items(self) -> Iterator[PromptItem]:
        """The prompts, read as they are asked for."""
        raise NotImplementedError

    def ids(self) -> Iterator[str]:
        """The prompts' ids, read as they are asked for."""
        return (item.id for item in self.items())


class _Listed(_Reader):
    """A small set already in memory (the builtins)."""

    def __init__(self, items: list[PromptItem], dropped: int) -> None:
        self._items = items
        self._dropped = dropped

    def scan(self, *, limit: int | None, seed: int, keep: bool) -> _Scanned:
        if limit is None:
            return _Scanned(len(self._items), self._dropped, None, list(self._items) if keep else [])
        spread = _Spread(limit, seed)
        for item in self._items:
            spread.add(item.id, item.kind, item.category, item if keep else None)
        return _scanned(len(self._items), self._dropped, [], spread)

    def items(self) -> Iterator[PromptItem]:
        return iter(self._items)


class _Streamed(_Reader):
    """A file or dataset, read row by row each time.

    Once a scan has found no two id-less rows with the same conversation (the
    usual case), later reads hold no set of the ids read.

    Args:
        rows: Returns a fresh iterator over the raw rows.
        where: The file or source named in error messages.
        stem: Prefix of content-derived ids.
        source: What :attr:`PromptItem.source` says.
    """

    def __init__(self, rows: Callable[[], Iterable[_Row]], where: str, *, stem: str, source: str) -> None:
        self._rows = rows
        self._where = where
        self._stem = stem
        self._source = source
        self._repeats: bool | None = None  # whether a derived id repeats, once a scan has seen every row

    def _fields(self) -> Iterator[_Fields | None]:
        for raw in self._rows():
            yield _row_fields(raw, self._where, stem=self._stem)

    def scan(self, *, limit: int | None, seed: int, keep: bool) -> _Scanned:
        kept: list[PromptItem] = []
        spread = None if limit is None else _Spread(limit, seed)
        ids = _Ids(self._where)
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
        return _Dedupe() if self._repeats is not False else _same

    def _item(self, row_id: str, fields: _Fields) -> PromptItem:
        # Everything PromptItem's validators check was checked in _row_fields, with the line in the message.
        return PromptItem.model_construct(
            id=row_id, messages=fields.messages, category=fields.category, kind=fields.kind, source=self._source
        )


def _open(source: str) -> _Reader:
    if source.startswith("builtin:"):
        return _load_builtin(source.removeprefix("builtin:"))
    if source.startswith("hf:"):
        return _load_hub(source)
    if source in BUILTIN_SETS or source == MIXED:  # before paths: an output folder named "redteam" must not shadow it
        return _load_builtin(source)
    path = Path(source)
    if exists(path):
        if path.is_dir():
            return _load_saved(path, None, source)
        return _load_file(path, source)
    name, sep, split = source.rpartition(":")
    if sep and name and split and _is_dir(Path(name)):
        return _load_saved(Path(name), split, source)
    if path.suffix or len(path.parts) > 1:
        raise PromptSetError("no such file or folder", file=source)
    names = [*BUILTIN_SETS, MIXED]
    raise PromptSetError(
        f"no such file or folder, nor a builtin prompt set{did_you_mean(source, names)} "
        f"(builtins: {', '.join(names)}; or a {', '.join(FILE_SUFFIXES)} file, a save_to_disk folder, hf:NAME[:SPLIT])",
        file=source,
    )


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _load_builtin(name: str) -> _Listed:
    names = [*BUILTIN_SETS, MIXED]
    if name == MIXED:
        red = _load_builtin("redteam")
        helpful = _load_builtin("helpful")
        items = _interleave(red._items, helpful._items)
        both = {item.id for item in red._items} & {item.id for item in helpful._items}
        if both:
            raise PromptSetError(
                f"the builtin sets redteam and helpful both hold id {min(both)!r}; ids must be unique across them",
                file=f"builtin:{MIXED}",
            )
        return _Listed(items, red._dropped + helpful._dropped)
    if name not in BUILTIN_SETS:
        raise PromptSetError(
            f"not a builtin prompt set{did_you_mean(name, names)} (builtins: {', '.join(names)})",
            file=f"builtin:{name}",
        )
    path = BUILTIN_SETS[name]
    if not path.is_file():
        raise PromptSetError(f"the builtin prompt file is missing (expected {path})", file=f"builtin:{name}")
    reader = _Streamed(lambda: _jsonl_rows(path, str(path)), str(path), stem=name, source=f"builtin:{name}")
    scanned = reader.scan(limit=None, seed=0, keep=True)
    return _Listed(scanned.items, scanned.dropped)


def _interleave(first: Sequence[PromptItem], second: Sequence[PromptItem]) -> list[PromptItem]:
    """Alternate the two lists, then append what is left of the longer one."""
    out: list[PromptItem] = []
    for i in range(max(len(first), len(second))):
        out.extend(items[i] for items in (first, second) if i < len(items))
    return out


def _load_file(path: Path, source: str) -> _Streamed:
    problem = not_a_regular_file(path)
    if problem:
        raise PromptSetError(problem, file=source)
    suffix = path.suffix.lower()
    rows: Callable[[Path, str], Iterator[_Row]]
    if suffix == ".jsonl":
        rows = _jsonl_rows
    elif suffix == ".json":
        rows = _json_rows
    elif suffix == ".csv":
        rows = _csv_rows
    elif suffix == ".txt":
        rows = _txt_rows
    else:
        raise PromptSetError(
            f"unknown file extension {path.suffix or '(none)'!r}; prompt files are {', '.join(FILE_SUFFIXES)}, "
            "or a folder saved with datasets' save_to_disk",
            file=source,
        )
    return _Streamed(lambda: rows(path, source), source, stem=path.stem, source=source)


def _read_text(path: Path, where: str) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PromptSetError(f"cannot read: {exc.strerror or exc}", file=where) from exc
    data = data.removeprefix(codecs.BOM_UTF8)  # stripped here, not by the codec, so exc.start indexes data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PromptSetError(f"not UTF-8 text (byte {data[exc.start]:#04x})", file=where, line=line) from exc
    if not text.strip():
        raise PromptSetError("empty file", file=where)
    return text


def _read_lines(path: Path, where: str) -> Iterator[str]:
    """The lines of a UTF-8 text file as they are read, each with its ``\\n`` (the last may lack one).

    Lines end at ``\\n`` only (``str.splitlines`` would also split at U+2028,
    which a JSON string may hold). Leading blank lines are held back until a
    line with text comes, so a file of blank lines raises ``empty file``
    before any of its lines is parsed.
    """
    leading: list[str] = []
    blank = True
    try:
        with path.open("rb") as handle:
            for number, data in enumerate(handle, start=1):
                try:
                    line = data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise PromptSetError(
                        f"not UTF-8 text (byte {data[exc.start]:#04x})", file=where, line=number
                    ) from exc
                if number == 1:
                    line = line.removeprefix("\ufeff")
                if blank:
                    if not line.strip():
                        leading.append(line)
                        continue
                    blank = False
                    yield from leading
                    leading.clear()
                yield line
    except OSError as exc:
        raise PromptSetError(f"cannot read: {exc.strerror or exc}", file=where) from exc
    if blank:
        raise PromptSetError("empty file", file=where)


def _jsonl_rows(path: Path, where: str) -> Iterator[_Row]:
    for number, line in enumerate(_read_lines(path, where), start=1):
        if not line.strip():
            continue
        line = line.removesuffix("\n").removesuffix("\r")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PromptSetError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=number) from exc
        yield _Row(data, line=number)


def _json_rows(path: Path, where: str) -> Iterator[_Row]:
    text = _read_text(path, where)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PromptSetError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=exc.lineno) from exc
    del text
    if not isinstance(data, list):
        raise PromptSetError(f"expected a JSON list of rows, got {_type_name(data)}", file=where)
    for number, row in enumerate(data, start=1):
        yield _Row(row, row=number)


_LONE_CR = re.compile(r"(?<=\r)(?!\n)")


def _csv_lines(lines: Iterable[str]) -> Iterator[str]:
    """Split lines at a lone ``\\r`` too, as reading with ``newline=""`` does (the csv module counts those lines)."""
    for line in lines:
        if "\r" in line:
            yield from (part for part in _LONE_CR.split(line) if part)
        else:
            yield line


def _csv_rows(path: Path, where: str) -> Iterator[_Row]:
    reader = csv.reader(_csv_lines(_read_lines(path, where)))
    try:
        header = next(reader, None)
        if header is None:
            return  # _read_lines has raised "empty file"
        line = reader.line_num + 1
        for values in reader:
            if values:
                if len(values) > len(header):
                    raise PromptSetError(
                        f"{len(values)} fields but the header has {len(header)}", file=where, line=line
                    )
                yield _Row(dict(zip(header, values, strict=False)), line=line)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise PromptSetError(f"not valid CSV: {exc}", file=where, line=reader.line_num) from exc


def _txt_rows(path: Path, where: str) -> Iterator[_Row]:
    for number, line in enumerate(_read_lines(path, where), start=1):
        if line.strip():
            yield _Row({"messages": [{"role": "user", "content": line.strip()}]}, line=number)


def _load_saved(path: Path, split: str | None, source: str) -> _Streamed:
    from datasets import load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise PromptSetError(
            f"not a dataset folder saved with datasets' save_to_disk; prompt files are {', '.join(FILE_SUFFIXES)}",
            file=source if split is None else source[: -len(split) - 1],
        ) from exc
    dataset = _pick_split(loaded, split, source)
    return _Streamed(lambda: _dataset_rows(dataset), source, stem=path.resolve().name, source=source)


def _load_hub(source: str) -> _Streamed:
    spec = source.removeprefix("hf:")
    name, _, split = spec.partition(":")
    if not name:
        raise PromptSetError("expected hf:NAME[:SPLIT], e.g. hf:Anthropic/hh-rlhf:test", file=source)
    split = split or "train"
    from datasets import load_dataset

    try:
        loaded = load_dataset(name, split=split)
    except Exception as exc:  # network, missing dataset, unknown split: all reported the same way
        raise PromptSetError(f"could not load the hub dataset: {type(exc).__name__}: {exc}", file=source) from exc
    label = f"hf:{name}:{split}"
    dataset = _pick_split(loaded, split, label)
    return _Streamed(lambda: _dataset_rows(dataset), label, stem=name.rstrip("/").rsplit("/", 1)[-1], source=label)


def _pick_split(loaded: Any, split: str | None, where: str) -> Any:
    from datasets import Dataset, DatasetDict

    if isinstance(loaded, DatasetDict):
        return _split_of(loaded, split or "train", where)
    if isinstance(loaded, Dataset):
        # load_dataset has already taken the split; a save_to_disk folder of one Dataset has none.
        if split is not None and not where.startswith("hf:"):
            raise PromptSetError(f"this folder holds a single dataset without splits; drop ':{split}'", file=where)
        return loaded
    raise PromptSetError(f"expected a Dataset or DatasetDict, got {_type_name(loaded)}", file=where)


def _split_of(loaded: Any, split: str, where: str) -> Any:
    if split not in loaded:
        splits = list(loaded)
        raise PromptSetError(
            f"no split {split!r}{did_you_mean(split, splits)} (splits: {', '.join(splits) or 'none'}; "
            "choose one with :SPLIT after the name)",
            file=where,
        )
    return loaded[split]


def _dataset_rows(dataset: Any, batch_size: int = 1000) -> Iterator[_Row]:
    number = 0
    # Batches: iterating a Dataset row by row costs tens of microseconds a row.
    for batch in dataset.with_format(None).iter(batch_size=batch_size):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            number += 1
            yield _Row(dict(zip(columns, values, strict=True)), row=number)


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class _Fields:
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


class _Ids:
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
        self._derive = _Dedupe()
        self.repeats = False
        """Whether two id-less rows had the same conversation (so derived ids got suffixes)."""

    def __call__(self, fields: _Fields) -> str:
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


class _Dedupe:
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


def _same(row_id: str) -> str:
    return row_id


def _row_fields(raw: _Row, where: str, *, stem: str) -> _Fields | None:
    """Check a row; its prompt's fields, or None for a row whose prompt is empty (dropped)."""

    def fail(message: str) -> PromptSetError:
        return PromptSetError(message, file=where, line=raw.line, row=raw.row)

    row = raw.data
    if not isinstance(row, Mapping):
        raise fail(f"a row must be an object, got {_type_name(row)}")
    messages = _messages_of(row, fail)
    if not messages or (messages[-1]["role"] == "user" and not messages[-1]["content"].strip()):
        return None
    problem = _chat_problem(messages)
    if problem:
        raise fail(problem)
    given = _optional_str(row, "id", fail, allow_int=True)
    row_id = given or _content_id(stem, messages)
    category = _category_of(row, fail)
    kind = _optional_str(row, "kind", fail)
    if kind is not None and kind not in KINDS:
        raise fail(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}{did_you_mean(kind, KINDS)}")
    return _Fields(row_id, given is not None, messages, category, kind, raw.line, raw.row)


def _category_of(row: Mapping[str, Any], fail: _Fail) -> str | None:
    """The row's ``category`` (or ``tag``): a tag of the taxonomy, or None."""
    category = _optional_str(row, "category", fail)
    tag = _optional_str(row, "tag", fail)
    if category is not None and tag is not None and category != tag:
        raise fail(f"category {category!r} and tag {tag!r} disagree; give one of them (they mean the same)")
    key, value = ("category", category) if category is not None else ("tag", tag)
    if value is not None and value not in CATEGORIES:
        raise fail(f"{key}: {_unknown_category(value)}")
    return value


def _unknown_category(value: str) -> str:
    return (
        f"{value!r} is not a tag of the taxonomy{did_you_mean(value, CATEGORIES)} (harm tags: {', '.join(HARM_TAGS)}; "
        f"for benign prompts also {', '.join(QUALITY_TAGS)}; `cai principles tags` describes each)"
    )


def _messages_of(row: Mapping[str, Any], fail: _Fail) -> list[dict[str, str]]:
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
        raise fail(f"prompt: expected a string or a list of {{role, content}} objects, got {_type_name(prompt)}")
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


def _chat(value: Any, name: str, fail: _Fail) -> list[dict[str, str]]:
    if isinstance(value, str) and name == "messages":
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise fail(f"{name}: a string here must be a JSON list of {{role, content}} objects ({exc.msg})") from exc
    if not isinstance(value, list):
        raise fail(f"{name}: expected a list of {{role, content}} objects, got {_type_name(value)}")
    chat: list[dict[str, str]] = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise fail(f"{name}[{i}]: expected a {{role, content}} object, got {_type_name(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            shown = "missing" if role is None else repr(role)
            raise fail(f"{name}[{i}].role: must be one of {', '.join(ROLES)} ({shown})")
        if not isinstance(content, str):
            shown = "missing" if content is None else f"got {_type_name(content)}"
            raise fail(f"{name}[{i}].content: expected a string ({shown})")
        chat.append({"role": role, "content": content})
    return chat


def _drop_response(chat: list[dict[str, str]], name: str, fail: _Fail) -> list[dict[str, str]]:
    if chat and chat[-1]["role"] == "assistant":
        chat = chat[:-1]
    if chat and chat[-1]["role"] != "user":
        raise fail(f"{name}: the conversation must end with a user turn (or a user turn then one assistant turn)")
    return chat


def _chat_problem(chat: Sequence[Mapping[str, str]]) -> str:
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


def _optional_str(row: Mapping[str, Any], key: str, fail: _Fail, *, allow_int: bool = False) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    if allow_int and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise fail(f"{key}: expected a string, got {_type_name(value)}")
    return value.strip() or None


def _content_id(stem: str, messages: Sequence[Mapping[str, str]]) -> str:
    canonical = json.dumps(list(messages), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{stem}-{hashlib.sha256(canonical.encode('utf-8')).hexdigest()[:12]}"


def _type_name(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    if value is None:
        return "null"
    return names.get(type(value), type(value).__name__)
