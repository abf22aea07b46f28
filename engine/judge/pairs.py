"""Choosing a trajectory's preference pair from the judged comparisons of its candidates.

:func:`judge_trajectories` judges the pairs a batch of trajectories needs in
one :meth:`Judge.compare` call and returns one :class:`Label` per row;
:func:`choose_pair` is a pure function of the judged probabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from constitution import Constitution, Principle
from engine.judge.pairwise import Pair, mean
from engine.judge.panel import PairJudge
from engine.judge.principles import sample_principles
from engine.records.labels import TIE, Comparison, Label, Pairing, Status
from engine.records.trajectory import Trajectory


@dataclass(frozen=True)
class Choice:
    """Which candidates make the preference pair, from the judged probabilities alone."""

    status: Status
    chosen: int | None = None
    rejected: int | None = None
    chosen_prob: float | None = None
    """P(chosen is better than rejected) as the judge gave it for that pair, >= 0.5."""
    margin: float | None = None
    """``2 * chosen_prob - 1``: 0 for a tie, 1 for a certain judge."""
    strengths: tuple[float | None, ...] = ()
    """Each candidate's mean probability of beating the others it was compared with."""


def choose_pair(n: int, probs: Mapping[tuple[int, int], float | None], min_margin: float = 0.0) -> Choice:
    """Pick chosen and rejected among ``n`` candidates from pairwise judgments.

    Args:
        n: Number of candidates.
        probs: ``probs[(i, j)]`` is P(candidate i is better than candidate j),
            for the pairs that were judged (``i < j``; None when unreadable).
        min_margin: Pairs whose margin is below this are dropped as ``low-margin``.

    Returns:
        The best candidate by mean win probability against the worst one, with
        the judge's direct probability for that pair; status ``single`` for
        fewer than two candidates, ``unparsed`` when the pair has no
        probability, ``tie`` or ``low-margin`` when dropped.
    """
    if n < 2:
        return Choice("single")
    wins: list[list[float]] = [[] for _ in range(n)]
    for (i, j), p in probs.items():
        if p is not None:
            wins[i].append(p)
            wins[j].append(1.0 - p)
    strengths = tuple(mean(w) for w in wins)
    ranked = [i for i in range(n) if strengths[i] is not None]
    if len(ranked) < 2:
        return Choice("unparsed", strengths=strengths)
    ranked.sort(key=lambda i: (-(strengths[i] or 0.0), i))
    best, worst = ranked[0], ranked[-1]
    if (strengths[best] or 0.0) - (strengths[worst] or 0.0) <= TIE:  # all level (or a perfect cycle)
        return Choice("tie", chosen_prob=0.5, margin=0.0, strengths=strengths)
    direct = probs.get((best, worst))
    if direct is None and (worst, best) in probs:
        back = probs[(worst, best)]
        direct = None if back is None else 1.0 - back
    if direct is None:
        return Choice("unparsed", strengths=strengths)
    if direct < 0.5:  # a preference cycle: the direct judgment of this pair decides its direction
        best, worst, direct = worst, best, 1.0 - direct
    margin = 2 * direct - 1
    if margin <= 2 * TIE:
        return Choice("tie", chosen_prob=0.5, margin=0.0, strengths=strengths)
    return Choice("low-margin" if margin < min_margin else "labelled", best, worst, direct, margin, strengths)


def pairs_to_judge(n: int, pairing: Pairing) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, that a pairing strategy judges among ``n`` candidates."""
    if n < 2:
        return []
    if pairing == "final-initial":
        return [(0, n - 1)]
    return list(itertools.combinations(range(n), 2))


def judge_trajectories(judge: PairJudge, trajectories: Sequence[Trajectory], constitution: Constitution) -> list[Label]:
    """Label a batch of trajectories: every pair they need is judged in one :meth:`Judge.compare` call.

    Principles are sampled per trajectory (seeded by the judge's seed and the
    row id), so all pairs of a trajectory are judged under the same ones.
    """
    settings = judge.settings
    plans = []
    pairs: list[Pair] = []
    for t in trajectories:
        options = t.candidates()
        principles = sample_principles(constitution, settings.principles, settings.seed, t.id)
        wanted = pairs_to_judge(len(options), settings.pairing)
        plans.append((t, options, principles, wanted, len(pairs)))
        pairs.extend(Pair(t.prompt, options[i][1], options[j][1], principles) for i, j in wanted)
    judged = judge.compare(pairs)
    out = []
    for t, options, principles, wanted, start in plans:
        results = judged[start : start + len(wanted)]
        choice = choose_pair(
            len(options), {ij: r.p_first for ij, r in zip(wanted, results, strict=True)}, settings.min_margin
        )
        out.append(
            Label(
                id=t.id,
                status=choice.status,
                chosen_from=options[choice.chosen][0] if choice.chosen is not None else None,
                rejected_from=options[choice.rejected][0] if choice.rejected is not None else None,
                chosen_prob=choice.chosen_prob,
                margin=choice.margin,
                judge_model=judge.model,
                principles=_judged_under(principles, results),
                candidates=[name for name, _ in options],
                strengths=list(choice.strengths),
                comparisons=[r.named(options[i][0], options[j][0]) for (i, j), r in zip(wanted, results, strict=True)],
            )
        )
    return out


def _judged_under(sampled: Sequence[Principle], results: Sequence[Comparison]) -> list[str]:
    """The principles a row's comparisons were judged under: the sampled ones, none from a preference model.

    A row with nothing to compare keeps the sampled ones (what a judge would have used).
    """
    if not results:
        return [p.id for p in sampled]
    return list(dict.fromkeys(p for r in results for p in r.principles))
