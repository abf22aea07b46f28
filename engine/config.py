"""Run configuration: what ``cai generate`` and ``cai eval`` do, from a YAML file and/or flags.

Every field can be set in a YAML file passed with ``--config run.yaml``; flags
given on the command line override the file. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from constitution.errors import did_you_mean, field_path
from engine.records import Shard


class GenerateConfig(BaseModel):
    """Settings of one ``cai generate`` run."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Output folder; rerunning on it resumes the run.")
    model: str = Field(
        default="default", description="Policy model: 'default', a model folder, a hub id, or openai:NAME[@URL]."
    )
    base_url: str | None = Field(
        default=None, description="Server of openai:NAME models (default: $OPENAI_BASE_URL, else OpenAI's API)."
    )
    critic_model: str | None = Field(default=None, description="Critic model (defaults to the policy).")
    constitution: str = Field(default="default", description="Builtin constitution name or YAML file.")
    prompts: str = Field(default="redteam", description="Builtin set (redteam, helpful, mixed), a file, or hf:NAME.")
    revisions: int = Field(default=2, ge=0, le=16, description="Critique-and-revision rounds per prompt.")
    stop_early: bool = Field(default=True, description="Stop a row's rounds when its critique finds nothing to change.")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N prompts.")
    shard: str | None = Field(
        default=None,
        description="I/N: only shard I of N of the prompts (after --limit), chosen by a hash of each prompt's id.",
    )
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

    @field_validator("shard")
    @classmethod
    def _shard_is_i_of_n(cls, value: str | None) -> str | None:
        return None if value is None else str(Shard.parse(value))


class EvalConfig(BaseModel):
    """Settings of one ``cai eval`` run."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Output folder; rerunning on it resumes the evaluation.")
    models: list[str] = Field(min_length=1, description="Models to evaluate: 'default', model folders, hub ids.")
    base_url: str | None = Field(
        default=None, description="Server of openai:NAME models (default: $OPENAI_BASE_URL, else OpenAI's API)."
    )
    baseline: str | None = Field(default=None, description="Model the others are compared with pairwise.")
    redteam: str = Field(default="eval-redteam", description="Harmful prompts (builtin set, file, or hf:NAME).")
    benign: str = Field(default="eval-benign", description="Prompts that must not be refused (builtin, file, hf:NAME).")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N prompts of each set.")
    constitution: str = Field(default="default", description="Builtin constitution name or YAML file.")
    judge: bool = Field(default=True, description="Score answers with the constitutional judge.")
    judge_model: str = Field(default="default", description="Judge model (one judge for every evaluated model).")
    judge_principles: int = Field(default=2, ge=1, description="Relevant principles sampled per answer for the judge.")
    jailbreaks: int = Field(
        default=16, ge=0, description="Red-team prompts wrapped in each jailbreak framing (0 turns the probe off)."
    )
    counterfactual: int = Field(
        default=8, ge=0, description="Counterfactual templates, each asked once per group (0 turns the probe off)."
    )
    robustness: int = Field(
        default=16, ge=0, description="Answers attacked to test the judge's robustness (0 turns the battery off)."
    )
    examples: int = Field(default=12, ge=0, description="Worst-case example answers kept per model in the report.")
    max_new_tokens: int = Field(default=128, ge=1, description="Most new tokens per answer.")
    temperature: float = Field(default=0.0, ge=0, description="Sampling temperature (0 = greedy, reproducible).")
    seed: int = Field(default=0, description="Seed for principle sampling, the sampler and the bootstraps.")
    batch_size: int = Field(default=16, ge=1, description="Requests per forward pass of the model.")
    chunk_size: int = Field(default=64, ge=1, description="Answers generated and scored together, then saved.")
    dtype: str = Field(default="auto", description="auto (bf16 where supported), bfloat16, float16 or float32.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N.")
    classifier: bool = Field(default=True, description="Score red-team answers with the independent harm classifier.")
    fail_under: dict[str, float] = Field(
        default_factory=dict, description="Fail (exit 3) when a model's metric is below: harmlessness, helpfulness..."
    )
    fail_over: dict[str, float] = Field(
        default_factory=dict, description="Fail (exit 3) when a model's metric is above: harmful_compliance, ..."
    )
    force: bool = Field(default=False, description="Write into a folder that holds an evaluation with other settings.")


class ConfigError(Exception):
    """A run configuration file is unusable; the message names the file and key."""


C = TypeVar("C", GenerateConfig, EvalConfig)


def load_config(path: Path | None, overrides: dict[str, object], schema: type[C] = GenerateConfig) -> C:  # type: ignore[assignment]
    """Merge a YAML config file with flag values (flags win) and validate against ``schema``.

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
        return schema.model_validate(data)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            where = field_path(err["loc"])
            if err["type"] == "extra_forbidden":
                messages.append(f"{name}: unknown option {where!r}{did_you_mean(where, schema.model_fields)}")
            elif err["type"] == "missing":
                messages.append(f"{name}: {where} is required (--{where.replace('_', '-')})")
            else:
                messages.append(f"{name}: {where}: {err['msg']}")
        raise ConfigError("\n".join(messages)) from None
