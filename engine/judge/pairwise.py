"""Pairwise judging: every pair in both orders under its principles, as :class:`Comparison` records.

See :mod:`engine.judge` for how a pair is judged, the chain-of-thought mode
and what happens to judgments that cannot be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from constitution import Constitution, Principle
from engine.backends.base import Backend, Chat, ScoreRequest
from engine.judge.verdicts import COT_LEAD, COT_OPTIONS, OPTIONS, option_probability, read_verdict
from engine.prompts import PACKAGE_ENV, comparison_prompt
from engine.records.labels import TIE, Comparison, JudgeSettings, Judgment, Verdict


@dataclass(frozen=True)
class Pair:
    """Two responses to one conversation, to be judged under some principles."""

    conversation: Chat
    first: str
    second: str
    principles: tuple[Principle, ...]


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

    def compare(self, pairs: Sequence[Pair]) -> list[Comparison]:
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
        grouped: list[list[Judgment]] = [[] for _ in pairs]
        for (index, _, _), judgment in zip(tasks, judgments, strict=True):
            grouped[index].append(judgment)
        return [_combine(pair, found) for pair, found in zip(pairs, grouped, strict=True)]

    def _score(self, requests: list[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        self.score_calls += 1
        return self.backend.score(requests)

    def _direct(self, tasks: Sequence[tuple[int, Principle, Verdict]], chats: Sequence[Chat]) -> list[Judgment]:
        scores = self._score([ScoreRequest(chat, OPTIONS) for chat in chats])
        out = []
        for (_, principle, first_as), logprobs in zip(tasks, scores, strict=True):
            p = option_probability(logprobs)
            pair = (logprobs[0], logprobs[1])
            out.append(
                Judgment(
                    principle_id=principle.id, first_as=first_as, p_a=p, raw_p_a=p, logprobs=pair, unparsed=p is None
                )
            )
        return out

    def _cot(self, tasks: Sequence[tuple[int, Principle, Verdict]], chats: Sequence[Chat]) -> list[Judgment]:
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
            out.append(
                Judgment(
                    principle_id=principle.id,
                    first_as=first_as,
                    p_a=p,
                    raw_p_a=raw,
                    logprobs=logprobs,
                    text=text,
                    stated=stated,
                    unparsed=raw is None,
                )
            )
        return out


def mean(values: Sequence[float]) -> float | None:
    """The mean, or None of nothing."""
    return sum(values) / len(values) if values else None


def vote(p: float | None) -> Literal["first", "second"] | None:
    """Which response a probability P(first is better) points at; None for a tie, or no probability."""
    if p is None or abs(p - 0.5) <= TIE:
        return None
    return "first" if p > 0.5 else "second"


def opposed(a: float | None, b: float | None) -> bool:
    """Two probabilities that point at different responses (neither a tie): two orders, or two judges."""
    return vote(a) is not None and vote(b) is not None and vote(a) != vote(b)


def _combine(pair: Pair, judgments: Sequence[Judgment]) -> Comparison:
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
    first, second = mean(shown_first), mean(shown_second)
    p = None if first is None or second is None else (first + second) / 2
    disagreed = opposed(first, second)
    return Comparison(
        p_first=p,
        p_first_shown_first=first,
        p_first_shown_second=second,
        principles=tuple(principle.id for principle in pair.principles),
        disagreed=disagreed,
        unparsed=sum(j.unparsed for j in judgments),
        judgments=list(judgments),
    )
