"""A model-free backend whose replies are scripted: for tests and for measuring the engine.

By default every reply is a deterministic function of the conversation (so
reruns and resumed runs see the same text); tests pass ``reply`` and
``scores`` callables to script particular behaviour, e.g. a critic that finds
nothing to change, or a judge that always prefers option (A).
"""

from __future__ import annotations

import hashlib
import math
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
