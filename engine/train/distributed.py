"""Runs over several processes (``accelerate launch``): which sharding they use, what it rules out, a barrier.

``accelerate launch`` passes its config file on to the processes as
environment variables; the TRL fields ``fsdp`` and ``deepspeed`` (in a recipe
or with ``--set``) ask for the same sharding. Under sharded weights a LoRA
adapter cannot be merged, and a judge model would be partitioned as it loads:
both are refused before anything loads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.train.errors import TrainError

if TYPE_CHECKING:
    from engine.train.methods import Method


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def _zero_stage(config: Any) -> int | None:
    """The ZeRO stage of a DeepSpeed config (a dict or a JSON file), None when it says none or cannot be read."""
    if isinstance(config, str | Path):
        try:
            config = json.loads(Path(config).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    stage = config.get("zero_optimization", {}).get("stage") if isinstance(config, dict) else None
    return stage if isinstance(stage, int) else None


def sharding(fields: dict[str, Any] | None = None) -> str | None:
    """The parameter sharding this process was launched with: ``FSDP``, ``DeepSpeed ZeRO-3`` or None.

    Args:
        fields: The TRL fields set by the recipe and the command line (``fsdp``, ``deepspeed``).
    """
    fields = fields or {}
    if _env_flag("ACCELERATE_USE_FSDP") or fields.get("fsdp"):
        return "FSDP"
    stage: int | None = None
    if fields.get("deepspeed"):
        stage = _zero_stage(fields["deepspeed"])
    elif _env_flag("ACCELERATE_USE_DEEPSPEED"):
        env_stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "")
        if env_stage.strip().isdigit():
            stage = int(env_stage)
        elif os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
            stage = _zero_stage(os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"])
    return "DeepSpeed ZeRO-3" if stage == 3 else None


def check_sharding(method: Method, lora: bool, fields: dict[str, Any]) -> None:
    """Refuse what cannot work on sharded weights, before anything loads.

    Raises:
        TrainError: LoRA (its merge needs whole weights) or a judge model under ZeRO-3 (it would be partitioned).
    """
    mode = sharding(fields)
    if mode is None:
        return
    if lora:
        raise TrainError(
            f"--lora under {mode}: the adapter is merged into the weights at the end, and {mode} holds them sharded "
            "over the processes; train LoRA with the ddp config (only the adapter trains, so DDP fits wherever the "
            f"base model fits one GPU), or fine-tune fully (--no-lora) under {mode}"
        )
    if method.loads_a_judge and mode == "DeepSpeed ZeRO-3":
        raise TrainError(
            f"cai train {method.name} under DeepSpeed ZeRO-3: the judge is a separate model that ZeRO-3 would "
            f"partition as it loads; use the ddp or fsdp config for {method.name}"
        )


def wait_for_everyone() -> None:
    """A barrier over the processes of an ``accelerate launch`` run; nothing when there is one process."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


__all__ = ["check_sharding", "sharding", "wait_for_everyone"]
