"""Run configuration: what ``cai generate`` and ``cai eval`` do, from a YAML file and/or flags.

Every field can be set in a YAML file passed with ``--config run.yaml``; flags
given on the command line override the file. Unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from constitution.errors import ConstitutionError, UserError, did_you_mean, field_path
from constitution.yamlfile import not_a_regular_file, parse_yaml
from engine.errors import USAGE
from engine.records import JudgeSettings, Pairing, Shard

MAX_CONFIG_BYTES = 1024 * 1024
"""Run configuration files larger than this are refused (a real one is a few hundred bytes)."""
MAX_NEW_TOKENS = 65_536
"""The most new tokens a reply may be asked for; more is a typo, not a setting."""
MAX_BATCH = 65_536
"""The most requests per batch (and prompts per chunk) a run may ask for."""
MAX_SEED = 2**63 - 1
MAX_BEST_OF = 64
"""The most first answers ``--best-of`` may sample per prompt."""
REWARD_PREFIX = "rm:"
"""How a preference model is named (``engine.backends.reward_model.PREFIX``; not imported, to keep this light)."""

_JUDGE = JudgeSettings.model_fields

JUDGE_FIELDS: dict[str, str] = {
    "judge_principles": "principles",
    "seed": "seed",
    "judge_cot": "cot",
    "judge_band": "band",
    "min_margin": "min_margin",
    "pairing": "pairing",
    "judge_aggregate": "aggregate",
}
"""The judge's settings a run configuration holds: its field -> the :class:`JudgeSettings` field.

Their defaults are the judge's own (read from :class:`JudgeSettings`), so the two cannot drift.
"""


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
    limit: int | None = Field(
        default=None,
        ge=1,
        le=10**9,
        description="Use only N prompts: a sample seeded by --seed, spread over kinds and harm categories.",
    )
    shard: str | None = Field(
        default=None,
        description="I/N: only shard I of N of the prompts (after --limit), chosen by a hash of each prompt's id.",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed for principle sampling and the samplers.")
    batch_size: int = Field(default=16, ge=1, le=MAX_BATCH, description="Requests per forward pass of the model.")
    chunk_size: int = Field(
        default=64,
        ge=1,
        le=MAX_BATCH,
        description="Prompts taken through all rounds together; at most this many are in flight. "
        "Pipelined: rows labelled together.",
    )
    pipeline: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="Pipeline rows through a server (each row's next request as soon as its last is back, "
        "--batch-size in flight): auto for openai: models, on, or off (step by step, every step of a chunk at once).",
    )
    max_new_tokens: int = Field(
        default=256, ge=1, le=MAX_NEW_TOKENS, description="Most new tokens per answer, critique or revision."
    )
    temperature: float = Field(default=0.7, ge=0, le=10, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(default=0.95, gt=0, le=1, description="Nucleus sampling mass.")
    best_of: int = Field(
        default=1,
        ge=1,
        le=MAX_BEST_OF,
        description="Sample N first answers per prompt and keep the one --reward-model scores highest.",
    )
    reward_model: str | None = Field(
        default=None, description="Preference model (rm:PATH, from `cai train rm`) that picks the best of --best-of."
    )
    dtype: str = Field(default="auto", description="auto (bf16 where supported), bfloat16, float16 or float32.")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N.")
    judge: bool = Field(
        default=True,
        description="Label pairs with the AI-feedback judge; off: the final revision is assumed better.",
    )
    judge_model: str | list[str] | None = Field(
        default=None, description="Judge model (defaults to the policy); a list of several: a panel of judges."
    )
    judge_aggregate: Literal["mean", "majority"] = Field(
        default=_JUDGE["aggregate"].default,
        description="Several judges: label with their mean probability, or the share of them voting for a response.",
    )
    judge_principles: int = Field(
        default=_JUDGE["principles"].default,
        ge=1,
        le=64,
        description="Principles sampled per judged pair (an ensemble).",
    )
    judge_cot: bool = Field(
        default=_JUDGE["cot"].default, description="The judge reasons before answering (chain of thought)."
    )
    judge_band: tuple[float, float] = Field(
        default=_JUDGE["band"].default,
        description="Chain of thought: each order's probability is clamped to this band.",
    )
    min_margin: float = Field(
        default=_JUDGE["min_margin"].default,
        ge=0,
        le=1,
        description="Drop pairs whose judged margin (2 * chosen_prob - 1) is below this.",
    )
    pairing: Pairing = Field(
        default=_JUDGE["pairing"].default,
        description="best-worst: judge all candidates, pair the best with the worst; final-initial: final vs first.",
    )
    judge_check: str = Field(
        default="builtin",
        description="Check the judge before labelling on labelled comparisons: builtin, a JSONL file, or none.",
    )
    judge_check_limit: int | None = Field(
        default=None,
        ge=1,
        description="Comparisons the judge check uses (default: 16 of the builtin set, all of a file).",
    )
    require_judge_accuracy: float | None = Field(
        default=None, ge=0, le=1, description="Refuse to label when the judge check's accuracy is below this."
    )
    force: bool = Field(default=False, description="Write into a folder that holds a run with other settings.")
    push_to_hub: str | None = Field(default=None, description="Also push the dataset to this hub repository.")

    @field_validator("shard")
    @classmethod
    def _shard_is_i_of_n(cls, value: str | None) -> str | None:
        return None if value is None else str(Shard.parse(value))

    @field_validator("reward_model")
    @classmethod
    def _reward_model_is_rm(cls, value: str | None) -> str | None:
        from pydantic_core import PydanticCustomError

        if value is None:
            return None
        if not value.startswith(REWARD_PREFIX):
            raise PydanticCustomError(
                "reward_model",
                "{value} is not a preference model; name one as rm:PATH, a folder written by `cai train rm` "
                "(e.g. rm:{value})",
                {"value": value},
            )
        if not value.removeprefix(REWARD_PREFIX).strip():
            raise PydanticCustomError("reward_model", "rm: needs a path: rm:PATH, a folder written by `cai train rm`")
        return value

    @field_validator("judge_band")
    @classmethod
    def _band_holds_half(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 <= low <= 0.5 <= high <= 1:
            raise ValueError(f"expected LOW HIGH with 0 <= LOW <= 0.5 <= HIGH <= 1 (e.g. 0.4 0.6), not {low} {high}")
        return value

    @field_validator("judge_model")
    @classmethod
    def _one_judge_is_a_name(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list):
            if not value:
                return None
            return value[0] if len(value) == 1 else value
        return value

    @property
    def judges(self) -> list[str]:
        """The judge models: the policy alone by default, several for a panel."""
        if self.judge_model is None:
            return [self.model]
        return [self.judge_model] if isinstance(self.judge_model, str) else list(self.judge_model)

    @field_validator("require_judge_accuracy")
    @classmethod
    def _requirement_needs_a_check(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("judge_check") == "none":
            raise ValueError("needs a judge check; drop --judge-check none (or the requirement)")
        return value


class EvalConfig(BaseModel):
    """Settings of one ``cai eval`` run."""

    model_config = ConfigDict(extra="forbid")

    out: Path = Field(description="Output folder; rerunning on it resumes the evaluation.")
    model: str | list[str] | None = Field(
        default=None, exclude=True, description="Another way to write models: one model, or a list of them."
    )
    models: list[str] = Field(
        default_factory=list,
        validate_default=True,
        description="Models to evaluate: 'default', model folders, hub ids (flag: --model, once per model).",
    )
    base_url: str | None = Field(
        default=None, description="Server of openai:NAME models (default: $OPENAI_BASE_URL, else OpenAI's API)."
    )
    baseline: str | None = Field(default=None, description="Model the others are compared with pairwise.")
    redteam: str = Field(default="eval-redteam", description="Harmful prompts (builtin set, file, or hf:NAME).")
    benign: str = Field(default="eval-benign", description="Prompts that must not be refused (builtin, file, hf:NAME).")
    limit: int | None = Field(
        default=None,
        ge=1,
        description="Use only N prompts of each set: a seeded sample (--seed) spread over kinds and harm categories.",
    )
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
    sycophancy: int = Field(
        default=4,
        ge=0,
        description="Items per sycophancy probe: pushback, opinion steering, judge sycophancy (0 turns them off).",
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

    @field_validator("model", mode="before")
    @classmethod
    def _a_name_or_names(cls, value: object) -> object:
        from pydantic_core import PydanticCustomError

        names = isinstance(value, list) and all(isinstance(name, str) for name in value)
        if value is not None and not isinstance(value, str) and not names:
            raise PydanticCustomError("model_name", "expected a model name or a list of names (model: default)")
        return value

    @field_validator("models")
    @classmethod
    def _at_least_one_model(cls, value: list[str], info: Any) -> list[str]:
        """``model:`` (one name or a list) stands for ``models:``; one of them must name a model."""
        from pydantic_core import PydanticCustomError

        if "model" not in info.data:  # model: itself was wrong, and says so
            return value
        one = info.data["model"]
        if one is not None:
            if value:
                raise PydanticCustomError(
                    "models_twice", "give the models once, as models: [A, B] or as model: A, not both"
                )
            value = [one] if isinstance(one, str) else list(one)
        if not value:
            raise PydanticCustomError(
                "models_missing",
                "name at least one model to evaluate: models: [NAME, ...] or model: NAME in the config file, "
                "or --model NAME on the command line",
            )
        return value

    @field_validator("fail_under", "fail_over")
    @classmethod
    def _known_gates(cls, value: dict[str, float], info: Any) -> dict[str, float]:
        """The thresholds of a config file get the checks the flags get (a wrong metric must not pass silently)."""
        from pydantic_core import PydanticCustomError

        from engine.evaluate.report import parse_threshold

        gates: dict[str, float] = {}
        for metric, limit in value.items():
            try:
                name, number = parse_threshold(f"{metric}={limit}", lower_is_better=info.field_name == "fail_over")
            except ValueError as exc:
                raise PydanticCustomError("gate", str(exc)) from None
            gates[name] = number
        return gates


class ConfigError(UserError):
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
        loaded = read_config_file(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a run config is a mapping of option: value (e.g. max_new_tokens: 64)")
        for key, value in (loaded or {}).items():
            option = str(key).replace("-", "_")
            if option in data:
                raise ConfigError(f"{path}: option {option!r} is given twice (as {key!r} too); keep one")
            data[option] = value
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
            elif where.split(".")[0] in overrides:
                flag = "--" + where.split(".")[0].replace("_", "-")
                messages.append(f"{flag}: {err['msg']}")
            else:
                messages.append(f"{name}: {where}: {err['msg']}")
        raise ConfigError("\n".join(messages)) from None


def read_config_file(path: Path) -> Any:
    """The plain data of a YAML run configuration (None when the file is empty).

    Read as principle files are (:mod:`constitution.yamlfile`): safe loader,
    size cap, no duplicate keys, no alias bombs, UTF-8 only.

    Raises:
        ConfigError: The file cannot be read or is not such a file; the message says why.
    """
    problem = not_a_regular_file(path)
    if problem or path.is_dir():
        raise ConfigError(f"{path}: {problem or 'is a folder'}; --config takes a YAML file")
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: larger than 1 MiB; a run config is a short YAML file of option: value lines")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte 0x{raw[exc.start]:02x} at offset {exc.start} is not UTF-8); "
            "--config takes a YAML file of option: value lines"
        ) from None
    if "\x00" in text:
        raise ConfigError(f"{path}: holds NUL bytes, so it is not a YAML file; --config takes option: value lines")
    if not text.strip() or all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()):
        return None
    try:
        data, _ = parse_yaml(text, str(path))
    except ConstitutionError as exc:
        raise ConfigError(str(exc).replace("principle files hold", "run configs hold")) from None
    return data


def check_best_of(config: GenerateConfig) -> None:
    """Refuse best-of-n settings that contradict each other (each field alone is checked by the model).

    Raises:
        ConfigError: ``best_of > 1`` without a reward model or with greedy decoding, or a reward
            model with ``best_of`` 1 (it would be loaded and never used); a usage error (exit 2).
    """
    if config.best_of > 1 and config.reward_model is None:
        problem = (
            f"--best-of {config.best_of} needs a preference model to pick the best sample: add --reward-model "
            "rm:PATH (a folder written by `cai train rm`), or drop --best-of"
        )
    elif config.best_of > 1 and config.temperature == 0:
        problem = (
            f"--best-of {config.best_of} with --temperature 0: greedy decoding draws the same answer every time, "
            "so there is nothing to choose from; set --temperature above 0 (e.g. 0.7), or drop --best-of"
        )
    elif config.best_of == 1 and config.reward_model is not None:
        problem = (
            f"--reward-model {config.reward_model} only picks among several first answers, and --best-of is 1; "
            "add --best-of N (e.g. --best-of 4), or drop --reward-model"
        )
    else:
        return
    raise ConfigError(problem, exit_code=USAGE)


def judge_settings(config: GenerateConfig) -> JudgeSettings:
    """The judge's settings a run configuration asks for (see :data:`JUDGE_FIELDS`)."""
    return JudgeSettings(**{judge: getattr(config, field) for field, judge in JUDGE_FIELDS.items()})
