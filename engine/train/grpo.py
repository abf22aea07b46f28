"""Online RLAIF: the constitutional judge as the reward of TRL's ``GRPOTrainer``.

:class:`ConstitutionalReward` is a TRL reward function (``reward_funcs=[...]``)
that asks the AI-feedback judge (:class:`engine.judge.Judge`) how well each
completion follows principles sampled from the constitution. The judge is
pairwise, so a completion is always judged against something, in both orders
(position bias cancels) and under the same principles for every completion of
one prompt:

``group``
    Against the other completions of the same prompt (GRPO samples several
    per prompt): the reward is the completion's mean of ``2 p - 1`` over its
    comparisons, where ``p`` is the judged probability that it is the better
    one. It ranks the group, which is what GRPO's group-relative advantage
    uses, and needs no reference answer.
``reference``
    Against a reference answer for the prompt (the dataset's ``reference``
    column; ``cai train grpo --data RUN`` takes the run's final revisions):
    the reward is ``2 p - 1`` for the completion beating the reference.

Rewards lie in [-1, 1]. A completion the judge could not read gets ``None``
(TRL ignores it). Principles are sampled per prompt and training step, seeded,
so a long run covers the constitution. The reward function works with any
backend, so it is reusable outside ``cai train``::

    from engine.backends import load_backend
    from engine.judge import Judge
    reward = ConstitutionalReward(Judge(load_backend("default")), constitution.load("default"))
    GRPOTrainer(model=..., reward_funcs=[reward], ...)
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from engine.train.errors import TrainError

if TYPE_CHECKING:
    from constitution import Constitution
    from engine.judge import Judge
    from engine.train.data import TrainData

RewardMode = Literal["group", "reference"]
REFERENCE_COLUMN = "reference"


def conversation_of(prompt: Any) -> list[dict[str, str]]:
    """A TRL prompt (text or chat messages) as chat messages."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]


def completion_text(completion: Any) -> str:
    """A TRL completion's text (the last message of a conversational one)."""
    if isinstance(completion, str):
        return completion
    return str(completion[-1]["content"]) if completion else ""


def _key(conversation: list[dict[str, str]]) -> str:
    return hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).hexdigest()[:16]


class ConstitutionalReward:
    """TRL reward function: the constitutional judge's verdict on each completion (see the module docstring).

    Args:
        judge: The AI-feedback judge (its backend stays frozen during training).
        constitution: Principles are sampled from it by weight.
        principles: Principles per prompt; their probabilities are averaged.
        mode: ``group`` or ``reference``.
        seed: Seed of principle sampling.
    """

    __name__ = "constitutional_judge"  # TRL names the reward's metrics after it

    def __init__(
        self,
        judge: Judge,
        constitution: Constitution,
        *,
        principles: int = 1,
        mode: RewardMode = "group",
        seed: int = 0,
    ) -> None:
        if principles < 1:
            raise ValueError("principles must be at least 1")
        self.judge = judge
        self.constitution = constitution
        self.principles = principles
        self.mode = mode
        self.seed = seed
        self.calls = 0

    def __call__(
        self,
        prompts: Sequence[Any],
        completions: Sequence[Any],
        reference: Sequence[str] | None = None,
        trainer_state: Any = None,
        **_: Any,
    ) -> list[float | None]:
        """One reward per completion; ``prompts[i]`` is the prompt of ``completions[i]``."""
        from engine.judge import Pair, sample_principles

        self.calls += 1
        step = getattr(trainer_state, "global_step", self.calls)
        conversations = [conversation_of(p) for p in prompts]
        texts = [completion_text(c) for c in completions]
        keys = [_key(c) for c in conversations]
        chosen = {
            key: sample_principles(self.constitution, self.principles, self.seed, f"{key}:{step}") for key in set(keys)
        }
        if self.mode == "reference":
            if reference is None:
                raise TrainError(f"reward mode 'reference' needs a {REFERENCE_COLUMN!r} column in the prompts")
            pairs = [
                Pair(conv, text, str(ref), chosen[key])
                for conv, text, ref, key in zip(conversations, texts, reference, keys, strict=True)
            ]
            return [None if j.p_first is None else 2 * j.p_first - 1 for j in self.judge.compare(pairs)]
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key, []).append(i)
        index: list[tuple[int, int]] = []
        pairs = []
        for key, members in groups.items():
            for i, j in itertools.combinations(members, 2):
                index.append((i, j))
                pairs.append(Pair(conversations[i], texts[i], texts[j], chosen[key]))
        scores: list[list[float]] = [[] for _ in texts]
        for (i, j), judgment in zip(index, self.judge.compare(pairs), strict=True):
            if judgment.p_first is not None:
                scores[i].append(2 * judgment.p_first - 1)
                scores[j].append(1 - 2 * judgment.p_first)
        singles = [i for members in groups.values() if len(members) == 1 for i in members]
        return [0.0 if i in singles else (sum(s) / len(s) if s else None) for i, s in enumerate(scores)]


def grpo_data(prompts: str | None, folder: Path | None, *, limit: int | None = None) -> TrainData:
    """The prompts GRPO samples from: a prompt set (as `cai generate --prompts` takes) or a run's SFT rows.

    From a run folder, each row's final answer becomes the ``reference`` column.

    Raises:
        TrainError: Neither or both sources, a bad prompt set, or an unusable run folder.
    """
    from datasets import Dataset

    from engine.train.data import TrainData, sft_data

    if (prompts is None) == (folder is None):
        raise TrainError("cai train grpo takes --prompts SOURCE (redteam, helpful, mixed, a file) or --data RUN")
    if folder is not None:
        data = sft_data(folder, limit=limit)
        rows = data.dataset.map(
            lambda completion: {REFERENCE_COLUMN: completion[-1]["content"]},
            input_columns="completion",
            remove_columns=["completion"],
        )
        data.dataset = rows
        return data
    from engine.sources import PromptSetError, load_prompts

    assert prompts is not None
    try:
        items = load_prompts(prompts, limit=limit)
    except PromptSetError as exc:
        raise TrainError(str(exc)) from None
    if not items:
        raise TrainError(f"{prompts}: no prompts")
    rows = [{"id": i.id, "prompt": i.messages, "category": i.category or "", "kind": i.kind or ""} for i in items]
    dataset = Dataset.from_list(rows)
    return TrainData(dataset, None, None, "prompts", len(items), source=f"prompts {prompts}")


__all__ = ["REFERENCE_COLUMN", "ConstitutionalReward", "RewardMode", "completion_text", "conversation_of", "grpo_data"]
