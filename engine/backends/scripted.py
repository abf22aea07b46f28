"""A model-free backend whose replies are scripted: for tests and for measuring the engine.

By default every reply is a deterministic function of the conversation (so
reruns and resumed runs see the same text); tests pass ``reply`` and
``scores`` callables to script particular behaviour, e.g. a critic that finds
nothing to change, or a judge that always prefers option (A). The ``scripted``
model spec judges with :func:`longer_is_better`, so a scripted run's judge
labels pairs.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Sequence

from engine.backends.base import Backend, Chat, Completion, SamplingParams, ScoreRequest

ReplyFn = Callable[[Chat, SamplingParams], str]
ScoreFn = Callable[[ScoreRequest], list[float]]


def _digest(chat: Chat) -> str:
    text = "\x1e".join(f"{m['role']}\x1f{m['content']}" for m in chat)
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def default_reply(chat: Chat, params: SamplingParams) -> str:
    """A short reply that depends only on the conversation and the seed."""
    return f"Scripted reply {_digest(chat)}-{params.seed} to: {chat[-1]['content'][:40]}"


def uniform_scores(request: ScoreRequest) -> list[float]:
    """Every option equally likely."""
    return [-math.log(len(request.options))] * len(request.options)


_QUOTED = re.compile(r"<<<RESPONSE ([AB])>>>\n(.*?)\n<<<END RESPONSE \1>>>", re.DOTALL)


def quoted_responses(prompt: str) -> dict[str, str]:
    """The responses a comparison prompt quotes, by slot (``{"A": ..., "B": ...}``), read from its delimiters."""
    return {m.group(1): m.group(2) for m in _QUOTED.finditer(prompt)}


def longer_is_better(request: ScoreRequest) -> list[float]:
    """A judge with a stable taste: of the two quoted responses, the longer one is better (ties broken by hash).

    It reads the responses from the comparison prompt's ``<<<RESPONSE A>>>``
    quotes, so its preference follows the responses, not their slots, and is
    the same in both orders; it gives the preferred option probability 0.8.
    Prompts it cannot read get :func:`uniform_scores`.
    """
    found = quoted_responses(request.chat[-1]["content"])
    if set(found) != {"A", "B"} or len(request.options) != 2 or found["A"] == found["B"]:
        return uniform_scores(request)

    def key(text: str) -> tuple[int, str]:
        return len(text), hashlib.sha256(text.encode()).hexdigest()

    a_wins = key(found["A"]) > key(found["B"])
    return [math.log(0.8), math.log(0.2)] if a_wins else [math.log(0.2), math.log(0.8)]


class ScriptedBackend(Backend):
    """Replies and scores come from plain Python functions.

    Args:
        reply: Maps (chat, params) to the reply text.
        scores: Maps a score request to option log-probabilities.
        name: Model name recorded in provenance.
    """

    def __init__(self, reply: ReplyFn = default_reply, scores: ScoreFn = uniform_scores, name: str = "scripted"):
        self.reply = reply
        self.scores = scores
        self.name = name
        self.calls: list[int] = []
        """Size of each ``generate`` batch, for tests that check batching."""

    def generate(self, chats: Sequence[Chat], params: SamplingParams) -> list[Completion]:
        self.calls.append(len(chats))
        out = []
        for chat in chats:
            text = self.reply(chat, params)
            for stop in params.stop:
                text = text.split(stop, 1)[0]
            words = text.split()
            if len(words) > params.max_new_tokens:  # one word stands in for one token
                text = " ".join(words[: params.max_new_tokens])
            out.append(Completion(text=text, tokens=min(len(words), params.max_new_tokens)))
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        return [self.scores(r) for r in requests]
