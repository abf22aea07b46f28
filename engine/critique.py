"""The critique-and-revise loop, batched step by step.

For a chunk of prompts: the policy answers all of them in one batched call;
then, for each round, a principle is sampled per row (by weight, seeded by the
run seed, the prompt id and the round, so a resumed run samples the same), the
critic critiques all active rows in one call, and the policy revises, in one
call, the rows whose critique asked for a change. A row stops early when its
critique finds nothing to change.

Best-of-n (``LoopSettings.best_of`` > 1): the first answer is the best of
``n`` samples by a preference model (a :class:`Scorer`), and the rounds start
from it. Sample ``k`` of every row comes from one batched call seeded with
:func:`sample_seed` (``n`` calls in all, each as large as the plain first-answer
call). One call holding each chat ``n`` times would not do: the ``scripted``,
``vllm`` and ``openai:`` backends seed each request alone, so repeats of a chat
in one call come back identical (``hf`` draws them from one shared stream and
would differ, but its samples depend on the batch's make-up either way, as its
docstring says). All ``n * rows`` samples are then scored in one
``score`` call and the highest reward is kept (ties: the earlier sample);
sample 0 has the run's seed, so it is the answer a run without best-of gives.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from constitution import Constitution, Principle
from engine.backends.base import Backend, BackendError, Chat, SamplingParams
from engine.backends.reward_model import Scorer
from engine.judge.principles import round_principle
from engine.prompts import critique_prompt, revision_prompt
from engine.records import BestOf, ConstitutionRef, Round, Sample, Trajectory
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
    best_of: int = 1
    """First answers sampled per prompt; above 1 the loop needs a :class:`Scorer` to keep the best."""


def sample_seed(seed: int, index: int) -> int:
    """The sampler seed of best-of sample ``index`` (from 0) in a run seeded with ``seed``.

    Sample 0 has the run's seed itself; the others get a hash of (seed, index),
    below 2**63, so runs with neighbouring seeds do not share samples.
    """
    if index == 0:
        return seed
    digest = hashlib.sha256(f"best-of {seed} {index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class Row:
    """One prompt on its way through the loop, and the steps that move it on.

    Both ways of running the loop advance rows with these methods: :func:`run_loop`
    (one batched call per step for a chunk of rows) and :mod:`engine.pipeline`
    (each row's next request as soon as its last one is back), so a row's
    principles, prompts, cleaning and early stop are the same either way.
    """

    item: PromptItem
    initial: str = ""
    current: str = ""
    rounds: list[Round] = field(default_factory=list)
    stopped: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    best_of: BestOf | None = None

    def answered(self, text: str) -> None:
        """The first answer came back."""
        self.initial = self.current = text

    def critique_request(self, constitution: Constitution, seed: int, number: int) -> tuple[Principle, Chat]:
        """Round ``number``'s principle (:func:`round_principle`) and the critic's prompt under it."""
        principle = round_principle(constitution, seed, self.item.id, number)
        return principle, critique_prompt(principle, self.item.messages, self.current, constitution)

    def critiqued(self, principle: Principle, reply: str, stop_early: bool) -> str | None:
        """Record a critique: the cleaned critique when the row goes on to revise, None when the row stopped."""
        critique = clean_reply(reply)
        if stop_early and finds_nothing_to_change(critique):
            self.rounds.append(
                Round(principle_id=principle.id, critique=critique, revision=None, stopped=True, changed=False)
            )
            self.stopped = True
            return None
        return critique

    def revision_request(self, principle: Principle, critique: str, constitution: Constitution) -> Chat:
        """The policy's prompt to revise the current answer after ``critique``."""
        return revision_prompt(principle, self.item.messages, self.current, critique, constitution)

    def revised(self, principle: Principle, critique: str, reply: str) -> None:
        """Record a revision (an empty or unchanged one keeps the current answer)."""
        text = clean_revision(reply)
        changed = bool(text) and text != self.current
        self.rounds.append(
            Round(principle_id=principle.id, critique=critique, revision=text, stopped=False, changed=changed)
        )
        if changed:
            self.current = text

    def took(self, step: str, seconds: float) -> None:
        """Add ``seconds`` to the row's timing of ``step``."""
        self.timings[step] = round(self.timings.get(step, 0.0) + seconds, 6)

    def trajectory(
        self, reference: ConstitutionRef, models: dict[str, dict[str, Any]], settings: LoopSettings
    ) -> Trajectory:
        """The finished row as a record (``reference``: :meth:`ConstitutionRef.of` the rules, made once per run)."""
        return Trajectory(
            id=self.item.id,
            source=self.item.source,
            category=self.item.category,
            kind=self.item.kind,
            prompt=self.item.messages,
            initial=self.initial,
            rounds=self.rounds,
            final=self.current,
            constitution=reference,
            models=models,
            sampling=settings.sampling,
            seed=settings.seed,
            timings=self.timings,
            best_of=self.best_of,
        )


def loop_models(policy: Backend, critic: Backend) -> dict[str, dict[str, Any]]:
    """What a trajectory records about its models."""
    return {"policy": policy.describe(), "critic": critic.describe()}


def run_loop(
    items: Sequence[PromptItem],
    constitution: Constitution,
    policy: Backend,
    critic: Backend,
    settings: LoopSettings,
    reward: Scorer | None = None,
) -> list[Trajectory]:
    """Run the whole loop for a chunk of prompts and return one trajectory per prompt (same order).

    Args:
        items: The prompts.
        constitution: The rules whose principles the rounds sample.
        policy: Answers and revises.
        critic: Critiques.
        settings: Rounds and sampling.
        reward: The preference model that keeps the best first answer; needed when ``settings.best_of`` > 1.

    Raises:
        BackendError: The preference model gave a reward that is not a finite number.
    """
    if settings.best_of > 1 and reward is None:
        raise ValueError(f"best_of={settings.best_of} needs a reward model to choose among the samples")
    rows = [Row(item) for item in items]
    params = settings.sampling.model_copy(update={"seed": settings.seed})

    if settings.best_of > 1 and reward is not None:
        _best_of(rows, policy, reward, settings.best_of, params)
    else:
        initial = _timed_generate(policy, [r.item.messages for r in rows], params, rows, "initial")
        for row, text in zip(rows, initial, strict=True):
            row.answered(text)

    for number in range(1, settings.revisions + 1):
        active = [r for r in rows if not r.stopped]
        if not active:
            break
        requests = [r.critique_request(constitution, settings.seed, number) for r in active]
        critiques = _timed_generate(critic, [chat for _, chat in requests], params, active, f"critique_{number}")
        revise = []
        for r, (p, _), reply in zip(active, requests, critiques, strict=True):
            critique = r.critiqued(p, reply, settings.stop_early)
            if critique is not None:
                revise.append((r, p, critique))
        if not revise:
            continue
        prompts = [r.revision_request(p, c, constitution) for r, p, c in revise]
        revisions = _timed_generate(policy, prompts, params, [r for r, _, _ in revise], f"revision_{number}")
        for (r, p, c), text in zip(revise, revisions, strict=True):
            r.revised(p, c, text)

    models = loop_models(policy, critic)
    reference = ConstitutionRef.of(constitution)
    return [r.trajectory(reference, models, settings) for r in rows]


def _best_of(rows: Sequence[Row], policy: Backend, reward: Scorer, n: int, params: SamplingParams) -> None:
    """Draw ``n`` first answers per row (one call per sample index), score them in one call, keep the best.

    The ``initial`` timing sums the ``n`` calls; ``best_of`` is the scoring call's share per row.
    """
    chats = [r.item.messages for r in rows]
    seeds = [sample_seed(params.seed, k) for k in range(n)]
    drawn = [
        _timed_generate(policy, chats, params.model_copy(update={"seed": seed}), rows, "initial") for seed in seeds
    ]
    items = [(row.item.messages, drawn[k][i]) for i, row in enumerate(rows) for k in range(n)]
    start = time.perf_counter()
    rewards = reward.score(items)
    share = (time.perf_counter() - start) / max(len(rows), 1)
    if len(rewards) != len(items):
        raise ValueError(f"{reward.name} returned {len(rewards)} rewards for {len(items)} samples")
    for i, row in enumerate(rows):
        mine = rewards[i * n : (i + 1) * n]
        bad = next((value for value in mine if not math.isfinite(value)), None)
        if bad is not None:
            raise BackendError(
                f"{reward.name}: gave a reward of {bad} to an answer to prompt {row.item.id!r}; "
                "the preference model is broken or overflows in this dtype: try --dtype float32, or retrain it"
            )
        kept = max(range(n), key=mine.__getitem__)  # max keeps the first of equal rewards
        samples = [Sample(text=drawn[k][i], seed=seeds[k], reward=mine[k]) for k in range(n)]
        row.best_of = BestOf(n=n, reward_model=reward.name, samples=samples, kept=kept)
        row.answered(drawn[kept][i])
        row.timings["best_of"] = round(share, 6)


def _timed_generate(
    backend: Backend, chats: Sequence[Chat], params: SamplingParams, rows: Sequence[Row], step: str
) -> list[str]:
    """Generate in one call; each row's ``step`` timing grows by its share of the call."""
    start = time.perf_counter()
    completions = backend.generate(chats, params)
    share = (time.perf_counter() - start) / max(len(chats), 1)
    for row in rows:
        row.took(step, share)
    return [c.text.strip() for c in completions]
