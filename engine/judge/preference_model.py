"""A trained preference model as the judge: ``P(first better) = sigmoid(r(first) - r(second))``.

A :class:`PreferenceModelJudge` has the interface of the pairwise
:class:`~engine.judge.pairwise.Judge` (``settings``, ``model``, ``compare``),
so labelling, panels, the judge gate, ``cai judge-eval`` and ``cai eval`` take
it wherever a judge model is given as ``rm:PATH``. It reads no prompt: each
response gets one reward from one forward pass
(:class:`~engine.backends.reward_model.RewardModel`), and the soft label is the
Bradley-Terry probability of the two rewards, the quantity the model was
trained on. Hence its :class:`~engine.records.Comparison` records:

- ``principles`` is empty (a preference model has no principle; the principles
  sampled for a row are not used) and ``judgments`` is empty (no language model
  judged; :attr:`~engine.records.Comparison.by_preference_model` reads that);
- both per-order probabilities equal ``p_first`` and ``disagreed`` is False: a
  response's reward does not depend on which one is shown first, so there is no
  position bias by construction;
- ``rewards`` holds the two rewards. A reward that is not finite (NaN, inf)
  makes the comparison unreadable: ``p_first`` is None, ``rewards`` None and
  ``unparsed`` 1, and it never becomes a label.

Every distinct (conversation, response) of one :meth:`compare` call is scored
once, all in ONE ``score`` call: the pairs of a trajectory share their
candidates (3 candidates, 3 pairs, 3 rewards).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.backends.base import Chat
from engine.backends.reward_model import Scorer
from engine.errors import USAGE, UserError
from engine.judge.pairwise import Pair
from engine.records.labels import Comparison, JudgeSettings


def preference(first: float, second: float) -> float | None:
    """P(first is better) of two rewards: ``sigmoid(first - second)``; None when either is not finite."""
    if not (math.isfinite(first) and math.isfinite(second)):
        return None
    diff = first - second  # may overflow to +-inf: the sigmoid is then 1 or 0
    if diff >= 0:
        return 1.0 / (1.0 + math.exp(-diff))
    z = math.exp(diff)  # no overflow for a large negative difference
    return z / (1.0 + z)


def refuse_settings(spec: str, settings: JudgeSettings) -> None:
    """Refuse judge settings a preference model cannot follow (checked before any model loads).

    Raises:
        UserError: Chain of thought (``--judge-cot``): a preference model writes no reasoning.
    """
    if settings.cot:
        raise UserError(
            f"--judge-cot: {spec} is a preference model, it writes no reasoning; drop --judge-cot "
            "(or judge with language models only)",
            exit_code=USAGE,
        )


class PreferenceModelJudge:
    """A preference model judging pairs by the sigmoid of their reward difference (see the module docstring).

    Args:
        scorer: The preference model.
        settings: The labelling settings (pairing, ``min_margin``, ``aggregate`` in a panel); the principle
            and chain-of-thought settings do not apply.

    Raises:
        UserError: ``settings.cot``: a preference model writes no reasoning.
    """

    def __init__(self, scorer: Scorer, settings: JudgeSettings | None = None) -> None:
        self.scorer = scorer
        self.settings = settings or JudgeSettings()
        refuse_settings(scorer.name, self.settings)
        self.score_calls = 0

    @property
    def model(self) -> str:
        """The preference model's name (``rm:PATH``), as recorded with labels."""
        return self.scorer.name

    def compare(self, pairs: Sequence[Pair]) -> list[Comparison]:
        """Judge every pair by its two rewards; each distinct response is scored once, in one ``score`` call."""
        index: dict[tuple[tuple[tuple[str, str], ...], str], int] = {}
        items: list[tuple[Chat, str]] = []
        slots: list[tuple[int, int]] = []
        for pair in pairs:
            context = tuple((m["role"], m["content"]) for m in pair.conversation)
            ends = []
            for response in (pair.first, pair.second):
                key = (context, response)
                if key not in index:
                    index[key] = len(items)
                    items.append((pair.conversation, response))
                ends.append(index[key])
            slots.append((ends[0], ends[1]))
        rewards: list[float] = []
        if items:
            self.score_calls += 1
            rewards = self.scorer.score(items)
            if len(rewards) != len(items):
                raise RuntimeError(f"{self.model} gave {len(rewards)} rewards for {len(items)} responses")
        return [_comparison(rewards[i], rewards[j]) for i, j in slots]


def _comparison(first: float, second: float) -> Comparison:
    p = preference(first, second)
    return Comparison(
        p_first=p,
        p_first_shown_first=p,
        p_first_shown_second=p,
        principles=(),
        disagreed=False,
        unparsed=int(p is None),
        judgments=[],
        rewards=None if p is None else (first, second),
    )


__all__ = ["PreferenceModelJudge", "Scorer", "preference", "refuse_settings"]
