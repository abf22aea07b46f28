"""One trajectory per prompt (``trajectories.jsonl``): the first answer, each round, and its candidates.

Every trajectory carries the schema version, the constitution's content hash,
the principle used at each round, the models and the sampling parameters, so a
row found on its own says how it was made. A first answer chosen by best-of-n
sampling (``cai generate --best-of N``) also records every sample, its seed and
its reward (:class:`BestOf`); rows made without it, and files written before the
field existed, hold ``best_of: null`` (or no such key) and read the same.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from engine.backends.base import SamplingParams
from engine.records.base import SCHEMA_VERSION, Record

if TYPE_CHECKING:
    from constitution import Constitution


class ConstitutionRef(Record):
    """Which rules produced a row."""

    id: str
    version: str
    hash: str = Field(description="sha256 content hash of the composed constitution.")

    @classmethod
    def of(cls, rules: Constitution) -> ConstitutionRef:
        """The reference to ``rules`` (its content hash serialises the whole constitution: make it once per run)."""
        return cls(id=rules.id, version=rules.version, hash=rules.content_hash)


class Round(Record):
    """One critique-and-revision round."""

    principle_id: str = Field(description="Principle sampled for this round.")
    critique: str = Field(description="The critic's reply.")
    revision: str | None = Field(description="The policy's revised response; None when the round stopped early.")
    stopped: bool = Field(description="The critique found nothing to change, so no revision was asked for.")
    changed: bool = Field(description="The revision differs from the response before it.")


class Sample(Record):
    """One first answer that best-of-n sampling chose among."""

    text: str = Field(description="The policy's answer.")
    seed: int = Field(description="Sampler seed of the call that drew it.")
    reward: float = Field(description="The preference model's score of it (higher is better).")


class BestOf(Record):
    """How the first answer was chosen: the highest reward of ``n`` samples (ties: the first)."""

    n: int = Field(ge=2, description="Samples drawn.")
    reward_model: str = Field(description="The preference model that scored them (rm:PATH).")
    samples: list[Sample] = Field(description="Every sample, in the order drawn.")
    kept: int = Field(ge=0, description="Index of the sample kept as the first answer.")

    @model_validator(mode="after")
    def _kept_is_a_sample(self) -> BestOf:
        if len(self.samples) != self.n:
            raise ValueError(f"holds {len(self.samples)} samples, but n is {self.n}")
        if self.kept >= self.n:
            raise ValueError(f"kept is {self.kept}, but there are only {self.n} samples (counted from 0)")
        return self


class Trajectory(Record):
    """A prompt, the policy's first answer, and every round of critique and revision."""

    schema_version: int = SCHEMA_VERSION
    id: str
    source: str
    category: str | None = None
    kind: str | None = None
    prompt: list[dict[str, str]] = Field(description="The conversation, ending with the user's turn.")
    initial: str = Field(description="The policy's first answer.")
    rounds: list[Round]
    final: str = Field(description="The answer after the last round that changed it.")
    constitution: ConstitutionRef
    models: dict[str, dict[str, Any]] = Field(description="Backend description per role (policy, critic).")
    sampling: SamplingParams
    seed: int
    timings: dict[str, float] = Field(
        description="Seconds per step, the duration of each batched call divided by the rows in it."
    )
    best_of: BestOf | None = Field(
        default=None, description="The samples the first answer was chosen from; None: one answer was drawn."
    )

    @model_validator(mode="after")
    def _initial_is_the_kept_sample(self) -> Trajectory:
        if self.best_of is not None and self.best_of.samples[self.best_of.kept].text != self.initial:
            raise ValueError(f"initial is not best_of.samples[{self.best_of.kept}], the sample kept")
        return self

    @property
    def revised(self) -> bool:
        """Whether any round changed the answer."""
        return self.final != self.initial

    def texts(self) -> dict[str, str]:
        """Every response by the name labels and decisions use: ``initial`` and ``revision_N`` (N from 1).

        A round that stopped early has no ``revision_N``.
        """
        texts = {"initial": self.initial}
        for number, step in enumerate(self.rounds, start=1):
            if step.revision is not None:
                texts[f"revision_{number}"] = step.revision
        return texts

    def candidates(self) -> list[tuple[str, str]]:
        """(name, text) of the responses the judge compares: the first answer and each revision that changed it.

        A revision that came back empty or repeats a response already listed
        (it went back to an earlier one) is not a candidate of its own; names
        are those of :meth:`texts`.
        """
        out = [("initial", self.initial)]
        seen = {self.initial}
        for number, step in enumerate(self.rounds, start=1):
            if step.revision is not None and step.changed and step.revision not in seen:
                seen.add(step.revision)
                out.append((f"revision_{number}", step.revision))
        return out


def prompt_digest(messages: list[dict[str, str]]) -> str:
    """A short hash of a conversation, to tell whether a prompt changed since its row was made."""
    text = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
