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
from engine.judge.pairwise import Judge, Pair, mean, opposed, vote
from engine.records.labels import Comparison, JudgeSettings


class PairJudge(Protocol):
    """What labelling needs of a judge: one model (:class:`Judge`) or several (:class:`Panel`)."""

    settings: JudgeSettings

    @property
    def model(self) -> str: ...

    def compare(self, pairs: Sequence[Pair]) -> list[Comparison]: ...


class Panel:
    """Several judges, one label (see the module docstring).

    Args:
        judges: The judges, each over its own backend; they share the panel's settings.
    """

    def __init__(self, judges: Sequence[Judge]) -> None:
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
            principles=found[0].principles,
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
) -> Judge | Panel:
    """The judge of these model specs: one :class:`Judge`, or a :class:`Panel` of several."""
    judges = [Judge(backends(spec), settings, constitution) for spec in specs]
    return judges[0] if len(judges) == 1 else Panel(judges)
