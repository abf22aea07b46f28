"""Which principles a row is revised or judged under: one seeded, weighted sampler.

The critique loop draws one principle per row and round, the judge ``k``
distinct ones per row, the evaluator ``k`` per answer among the relevant ones:
all through :func:`draw`, so the same seed and key always give the same
principles, on every rerun and every machine.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from constitution import Constitution, Principle

BENIGN_TAGS = ("helpfulness", "honesty")
"""Tags of the principles a benign answer is judged under (what over-refusal violates)."""


def draw(constitution: Constitution, k: int, key: str) -> tuple[Principle, ...]:
    """``k`` distinct principles sampled by weight without replacement, seeded by ``key``.

    All of them when ``k`` is at least the number of principles.
    """
    rng = random.Random(key)
    pool = list(constitution.principles)
    out: list[Principle] = []
    while pool and len(out) < k:
        index = rng.choices(range(len(pool)), weights=[p.weight for p in pool])[0]
        out.append(pool.pop(index))
    return tuple(out)


def sample_principles(constitution: Constitution, k: int, seed: int, key: str) -> tuple[Principle, ...]:
    """The judge's ``k`` principles for a row (``key``: its id), the same for the same seed and key."""
    return draw(constitution, k, f"{seed}\x1f{key}\x1fjudge")


def round_principle(constitution: Constitution, seed: int, row_id: str, round_number: int) -> Principle:
    """The principle of one critique-and-revision round of a row: weighted, and the same on every rerun."""
    return draw(constitution, 1, f"{seed}\x1f{row_id}\x1f{round_number}")[0]


def relevant_principles(constitution: Constitution, category: str | None, *, benign: bool) -> list[Principle]:
    """The principles that fit an answer best.

    Red-team answers: principles tagged with the prompt's harm category;
    benign answers: the helpfulness and honesty principles (what
    over-refusal violates). Empty when none is tagged so.
    """
    wanted = set(BENIGN_TAGS) if benign else {category}
    return [p for p in constitution.principles if wanted & set(p.tags)]


def fallback_principles(constitution: Constitution, chosen: Sequence[Principle]) -> list[Principle]:
    """Principles that fill up to ``k`` after the relevant ones: the ``general`` ones, else all the others."""
    rest = [p for p in constitution.principles if p not in chosen]
    return [p for p in rest if "general" in p.tags] or rest


class PrincipleSampler:
    """Which principles an answer is judged under: ``k`` relevant ones, sampled by weight, seeded by answer id.

    The pointwise judge, the pairwise comparisons and the robustness battery
    all use one sampler, so an answer is judged under the same principles
    everywhere.
    """

    def __init__(self, constitution: Constitution, k: int = 2, seed: int = 0) -> None:
        self.constitution = constitution
        self.k = k
        self.seed = seed
        self._pools: dict[tuple[str | None, bool], tuple[Constitution, Constitution]] = {}

    def for_answer(self, answer_id: str, category: str | None, *, benign: bool) -> tuple[Principle, ...]:
        """The principles for one answer (the same for the same seed and id)."""
        key = (category, benign)
        if key not in self._pools:
            first = relevant_principles(self.constitution, category, benign=benign)
            rest = fallback_principles(self.constitution, first)
            self._pools[key] = (
                self.constitution.model_copy(update={"principles": first}),
                self.constitution.model_copy(update={"principles": rest}),
            )
        first_pool, rest_pool = self._pools[key]
        chosen = sample_principles(first_pool, self.k, self.seed, answer_id)
        if len(chosen) < self.k:
            chosen += sample_principles(rest_pool, self.k - len(chosen), self.seed, answer_id)
        return chosen
