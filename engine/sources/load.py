"""Loading a prompt set by its source: :func:`load_prompts`, :func:`open_prompts`, :func:`load_prompt_set`.

The source names a builtin set, a file, a ``save_to_disk`` folder or a hub
dataset; :func:`open_prompts` checks it through and then reads it again as it
is iterated, :func:`load_prompts` returns a list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from constitution.errors import did_you_mean
from constitution.loader import exists
from engine.sources.builtin import BUILTIN_SETS, MIXED, load_builtin
from engine.sources.files import FILE_SUFFIXES, load_file
from engine.sources.hub import load_hub, load_saved
from engine.sources.items import PromptItem, PromptSetError
from engine.sources.readers import Reader

log = logging.getLogger(__name__)


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
    _reader: Reader = field(repr=False, compare=False)
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


def _check_limit(source: str, limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise PromptSetError(f"limit must be 0 or more, not {limit}", file=source)


def _warn_dropped(source: str, dropped: int) -> None:
    if dropped:
        log.warning("%s: dropped %d row%s with an empty prompt", source, dropped, "s" * (dropped != 1))


def _open(source: str) -> Reader:
    if source.startswith("builtin:"):
        return load_builtin(source.removeprefix("builtin:"))
    if source.startswith("hf:"):
        return load_hub(source)
    if source in BUILTIN_SETS or source == MIXED:  # before paths: an output folder named "redteam" must not shadow it
        return load_builtin(source)
    path = Path(source)
    if exists(path):
        if path.is_dir():
            return load_saved(path, None, source)
        return load_file(path, source)
    name, sep, split = source.rpartition(":")
    if sep and name and split and _is_dir(Path(name)):
        return load_saved(Path(name), split, source)
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
