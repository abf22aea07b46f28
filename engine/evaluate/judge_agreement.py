"""How several judges agree on the same labelled items, and how good their combined label is.

:func:`agreement` takes one :class:`~engine.evaluate.judge_accuracy.JudgeEval`
per judge (same items, same protocol) and gives Cohen's kappa for each pair of
judges, Krippendorff's alpha over all of them, the accuracy of the aggregate
label (mean probability, and majority vote), and for each pair how often the
two are right and wrong together: side by side, a weak judge against a strong
one shows how often the weak supervisor agrees with the strong, and where the
strong one is right and the weak one wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from engine.evaluate.calibration import wilson_interval
from engine.evaluate.judge_accuracy import JudgeEval, right
from engine.judge.agreement import cohen_kappa, krippendorff_alpha, majority
from engine.judge.pairwise import mean
from engine.judge.panel import panel_names, vote
from engine.judge.stats import pct


@dataclass(frozen=True)
class PairAgreement:
    """Two judges on the same items."""

    first: str
    second: str
    kappa: float | None
    agree: int
    """Items on which both voted, and voted alike."""
    voted: int
    """Items on which both voted."""
    both_right: int
    first_only: int
    """Items the first judge got right and the second wrong."""
    second_only: int
    both_wrong: int


@dataclass(frozen=True)
class Agreement:
    """Agreement between several judges, and the accuracy of their aggregate label."""

    judges: tuple[str, ...]
    n: int
    alpha: float | None
    """Krippendorff's alpha (nominal) over all judges' votes."""
    pairs: tuple[PairAgreement, ...]
    mean_correct: int
    """Items the aggregate label (mean probability over the judges) gets right."""
    majority_correct: int
    """Items the majority vote gets right (an even split counts as wrong)."""
    disagreed: tuple[str, ...]
    """Ids of the items the judges' votes split on."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_accuracy"] = self.mean_correct / self.n if self.n else 0.0
        data["majority_accuracy"] = self.majority_correct / self.n if self.n else 0.0
        data["mean_interval"] = list(wilson_interval(self.mean_correct, self.n))
        return data

    def render(self) -> str:
        alpha = "n/a" if self.alpha is None else f"{self.alpha:.3f}"
        low, high = wilson_interval(self.mean_correct, self.n)
        lines = [
            f"agreement of {len(self.judges)} judges on {self.n} items: Krippendorff's alpha {alpha}; "
            f"votes split on {len(self.disagreed)}",
            f"  aggregate label (mean probability): {pct(self.mean_correct / self.n if self.n else 0)} "
            f"({self.mean_correct}/{self.n}), 95% interval {pct(low)}-{pct(high)}; "
            f"majority vote: {pct(self.majority_correct / self.n if self.n else 0)}",
        ]
        for p in self.pairs:
            kappa = "n/a" if p.kappa is None else f"{p.kappa:.3f}"
            lines.append(
                f"  {p.first} vs {p.second}: Cohen's kappa {kappa}, agree on {p.agree} of {p.voted}; "
                f"both right {p.both_right}, only {p.first} right {p.first_only}, "
                f"only {p.second} right {p.second_only}, both wrong {p.both_wrong}"
            )
        return "\n".join(lines)


def agreement(evals: Sequence[JudgeEval]) -> Agreement:
    """Agreement between judges scored on the same items (in the same order).

    Raises:
        ValueError: Fewer than two judges, or they were scored on different items.
    """
    if len(evals) < 2:
        raise ValueError("agreement needs at least two judges")
    ids = [s.id for s in evals[0].results]
    if any([s.id for s in e.results] != ids for e in evals):
        raise ValueError("the judges were scored on different items")
    names = panel_names([e.judge_model for e in evals])
    ps = [[s.p for s in e.results] for e in evals]
    votes = [[vote(p) for p in row] for row in ps]
    by_item = list(zip(*votes, strict=True))
    pairs = []
    for i in range(len(evals)):
        for j in range(i + 1, len(evals)):
            both = [(a, b) for a, b in zip(votes[i], votes[j], strict=True) if a is not None and b is not None]
            ok_i, ok_j = [s.right for s in evals[i].results], [s.right for s in evals[j].results]
            pairs.append(
                PairAgreement(
                    first=names[i],
                    second=names[j],
                    kappa=cohen_kappa(votes[i], votes[j]),
                    agree=sum(a == b for a, b in both),
                    voted=len(both),
                    both_right=sum(a and b for a, b in zip(ok_i, ok_j, strict=True)),
                    first_only=sum(a and not b for a, b in zip(ok_i, ok_j, strict=True)),
                    second_only=sum(b and not a for a, b in zip(ok_i, ok_j, strict=True)),
                    both_wrong=sum(not a and not b for a, b in zip(ok_i, ok_j, strict=True)),
                )
            )
    means = [mean([p for p in column if p is not None]) for column in zip(*ps, strict=True)]
    return Agreement(
        judges=tuple(names),
        n=len(ids),
        alpha=krippendorff_alpha(by_item),
        pairs=tuple(pairs),
        mean_correct=sum(right(p) for p in means),
        majority_correct=sum(majority(item) == "first" for item in by_item),  # p is P(the human's choice)
        disagreed=tuple(i for i, item in zip(ids, by_item, strict=True) if len({v for v in item if v}) > 1),
    )
