"""Several judges labelling together: each judges every pair, and their probabilities are combined.

A :class:`Panel` has the interface of a :class:`~engine.judge.pairwise.Judge`
(``settings``, ``model``, ``compare``), so labelling, the judge gate and
``cai judge-eval`` take either. Each combined
:class:`~engine.records.Comparison` keeps every judge's own probability
(``by_judge``) and whether the judges' votes split (``split``: the review page
filters on it); every :class:`~engine.records.Judgment` names the judge that
made it. The panel's probability is the mean of the judges' (``aggregate:
mean``), or the share of the judges that voted for the first response
(``aggregate: majority``; an even split is a tie).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from constitution import Constitution
from engine.backends.base import Backend
from engine.backends.reward_model import Scorer, is_reward_spec, load_reward_model
from engine.judge.pairwise import Judge, Pair, mean, opposed, vote
from engine.judge.preference_model import PreferenceModelJudge, refuse_settings
from engine.records.labels import Comparison, JudgeSettings


class PairJudge(Protocol):
    """What labelling needs of a judge: a language model (:class:`Judge`), a preference model, or a :class:`Panel`."""

    settings: JudgeSettings

    @property
    def model(self) -> str: ...

    def compare(self, pairs: Sequence[Pair]) -> list[Comparison]: ...


class Panel:
    """Several judges, one label (see the module docstring).

    Args:
        judges: The judges, each over its own model; they share the panel's settings.
    """

    def __init__(self, judges: Sequence[PairJudge]) -> None:
        if len(judges) < 2:
            raise ValueError("a panel needs at least two judges")
        self.judges = list(judges)
        self.settings = judges[0].settings
        self.names = panel_names([j.model for j in judges])

    @property
    def model(self) -> str:
        """The judges' names joined, as recorded with labels."""
        return " + ".join(self.names)

    def compare(self, pairs: Sequence[Pair]) -> list[Comparison]:
        """Every judge judges every pair (each in one batched call per step); the results are combined per pair."""
        results = [judge.compare(pairs) for judge in self.judges]
        return [self._combine(found) for found in zip(*results, strict=True)]

    def _combine(self, found: Sequence[Comparison]) -> Comparison:
        by_judge = {name: c.p_first for name, c in zip(self.names, found, strict=True)}
        votes = [vote(p) for p in by_judge.values()]
        known = [p for p in by_judge.values() if p is not None]
        if self.settings.aggregate == "majority":
            cast = [v for v in votes if v is not None]
            p = (cast.count("first") / len(cast) if cast else 0.5) if known else None
        else:
            p = mean(known)
        first = mean([c.p_first_shown_first for c in found if c.p_first_shown_first is not None])
        second = mean([c.p_first_shown_second for c in found if c.p_first_shown_second is not None])
        judgments = [
            j.model_copy(update={"judge": name}) for name, c in zip(self.names, found, strict=True) for j in c.judgments
        ]
        return Comparison(
            p_first=p,
            p_first_shown_first=first,
            p_first_shown_second=second,
            principles=tuple(dict.fromkeys(p for c in found for p in c.principles)),  # none from a preference model
            disagreed=opposed(first, second),
            unparsed=sum(c.unparsed for c in found),
            judgments=judgments,
            by_judge=by_judge,
            split=len({v for v in votes if v is not None}) > 1,
        )


def panel_names(models: Sequence[str]) -> list[str]:
    """The judges' names, numbered where two share one (``default #1``, ``default #2``)."""
    return [f"{m} #{i + 1}" if models.count(m) > 1 else m for i, m in enumerate(models)]


def make_judge(
    specs: Sequence[str],
    backends: Callable[[str], Backend],
    settings: JudgeSettings,
    constitution: Constitution | None = None,
    *,
    rewards: Callable[[str], Scorer] = load_reward_model,
) -> PairJudge:
    """The judge of these model specs: one judge, or a :class:`Panel` of several.

    Args:
        specs: Model specs; ``rm:PATH`` names a preference model, anything else a language model.
        backends: Loads a language model's backend.
        settings: How to judge (shared by a panel).
        constitution: Supplies a custom ``comparison`` template to language-model judges.
        rewards: Loads the preference model of an ``rm:`` spec (pass a ``functools.partial`` of
            :func:`~engine.backends.reward_model.load_reward_model` to set its batch size, dtype or device).

    Raises:
        BackendError: A model cannot be loaded (an ``rm:`` spec with no path, no such folder, not a preference model).
        UserError: Chain of thought asked of a preference model.
    """
    for spec in specs:
        if is_reward_spec(spec):
            refuse_settings(spec, settings)  # before any model loads
    judges: list[PairJudge] = [
        PreferenceModelJudge(rewards(spec), settings)
        if is_reward_spec(spec)
        else Judge(backends(spec), settings, constitution)
        for spec in specs
    ]
    return judges[0] if len(judges) == 1 else Panel(judges)
