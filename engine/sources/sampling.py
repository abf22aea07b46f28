"""``limit=N``: a seeded sample of N prompts spread over kinds and categories (see :func:`sample_ids`).

Not the first N rows: the first rows of a set are often all of one category.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping
from heapq import heapify, heappop, heappush, heapreplace
from typing import TypeVar

from engine.sources.items import PromptItem


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
    spread = Spread(limit, seed)
    for prompt_id, kind, category in entries:
        spread.add(prompt_id, kind, category, None)
    return {prompt_id for _, prompt_id, _ in spread.chosen()}


def _unit(*parts: object) -> float:
    """A number in [0, 1) from a hash of ``parts``: the same on every run and machine."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


_Stratum = tuple["str | None", "str | None"]
"""(kind, category) of a prompt."""
_Pick = tuple[int, str, "PromptItem | None"]
"""A chosen prompt: its position in the source, its id and (when kept) the prompt."""
_G = TypeVar("_G", bound=Hashable)


class Spread:
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
