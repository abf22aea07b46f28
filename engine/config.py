"""Run configuration: what ``cai generate`` does, from a YAML file and/or flags.

Every field can be set in a YAML file passed with ``--config run.yaml``; flags
given on the command line override the file. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from constitution.errors import did_you_mean, field_path


class GenerateConfig(BaseModel):
    """Settings of one ``cai generate`` run."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Output folder; rerunning on it resumes the run.")
    model: str = Field(default="default", description="Policy model: 'default', a model folder, or a hub id.")
    critic_model: str | None = Field(default=None, description="Critic model (defaults to the policy).")
    constitution: str = Field(default="default", description="Builtin constitution name or YAML file.")
    prompts: str = Field(default="redteam", description="Builtin set (redteam, helpful, mixed), a file, or hf:NAME.")
    revisions: int = Field(default=2, ge=0, le=16, description="Critique-and-revision rounds per prompt.")
    stop_early: bool = Field(default=True, description="Stop a row's rounds when its critique finds nothing to change.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N prompts.")
    seed: int = Field(default=0, description="Seed for principle sampling and the samplers.")
    batch_size: int = Field(default=16, ge=1, description="Requests per forward pass of the model.")
    chunk_size: int = Field(
        default=64, ge=1, description="Prompts taken through all rounds together; at most this many are in flight."
    )
    max_new_tokens: int = Field(default=256, ge=1, description="Most new tokens per answer, critique or revision.")
    temperature: float = Field(default=0.7, ge=0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass.")
    dtype: str = Field(default="auto", description="auto (bf16 where supported), bfloat16, float16 or float32.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N.")
    judge: bool = Field(
        default=True,
        description="Label pairs with the AI-feedback judge; off: the final revision is assumed better.",
    )
    judge_model: str | None = Field(default=None, description="Judge model (defaults to the policy).")
    judge_principles: int = Field(default=1, ge=1, description="Principles sampled per judged pair (an ensemble).")
    judge_cot: bool = Field(default=False, description="The judge reasons before answering (chain of thought).")
    judge_band: tuple[float, float] = Field(
        default=(0.4, 0.6), description="Chain of thought: each order's probability is clamped to this band."
    )
    min_margin: float = Field(
        default=0.02, ge=0, le=1, description="Drop pairs whose judged margin (2 * chosen_prob - 1) is below this."
    )
    pairing: Literal["best-worst", "final-initial"] = Field(
        default="best-worst",
        description="best-worst: judge all candidates, pair the best with the worst; final-initial: final vs first.",
    )
    force: bool = Field(default=False, description="Write into a folder that holds a run with other settings.")
    push_to_hub: str | None = Field(default=None, description="Also push the dataset to this hub repository.")


class ConfigError(Exception):
    """A run configuration file is unusable; the message names the file and key."""


def load_config(path: Path | None, overrides: dict[str, object]) -> GenerateConfig:
    """Merge a YAML config file with flag values (flags win) and validate.

    Raises:
        ConfigError: Unreadable file, bad YAML, unknown keys or bad values.
    """
    data: dict[str, object] = {}
    name = str(path) if path else "command line"
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: YAML error: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a run config is a mapping of option: value")
        data = {str(k).replace("-", "_"): v for k, v in (loaded or {}).items()}
    data.update(overrides)
    try:
        return GenerateConfig.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            where = field_path(err["loc"])
            if err["type"] == "extra_forbidden":
                messages.append(f"{name}: unknown option {where!r}{did_you_mean(where, GenerateConfig.model_fields)}")
            elif err["type"] == "missing":
                messages.append(f"{name}: {where} is required (--{where.replace('_', '-')})")
            else:
                messages.append(f"{name}: {where}: {err['msg']}")
        raise ConfigError("\n".join(messages)) from None
