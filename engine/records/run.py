"""What ``run.json`` holds: the run manifest, its shards and the runs a merge combined."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from engine.backends.base import SamplingParams
from engine.records.base import SCHEMA_VERSION, Record
from engine.records.trajectory import ConstitutionRef

_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (counted from 1): the prompts whose id hashes to it.

    A prompt belongs to shard ``I/N`` when the first 8 bytes of the sha256 of
    its id, read as a big-endian number, leave remainder ``I - 1`` divided by
    ``N``. Hashing the id (not the prompt's position) keeps a prompt in the
    same shard when the prompt file is appended to, reordered or filtered; the
    shards' sizes vary a little around ``1/N`` of the prompts.
    """

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"2/4"`` -> ``Shard(2, 4)``.

        Raises:
            ValueError: Not ``I/N`` with ``1 <= I <= N``; the message says what is expected.
        """
        found = _SHARD.fullmatch(text)
        if found is None:
            raise ValueError(f"expected I/N, shard I of N counted from 1 (e.g. 2/4), not {text!r}")
        index, count = int(found.group(1)), int(found.group(2))
        if count < 1:
            raise ValueError(f"{text!r}: the number of shards N must be at least 1")
        if not 1 <= index <= count:
            raise ValueError(f"{text!r}: shards are counted from 1 to N, so use 1/{count} to {count}/{count}")
        return cls(index, count)

    def holds(self, prompt_id: str) -> bool:
        """Whether the prompt with this id belongs to this shard."""
        digest = hashlib.sha256(prompt_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class MergedRun(Record):
    """One run that ``cai merge`` combined into a merged run."""

    path: str = Field(description="The run's folder, as given to cai merge.")
    prompts: str = Field(description="The run's prompt source.")
    shard: str | None = Field(default=None, description="The run's shard (I/N), if it was one.")
    rows: int = Field(description="Trajectories taken from this run.")

    @field_validator("shard")
    @classmethod
    def _shard_is_i_of_n(cls, value: str | None) -> str | None:
        return _check_shard(value)


def _check_shard(value: str | None) -> str | None:
    """A recorded shard: ``I/N`` as :meth:`Shard.parse` reads it, or None."""
    return None if value is None else str(Shard.parse(value))


def missing_shards(runs: Iterable[MergedRun]) -> list[str]:
    """Shards (``I/N of PROMPTS``) of the splits these runs belong to that none of them is.

    Runs of one prompt source are expected to be shards of one split (the
    same ``N``); :mod:`engine.merge` refuses anything else before asking.
    """
    present: dict[tuple[str, int], set[int]] = {}
    for run in runs:
        if run.shard is not None:
            shard = Shard.parse(run.shard)
            present.setdefault((run.prompts, shard.count), set()).add(shard.index)
    return [
        f"{index}/{count} of {prompts}"
        for (prompts, count), indices in present.items()
        for index in range(1, count + 1)
        if index not in indices
    ]


class PromptTokenCount(Record):
    """Prompt tokens requested and computed: a prefix that prompts of one model call share is computed once."""

    requested: int = Field(ge=0)
    computed: int = Field(ge=0)

    def __add__(self, other: PromptTokenCount) -> PromptTokenCount:
        return PromptTokenCount(requested=self.requested + other.requested, computed=self.computed + other.computed)

    def __sub__(self, other: PromptTokenCount) -> PromptTokenCount:
        return PromptTokenCount(requested=self.requested - other.requested, computed=self.computed - other.computed)

    def render(self) -> str:
        share = self.computed / self.requested if self.requested else 1.0
        return f"prompt tokens: {self.computed:,} computed of {self.requested:,} requested ({share:.0%})"


class RunManifest(Record):
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
    shard: str | None = Field(
        default=None, description="The shard of the prompts (I/N) the run holds; None: all of them."
    )
    best_of: int = Field(default=1, ge=1, description="First answers sampled per prompt; the best by reward is kept.")
    reward_model: str | None = Field(
        default=None, description="Preference model (rm:PATH) that picks the best of best_of samples; None: no choice."
    )
    merged_from: list[MergedRun] | None = Field(
        default=None, description="The runs `cai merge` made this one from; None: made by `cai generate`."
    )
    generation: Literal["batched", "pipelined"] | None = Field(
        default=None,
        description="How the loop ran in the latest `cai generate` that made rows here: batched (one call per step "
        "of a chunk) or pipelined (rows through a server, each row's next request as soon as its last was back); "
        "None: not recorded. Rows are the same either way, so a resume may take the other path.",
    )
    prompt_tokens: PromptTokenCount | None = Field(
        default=None,
        description="Prompt tokens the run's local transformers models were asked for and computed (each shared "
        "prefix once), summed over the `cai generate` runs on this folder, judge included; None: none counted "
        "(servers, scripted models and merges count nothing).",
    )
    superseded: list[RunManifest] = Field(
        default_factory=list,
        description="Earlier settings of this folder, replaced with --force; rows made under them are still here.",
    )

    @field_validator("shard")
    @classmethod
    def _shard_is_i_of_n(cls, value: str | None) -> str | None:
        return _check_shard(value)

    def differences(self, other: RunManifest) -> list[str]:
        """Human-readable fields in which ``other`` differs from this manifest (its history and path aside)."""
        history = {"superseded", "generation", "prompt_tokens"}
        mine, theirs = self.model_dump(exclude=history), other.model_dump(exclude=history)
        out = []
        for key in mine:
            if mine[key] != theirs[key]:
                a, b = mine[key], theirs[key]
                if key == "constitution":
                    a, b = f"{a['id']} {a['hash'][:12]}", f"{b['id']} {b['hash'][:12]}"
                elif key == "merged_from":
                    a, b = (f"a merge of {len(v)} runs" if v else "a generated run" for v in (a, b))
                out.append(f"{key}: {a} (in the folder) vs {b} (now)")
        return out
