"""The records of one training run: what it is asked, what was checked, what it reports.

- :class:`TrainOptions`: what ``cai train sft|dpo|grpo`` is asked to do (the flags).
- :class:`Plan`: everything checked before the model loads (:func:`engine.train.preflight.prepare`).
- :class:`TrainResult`: what a finished run reports (the card and ``cai-train.json`` show it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.train.data import TrainData
from engine.train.recipes import Recipe

Kind = Literal["sft", "dpo", "grpo", "rloo", "rm"]
"""The training methods; :data:`engine.train.methods.METHODS` says what each one uses."""


class TrainOptions(BaseModel):
    """What one ``cai train sft|dpo|grpo|rloo|rm`` run does; the CLI flags map onto these fields."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="sft (on the sft split), dpo (on the preferences split) or grpo (online).")
    data: Path | None = Field(
        default=None, description="A `cai generate` output folder, or a folder written by save_to_disk."
    )
    sources: list[str] = Field(
        default_factory=list,
        description="rm: every --data source (run folders, saved datasets, JSONL files of TRL pairs, hf:NAME).",
    )
    heldout: float = Field(default=0.1, ge=0, lt=1, description="rm: fraction of prompts held out for accuracy.")
    out: Path = Field(description="Folder of the trained model; checkpoints go to OUT/checkpoints.")
    model: str = Field(default="default", description="Base model: 'default', a model folder or a hub id.")
    recipe: str | None = Field(default=None, description="Builtin recipe name or YAML file of TRL config fields.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="TRL config fields set on the command line.")
    flags: dict[str, str] = Field(
        default_factory=dict, description="Which overrides a CLI flag set (field to --flag), to name it in messages."
    )
    lora: bool | None = Field(default=None, description="Train a LoRA adapter (merged at the end); None: the recipe.")
    lora_overrides: dict[str, Any] = Field(default_factory=dict, description="peft.LoraConfig fields from flags.")
    labels: Literal["auto", "hard", "weighted", "soft"] = Field(
        default="auto", description="DPO and rm: how the judge's chosen_prob is used (see engine.train.data)."
    )
    min_margin: float = Field(default=0.0, ge=0, le=1, description="DPO and rm: drop judged pairs below this margin.")
    split: str | None = Field(default=None, description="Dataset split (default: sft or preferences).")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N rows.")
    revised_only: bool = Field(default=False, description="SFT: only rows whose answer a revision changed.")
    resume: bool = Field(default=False, description="Continue from the last checkpoint in OUT/checkpoints.")
    force: bool = Field(default=False, description="Train again from the start into a folder that holds a run.")
    dtype: str = Field(default="auto", description="Weights: auto (fp32; LoRA base bf16 where fast) or a dtype.")
    prompts: str | None = Field(default=None, description="GRPO: prompt set (redteam, helpful, mixed, a file...).")
    constitution: str = Field(default="default", description="GRPO: the rules the judge rewards.")
    judge_model: str = Field(default="default", description="GRPO: the judge model (kept frozen).")
    judge_principles: int = Field(default=1, ge=1, description="GRPO: principles sampled per prompt and step.")
    reward: Literal["auto", "group", "reference"] = Field(
        default="auto", description="GRPO: judge against the group's other completions or a reference answer."
    )
    judge_batch_size: int = Field(default=16, ge=1, description="GRPO/RLOO: judge requests per forward pass.")
    reward_models: list[str] = Field(
        default_factory=list,
        description="GRPO/RLOO: reward sources as SOURCE[=WEIGHT]: judge, rm:PATH, over-refusal (default judge).",
    )


@dataclass
class Plan:
    """Everything checked before the model loads."""

    recipe: Recipe
    config: Any
    """The TRL config object."""
    settings: dict[str, Any]
    peft_config: Any
    data: TrainData
    notes: list[str]
    constitution: Any = None
    """GRPO: the loaded constitution."""
    reward_mode: str | None = None
    """GRPO: group or reference."""


@dataclass
class TrainResult:
    """What a finished run reports."""

    out: Path
    kind: str
    steps: int
    train_loss: float | None
    seconds: float
    metrics: dict[str, float]
    """``Trainer.train()``'s metrics: train_runtime, train_steps_per_second, ..."""
    log_history: list[dict[str, Any]]
    data: TrainData
    settings: dict[str, Any]
    """The TRL config fields set explicitly (run defaults, recipe, flags)."""
    resumed_from: str | None = None
    notes: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    """What the method measured after training (a preference model: its held-out accuracy)."""
    processes: int = 1
    """How many processes trained (``accelerate launch --num_processes``)."""
    distributed: str = "NO"
    """accelerate's distributed type: NO, MULTI_GPU, MULTI_CPU, FSDP, DEEPSPEED."""
    main_process: bool = True
    """Whether this process is the main one (the one that wrote the card and reports)."""

    @property
    def num_tokens(self) -> float | None:
        """Tokens seen in training, as TRL counts them (None when it did not log any)."""
        counts = [h["num_tokens"] for h in self.log_history if "num_tokens" in h]
        return float(counts[-1]) if counts else None


__all__ = ["Kind", "Plan", "TrainOptions", "TrainResult"]
