"""The AI-feedback judge: which of two responses better follows a principle, as a soft label.

How a pair is judged
    The judge sees the comparison prompt (``comparison.jinja``, or the
    constitution's own ``comparison`` template): the conversation, the
    principle's comparison question, and the two responses quoted as (A) and
    (B). It does not generate: the backend's ``score`` returns the
    log-probabilities of the option strings ``"(A)"`` and ``"(B)"`` as the start
    of the judge's reply, and their normalised probabilities are its answer.
    With the SmolLM2 tokenizer both options are ``"(" letter ")"``: the shared
    ``"("`` cancels in the normalisation, so the label rests on the letter
    token the prompt asks for.

    Every pair is judged in **both orders** (first response as (A), then as
    (B)) and the two probabilities are averaged, so a judge that always answers
    (A) gives 0.5 and the pair is marked ``disagreed``. With ``principles=K``
    the pair is judged under K principles sampled by weight (without
    replacement, seeded, recorded) and the mean is taken. All pairs x orders x
    principles of one :meth:`Judge.compare` call go to the backend in ONE
    ``score`` call (plus one ``generate`` call in chain-of-thought mode).

Chain-of-thought mode
    The judge first writes its reasoning (``comparison_cot.jinja`` asks it to
    reason, then end with ``Answer: (A)`` or ``Answer: (B)``; one batched
    ``generate`` call). With ``cot_reader="score"`` (default) the reasoning is
    cut where the judge's own ``Answer:`` line starts, and the options are
    scored as that reasoning followed by the fixed lead ``"\\nAnswer: ("`` and
    ``"A)"`` / ``"B)"``. The backend interface scores options only as the start
    of a reply, so each option string carries the reasoning and the lead in
    front: that common prefix has the same log-probability under both options
    and cancels in the normalisation, so the result is P(letter | prompt,
    reasoning, lead). The label is thus the judge's own probability at the
    point where it gives its verdict, even when its reasoning was cut short by
    the token limit. A reply with no text at all cannot be read and is marked
    unparsed. With ``cot_reader="parse"`` (for backends without log-probs)
    the verdict is read from the text; a reply without one is unparsed.

    As in the Constitutional AI paper, chain-of-thought probabilities are
    over-confident, so each order's probability is clamped to ``band``
    (default 0.4-0.6) before averaging. The judge's text and its stated
    verdict are kept for audit.

Unreadable judgments
    An order whose answer cannot be read (unparsed reply, non-finite scores)
    is kept with its raw text and marked ``unparsed``. A principle counts for a
    pair only when BOTH orders were read (one order alone would bring the
    position bias back); a pair with no such principle has no probability and
    never becomes a label.

Choosing the pair of a trajectory
    Candidates are the initial answer and every revision that changed the
    text (duplicates removed). ``pairing="best-worst"`` (default) judges all
    pairs of candidates (n is small: 2 or 3 for 1 or 2 rounds), ranks them by
    their mean probability of beating the others, and labels best vs worst
    with the judge's DIRECT probability for that pair (oriented so that
    ``chosen_prob >= 0.5``; in a preference cycle the direct judgment wins over
    the ranking). ``pairing="final-initial"`` judges only the final answer
    against the first one. ``margin = 2 * chosen_prob - 1``; ties (level
    candidates, a perfect cycle) and margins below ``min_margin`` are dropped
    and counted. :func:`choose_pair` is a pure function of the judged
    probabilities; :class:`LabelStats` summarises a labelling run.

Accuracy check
    :func:`load_comparisons`, :func:`comparison_principles` and
    :func:`evaluate_judge` run the judge on human-labelled comparisons
    (``cai judge-eval``; the shipped set is ``data/judge/comparisons.jsonl``)
    and report accuracy, accuracy per order and the position-bias rate.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from constitution import Constitution, Principle
from constitution.errors import did_you_mean
from constitution.yamlfile import not_a_regular_file
from engine.backends.base import Backend, Chat, SamplingParams, ScoreRequest
from engine.prompts import PACKAGE_ENV, comparison_prompt
from engine.records import Trajectory

OPTIONS = ("(A)", "(B)")
"""Option strings scored in the direct mode: what the prompt asks the judge to write first."""

COT_LEAD = "\nAnswer: ("
"""Text put after the judge's reasoning in chain-of-thought scoring; the options continue it."""

COT_OPTIONS = ("A)", "B)")
"""What follows :data:`COT_LEAD` for each option."""

TIE = 1e-6
"""Probabilities within this distance of 0.5 are ties."""

Verdict = Literal["A", "B"]
Pairing = Literal["best-worst", "final-initial"]
Status = Literal["labelled", "tie", "low-margin", "unparsed", "single"]
DROPPED: tuple[Status, ...] = ("tie", "low-margin", "unparsed")


class JudgeSettings(BaseModel):
    """How the judge labels pairs (recorded with every label)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    principles: int = Field(
        default=1, ge=1, description="Principles sampled per pair; their probabilities are averaged."
    )
    seed: int = Field(default=0, description="Seed of principle sampling (with the row id) and of CoT sampling.")
    cot: bool = Field(default=False, description="Let the judge reason before answering (chain of thought).")
    cot_reader: Literal["score", "parse"] = Field(
        default="score",
        description="CoT: score the options after the reasoning (needs log-probs) or parse the written verdict.",
    )
    band: tuple[float, float] = Field(
        default=(0.4, 0.6), description="CoT: each order's probability is clamped to this interval."
    )
    cot_max_new_tokens: int = Field(default=160, ge=1, description="CoT: most tokens of reasoning.")
    cot_temperature: float = Field(default=0.0, ge=0, description="CoT: sampling temperature (0: greedy).")
    pairing: Pairing = Field(
        default="best-worst", description="best-worst: all candidates compared; final-initial: final vs first only."
    )
    min_margin: float = Field(
        default=0.02, ge=0, le=1, description="Pairs with margin (2 * chosen_prob - 1) below this are dropped."
    )

    @model_validator(mode="after")
    def _band_holds_half(self) -> JudgeSettings:
        low, high = self.band
        if not 0 <= low <= 0.5 <= high <= 1:
            raise ValueError(f"band must satisfy 0 <= low <= 0.5 <= high <= 1, not {low}-{high}")
        return self

    @property
    def cot_sampling(self) -> SamplingParams:
        """Sampling of the chain-of-thought reasoning."""
        return SamplingParams(max_new_tokens=self.cot_max_new_tokens, temperature=self.cot_temperature, seed=self.seed)


# ---------------------------------------------------------------- principles


def sample_principles(constitution: Constitution, k: int, seed: int, key: str) -> tuple[Principle, ...]:
    """``k`` distinct principles sampled by weight, the same for the same seed and key (e.g. a row id).

    All of them when ``k`` is at least the number of principles.
    """
    rng = random.Random(f"{seed}\x1f{key}\x1fjudge")
    pool = list(constitution.principles)
    out: list[Principle] = []
    while pool and len(out) < k:
        index = rng.choices(range(len(pool)), weights=[p.weight for p in pool])[0]
        out.append(pool.pop(index))
    return tuple(out)


# -------------------------------------------------------------- verdict text

_ANSWER = re.compile(r"(?i:\banswer\b)[\s:*_=-]{0,6}(?:(?i:is)\s*:?\s*)?(?:\(([AB])\)|\b([AB])\b(?=\s*(?:[.*)\]]|$)))")
_STATED = re.compile(
    r"(?:\(([AB])\)|\b(?:[Rr]esponse|[Oo]ption)\s+\(?([AB])\)?)\s+is\s+(?:clearly\s+|much\s+)?(?:the\s+)?"
    r"(?:better|safer|preferable|more\s+\w+)"
)


def read_verdict(text: str) -> tuple[Verdict | None, int]:
    """The verdict a judge wrote, and where its reasoning ends.

    The last ``Answer: (A)``-style line wins; the reasoning ends where it
    starts. Without one, a sentence like "(B) is better" counts when every such
    sentence names the same option; the reasoning is then the whole text.

    Returns:
        (``"A"``, ``"B"`` or None when no verdict can be read, end of the reasoning).
    """
    answers = list(_ANSWER.finditer(text))
    if answers:
        last = answers[-1]
        return _letter(last.group(1) or last.group(2)), last.start()
    stated = {_letter(m.group(1) or m.group(2)) for m in _STATED.finditer(text)}
    return (stated.pop() if len(stated) == 1 else None), len(text)


def _letter(value: str) -> Verdict:
    return "A" if value.upper() == "A" else "B"


def option_probability(logprobs: Sequence[float]) -> float | None:
    """P(A) normalised over the two options, or None when the scores are unusable (NaN, both -inf)."""
    a, b = logprobs
    if math.isnan(a) or math.isnan(b) or (a == b == -math.inf) or math.inf in (a, b):
        return None
    if a == b:
        return 0.5
    return 1.0 / (1.0 + math.exp(min(b - a, 700.0)))


# ---------------------------------------------------------------- judging


@dataclass(frozen=True)
class Pair:
    """Two responses to one conversation, to be judged under some principles."""

    conversation: Chat
    first: str
    second: str
    principles: tuple[Principle, ...]


@dataclass(frozen=True)
class OrderJudgment:
    """The judge's answer for one pair, one principle, one order of the responses."""

    principle_id: str
    first_as: Verdict
    """The slot the pair's first response held in this prompt (the second held the other)."""
    p_a: float | None
    """P(the response in slot (A) is better), after clamping; None when unparsed."""
    raw_p_a: float | None
    """The same before clamping (equal outside chain-of-thought mode)."""
    logprobs: tuple[float, float] | None
    """Option log-probabilities as scored; None when nothing was scored."""
    text: str | None = None
    """Chain of thought: the judge's reply, exactly as generated."""
    stated: Verdict | None = None
    """Chain of thought: the verdict the reply wrote, if any."""
    unparsed: bool = False

    @property
    def p_first(self) -> float | None:
        """P(the pair's first response is better) according to this order."""
        if self.p_a is None:
            return None
        return self.p_a if self.first_as == "A" else 1.0 - self.p_a


@dataclass(frozen=True)
class PairJudgment:
    """The judged preference between a pair's first and second response."""

    p_first: float | None
    """P(first is better): mean over the principles read in both orders; None when there is none."""
    p_first_shown_first: float | None
    """Mean P(first is better) over those principles with the first response shown as (A)."""
    p_first_shown_second: float | None
    """The same with the first response shown as (B)."""
    principles: tuple[str, ...]
    """Principles the pair was judged under (all sampled ones, read or not)."""
    disagreed: bool
    """The two orders point at different responses: the judge named the same slot both times."""
    unparsed: int
    """Order judgments that could not be read."""
    judgments: tuple[OrderJudgment, ...] = ()

    @property
    def winner(self) -> Literal["first", "second", "tie"] | None:
        """Which response the judge prefers; None when the pair could not be judged."""
        if self.p_first is None:
            return None
        if abs(self.p_first - 0.5) <= TIE:
            return "tie"
        return "first" if self.p_first > 0.5 else "second"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record, per-order judgments included."""
        return asdict(self)


class Judge:
    """Pairwise AI-feedback judge over a backend (see the module docstring).

    Args:
        backend: The judge model.
        settings: How to judge; defaults to :class:`JudgeSettings`'s defaults.
        constitution: Supplies a custom ``comparison`` template, if it has one.
            The chain-of-thought prompt is always the package's
            ``comparison_cot.jinja`` (the schema has no custom slot for it yet).
    """

    def __init__(
        self, backend: Backend, settings: JudgeSettings | None = None, constitution: Constitution | None = None
    ) -> None:
        self.backend = backend
        self.settings = settings or JudgeSettings()
        self.constitution = constitution
        self.score_calls = 0
        self.generate_calls = 0

    @property
    def model(self) -> str:
        """The judge model's name, as recorded with labels."""
        return self.backend.name

    def prompt(self, principle: Principle, conversation: Chat, response_a: str, response_b: str) -> Chat:
        """The judge's prompt for one order (chain-of-thought or direct, as configured)."""
        if not self.settings.cot:
            return comparison_prompt(principle, conversation, response_a, response_b, self.constitution)
        values = {
            "conversation": [{"role": m["role"], "content": m["content"]} for m in conversation],
            "response_a": response_a,
            "response_b": response_b,
            "question": principle.comparison_question,
            "principle": principle.model_dump(),
        }
        text = PACKAGE_ENV.get_template("comparison_cot.jinja").render(**values)
        return [{"role": "user", "content": text.strip()}]

    def compare(self, pairs: Sequence[Pair]) -> list[PairJudgment]:
        """Judge every pair in both orders under its principles, with one batched backend call per step."""
        tasks: list[tuple[int, Principle, Verdict]] = []
        chats: list[Chat] = []
        for index, pair in enumerate(pairs):
            for principle in pair.principles:
                tasks.append((index, principle, "A"))
                chats.append(self.prompt(principle, pair.conversation, pair.first, pair.second))
                tasks.append((index, principle, "B"))
                chats.append(self.prompt(principle, pair.conversation, pair.second, pair.first))
        judgments = self._cot(tasks, chats) if self.settings.cot else self._direct(tasks, chats)
        grouped: list[list[OrderJudgment]] = [[] for _ in pairs]
        for (index, _, _), judgment in zip(tasks, judgments, strict=True):
            grouped[index].append(judgment)
        return [_combine(pair, found) for pair, found in zip(pairs, grouped, strict=True)]

    def _score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        self.score_calls += 1
        return self.backend.score(requests)

    def _direct(self, tasks: Sequence[tuple[int, Principle, Verdict]], chats: Sequence[Chat]) -> list[OrderJudgment]:
        scores = self._score([ScoreRequest(chat, OPTIONS) for chat in chats])
        out = []
        for (_, principle, first_as), logprobs in zip(tasks, scores, strict=True):
            p = option_probability(logprobs)
            pair = (logprobs[0], logprobs[1])
            out.append(OrderJudgment(principle.id, first_as, p, p, pair, unparsed=p is None))
        return out

    def _cot(self, tasks: Sequence[tuple[int, Principle, Verdict]], chats: Sequence[Chat]) -> list[OrderJudgment]:
        settings = self.settings
        replies: list[str] = []
        if chats:
            self.generate_calls += 1
            replies = [c.text for c in self.backend.generate(chats, settings.cot_sampling)]
        read = [read_verdict(text) for text in replies]
        requests: dict[int, ScoreRequest] = {}
        if settings.cot_reader == "score":
            for i, (chat, text, (_, end)) in enumerate(zip(chats, replies, read, strict=True)):
                reasoning = text[:end].rstrip()
                if text.strip():
                    requests[i] = ScoreRequest(chat, tuple(reasoning + COT_LEAD + o for o in COT_OPTIONS))
        scored = dict(zip(requests, self._score(list(requests.values())), strict=True))
        low, high = settings.band
        out = []
        for i, ((_, principle, first_as), text, (stated, _)) in enumerate(zip(tasks, replies, read, strict=True)):
            logprobs: tuple[float, float] | None = None
            if settings.cot_reader == "score":
                raw = None
                if i in scored:
                    logprobs = (scored[i][0], scored[i][1])
                    raw = option_probability(logprobs)
            else:
                raw = None if stated is None else (1.0 if stated == "A" else 0.0)
            p = None if raw is None else min(max(raw, low), high)
            out.append(OrderJudgment(principle.id, first_as, p, raw, logprobs, text, stated, unparsed=raw is None))
        return out


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _combine(pair: Pair, judgments: Sequence[OrderJudgment]) -> PairJudgment:
    by_principle: dict[str, dict[Verdict, float | None]] = {}
    for j in judgments:
        by_principle.setdefault(j.principle_id, {})[j.first_as] = j.p_first
    shown_first: list[float] = []
    shown_second: list[float] = []
    for orders in by_principle.values():
        a, b = orders.get("A"), orders.get("B")
        if a is not None and b is not None:
            shown_first.append(a)
            shown_second.append(b)
    first, second = _mean(shown_first), _mean(shown_second)
    p = None if first is None or second is None else (first + second) / 2
    disagreed = (
        first is not None
        and second is not None
        and min(abs(first - 0.5), abs(second - 0.5)) > TIE
        and (first > 0.5) != (second > 0.5)
    )
    return PairJudgment(
        p_first=p,
        p_first_shown_first=first,
        p_first_shown_second=second,
        principles=tuple(principle.id for principle in pair.principles),
        disagreed=disagreed,
        unparsed=sum(j.unparsed for j in judgments),
        judgments=tuple(judgments),
    )


# ----------------------------------------------------------- choosing pairs


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
    strengths = tuple(_mean(w) for w in wins)
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


def candidates(trajectory: Trajectory) -> list[tuple[str, str]]:
    """(name, text) of the initial answer and each revision that changed the text, without duplicates."""
    out = [("initial", trajectory.initial)]
    seen = {trajectory.initial}
    for number, step in enumerate(trajectory.rounds, start=1):
        if step.revision is not None and step.changed and step.revision not in seen:
            seen.add(step.revision)
            out.append((f"revision_{number}", step.revision))
    return out


def pairs_to_judge(n: int, pairing: Pairing) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, that a pairing strategy judges among ``n`` candidates."""
    if n < 2:
        return []
    if pairing == "final-initial":
        return [(0, n - 1)]
    return list(itertools.combinations(range(n), 2))


@dataclass(frozen=True)
class Preference:
    """The judge's preference pair for one trajectory, or why there is none."""

    row_id: str
    status: Status
    chosen: str | None
    """The preferred response; None unless the row is labelled."""
    rejected: str | None
    chosen_from: str | None
    """Which candidate was (or, for a low-margin row, would have been) chosen: ``initial`` or ``revision_N``."""
    rejected_from: str | None
    chosen_prob: float | None
    """Soft label: P(chosen is better than rejected)."""
    margin: float | None
    judge_model: str
    principles: tuple[str, ...]
    candidates: tuple[str, ...]
    strengths: tuple[float | None, ...]
    comparisons: tuple[tuple[int, int, PairJudgment], ...] = field(default=(), repr=False)
    """Every judged pair of candidates (indices into ``candidates``) with its judgment."""

    @property
    def labelled(self) -> bool:
        return self.status == "labelled"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready record, with every comparison and its per-order judgments."""
        data = asdict(self)
        data["comparisons"] = [
            {"first": self.candidates[i], "second": self.candidates[j], **judged.to_dict()}
            for i, j, judged in self.comparisons
        ]
        return data


def judge_trajectories(
    judge: Judge, trajectories: Sequence[Trajectory], constitution: Constitution
) -> list[Preference]:
    """Label a batch of trajectories: every pair they need is judged in one :meth:`Judge.compare` call.

    Principles are sampled per trajectory (seeded by the judge's seed and the
    row id), so all pairs of a trajectory are judged under the same ones.
    """
    settings = judge.settings
    plans = []
    pairs: list[Pair] = []
    for t in trajectories:
        options = candidates(t)
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
        labelled = choice.status == "labelled" and choice.chosen is not None and choice.rejected is not None
        out.append(
            Preference(
                row_id=t.id,
                status=choice.status,
                chosen=options[choice.chosen][1] if labelled and choice.chosen is not None else None,
                rejected=options[choice.rejected][1] if labelled and choice.rejected is not None else None,
                chosen_from=options[choice.chosen][0] if choice.chosen is not None else None,
                rejected_from=options[choice.rejected][0] if choice.rejected is not None else None,
                chosen_prob=choice.chosen_prob,
                margin=choice.margin,
                judge_model=judge.model,
                principles=tuple(p.id for p in principles),
                candidates=tuple(name for name, _ in options),
                strengths=choice.strengths,
                comparisons=tuple((i, j, r) for (i, j), r in zip(wanted, results, strict=True)),
            )
        )
    return out


# ------------------------------------------------------------ label quality


QUANTILE_NAMES = ("min", "p10", "p25", "median", "p75", "p90", "max")


def quantiles(values: Sequence[float], points: Sequence[float] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)) -> list[float]:
    """Linear-interpolated quantiles of ``values`` (empty when there are none)."""
    data = sorted(values)
    if not data:
        return []
    out = []
    for q in points:
        pos = q * (len(data) - 1)
        low = math.floor(pos)
        high = min(low + 1, len(data) - 1)
        out.append(data[low] + (data[high] - data[low]) * (pos - low))
    return out


@dataclass(frozen=True)
class LabelStats:
    """How trustworthy a labelling run's labels are."""

    rows: int
    labelled: int
    dropped: dict[str, int]
    """Rows without a label, by reason: tie, low-margin, unparsed."""
    single: int
    """Rows with one distinct candidate (no revision changed the answer): nothing to judge."""
    revision_chosen: int
    """Labelled rows whose chosen response is a revision."""
    revision_beat_initial: int
    """Judged (initial, revision) comparisons that the revision won."""
    initial_comparisons: int
    """Judged (initial, revision) comparisons that were not ties."""
    comparisons: int
    disagreements: int
    """Comparisons whose two orders pointed at different responses."""
    unparsed_judgments: int
    margins: dict[str, float]
    """Quantiles of the margin over rows with a judged pair (labelled, tie, low-margin)."""

    @classmethod
    def of(cls, preferences: Sequence[Preference]) -> LabelStats:
        """Statistics of a labelling run's results."""
        tally = LabelTally()
        for p in preferences:
            tally.add(
                p.status,
                p.chosen_from,
                p.margin,
                ((i == 0, r.winner, r.disagreed, r.unparsed) for i, _, r in p.comparisons),
            )
        return tally.stats()

    @property
    def pairs(self) -> int:
        """Rows that had something to judge."""
        return self.rows - self.single

    @property
    def dropped_rate(self) -> float | None:
        return sum(self.dropped.values()) / self.pairs if self.pairs else None

    @property
    def revision_chosen_rate(self) -> float | None:
        return self.revision_chosen / self.labelled if self.labelled else None

    @property
    def revision_win_rate(self) -> float | None:
        return self.revision_beat_initial / self.initial_comparisons if self.initial_comparisons else None

    @property
    def disagreement_rate(self) -> float | None:
        return self.disagreements / self.comparisons if self.comparisons else None

    def to_dict(self) -> dict[str, Any]:
        """Counts, rates and margin quantiles, JSON-ready."""
        return asdict(self) | {
            "pairs": self.pairs,
            "dropped_rate": self.dropped_rate,
            "revision_chosen_rate": self.revision_chosen_rate,
            "revision_win_rate": self.revision_win_rate,
            "disagreement_rate": self.disagreement_rate,
        }

    def render(self) -> str:
        """A short plain-text report."""
        dropped = ", ".join(f"{n} {reason}" for reason, n in self.dropped.items() if n) or "none"
        margins = " ".join(f"{k} {v:.2f}" for k, v in self.margins.items()) or "n/a"
        return "\n".join(
            [
                f"label quality: {self.labelled} of {self.pairs} pairs labelled "
                f"({self.single} rows had no revision to compare)",
                f"  dropped: {dropped} ({_pct(self.dropped_rate)} of pairs)",
                f"  revision chosen: {_pct(self.revision_chosen_rate)} of labelled pairs; "
                f"revision beat the first answer in {_pct(self.revision_win_rate)} "
                f"of {self.initial_comparisons} direct comparisons",
                f"  orders disagreed (position bias): {_pct(self.disagreement_rate)} of {self.comparisons} comparisons"
                + (f"; {self.unparsed_judgments} judgments unparsed" if self.unparsed_judgments else ""),
                f"  margin: {margins}",
            ]
        )


class LabelTally:
    """Label-quality counts gathered one labelled row at a time, so a run of any length streams through."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.revision_chosen = 0
        self.revision_beat_initial = 0
        self.initial_comparisons = 0
        self.comparisons = 0
        self.disagreements = 0
        self.unparsed = 0
        self.margins = array("d")

    def add(
        self,
        status: str,
        chosen_from: str | None,
        margin: float | None,
        comparisons: Iterable[tuple[bool, str | None, bool, int]],
    ) -> None:
        """Count one row: its status, chosen candidate, margin, and each comparison as
        (first candidate is the initial answer, winner, orders disagreed, unparsed judgments)."""
        self.status[status] += 1
        self.revision_chosen += status == "labelled" and (chosen_from or "").startswith("revision")
        for against_initial, winner, disagreed, unparsed in comparisons:
            self.comparisons += 1
            self.disagreements += disagreed
            self.unparsed += unparsed
            if against_initial and winner in ("first", "second"):
                self.initial_comparisons += 1
                self.revision_beat_initial += winner == "second"
        if margin is not None:
            self.margins.append(margin)

    def stats(self) -> LabelStats:
        """The statistics of everything counted."""
        return LabelStats(
            rows=sum(self.status.values()),
            labelled=self.status["labelled"],
            dropped={reason: self.status[reason] for reason in DROPPED},
            single=self.status["single"],
            revision_chosen=self.revision_chosen,
            revision_beat_initial=self.revision_beat_initial,
            initial_comparisons=self.initial_comparisons,
            comparisons=self.comparisons,
            disagreements=self.disagreements,
            unparsed_judgments=self.unparsed,
            margins=dict(zip(QUANTILE_NAMES, (round(m, 4) for m in quantiles(self.margins)), strict=False)),
        )


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{100 * rate:.0f}%"


# ----------------------------------------------------- judge accuracy check

BUILTIN_COMPARISONS = Path(__file__).parent / "data" / "judge" / "comparisons.jsonl"
"""The shipped human-labelled comparisons (``cai judge-eval`` without a file)."""


class JudgeDataError(Exception):
    """A comparisons file cannot be used; the message names the file and line."""

    def __init__(self, message: str, *, file: str, line: int | None = None) -> None:
        self.message, self.file, self.line = message, file, line
        super().__init__(f"{file}:{line}: {message}" if line is not None else f"{file}: {message}")


@dataclass(frozen=True)
class LabelledComparison:
    """A human judgment: which of two responses to a conversation is better."""

    id: str
    conversation: Chat
    response_a: str
    response_b: str
    better: Verdict
    principle: str | None = None
    """Principle to judge under (a principle id); None: sample from the constitution."""
    category: str | None = None
    file: str = ""
    line: int = 0


def load_comparisons(source: str | Path) -> list[LabelledComparison]:
    """Read human-labelled comparisons from a JSONL file (``builtin`` for the shipped set).

    A run folder instead gives the pairs people reviewed in it with ``cai review``
    (:func:`engine.review.decisions.reviewed_comparisons`).

    Each line is an object with the conversation as ``prompt`` (text, or a list
    of ``{"role", "content"}``) or ``conversation`` / ``messages`` (such a
    list), optional ``id`` (unique in the file), ``principle`` (a principle id)
    and ``category`` (a tag of the taxonomy), and the responses in one of three
    layouts:

    * ``response_a``, ``response_b`` and ``better`` (``"A"`` or ``"B"``);
    * ``chosen`` and ``rejected`` (the chosen one is better);
    * ``corrects`` and ``incorrects`` (lists): every correct/incorrect pair is one comparison.

    Raises:
        JudgeDataError: The file is missing or unreadable, a line is not a JSON
            object, a field is missing or has the wrong type, a line mixes two
            layouts, an id repeats, or a category is not in the taxonomy (file:line).
    """
    path = BUILTIN_COMPARISONS if str(source) == "builtin" else Path(source)
    where = "builtin" if str(source) == "builtin" else str(source)
    if path.is_dir() and (path / "run.json").exists():
        from engine.review.decisions import reviewed_comparisons

        return reviewed_comparisons(path)
    problem = not_a_regular_file(path)
    if problem:
        raise JudgeDataError(problem, file=where)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise JudgeDataError("no such file", file=where) from None
    except IsADirectoryError:
        raise JudgeDataError("is a folder, not a JSONL file", file=where) from None
    except UnicodeDecodeError:
        raise JudgeDataError("not UTF-8 text", file=where) from None
    except OSError as exc:
        raise JudgeDataError(f"cannot read: {exc.strerror}", file=where) from None
    out: list[LabelledComparison] = []
    given: dict[str, str] = {}  # id -> the line that has it
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JudgeDataError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=where, line=number) from None
        if not isinstance(row, dict):
            raise JudgeDataError(f"each line must be a JSON object, got {_json_kind(row)}", file=where, line=number)
        out.extend(_comparisons(row, where, number, given))
    if not out:
        raise JudgeDataError("no comparisons in this file", file=where)
    return out


_LAYOUTS = {
    "response_a/response_b/better": ("response_a", "response_b", "better"),
    "chosen/rejected": ("chosen", "rejected"),
    "corrects/incorrects": ("corrects", "incorrects"),
}
_CONVERSATION_KEYS = ("prompt", "conversation", "messages")


def _json_kind(value: Any) -> str:
    """What a JSON value is, for messages: ``a number``, ``a list``..."""
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "text", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _comparisons(row: dict[str, Any], where: str, line: int, given: dict[str, str]) -> list[LabelledComparison]:
    """The comparisons of one line; ``given`` holds the ids earlier lines gave (and gets this line's)."""

    def fail(message: str) -> JudgeDataError:
        return JudgeDataError(message, file=where, line=line)

    def text(key: str) -> str:
        value = row.get(key)
        if value is None:
            raise fail(f"{key}: missing")
        if not isinstance(value, str):
            raise fail(f"{key}: must be text, got {_json_kind(value)}")
        if not value.strip():
            raise fail(f"{key}: must be non-empty text")
        return value

    def optional(key: str) -> str | None:
        value = row.get(key)
        if value is not None and not isinstance(value, str):
            raise fail(f"{key}: must be text, got {_json_kind(value)}")
        return value

    layouts = [name for name, keys in _LAYOUTS.items() if any(key in row for key in keys)]
    if len(layouts) > 1:
        raise fail(f"holds two layouts ({' and '.join(layouts)}); give the responses in one of them")
    conversation = _conversation(row, fail)
    principle, category = optional("principle"), optional("category")
    if category is not None:
        from constitution.taxonomy import HARM_TAGS, QUALITY_TAGS, TAGS

        if category not in TAGS:
            raise fail(
                f"category: {category!r} is not a tag of the taxonomy{did_you_mean(category, TAGS)} "
                f"(harm tags: {', '.join(HARM_TAGS)}; also {', '.join(QUALITY_TAGS)})"
            )
    raw_id = row.get("id")
    if raw_id is not None and (isinstance(raw_id, bool) or not isinstance(raw_id, str | int)):
        raise fail(f"id: must be text or a whole number, got {_json_kind(raw_id)}")
    ident = "" if raw_id is None else str(raw_id).strip()
    if ident and ident in given:
        raise fail(f"id {ident!r} is already used on {given[ident]}; give each comparison its own id")
    if ident:
        given[ident] = f"line {line}"
    else:
        ident = f"line-{line}"  # the id made for a line without one
        if ident in given:
            raise fail(f"this line has no id, and {given[ident]} gives {ident!r}, the id made for it; add an id")
        given[ident] = f"line {line} (the id made for that line, which has none)"

    def make(suffix: str, a: str, b: str, better: Verdict) -> LabelledComparison:
        return LabelledComparison(ident + suffix, conversation, a, b, better, principle, category, where, line)

    if layouts == ["corrects/incorrects"]:
        lists = []
        for key in ("corrects", "incorrects"):
            value = row.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
                got = "" if isinstance(value, list) else f" (got {_json_kind(value)})"
                raise fail(f"{key}: must be a non-empty list of texts{got}")
            lists.append(value)
        return [
            make(f"-{i}-{j}", good, bad, "A")
            for (i, good), (j, bad) in itertools.product(enumerate(lists[0]), enumerate(lists[1]))
        ]
    if layouts == ["chosen/rejected"]:
        return [make("", text("chosen"), text("rejected"), "A")]
    better = row.get("better")
    letter = better.strip().upper().removeprefix("RESPONSE_") if isinstance(better, str) else None
    if letter not in ("A", "B"):
        shown = "missing" if better is None else f"{better!r} is not A or B"
        raise fail(f"better: {shown} (or give chosen/rejected, or corrects/incorrects)")
    return [make("", text("response_a"), text("response_b"), _letter(letter))]


def _conversation(row: dict[str, Any], fail: Callable[[str], JudgeDataError]) -> Chat:
    keys = [key for key in _CONVERSATION_KEYS if row.get(key) is not None]
    if not keys:
        raise fail("prompt: missing (give prompt, conversation or messages)")
    if len(keys) > 1:
        raise fail(f"{' and '.join(keys)}: give the conversation once (prompt, conversation or messages)")
    key = keys[0]
    value = row[key]
    if key == "prompt" and isinstance(value, str):
        if not value.strip():
            raise fail("prompt: empty (the user's message the two responses answer)")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        expected = "text or a non-empty list of messages" if key == "prompt" else "a non-empty list of messages"
        got = "an empty list" if value == [] else _json_kind(value)
        raise fail(f"{key}: must be {expected} ({{'role': ..., 'content': ...}}), got {got}")
    chat: Chat = []
    for i, m in enumerate(value):
        ok = isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        if not ok or m["role"] not in ("system", "user", "assistant"):
            raise fail(f"{key}[{i}]: must be {{'role': system|user|assistant, 'content': text}}")
        chat.append({"role": m["role"], "content": m["content"]})
    if chat[-1]["role"] != "user":
        raise fail(f"{key}: must end with a user message (the responses answer it)")
    return chat


def comparison_principles(
    items: Sequence[LabelledComparison], constitution: Constitution, k: int, seed: int
) -> list[tuple[Principle, ...]]:
    """The principles each comparison is judged under: its own, or ``k`` sampled by weight.

    Raises:
        JudgeDataError: A comparison names a principle the constitution lacks.
    """
    known = {p.id: p for p in constitution.principles}
    out = []
    for item in items:
        if item.principle is None:
            out.append(sample_principles(constitution, k, seed, item.id))
        elif item.principle in known:
            out.append((known[item.principle],))
        else:
            hint = did_you_mean(item.principle, known)
            raise JudgeDataError(
                f"principle: {item.principle!r} is not in constitution {constitution.id!r}{hint}",
                file=item.file,
                line=item.line,
            )
    return out


@dataclass(frozen=True)
class JudgeEval:
    """How well the judge agrees with human labels, and how much the order of the responses sways it."""

    file: str
    judge_model: str
    settings: dict[str, Any]
    n: int
    correct: int
    ties: int
    """Comparisons the judge scored exactly even (counted as wrong)."""
    unparsed: int
    """Comparisons without a probability (no principle read in both orders); counted as wrong."""
    correct_better_as_a: int
    """Correct when the better response was shown as (A)."""
    correct_better_as_b: int
    """Correct when the better response was shown as (B)."""
    position_biased: int
    """Comparisons whose two orders disagreed: the judge named the same slot both times."""
    picked_a: int
    picked: int
    """Order judgments that named a slot (not tied, read), and how many of them named (A)."""
    mean_p_correct: float | None
    kept: int
    """Comparisons whose margin (``|2p - 1|``) reaches the judge's ``min_margin``: those labelling would keep."""
    kept_correct: int
    """Of those, how many the judge got right."""
    margins: dict[str, float]
    """Quantiles of the margin over all comparisons with a probability."""
    by_category: dict[str, dict[str, float]]
    seconds: float
    verdicts_written: int | None = None
    """Chain of thought: replies that wrote a verdict of their own (of ``2 * n * principles``)."""
    results: tuple[tuple[str, float | None, PairJudgment], ...] = field(default=(), repr=False)
    """(comparison id, P(the human-preferred response is better), the judgment) for each comparison."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def accuracy_better_as_a(self) -> float:
        return self.correct_better_as_a / self.n if self.n else 0.0

    @property
    def accuracy_better_as_b(self) -> float:
        return self.correct_better_as_b / self.n if self.n else 0.0

    @property
    def position_bias_rate(self) -> float:
        return self.position_biased / self.n if self.n else 0.0

    @property
    def picked_a_rate(self) -> float | None:
        return self.picked_a / self.picked if self.picked else None

    @property
    def kept_accuracy(self) -> float | None:
        return self.kept_correct / self.kept if self.kept else None

    def to_dict(self) -> dict[str, Any]:
        """Counts and rates, JSON-ready (per-comparison results included)."""
        data = asdict(self)
        data["results"] = [{"id": i, "p_correct": p, "judgment": r.to_dict()} for i, p, r in self.results]
        return data | {
            "accuracy": self.accuracy,
            "accuracy_better_as_a": self.accuracy_better_as_a,
            "accuracy_better_as_b": self.accuracy_better_as_b,
            "position_bias_rate": self.position_bias_rate,
            "picked_a_rate": self.picked_a_rate,
            "kept_accuracy": self.kept_accuracy,
        }

    def render(self) -> str:
        """A short plain-text report."""
        mean = "n/a" if self.mean_p_correct is None else f"{self.mean_p_correct:.3f}"
        lines = [
            f"judge {self.judge_model} on {self.file}: {self.n} comparisons, {self.seconds:.1f} s",
            f"  accuracy (both orders averaged): {_pct(self.accuracy)} ({self.correct}/{self.n}); "
            f"ties {self.ties}, unparsed {self.unparsed}; mean P(human choice) {mean}",
            f"  accuracy with the better response as (A): {_pct(self.accuracy_better_as_a)}; "
            f"as (B): {_pct(self.accuracy_better_as_b)}",
            f"  position bias: orders disagreed on {_pct(self.position_bias_rate)} of comparisons; "
            f"(A) named in {_pct(self.picked_a_rate)} of {self.picked} single-order answers",
            "  margin |2p-1|: " + (" ".join(f"{k} {v:.3f}" for k, v in self.margins.items()) or "n/a"),
            f"  at min margin {self.settings.get('min_margin', 0):g}: {self.kept} of {self.n} would be labelled, "
            f"{_pct(self.kept_accuracy)} of them right",
        ]
        if self.verdicts_written is not None:
            replies = sum(len(r.judgments) for _, _, r in self.results)
            lines.append(f"  chain of thought: {self.verdicts_written} of {replies} replies wrote a verdict")
        if len(self.by_category) > 1:
            lines.append(
                "  by category: "
                + ", ".join(f"{c} {_pct(v['accuracy'])} of {int(v['n'])}" for c, v in sorted(self.by_category.items()))
            )
        return "\n".join(lines)


def evaluate_judge(
    judge: Judge,
    items: Sequence[LabelledComparison],
    principles: Sequence[tuple[Principle, ...]],
    *,
    file: str = "",
    chunk: int = 256,
) -> JudgeEval:
    """Run the judge on human-labelled comparisons (both orders, batched) and measure agreement.

    Args:
        judge: The judge to check.
        items: The comparisons (see :func:`load_comparisons`).
        principles: Principles per comparison (see :func:`comparison_principles`).
        file: Name of the source, for the report.
        chunk: Most comparisons per :meth:`Judge.compare` call.
    """
    start = time.perf_counter()
    judged: list[PairJudgment] = []
    pairs = [Pair(i.conversation, i.response_a, i.response_b, p) for i, p in zip(items, principles, strict=True)]
    for begin in range(0, len(pairs), chunk):
        judged.extend(judge.compare(pairs[begin : begin + chunk]))
    seconds = time.perf_counter() - start

    def toward(item: LabelledComparison, p_first: float | None) -> float | None:
        """P(the human-preferred response is better) from P(response_a is better)."""
        if p_first is None:
            return None
        return p_first if item.better == "A" else 1.0 - p_first

    def right(p: float | None) -> bool:
        return p is not None and p > 0.5 + TIE

    correct = ties = unparsed = as_a = as_b = biased = 0
    categories: dict[str, list[int]] = {}
    results = []
    for item, r in zip(items, judged, strict=True):
        p = toward(item, r.p_first)
        results.append((item.id, p, r))
        correct += right(p)
        ties += p is not None and abs(p - 0.5) <= TIE
        unparsed += p is None
        # p_first_shown_first: response_a shown as (A); so the better one is (A) there iff better == "A".
        shown_a, shown_b = (
            (r.p_first_shown_first, r.p_first_shown_second)
            if item.better == "A"
            else (r.p_first_shown_second, r.p_first_shown_first)
        )
        as_a += right(toward(item, shown_a))
        as_b += right(toward(item, shown_b))
        biased += r.disagreed
        tally = categories.setdefault(item.category or "uncategorised", [0, 0])
        tally[0] += 1
        tally[1] += right(p)
    readable = [j.p_a for r in judged for j in r.judgments if j.p_a is not None and abs(j.p_a - 0.5) > TIE]
    known = [p for _, p, _ in results if p is not None]
    margins = [abs(2 * p - 1) for p in known]
    kept = [p for p in known if abs(2 * p - 1) > 2 * TIE and abs(2 * p - 1) >= judge.settings.min_margin]
    return JudgeEval(
        file=file,
        judge_model=judge.model,
        settings=judge.settings.model_dump(mode="json"),
        n=len(items),
        correct=correct,
        ties=ties,
        unparsed=unparsed,
        correct_better_as_a=as_a,
        correct_better_as_b=as_b,
        position_biased=biased,
        picked_a=sum(p > 0.5 for p in readable),
        picked=len(readable),
        mean_p_correct=_mean(known),
        kept=len(kept),
        kept_correct=sum(p > 0.5 for p in kept),
        margins=dict(zip(QUANTILE_NAMES, (round(m, 4) for m in quantiles(margins)), strict=False)),
        by_category={c: {"n": n, "accuracy": ok / n} for c, (n, ok) in categories.items()},
        seconds=round(seconds, 3),
        verdicts_written=sum(j.stated is not None for r in judged for j in r.judgments) if judge.settings.cot else None,
        results=tuple(results),
    )


__all__ = [
    "BUILTIN_COMPARISONS",
    "COT_LEAD",
    "OPTIONS",
    "Choice",
    "Judge",
    "JudgeDataError",
    "JudgeEval",
    "JudgeSettings",
    "LabelStats",
    "LabelledComparison",
    "OrderJudgment",
    "Pair",
    "PairJudgment",
    "Preference",
    "candidates",
    "choose_pair",
    "comparison_principles",
    "evaluate_judge",
    "judge_trajectories",
    "load_comparisons",
    "option_probability",
    "pairs_to_judge",
    "quantiles",
    "read_verdict",
    "sample_principles",
]
