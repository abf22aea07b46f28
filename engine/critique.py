"""The critique-and-revise loop, batched step by step.

For a chunk of prompts: the policy answers all of them in one batched call;
then, for each round, a principle is sampled per row (by weight, seeded by the
run seed, the prompt id and the round, so a resumed run samples the same), the
critic critiques all active rows in one call, and the policy revises, in one
call, the rows whose critique asked for a change. A row stops early when its
critique finds nothing to change.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from constitution import Constitution
from engine.backends.base import Backend, Chat, SamplingParams
from engine.judge.principles import round_principle
from engine.prompts import critique_prompt, revision_prompt
from engine.records import ConstitutionRef, Round, Trajectory
from engine.sources import PromptItem

_NOTHING_TO_CHANGE = re.compile(
    r"\bno (?:further )?(?:changes?|revisions?|edits?|improvements?)(?: are| is)? (?:needed|necessary|required)\b"
    r"|\bnothing (?:needs|to|should|has) (?:to )?(?:be )?(?:changed?|fix(?:ed)?|revised?)\b",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:revised response|revision|rewritten response)(?:\*\*)?\s*:\s*", re.IGNORECASE)


def finds_nothing_to_change(critique: str) -> bool:
    """Whether a critique says the response needs no change ("No changes needed.")."""
    return bool(_NOTHING_TO_CHANGE.search(critique))


_MARKER = re.compile(r"<{2,}\s*(?:END\s+)?[A-Z][A-Z _-]*>{0,3}<*|<{3,}|>{3,}")


def clean_reply(text: str) -> str:
    """Remove copies of the prompt's quotation markers (``<<<RESPONSE>>>``...) that small models echo."""
    return _MARKER.sub("", text).strip()


def clean_revision(text: str) -> str:
    """Clean a reply and strip a leading "Revised response:" label that models like to add."""
    return _LABEL.sub("", clean_reply(text), count=1).strip()


@dataclass(frozen=True)
class LoopSettings:
    """How many rounds to run and how to sample."""

    revisions: int = 2
    stop_early: bool = True
    seed: int = 0
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass
class _Row:
    item: PromptItem
    initial: str = ""
    current: str = ""
    rounds: list[Round] = field(default_factory=list)
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)


def run_loop(
    items: Sequence[PromptItem],
    constitution: Constitution,
    policy: Backend,
    critic: Backend,
    settings: LoopSettings,
) -> list[Trajectory]:
    """Run the whole loop for a chunk of prompts and return one trajectory per prompt (same order)."""
    rows = [_Row(item) for item in items]
    params = settings.sampling.model_copy(update={"seed": settings.seed})

    initial = _timed_generate(policy, [r.item.messages for r in rows], params, rows, "initial")
    for row, text in zip(rows, initial, strict=True):
        row.initial = row.current = text

    for number in range(1, settings.revisions + 1):
        active = [r for r in rows if not r.stopped]
        if not active:
            break
        principles = [round_principle(constitution, settings.seed, r.item.id, number) for r in active]
        prompts = [
            critique_prompt(p, r.item.messages, r.current, constitution)
            for p, r in zip(principles, active, strict=True)
        ]
        critiques = [clean_reply(c) for c in _timed_generate(critic, prompts, params, active, f"critique_{number}")]
        revise = []
        for r, p, c in zip(active, principles, critiques, strict=True):
            if settings.stop_early and finds_nothing_to_change(c):
                r.rounds.append(Round(principle_id=p.id, critique=c, revision=None, stopped=True, changed=False))
                r.stopped = True
            else:
                revise.append((r, p, c))
        if not revise:
            continue
        prompts = [revision_prompt(p, r.item.messages, r.current, c, constitution) for r, p, c in revise]
        revisions = _timed_generate(policy, prompts, params, [r for r, _, _ in revise], f"revision_{number}")
        for (r, p, c), text in zip(revise, revisions, strict=True):
            text = clean_revision(text)
            changed = bool(text) and text != r.current
            r.rounds.append(Round(principle_id=p.id, critique=c, revision=text, stopped=False, changed=changed))
            if changed:
                r.current = text

    reference = ConstitutionRef(id=constitution.id, version=constitution.version, hash=constitution.content_hash)
    models = {"policy": policy.describe(), "critic": critic.describe()}
    return [
        Trajectory(
            id=r.item.id,
            source=r.item.source,
            category=r.item.category,
            kind=r.item.kind,
            prompt=r.item.messages,
            initial=r.initial,
            rounds=r.rounds,
            final=r.current,
            constitution=reference,
            models=models,
            sampling=settings.sampling,
            seed=settings.seed,
            timings=r.timings,
        )
        for r in rows
    ]


def _timed_generate(
    backend: Backend, chats: Sequence[Chat], params: SamplingParams, rows: Sequence[_Row], step: str
) -> list[str]:
    start = time.perf_counter()
    completions = backend.generate(chats, params)
    share = (time.perf_counter() - start) / max(len(chats), 1)
    for row in rows:
        row.timings[step] = round(share, 6)
    return [c.text.strip() for c in completions]
