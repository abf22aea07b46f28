"""Which sentences made the judge decide: attribution of one pairwise judgment by occlusion.

Sign convention
    Everything is read as the log-odds of P(first response is better), with
    ``p`` clamped to ``[EPSILON, 1 - EPSILON]``: ``L = log(p / (1 - p))``. A
    sentence's **push** is ``L(pair) - L(pair without that sentence)``: positive
    means the sentence pushed the judge toward the FIRST response (for a run's
    pair the first response is the judge's chosen one), negative toward the
    second, whichever response the sentence is in. A good sentence of the first
    response and a bad sentence of the second both push toward the first.

One batched call
    The pair and every variant with one sentence removed go to the judge in ONE
    :meth:`~engine.judge.panel.PairJudge.compare` call (a language-model judge
    scores them all, both orders each, in one backend ``score`` call; a
    preference model scores each distinct response once). Any judge works: a
    language model on any backend that scores, a panel, a preference model.

No signal
    When no push reaches :data:`NO_SIGNAL` in size (a judge that ignores the
    content, or one that is level whatever is removed), there is no ranking to
    give: the attribution says "no signal" and no deletion curve is run.

Faithfulness (the deletion curve)
    The judged winner is the first response when ``L >= 0``, else the second;
    the sentences are ranked by how strongly they push toward that winner. For
    ``k = 1..K`` the ``k`` top-ranked sentences are removed together, and,
    separately, ``k`` sentences drawn at random (seeded, :data:`DRAWS` draws,
    averaged); each curve point is how far the winner's log-odds fell. All of
    these variants go in one more batched call. The attribution is **faithful**
    when the area under the top-k curve (the sum over k) exceeds the random
    one's by more than :data:`MIN_GAP` log-odds; otherwise it says plainly that
    it failed: removing what it ranks first moves the judge no more than
    removing sentences at random.

Other units than one sentence
    :func:`occlude` is the measurement underneath: it judges pairs and the same
    pairs with given spans cut out (:class:`Cut`), all in one batched call, and
    gives each cut's push with the sign above. :func:`explain` cuts one sentence
    at a time; ``cai eval``'s judge-robustness battery cuts the whole text an
    attack inserted, as one unit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.explain.errors import ExplainError
from engine.explain.sentences import Span, split_sentences, without
from engine.judge.pairwise import Pair
from engine.judge.panel import PairJudge
from engine.records import Comparison
from engine.records.base import SCHEMA_VERSION

EPSILON = 1e-6
"""Probabilities are clamped this far from 0 and 1 before taking log-odds."""
NO_SIGNAL = 1e-3
"""Pushes smaller than this (in log-odds) count as none."""
MIN_GAP = 1e-3
"""How much more (summed over k, in log-odds) the top-k deletions must move the judge than random ones."""
DRAWS = 5
"""Random draws per k in the deletion curve."""

Side = Literal["first", "second"]


def log_odds(p: float) -> float:
    """``log(p / (1 - p))`` with ``p`` clamped to ``[EPSILON, 1 - EPSILON]``."""
    p = min(max(p, EPSILON), 1.0 - EPSILON)
    return math.log(p / (1.0 - p))


@dataclass(frozen=True)
class Sentence:
    """One sentence of one response and its push toward the first response (None: its variant was unreadable)."""

    side: Side
    index: int
    start: int
    end: int
    text: str
    push: float | None
    rank: int | None = None
    """1 for the sentence that pushes hardest toward the judged winner; None without a signal."""


@dataclass
class Attribution:
    """Why the judge decided one pair (see the module docstring for the sign and the checks)."""

    judge: str
    principles: tuple[str, ...]
    first: str
    second: str
    first_name: str
    second_name: str
    p_first: float
    sentences: list[Sentence]
    variants: int
    """Variants scored (the pair itself not counted), over all calls."""
    top: int
    seed: int
    signal: bool
    deletion_k: list[int] = field(default_factory=list)
    deletion_top: list[float] = field(default_factory=list)
    deletion_random: list[float] = field(default_factory=list)
    faithful: bool | None = None
    """None: not checked (no signal)."""

    @property
    def log_odds(self) -> float:
        """Log-odds of P(first better), clamped."""
        return log_odds(self.p_first)

    @property
    def winner(self) -> Side:
        """The response the judge prefers (the first one on a level judgment)."""
        return "first" if self.log_odds >= 0 else "second"

    def ranked(self) -> list[Sentence]:
        """The sentences by rank (strongest push toward the winner first); empty without a signal."""
        return sorted((s for s in self.sentences if s.rank is not None), key=lambda s: s.rank or 0)

    @property
    def verdict(self) -> str:
        """One line: no signal, faithful, or not faithful, with the numbers that decided it."""
        if not self.signal:
            return (
                f"no signal: no sentence moves the judge's log-odds by {NO_SIGNAL} or more; the judge's decision "
                "does not rest on any one sentence (it may ignore the content), so there is no ranking"
            )
        top, rand = sum(self.deletion_top), sum(self.deletion_random)
        how = (
            f"removing the top 1..{len(self.deletion_k)} sentences lowered the winner's log-odds by {top:.3f} in all, "
            f"removing as many at random by {rand:.3f}"
        )
        if self.faithful:
            return f"faithful: {how}"
        return f"NOT FAITHFUL: {how}; this ranking does not explain the decision better than chance"

    def to_dict(self) -> dict[str, Any]:
        """The attribution as JSON (``schema_version``, the judge, p, log-odds, pushes, deletion curve, verdict)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": "attribution",
            "method": "occlusion (one sentence removed at a time)",
            "sign": f"push = log-odds(P(first better)) of the pair minus that without the sentence; positive: "
            f"toward the first response ({self.first_name})",
            "judge": self.judge,
            "principles": list(self.principles),
            "first_name": self.first_name,
            "second_name": self.second_name,
            "p_first": self.p_first,
            "log_odds": self.log_odds,
            "winner": self.winner,
            "signal": self.signal,
            "variants": self.variants,
            "seed": self.seed,
            "texts": {"first": self.first, "second": self.second},
            "sentences": [
                {
                    "side": s.side,
                    "index": s.index,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "push": s.push,
                    "rank": s.rank,
                }
                for s in self.sentences
            ],
            "deletion": {
                "k": self.deletion_k,
                "top": self.deletion_top,
                "random": self.deletion_random,
                "draws": DRAWS,
                "min_gap": MIN_GAP,
            },
            "faithful": self.faithful,
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class Cut:
    """A part of a pair to remove: character spans of the first response and of the second."""

    first: tuple[Span, ...] = ()
    second: tuple[Span, ...] = ()

    def apply(self, pair: Pair) -> Pair:
        """The pair with these spans cut out (each response then stripped, as :func:`without` does)."""
        return Pair(pair.conversation, _cut(pair.first, self.first), _cut(pair.second, self.second), pair.principles)


def _cut(text: str, spans: Sequence[Span]) -> str:
    kept, at = [], 0
    for span in sorted(spans, key=lambda s: s.start):
        kept.append(text[at : max(at, span.start)])
        at = max(at, span.end)
    kept.append(text[at:])
    return "".join(kept).strip()


@dataclass(frozen=True)
class Occluded:
    """The judge on one pair, and the push of each of its cuts (module docstring for the sign)."""

    comparison: Comparison
    """The judge's verdict on the pair itself."""
    pushes: list[float | None]
    """Per cut: log-odds of the pair minus log-odds without the cut; None when either verdict was unreadable."""

    @property
    def p_first(self) -> float | None:
        """P(first better) of the pair itself (None: unreadable)."""
        return _p(self.comparison)


def occlude(judge: PairJudge, items: Sequence[tuple[Pair, Sequence[Cut]]]) -> list[Occluded]:
    """Judge each pair and each pair with each of its cuts removed, all in ONE batched ``compare`` call.

    Identical pairs (the same conversation, responses and principles) are judged once.

    Args:
        judge: Any pair judge.
        items: Each pair with the cuts to measure on it.

    Returns:
        One :class:`Occluded` per item, in order.
    """
    planned = [[pair, *(cut.apply(pair) for cut in cuts)] for pair, cuts in items]
    slot: dict[tuple[str, str, str, tuple[str, ...]], int] = {}
    unique: list[Pair] = []
    where: list[list[int]] = []
    for pairs in planned:
        where.append([])
        for pair in pairs:
            key = (repr(pair.conversation), pair.first, pair.second, tuple(p.id for p in pair.principles))
            if key not in slot:
                slot[key] = len(unique)
                unique.append(pair)
            where[-1].append(slot[key])
    found = judge.compare(unique) if unique else []
    out = []
    for indices in where:
        base = _p(found[indices[0]])
        pushes = [
            None if base is None or (q := _p(found[i])) is None else log_odds(base) - log_odds(q) for i in indices[1:]
        ]
        out.append(Occluded(found[indices[0]], pushes))
    return out


def _p(found: Any) -> float | None:
    p: float | None = found.p_first
    return p


def explain(
    judge: PairJudge,
    pair: Pair,
    *,
    top: int = 3,
    seed: int = 0,
    names: tuple[str, str] = ("first", "second"),
) -> Attribution:
    """Attribute the judge's decision on ``pair`` to the sentences of its two responses (module docstring).

    Args:
        judge: Any pair judge (language model, panel, preference model).
        pair: The pair; its responses must each hold at least one sentence.
        top: K, the longest prefix of the ranking the deletion curve removes.
        seed: Seed of the random deletions.
        names: What to call the first and second response (``chosen``/``rejected`` for a run's pair).

    Raises:
        ExplainError: A response is empty, or the judge could not read its verdict on the pair itself.
    """
    spans = {"first": split_sentences(pair.first), "second": split_sentences(pair.second)}
    for side, name in zip(("first", "second"), names, strict=True):
        if not spans[side]:
            raise ExplainError(
                f"the {name} response is empty: there is nothing to explain; give two responses with text"
            )
    texts = {"first": pair.first, "second": pair.second}
    slots: list[tuple[Side, int]] = [(side, i) for side in ("first", "second") for i in range(len(spans[side]))]
    cuts = [Cut(first=(spans[side][i],)) if side == "first" else Cut(second=(spans[side][i],)) for side, i in slots]
    (found,) = occlude(judge, [(pair, cuts)])
    p = found.p_first
    if p is None:
        raise ExplainError(
            f"{judge.model} gave no readable verdict on this pair (both orders are needed), so nothing can be "
            "attributed; try another --judge-model, or one without chain of thought"
        )
    pushes = found.pushes
    sign = 1.0 if log_odds(p) >= 0 else -1.0
    signal = any(v is not None and abs(v) >= NO_SIGNAL for v in pushes)
    order = sorted((i for i, v in enumerate(pushes) if v is not None), key=lambda i: (-sign * (pushes[i] or 0.0), i))
    ranks = {i: r + 1 for r, i in enumerate(order)} if signal else {}
    sentences = [
        Sentence(side, i, s.start, s.end, texts[side][s.start : s.end], pushes[n], ranks.get(n))
        for n, (side, i) in enumerate(slots)
        for s in (spans[side][i],)
    ]
    out = Attribution(
        judge=judge.model,
        principles=tuple(p.id for p in pair.principles),
        first=pair.first,
        second=pair.second,
        first_name=names[0],
        second_name=names[1],
        p_first=p,
        sentences=sentences,
        variants=len(cuts),
        top=top,
        seed=seed,
        signal=signal,
    )
    if signal:
        _deletion_curve(judge, pair, spans, slots, order, out)
    return out


def _variant(pair: Pair, spans: dict[str, list[Span]], removed: set[tuple[Side, int]]) -> Pair:
    first = without(pair.first, spans["first"], {i for side, i in removed if side == "first"})
    second = without(pair.second, spans["second"], {i for side, i in removed if side == "second"})
    return Pair(pair.conversation, first, second, pair.principles)


def _deletion_curve(
    judge: PairJudge,
    pair: Pair,
    spans: dict[str, list[Span]],
    slots: Sequence[tuple[Side, int]],
    order: Sequence[int],
    out: Attribution,
) -> None:
    """Fill in the deletion curve and the faithfulness verdict of ``out`` (one batched call)."""
    rng = random.Random(out.seed)
    ks = list(range(1, min(out.top, len(order)) + 1))
    planned: list[set[tuple[Side, int]]] = []
    for k in ks:
        planned.append({slots[i] for i in order[:k]})
        planned.extend({slots[i] for i in rng.sample(range(len(slots)), k)} for _ in range(DRAWS))
    found = judge.compare([_variant(pair, spans, removed) for removed in planned])
    out.variants += len(planned)
    base, sign = out.log_odds, (1.0 if out.winner == "first" else -1.0)

    def fall(f: Any) -> float:
        q = _p(f)
        return 0.0 if q is None else sign * (base - log_odds(q))

    step = 1 + DRAWS
    for n, k in enumerate(ks):
        chunk = found[n * step : (n + 1) * step]
        out.deletion_k.append(k)
        out.deletion_top.append(fall(chunk[0]))
        out.deletion_random.append(sum(fall(f) for f in chunk[1:]) / DRAWS)
    out.faithful = sum(out.deletion_top) - sum(out.deletion_random) > MIN_GAP
