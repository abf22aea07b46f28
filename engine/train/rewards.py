"""The rewards of online RL (``cai train grpo`` and ``rloo``): one or several sources, each weighted.

``--reward-model SOURCE[=WEIGHT]`` (repeatable; default ``judge``) names them:

``judge``
    The constitutional judge (:class:`engine.train.grpo.ConstitutionalReward`):
    completions compared pairwise under sampled principles, reward ``2p - 1``.
``rm:PATH``
    A preference model trained with ``cai train rm``
    (:class:`PreferenceModelReward`): its scalar reward of each completion,
    one forward pass each, no principle and no position bias.
``over-refusal``
    The evaluator's refusal detector (:func:`engine.evaluate.refusal.detect_refusal`)
    as a penalty (:class:`OverRefusalPenalty`): -1 for a full refusal of a
    prompt that should be answered (kind ``benign`` or ``near_miss``), 0
    otherwise. It guards against a policy that learns to refuse everything
    because refusals score well.

TRL adds the sources up with ``reward_weights`` and logs each one apart
(``rewards/<name>/mean`` and ``/std``), so a component the policy games shows
in the logs: a preference-model reward that climbs while the over-refusal
penalty sinks is a policy refusing its way to reward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.train.errors import TrainError
from engine.train.grpo import completion_text, conversation_of

if TYPE_CHECKING:
    from engine.backends.reward_model import RewardModel

JUDGE = "judge"
OVER_REFUSAL = "over-refusal"
ANSWERABLE = ("benign", "near_miss")
"""Prompt kinds that should be answered, which the over-refusal penalty watches."""
KIND_COLUMN = "kind"


@dataclass(frozen=True)
class RewardSource:
    """One ``--reward-model`` value: what gives the reward, and its weight in the sum."""

    spec: str
    """``judge``, ``rm:PATH`` or ``over-refusal``."""
    weight: float = 1.0

    @property
    def name(self) -> str:
        """The name TRL logs the source under (``rewards/<name>/mean``)."""
        if self.spec == JUDGE:
            return "constitutional_judge"
        if self.spec == OVER_REFUSAL:
            return "over_refusal"
        return "preference_model"


def parse_sources(values: Sequence[str]) -> list[RewardSource]:
    """The reward sources of ``--reward-model`` values (``judge`` when none is given).

    Raises:
        TrainError: An unknown source, a bad weight, a source named twice, or only penalties.
    """
    from engine.backends.reward_model import is_reward_spec

    sources: list[RewardSource] = []
    for value in values or (JUDGE,):
        spec, sep, weight_text = value.rpartition("=") if "=" in value else (value, "", "")
        spec = spec.strip()
        weight = 1.0
        if sep:
            try:
                weight = float(weight_text)
            except ValueError:
                raise TrainError(f"--reward-model {value!r}: the weight after '=' must be a number") from None
            if weight != weight or weight in (float("inf"), float("-inf")):
                raise TrainError(f"--reward-model {value!r}: the weight must be a finite number")
        if spec not in (JUDGE, OVER_REFUSAL) and not is_reward_spec(spec):
            raise TrainError(
                f"--reward-model {value!r}: use judge, over-refusal or rm:PATH (a `cai train rm` folder), "
                "optionally with =WEIGHT"
            )
        if is_reward_spec(spec) and not spec.removeprefix("rm:").strip():
            raise TrainError(f"--reward-model {value!r}: rm: needs the path of a `cai train rm` folder")
        sources.append(RewardSource(spec, weight))
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TrainError(f"--reward-model: {', '.join(twice)} given twice; give each source once, with its weight")
    if all(s.spec == OVER_REFUSAL for s in sources):
        raise TrainError("--reward-model over-refusal is a penalty only; add a reward: judge or rm:PATH")
    return sources


class PreferenceModelReward:
    """TRL reward function: a trained preference model's reward of each completion.

    Args:
        model: The preference model (kept frozen; it never trains here).
    """

    __name__ = "preference_model"  # TRL names the reward's metrics after it

    def __init__(self, model: RewardModel) -> None:
        self.model = model

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float | None]:
        """One reward per completion; ``prompts[i]`` is the prompt of ``completions[i]``."""
        items = [(conversation_of(p), completion_text(c)) for p, c in zip(prompts, completions, strict=True)]
        return [r if r == r else None for r in self.model.score(items)]  # NaN: TRL ignores the completion


class OverRefusalPenalty:
    """TRL reward function: -1 for a full refusal of a prompt that should be answered, else 0."""

    __name__ = "over_refusal"

    def __call__(
        self, prompts: Sequence[Any], completions: Sequence[Any], kind: Sequence[str] | None = None, **_: Any
    ) -> list[float | None]:
        """One penalty per completion; prompts of other kinds (or of no kind) get 0."""
        from engine.evaluate.refusal import detect_refusal

        kinds = list(kind) if kind is not None else [""] * len(completions)
        out: list[float | None] = []
        for prompt, completion, k in zip(prompts, completions, kinds, strict=True):
            if k not in ANSWERABLE:
                out.append(0.0)
                continue
            conversation = conversation_of(prompt)
            verdict = detect_refusal(completion_text(completion), conversation[-1]["content"] if conversation else None)
            out.append(-1.0 if verdict.is_refusal else 0.0)
        return out


__all__ = [
    "ANSWERABLE",
    "JUDGE",
    "KIND_COLUMN",
    "OVER_REFUSAL",
    "OverRefusalPenalty",
    "PreferenceModelReward",
    "RewardSource",
    "parse_sources",
]
