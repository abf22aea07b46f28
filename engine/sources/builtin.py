"""The builtin prompt sets: ``redteam``, ``helpful``, ``mixed`` (both interleaved), ``eval-redteam``, ``eval-benign``.

Their files are package data under ``engine/data/`` (``prompts/`` for
generation, ``eval/`` for the held-out evaluation sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from constitution.errors import did_you_mean
from engine.sources.files import jsonl_rows
from engine.sources.items import PromptItem, PromptSetError
from engine.sources.readers import Listed, Streamed

BUILTIN_DIR = Path(__file__).parents[1] / "data" / "prompts"
"""Where the builtin prompt files live (package data)."""

EVAL_DIR = Path(__file__).parents[1] / "data" / "eval"
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


def load_builtin(name: str) -> Listed:
    """Read a builtin set (``mixed``: both generation sets, interleaved) into memory, checking every row.

    Raises:
        PromptSetError: Not a builtin name, its file is missing, or a row is malformed.
    """
    names = [*BUILTIN_SETS, MIXED]
    if name == MIXED:
        red = load_builtin("redteam")
        helpful = load_builtin("helpful")
        items = _interleave(red.prompts, helpful.prompts)
        both = {item.id for item in red.prompts} & {item.id for item in helpful.prompts}
        if both:
            raise PromptSetError(
                f"the builtin sets redteam and helpful both hold id {min(both)!r}; ids must be unique across them",
                file=f"builtin:{MIXED}",
            )
        return Listed(items, red.dropped + helpful.dropped)
    if name not in BUILTIN_SETS:
        raise PromptSetError(
            f"not a builtin prompt set{did_you_mean(name, names)} (builtins: {', '.join(names)})",
            file=f"builtin:{name}",
        )
    path = BUILTIN_SETS[name]
    if not path.is_file():
        raise PromptSetError(f"the builtin prompt file is missing (expected {path})", file=f"builtin:{name}")
    reader = Streamed(lambda: jsonl_rows(path, str(path)), str(path), stem=name, source=f"builtin:{name}")
    scanned = reader.scan(limit=None, seed=0, keep=True)
    return Listed(scanned.items, scanned.dropped)


def _interleave(first: Sequence[PromptItem], second: Sequence[PromptItem]) -> list[PromptItem]:
    """Alternate the two lists, then append what is left of the longer one."""
    out: list[PromptItem] = []
    for i in range(max(len(first), len(second))):
        out.extend(items[i] for items in (first, second) if i < len(items))
    return out
