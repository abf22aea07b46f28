"""Versioned records that runs write: the run manifest and one trajectory per prompt.

Every trajectory carries the schema version, the constitution's content hash,
the principle used at each round, the models and the sampling parameters, so a
row found on its own says how it was made.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.backends.base import SamplingParams

SCHEMA_VERSION = 1
"""Version of the trajectory and manifest layout; bump it when a field changes meaning."""


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConstitutionRef(_Record):
    """Which rules produced a row."""

    id: str
    version: str
    hash: str = Field(description="sha256 content hash of the composed constitution.")


class Round(_Record):
    """One critique-and-revision round."""

    principle_id: str = Field(description="Principle sampled for this round.")
    critique: str = Field(description="The critic's reply.")
    revision: str | None = Field(description="The policy's revised response; None when the round stopped early.")
    stopped: bool = Field(description="The critique found nothing to change, so no revision was asked for.")
    changed: bool = Field(description="The revision differs from the response before it.")


class Trajectory(_Record):
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

    @property
    def revised(self) -> bool:
        """Whether any round changed the answer."""
        return self.final != self.initial


class RunManifest(_Record):
    """What a run directory holds; a rerun on the same directory must match it to resume."""

    schema_version: int = SCHEMA_VERSION
    constitution: ConstitutionRef
    policy: str
    critic: str
    revisions: int
    stop_early: bool
    sampling: SamplingParams
    seed: int
    prompts: str

    def differences(self, other: RunManifest) -> list[str]:
        """Human-readable fields in which ``other`` differs from this manifest."""
        mine, theirs = self.model_dump(), other.model_dump()
        out = []
        for key in mine:
            if mine[key] != theirs[key]:
                a, b = mine[key], theirs[key]
                if key == "constitution":
                    a, b = f"{a['id']} {a['hash'][:12]}", f"{b['id']} {b['hash'][:12]}"
                out.append(f"{key}: {a} (in the folder) vs {b} (now)")
        return out
